"""Monitors: the learning rates and the throughput as metrics, and a limit on training time."""

from __future__ import annotations

import re
import time
from typing import Any

import torch

from loom.callbacks.training_time import TrainingTime
from loom.functional import all_reduce_max
from loom.trainer import Callback, State

__all__ = ["LearningRates", "MaxTime", "Throughput", "parse_seconds"]


class LearningRates(Callback):
    """Records, at every ``epoch_end``, each parameter group's learning rate as the epoch
    started (the rate its first step took; a per-batch schedule moves it within the
    epoch) into ``state.metrics``: ``train/lr`` for a run with one group, else
    ``train/lr/<n>``, the groups counted across the optimizers in order from 0. Every
    logger listed after it gets them.

    Examples:
        >>> import torch
        >>> from loom import Trainer
        >>> model = torch.nn.Linear(2, 2)
        >>> trainer = Trainer(
        ...     model, [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))], max_duration="1ep",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
        ...     callbacks=[LearningRates()],
        ... )
        >>> trainer.fit()["train/lr"]
        0.1
    """

    writes = ("metrics",)

    def __init__(self) -> None:
        self._rates: list[float] = []

    def epoch_start(self, state: State) -> None:
        self._rates = [
            float(group["lr"]) for optimizer in state.optimizers for group in optimizer.param_groups
        ]

    def fit_start(self, state: State) -> None:
        self.epoch_start(state)  # a run resumed mid-epoch: the rates it resumes with

    def epoch_end(self, state: State) -> None:
        if len(self._rates) == 1:
            state.metrics["train/lr"] = self._rates[0]
            return
        for index, rate in enumerate(self._rates):
            state.metrics[f"train/lr/{index}"] = rate


class Throughput(Callback):
    """Records each epoch's training speed at its ``epoch_end``: ``train/samples_per_second``
    and ``train/batches_per_second`` over the epoch's training, the evaluations within
    it left out (all ranks' samples under torchrun); on CUDA also
    ``train/peak_memory_gib``, the most memory torch's allocator held on the device
    during the epoch. A resumed epoch counts from where it resumed.

    Examples:
        >>> import torch
        >>> from loom import Trainer
        >>> model = torch.nn.Linear(2, 2)
        >>> trainer = Trainer(
        ...     model, [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))] * 3,
        ...     max_duration="1ep", device="cpu",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        ...     callbacks=[Throughput()],
        ... )
        >>> sorted(key for key in trainer.fit() if key.endswith("per_second"))
        ['train/batches_per_second', 'train/samples_per_second']
    """

    writes = ("metrics",)

    def __init__(self) -> None:
        self._started = 0.0
        self._evaluating = 0.0  # seconds of evaluation within the epoch
        self._eval_started: float | None = None
        self._batches = self._samples = 0  # the clock where the epoch (or the resume) began

    def fit_start(self, state: State) -> None:
        self._begin(state)

    def epoch_start(self, state: State) -> None:
        self._begin(state)

    def eval_start(self, state: State) -> None:
        self._eval_started = time.perf_counter()

    def eval_end(self, state: State) -> None:
        if self._eval_started is not None:
            self._evaluating += time.perf_counter() - self._eval_started
            self._eval_started = None

    def epoch_end(self, state: State) -> None:
        seconds = max(time.perf_counter() - self._started - self._evaluating, 1e-9)
        timestamp = state.timestamp
        state.metrics["train/samples_per_second"] = (
            (timestamp.samples - self._samples) * state.world_size / seconds
        )
        state.metrics["train/batches_per_second"] = (timestamp.batch - self._batches) / seconds
        if state.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(state.device)
            state.metrics["train/peak_memory_gib"] = peak / 2**30

    def _begin(self, state: State) -> None:
        self._started, self._evaluating, self._eval_started = time.perf_counter(), 0.0, None
        self._batches, self._samples = state.timestamp.batch, state.timestamp.samples
        if state.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(state.device)


class MaxTime(Callback):
    """Stops training once it has run for ``limit`` (``"2h30m"``, ``"90m"``, ``"45s"``),
    counted across resumes: after the batch that crosses it, so the checkpoint callback
    saves where it stopped, and ``summary.json``'s ``stop_reason`` says so. Under
    torchrun the ranks agree every 20 batches (one all-reduce of a flag), since their
    clocks differ: they stop together, up to 20 batches after the limit.

    Args:
        limit: Hours, minutes and seconds, as ``"1h"``, ``"2h30m"``, ``"90m"``,
            ``"1m30s"``, ``"45s"``.

    Examples:
        >>> MaxTime("2h30m").seconds
        9000.0
    """

    def __init__(self, limit: str):
        self.limit = limit
        self.seconds = parse_seconds(limit, name="limit")
        self._clock = TrainingTime()

    def fit_start(self, state: State) -> None:
        self._clock.start()
        if self._clock.seconds() >= self.seconds:  # resumed past it: train nothing more
            state.request_stop(f"max_time {self.limit} reached before this run resumed")

    def batch_end(self, state: State) -> None:
        timestamp = state.timestamp
        if state.world_size > 1 and timestamp.batch % _AGREE_EVERY:
            return
        over = self._clock.seconds() >= self.seconds
        if state.world_size > 1:  # every rank stops at the same batch, or they deadlock
            flag = torch.tensor(float(over), device=state.device)
            over = bool(all_reduce_max(flag).item())
        if over:
            state.request_stop(f"max_time {self.limit} reached after {timestamp.last_batch()}")

    def fit_end(self, state: State) -> None:
        self._clock.stop()

    def state_dict(self) -> dict[str, Any]:
        return self._clock.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._clock.load_state_dict(state)


_AGREE_EVERY = 20
"""Batches between the ranks' agreements on whether the time is up, under torchrun."""

_TIME = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_seconds(text: str, name: str = "time") -> float:
    """``"2h30m"``, ``"90m"``, ``"45s"``, ``"1h5m10s"`` in seconds.

    Raises:
        ValueError: ``text`` is not hours, minutes and seconds in that order, or is zero.

    Examples:
        >>> parse_seconds("1h5m10s"), parse_seconds("90m")
        (3910.0, 5400.0)
    """
    match = _TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None or not any(match.groups()):
        raise ValueError(
            f"{name}={text!r} is not a time; give hours, minutes and seconds as "
            "'2h30m', '90m' or '45s'."
        )
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = float(3600 * hours + 60 * minutes + seconds)
    if total <= 0:
        raise ValueError(f"{name}={text!r} must be more than no time at all.")
    return total
