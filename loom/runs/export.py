"""Exporting a run's model: its job's model with the run's resulting weights, as an ONNX
file, a ``torch.export`` program or TorchScript, checked against PyTorch before it is
written. What ``loom export`` does.

The model is built as ``loom predict`` builds it, with the run's result from the file
``--checkpoint`` names (:func:`~loom.runs.predict.with_run_result`: an EMA's average
from ``model.pt`` or a checkpoint alike), on the CPU in fp32, in eval mode.

The exported model takes a batch of any size (its first dimension is dynamic): it is
traced with a batch of one size and checked with another, a batch of the job's
evaluation data (its training data in order when it has none), against the PyTorch
model, by the format's own runtime (onnxruntime for ONNX). A file is only written, and
atomically, once its outputs are within :data:`TOLERANCES` of PyTorch's.

Examples:
    >>> import contextlib, io, tempfile
    >>> from loom.config.job import resolve_job
    >>> from loom.runs import train_job
    >>> from loom.runs.predict import predict_job, weights_file
    >>> data = {"name": "synthetic", "shape": [4], "num_classes": 3}
    >>> job = resolve_job({
    ...     "model": {"name": "mlp", "hidden_sizes": [8]},
    ...     "data": {"train": {**data, "num_samples": 32},
    ...              "eval": {**data, "split": "test", "num_samples": 12}},
    ...     "optimizer": {"name": "sgd", "lr": 0.1},
    ...     "trainer": {"max_duration": "1ep", "device": "cpu"},
    ... })
    >>> run_dir = tempfile.mkdtemp()
    >>> with contextlib.redirect_stdout(io.StringIO()):  # its table of metrics
    ...     _ = train_job(job, run_dir)
    >>> job = predict_job(run_dir)
    >>> output = default_output(run_dir, "exported_program", "final")
    >>> exported = export_run(job, weights_file(run_dir, job, "final"), "exported_program", output)
    >>> exported.path.relative_to(run_dir).as_posix(), exported.samples, exported.traced_samples
    ('export/model-final.pt2', 12, 2)
    >>> exported.max_abs_difference <= TOLERANCES["exported_program"]
    True
    >>> program = torch.export.load(exported.path).module()
    >>> program(torch.zeros(5, 4)).shape
    torch.Size([5, 3])
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loom.config.run_directory import RUN_WEIGHTS, RunDirectory
from loom.runs.predict import with_run_result
from loom.trainer import (
    get_batch_item,
    unwrap_model,
    write_atomically,
)

__all__ = [
    "EXPORT_FORMATS",
    "TOLERANCES",
    "ExportError",
    "ModelToExport",
    "RunExport",
    "check_output",
    "default_output",
    "export_model",
    "export_run",
    "model_to_export",
]

EXPORT_FORMATS = {"onnx": ".onnx", "exported_program": ".pt2", "torchscript": ".torchscript"}
"""Each format ``loom export`` writes, with its file's suffix."""

TOLERANCES = {"onnx": 1e-5, "exported_program": 1e-5, "torchscript": 1e-5}
"""The largest absolute difference from PyTorch's outputs an exported model may have.
Measured: onnxruntime 6e-8 to 7e-7 on the tests' MLP and 4.8e-6 on configs/digits.yaml's
trained small CNN (its own float32 kernels, which add up in another order); the
exported program and TorchScript 0 on both (torch's own kernels)."""

_EXTRAS = {"onnx": ("onnx", "onnxscript", "onnxruntime")}
"""The modules a format needs beyond torch: ``pip install "loom[export]"``."""

_RUNTIMES = {
    "onnx": "onnxruntime (CPUExecutionProvider)",
    "exported_program": "torch.export.load(...).module()",
    "torchscript": "torch.jit.load",
}


class ExportError(ValueError):
    """A run, format, output or model that ``loom export`` cannot export, or an export
    whose outputs differ from PyTorch's; the message says which, and what to do."""


@dataclass
class ModelToExport:
    """A run's model with its resulting weights, in eval mode on the CPU, and a batch of
    its job's data to check an export with.

    Attributes:
        model: The model (its ``nn.Module``, no wrapper), in eval mode.
        inputs: The inputs of the first batch of ``split``, at the job's ``input_key``.
        split: The data section they come from: ``"eval"``, or ``"train"`` for a job
            without evaluation data.
        weights: The file the weights came from.
    """

    model: nn.Module
    inputs: torch.Tensor
    split: str
    weights: Path


@dataclass
class RunExport:
    """An exported model, written and checked.

    Attributes:
        path: The file written.
        format: One of :data:`EXPORT_FORMATS`.
        weights: The file the weights came from.
        split: The data section the check's batch came from.
        samples: The check's batch size.
        traced_samples: The batch size the model was traced with (another one).
        max_abs_difference: The largest absolute difference between the exported
            model's outputs and PyTorch's on the check's batch.
    """

    path: Path
    format: str
    weights: Path
    split: str
    samples: int
    traced_samples: int
    max_abs_difference: float


def default_output(run_dir: str | os.PathLike[str], format: str, choice: str) -> Path:
    """``RUN_DIR/export/model-<weights>.<suffix>``: ``final``, ``last``, ``best`` or the
    weights file's name without its suffix, as ``loom predict`` names its files; the
    suffix is the format's (:data:`EXPORT_FORMATS`)."""
    name = choice if choice in RUN_WEIGHTS else Path(choice).stem
    return RunDirectory(run_dir).path / "export" / f"model-{name}{_suffix(format)}"


def check_output(path: str | os.PathLike[str], format: str) -> Path:
    """``path``, if it ends in ``format``'s suffix (so that no export is ever written
    over a run's ``.pt`` weights) and names no folder.

    Raises:
        ExportError: Another suffix, or a folder.
    """
    path, suffix = Path(path), _suffix(format)
    if path.suffix != suffix:
        raise ExportError(f"--output {path}: the {format} export is a file ending in {suffix}.")
    if path.is_dir():
        raise ExportError(f"--output {path}: it is a folder; give a file ending in {suffix}.")
    return path


def model_to_export(job: Mapping[str, Any], weights: str | os.PathLike[str]) -> ModelToExport:
    """``job``'s model on the CPU in fp32, in eval mode, with the run's resulting weights
    from ``weights`` (see the module's docstring), and the first batch of its job's
    evaluation data (its training data in order, without it).

    Raises:
        ExportError: The batch's inputs are not one tensor.
        ConfigError: The job cannot be built.
        FileNotFoundError, CheckpointError: ``weights`` is missing, cannot be read, or
            does not fit the model or the job's algorithms.
    """
    # Exported for the CPU, checked with onnxruntime's CPU kernels: fp32, as stored.
    on_cpu = {"device": "cpu", "precision": "fp32", "compile": False}
    job = {**job, "trainer": {**job["trainer"], **on_cpu}}
    split = "eval" if job["data"]["eval"] is not None else "train"
    parts = with_run_result(job, weights, split)
    state = parts.trainer.state
    model = unwrap_model(state.model)
    batch = next(iter(parts.loader), None)
    inputs = None if batch is None else get_batch_item(batch, state.input_key)
    if not isinstance(inputs, torch.Tensor):
        raise ExportError(
            f"data.{split}'s batches hold {type(inputs).__name__} at input_key "
            f"{state.input_key!r}; loom export exports a model of one tensor input."
        )
    return ModelToExport(model.eval(), inputs, split, Path(weights))


def export_model(model: nn.Module, inputs: torch.Tensor, format: str) -> bytes:
    """``model`` exported as ``format`` with a dynamic first (batch) dimension, traced
    with ``inputs``: the bytes of its file.

    Raises:
        ExportError: ``format`` is not one of :data:`EXPORT_FORMATS`, or its extra is
            not installed, or torch cannot export the model (torch's reason included).
    """
    _check_format(format)
    example = (inputs,)
    batch = {0: torch.export.Dim("batch")}
    file = io.BytesIO()
    try:
        if format == "onnx":
            program = torch.onnx.export(
                model, example, dynamo=True, dynamic_shapes=(batch,), verbose=False
            )
            return program.model_proto.SerializeToString()
        if format == "exported_program":
            torch.export.save(torch.export.export(model, example, dynamic_shapes=(batch,)), file)
            return file.getvalue()
        with _torchscript_is_deprecated():
            torch.jit.save(torch.jit.trace(model, example), file)
        return file.getvalue()
    except Exception as error:  # torch raises many types; its reason is what matters
        reason = " ".join(str(error).split())[:600]
        raise ExportError(
            f"torch cannot export the model ({type(model).__name__}) as {format}, traced with "
            f"inputs of shape {tuple(inputs.shape)}: {type(error).__name__}: {reason}"
        ) from error


def export_run(
    job: Mapping[str, Any],
    weights: str | os.PathLike[str],
    format: str,
    output: str | os.PathLike[str],
) -> RunExport:
    """Exports ``job``'s model with the run's result from ``weights`` as ``format``,
    checks it against PyTorch with the format's runtime on a batch of the job's data of
    another size than it was traced with, and writes it to ``output``, atomically, once
    it is within :data:`TOLERANCES`.

    Raises:
        ExportError: The format, its extra, the output or the model cannot be
            exported, or the export's outputs differ from PyTorch's by more than the
            tolerance (then nothing is written).
        ConfigError, FileNotFoundError, CheckpointError: as :func:`model_to_export`.
        FileWriteError: ``output`` cannot be written.
    """
    output = check_output(output, format)
    _check_format(format)  # before building anything
    run = model_to_export(job, weights)
    samples = len(run.inputs)
    traced = 3 if samples == 2 else 2  # another size than the check's
    traced_inputs = run.inputs[torch.arange(traced) % samples]
    data = export_model(run.model, traced_inputs, format)
    with torch.no_grad():
        expected = run.model(run.inputs)
        try:
            got = _run_exported(data, format, run.inputs)
        except Exception as error:  # the runtime's own types (onnxruntime's among them)
            reason = " ".join(str(error).split())[:600]
            raise ExportError(
                f"the {format} export of {run.weights} does not run in {_RUNTIMES[format]} "
                f"on {samples} samples of data.{run.split}: {type(error).__name__}: {reason}; "
                f"{output} was not written."
            ) from error
    difference = _max_abs_difference(got, expected, format)
    tolerance = TOLERANCES[format]
    if not difference <= tolerance:
        raise ExportError(
            f"the {format} export of {run.weights} differs from PyTorch by up to "
            f"{difference:.3g} (tolerance {tolerance:g}) on {samples} samples of "
            f"data.{run.split} in {_RUNTIMES[format]}; {output} was not written."
        )
    path = write_atomically(output, data)
    return RunExport(path, format, run.weights, run.split, samples, traced, difference)


def _run_exported(data: bytes, format: str, inputs: torch.Tensor) -> Any:
    """The outputs of the exported model in ``data``, run by its format's runtime."""
    if format == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the threads torch was given
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        (name,) = [argument.name for argument in session.get_inputs()]
        return torch.from_numpy(session.run(None, {name: inputs.numpy()})[0])
    if format == "exported_program":
        return torch.export.load(io.BytesIO(data)).module()(inputs)
    with _torchscript_is_deprecated():
        return torch.jit.load(io.BytesIO(data))(inputs)


def _max_abs_difference(got: Any, expected: Any, format: str) -> float:
    if not isinstance(expected, torch.Tensor) or not isinstance(got, torch.Tensor):
        raise ExportError(
            f"the model returns {type(expected).__name__}: loom export checks a model that "
            "returns one tensor."
        )
    if got.shape != expected.shape:
        raise ExportError(
            f"the {format} export returns {tuple(got.shape)} where PyTorch returns "
            f"{tuple(expected.shape)}: its batch dimension is not dynamic."
        )
    return float((got.double() - expected.double()).abs().max()) if got.numel() else 0.0


def _check_format(format: str) -> None:
    if format not in EXPORT_FORMATS:
        raise ExportError(f"format {format!r} is not one of {', '.join(EXPORT_FORMATS)}.")
    for module in _EXTRAS.get(format, ()):
        try:
            importlib.import_module(module)
        except ImportError:
            raise ExportError(
                f"--format {format} needs {', '.join(_EXTRAS[format])}, and {module} is not "
                'installed: pip install "loom[export]".'
            ) from None


def _suffix(format: str) -> str:
    if format not in EXPORT_FORMATS:
        raise ExportError(f"format {format!r} is not one of {', '.join(EXPORT_FORMATS)}.")
    return EXPORT_FORMATS[format]


@contextlib.contextmanager
def _torchscript_is_deprecated() -> Iterator[None]:
    """Recent torch (2.14 here) warns that ``torch.jit`` is deprecated (a FutureWarning at
    each trace, save and load). TorchScript is still a format people deploy, and asked
    for by name here, so that warning alone is ignored, around those calls alone."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning
        )
        yield
