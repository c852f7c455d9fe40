"""Recording what state a run directory is in: running, interrupted, failed or finished.

``loom train`` records it in the run's ``status.json`` when training starts and again
when it ends, however it ends; :func:`read_status` (in
:mod:`loom.config.run_directory`, re-exported here) reads it back, and tells a run whose
process died without a word (killed, out of memory) from one still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import warnings
from collections.abc import Iterator
from datetime import datetime

from loom.config.run_directory import RunDirectory, RunState, RunStatus, read_status
from loom.trainer import State, TrainingInterrupted, write_atomically
from loom.trainer.signals import stopped_by

__all__ = [
    "LAUNCH_VARIABLES",
    "RunState",
    "RunStatus",
    "launch_of_this_process",
    "read_status",
    "recording_status",
]

LAUNCH_VARIABLES = {
    "torchelastic_run_id": "TORCHELASTIC_RUN_ID",
    "torchelastic_attempt": "TORCHELASTIC_RESTART_COUNT",
    "slurm_job_id": "SLURM_JOB_ID",
    "slurm_restart_count": "SLURM_RESTART_COUNT",
}
"""What ``status.json`` records of the launch a run's process belongs to: torchrun's run
and attempt, SLURM's job and requeue count, where set. A later incarnation of the same
launch (a torchrun restart, a requeue) knows a run recorded as running by an earlier one
is its own, wherever that one ran."""


def launch_of_this_process() -> dict[str, str]:
    """The :data:`LAUNCH_VARIABLES` this process was started with."""
    return {key: os.environ[name] for key, name in LAUNCH_VARIABLES.items() if name in os.environ}


_DETAIL_LIMIT = 500  # characters of an error kept: the first line says what went wrong


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
    except KeyboardInterrupt as interruption:  # a third signal: the latest checkpoint stands
        what, _ = stopped_by(interruption)
        _write_at_the_end(files, RunState.INTERRUPTED, f"stopped at once by {what}")
        raise
    except BaseException as error:
        _write_at_the_end(files, RunState.FAILED, _first_words(error))
        raise
    _write(files, RunState.FINISHED, state.stop_reason or "reached max_duration")


def _write(files: RunDirectory, state: RunState, detail: str) -> None:
    record = {
        "state": state.value,
        "detail": detail,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "time": datetime.now().isoformat(timespec="seconds"),
    }
    launch = launch_of_this_process()
    if launch:
        record["launch"] = launch
    write_atomically(files.status, json.dumps(record, indent=2))


def _write_at_the_end(files: RunDirectory, state: RunState, detail: str) -> None:
    """Records how a run ended on an exception, which must go on whatever happens here:
    a status that cannot be written (a full disk) is a warning, not the run's error."""
    try:
        _write(files, state, detail)
    except OSError as error:
        warnings.warn(f"{files.status} could not record {state.value!r}: {error}", stacklevel=3)


def _first_words(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."
