"""Stopping on SIGTERM and SIGINT: after the batch, with the checkpoint of where training
stopped, on every rank of a torchrun job after the same batch."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from loom.trainer.state import State

__all__ = [
    "SignalStop",
    "StoppedAtOnce",
    "TrainingInterrupted",
    "interruption_message",
    "stop_on_signals",
    "stopped_by",
]

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


class StoppedAtOnce(KeyboardInterrupt):
    """``fit`` ended at once on a third signal, without the checkpoint of where it
    stopped: the latest one written stands."""

    def __init__(self, signal_name: str):
        super().__init__(f"{signal_name}, the third signal")
        self.signal_name = signal_name

    exit_status = TrainingInterrupted.exit_status


def stopped_by(interruption: KeyboardInterrupt) -> tuple[str, int]:
    """What stopped a run at once, and the exit status it gets: a third signal
    (:class:`StoppedAtOnce`), or Python's own ``KeyboardInterrupt`` of a Ctrl-C outside
    ``fit``.

    Examples:
        >>> stopped_by(StoppedAtOnce("SIGTERM")), stopped_by(KeyboardInterrupt())
        (('SIGTERM, the third signal', 143), ('SIGINT', 130))
    """
    if isinstance(interruption, StoppedAtOnce):
        return str(interruption), interruption.exit_status
    return "SIGINT", 128 + signal.SIGINT.value


class SignalStop:
    """How a run stops on SIGTERM and SIGINT: what :func:`stop_on_signals` yields.

    The first signal asks training to stop after the batch in progress (after the
    evaluation in progress, if one is): ``state.interrupt`` names it, and the
    checkpoint callback saves where training stopped. A second one while the run
    stops changes nothing: the interruption checkpoint is written first. A third stops
    at once (:class:`StoppedAtOnce`), without it: the latest checkpoint written stands.
    Once training is over (:meth:`finishing`: the final evaluation and files), a
    signal is noted and the run finishes as it would have.

    Under torchrun every process gets the signal, but each at its own point of its
    batch: the ranks agree (:meth:`agree`, one all-reduce of a flag after every batch,
    read a batch later so that it never waits) and all stop after the same batch, as
    they must, or they would wait for each other for good: the batch after the one in
    progress when the first signal came. A terminal's Ctrl-C reaches each rank twice
    (from the terminal, and passed on by torchrun as SIGTERM): a second Ctrl-C is the
    third signal.
    """

    _FORCE_AFTER = 3  # signals: the third stops at once

    def __init__(self, state: State):
        self.state = state
        self.received = 0  # signals so far
        self._finishing = False
        self._agreeing = state.world_size > 1 and dist.is_available() and dist.is_initialized()
        self._signal: int = 0  # under torchrun: the signal this rank got, not yet agreed on
        self._flag = torch.zeros((), dtype=torch.int64)  # on the CPU, whatever the device
        self._work: Any = None
        self._group = _cpu_group() if self._agreeing else None

    @property
    def agrees_across_ranks(self) -> bool:
        """Whether the ranks agree on when to stop (:meth:`agree` after every batch)."""
        return self._agreeing

    def handle(self, number: int, frame: FrameType | None) -> None:
        """The signal handler."""
        del frame
        state, name = self.state, signal.Signals(number).name
        self.received += 1
        if self.received >= self._FORCE_AFTER:
            raise StoppedAtOnce(name)
        if state.interrupt is not None:
            self._note(f"{name} received again: saving the checkpoint first")
        elif self._finishing:
            self._note(f"{name} received while the run writes its final files: it finishes them")
        elif self._signal:
            self._note(f"{name} received again: stopping after this batch, with a checkpoint")
        elif self._agreeing:
            self._signal = number  # the ranks stop together: see agree()
        else:
            self._stop(name)

    def agree(self) -> None:
        """Under torchrun, after every batch: stops every rank if any rank got a signal
        by the previous batch's end (so the all-reduce never holds the loop up)."""
        if self._work is not None:
            self._work.wait()
            agreed = int(self._flag.item())
            if agreed and self.state.interrupt is None:
                self._stop(signal.Signals(agreed).name)
        self._flag.fill_(self._signal)
        op = dist.ReduceOp.MAX
        self._work = dist.all_reduce(self._flag, op=op, group=self._group, async_op=True)

    def finishing(self) -> None:
        """Training is over: from here a signal changes nothing (the final evaluation
        and files are written, and the run ends as it would have)."""
        self._finishing = True
        self._settle()

    def _settle(self) -> None:
        if self._work is not None:  # every rank started it after the same batch
            self._work.wait()
            self._work = None

    def _stop(self, name: str) -> None:
        self.state.interrupt = name
        self.state.request_stop(f"interrupted by {name}")

    def _note(self, message: str) -> None:
        if self.state.is_main_process:
            # Not print(): the signal may have come in the middle of one, to the same stream.
            os.write(2, f"loom: {message}; a third signal stops at once, without it.\n".encode())


_CPU_GROUPS: dict[Any, Any] = {}
"""The gloo group of each default process group whose backend is not gloo (NCCL): made
once, since every group made is kept until the process group ends."""


def _cpu_group() -> Any:
    """A group that all-reduces CPU tensors: the default one on gloo; beside NCCL, a gloo
    group, so that the flag never waits for the device's queue."""
    if dist.get_backend() == "gloo":
        return None  # the default group
    default = dist.group.WORLD
    if default not in _CPU_GROUPS:
        _CPU_GROUPS.clear()  # groups of an earlier, destroyed process group
        _CPU_GROUPS[default] = dist.new_group(backend="gloo")
    return _CPU_GROUPS[default]


@contextlib.contextmanager
def stop_on_signals(state: State) -> Iterator[SignalStop]:
    """While inside, SIGTERM and SIGINT stop training as :class:`SignalStop` says. The
    previous handlers come back on the way out, however it is left.

    Only the main thread can own signal handlers; elsewhere signals are left as they are.
    """
    stop = SignalStop(state)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {number: signal.getsignal(number) for number in _SIGNALS}
    for number in _SIGNALS:
        signal.signal(number, stop.handle)
    try:
        yield stop
        stop._settle()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def interruption_message(state: State) -> str:
    """Where training stopped, and the checkpoint to resume from (``state.checkpoint_path``)."""
    where = f"training stopped on {state.interrupt} after {state.timestamp.last_batch()}"
    if state.checkpoint_path is None:
        return f"{where}; no checkpoint was written (no callback saves checkpoints)."
    return (
        f"{where}; checkpoint saved to {state.checkpoint_path}. Resume with "
        f"Trainer(..., load_path={str(state.checkpoint_path)!r})."
    )
