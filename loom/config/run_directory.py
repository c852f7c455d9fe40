"""A run directory's files: the one place their names are decided, which of them a
choice of weights (``final``, ``last``, ``best`` or a path) names, and what state the
run is in (``loom train`` records it: :mod:`loom.runs.status`).

Here, below :mod:`loom.runs`, so that a job's parts can name a run's files too (a
distillation teacher is an earlier run's model).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from loom.callbacks.checkpoint import latest_checkpoint
from loom.config.job_file import read_job_file
from loom.config.schema import ConfigError

__all__ = ["RUN_WEIGHTS", "RunDirectory", "RunFileError", "RunState", "RunStatus", "read_status"]

RUN_WEIGHTS = ("final", "last", "best")
"""The weights of a run by name: its ``model.pt``, its latest interval checkpoint, the
first of its best checkpoints."""


class RunFileError(ValueError):
    """A run directory does not hold the file asked for."""


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


class RunDirectory:
    """The files of a run directory: the one place their names are decided.

    Examples:
        >>> RunDirectory("runs/digits").checkpoints.as_posix()
        'runs/digits/checkpoints'
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @property
    def name(self) -> str:
        """The run's name, as its plots are titled: the directory's, with its parent's
        for one seed of a ``--seeds`` run.

        Examples:
            >>> RunDirectory("runs/digits-20261201-101500").name
            'digits-20261201-101500'
            >>> RunDirectory("runs/noise40/seed3").name
            'noise40/seed3'
        """
        if re.fullmatch(r"seed\d+", self.path.name) and self.path.parent.name:
            return f"{self.path.parent.name}/{self.path.name}"
        return self.path.name

    @property
    def config(self) -> Path:
        """The resolved job, ``config.yaml``."""
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        """One JSON record per epoch and per evaluation, ``metrics.jsonl``."""
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        """How the run ended, ``summary.json``: written when training ends."""
        return self.path / "summary.json"

    @property
    def status(self) -> Path:
        """The run's state (running, interrupted, failed, finished), ``status.json``:
        written when training starts and when it ends; see :mod:`loom.runs.status`."""
        return self.path / "status.json"

    @property
    def model(self) -> Path:
        """The final weights, ``model.pt`` (a state dict; loads with ``weights_only``)."""
        return self.path / "model.pt"

    @property
    def checkpoints(self) -> Path:
        """The folder of the run's checkpoints, ``checkpoints/``."""
        return self.path / "checkpoints"

    def checkpoint_folders(self, job: Mapping[str, Any]) -> list[Path]:
        """Where the checkpoints of ``job`` (a resolved job) are: each ``checkpoint``
        callback's folder (a relative one inside the run directory, as the builder takes
        it; an absolute one as it is; one left out is ``checkpoints/``), or
        ``checkpoints/`` when the job lists none.

        Examples:
            >>> job = {"callbacks": [{"name": "checkpoint", "folder": "every_100ba"}]}
            >>> [p.as_posix() for p in RunDirectory("runs/x").checkpoint_folders(job)]
            ['runs/x/every_100ba']
        """
        folders = [
            self.checkpoints if spec.get("folder") is None else self.path / spec["folder"]
            for spec in job.get("callbacks") or ()
            if isinstance(spec, Mapping) and spec.get("name") == "checkpoint"
        ]
        return folders or [self.checkpoints]

    def latest_checkpoint(self, job: Mapping[str, Any]) -> Path | None:
        """The interval checkpoint furthest into training in any of ``job``'s
        :meth:`checkpoint_folders` (the one a resume takes), or None."""
        return latest_checkpoint(*self.checkpoint_folders(job))

    @property
    def curves(self) -> Path:
        """Losses and accuracy by epoch, ``curves.png``."""
        return self.path / "curves.png"

    @property
    def reliability(self) -> Path:
        """The last evaluation's calibration, ``reliability.png``."""
        return self.path / "reliability.png"

    def plot(self, artifact: str) -> Path:
        """A plugin's 2-D artifact drawn, ``<artifact>.png``."""
        return self.path / f"{artifact}.png"

    @property
    def artifacts(self) -> Path:
        """What the plugins offered (``Plugin.artifacts``), ``artifacts.pt``."""
        return self.path / "artifacts.pt"

    def check_started(self) -> None:
        """Refuses a path that is not the directory of a run ``loom train`` started (one
        with its ``config.yaml``).

        Raises:
            RunFileError: The directory does not exist or holds no ``config.yaml``.
        """
        if not self.path.is_dir():
            raise RunFileError(
                f"run directory {str(self.path)!r} does not exist; give the directory that "
                "loom train wrote (the one that holds config.yaml)."
            )
        if not self.config.is_file():
            raise RunFileError(
                f"{self.path} holds no config.yaml, so it is not a run loom train started; "
                "give the directory of one."
            )

    def weights_file(self, job: Mapping[str, Any], choice: str, option: str) -> Path:
        """The file that ``choice`` names in the run of ``job`` (its resolved job): one of
        :data:`RUN_WEIGHTS`, or a path (a relative one is looked for in the current
        directory, then in the run directory). ``option`` is how the person asked, for
        the message: ``"--checkpoint"`` (``loom predict``), ``"checkpoint"`` (a job's
        teacher).

        Raises:
            RunFileError: The run has no such file, or ``final`` for a run that is
                running or failed (its ``model.pt``, if any, is from an earlier segment:
                a run writes it when its training ends or is interrupted); the message
                says which to use instead.

        Examples:
            >>> RunDirectory("runs/none").weights_file({}, "final", "--checkpoint")
            Traceback (most recent call last):
            ...
            loom.config.run_directory.RunFileError: runs/none has no model.pt, the final ...
        """
        if choice == "final":
            if not self.model.is_file():
                raise RunFileError(
                    f"{self.path} has no model.pt, the final weights a run writes when it "
                    f"ends; {option} last takes its latest checkpoint instead."
                )
            self._refuse_stale_model(option)
            return self.model
        if choice == "last":
            found = self.latest_checkpoint(job)
            if found is None:
                folders = ", ".join(map(str, self.checkpoint_folders(job)))
                raise RunFileError(
                    f"{option} last: no checkpoint in {folders}; {option} final takes the "
                    "run's model.pt."
                )
            return found
        if choice == "best":
            return self._best_checkpoint(job, option)
        for candidate in (Path(choice), self.path / choice):
            if candidate.exists():  # a file, or a sharded run's folder
                return candidate
        raise RunFileError(
            f"{option} {choice}: no such file (nor in {self.path}); give "
            f"{', '.join(RUN_WEIGHTS)}, or the path of a checkpoint or of a weights file."
        )

    def _refuse_stale_model(self, option: str) -> None:
        status = read_status(self)
        if status is None or status.state not in (RunState.RUNNING, RunState.FAILED):
            return
        how = "is still running" if status.state is RunState.RUNNING else "failed"
        latest = f", {status.checkpoint}" if status.checkpoint is not None else ""
        raise RunFileError(
            f"{option} final: the run in {self.path} {how} ({status.detail}), so its "
            "model.pt is from before: a run writes it when its training ends, and this "
            f"training has not; {option} last takes its latest checkpoint{latest}."
        )

    def _best_checkpoint(self, job: Mapping[str, Any], option: str) -> Path:
        """The first of the run's best checkpoints, as its summary lists them."""
        if not self.summary.is_file():
            raise RunFileError(
                f"{option} best: {self.path} has no summary.json, which lists the best "
                f"checkpoints when training ends; the run has not ended: {option} last "
                "takes its latest checkpoint."
            )
        best = json.loads(self.summary.read_text(encoding="utf-8")).get("best_checkpoints")
        if not best:
            ranking = [
                f"callbacks.{index}"
                for index, spec in enumerate(job.get("callbacks") or ())
                if spec["name"] == "checkpoint" and spec.get("best_metric") is not None
            ]
            why = (
                f"its {', '.join(ranking)} (checkpoint) saved none"
                if ranking
                else "its job has no checkpoint callback with a best_metric"
            )
            raise RunFileError(
                f"{option} best: {self.path} kept no best checkpoint: {why}. A run keeps "
                "them with callbacks: [{name: checkpoint, best_metric: eval/accuracy, "
                f"keep_best: 1}}]; {option} final or last take its other weights."
            )
        recorded = Path(best[0]["path"])
        # Found by name in the run's checkpoint folders first: the summary holds the path
        # as training saw it, relative to where it ran, and the run may have moved since.
        for folder in self.checkpoint_folders(job):  # a file, or a sharded run's folder
            if (folder / recorded.name).exists():
                return folder / recorded.name
        if recorded.exists():
            return recorded
        raise RunFileError(
            f"{option} best: the best checkpoint summary.json lists, {recorded}, is "
            f"missing; {option} last or final take the run's other weights."
        )


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
        with contextlib.suppress(ConfigError):  # a damaged job: the default folder, then
            job = read_job_file(files.config)
    return files.latest_checkpoint(job if isinstance(job, dict) else {})
