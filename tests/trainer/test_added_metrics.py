"""Metrics an evaluation computes beside loom's own (``Trainer(eval_metrics=...)``)."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.optim import plateau
from tests.conftest import TWO_PROCESS_TORCHRUN
from tests.trainer.added_metrics_job import Count, f1_trainer

classification = pytest.importorskip(
    "torchmetrics.classification",
    reason="the metrics extra is not installed (python3 -m pip install 'loom[metrics]')",
)
metrics_module = pytest.importorskip("sklearn.metrics")

INPUTS, TARGETS = (
    torch.randn(40, 3, generator=torch.Generator().manual_seed(0)),
    torch.arange(40) % 3,
)


def trainer(eval_metrics, loader=None, **arguments):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 3)
    loader = loader or DataLoader(TensorDataset(INPUTS, TARGETS), batch_size=8)
    return Trainer(
        model, loader, loader, max_duration="1ep", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1), eval_metrics=eval_metrics,
        **arguments,
    )  # fmt: skip


def test_an_added_metric_is_the_one_over_all_the_evaluations_batches():
    run = trainer({"f1": classification.MulticlassF1Score(num_classes=3)})
    first = run.eval()
    predicted = run.state.model(INPUTS).argmax(dim=1)
    expected = metrics_module.f1_score(TARGETS, predicted, average="macro")
    assert first["eval/f1"] == pytest.approx(expected, abs=1e-6)
    counted = trainer({"samples": Count()})
    assert counted.eval()["eval/samples"] == counted.eval()["eval/samples"] == 40.0  # reset
    fewer = DataLoader(TensorDataset(INPUTS[:16], TARGETS[:16]), batch_size=8)
    expected = metrics_module.f1_score(TARGETS[:16], predicted[:16], average="macro")
    assert run.eval(fewer)["eval/f1"] == pytest.approx(expected, abs=1e-6)  # only these
    assert run.fit()["eval/f1"] == run.state.metrics["eval/f1"]


def test_a_plateau_schedule_may_monitor_an_added_metric_and_an_unknown_one_is_named():
    model = torch.nn.Linear(3, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = plateau(optimizer, 5, 5, monitor="eval/f1", mode="max")
    run = trainer({"f1": classification.MulticlassF1Score(num_classes=3)}, schedulers=schedule)
    run.fit()
    assert schedule.best == run.state.metrics["eval/f1"]  # it stepped on it
    with pytest.raises(ValueError, match="monitors 'eval/f2', which the evaluation does not") as e:
        trainer({"f1": classification.MulticlassF1Score(num_classes=3)}, schedulers=plateau(
            optimizer, 5, 5, monitor="eval/f2"
        ))  # fmt: skip
    assert "eval/ece, eval/f1 (eval_metrics add more)" in str(e.value)


def test_any_object_with_the_three_methods_will_do():
    assert trainer({"samples": Count()}).eval()["eval/samples"] == 40.0


@pytest.mark.parametrize(
    ("eval_metrics", "error", "message"),
    [
        ([Count()], TypeError, "eval_metrics must be a mapping of name -> metric"),
        ({"a/b": Count()}, ValueError, "name 'a/b' must be a word such as 'f1'"),
        ({"accuracy": Count()}, ValueError, r"\['accuracy'\]: loom computes eval/accuracy"),
        ({"f1": object()}, TypeError, r"\['f1'\] is a object without update, compute, reset"),
    ],
)
def test_bad_eval_metrics_are_refused_naming_them(eval_metrics, error, message):
    with pytest.raises(error, match=message):
        trainer(eval_metrics)


def test_a_metric_that_computes_no_single_number_is_named():
    matrix = classification.MulticlassConfusionMatrix(num_classes=3)
    with pytest.raises(ValueError, match=r"\['confusion'\] \(MulticlassConfusionMatrix\) co"):
        trainer({"confusion": matrix}).eval()


def test_a_metric_that_refuses_the_outputs_is_named_with_them():
    binary = classification.BinaryAccuracy()  # given three classes' scores
    with pytest.raises(RuntimeError, match="shape") as raised:  # torchmetrics' own
        trainer({"binary": binary}).eval()
    assert any(
        note.startswith("raised by eval_metrics['binary'] (BinaryAccuracy) given outputs "
                        "float32 (8, 3) on cpu and targets int64 (8,) on cpu")
        for note in raised.value.__notes__
    )  # fmt: skip


def test_under_torchrun_the_ranks_counts_are_summed_before_the_metric_is_computed(tmp_path):
    script = Path(__file__).with_name("added_metrics_job.py")
    result = subprocess.run(
        [*TWO_PROCESS_TORCHRUN, str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    two_ranks = json.loads((tmp_path / "metrics.json").read_text())
    one = f1_trainer().eval()  # the same run in one process
    assert two_ranks["eval/f1"] == pytest.approx(one["eval/f1"], abs=1e-6)
    assert two_ranks["eval/accuracy"] == pytest.approx(one["eval/accuracy"], abs=1e-6)
    # A metric that counts its own shard alone is refused on every rank (7 and 6 samples).
    errors = {(tmp_path / f"error{rank}.txt").read_text() for rank in (0, 1)}
    assert errors == {
        "eval_metrics['samples'] (Count) computed different values on the ranks, 6 to 7: it "
        "must sum its counts across ranks before it computes, as torchmetrics' Metric does "
        "(unless sync_on_compute=False)."
    }
