"""RunRecorder: a job's configuration, summary, final weights and plots, in its run directory."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

import loom
from loom.algorithms import OnlineLabelSmoothing
from loom.config.job import dump_job
from loom.runs import plots
from loom.trainer import Algorithm, Callback, State
from loom.trainer.checkpoint import model_state_dict, write_atomically

__all__ = ["RunRecorder", "new_run_dir"]


def new_run_dir(job_name: str, parent: str | os.PathLike[str] = "runs") -> Path:
    """``<parent>/<job_name>-<YYYYmmdd-HHMMSS>``, with a suffix if that exists already."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = Path(parent) / f"{job_name}-{stamp}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = Path(parent) / f"{job_name}-{stamp}-{suffix}"
    return candidate


class RunRecorder(Callback):
    """Fills a run directory: ``config.yaml`` at the start; at the end ``summary.json``,
    ``model.pt`` (the final weights) and the plots.

    The plots are ``curves.png`` (losses and accuracy by epoch), ``reliability.png``
    (the last evaluation's calibration) and, when online label smoothing ran,
    ``soft_labels.png`` (its learned soft-label matrix, with the class names).
    Only the main process writes.

    Args:
        run_dir: The run directory (created if missing).
        job: The resolved job, saved as ``config.yaml``.
        algorithms: The job's algorithms, to plot what they learned.
        classes: The class names, for the soft-label plot.
        label_noise: What noise the training labels got, for the summary.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        job: Mapping[str, Any],
        algorithms: Sequence[Algorithm] = (),
        classes: Sequence[str] | None = None,
        label_noise: Mapping[str, Any] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.job = job
        self.algorithms = list(algorithms)
        self.classes = list(classes) if classes is not None else None
        self.label_noise = dict(label_noise) if label_noise is not None else None
        self._started = 0.0

    def fit_start(self, state: State) -> None:
        self._started = time.perf_counter()
        if state.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_job(self.job), encoding="utf-8")

    def fit_end(self, state: State) -> None:
        if not state.is_main_process:
            return
        summary = self._summary(state)
        text = json.dumps(summary, indent=2).encode("utf-8")
        write_atomically(self.run_dir / "summary.json", lambda file: file.write(text))
        weights = {key: value.cpu() for key, value in model_state_dict(state.model).items()}
        write_atomically(self.run_dir / "model.pt", lambda file: torch.save(weights, file))
        plots.plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png")
        if state.reliability is not None:
            plots.plot_reliability(state.reliability, self.run_dir / "reliability.png")
        for algorithm in self.algorithms:
            if isinstance(algorithm, OnlineLabelSmoothing):
                plots.plot_soft_labels(
                    algorithm.matrix.cpu(), self.classes, self.run_dir / "soft_labels.png"
                )

    def _summary(self, state: State) -> dict[str, Any]:
        timestamp = state.timestamp
        return {
            "run": self.run_dir.name,
            "metrics": dict(state.metrics),
            "best_eval_accuracy": _best_accuracy(self.run_dir / "metrics.jsonl"),
            "epochs": timestamp.epoch,
            "batches": timestamp.batch,
            "samples": timestamp.samples,
            "seconds": round(time.perf_counter() - self._started, 3),
            "stop_reason": state.stop_reason,
            "checkpoint": state.checkpoint_path,
            "label_noise": self.label_noise,
            "parameters": sum(p.numel() for p in state.model.parameters()),
            "device": str(state.device),
            "versions": {
                "loom": loom.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }


def _best_accuracy(metrics_path: Path) -> float | None:
    records = plots.read_records(metrics_path)
    accuracies = [r["eval/accuracy"] for r in records if "eval/accuracy" in r]
    return max(accuracies) if accuracies else None
