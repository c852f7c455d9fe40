"""Seconds of training that add up across the processes of one run."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["TrainingTime"]


class TrainingTime:
    """Wall-clock seconds of ``fit``, this process's plus those a resumed run had.

    A callback that reports time keeps one, starts it at ``fit_start``, stops it at
    ``fit_end`` and puts it in
    its ``state_dict``: a checkpoint then holds the seconds up to it, and a run resumed
    from that checkpoint goes on counting from there instead of from 0.

    Examples:
        >>> clock = TrainingTime()
        >>> clock.load_state_dict({"seconds": 300.0})  # from a checkpoint
        >>> clock.start()
        >>> 300.0 <= clock.seconds() < 301.0
        True
    """

    def __init__(self) -> None:
        self._before = 0.0  # seconds counted before the latest start
        self._started: float | None = None

    def start(self) -> None:
        """Starts (or, after an earlier ``fit`` in this process, continues) counting."""
        self._before = self.seconds()
        self._started = time.perf_counter()

    def stop(self) -> None:
        """Stops counting (at ``fit_end``): time between two ``fit`` calls is not training."""
        self._before, self._started = self.seconds(), None

    def seconds(self) -> float:
        running = 0.0 if self._started is None else time.perf_counter() - self._started
        return self._before + running

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The seconds a checkpoint counted; one from before they were kept counts 0."""
        seconds = state.get("seconds", 0.0)
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"seconds={seconds!r} must be a number >= 0.")
        self._before, self._started = float(seconds), None
