"""Running a job into a run directory: the callbacks it adds, their order, what they leave."""

import json
from pathlib import Path

import torch

from loom.config.job import resolve_job
from loom.runs import job_trainer, train_job

DIGITS = {
    "seed": 0,
    "model": {"name": "small_cnn", "width": 8},
    "data": {
        "train": {"name": "digits", "split": "train", "batch_size": 64},
        "eval": {"name": "digits", "split": "test", "batch_size": 360},
    },
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "algorithms": [{"name": "online_label_smoothing"}],
    "callbacks": [{"name": "progress_bar"}],
    "trainer": {"max_duration": "5ba", "device": "cpu"},
}


def hook_owners(trainer, event):
    return [type(plugin).__name__ for plugin, _, _ in getattr(trainer.engine.hooks, event)]


def test_the_run_callbacks_follow_the_jobs_in_the_order_they_read_each_other(tmp_path):
    trainer = job_trainer(resolve_job(DIGITS), tmp_path / "run")
    assert [type(callback).__name__ for callback in trainer.state.callbacks] == [
        "ProgressBar", "MetricsLogger", "Checkpoint", "RunRecorder",
    ]  # fmt: skip
    assert hook_owners(trainer, "fit_end") == ["MetricsLogger", "Checkpoint", "RunRecorder"]
    assert hook_owners(trainer, "epoch_end") == [
        "OnlineLabelSmoothing", "ProgressBar", "MetricsLogger", "Checkpoint",
    ]  # fmt: skip
    assert "state.checkpoint_path: written by Checkpoint; read by RunRecorder" in (
        trainer.schedule()
    )


def test_the_summary_names_the_checkpoint_written_at_fit_end(tmp_path):
    run_dir = tmp_path / "run"
    train_job(resolve_job(DIGITS), run_dir)  # stops mid-epoch: the last save is at fit_end
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["checkpoint"] == str(run_dir / "checkpoints" / "epoch0-batch5.pt")
    assert torch.load(summary["checkpoint"], weights_only=True)["timestamp"]["batch"] == 5


def test_a_dict_batch_job_gives_its_keys_once_and_every_algorithm_uses_them(tmp_path):
    job = {
        **DIGITS,
        "data": {
            split: {**DIGITS["data"][split], "wrap": [{"name": "as_dict", "keys": ["x", "y"]}]}
            for split in ("train", "eval")
        },
        "algorithms": [  # online label smoothing first: it reads class indices
            {"name": "online_label_smoothing"},
            {"name": "mixup", "alpha": 0.4},
        ],
        "trainer": {"max_duration": "2ep", "device": "cpu", "input_key": "x", "target_key": "y"},
    }
    resolved = resolve_job(job)
    assert [spec.get("target_key") for spec in resolved["algorithms"]] == [None] * 2
    metrics = train_job(resolved, tmp_path / "run")
    assert metrics["eval/accuracy"] > 0.5  # learned from targets read at "y" by every plugin
    soft_labels = torch.load(tmp_path / "run" / "artifacts.pt", weights_only=True)["soft_labels"]
    assert soft_labels["values"].shape == (10, 10)
    assert not torch.allclose(soft_labels["values"].diagonal(), torch.full((10,), 0.9))


def test_the_summary_names_the_best_checkpoints_best_first(tmp_path):
    job = {
        **DIGITS,
        "algorithms": [],
        "callbacks": [
            {"name": "checkpoint", "best_metric": "eval/loss", "best_mode": "min", "keep_best": 2}
        ],
        "trainer": {"max_duration": "3ep", "device": "cpu"},
    }
    train_job(resolve_job(job), tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    best = summary["best_checkpoints"]
    assert [entry["metric"] for entry in best] == ["eval/loss", "eval/loss"]
    assert best[0]["value"] <= best[1]["value"]
    kept = sorted(path.name for path in (tmp_path / "run" / "checkpoints").glob("best-*"))
    assert sorted(Path(entry["path"]).name for entry in best) == kept
    assert all(Path(entry["path"]).is_file() for entry in best)


def test_a_jobs_checkpoints_come_after_the_metrics_log_and_before_the_summary(tmp_path):
    """Listed first in the job, a checkpoint callback still saves after the metrics log
    has its record (no checkpoint is ever ahead of the log) and before the recorder
    names it; trackers come last."""
    job = resolve_job(
        {
            "model": {"name": "mlp"},
            "data": {"train": {"name": "synthetic", "batch_size": 16}},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "callbacks": [{"name": "checkpoint"}, {"name": "csv"}, {"name": "progress_bar"}],
            "trainer": {"max_duration": "1ep", "device": "cpu"},
        }
    )
    trainer = job_trainer(job, tmp_path / "run")
    order = [type(callback).__name__ for callback in trainer.state.callbacks]
    assert order == ["ProgressBar", "MetricsLogger", "Checkpoint", "RunRecorder", "CSVLogger"]
