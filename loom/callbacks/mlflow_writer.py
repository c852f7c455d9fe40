"""The sink of an :class:`~loom.callbacks.MLflowLogger`'s writer process (see
:mod:`loom.callbacks.writer_process`), loaded there by its path: it needs only mlflow,
neither torch nor loom.

Its settings: ``tracking_uri``, ``experiment``, ``run_name``, ``artifact_location``,
``params``, and the ``run_id`` of a run to continue or null; it is ready with the run's
id. Its own request: ``{"artifacts": [folder, [path, ...]]}``, the files into the run's
``folder``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

_METRICS_PER_CALL = 1000  # MLflow's limits on one log_batch call
_PARAMS_PER_CALL = 100
_SQLITE = "sqlite:///"


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

    @property
    def ready(self) -> str:
        return self.run_id

    def handle(self, request: dict[str, Any]) -> None:
        if "artifacts" not in request:
            raise ValueError(f"unknown request {request!r}")
        folder, paths = request["artifacts"]
        for path in paths:
            self.client.log_artifact(self.run_id, path, artifact_path=folder)

    def flush(self) -> None:
        pass  # each log_batch is a transaction of its own

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


def _database(tracking_uri: str) -> Path:
    return Path(tracking_uri[len(_SQLITE) :])


def open_sink(settings: dict[str, Any]) -> _Run:
    """The run the settings name, as :func:`loom.callbacks.writer_process.serve` takes it."""
    # The store's notes on creating its tables are not the training's to print.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return _Run(settings)
