"""Faults injected into a real ``loom train`` process, without touching loom.

A test runs ``python -m loom train JOB --import tests.faults.inject`` with these
environment variables (see :mod:`tests.faults.runs`, which writes them):

- ``LOOM_FAULT_ROOT``: the folder whose files count as the run's (the run directory);
  writes elsewhere (a font cache, say) are neither counted nor traced. Without it,
  importing this module changes nothing (so that no other process is patched by
  mistake).
- ``LOOM_FAULT_TRACE``: a file that gets one JSON line per event, in order: what a
  reference run does, from which a test picks the point to fail at.
- ``LOOM_FAULT``: a JSON list of faults, each ``{"kind", "n", "moment", "action"}``
  and optionally ``"rank"`` (default 0; ``"any"``: whichever this process is),
  ``"after"`` (count ``n`` from when the fault at that index fired), ``"repeat"``,
  ``"path"``, ``"attempt"`` (default 0: torchrun's ``TORCHELASTIC_RESTART_COUNT`` when
  it is due, so that a restarted job runs free),
  ``"matching"`` (a regular expression: only events on a path it matches, relative to
  the root, count): at the ``n``-th event of ``kind``, at ``moment``, do ``action``.
- ``LOOM_FAULT_BARRIER``: ``FOLDER:COUNT``: wait, at import, until COUNT processes have
  arrived, then go on together at the start of the next wall-clock second.

Events (kinds) and their moments:

- ``train_forward``, ``eval_forward``: the model's forward (the job's model class,
  ``LOOM_FAULT_MODEL``, default ``MLP``) with and without gradients; ``before``.
- ``checkpoint_save``, ``save``: ``torch.save`` of a checkpoint (a dict with the
  model, optimizers and clock) or of anything else; ``before``, ``during`` (half of the
  bytes are in the file, flushed to disk), ``after`` (all written, not yet renamed).
- ``replace``: ``os.replace``/``os.rename`` onto a file (an atomic write ending);
  ``before``, ``after``.
- ``metrics_write``: a write into ``metrics.jsonl`` (or a temporary file of it);
  ``before``, ``during`` (half of the text is in the file), ``after``.
- ``savefig``: a plot written; ``before``, ``after``.

Actions: ``kill`` (SIGKILL), ``term``, ``int`` (SIGTERM, SIGINT to this process, whose
handler runs at once), ``term_parent`` (SIGTERM to the parent, torchrun's agent, after
letting the other ranks reach the same batch), ``remount_ro`` (``mount -o remount,ro
PATH``).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib.figure
import torch
import torch.serialization

FAULT = "LOOM_FAULT"
TRACE = "LOOM_FAULT_TRACE"
ROOT = "LOOM_FAULT_ROOT"
BARRIER = "LOOM_FAULT_BARRIER"
MODEL = "LOOM_FAULT_MODEL"

_real_open = builtins.open
_real_replace = os.replace
_real_rename = os.rename
_real_save = torch.save
_real_savefig = matplotlib.figure.Figure.savefig

_SIGNALS = {"term": signal.SIGTERM, "int": signal.SIGINT}


class Injector:
    """Counts the events of this process and fires the faults at theirs."""

    def __init__(self, faults: list[dict[str, Any]], trace: str | None, root: str | None):
        self.faults = faults
        self.fired: dict[int, dict[str, int]] = {}  # fault index: the counts when it fired
        self.trace = trace
        self.root = os.path.abspath(root) if root else None
        self.rank = int(os.environ.get("RANK", "0"))
        self.attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        self.counts: dict[str, int] = {}

    def concerns(self, path: Any) -> bool:
        """Whether a file is the run's (under the root)."""
        if self.root is None or path is None:
            return path is not None
        try:
            return os.path.abspath(os.fspath(path)).startswith(self.root + os.sep)
        except TypeError:
            return False

    def relative(self, path: Any) -> str | None:
        if path is None:
            return None
        absolute = os.path.abspath(os.fspath(path))
        return os.path.relpath(absolute, self.root) if self.root else absolute

    def event(self, kind: str, moment: str, path: Any = None) -> None:
        if moment == "before":
            self.counts[kind] = self.counts.get(kind, 0) + 1
            relative = self.relative(path) or ""
            for fault in self.faults:
                if "matching" in fault and re.fullmatch(fault["matching"], relative):
                    key = self._count_key(fault, kind)
                    self.counts[key] = self.counts.get(key, 0) + 1
            if self.trace and self.rank == 0:
                line = {"kind": kind, "n": self.counts[kind], "path": self.relative(path)}
                with _real_open(self.trace, "a", encoding="utf-8") as file:
                    file.write(json.dumps(line) + "\n")
        for index, fault in enumerate(self.faults):
            if index in self.fired or not self._due(fault, kind, moment):
                continue
            self.fired[index] = dict(self.counts)
            self._act(fault, kind, path)

    def wants(self, kind: str, moment: str) -> bool:
        """Whether a fault is due at this moment of the current event (to split a write)."""
        return any(
            index not in self.fired and self._due(fault, kind, moment)
            for index, fault in enumerate(self.faults)
        )

    def _due(self, fault: dict[str, Any], kind: str, moment: str) -> bool:
        if fault["kind"] != kind or fault["moment"] != moment:
            return False
        if (
            fault.get("rank", 0) not in (self.rank, "any")
            or fault.get("attempt", 0) != self.attempt
        ):
            return False
        key = self._count_key(fault, kind)
        start = 0
        if "after" in fault:
            if fault["after"] not in self.fired:
                return False
            start = self.fired[fault["after"]].get(key, 0)
        return self.counts.get(key, 0) - start == fault["n"]

    @staticmethod
    def _count_key(fault: dict[str, Any], kind: str) -> str:
        """What ``fault`` counts: events of its kind, or those on the paths it matches."""
        return f"{kind} matching {fault['matching']}" if "matching" in fault else kind

    def _act(self, fault: dict[str, Any], kind: str, path: Any) -> None:
        action = fault["action"]
        where = f"{kind} {self.counts.get(kind, 0)} {fault['moment']} ({self.relative(path)})"
        sys.stderr.write(f"fault injected: {action} at {where}\n")
        sys.stderr.flush()
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action in _SIGNALS:
            for _ in range(fault.get("repeat", 1)):
                os.kill(os.getpid(), _SIGNALS[action])
        elif action == "term_parent":
            time.sleep(fault.get("settle", 0.3))  # the other ranks reach this batch's step
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(fault.get("wait", 1.0))  # this rank's own SIGTERM comes meanwhile
        elif action == "remount_ro":
            subprocess.run(["mount", "-o", "remount,ro", fault["path"]], check=True)
        else:
            raise ValueError(f"unknown fault action {action!r}")


def _faults() -> list[dict[str, Any]]:
    text = os.environ.get(FAULT)
    return json.loads(text) if text else []


INJECTOR = Injector(_faults(), os.environ.get(TRACE), os.environ.get(ROOT))
_MODEL_CLASS = os.environ.get(MODEL, "MLP")


def _forward_pre_hook(module: torch.nn.Module, args: Any) -> None:
    if type(module).__name__ != _MODEL_CLASS:
        return
    training = torch.is_grad_enabled() and module.training
    INJECTOR.event("train_forward" if training else "eval_forward", "before")


def _is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and {"model", "optimizers", "timestamp"} <= obj.keys()


def _file_name(file: Any) -> Any:
    if isinstance(file, str | bytes | os.PathLike):
        return file
    name = getattr(file, "name", None)
    if isinstance(name, int):
        return _fd_path(name)
    return name


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
    name = _file_name(f)
    if not INJECTOR.concerns(name):
        return _real_save(obj, f, *args, **kwargs)
    kind = "checkpoint_save" if _is_checkpoint(obj) else "save"
    INJECTOR.event(kind, "before", name)
    if INJECTOR.wants(kind, "during"):
        buffer = io.BytesIO()
        _real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        file = f if hasattr(f, "write") else _real_open(f, "wb")
        try:
            file.write(data[: len(data) // 2])
            file.flush()
            os.fsync(file.fileno())
            INJECTOR.event(kind, "during", name)
            file.write(data[len(data) // 2 :])
        finally:
            if file is not f:
                file.close()
        result = None
    else:
        result = _real_save(obj, f, *args, **kwargs)
    INJECTOR.event(kind, "after", name)
    return result


def _replace_with(real: Any) -> Any:
    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        if not INJECTOR.concerns(dst):
            return real(src, dst, *args, **kwargs)
        INJECTOR.event("replace", "before", dst)
        result = real(src, dst, *args, **kwargs)
        INJECTOR.event("replace", "after", dst)
        return result

    return replace


class _MetricsFile:
    """An open ``metrics.jsonl`` whose writes are events."""

    def __init__(self, handle: Any, name: Any):
        self._handle, self._name = handle, name

    def write(self, data: Any) -> int:
        if not data:
            return self._handle.write(data)
        INJECTOR.event("metrics_write", "before", self._name)
        if INJECTOR.wants("metrics_write", "during"):
            half = len(data) // 2
            self._handle.write(data[:half])
            self._handle.flush()
            os.fsync(self._handle.fileno())
            INJECTOR.event("metrics_write", "during", self._name)
            self._handle.write(data[half:])
        else:
            self._handle.write(data)
        INJECTOR.event("metrics_write", "after", self._name)
        return len(data)

    def __enter__(self) -> _MetricsFile:
        self._handle.__enter__()
        return self

    def __exit__(self, *exception: Any) -> Any:
        return self._handle.__exit__(*exception)

    def __iter__(self) -> Any:
        return iter(self._handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    handle = _real_open(file, mode, *args, **kwargs)
    if not any(flag in mode for flag in "wax+"):
        return handle
    name = _fd_path(file) if isinstance(file, int) else file
    if not isinstance(name, str | os.PathLike) or "metrics.jsonl" not in Path(name).name:
        return handle
    if not INJECTOR.concerns(name):
        return handle
    return _MetricsFile(handle, name)


def _savefig(self: Any, fname: Any, *args: Any, **kwargs: Any) -> Any:
    name = _file_name(fname)
    if not INJECTOR.concerns(name):
        return _real_savefig(self, fname, *args, **kwargs)
    INJECTOR.event("savefig", "before", name)
    result = _real_savefig(self, fname, *args, **kwargs)
    INJECTOR.event("savefig", "after", name)
    return result


def _wait_at_the_barrier(spec: str) -> None:
    """Every process of the barrier arrives, then all go on at the next second's start."""
    folder, count = spec.rsplit(":", 1)
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(os.listdir(folder)) < int(count):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other processes never reached the barrier in {folder}")
        time.sleep(0.01)
    time.sleep(1.02 - time.time() % 1.0)  # just after the next second starts


def install() -> None:
    """Hooks every event above into this process."""
    torch.nn.modules.module.register_module_forward_pre_hook(_forward_pre_hook)
    torch.save = torch.serialization.save = _save
    os.replace = _replace_with(_real_replace)
    os.rename = _replace_with(_real_rename)
    builtins.open = io.open = _open
    matplotlib.figure.Figure.savefig = _savefig
    if os.environ.get(BARRIER):
        _wait_at_the_barrier(os.environ[BARRIER])


if os.environ.get(ROOT):
    install()
