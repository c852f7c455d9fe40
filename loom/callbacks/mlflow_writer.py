"""The process that writes an :class:`~loom.callbacks.MLflowLogger`'s records to MLflow.

MLflow's client spends about 0.3 ms of Python on each metric it stores (SQLite, or a
server's REST calls): on the training process's thread that would be a third of a small
model's step. So training only sends the records, a JSON line each, to this process,
which writes them on another core. It is run as a script (``python mlflow_writer.py``),
so that it imports neither torch nor the user's program; it needs only mlflow.

It reads requests on standard input, a JSON object a line, in order:

- first the settings (``tracking_uri``, ``experiment``, ``run_name``,
  ``artifact_location``, ``params``, and the ``run_id`` of a run to continue or null);
- ``{"metrics": [[key, value, milliseconds, step], ...]}``, written in batches;
- ``{"flush": token}``: replied ``{"flushed": token}`` once all before it is written;
- ``{"artifacts": [folder, [path, ...]]}``: the files, into the run's ``folder``;
- ``{"close": status}``: the run ended with ``status``, replied ``{"closed": status}``.

It replies on standard output, a JSON line each: first ``{"run_id": ...}``, and
``{"error": message}`` when MLflow fails, after which it marks the run ``FAILED`` and
exits. When its input ends without a ``close`` (the training process is gone, whatever
ended it), it writes what came and marks the run ``FAILED``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import sys
from pathlib import Path
from typing import Any

_METRICS_PER_CALL = 1000  # MLflow's limits on one log_batch call
_PARAMS_PER_CALL = 100
_SQLITE = "sqlite:///"


def main() -> None:
    # The trainer ends this process (by closing its input), never a signal meant for the
    # training: an interrupted training's checkpoint still sends its records here.
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # run as a script: its folder's modules are not mlflow's to import
    replies = _take_standard_output()
    # The store's notes on creating its tables are not the training's to print.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    requests = Lines(sys.stdin.fileno())
    try:
        run = _Run(json.loads(requests.next()))
    except Exception as error:
        _reply(replies, error=_describe(error))
        return
    _reply(replies, run_id=run.run_id)
    status = "FAILED"
    try:
        status = _take_requests(requests, replies, run)
    except Exception as error:
        _reply(replies, error=_describe(error))
    finally:
        run.end(status)
    _reply(replies, closed=status)


def _take_requests(requests: Lines, replies: int, run: _Run) -> str:
    pending: list[list[Any]] = []
    while True:
        # While records wait, take at once what else has come: one call writes them all.
        line = requests.next(timeout=0.0 if pending else None)
        if line is None:
            run.log_metrics(pending)
            pending = []
            continue
        if line == "":
            run.log_metrics(pending)
            return "FAILED"  # the training process is gone without a word
        request = json.loads(line)
        if "metrics" in request:
            pending += request["metrics"]
            continue
        run.log_metrics(pending)
        pending = []
        if "flush" in request:
            _reply(replies, flushed=request["flush"])
        elif "artifacts" in request:
            folder, paths = request["artifacts"]
            run.log_artifacts(folder, paths)
        elif "close" in request:
            return request["close"]
        else:
            raise ValueError(f"unknown request {line.strip()!r}")


class _Run:
    """One MLflow run: new, or the one a resumed training continues."""

    def __init__(self, settings: dict[str, Any]):
        from mlflow import MlflowClient

        uri = settings["tracking_uri"]
        if uri is not None and uri.startswith(_SQLITE):
            _database(uri).parent.mkdir(parents=True, exist_ok=True)  # SQLite makes files only
        self.client = MlflowClient(tracking_uri=uri)
        self.last_steps: dict[str, int] = {}
        if settings["run_id"] is not None:
            self.run_id = settings["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.last_steps = self._last_steps()
            return
        experiment = self._experiment_id(settings)
        created = self.client.create_run(experiment, run_name=settings["run_name"])
        self.run_id = created.info.run_id
        self._log_params(settings["params"] or {})

    def log_metrics(self, records: list[list[Any]]) -> None:
        """Writes ``records``, leaving out the steps a continued run already has: a
        resumed training logs again what came after its checkpoint, the same values."""
        from mlflow.entities import Metric

        metrics = [
            Metric(key, value, milliseconds, step)
            for key, value, milliseconds, step in records
            if step > self.last_steps.get(key, -1)
        ]
        for start in range(0, len(metrics), _METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + _METRICS_PER_CALL])

    def log_artifacts(self, folder: str, paths: list[str]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, path, artifact_path=folder)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)

    def _experiment_id(self, settings: dict[str, Any]) -> str:
        name = settings["experiment"]
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = settings["artifact_location"]
        uri = settings["tracking_uri"]
        if location is None and uri is not None and uri.startswith(_SQLITE):
            # Beside the database: MLflow's default is the working directory's mlartifacts/.
            location = (_database(uri).parent / "artifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def _log_params(self, flat: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)) for key, value in flat.items()]
        for start in range(0, len(params), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[start : start + _PARAMS_PER_CALL])

    def _last_steps(self) -> dict[str, int]:
        """Of the run being continued, each metric's last step."""
        history = self.client.get_metric_history
        return {
            key: max(metric.step for metric in history(self.run_id, key))
            for key in self.client.get_run(self.run_id).data.metrics
        }


class Lines:
    """The lines of a file descriptor, each waited for at most a given time."""

    def __init__(self, descriptor: int):
        self.descriptor = descriptor
        self.buffer = b""
        self.ended = False
        # A selector, not select.select, which refuses descriptors from 1024 on.
        self.selector = selectors.DefaultSelector()
        self.selector.register(descriptor, selectors.EVENT_READ)

    def next(self, timeout: float | None = None) -> str | None:
        """The next line; None when none came within ``timeout`` seconds (None: no
        limit); ``""`` at the end of the input."""
        while b"\n" not in self.buffer:
            if self.ended:
                return ""
            if not self.selector.select(timeout):
                return None
            chunk = os.read(self.descriptor, 1 << 16)
            self.ended = not chunk
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8")


def _take_standard_output() -> int:
    """The replies' channel, standard output as it came (its descriptor, written
    unbuffered); what MLflow itself prints (a run's address, ...) goes to standard
    error instead."""
    replies = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return replies


def _reply(replies: int, **reply: Any) -> None:
    with contextlib.suppress(BrokenPipeError):  # the trainer is gone: no one to tell
        os.write(replies, (json.dumps(reply) + "\n").encode("utf-8"))


def _database(tracking_uri: str) -> Path:
    return Path(tracking_uri[len(_SQLITE) :])


def _describe(error: BaseException) -> str:
    """An MLflow error as one line: its type and its message's first line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


if __name__ == "__main__":
    main()
