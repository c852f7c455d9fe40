"""Metrics an evaluation computes beside loom's own: torchmetrics' ``Metric`` objects, or
anything with their three methods."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from loom.functional.collectives import all_reduce_max, is_distributed
from loom.trainer.batch import describe_item
from loom.trainer.events import add_note
from loom.trainer.metrics import EVAL_METRICS

__all__ = ["AddedMetrics"]

_METHODS = ("update", "compute", "reset")
_OWN_NAMES = frozenset(key.removeprefix("eval/") for key in EVAL_METRICS)


class AddedMetrics:
    """The ``eval_metrics`` a Trainer was given: at each evaluation each is reset, given
    every batch's outputs and targets (``update(outputs, targets)``), and computed once
    at its end into ``state.metrics["eval/<name>"]``.

    A torchmetrics ``Metric`` (``loom[metrics]``) sums its counts across ranks when it
    computes, under torchrun; an object of one's own with the same three methods must
    do so itself. Each is moved to the run's device.

    Args:
        metrics: Name -> metric; a name is a word of its own (``f1``, ``macro_recall``),
            not one of loom's (``loss``, ``accuracy``, ...).
        argument: The argument's name, for errors.

    Examples:
        >>> class Count:  # the protocol: reset, update, compute
        ...     def reset(self): self.n = 0
        ...     def update(self, outputs, targets): self.n += len(targets)
        ...     def compute(self): return self.n
        >>> added = AddedMetrics({"samples": Count()})
        >>> added.reset(); added.update(torch.zeros(3, 2), torch.tensor([0, 1, 1]))
        >>> added.compute()
        {'eval/samples': 3.0}
    """

    def __init__(self, metrics: Mapping[str, Any] | None, argument: str = "eval_metrics"):
        if metrics is None:
            metrics = {}
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"{argument} must be a mapping of name -> metric (e.g. "
                f"{{'f1': MulticlassF1Score(num_classes=10)}}), got {type(metrics).__name__}."
            )
        for name, metric in metrics.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(
                    f"{argument}: name {name!r} must be a word such as 'f1' (it is recorded "
                    "as eval/<name>)."
                )
            if name in _OWN_NAMES:
                raise ValueError(
                    f"{argument}[{name!r}]: loom computes eval/{name} itself; give this "
                    "metric another name."
                )
            missing = [method for method in _METHODS if not callable(getattr(metric, method, 0))]
            if missing:
                raise TypeError(
                    f"{argument}[{name!r}] is a {type(metric).__name__} without "
                    f"{', '.join(missing)}: give a torchmetrics Metric, or an object with "
                    "update(outputs, targets), compute() and reset()."
                )
        self.argument = argument
        self.metrics = dict(metrics)

    def __bool__(self) -> bool:
        return bool(self.metrics)

    @property
    def keys(self) -> list[str]:
        """What :meth:`compute` returns, ``eval/<name>`` each."""
        return [f"eval/{name}" for name in self.metrics]

    def to(self, device: torch.device) -> None:
        """Moves each metric that can move (a torchmetrics ``Metric`` is a Module)."""
        for metric in self.metrics.values():
            if isinstance(metric, torch.nn.Module):
                metric.to(device)

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def update(self, outputs: Any, targets: Any) -> None:
        for name, metric in self.metrics.items():
            try:
                metric.update(outputs, targets)
            except Exception as error:
                add_note(
                    error,
                    f"raised by {self.argument}[{name!r}] ({type(metric).__name__}) given "
                    f"outputs {describe_item(outputs)} and targets {describe_item(targets)}",
                )
                raise

    def compute(self, device: torch.device | None = None) -> dict[str, float]:
        """Each metric's value; under torchrun checked to be every rank's (one
        collective on ``device``, the run's)."""
        results = {}
        for name, metric in self.metrics.items():
            try:
                value = metric.compute()
            except Exception as error:
                add_note(error, f"raised by {self.argument}[{name!r}] ({type(metric).__name__})")
                raise
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, int | float):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
                raise ValueError(
                    f"{self.argument}[{name!r}] ({type(metric).__name__}) computed "
                    f"{'a tensor of shape ' + str(shape) if shape else repr(value)}; an "
                    "evaluation records one number for each metric (for a class-wise "
                    "metric, average it: average='macro')."
                )
            results[f"eval/{name}"] = float(value)
        if is_distributed():
            self._check_the_ranks_agree(results, device)
        return results

    def _check_the_ranks_agree(self, results: dict[str, float], device: Any) -> None:
        """A metric that does not sum its counts across ranks computes each rank's own
        shard's value: logged as the whole evaluation's, and a plateau or early stop on
        it would act on some ranks only. Every rank raises alike."""
        values = torch.tensor(list(results.values()), dtype=torch.float64, device=device)
        highest = all_reduce_max(values.clone())
        lowest = -all_reduce_max(-values)
        for key, low, high in zip(results, lowest.tolist(), highest.tolist(), strict=True):
            if not math.isclose(low, high, rel_tol=1e-6, abs_tol=1e-9):
                name = key.removeprefix("eval/")
                metric = type(self.metrics[name]).__name__
                raise ValueError(
                    f"{self.argument}[{name!r}] ({metric}) computed different values on the "
                    f"ranks, {low:g} to {high:g}: it must sum its counts across ranks before "
                    "it computes, as torchmetrics' Metric does (unless sync_on_compute=False)."
                )
