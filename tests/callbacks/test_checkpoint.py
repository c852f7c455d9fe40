"""The Checkpoint callback: when it saves, what it keeps, the best one, what it publishes."""

import pytest
import torch
from torch import nn

from loom import Trainer
from loom.callbacks import Checkpoint
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


def test_best_checkpoint_by_metric(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    checkpoint = Checkpoint(tmp_path, interval="1ep", best_metric="eval/loss", best_mode="min")
    trainer = Trainer(
        model,
        data,
        data,
        max_duration="3ep",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[checkpoint],
    )
    trainer.fit()
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["metrics"]["eval/loss"] == checkpoint.best_value
    assert checkpoint.best_value == min(3 * [checkpoint.best_value])
    with pytest.raises(ValueError, match=r"keep_last=0 must be an int >= 1 or None"):
        Checkpoint(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match=r"interval='5sp' counts samples"):
        Checkpoint(tmp_path, interval="5sp")


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
