"""Learning-rate schedules stepped once per batch, with times given in epochs or batches,
and one stepped after each evaluation on a metric (``plateau``).

``constant``, ``cosine``, ``step`` and ``multistep`` are each a
``torch.optim.lr_scheduler.LambdaLR`` whose factor is a :class:`LearningRateFactor`:
plain data, so the schedule's position and shape go into a checkpoint and come back
exactly. ``onecycle`` and ``plateau`` are torch's ``OneCycleLR`` and
``ReduceLROnPlateau``, whose state dicts are plain data too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

from loom.trainer import EVAL_METRICS, Duration, TimeUnit

__all__ = [
    "SHAPED_BY_RUN_LENGTH",
    "LearningRateFactor",
    "PlateauSchedule",
    "constant",
    "cosine",
    "multistep",
    "onecycle",
    "plateau",
    "step",
]

SHAPED_BY_RUN_LENGTH = ("cosine", "onecycle")
"""The schedules that read ``total_batches``: their shape follows the run's length, which
a checkpoint holds, so a resumed run keeps it."""


@dataclass
class LearningRateFactor:
    """The factor on the base learning rate after ``step`` batches.

    A linear warm-up over the first ``warmup`` batches (from ``1 / warmup`` up to
    1), then ``kind``: ``"constant"``; ``"cosine"`` (down to ``min_factor`` at
    ``total``); ``"step"`` (times ``gamma`` every ``step_size`` batches); or
    ``"multistep"`` (times ``gamma`` at each of ``milestones``).

    Examples:
        >>> factor = LearningRateFactor("multistep", milestones=[2, 4], gamma=0.1)
        >>> [round(factor(s), 3) for s in range(5)]
        [1.0, 1.0, 0.1, 0.1, 0.01]
    """

    kind: str
    warmup: int = 0
    total: int = 0
    step_size: int = 0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    min_factor: float = 0.0

    def __call__(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if self.kind == "cosine":
            span = max(1, self.total - self.warmup)
            progress = min(1.0, max(0.0, (step - self.warmup) / span))
            decay = self.min_factor + (1 - self.min_factor) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )
        elif self.kind == "step":
            decay = self.gamma ** (step // self.step_size)
        elif self.kind == "multistep":
            decay = self.gamma ** sum(step >= milestone for milestone in self.milestones)
        else:
            decay = 1.0
        return warm * decay


def constant(
    optimizer: torch.optim.Optimizer,
    batches_per_epoch: int,
    total_batches: int,
    warmup: str | Duration | None = None,
) -> LambdaLR:
    """The base learning rate throughout, after an optional linear warm-up.

    Args:
        warmup: Length of a linear warm-up, in epochs (``"5ep"``) or batches
            (``"500ba"``); None for none.
    """
    del total_batches
    warmup_batches = _batches(warmup, "warmup", batches_per_epoch)
    return LambdaLR(optimizer, LearningRateFactor("constant", warmup=warmup_batches))


def cosine(
    optimizer: torch.optim.Optimizer,
    batches_per_epoch: int,
    total_batches: int,
    warmup: str | Duration | None = None,
    min_lr_factor: float = 0.0,
) -> LambdaLR:
    """Cosine decay from the base learning rate to ``min_lr_factor`` times it at the end.

    Args:
        warmup: Length of a linear warm-up first, in epochs or batches; None for none.
        min_lr_factor: The final learning rate as a fraction of the base one.
    """
    _check_factor(min_lr_factor, "min_lr_factor", upper=1.0)
    factor = LearningRateFactor(
        "cosine",
        warmup=_batches(warmup, "warmup", batches_per_epoch),
        total=total_batches,
        min_factor=min_lr_factor,
    )
    return LambdaLR(optimizer, factor)


def step(
    optimizer: torch.optim.Optimizer,
    batches_per_epoch: int,
    total_batches: int,
    step_size: str | Duration,
    gamma: float = 0.1,
    warmup: str | Duration | None = None,
) -> LambdaLR:
    """Multiplies the learning rate by ``gamma`` every ``step_size``.

    Args:
        step_size: The period, in epochs (``"30ep"``) or batches.
        gamma: The factor at each step.
        warmup: Length of a linear warm-up first, in epochs or batches; None for none.
    """
    del total_batches
    _check_factor(gamma, "gamma")
    factor = LearningRateFactor(
        "step",
        warmup=_batches(warmup, "warmup", batches_per_epoch),
        step_size=max(1, _batches(step_size, "step_size", batches_per_epoch)),
        gamma=gamma,
    )
    return LambdaLR(optimizer, factor)


def multistep(
    optimizer: torch.optim.Optimizer,
    batches_per_epoch: int,
    total_batches: int,
    milestones: Sequence[str | Duration],
    gamma: float = 0.1,
    warmup: str | Duration | None = None,
) -> LambdaLR:
    """Multiplies the learning rate by ``gamma`` at each milestone.

    Args:
        milestones: When, counted from the start: ``["150ep", "225ep"]`` decays
            before the 151st and the 226th epoch.
        gamma: The factor at each milestone.
        warmup: Length of a linear warm-up first, in epochs or batches; None for none.
    """
    del total_batches
    _check_factor(gamma, "gamma")
    batches = [
        _batches(milestone, f"milestones[{i}]", batches_per_epoch)
        for i, milestone in enumerate(milestones)
    ]
    if batches != sorted(batches):
        raise ValueError(f"milestones={list(milestones)!r} must be in increasing order.")
    factor = LearningRateFactor(
        "multistep",
        warmup=_batches(warmup, "warmup", batches_per_epoch),
        milestones=batches,
        gamma=gamma,
    )
    return LambdaLR(optimizer, factor)


def onecycle(
    optimizer: torch.optim.Optimizer,
    batches_per_epoch: int,
    total_batches: int,
    max_lr: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    cycle_momentum: bool = True,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """torch's one-cycle policy (Smith and Topin, 2019) over the whole run: from
    ``max_lr / div_factor`` up to ``max_lr`` in the first ``pct_start`` of the batches,
    then down to ``max_lr / (div_factor * final_div_factor)``. The optimizer's own
    ``lr`` is replaced.

    Args:
        max_lr: The peak learning rate.
        pct_start: The share of the run spent rising, in (0, 1).
        div_factor: The starting learning rate is ``max_lr / div_factor``.
        final_div_factor: The last is the starting one divided by this.
        cycle_momentum: Cycle the momentum (SGD) or ``beta1`` (Adam) inversely to the
            learning rate, as torch does; needs an optimizer that has one.
    """
    del batches_per_epoch
    if not isinstance(max_lr, int | float) or max_lr <= 0:
        raise ValueError(f"max_lr={max_lr!r} must be a positive number.")
    if not isinstance(pct_start, int | float) or not 0 < pct_start < 1:
        raise ValueError(f"pct_start={pct_start!r} must lie in (0, 1).")
    if cycle_momentum and any(group.get("momentum") == 0 for group in optimizer.param_groups):
        raise ValueError(
            "cycle_momentum=True would turn on the optimizer's momentum, which is 0: give "
            "the optimizer a momentum, or set cycle_momentum: false."
        )
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=max(1, total_batches),
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=cycle_momentum,
    )


class PlateauSchedule(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ``ReduceLROnPlateau`` that names the metric it watches, ``monitor``: the
    Trainer steps it after each evaluation at ``eval_interval`` with that metric."""

    def __init__(self, optimizer: torch.optim.Optimizer, monitor: str, **options: Any):
        super().__init__(optimizer, **options)
        self.monitor = monitor


def plateau(
    optimizer: torch.optim.Optimizer,
    batches_per_epoch: int,
    total_batches: int,
    monitor: str = "eval/loss",
    mode: Literal["min", "max"] = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    cooldown: int = 0,
    min_lr: float = 0.0,
) -> PlateauSchedule:
    """torch's ``ReduceLROnPlateau``: multiplies the learning rate by ``factor`` when the
    evaluation metric ``monitor`` has not improved for ``patience`` evaluations.

    It is stepped after each evaluation at the Trainer's ``eval_interval`` (not after
    every batch), so its counts are in evaluations; its position is in the checkpoint.

    Args:
        monitor: The evaluation's metric, e.g. ``"eval/loss"`` or ``"eval/accuracy"``
            (one of :data:`~loom.trainer.metrics.EVAL_METRICS`, or ``eval/<name>`` of
            the Trainer's ``eval_metrics``).
        mode: ``"min"`` if lower is better, ``"max"`` if higher is.
        factor: The factor on the learning rate at each reduction, in (0, 1).
        patience: Evaluations without improvement before a reduction.
        threshold: The relative change that counts as an improvement.
        cooldown: Evaluations to wait after a reduction before counting again.
        min_lr: The learning rate never goes below this.

    Examples:
        >>> model = torch.nn.Linear(2, 2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        >>> schedule = plateau(optimizer, 10, 100, patience=1, factor=0.5)
        >>> for loss in (1.0, 1.0, 1.0):  # no improvement after the first
        ...     schedule.step(loss)
        >>> optimizer.param_groups[0]["lr"]
        0.5
    """
    del batches_per_epoch, total_batches
    # It steps before EVAL_END, on the evaluation's own metrics: loom's, or one of the
    # Trainer's eval_metrics, which the Trainer checks.
    if not isinstance(monitor, str) or not monitor.startswith("eval/"):
        raise ValueError(
            f"monitor={monitor!r} is not a metric the evaluation computes: one of "
            f"{', '.join(EVAL_METRICS)}, or eval/<name> of the Trainer's eval_metrics."
        )
    if mode not in ("min", "max"):
        raise ValueError(f"mode={mode!r} must be 'min' or 'max'.")
    if not isinstance(factor, int | float) or not 0 < factor < 1:
        raise ValueError(f"factor={factor!r} must lie in (0, 1).")
    for name, count in (("patience", patience), ("cooldown", cooldown)):
        if type(count) is not int or count < 0:
            raise ValueError(f"{name}={count!r} must be an int >= 0 (evaluations).")
    _check_factor(threshold, "threshold")
    if not isinstance(min_lr, int | float) or min_lr < 0:
        raise ValueError(f"min_lr={min_lr!r} must be a number >= 0.")
    return PlateauSchedule(
        optimizer,
        monitor,
        mode=mode,
        factor=factor,
        patience=patience,
        threshold=threshold,
        cooldown=cooldown,
        min_lr=min_lr,
    )


def _batches(duration: str | Duration | None, name: str, batches_per_epoch: int) -> int:
    if duration is None:
        return 0
    parsed = Duration.parse(duration, name=name)
    if parsed.unit is TimeUnit.SAMPLE:
        raise ValueError(f"{name}={duration!r} counts samples; give it in epochs or batches.")
    return parsed.value * (batches_per_epoch if parsed.unit is TimeUnit.EPOCH else 1)


def _check_factor(value: float, name: str, upper: float = math.inf) -> None:
    if not isinstance(value, int | float) or not 0 <= value <= upper:
        raise ValueError(f"{name}={value!r} must be a number in [0, {upper}].")
