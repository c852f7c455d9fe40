"""EarlyStopping: ends training when a metric has stopped improving."""

from __future__ import annotations

import math
from typing import Any, Literal

from loom.trainer import Callback, State

__all__ = ["EarlyStopping"]


class EarlyStopping(Callback):
    """Stops training once ``monitor`` has gone ``patience`` checks in a row without
    improving on its best by more than ``min_delta``.

    A check happens where the metric is produced: an evaluation metric (``eval/...``)
    at every evaluation at ``eval_interval`` (not the final one, nor a
    ``trainer.eval()`` of one's own), any other (``train/loss``, a callback's own) at
    every ``epoch_end``. A NaN never improves. Training stops through
    :meth:`State.request_stop`, whose reason
    (``summary.json``'s ``stop_reason``) says which metric, how long and the best
    value; the run ends at that point, with its final checkpoint. Its count is in the
    checkpoint, so a run resumed from one stops where the uninterrupted run would, and
    a run resumed after it stopped trains no further. List it after the callbacks that
    add the metric it monitors.

    Args:
        monitor: The metric, e.g. ``"eval/loss"``, ``"eval/accuracy"``, ``"train/loss"``.
        mode: ``"min"`` if lower is better, ``"max"`` if higher is.
        patience: Checks in a row without improvement after which training stops
            (>= 1; 1 stops at the first).
        min_delta: How much better than the best a value must be to count as an
            improvement (>= 0).

    Examples:
        >>> import torch
        >>> from loom import Trainer
        >>> model = torch.nn.Linear(2, 2)
        >>> batches = [(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))]  # nothing to learn
        >>> trainer = Trainer(
        ...     model, batches, batches, max_duration="50ep", device="cpu",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
        ...     callbacks=[EarlyStopping("eval/loss", patience=2)],
        ... )
        >>> _ = trainer.fit()
        >>> trainer.state.timestamp.epoch, trainer.state.stop_reason[:35]
        (3, 'eval/loss went 2 checks without imp')
    """

    reads = ("metrics",)

    def __init__(
        self,
        monitor: str,
        mode: Literal["min", "max"] = "min",
        patience: int = 3,
        min_delta: float = 0.0,
    ):
        if not isinstance(monitor, str) or "/" not in monitor:
            raise ValueError(
                f"monitor={monitor!r} must be a metric's name, e.g. 'eval/loss' or 'train/loss'."
            )
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r} must be 'min' or 'max'.")
        if type(patience) is not int or patience < 1:
            raise ValueError(
                f"patience={patience!r} must be an int >= 1: the checks in a row without "
                "improvement after which training stops."
            )
        if not isinstance(min_delta, int | float) or not 0 <= min_delta < math.inf:
            raise ValueError(f"min_delta={min_delta!r} must be a number >= 0.")
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = float(min_delta)
        self.best: float | None = None
        self.best_at: str | None = None  # where the best value was seen, for the reason
        self.waited = 0  # checks since the best
        self.stopped: str | None = None  # the reason, once it has stopped the run

    def fit_start(self, state: State) -> None:
        if self.monitor.startswith("eval/") and state.eval_dataloader is None:
            raise ValueError(
                f"EarlyStopping: monitor={self.monitor!r} is checked at each evaluation, but "
                "the Trainer has no eval_dataloader: give one, or monitor a train/ metric."
            )
        if self.stopped is not None:  # resumed after it had stopped the run
            state.request_stop(self.stopped)

    def epoch_end(self, state: State) -> None:
        if not self.monitor.startswith("eval/"):
            self._check(state)

    def eval_end(self, state: State) -> None:
        # Only evaluations at eval_interval count: not the final one (a longer run resumed
        # from this one would not have had it), not a trainer.eval() of one's own.
        if self.monitor.startswith("eval/") and state.evaluation == "scheduled":
            self._check(state)

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best": self.best,
            "best_at": self.best_at,
            "waited": self.waited,
            "stopped": self.stopped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = (state.get("monitor", self.monitor), state.get("mode", self.mode))
        if saved != (self.monitor, self.mode):  # its best would be another metric's
            raise ValueError(
                f"EarlyStopping: the checkpoint watched {saved[0]!r} ({saved[1]}), this run "
                f"watches {self.monitor!r} ({self.mode}); resume with the same monitor and "
                "mode, or start a new run."
            )
        self.best, self.best_at = state["best"], state["best_at"]
        self.waited, self.stopped = state["waited"], state["stopped"]

    def _check(self, state: State) -> None:
        value = state.metrics.get(self.monitor)
        if value is None:
            raise KeyError(
                f"EarlyStopping: monitor={self.monitor!r} is not among the metrics at "
                f"this point: {', '.join(sorted(state.metrics))}."
            )
        if self._improves(value):
            self.best, self.best_at, self.waited = value, state.timestamp.last_batch(), 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            checks = f"{self.waited} check{'s' * (self.waited > 1)}"
            if self.best is None:
                self.stopped = f"{self.monitor} was NaN at each of {checks}"
            else:
                by = f" by more than {self.min_delta:g}" if self.min_delta else ""
                self.stopped = (
                    f"{self.monitor} went {checks} without improving{by} on its best, "
                    f"{self.best:.6g}, seen after {self.best_at}"
                )
            state.request_stop(self.stopped)

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta
