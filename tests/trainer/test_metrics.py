import warnings

import pytest
import torch
import torch.nn.functional as F

from loom import Trainer
from loom.trainer import ECE_BINS, EvalMetrics, TrainLoss


def reference_ece(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error with equal-width bins (lo, hi], written out plainly."""
    confidences, predictions = probabilities.max(dim=1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidences.tolist()) if lo < c <= hi]
        if members:
            accuracy = sum(float(predictions[i] == labels[i]) for i in members) / len(members)
            confidence = sum(confidences[i].item() for i in members) / len(members)
            total += len(members) / len(labels) * abs(accuracy - confidence)
    return total


def test_metrics_match_reference_formulas_over_several_batches():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 7, generator=generator) * 3
    labels = torch.randint(0, 7, (300,), generator=generator)
    metrics = EvalMetrics()
    for chunk_logits, chunk_labels in zip(logits.split(64), labels.split(64), strict=True):
        metrics.update(chunk_logits, chunk_labels, loss=F.cross_entropy(chunk_logits, chunk_labels))
    result = metrics.compute()
    probabilities = logits.softmax(dim=1)
    assert ECE_BINS == 15
    assert result["eval/accuracy"] == pytest.approx(
        (logits.argmax(1) == labels).float().mean().item()
    )
    top5 = logits.topk(5, dim=1).indices.eq(labels[:, None]).any(dim=1).float().mean().item()
    assert result["eval/top5_accuracy"] == pytest.approx(top5)
    assert result["eval/nll"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert result["eval/loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert result["eval/ece"] == pytest.approx(reference_ece(probabilities, labels), abs=1e-6)


def test_top5_is_left_out_below_five_classes():
    metrics = EvalMetrics()
    metrics.update(torch.randn(8, 4), torch.randint(0, 4, (8,)), loss=torch.tensor(1.0))
    assert "eval/top5_accuracy" not in metrics.compute()


def test_ignored_positions_and_extra_dimensions():
    logits = torch.randn(2, 3, 2, 2)  # segmentation-shaped: 8 positions
    labels = torch.tensor([[[0, 1], [2, -100]], [[1, 1], [-100, 0]]])
    metrics = EvalMetrics()
    metrics.update(logits, labels, loss=torch.tensor(0.0))
    flat_logits = logits.movedim(1, -1).reshape(-1, 3)
    flat_labels = labels.reshape(-1)
    keep = flat_labels != -100
    expected = (flat_logits[keep].argmax(1) == flat_labels[keep]).float().mean().item()
    assert metrics.compute()["eval/accuracy"] == pytest.approx(expected)


def test_dense_targets_count_their_argmax_as_the_label():
    metrics = EvalMetrics()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    metrics.update(logits, torch.tensor([[0.9, 0.1], [0.8, 0.2]]), loss=torch.tensor(0.0))
    assert metrics.compute()["eval/accuracy"] == 0.5


def test_nothing_added_gives_no_metrics():
    assert EvalMetrics().compute() == {}


def test_train_loss_is_the_mean_since_the_last_read():
    tracker = TrainLoss()
    assert tracker.compute() is None
    for value in (1.0, 2.0, 6.0):
        tracker.update(torch.tensor(value, requires_grad=True) * 1, 4)
    assert tracker.compute() == 3.0
    assert tracker.compute() is None


def test_train_loss_weighs_each_batch_by_the_samples_it_counts():
    tracker = TrainLoss()
    for value, samples in ((1.0, 60), (2.0, 60), (10.0, 1), (float("inf"), 0)):
        tracker.update(torch.tensor(value), samples)  # the last: only repeated samples
    assert tracker.compute() == pytest.approx((60 + 120 + 10) / 121)
    resumed = TrainLoss()
    tracker.update(torch.tensor(1.0), 3)
    tracker.update(torch.tensor(5.0), 1)
    resumed.load_state_dict(tracker.state_dict())
    assert resumed.compute() == tracker.compute() == 2.0


def test_train_loss_holds_many_losses_and_reads_them_once():
    losses = TrainLoss()
    values = [float(i % 7) for i in range(150)]
    for value in values:
        losses.update(torch.tensor(value), 1)
    assert losses.first_non_finite() is None
    saved = losses.state_dict()["losses"]
    assert saved.tolist() == values
    restored = TrainLoss()
    restored.load_state_dict({"losses": saved, "samples": torch.ones(len(saved))})
    restored.update(torch.tensor(float("inf")), 1)
    assert restored.first_non_finite() == 150
    assert losses.compute() == pytest.approx(sum(values) / len(values))
    assert losses.compute() is None


def test_finite_losses_whose_sum_overflows_are_not_reported():
    losses = TrainLoss()
    for _ in range(3):
        losses.update(torch.tensor(3e38), 1)  # each finite; their float32 sum is not
    assert losses.first_non_finite() is None
    assert losses.state_dict()["losses"].tolist() == pytest.approx([3e38] * 3)


def test_a_non_finite_loss_is_reported_until_the_epoch_is_read():
    losses = TrainLoss()
    for value in (0.5, 0.25):
        losses.update(torch.tensor(value), 1)
    assert losses.first_non_finite() is None  # these two are now known finite
    for value in (1.0, float("-inf"), float("nan")):
        losses.update(torch.tensor(value), 1)
    assert losses.first_non_finite() == 3
    losses.update(torch.tensor(2.0), 1)
    assert losses.first_non_finite() == 3  # still there, at the same batch
    assert losses.state_dict()["losses"].tolist()[:3] == [0.5, 0.25, 1.0]
    losses.compute()
    losses.update(torch.tensor(2.0), 1)
    assert losses.first_non_finite() is None


@pytest.fixture
def fresh_note():
    """The note that only the loss is reported is made once a process; each test sees it."""
    from loom.trainer.metrics import _say_once_that_only_the_loss_is_reported

    _say_once_that_only_the_loss_is_reported.cache_clear()
    yield
    _say_once_that_only_the_loss_is_reported.cache_clear()


@pytest.mark.parametrize(
    ("outputs", "targets"),
    [
        (torch.randn(8, 1), torch.randn(8, 1)),  # one output a sample
        (torch.randn(8), torch.randn(8)),
        (torch.randn(8, 3), torch.randn(8, 3)),  # several, but not distributions
    ],
    ids=["(N, 1)", "(N,)", "(N, 3) not distributions"],
)
def test_a_regression_reports_its_loss_alone_and_says_so_once(outputs, targets, fresh_note):
    metrics = EvalMetrics()
    for half in (slice(0, 5), slice(5, 8)):
        loss = F.mse_loss(outputs[half], targets[half])
        metrics.update(outputs[half], targets[half], loss=loss)
    with pytest.warns(UserWarning, match=r"only eval/loss is reported") as warned:
        results = metrics.compute()
    assert len(warned) == 1
    again = EvalMetrics()
    again.update(outputs, targets, loss=F.mse_loss(outputs, targets))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second note would fail here
        assert set(again.compute()) == {"eval/loss"}
    assert set(results) == {"eval/loss"}
    assert results["eval/loss"] == pytest.approx(F.mse_loss(outputs, targets).item(), rel=1e-6)
    assert metrics.reliability is None


def test_a_trainer_with_a_regression_loss_reports_no_accuracy(fresh_note):
    torch.manual_seed(0)
    inputs = torch.randn(32, 4)
    targets = inputs[:, :1] * 2 + 1
    model = torch.nn.Linear(4, 1)
    trainer = Trainer(
        model, [(inputs, targets)], [(inputs, targets)], loss_fn=F.mse_loss,
        max_duration="2ep", optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"only eval/loss is reported"):
        metrics = trainer.fit()
    assert set(metrics) == {"train/loss", "eval/loss"}
    assert metrics["eval/loss"] == pytest.approx(F.mse_loss(model(inputs), targets).item())


def test_bf16_distributions_are_still_class_targets():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(512, 100, generator=generator)
    targets = torch.randn(512, 100, generator=generator).softmax(dim=1).bfloat16()
    metrics = EvalMetrics()
    metrics.update(logits, targets, loss=torch.tensor(1.0))
    assert "eval/accuracy" in metrics.compute()


def test_every_metric_an_evaluation_computes_is_named_in_eval_metrics():
    from loom.trainer import EVAL_METRICS

    classes = EvalMetrics()
    classes.update(torch.randn(8, 6), torch.randint(0, 6, (8,)), torch.tensor(1.0))
    assert tuple(classes.compute()) == EVAL_METRICS
    regression = EvalMetrics()
    with warnings.catch_warnings():  # said once a process: maybe already, maybe now
        warnings.simplefilter("ignore")
        regression.update(torch.randn(8, 1), torch.randn(8, 1), torch.tensor(1.0))
        assert tuple(regression.compute()) == ("eval/loss",)
