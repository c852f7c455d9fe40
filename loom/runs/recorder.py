"""The callback that fills a run directory (whose files :class:`RunDirectory` names)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

import loom
from loom.callbacks.training_time import TrainingTime
from loom.config.job import dump_job
from loom.config.run_directory import RunDirectory
from loom.runs import plots
from loom.trainer import (
    Artifact,
    Callback,
    FileWriteError,
    State,
    exported_weights,
    remove_stale_temporaries,
    write_atomically,
)
from loom.trainer.runtime import decided_by_rank_zero

__all__ = ["RunRecorder", "new_run_dir"]


def new_run_dir(job_name: str, parent: str | os.PathLike[str] = "runs") -> Path:
    """Creates ``<parent>/<job_name>-<YYYYmmdd-HHMMSS>``, empty, and returns it; with a
    suffix (``-2``, ``-3``, ...) if that name is taken.

    Created here, and atomically (``mkdir`` fails on a name that exists), so two runs
    started in the same second never share one. Under torchrun (once the process group
    has started) rank 0 creates it and every rank gets its name: each rank's clock
    would name its own.

    Raises:
        FileWriteError: ``parent`` cannot be created or written in.

    Examples:
        >>> import tempfile
        >>> parent = tempfile.mkdtemp()
        >>> first, second = new_run_dir("digits", parent), new_run_dir("digits", parent)
        >>> second.name == f"{first.name}-2", second.is_dir()
        (True, True)
    """

    def create() -> Path:
        try:
            return _create_run_dir(job_name, Path(parent))
        except OSError as error:
            raise FileWriteError.of(error, Path(parent) / f"{job_name}-...") from None

    return decided_by_rank_zero(create, "the run directory")


def _create_run_dir(job_name: str, parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, suffix = parent / f"{job_name}-{stamp}", 1
    while True:
        try:
            candidate.mkdir()  # fails if another run took the name since
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = parent / f"{job_name}-{stamp}-{suffix}"


class RunRecorder(Callback):
    """Fills a run directory: ``config.yaml`` at the start; at the end ``summary.json``,
    ``model.pt`` (the final weights: ``state.export_model``'s when a plugin chose other
    weights than the trained ones, e.g. an EMA), the plots and the plugins' artifacts.

    The plots are ``curves.png`` (losses and accuracy by epoch, from the metrics
    file), ``reliability.png`` (the last evaluation's calibration) and one
    ``<name>.png`` per 2-D artifact a plugin offers (online label smoothing's
    ``soft_labels``), listed in ``state.plots`` for the trackers after this; the
    artifacts themselves go into ``artifacts.pt``. The summary
    names the latest checkpoint (``state.checkpoint_path``) and the best ones
    (``state.best_checkpoints``), so list this after the callback that saves them.
    Only the main process writes.

    Args:
        run_dir: The run directory (created if missing).
        job: The resolved job, saved as ``config.yaml``.
        classes: The class names, for the plots.
    """

    reads = ("checkpoint_path", "best_checkpoints", "metrics", "export_model")
    writes = ("plots",)  # the trackers upload them, after this

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | RunDirectory,
        job: Mapping[str, Any],
        classes: Sequence[str] | None = None,
    ):
        self.files = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
        self.job = job
        self.classes = list(classes) if classes is not None else None
        self._clock = TrainingTime()

    def fit_start(self, state: State) -> None:
        self._clock.start()
        if state.is_main_process:
            remove_stale_temporaries(self.files.path)  # a write that a kill cut short
            write_atomically(self.files.config, dump_job(self.job))

    def fit_end(self, state: State) -> None:
        self._clock.stop()
        weights = exported_weights(state)  # on every rank: a sharded model's are gathered
        if not state.is_main_process:
            return
        files = self.files
        write_atomically(files.summary, json.dumps(self._summary(state), indent=2))
        write_atomically(files.model, lambda file: torch.save(weights, file))
        name = files.name
        drawn = [files.curves]
        plots.plot_curves(files.metrics, files.curves, title=name)
        if state.reliability is not None:
            ece = state.metrics.get("eval/ece")
            plots.plot_reliability(state.reliability, files.reliability, ece=ece, title=name)
            drawn.append(files.reliability)
        artifacts = _artifacts(state)
        if artifacts:
            saved = {
                name: {
                    "values": artifact.values,
                    "title": artifact.title,
                    "axes": list(artifact.axes),
                }
                for name, artifact in artifacts.items()
            }
            write_atomically(files.artifacts, lambda file: torch.save(saved, file))
        for name, artifact in artifacts.items():
            if artifact.values.dim() == 2:
                plots.plot_matrix(
                    artifact.values, artifact.title, artifact.axes, self.classes, files.plot(name)
                )
                drawn.append(files.plot(name))
        state.plots = [str(path) for path in drawn]

    def state_dict(self) -> dict[str, Any]:
        """The seconds of training so far: a resumed run's summary adds to them."""
        return self._clock.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._clock.load_state_dict(state)

    def _summary(self, state: State) -> dict[str, Any]:
        timestamp = state.timestamp
        return {
            "run": self.files.path.name,
            "metrics": dict(state.metrics),
            "best_eval_accuracy": _best_accuracy(self.files.metrics),
            "epochs": timestamp.epoch,
            "batches": timestamp.batch,
            "samples": timestamp.samples,
            "seconds": round(self._clock.seconds(), 3),
            "stop_reason": state.stop_reason,
            "checkpoint": state.checkpoint_path,
            "best_checkpoints": list(state.best_checkpoints),
            "train_data": _data_descriptions(getattr(state.train_dataloader, "dataset", None)),
            "parameters": sum(p.numel() for p in state.model.parameters()),
            "device": str(state.device),
            "cpu_threads": torch.get_num_threads(),
            "versions": {
                "loom": loom.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }


def _artifacts(state: State) -> dict[str, Artifact]:
    """Every plugin's artifacts by name, on the CPU; two plugins may not offer one name."""
    found: dict[str, Artifact] = {}
    owners: dict[str, str] = {}
    for plugin in [*state.algorithms, *state.callbacks]:
        for name, artifact in plugin.artifacts().items():
            if name in found:
                raise ValueError(
                    f"{type(plugin).__name__} and {owners[name]} both offer an artifact "
                    f"named {name!r}; a run keeps one file per name."
                )
            owners[name] = type(plugin).__name__
            found[name] = dataclasses.replace(artifact, values=artifact.values.detach().cpu())
    return found


def _data_descriptions(dataset: Any) -> list[dict[str, Any]]:
    """What each dataset wrapper around the training data says of itself (``describe()``),
    outermost first: e.g. how many labels the label noise flipped."""
    found = []
    while dataset is not None:
        describe = getattr(dataset, "describe", None)
        if callable(describe):
            found.append({"wrapper": type(dataset).__name__, **describe()})
        dataset = getattr(dataset, "dataset", None)
    return found


def _best_accuracy(metrics_path: Path) -> float | None:
    records = plots.read_records(metrics_path)
    accuracies = [r["eval/accuracy"] for r in records if "eval/accuracy" in r]
    return max(accuracies) if accuracies else None
