"""SIGTERM and SIGINT during ``fit``: finish the batch, let plugins save, then stop."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from loom.trainer.state import State

__all__ = ["TrainingInterrupted", "interruption_message", "stop_on_signals"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):  # noqa: N818 (named like KeyboardInterrupt)
    """``fit`` ended early on a signal; the message says where the last checkpoint is."""

    def __init__(self, message: str, signal_name: str):
        super().__init__(message)
        self.signal_name = signal_name

    @property
    def exit_status(self) -> int:
        """The conventional status of a process ended by the signal: 128 + its number."""
        return 128 + signal.Signals[self.signal_name].value


@contextlib.contextmanager
def stop_on_signals(state: State) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT set ``state.interrupt`` and ask training to stop
    after the current batch; a second one stops at once (KeyboardInterrupt). The
    previous handlers come back on the way out, however it is left.

    Only the main thread can own signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in _SIGNALS}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def handle(number: int, frame: FrameType | None) -> Any:
        del frame
        if state.interrupt is not None:  # asked twice: stop now
            restore()
            raise KeyboardInterrupt(f"{signal.Signals(number).name} received twice")
        state.interrupt = signal.Signals(number).name
        state.request_stop(f"interrupted by {state.interrupt}")

    for number in _SIGNALS:
        signal.signal(number, handle)
    try:
        yield
    finally:
        restore()


def interruption_message(state: State) -> str:
    """Where training stopped, and where its checkpoint is and how to resume from it."""
    timestamp = state.timestamp
    where = (
        f"training stopped on {state.interrupt} at epoch {timestamp.epoch}, batch "
        f"{timestamp.batch_in_epoch} of the epoch (batch {timestamp.batch} of the run)"
    )
    if state.checkpoint_path is None:
        return f"{where}; no checkpoint was written (add a Checkpoint callback to resume)."
    return (
        f"{where}; checkpoint saved to {state.checkpoint_path}. Resume with "
        f"Trainer(..., load_path={str(state.checkpoint_path)!r}) or "
        "loom train CONFIG --resume RUN_DIR."
    )
