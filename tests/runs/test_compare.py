"""Comparing finished runs: grouping by job, mean and spread over seeds, every seed, paired
differences between methods, where it writes."""

import json

import pytest

from loom.runs import compare_runs, compare_seeds, find_runs, group_runs, load_run
from loom.runs.compare import comparison_folder, paired_differences


def test_compare_reads_unfinished_values_as_dashes(tmp_path):
    run = tmp_path / "partial"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"metrics": {"eval/accuracy": 0.5}}))
    table = compare_runs([load_run(run)])
    assert table.splitlines()[1].split() == ["partial", "1", "0.5000", "-", "-", "-", "-", "-"]


def fabricate(path, seed, accuracy, nll, job="a", method=None, ece=0.1):
    path.mkdir(parents=True)
    summary = {
        "metrics": {"eval/accuracy": accuracy, "eval/nll": nll, "eval/ece": ece},
        "best_eval_accuracy": accuracy + 0.01,
        "epochs": 3,
        "seconds": 2.0,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    algorithms = f"[{{name: {method}}}]" if method else "[]"
    (path / "config.yaml").write_text(
        f"seed: {seed}\nmodel: {{name: {job}}}\nalgorithms: {algorithms}\n"
    )
    records = [
        {"epoch": 1, "batch": 3, "eval/accuracy": accuracy / 2, "eval/loss": 1.0},
        {"epoch": 3, "batch": 9, "eval/accuracy": accuracy, "eval/loss": 0.5},
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_compare_groups_seeds_and_reports_mean_and_spread(tmp_path):
    for seed, accuracy in ((0, 0.80), (1, 0.90), (2, 0.85)):
        fabricate(tmp_path / "noisy_ols" / f"seed{seed}", seed, accuracy, nll=1.0 + seed)
    fabricate(tmp_path / "other", 0, 0.5, nll=2.0, job="b")
    runs = find_runs([tmp_path / "noisy_ols", tmp_path / "other"]).finished
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


def fabricate_two_methods_and_another_job(tmp_path):
    """ols (seeds 0-2) and hard (seeds 0-3) differ only in their algorithms; other has
    another model."""
    for seed, accuracy, nll, ece in (
        (0, 0.80, 1.0, 0.05),
        (1, 0.90, 1.1, 0.06),
        (2, 0.85, 1.2, 0.05),
    ):
        fabricate(tmp_path / "ols" / f"seed{seed}", seed, accuracy, nll, method="ols", ece=ece)
    for seed, accuracy in ((0, 0.75), (1, 0.86), (2, 0.80), (3, 0.99)):
        fabricate(tmp_path / "hard" / f"seed{seed}", seed, accuracy, nll=1.2)
    fabricate(tmp_path / "other", 0, 0.5, nll=2.0, job="b", method="ols")
    return find_runs([tmp_path / "ols", tmp_path / "hard", tmp_path / "other"]).finished


def test_methods_are_compared_seed_by_seed_with_a_95_percent_interval(tmp_path):
    pairs = paired_differences(group_runs(fabricate_two_methods_and_another_job(tmp_path)))
    assert [(p.metric, p.first, p.second) for p in pairs] == [
        ("accuracy", "ols", "hard"), ("best acc", "ols", "hard"),
        ("nll", "ols", "hard"), ("ece", "ols", "hard"),
    ], "other differs in its model: it is compared with nothing"  # fmt: skip
    accuracy, best, nll, ece = pairs
    assert accuracy.seeds == (0, 1, 2), "seed 3 has no partner"
    assert accuracy.differences == pytest.approx((0.05, 0.04, 0.05))
    # mean 0.046667, stdev 0.0057735; t(0.975, 2) = 4.302653: half-width 0.0143422
    assert (accuracy.mean, accuracy.low, accuracy.high) == pytest.approx(
        (0.0466667, 0.0323245, 0.0610089), abs=1e-6
    )
    assert accuracy.verdict == best.verdict == "ols beats hard"
    # NLL differences -0.2, -0.1, 0.0: mean -0.1, stdev 0.1, half-width 0.2484138
    assert (nll.mean, nll.low, nll.high) == pytest.approx((-0.1, -0.3484138, 0.1484138), abs=1e-6)
    assert nll.verdict == "no ordering"
    # ECE differences -0.05, -0.04, -0.05: lower is better, so ols beats hard
    assert (ece.low, ece.high) == pytest.approx((-0.0610089, -0.0323245), abs=1e-6)
    assert ece.verdict == "ols beats hard"


def test_compare_seeds_prints_every_seed_and_the_paired_differences(tmp_path):
    runs = fabricate_two_methods_and_another_job(tmp_path)
    text = compare_seeds(runs).splitlines()
    assert text[:5] == [
        "accuracy by seed:",
        "run    seed 0  seed 1  seed 2  seed 3",
        "ols    0.8000  0.9000  0.8500       -",
        "hard   0.7500  0.8600  0.8000  0.9900",
        "other  0.5000       -       -       -",
    ]
    markdown = compare_seeds(runs, markdown=True)
    assert "### ece by seed\n| run | seed 0 | seed 1 | seed 2 | seed 3 |\n" in markdown
    assert "| ols | 0.0500 | 0.0600 | 0.0500 | - |" in markdown
    assert markdown.endswith(
        "### paired differences (for nll and ece, lower beats)\n"
        "| metric | A | B | seeds | A - B by seed | mean | 95% interval | verdict |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| accuracy | ols | hard | 0,1,2 | +0.0500 +0.0400 +0.0500 | +0.0467 "
        "| [+0.0323, +0.0610] | ols beats hard |\n"
        "| best acc | ols | hard | 0,1,2 | +0.0500 +0.0400 +0.0500 | +0.0467 "
        "| [+0.0323, +0.0610] | ols beats hard |\n"
        "| nll | ols | hard | 0,1,2 | -0.2000 -0.1000 +0.0000 | -0.1000 "
        "| [-0.3484, +0.1484] | no ordering |\n"
        "| ece | ols | hard | 0,1,2 | -0.0500 -0.0400 -0.0500 | -0.0467 "
        "| [-0.0610, -0.0323] | ols beats hard |"
    )


def test_runs_without_seeds_or_partners_add_no_paired_table(tmp_path):
    fabricate(tmp_path / "a", 0, 0.5, nll=1.0)
    fabricate(tmp_path / "b", 0, 0.6, nll=1.0, method="ols")  # one shared seed: no interval
    text = compare_seeds(find_runs([tmp_path / "a", tmp_path / "b"]).finished)
    assert "accuracy by seed:" in text
    assert "paired" not in text
