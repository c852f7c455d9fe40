"""SIGTERM and SIGINT: the first stops after the batch and saves, a second waits for the
save, a third stops at once; once training is over a signal changes nothing; under
torchrun the ranks stop after the same batch."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from loom import Trainer
from loom.callbacks import Checkpoint, latest_checkpoint
from loom.trainer import Callback, TrainingInterrupted
from loom.trainer import checkpoint as checkpoint_module
from tests.conftest import TWO_PROCESS_TORCHRUN, SignalAt


def trainer_with(folder, *callbacks):
    """Two epochs of three batches, a checkpoint after every batch, ``callbacks`` first."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    return Trainer(
        model,
        [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)],
        max_duration="2ep",
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[*callbacks, Checkpoint(folder, interval="1ba", keep_last=None)],
    )


def test_a_second_signal_during_the_interruption_checkpoint_waits_for_it(
    tmp_path, monkeypatch, capfd
):
    """Before, the second signal raised KeyboardInterrupt inside the save, and the run
    ended without the checkpoint of where it stopped."""
    real_save = checkpoint_module.save_checkpoint

    def signalled_again_while_saving(checkpoint, path):
        if checkpoint["timestamp"]["batch"] == 2:  # the interruption's save
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(checkpoint, path)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", signalled_again_while_saving)
    trainer = trainer_with(tmp_path, SignalAt(1))
    with pytest.raises(TrainingInterrupted, match=r"after epoch 1, batch 2 of the epoch"):
        trainer.fit()
    assert latest_checkpoint(tmp_path).name == "epoch0-batch2.pt"
    assert "SIGTERM received again: saving the checkpoint first" in capfd.readouterr().err


class SignalsAt(Callback):
    """Sends SIGTERM ``times`` times in the batch after ``batch`` batches."""

    def __init__(self, batch, times):
        self.batch, self.times = batch, times

    def after_forward(self, state):
        if state.timestamp.batch == self.batch:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGTERM)


def test_a_third_signal_stops_at_once_and_puts_the_handlers_back(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    trainer = trainer_with(tmp_path, SignalsAt(1, times=3))
    with pytest.raises(KeyboardInterrupt, match=r"SIGTERM, the third signal"):
        trainer.fit()
    assert latest_checkpoint(tmp_path).name == "epoch0-batch1.pt"  # the latest stands
    assert signal.getsignal(signal.SIGTERM) == before


class SignalAtTheEnd(Callback):
    def fit_end(self, state):
        os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_while_a_finished_run_writes_its_final_files_leaves_it_finished(tmp_path, capfd):
    """Before, the run that had trained to its end was reported as interrupted."""
    trainer = trainer_with(tmp_path, SignalAtTheEnd())
    trainer.fit()
    assert trainer.state.interrupt is None
    assert trainer.state.stop_reason is None
    assert "received while the run writes its final files" in capfd.readouterr().err


@pytest.mark.slow
def test_ranks_signalled_at_different_batches_stop_after_the_same_one(tmp_path):
    """Rank 0 gets SIGTERM in batch 3, rank 1 never: both stop after batch 4 (of 8 in
    the epoch), where the ranks agree, and the checkpoint holds each rank's own epoch
    losses (before, rank 0 stopped
    alone and the job hung on its next collective)."""
    script = Path(__file__).with_name("signalled_ranks_job.py")
    command = [*TWO_PROCESS_TORCHRUN, str(script), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    stopped = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert stopped == [{"batch": 4, "interrupt": "SIGTERM", "checkpoint": "epoch0-batch4.pt"}] * 2
    saved = torch.load(tmp_path / "checkpoints" / "epoch0-batch4.pt", weights_only=True)
    assert saved["world_size"] == 2
    assert "train_losses" in saved["ranks"][1], "rank 1 saw other samples"
