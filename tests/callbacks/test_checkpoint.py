"""The Checkpoint callback: when it saves, what it keeps, the best one, what it publishes."""

from pathlib import Path

import pytest
import torch
from torch import nn

from loom import Trainer
from loom.callbacks import Checkpoint, latest_checkpoint
from loom.trainer import Callback, load_checkpoint


def test_checkpoints_hold_plain_data_and_keep_the_last_n(saved, tmp_path):
    trainer, path = saved
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    # keep_last=2 of six; saved at batch_end, before the epoch's end moves the clock
    assert names == ["epoch1-batch5.pt", "epoch1-batch6.pt"]
    checkpoint = torch.load(path, weights_only=True)  # nothing to import or run
    assert checkpoint["timestamp"] == {"epoch": 1, "batch": 6, "batch_in_epoch": 3, "samples": 48}
    assert set(checkpoint["model"]) == set(trainer.state.model.state_dict())
    assert trainer.state.checkpoint_path == str(path)


class EvalScores(Callback):
    """Sets eval/score at each evaluation to ``values[epoch - 1]``: a resumed run scores
    the epochs it replays as the first run did."""

    def __init__(self, values):
        self.values = list(values)

    def eval_end(self, state):
        state.metrics["eval/score"] = self.values[state.timestamp.epoch - 1]


def fit_keeping_the_best(folder, values, load_path=None, **options):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    checkpoint = Checkpoint(folder, interval="1ep", best_metric="eval/score", **options)
    trainer = Trainer(
        model, data, data, max_duration=f"{len(values)}ep", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[EvalScores(values), checkpoint], load_path=load_path,
    )  # fmt: skip
    trainer.fit()
    return trainer.state, checkpoint


def best_files(folder):
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("best"))


def test_the_k_best_evaluations_are_kept_not_the_first_k(tmp_path):
    values = [0.3, 0.1, 0.5, 0.4, 0.2, 0.5]  # the 3 best: 0.5 (epoch 3), 0.5 (6), 0.4 (4)
    state, checkpoint = fit_keeping_the_best(tmp_path, values, keep_best=3)
    assert best_files(tmp_path) == [
        "best-epoch3-batch3.pt", "best-epoch4-batch4.pt", "best-epoch6-batch6.pt",
    ]  # fmt: skip
    assert [(entry["value"], Path(entry["path"]).name) for entry in state.best_checkpoints] == [
        (0.5, "best-epoch3-batch3.pt"),  # of equal values, the earlier first
        (0.5, "best-epoch6-batch6.pt"),
        (0.4, "best-epoch4-batch4.pt"),
    ]
    assert checkpoint.best_value == 0.5
    assert load_checkpoint(tmp_path / "best-epoch4-batch4.pt")["metrics"]["eval/score"] == 0.4
    assert latest_checkpoint(tmp_path).name == "epoch6-batch6.pt"  # never a best one
    minimum, _ = fit_keeping_the_best(tmp_path / "min", values, best_mode="min")
    assert [Path(e["path"]).name for e in minimum.best_checkpoints] == ["best-epoch2-batch2.pt"]
    assert best_files(tmp_path / "min") == ["best-epoch2-batch2.pt"]


def test_the_best_checkpoints_resume_with_the_run(tmp_path):
    values = [0.3, 0.1, 0.5, 0.4, 0.2, 0.5]
    whole, _ = fit_keeping_the_best(tmp_path / "whole", values, keep_best=2, keep_last=None)
    cut = tmp_path / "cut"
    fit_keeping_the_best(cut, values[:4], keep_best=2, keep_last=None)
    resumed, _ = fit_keeping_the_best(cut, values, keep_best=2, load_path=cut / "epoch4-batch4.pt")
    names = [Path(entry["path"]).name for entry in resumed.best_checkpoints]
    assert names == [Path(entry["path"]).name for entry in whole.best_checkpoints]
    assert best_files(cut) == best_files(tmp_path / "whole") == sorted(names)


def test_checkpoint_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"keep_last=0 must be an int >= 1 or None"):
        Checkpoint(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match=r"interval='5sp' counts samples"):
        Checkpoint(tmp_path, interval="5sp")
    with pytest.raises(ValueError, match=r"keep_best=0 must be an int >= 1"):
        Checkpoint(tmp_path, best_metric="eval/loss", keep_best=0)
    with pytest.raises(ValueError, match=r"keep_best=3 keeps the best checkpoints by a metric"):
        Checkpoint(tmp_path, keep_best=3)


def test_the_final_checkpoint_is_published_before_the_callbacks_after_it_run(tmp_path):
    class ReadsTheCheckpoint(Callback):
        reads = ("checkpoint_path",)

        def fit_end(self, state):
            self.seen = state.checkpoint_path

    reader = ReadsTheCheckpoint()
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))] * 3
    trainer = Trainer(
        model, batches, max_duration="2ba", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[Checkpoint(tmp_path, interval="1ep"), reader],
    )  # fmt: skip
    trainer.fit()
    assert reader.seen == str(tmp_path / "epoch0-batch2.pt"), "saved at fit_end, mid-epoch"
    assert load_checkpoint(reader.seen)["timestamp"]["batch"] == 2
    with pytest.raises(ValueError, match=r"list Checkpoint before ReadsTheCheckpoint"):
        Trainer(
            model, batches, max_duration="2ba", device="cpu",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            callbacks=[ReadsTheCheckpoint(), Checkpoint(tmp_path, interval="1ep")],
        )  # fmt: skip


def test_the_latest_checkpoint_of_several_folders_is_the_one_furthest_into_training(tmp_path):
    from loom.callbacks import latest_checkpoint

    every_epoch, sparse = tmp_path / "checkpoints", tmp_path / "sparse"
    for folder, names in ((every_epoch, ["epoch3-batch12.pt"]), (sparse, ["epoch2-batch8.pt"])):
        folder.mkdir()
        for name in names:
            (folder / name).touch()
    assert latest_checkpoint(sparse, every_epoch) == every_epoch / "epoch3-batch12.pt"
    assert latest_checkpoint(sparse) == sparse / "epoch2-batch8.pt"
    assert latest_checkpoint(tmp_path / "none") is None


def test_a_best_checkpoint_holds_the_list_it_is_in_and_resumes_from_there(tmp_path):
    values = [0.1, 0.5, 0.6, 0.2, 0.3, 0.05]  # best_mode min, keep_best 2
    fit_keeping_the_best(tmp_path / "whole", values, best_mode="min", keep_best=2)
    cut = tmp_path / "cut"
    fit_keeping_the_best(cut, values, best_mode="min", keep_best=2)
    saved = load_checkpoint(cut / "best-epoch1-batch1.pt")
    (own,) = [entry for entry in saved["callbacks"] if entry["name"] == "Checkpoint"]
    assert own["state"]["best"] == [[0.1, "best-epoch1-batch1.pt"]]
    # Resumed from its first best file: the later best files of the first run go, and
    # the run ends keeping what the uninterrupted one kept.
    resumed, _ = fit_keeping_the_best(
        cut, values, best_mode="min", keep_best=2, load_path=cut / "best-epoch1-batch1.pt"
    )
    assert best_files(cut) == best_files(tmp_path / "whole") == [
        "best-epoch1-batch1.pt", "best-epoch6-batch6.pt",
    ]  # fmt: skip
    assert [e["value"] for e in resumed.best_checkpoints] == [0.05, 0.1]


def test_an_evaluation_of_ones_own_ranks_nothing(tmp_path):
    """A trainer.eval() after fit (a test set, say) scores again but keeps no file."""
    model = nn.Linear(4, 2)
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    checkpoint = Checkpoint(tmp_path, best_metric="eval/score", keep_best=2)
    trainer = Trainer(
        model, data, data, max_duration="2ep", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[EvalScores([0.3, 0.5]), checkpoint],
    )  # fmt: skip
    trainer.fit()
    kept = list(checkpoint.best)
    trainer.eval()  # scores epoch 2's 0.5 again
    assert (
        checkpoint.best == kept == [(0.5, "best-epoch2-batch2.pt"), (0.3, "best-epoch1-batch1.pt")]
    )
    assert best_files(tmp_path) == ["best-epoch1-batch1.pt", "best-epoch2-batch2.pt"]


def test_a_resume_that_ranks_by_another_metric_is_refused(tmp_path):
    from loom.trainer import CheckpointError

    fit_keeping_the_best(tmp_path, [0.3, 0.5])
    with pytest.raises(CheckpointError, match=r"Checkpoint refused .*ranked by 'eval/score'"):
        fit_keeping_the_best(
            tmp_path, [0.3, 0.5], best_mode="min", load_path=tmp_path / "epoch2-batch2.pt"
        )
