"""loom export: a run's model with its resulting weights, exported in each format and
checked through that format's own runtime at other batch sizes than it was traced with;
an EMA run's export is its average; and the mistakes it names in one line."""

import shutil
import sys

import pytest
import torch

from loom.cli import main
from loom.config.build import build_job
from loom.config.job import resolve_job
from loom.runs import RunDirectory, train_job
from loom.runs.export import (
    EXPORT_FORMATS,
    TOLERANCES,
    ExportError,
    default_output,
    export_model,
    export_run,
)
from loom.runs.predict import predict_job, weights_file

DATA = {"name": "synthetic", "shape": [4], "num_classes": 3}
JOB = {
    "seed": 0,
    "model": {"name": "mlp", "hidden_sizes": [8]},
    "data": {
        "train": {**DATA, "num_samples": 32, "batch_size": 8},
        "eval": {**DATA, "split": "test", "num_samples": 12, "batch_size": 5},
    },
    "optimizer": {"name": "sgd", "lr": 0.5},
    # A short average, far from the trained weights after two epochs.
    "algorithms": [{"name": "ema", "decay": 0.5}],
    "callbacks": [{"name": "checkpoint", "interval": "1ep"}],
    "trainer": {"max_duration": "2ep", "device": "cpu"},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished EMA run with interval checkpoints."""
    run_dir = tmp_path_factory.mktemp("ema") / "run"
    train_job(resolve_job(JOB), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """A finished run without evaluation data, algorithms or checkpoints."""
    run_dir = tmp_path_factory.mktemp("plain") / "run"
    data = {"train": JOB["data"]["train"]}
    train_job(resolve_job({**JOB, "data": data, "algorithms": [], "callbacks": []}), run_dir)
    return run_dir


def export(capsys, *arguments):
    status = main(["export", *map(str, arguments)])
    output = capsys.readouterr()
    return status, output.out, output.err


def run_model(run_dir, weights):
    """The run's model in eval mode with the weights of a file that holds a state dict."""
    model = build_job(resolve_job({**JOB, "algorithms": [], "callbacks": []})).model.eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model


def load_exported(path, format):
    """The exported file, loaded by its format's runtime, as a function of a batch."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda inputs: torch.from_numpy(session.run(None, {name: inputs.numpy()})[0])
    if format == "exported_program":
        return torch.export.load(path).module()
    import warnings

    with warnings.catch_warnings():  # torch.jit is deprecated; see loom/runs/export.py
        warnings.filterwarnings("ignore", category=FutureWarning)
        return torch.jit.load(path)


@pytest.mark.parametrize("format", list(EXPORT_FORMATS))
def test_each_format_matches_pytorch_in_its_runtime_at_any_batch_size(run, capsys, format):
    if format == "onnx":  # the export extra, which the test extra holds
        for module in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(module)
    status, out, err = export(capsys, run, "--format", format)
    assert status == 0, err
    path = run / "export" / f"model-final{EXPORT_FORMATS[format]}"
    lines = out.splitlines()
    assert lines[0] == f"exported {run / 'model.pt'} as {format}: {path}"
    assert lines[1].startswith(
        "checked against PyTorch on 5 samples of data.eval (traced with 2): max abs difference "
    )
    assert float(lines[1].rpartition(" ")[2]) <= TOLERANCES[format]
    exported, model = load_exported(path, format), run_model(run, run / "model.pt")
    for samples in (1, 3, 7):  # the batch dimension is dynamic
        inputs = torch.randn(samples, 4)
        with torch.no_grad():
            difference = (exported(inputs) - model(inputs)).abs().max()
        assert difference <= TOLERANCES[format]


def test_an_ema_runs_export_is_its_average_from_model_pt_and_from_a_checkpoint(run, capsys):
    job = predict_job(run)
    last = weights_file(run, job, "last")
    trained = torch.load(last, weights_only=True)["model"]
    average = torch.load(run / "model.pt", weights_only=True)
    assert not torch.allclose(trained["layers.1.weight"], average["layers.1.weight"], atol=1e-3)
    inputs = torch.randn(6, 4)
    with torch.no_grad():
        expected = run_model(run, run / "model.pt")(inputs)
    for choice in ("final", "last"):
        output = default_output(run, "exported_program", choice)
        exported = export_run(job, weights_file(run, job, choice), "exported_program", output)
        assert exported.path.name == f"model-{choice}.pt2"
        got = torch.export.load(exported.path).module()(inputs)
        # The checkpoint of the last epoch's end holds what model.pt holds: the average.
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_a_job_without_eval_data_is_checked_on_its_training_data_in_order(plain_run):
    job = predict_job(plain_run)
    output = default_output(plain_run, "torchscript", "final")
    exported = export_run(job, weights_file(plain_run, job, "final"), "torchscript", output)
    assert (exported.split, exported.samples, exported.max_abs_difference) == ("train", 8, 0.0)


def test_an_export_that_differs_from_pytorch_is_refused_and_not_written(
    run, capsys, monkeypatch, tmp_path
):
    import loom.runs.export as exporting

    runs_it = exporting._run_exported
    monkeypatch.setattr(exporting, "_run_exported", lambda *args: runs_it(*args) + 1e-3)
    output = tmp_path / "model.pt2"
    status, out, err = export(capsys, run, "--format", "exported_program", "--output", output)
    assert (status, out) == (2, "")
    assert err == (
        f"loom export: error: the exported_program export of {run / 'model.pt'} differs "
        "from PyTorch by up to 0.001 (tolerance 1e-05) on 5 samples of data.eval in "
        f"torch.export.load(...).module(); {output} was not written.\n"
    )
    assert list(tmp_path.iterdir()) == []  # no file, and no temporary either


class DataDependent(torch.nn.Module):
    def forward(self, inputs):
        return inputs if inputs.sum() > 0 else -inputs


def test_a_model_torch_cannot_export_is_named_with_torchs_reason():
    with pytest.raises(ExportError) as raised:
        export_model(DataDependent(), torch.ones(2, 4), "exported_program")
    message = str(raised.value)
    assert message.startswith(
        "torch cannot export the model (DataDependent) as exported_program, traced with "
        "inputs of shape (2, 4): "
    )
    assert "\n" not in message
    assert len(message) < 800


def test_mistakes_are_one_line_and_exit_2(run, plain_run, capsys, tmp_path, monkeypatch):
    no_model = tmp_path / "no_model"
    shutil.copytree(run, no_model)
    (no_model / "model.pt").unlink()
    no_checkpoint = tmp_path / "no_checkpoint"
    shutil.copytree(plain_run, no_checkpoint)
    shutil.rmtree(no_checkpoint / "checkpoints")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = {
        (tmp_path / "absent", "--format", "onnx"): f"run directory '{tmp_path / 'absent'}' "
        "does not exist",
        (no_model, "--format", "onnx"): f"{no_model} has no model.pt, the final weights a "
        "run writes when it ends; --checkpoint last takes its latest checkpoint instead.",
        (no_checkpoint, "--format", "onnx", "--checkpoint", "last"): "--checkpoint last: no "
        f"checkpoint in {RunDirectory(no_checkpoint).checkpoints}; --checkpoint final takes",
        (run, "--format", "tflite"): "format 'tflite' is not one of onnx, exported_program, "
        "torchscript.",
        (run, "--format", "onnx", "--output", tmp_path / "m.pt"): f"--output {tmp_path / 'm.pt'}:"
        " the onnx export is a file ending in .onnx.",
        (run, "--format", "torchscript", "--output", a_file / "m.torchscript"): "cannot write "
        f"{a_file / 'm.torchscript'}: ",
    }
    for arguments, expected in cases.items():
        status, out, err = export(capsys, *arguments)
        assert status == 2, arguments
        assert err.startswith("loom export: error: "), err
        assert expected in err, err
        assert err.count("\n") == 1, err  # one line, no traceback
        assert out == ""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    status, _, err = export(capsys, run, "--format", "onnx")
    assert (status, err) == (
        2,
        "loom export: error: --format onnx needs onnx, onnxscript, onnxruntime, and "
        'onnxruntime is not installed: pip install "loom[export]".\n',
    )


def test_the_help_names_every_format(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert all(format in out for format in EXPORT_FORMATS)
    assert all(suffix in out for suffix in EXPORT_FORMATS.values())
