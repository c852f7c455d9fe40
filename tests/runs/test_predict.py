"""loom predict: a finished run's weights on its job's data, written to a file; and the
mistakes it names in one line."""

import csv
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from loom.callbacks import latest_checkpoint
from loom.cli import main
from loom.config import ConfigError
from loom.config.build import build_job
from loom.config.job import resolve_job
from loom.data import synthetic
from loom.runs import RunDirectory, train_job
from loom.runs.predict import RunPredictions, write_predictions
from loom.runs.status import recording_status
from loom.trainer import TrainingInterrupted

DATA = {"name": "synthetic", "shape": [4], "num_classes": 3, "noise": 2.0}
JOB = {
    "seed": 0,
    "model": {"name": "mlp", "hidden_sizes": [8]},
    "data": {
        "train": {**DATA, "num_samples": 40, "batch_size": 8},
        "eval": {**DATA, "split": "test", "num_samples": 14, "batch_size": 4},
    },
    "optimizer": {"name": "sgd", "lr": 0.2},
    "callbacks": [
        {"name": "checkpoint", "interval": "1ep", "keep_last": 2},
        # The highest loss ranks first: the best checkpoint is not the final weights.
        {"name": "checkpoint", "folder": "best", "best_metric": "eval/loss", "best_mode": "max"},
    ],
    "trainer": {"max_duration": "3ep", "device": "cpu"},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run with interval and best checkpoints."""
    run_dir = tmp_path_factory.mktemp("ranked") / "run"
    train_job(resolve_job(JOB), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """A finished run without evaluation data, so without best checkpoints."""
    run_dir = tmp_path_factory.mktemp("plain") / "run"
    train_job(
        resolve_job({**JOB, "data": {"train": JOB["data"]["train"]}, "callbacks": []}), run_dir
    )
    return run_dir


def outputs_with(path, split="test", num_samples=14):
    """The job's model with the weights in ``path``, on the split's inputs, by hand."""
    model = build_job(resolve_job({**JOB, "callbacks": []})).model
    saved = torch.load(path, weights_only=True)
    model.load_state_dict(saved["model"] if "format" in saved else saved)
    model.eval()
    inputs = synthetic(split, num_samples=num_samples, num_classes=3, shape=[4], noise=2.0)
    with torch.no_grad():
        return model(inputs.inputs)


def predict(capsys, *arguments):
    status = main(["predict", *map(str, arguments)])
    output = capsys.readouterr()
    return status, output.out, output.err


def test_the_final_weights_predict_the_eval_data_into_a_csv(run, capsys):
    status, out, err = predict(capsys, run)
    assert (status, err) == (0, "")
    written = run / "predictions-eval-final.csv"
    assert out == f"predicted 14 samples of data.eval with {run / 'model.pt'}: {written}\n"
    rows = list(csv.DictReader(written.read_text().splitlines()))
    assert list(rows[0]) == [
        "index", "predicted", "predicted_name", "confidence", "p_class_0", "p_class_1", "p_class_2",
    ]  # fmt: skip
    probabilities = outputs_with(run / "model.pt").softmax(dim=1)
    assert [int(row["index"]) for row in rows] == list(range(14))
    assert [int(row["predicted"]) for row in rows] == probabilities.argmax(dim=1).tolist()
    assert [row["predicted_name"] for row in rows] == [f"class_{row['predicted']}" for row in rows]
    table = torch.tensor([[float(row[f"p_class_{c}"]) for c in range(3)] for row in rows])
    torch.testing.assert_close(table, probabilities, rtol=1e-5, atol=1e-6)
    confidence = torch.tensor([float(row["confidence"]) for row in rows])
    torch.testing.assert_close(confidence, probabilities.max(dim=1).values, rtol=1e-5, atol=1e-6)


def weights_of(run, choice):
    if choice == "last":
        return latest_checkpoint(run / "checkpoints")
    if choice == "best":
        summary = json.loads((run / "summary.json").read_text())
        return run / "best" / summary["best_checkpoints"][0]["path"].rsplit("/", 1)[1]
    return run / "model.pt"


@pytest.mark.parametrize("choice", ["final", "last", "best"])
def test_each_choice_of_weights_is_the_runs_file_of_that_name(run, capsys, tmp_path, choice):
    output = tmp_path / "predictions.pt"
    status, out, _ = predict(capsys, run, "--checkpoint", choice, "--output", output)
    assert status == 0
    expected = weights_of(run, choice)
    assert f"with {expected}: {output}" in out
    saved = torch.load(output, weights_only=True)
    assert saved["weights"] == str(expected)
    assert (saved["split"], saved["class_names"]) == ("eval", ["class_0", "class_1", "class_2"])
    torch.testing.assert_close(saved["logits"], outputs_with(expected))
    torch.testing.assert_close(saved["probabilities"], saved["logits"].softmax(dim=1))
    assert torch.equal(saved["predicted"], saved["logits"].argmax(dim=1))


def test_the_choices_are_different_weights_and_a_path_is_taken_as_given(run, capsys, tmp_path):
    last, best = weights_of(run, "last"), weights_of(run, "best")
    assert (last.name, best.name) == ("epoch3-batch15.pt", "best-epoch1-batch5.pt")
    assert not torch.allclose(outputs_with(best), outputs_with(run / "model.pt"))
    for given in (best, best.relative_to(run)):  # a relative path: in the run directory
        output = tmp_path / "given.pt"
        assert predict(capsys, run, "--checkpoint", given, "--output", output)[0] == 0
        assert torch.load(output, weights_only=True)["weights"] == str(best)
    status, out, _ = predict(capsys, run, "--checkpoint", best)
    assert status == 0
    assert out.endswith(f"{run / f'predictions-eval-{best.stem}.csv'}\n")


def test_the_training_data_and_overrides_of_the_data(run, capsys, tmp_path):
    output = tmp_path / "train.pt"
    assert predict(capsys, run, "--split", "train", "--output", output)[0] == 0
    logits = torch.load(output, weights_only=True)["logits"]
    # The training loader shuffles; the predictions are in the dataset's order.
    torch.testing.assert_close(logits, outputs_with(run / "model.pt", "train", 40))
    other = tmp_path / "other.pt"
    overrides = ["data.eval.batch_size=3", "data.eval.num_samples=9", "trainer.precision=fp32"]
    assert predict(capsys, run, "--output", other, *overrides)[0] == 0
    logits = torch.load(other, weights_only=True)["logits"]
    torch.testing.assert_close(logits, outputs_with(run / "model.pt", num_samples=9))


@pytest.mark.parametrize("split", ["train", "eval"])
def test_a_memory_loader_predicts_as_the_dataloader(run, capsys, tmp_path, split):
    output = tmp_path / "memory.pt"
    memory = f"data.{split}.loader=memory"
    assert predict(capsys, run, "--split", split, "--output", output, memory)[0] == 0
    logits = torch.load(output, weights_only=True)["logits"]
    data = ("train", 40) if split == "train" else ("test", 14)
    torch.testing.assert_close(logits, outputs_with(run / "model.pt", *data))


def test_a_run_without_a_best_checkpoint_names_the_setting_that_keeps_them(plain_run, capsys):
    status, out, err = predict(capsys, plain_run, "--checkpoint", "best")
    assert (status, out) == (2, "")
    assert err == (
        f"loom predict: error: --checkpoint best: {plain_run} kept no best checkpoint: its "
        "job has no checkpoint callback with a best_metric. A run keeps them with callbacks: "
        "[{name: checkpoint, best_metric: eval/accuracy, keep_best: 1}]; --checkpoint final "
        "or last take its other weights.\n"
    )
    status, _, err = predict(capsys, plain_run)
    assert status == 2
    assert "the job has no data.eval to predict: --split train predicts the training" in err
    assert predict(capsys, plain_run, "--split", "train")[0] == 0


@pytest.fixture
def broken_run(run, tmp_path):
    """A copy of the run without its final weights or summary, as a run that has not ended."""
    copy = tmp_path / "unfinished"
    shutil.copytree(run, copy)
    (copy / "model.pt").unlink()
    (copy / "summary.json").unlink()
    return copy


def test_mistakes_are_one_line_and_exit_2(run, broken_run, capsys, tmp_path):
    misfit = tmp_path / "misfit.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), misfit)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    cases = [
        ([tmp_path / "nowhere"], "run directory '{tmp}/nowhere' does not exist; give the "),
        ([tmp_path], f"{tmp_path} holds no config.yaml, so it is not a run loom train started"),
        ([run, "--checkpoint", "nowhere.pt"], "--checkpoint nowhere.pt: no such file (nor in"),
        ([run, "--checkpoint", misfit], "does not fit this model (MLP): missing keys"),
        ([run, "--checkpoint", damaged], f"checkpoint '{damaged}' cannot be read: it is"),
        ([run, "--output", "table.txt"], "--output table.txt: give a file ending in .csv or .pt"),
        ([run, "model.hidden_sizes=[4]"], "override 'model.hidden_sizes=[4]': predict takes"),
        ([run, "data.eval.nope=1"], "config.yaml (with data.eval.nope=1): data.eval.nope: un"),
        ([run, "--split", "test"], "split='test' is not one of eval, train."),
        ([broken_run], f"{broken_run} has no model.pt, the final weights a run writes when"),
        ([broken_run, "--checkpoint", "best"], "has no summary.json, which lists the best"),
    ]
    for arguments, message in cases:
        status, out, err = predict(capsys, *arguments)
        assert (status, out) == (2, ""), arguments
        assert err.startswith("loom predict: error: "), err
        assert message.format(tmp=tmp_path) in err, (arguments, err)
        assert err.count("\n") == 1, err
    assert predict(capsys, broken_run, "--checkpoint", "last")[0] == 0


@pytest.fixture
def resumed_run(run, tmp_path):
    """A copy of the finished run, for a next segment (a resume) to be recorded in."""
    copy = tmp_path / "resumed"
    shutil.copytree(run, copy)
    return copy


def training_segment(run_dir):
    """Records the run's status as loom train does around a segment of training."""
    return recording_status(
        RunDirectory(run_dir), SimpleNamespace(is_main_process=True, stop_reason=None)
    )


def test_the_final_weights_of_a_running_or_failed_run_are_refused(resumed_run, capsys):
    # model.pt is written when training ends: a segment that is running, or that raised,
    # has not written it, so the run's model.pt is the earlier segment's.
    last = weights_of(resumed_run, "last")
    stale = (
        "so its model.pt is from before: a run writes it when its training ends, and this "
        f"training has not; --checkpoint last takes its latest checkpoint, {last}.\n"
    )
    with training_segment(resumed_run):  # running, in this very process
        status, out, err = predict(capsys, resumed_run)
        assert (status, out) == (2, "")
        assert err.startswith(
            f"loom predict: error: --checkpoint final: the run in {resumed_run} is still "
            f"running (process {os.getpid()} on {socket.gethostname()}, since "
        ), err
        assert err.endswith(f"), {stale}"), err
        assert err.count("\n") == 1
        assert predict(capsys, resumed_run, "--checkpoint", "last")[0] == 0
    with pytest.raises(RuntimeError), training_segment(resumed_run):
        raise RuntimeError("CUDA out of memory")
    status, out, err = predict(capsys, resumed_run)
    assert (status, out) == (2, "")
    assert err == (
        f"loom predict: error: --checkpoint final: the run in {resumed_run} failed "
        f"(RuntimeError: CUDA out of memory), {stale}"
    )
    assert predict(capsys, resumed_run, "--checkpoint", "last")[0] == 0
    assert predict(capsys, resumed_run, "--checkpoint", "model.pt")[0] == 0  # asked for by name


def test_an_interrupted_runs_final_weights_are_its_own(resumed_run, capsys, tmp_path):
    # An interrupt ends training: the run writes model.pt then, as at the end.
    with pytest.raises(TrainingInterrupted), training_segment(resumed_run):
        raise TrainingInterrupted("interrupted by SIGTERM at epoch 4, batch 18", "SIGTERM")
    output = tmp_path / "interrupted.pt"
    status, out, err = predict(capsys, resumed_run, "--output", output)
    assert (status, err) == (0, "")
    assert out == f"predicted 14 samples of data.eval with {resumed_run / 'model.pt'}: {output}\n"


def test_a_job_with_eval_metrics_predicts_without_torchmetrics(run, tmp_path, capsys, monkeypatch):
    copy = tmp_path / "with_f1"
    shutil.copytree(run, copy)
    job = yaml.safe_load((copy / "config.yaml").read_text())
    job["eval_metrics"] = [{"name": "f1"}]
    (copy / "config.yaml").write_text(yaml.safe_dump(job))
    for name in [name for name in sys.modules if name.split(".")[0] == "torchmetrics"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    with pytest.raises(ConfigError, match=r"eval_metrics.0 \(f1\): loom's eval_metrics need "):
        build_job(resolve_job({**job, "callbacks": []}))  # training the job needs it
    output = tmp_path / "f1.pt"
    status, out, err = predict(capsys, copy, "--output", output)
    assert (status, err) == (0, "")
    assert out == f"predicted 14 samples of data.eval with {copy / 'model.pt'}: {output}\n"
    logits = torch.load(output, weights_only=True)["logits"]
    torch.testing.assert_close(logits, outputs_with(copy / "model.pt"))


def test_a_csv_without_class_names_numbers_the_classes(tmp_path):
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    path = write_predictions(RunPredictions(logits, None, Path("w.pt"), "eval"), tmp_path / "p.csv")
    assert path.read_text().splitlines() == [
        "index,predicted,confidence,p_0,p_1",
        "0,1,0.731059,0.268941,0.731059",
        "1,0,0.880797,0.880797,0.119203",
    ]


def test_an_ema_run_s_checkpoint_predicts_with_its_average_as_model_pt_does(tmp_path, capsys):
    """Before, a checkpoint gave its trained weights, model.pt the average: the same run
    predicted two ways."""
    run_dir = tmp_path / "ema"
    job = {**JOB, "algorithms": [{"name": "ema", "decay": 0.5}], "callbacks": []}
    train_job(resolve_job(job), run_dir)
    outputs = {}
    for choice in ("final", "last"):
        output = tmp_path / f"{choice}.pt"
        status, _, err = predict(capsys, run_dir, "--checkpoint", choice, "--output", output)
        assert status == 0, err
        outputs[choice] = torch.load(output, weights_only=True)["logits"]
    assert torch.equal(outputs["last"], outputs["final"])


@pytest.mark.parametrize("choice", ["final", "last", "best"])
def test_a_sharded_run_s_folders_predict_as_the_files_of_the_same_run(
    run, capsys, tmp_path, choice
):
    """strategy fsdp in one process trains as the plain run does, but checkpoints into
    folders: each choice finds its folder (before, `best` was refused as missing) and
    predicts what the file of the same moment does."""
    sharded = tmp_path / "sharded"
    train_job(resolve_job({**JOB, "trainer": {**JOB["trainer"], "strategy": "fsdp"}}), sharded)
    expected = weights_of(sharded, choice)
    assert expected.is_dir() or choice == "final"
    outputs = []
    for run_dir in (run, sharded):
        output = tmp_path / f"{run_dir.name}.pt"
        assert predict(capsys, run_dir, "--checkpoint", choice, "--output", output)[0] == 0
        outputs.append(torch.load(output, weights_only=True))
    assert outputs[1]["weights"] == str(expected)
    assert torch.equal(outputs[1]["logits"], outputs[0]["logits"])
