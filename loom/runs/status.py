"""What state a run directory is in: running, interrupted, failed or finished.

``loom train`` records it in the run's ``status.json`` when training starts and again
when it ends, however it ends; :func:`read_status` reads it back, and tells a run whose
process died without a word (killed, out of memory) from one still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from loom.config.run_directory import RunDirectory
from loom.trainer import State, TrainingInterrupted, write_atomically

__all__ = ["RunState", "RunStatus", "read_status", "recording_status"]

_DETAIL_LIMIT = 500  # characters of an error kept: the first line says what went wrong


class RunState(str, Enum):
    """How far a run got."""

    RUNNING = "running"
    INTERRUPTED = "interrupted"  # by a signal, after saving a checkpoint to resume from
    FAILED = "failed"  # an error ended it, or its process died without recording an end
    FINISHED = "finished"


@dataclass(frozen=True)
class RunStatus:
    """A run directory's state, what it says of it, and the checkpoint it resumes from.

    Attributes:
        state: How far the run got.
        detail: Why it is in that state: the stop reason, the signal, the error.
        checkpoint: The latest interval checkpoint in the run's checkpoint folders,
            or None: the run cannot be resumed.
    """

    state: RunState
    detail: str
    checkpoint: Path | None = None

    def __str__(self) -> str:
        return f"{self.state.value}: {self.detail}"


@contextlib.contextmanager
def recording_status(files: RunDirectory, state: State) -> Iterator[None]:
    """Inside, the run's ``status.json`` says running; on leaving, finished, interrupted
    or failed (with the error's first line). The exception goes on; only the main process
    writes."""
    if not state.is_main_process:
        yield
        return
    _write(files, RunState.RUNNING, "training")
    try:
        yield
    except TrainingInterrupted as interruption:
        _write_at_the_end(files, RunState.INTERRUPTED, str(interruption))
        raise
    except KeyboardInterrupt:  # a second signal: the latest checkpoint stands
        _write_at_the_end(files, RunState.INTERRUPTED, "stopped at once by a second signal")
        raise
    except BaseException as error:
        _write_at_the_end(files, RunState.FAILED, _first_words(error))
        raise
    _write(files, RunState.FINISHED, state.stop_reason or "reached max_duration")


def read_status(run_dir: str | os.PathLike[str] | RunDirectory) -> RunStatus | None:
    """The state of the run in ``run_dir``, or None if it holds no run.

    A run that says it is running, on this host, from a process that no longer
    exists, died without recording an end: it reads as failed. (Only on this host and
    on POSIX: a run written on another host, or by a process in another PID namespace,
    reads as it says; a reused PID reads as alive.) A run directory from before loom
    recorded states reads as finished or interrupted from its ``summary.json``, and as
    failed without one.
    """
    files = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
    checkpoint = _latest_checkpoint(files)
    if files.status.is_file():
        recorded = json.loads(files.status.read_text(encoding="utf-8"))
        state, detail = RunState(recorded["state"]), recorded["detail"]
        if state is RunState.RUNNING:
            state, detail = _whether_alive(recorded)
        return RunStatus(state, detail, checkpoint)
    if files.summary.is_file():
        summary = json.loads(files.summary.read_text(encoding="utf-8"))
        reason = summary.get("stop_reason") or "reached max_duration"
        interrupted = reason.startswith("interrupted by")
        return RunStatus(
            RunState.INTERRUPTED if interrupted else RunState.FINISHED, reason, checkpoint
        )
    if files.config.is_file():
        return RunStatus(RunState.FAILED, "it ended before writing summary.json", checkpoint)
    return None


def _write(files: RunDirectory, state: RunState, detail: str) -> None:
    record = {
        "state": state.value,
        "detail": detail,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "time": datetime.now().isoformat(timespec="seconds"),
    }
    write_atomically(files.status, json.dumps(record, indent=2))


def _write_at_the_end(files: RunDirectory, state: RunState, detail: str) -> None:
    """Records how a run ended on an exception, which must go on whatever happens here:
    a status that cannot be written (a full disk) is a warning, not the run's error."""
    try:
        _write(files, state, detail)
    except OSError as error:
        warnings.warn(f"{files.status} could not record {state.value!r}: {error}", stacklevel=3)


def _whether_alive(recorded: dict[str, Any]) -> tuple[RunState, str]:
    pid, host = recorded.get("pid"), recorded.get("host")
    where = f"process {pid} on {host}, since {recorded.get('time')}"
    if host != socket.gethostname() or not isinstance(pid, int) or os.name != "posix":
        return RunState.RUNNING, where  # no way to look from here
    if _alive(pid):
        return RunState.RUNNING, where
    return RunState.FAILED, f"{where}, ended without recording how (killed?)"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists here (POSIX: signal 0 only asks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _latest_checkpoint(files: RunDirectory) -> Path | None:
    job: Any = None
    if files.config.is_file():
        with contextlib.suppress(yaml.YAMLError):
            job = yaml.safe_load(files.config.read_text(encoding="utf-8"))
    return files.latest_checkpoint(job if isinstance(job, dict) else {})


def _first_words(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."
