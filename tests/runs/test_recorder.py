"""The run directory's layout and the RunRecorder that fills it."""

import json
from pathlib import Path

import pytest
import torch

from loom.config.job import resolve_job
from loom.runs import RunDirectory, RunRecorder, new_run_dir
from loom.trainer import Algorithm, Artifact, Duration, FileWriteError, State


def test_the_layout_names_every_file_once(tmp_path):
    files = RunDirectory(tmp_path)
    names = [files.config, files.metrics, files.summary, files.model, files.checkpoints]
    assert [path.name for path in names] == [
        "config.yaml", "metrics.jsonl", "summary.json", "model.pt", "checkpoints",
    ]  # fmt: skip
    assert all(path.parent == tmp_path for path in names)


def test_new_run_dirs_never_collide(tmp_path):
    first = new_run_dir("digits", tmp_path)
    assert first.name.startswith("digits-")
    assert first.is_dir()
    second = new_run_dir("digits", tmp_path)
    assert second != first
    assert second.is_dir()
    assert second.name.startswith(first.name)


def test_runs_started_in_the_same_second_each_create_their_own_directory(tmp_path, monkeypatch):
    """Two processes that both see a name free, in the same second, cannot both take it:
    the directory is created, not only named (before, the second run shared the first's)."""
    taken = []
    real_mkdir = Path.mkdir

    def another_run_creates_it_first(path, *args, **kwargs):
        if path.name.startswith("digits-") and not taken:
            taken.append(path)
            real_mkdir(path)  # the other run, between this one's look and its mkdir
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", another_run_creates_it_first)
    mine = new_run_dir("digits", tmp_path)
    assert taken
    assert mine != taken[0]
    assert mine.name == f"{taken[0].name}-2"
    assert mine.is_dir()


def test_a_run_dir_parent_that_is_a_file_is_one_clear_error(tmp_path):
    parent = tmp_path / "runs"
    parent.write_text("not a folder")
    with pytest.raises(FileWriteError, match=r"cannot write .*runs/digits-\.\.\.: "):
        new_run_dir("digits", parent)


JOB = {
    "model": {"name": "mlp"},
    "data": {"train": {"name": "synthetic"}},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"max_duration": "1ep"},
}


def bare_state(**fields):
    defaults = {"train_dataloader": [], "eval_dataloader": None}
    return State(
        model=torch.nn.Linear(2, 2),
        optimizers=[],
        schedulers=[],
        max_duration=Duration.parse("1ep"),
        device=torch.device("cpu"),
        precision="fp32",
        **{**defaults, **fields},
    )


def test_only_the_main_process_writes(tmp_path):
    state = bare_state(rank=1, world_size=2)
    recorder = RunRecorder(tmp_path / "run", resolve_job(JOB))
    recorder.fit_start(state)
    recorder.fit_end(state)
    assert not (tmp_path / "run").exists()
    state.rank = 0
    recorder.fit_start(state)
    recorder.fit_end(state)
    written = {path.name for path in (tmp_path / "run").iterdir()}
    assert written == {"config.yaml", "summary.json", "model.pt", "curves.png"}, "no artifacts"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["parameters"] == 6
    assert summary["best_eval_accuracy"] is None


class Learns(Algorithm):
    def __init__(self, name="weights"):
        self.name = name

    def artifacts(self):
        matrix = torch.arange(6.0).reshape(2, 3)
        return {self.name: Artifact(matrix, title="learned", axes=("row", "column"))}


def test_plugins_artifacts_are_kept_and_drawn(tmp_path):
    state = bare_state(algorithms=[Learns()])
    recorder = RunRecorder(tmp_path, resolve_job(JOB), classes=["a", "b", "c"])
    recorder.fit_start(state)
    recorder.fit_end(state)
    saved = torch.load(tmp_path / "artifacts.pt", weights_only=True)
    assert torch.equal(saved["weights"]["values"], torch.arange(6.0).reshape(2, 3))
    assert saved["weights"]["axes"] == ["row", "column"]
    assert (tmp_path / "weights.png").stat().st_size > 0


def test_two_plugins_may_not_offer_one_artifact_name(tmp_path):
    state = bare_state(algorithms=[Learns(), Learns()])
    recorder = RunRecorder(tmp_path, resolve_job(JOB))
    recorder.fit_start(state)
    with pytest.raises(
        ValueError, match=r"Learns and Learns both offer an artifact named 'weights'"
    ):
        recorder.fit_end(state)


def test_the_summary_describes_the_training_datas_wrappers(tmp_path):
    from torch.utils.data import DataLoader

    from loom.data import AsDict, NoisyLabels, synthetic

    data = AsDict(NoisyLabels(synthetic(num_samples=40, num_classes=4, shape=[2]), rate=0.25))
    state = bare_state(train_dataloader=DataLoader(data, batch_size=8))
    recorder = RunRecorder(tmp_path, resolve_job(JOB))
    recorder.fit_start(state)
    recorder.fit_end(state)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_data"] == [
        {"wrapper": "NoisyLabels", "rate": 0.25, "kind": "symmetric", "seed": 0, "flipped": 10,
         "flipped_fraction": 0.25},
    ]  # fmt: skip


def test_the_plots_carry_the_runs_name_and_the_ece_of_the_last_evaluation(tmp_path, monkeypatch):
    from loom.runs import plots, train_job

    drawn = {}
    monkeypatch.setattr(plots, "plot_curves", lambda *args, **kw: drawn.update(curves=kw))
    monkeypatch.setattr(plots, "plot_reliability", lambda *a, **kw: drawn.update(reliability=kw))
    job = {**JOB, "data": {split: {"name": "synthetic"} for split in ("train", "eval")}}
    metrics = train_job(resolve_job(job), tmp_path / "noise40" / "seed3")
    assert drawn == {
        "curves": {"title": "noise40/seed3"},
        "reliability": {"ece": metrics["eval/ece"], "title": "noise40/seed3"},
    }
