"""Predicting with a run: its job's model, weights from one of its files, a split of its
job's data, and the predictions written to a file. What ``loom predict`` does.

The model is built from the run's ``config.yaml`` and takes the run's result from the
file chosen (:func:`with_run_result`; read with ``torch.load(weights_only=True)``; a
checkpoint's algorithms states too, so that an EMA's average is predicted from a
checkpoint as from ``model.pt``): ``final``, the run's
``model.pt`` (refused while the run is running or once it failed: its ``model.pt`` is
from before); ``last``, its latest interval checkpoint; ``best``, the first of
``summary.json``'s ``best_checkpoints``; or the path of a checkpoint or weights file.
Under torchrun every rank predicts its share of the data (see
:meth:`Trainer.predict <loom.trainer.Trainer.predict>`) and rank 0 writes the file.

Examples:
    >>> import contextlib, io, tempfile
    >>> from loom.config.job import resolve_job
    >>> from loom.runs import train_job
    >>> data = {"name": "synthetic", "shape": [4], "num_classes": 3}
    >>> job = resolve_job({
    ...     "model": {"name": "mlp", "hidden_sizes": [8]},
    ...     "data": {"train": {**data, "num_samples": 32},
    ...              "eval": {**data, "split": "test", "num_samples": 12}},
    ...     "optimizer": {"name": "sgd", "lr": 0.1},
    ...     "trainer": {"max_duration": "2ep", "device": "cpu"},
    ... })
    >>> run_dir = tempfile.mkdtemp()
    >>> with contextlib.redirect_stdout(io.StringIO()):  # its table of metrics
    ...     _ = train_job(job, run_dir)
    >>> job = predict_job(run_dir)
    >>> predicted = predict_run(job, weights_file(run_dir, job, "final"))
    >>> predicted.logits.shape, predicted.class_names
    (torch.Size([12, 3]), ['class_0', 'class_1', 'class_2'])
    >>> path = write_predictions(predicted, default_output(run_dir, "eval", "final"))
    >>> path.name, path.read_text().splitlines()[0].split(",")
    ('predictions-eval-final.csv', ['index', 'predicted', 'predicted_name', 'confidence',
    'p_class_0', 'p_class_1', 'p_class_2'])
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loom.config.build import build_job
from loom.config.job import resolve_job
from loom.config.job_file import apply_overrides, read_job_file
from loom.config.loaders import eval_loader
from loom.config.run_directory import RUN_WEIGHTS, RunDirectory, RunFileError
from loom.trainer import (
    CheckpointError,
    Trainer,
    exported_weights,
    load_algorithm_states,
    load_checkpoint,
    load_model_weights,
    unwrap_model,
    write_atomically,
)

__all__ = [
    "OUTPUT_FORMATS",
    "PREDICTABLE_SECTIONS",
    "SPLITS",
    "PredictionError",
    "PredictionParts",
    "RunPredictions",
    "check_output",
    "default_output",
    "predict_job",
    "predict_run",
    "prediction_parts",
    "weights_file",
    "with_run_result",
    "write_predictions",
]

SPLITS = ("eval", "train")
"""The data sections of a job that can be predicted."""

PREDICTABLE_SECTIONS = ("data", "trainer")
"""What a prediction's overrides may change: which data it reads and where it runs (the
device, precision, batch keys), never the model the weights were trained as."""

OUTPUT_FORMATS = (".csv", ".pt")
"""The predictions file's formats, by its suffix."""


class PredictionError(ValueError):
    """A run, weights file, data or output that ``loom predict`` cannot use; the message
    says which, and what to give instead."""


@dataclass
class RunPredictions:
    """A run's model's outputs on a split of data, one row per sample, in dataset order.

    Attributes:
        logits: The model's outputs, ``(samples, classes)``, on the CPU.
        class_names: The training data's class names, when it has them.
        weights: The file the weights came from.
        split: The data section predicted: ``"eval"`` or ``"train"``.
    """

    logits: torch.Tensor
    class_names: list[str] | None
    weights: Path
    split: str

    @property
    def probabilities(self) -> torch.Tensor:
        """The softmax of the logits over the classes, in float32."""
        return self.logits.float().softmax(dim=1)

    @property
    def predicted(self) -> torch.Tensor:
        """The index of each sample's largest logit."""
        return self.logits.argmax(dim=1)


def predict_job(run_dir: str | os.PathLike[str], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The job of the run in ``run_dir`` (its ``config.yaml``), with ``overrides``
    (``KEY.PATH=VALUE``, as ``loom train`` takes them) of its data and trainer sections.

    Raises:
        PredictionError: ``run_dir`` is not a run directory, or an override changes
            another section than :data:`PREDICTABLE_SECTIONS`.
        ConfigError: The job, with the overrides, does not resolve.
    """
    files = RunDirectory(run_dir)
    try:
        files.check_started()
    except RunFileError as error:
        raise PredictionError(str(error)) from None
    for override in overrides:
        section = override.partition("=")[0].split(".")[0]
        if section not in PREDICTABLE_SECTIONS:
            raise PredictionError(
                f"override {override!r}: predict takes overrides of "
                f"{' and '.join(f'{name}.*' for name in PREDICTABLE_SECTIONS)} (which data, "
                f"where it runs); the {section} section is the run's, as its weights were "
                "trained."
            )
    return resolve_job(apply_overrides(read_job_file(files.config), list(overrides)))


def weights_file(run_dir: str | os.PathLike[str], job: Mapping[str, Any], choice: str) -> Path:
    """The file that ``choice`` names in the run: one of
    :data:`~loom.config.run_directory.RUN_WEIGHTS`, or a path
    (a relative one is looked for in the current directory, then in ``run_dir``); see
    :meth:`RunDirectory.weights_file <loom.config.run_directory.RunDirectory.weights_file>`.

    Raises:
        PredictionError: The run has no such file, or ``final`` for a run that is running
            or failed (its ``model.pt``, if any, is from an earlier segment); the message
            says which to use instead.
    """
    try:
        return RunDirectory(run_dir).weights_file(job, choice, option="--checkpoint")
    except RunFileError as error:
        raise PredictionError(str(error)) from None


@dataclass
class PredictionParts:
    """What predicting a job's split needs, built.

    Attributes:
        trainer: The job's Trainer: its model (with the weights it was built with),
            device, precision and batch keys.
        loader: The split's data in the dataset's order, every sample once.
        classes: The training data's class names, when it has them.
    """

    trainer: Trainer
    loader: Any
    classes: list[str] | None


def prediction_parts(
    job: Mapping[str, Any], split: str = "eval", *, with_algorithms: bool = False
) -> PredictionParts:
    """The parts of ``job`` that predicting its ``split`` data needs: its model, data,
    device, precision and batch keys; its callbacks, schedule and ``eval_metrics`` are
    left out, and its algorithms too unless ``with_algorithms`` (for the states a
    checkpoint holds of them, such as an average of the weights).

    Raises:
        PredictionError: ``split`` is not one of :data:`SPLITS`, or the job has no such
            data.
        ConfigError: The job cannot be built.
    """
    if split not in SPLITS:
        raise PredictionError(f"split={split!r} is not one of {', '.join(SPLITS)}.")
    data = job["data"]
    if data[split] is None:
        raise PredictionError(
            f"the job has no data.{split} to predict: --split train predicts the training "
            f"data, or name the data with overrides, e.g. data.{split}.name=digits "
            f"data.{split}.split=test."
        )
    # Only what predicting needs is built: no callback (a logger would open its files), no
    # schedule, no added evaluation metric (torchmetrics need not be installed to predict),
    # and the evaluation data only when it is what is predicted.
    parts = build_job(
        {
            **job,
            "data": {"train": data["train"], "eval": data["eval"] if split == "eval" else None},
            "scheduler": None,
            "algorithms": job["algorithms"] if with_algorithms else [],
            "callbacks": [],
            "eval_metrics": [],
        }
    )
    if split == "eval":
        loader = parts.eval_loader
    else:  # the training data in order, every sample once (no shuffle, no drop_last)
        spec = data["train"]
        loader = eval_loader(
            parts.train_loader.dataset, spec["batch_size"], num_workers=spec.get("num_workers", 0)
        )
    return PredictionParts(parts.trainer(), loader, parts.classes)


def with_run_result(
    job: Mapping[str, Any], weights: str | os.PathLike[str], split: str = "eval"
) -> PredictionParts:
    """:func:`prediction_parts` whose model holds the run's result from ``weights``, as
    the run's ``model.pt`` holds it: a weights file as it is (the final weights, an
    EMA's average when the run kept one); a checkpoint's trained weights, and the job's
    algorithms their states from it, then the weights those make the result (an EMA's
    average; SWA's is the result only once training ends), so that ``last`` after the
    final epoch is ``final``. Weights are read with ``torch.load(weights_only=True)``.

    Raises:
        PredictionError, ConfigError: as :func:`prediction_parts`.
        FileNotFoundError, CheckpointError: ``weights`` is missing, cannot be read, or
            does not fit the model or the job's algorithms.
    """
    checkpoint = _checkpoint_or_none(Path(weights))
    # The algorithms only for a checkpoint's states: a weights file is the result already.
    parts = prediction_parts(job, split, with_algorithms=checkpoint is not None)
    state = parts.trainer.state
    load_model_weights(state.model, weights)  # every check of the file and its fit
    if checkpoint is not None:
        load_algorithm_states(state, checkpoint, Path(weights))
        unwrap_model(state.model).load_state_dict(exported_weights(state))
    return parts


def _checkpoint_or_none(path: Path) -> dict[str, Any] | None:
    """The loom checkpoint in ``path``, or None for a file of weights alone (or one that
    cannot be read, which :func:`load_model_weights` then names)."""
    try:
        saved = load_checkpoint(path)
    except (CheckpointError, FileNotFoundError):
        return None
    return saved if "format" in saved else None


def predict_run(
    job: Mapping[str, Any], weights: str | os.PathLike[str], *, split: str = "eval"
) -> RunPredictions:
    """The outputs of ``job``'s model, with the run's result from ``weights`` (see
    :func:`with_run_result`), on the job's ``split`` data in the dataset's order.

    The model, data, device, precision and batch keys are the job's; its callbacks,
    schedule and ``eval_metrics`` are left out (nothing trains or evaluates): see
    :func:`prediction_parts`.

    Raises:
        PredictionError: The job has no such data, or its model's outputs are not
            ``(samples, classes)``.
        ConfigError: The job cannot be built.
        FileNotFoundError, CheckpointError: ``weights`` is missing, cannot be read, or
            does not fit the model.
    """
    parts = with_run_result(job, weights, split)
    logits = parts.trainer.predict(parts.loader)
    if logits.dim() != 2:
        raise PredictionError(
            f"the model's outputs are {tuple(logits.shape)}, not (samples, classes): loom "
            "predict writes class scores; Trainer.predict returns any outputs."
        )
    return RunPredictions(logits, parts.classes, Path(weights), split)


def default_output(run_dir: str | os.PathLike[str], split: str, choice: str) -> Path:
    """``RUN_DIR/predictions-<split>-<weights>.csv``: ``final``, ``last``, ``best`` or the
    weights file's name without its suffix."""
    name = choice if choice in RUN_WEIGHTS else Path(choice).stem
    return RunDirectory(run_dir).path / f"predictions-{split}-{name}.csv"


def check_output(path: str | os.PathLike[str]) -> Path:
    """``path``, if its suffix is one of :data:`OUTPUT_FORMATS`.

    Raises:
        PredictionError: Another suffix.
    """
    path = Path(path)
    if path.suffix not in OUTPUT_FORMATS:
        raise PredictionError(
            f"--output {path}: give a file ending in {' or '.join(OUTPUT_FORMATS)} "
            "(a table of class probabilities, or the tensors for torch.load)."
        )
    return path


def write_predictions(predictions: RunPredictions, path: str | os.PathLike[str]) -> Path:
    """Writes ``predictions`` to ``path``, atomically, in the format its suffix names.

    ``.csv``: a row per sample in dataset order, ``index``, ``predicted`` (the class
    index), ``predicted_name`` (with class names), ``confidence`` (its probability), then
    each class's probability, ``p_<class name>`` (``p_<index>`` without names).
    ``.pt``: ``torch.save`` of plain data (loads with ``weights_only=True``): ``logits``,
    ``probabilities``, ``predicted``, ``class_names``, ``weights`` and ``split``.

    Returns:
        ``path``, as a Path.
    """
    path = check_output(path)
    if path.suffix == ".pt":
        saved = {
            "logits": predictions.logits,
            "probabilities": predictions.probabilities,
            "predicted": predictions.predicted,
            "class_names": predictions.class_names,
            "weights": str(predictions.weights),
            "split": predictions.split,
        }
        return write_atomically(path, lambda file: torch.save(saved, file))
    return write_atomically(path, _csv(predictions))


def _csv(predictions: RunPredictions) -> str:
    names = predictions.class_names
    probabilities = predictions.probabilities
    num_classes = probabilities.shape[1]
    columns = names if names is not None and len(names) == num_classes else None
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    labels = columns if columns is not None else [str(index) for index in range(num_classes)]
    named = ["predicted_name"] if columns is not None else []
    writer.writerow(["index", "predicted", *named, "confidence", *(f"p_{c}" for c in labels)])
    rows = zip(probabilities.tolist(), predictions.predicted.tolist(), strict=True)
    for index, (row, predicted) in enumerate(rows):
        name = [columns[predicted]] if columns is not None else []
        cells = [f"{value:.6g}" for value in row]
        writer.writerow([index, predicted, *name, cells[predicted], *cells])
    return text.getvalue()
