"""MLflow: every epoch end's and evaluation's metrics, the job's hyperparameters and the
run's plots, into an MLflow run that a resumed training continues."""

from __future__ import annotations

import importlib.util
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.callbacks.loggers import ProcessLogger, flat_hyperparameters
from loom.trainer import State

__all__ = ["MLflowLogger"]


class MLflowLogger(ProcessLogger):
    """Every epoch end's and evaluation's metrics to an MLflow run (install
    ``loom[mlflow]``): each metric at the run's batch (its ``step``), beside an
    ``epoch`` metric at the same steps (once a step); the job as the run's parameters
    (a dotted key each); the run's plots (``state.plots``) as artifacts under
    ``plots/``; the run ``FINISHED``, ``KILLED`` when training was interrupted,
    ``FAILED`` when it raised (as its process exits) or its process died.

    A process of its own writes to MLflow, whose client costs about 0.3 ms a metric
    (see :class:`~loom.callbacks.loggers.ProcessLogger`): training only sends it the
    records. Whenever a checkpoint is taken, the records sent
    so far are written first; a resumed run logs again its checkpoint's records and
    what came after, so MLflow misses none. The MLflow run's id and store are kept in
    the checkpoint, and a resumed run continues that run: of what it logs again, only
    the steps the first run did not get to are written (they are the same values:
    resuming is exact), so each step is there once. A logger's ``fit`` that raised
    leaves its run ``FAILED`` when the process exits, or when the logger fits again.

    Args:
        tracking_uri: Where MLflow keeps runs: ``sqlite:///path/mlflow.db``, a server's
            ``http(s)://`` address, ...; None for MLflow's own default
            (``$MLFLOW_TRACKING_URI``). In a job: that variable when set, else a
            SQLite store in the run directory, ``mlflow/mlflow.db``. (MLflow 3 refuses
            its older ``file:`` store unless ``MLFLOW_ALLOW_FILE_STORE=true``.)
        experiment: The experiment's name, created if missing.
        run_name: The MLflow run's name; None for MLflow's own choice (in a job: the
            run directory's name).
        hparams: The parameters to record (in a job: the resolved job), nested
            mappings flattened to dotted keys; None for none.
        artifact_location: Where a new experiment keeps its artifacts; None for a
            folder ``artifacts/`` beside a SQLite store's file, or the server's default.
        timeout: The most seconds to wait for the writer: to open the run, to write
            what was sent when a checkpoint is taken, and at the end; past it the
            writer is stopped and the callback raises.

    Raises:
        ImportError: mlflow is not installed.
        ValueError: An ``http(s)`` tracking server does not answer.

    Examples:
        >>> import tempfile, torch
        >>> from mlflow import MlflowClient
        >>> from loom import Trainer
        >>> uri = f"sqlite:///{tempfile.mkdtemp()}/mlflow.db"
        >>> model = torch.nn.Linear(2, 2)
        >>> logger = MLflowLogger(uri, hparams={"optimizer": {"lr": 0.1}})
        >>> trainer = Trainer(
        ...     model, [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))], max_duration="2ep",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
        ...     callbacks=[logger],
        ... )
        >>> _ = trainer.fit()
        >>> run = MlflowClient(uri).get_run(logger.run_id)
        >>> run.info.status, run.data.params, sorted(run.data.metrics)
        ('FINISHED', {'optimizer.lr': '0.1'}, ['epoch', 'train/loss'])
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "loom",
        run_name: str | None = None,
        hparams: Mapping[str, Any] | None = None,
        artifact_location: str | None = None,
        timeout: float = 300.0,
    ):
        super().__init__(timeout)
        for name, value in (
            ("tracking_uri", tracking_uri),
            ("run_name", run_name),
            ("artifact_location", artifact_location),
        ):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name}={value!r} must be a string or None.")
        if not isinstance(experiment, str) or not experiment:
            raise ValueError(f"experiment={experiment!r} must be a name, not empty.")
        if hparams is not None and not isinstance(hparams, Mapping):
            raise TypeError(f"hparams={hparams!r} must be a mapping or None.")
        if importlib.util.find_spec("mlflow") is None:  # say so now, before training
            raise ImportError(
                "MLflowLogger needs mlflow: python3 -m pip install 'loom[mlflow]' "
                "(or python3 -m pip install mlflow)."
            )
        if tracking_uri is not None:
            _check_reachable(tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.hparams = flat_hyperparameters(hparams) if hparams is not None else None
        self.artifact_location = artifact_location
        self.run_id: str | None = None  # the MLflow run's, kept in checkpoints
        self._checkpoint_store = tracking_uri  # the run's store, as a checkpoint says

    def open(self, state: State) -> None:
        resumed = state.timestamp.batch > 0 and self.run_id is not None
        if resumed and self._checkpoint_store != self.tracking_uri:
            raise ValueError(
                f"tracking_uri={self.tracking_uri!r}: the checkpoint's MLflow run "
                f"{self.run_id} is in {self._checkpoint_store!r}; give that tracking_uri (or "
                "$MLFLOW_TRACKING_URI) to continue it."
            )
        settings = {
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "run_name": self.run_name,
            "artifact_location": self.artifact_location,
            "params": self.hparams,
            "run_id": self.run_id if resumed else None,
        }
        where = f"MLflow at {self.tracking_uri or 'the default tracking URI'}"
        # Waited for: a store that cannot be opened is said before training.
        self.run_id = self.start_writer(_SINK, where, settings, wait=True)
        if resumed:
            self.log_the_checkpoints_records(state)

    def close(self, state: State) -> None:
        if self._writer is None:
            return
        if state.plots:
            self.send({"artifacts": ["plots", list(state.plots)]})
        self.end_writer(state)

    def state_dict(self) -> dict[str, Any]:
        """The MLflow run's id and store, so that a resumed run continues it (the
        records so far written first)."""
        super().state_dict()
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state["run_id"]
        self._checkpoint_store = state.get("tracking_uri", self.tracking_uri)


_SINK = Path(__file__).with_name("mlflow_writer.py")


def _check_reachable(tracking_uri: str) -> None:
    """An ``http(s)`` tracking server answers (any HTTP answer will do) within seconds;
    MLflow's own client would retry for minutes, mid-run."""
    if urllib.parse.urlparse(tracking_uri).scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(tracking_uri, timeout=_REACH_SECONDS):
            pass
    except urllib.error.HTTPError:
        return  # it answered
    except urllib.error.URLError as error:
        if isinstance(error.reason, ssl.SSLError):
            return  # it answered, over TLS that MLflow's settings may accept
        raise _unreachable(tracking_uri, error.reason) from None
    except OSError as error:
        raise _unreachable(tracking_uri, error) from None


def _unreachable(tracking_uri: str, reason: object) -> ValueError:
    return ValueError(
        f"tracking_uri={tracking_uri!r}: the MLflow server does not answer ({reason}); "
        "start it, or give another tracking_uri."
    )


_REACH_SECONDS = 10
