"""Comparing finished runs: grouping by job, mean and spread over seeds, where it writes."""

import json

from loom.runs import compare_runs, find_runs, load_run
from loom.runs.compare import comparison_folder


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


def test_a_comparison_goes_beside_the_runs_it_compares(tmp_path):
    fabricate(tmp_path / "runs" / "a", 0, 0.5, nll=1.0)
    fabricate(tmp_path / "runs" / "b", 0, 0.6, nll=1.0)
    fabricate(tmp_path / "seeds" / "seed0", 0, 0.6, nll=1.0)
    assert (
        comparison_folder([tmp_path / "runs" / "a", tmp_path / "runs" / "b"]) == tmp_path / "runs"
    )
    assert comparison_folder([tmp_path / "runs" / "a"]) == tmp_path / "runs"
    assert comparison_folder([tmp_path / "seeds"]) == tmp_path / "seeds", "a folder of seeds"
    assert comparison_folder([tmp_path / "runs" / "a", tmp_path / "seeds"]) == tmp_path
