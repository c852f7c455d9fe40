"""The evaluation metrics a job adds by name (loom/metrics.py), against scikit-learn's."""

import subprocess
import sys

import pytest
import torch

from loom import metrics
from loom.config import ConfigError
from loom.config.build import build_job
from loom.config.job import resolve_job

pytest.importorskip(
    "torchmetrics",
    reason="the metrics extra is not installed (python3 -m pip install 'loom[metrics]')",
)
sklearn = pytest.importorskip("sklearn.metrics")

SCORES = torch.randn(60, 4, generator=torch.Generator().manual_seed(1))
TARGETS = torch.randint(0, 4, (60,), generator=torch.Generator().manual_seed(2))
PREDICTED = SCORES.argmax(dim=1)
PROBABILITIES = SCORES.softmax(dim=1)


def computed(metric, scores=SCORES, targets=TARGETS):
    metric.update(scores, targets)
    return float(metric.compute())


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (metrics.f1(4), sklearn.f1_score(TARGETS, PREDICTED, average="macro")),
        (metrics.f1(4, average="weighted"),
         sklearn.f1_score(TARGETS, PREDICTED, average="weighted")),
        (metrics.precision(4), sklearn.precision_score(TARGETS, PREDICTED, average="macro")),
        (metrics.recall(4, average="micro"),
         sklearn.recall_score(TARGETS, PREDICTED, average="micro")),
        (metrics.auroc(4), sklearn.roc_auc_score(TARGETS, PROBABILITIES, multi_class="ovr")),
        (metrics.matthews(4), sklearn.matthews_corrcoef(TARGETS, PREDICTED)),
        (metrics.cohen_kappa(4), sklearn.cohen_kappa_score(TARGETS, PREDICTED)),
    ],
)  # fmt: skip
def test_each_classification_metric_is_scikit_learns(metric, expected):
    assert computed(metric) == pytest.approx(expected, abs=1e-5)


def test_targets_at_the_ignore_index_are_left_out_as_in_loom_s_own_metrics():
    padded = torch.cat([TARGETS, torch.full((5,), -100)])
    scores = torch.cat([SCORES, torch.randn(5, 4)])
    assert computed(metrics.f1(4), scores, padded) == pytest.approx(computed(metrics.f1(4)))


def test_an_average_that_is_not_one_number_is_refused():
    with pytest.raises(ValueError, match="average='none' must be one of 'macro', 'weighted', 'mi"):
        metrics.f1(4, average="none")
    with pytest.raises(ValueError, match=r"average='micro' must be one of 'macro', 'weighted'\."):
        metrics.auroc(4, average="micro")


def test_num_classes_below_two_is_refused():
    with pytest.raises(ValueError, match="num_classes=1 must be an int >= 2"):
        metrics.f1(1)


JOB = {
    "model": {"name": "mlp", "hidden_sizes": [8]},
    "data": {
        split: {"name": "synthetic", "num_samples": 32, "shape": [4], "num_classes": 3}
        for split in ("train", "eval")
    },
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"max_duration": "1ep", "device": "cpu"},
}


def test_a_job_records_each_under_its_key_with_the_classes_from_the_data():
    job = resolve_job(
        {**JOB, "eval_metrics": [{"name": "recall", "average": "micro", "key": "micro_recall"},
                                 {"name": "f1"}]}
    )  # fmt: skip
    assert [spec["key"] for spec in job["eval_metrics"]] == ["micro_recall", "f1"]
    parts = build_job(job)
    assert parts.eval_metrics["f1"].num_classes == 3
    results = parts.trainer().fit()
    assert results["eval/micro_recall"] == pytest.approx(results["eval/accuracy"])
    assert "eval/f1" in results


@pytest.mark.parametrize(
    ("eval_metrics", "message"),
    [
        ([{"name": "f1"}, {"name": "f1", "average": "micro"}],
         "eval_metrics.1: eval/f1 is eval_metrics.0's already; give this one a key of its own"),
        ([{"name": "f2"}], "eval_metrics.0.name: unknown metric 'f2'"),
        ([{"name": "f1", "key": "a/b"}], "eval_metrics.0.key: 'a/b' must be a word"),
        ({"name": "f1"}, "eval_metrics: expected a list of {name: ..., <arguments>} entries"),
        ([{"name": "f1", "key": "accuracy"}],
         "eval_metrics.0.key: 'accuracy' is loom's own eval/accuracy; give this metric a key"),
    ],
)  # fmt: skip
def test_a_jobs_eval_metrics_mistakes_are_named_by_their_path(eval_metrics, message):
    with pytest.raises(ConfigError) as raised:
        resolve_job({**JOB, "eval_metrics": eval_metrics})
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ({"scheduler": {"name": "plateau", "monitor": "eval/recall"}}, "scheduler.monitor"),
        ({"callbacks": [{"name": "early_stopping", "monitor": "eval/recall"}]},
         "callbacks.0.monitor"),
        ({"callbacks": [{"name": "checkpoint", "best_metric": "eval/recall", "keep_best": 1}]},
         "callbacks.0.best_metric"),
    ],
)  # fmt: skip
def test_a_jobs_watcher_of_a_metric_no_one_computes_is_named_before_training(
    section, path, tmp_path
):
    job = resolve_job({**JOB, "eval_metrics": [{"name": "f1"}], **section})
    with pytest.raises(ConfigError) as raised:
        build_job(job, checkpoint_folder=tmp_path / "checkpoints")
    assert str(raised.value) == (
        f"{path}: 'eval/recall' is not a metric the evaluation computes; it computes "
        "eval/loss, eval/accuracy, eval/top5_accuracy, eval/nll, eval/ece, eval/f1 "
        "(eval_metrics add more)."
    )


def test_without_torchmetrics_the_error_says_what_to_install():
    script = (
        "import sys; sys.modules['torchmetrics'] = None\nfrom loom import metrics\nmetrics.f1(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: loom's eval_metrics need torchmetrics: python3 -m pip install "
        "'loom[metrics]' (or python3 -m pip install torchmetrics)."
    )
