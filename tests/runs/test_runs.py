import json

import pytest
import torch

from loom.config.job import resolve_job
from loom.runs import RunRecorder, compare_runs, find_runs, load_run, new_run_dir
from loom.runs.plots import plot_reliability, plot_soft_labels
from loom.trainer import Duration, State


def test_new_run_dirs_never_collide(tmp_path):
    first = new_run_dir("digits", tmp_path)
    assert first.name.startswith("digits-")
    first.mkdir()
    second = new_run_dir("digits", tmp_path)
    assert second != first
    assert second.name.startswith(first.name)


def test_only_the_main_process_writes(tmp_path):
    job = resolve_job(
        {
            "model": {"name": "mlp"},
            "data": {"train": {"name": "synthetic"}},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "trainer": {"max_duration": "1ep"},
        }
    )
    model = torch.nn.Linear(2, 2)
    state = State(
        model=model,
        optimizers=[],
        schedulers=[],
        max_duration=Duration.parse("1ep"),
        train_dataloader=[],
        eval_dataloader=None,
        device=torch.device("cpu"),
        precision="fp32",
        rank=1,
        world_size=2,
    )
    recorder = RunRecorder(tmp_path / "run", job)
    recorder.fit_start(state)
    recorder.fit_end(state)
    assert not (tmp_path / "run").exists()
    state.rank = 0
    recorder.fit_start(state)
    recorder.fit_end(state)
    written = {path.name for path in (tmp_path / "run").iterdir()}
    assert written == {"config.yaml", "summary.json", "model.pt", "curves.png"}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["parameters"] == 6
    assert summary["best_eval_accuracy"] is None


@pytest.mark.parametrize("num_classes", [3, 40])
def test_soft_label_and_reliability_plots(tmp_path, num_classes):
    matrix = torch.full((num_classes, num_classes), 0.1 / (num_classes - 1))
    matrix.fill_diagonal_(0.9)
    plot_soft_labels(matrix, [f"c{i}" for i in range(num_classes)], tmp_path / "soft.png")
    assert (tmp_path / "soft.png").stat().st_size > 0
    bins = {"count": [0.0, 2.0, 1.0], "confidence": [0.0, 0.5, 0.9], "accuracy": [0.0, 0.5, 1.0]}
    plot_reliability(bins, tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 0


def test_compare_reads_unfinished_values_as_dashes(tmp_path):
    run = tmp_path / "partial"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"metrics": {"eval/accuracy": 0.5}}))
    table = compare_runs([load_run(run)])
    assert table.splitlines()[1].split() == ["partial", "1", "0.5000", "-", "-", "-", "-", "-"]


def fabricate(path, seed, accuracy, nll, job="a"):
    path.mkdir(parents=True)
    summary = {
        "metrics": {"eval/accuracy": accuracy, "eval/nll": nll, "eval/ece": 0.1},
        "best_eval_accuracy": accuracy + 0.01,
        "epochs": 3,
        "seconds": 2.0,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.yaml").write_text(f"seed: {seed}\nmodel: {{name: {job}}}\n")
    records = [
        {"epoch": 1, "batch": 3, "eval/accuracy": accuracy / 2, "eval/loss": 1.0},
        {"epoch": 3, "batch": 9, "eval/accuracy": accuracy, "eval/loss": 0.5},
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_compare_groups_seeds_and_reports_mean_and_spread(tmp_path):
    for seed, accuracy in ((0, 0.80), (1, 0.90), (2, 0.85)):
        fabricate(tmp_path / "noisy_ols" / f"seed{seed}", seed, accuracy, nll=1.0 + seed)
    fabricate(tmp_path / "other", 0, 0.5, nll=2.0, job="b")
    runs = find_runs([tmp_path / "noisy_ols", tmp_path / "other"])
    table = compare_runs(runs, plot_path=tmp_path / "plot.png")
    _, first, second = table.splitlines()
    assert first.split()[:5] == ["noisy_ols", "3", "0.8500", "±", "0.0500"]
    assert "2.0000 ± 1.0000" in first  # NLL 1, 2, 3
    assert second.split()[:3] == ["other", "1", "0.5000"]
    markdown = compare_runs(runs, markdown=True).splitlines()
    assert markdown[2].startswith("| noisy_ols | 3 | 0.8500 ± 0.0500 | 0.8600 ± 0.0500 |")
    assert (tmp_path / "plot.png").stat().st_size > 0
