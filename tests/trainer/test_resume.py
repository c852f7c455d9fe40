"""A run interrupted anywhere and resumed ends bitwise as the uninterrupted run."""

import json
import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.algorithms import LabelSmoothing, OnlineLabelSmoothing
from loom.callbacks import Checkpoint, MetricsLogger, latest_checkpoint
from loom.trainer import Callback
from loom.trainer.interrupts import TrainingInterrupted

BATCHES_PER_EPOCH = 5  # 40 samples in batches of 8
TOTAL = "4ep"


def make_trainer(folder, algorithm, *, callbacks=(), load_path=None, eval_interval="1ep"):
    torch.manual_seed(0)  # initial weights; a resumed run overwrites them
    inputs = torch.randn(40, 6)
    targets = (inputs[:, :3].argmax(dim=1) + (inputs[:, 3] > 1).long()) % 3
    model = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
    return Trainer(
        model,
        DataLoader(TensorDataset(inputs, targets), batch_size=8, shuffle=True),
        DataLoader(TensorDataset(inputs[:16], targets[:16]), batch_size=8),
        max_duration=TOTAL,
        optimizers=optimizer,
        schedulers=scheduler,
        algorithms=[algorithm()],
        callbacks=[
            Checkpoint(folder / "checkpoints", interval="1ba", keep_last=None),
            MetricsLogger(folder / "metrics.jsonl", console=False),
            *callbacks,
        ],
        eval_interval=eval_interval,
        device="cpu",
        seed=0,
        load_path=load_path,
    )


class SignalAt(Callback):
    """Sends this process a signal in the middle of the batch after ``batch`` batches."""

    def __init__(self, batch, signal_number=signal.SIGTERM):
        self.batch, self.signal_number = batch, signal_number

    def after_forward(self, state):
        if state.timestamp.batch == self.batch:
            os.kill(os.getpid(), self.signal_number)


def records(folder):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def final_weights(trainer):
    return {k: v.clone() for k, v in trainer.state.model.state_dict().items()}


ALGORITHMS = {
    "label_smoothing": lambda: LabelSmoothing(0.1),
    "online_label_smoothing": lambda: OnlineLabelSmoothing(n_classes=3),
}


@pytest.fixture(scope="module", params=sorted(ALGORITHMS))
def uninterrupted(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    trainer = make_trainer(folder, ALGORITHMS[request.param])
    metrics = trainer.fit()
    return request.param, folder, final_weights(trainer), metrics, trainer


@pytest.mark.parametrize(
    "stop_batch",  # the batch the run stops after: the signal comes during it
    [3, BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH + 1, 4 * BATCHES_PER_EPOCH - 1],
    ids=["mid-epoch", "epoch-boundary", "after-an-eval", "last-batch"],
)
def test_interrupted_and_resumed_ends_bitwise_equal(uninterrupted, tmp_path, stop_batch):
    name, reference_folder, reference_weights, reference_metrics, _ = uninterrupted
    with pytest.raises(TrainingInterrupted, match=r"training stopped on SIGTERM at epoch") as info:
        make_trainer(tmp_path, ALGORITHMS[name], callbacks=[SignalAt(stop_batch - 1)]).fit()
    assert info.value.exit_status == 128 + signal.SIGTERM
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    assert checkpoint.name.endswith(f"-batch{stop_batch}.pt")
    assert str(checkpoint) in str(info.value)

    resumed = make_trainer(tmp_path, ALGORITHMS[name], load_path=checkpoint)
    assert resumed.state.timestamp.batch == stop_batch
    metrics = resumed.fit()
    for key, value in final_weights(resumed).items():
        assert torch.equal(value, reference_weights[key]), key
    assert metrics == reference_metrics
    assert records(tmp_path) == records(reference_folder)


def test_resuming_from_any_saved_batch_repeats_the_rest(uninterrupted, tmp_path):
    name, reference_folder, reference_weights, _, _ = uninterrupted
    for batch in (1, 7, 15):
        (checkpoint,) = (reference_folder / "checkpoints").glob(f"epoch*-batch{batch}.pt")
        resumed = make_trainer(tmp_path / str(batch), ALGORITHMS[name], load_path=checkpoint)
        resumed.fit()
        for key, value in final_weights(resumed).items():
            assert torch.equal(value, reference_weights[key]), (batch, key)


def test_online_label_smoothing_statistics_survive_a_resume(uninterrupted, tmp_path):
    name, reference_folder, _, _, reference = uninterrupted
    if name != "online_label_smoothing":
        pytest.skip("online label smoothing only")
    checkpoint = reference_folder / "checkpoints" / "epoch1-batch8.pt"
    resumed = make_trainer(tmp_path, ALGORITHMS[name], load_path=checkpoint)
    resumed.fit()
    (mine,), (theirs,) = resumed.state.algorithms, reference.state.algorithms
    assert torch.equal(mine.matrix, theirs.matrix)


def test_signal_handlers_are_restored_after_fit(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    make_trainer(tmp_path, ALGORITHMS["label_smoothing"]).fit()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with pytest.raises(TrainingInterrupted):
        make_trainer(
            tmp_path / "2", ALGORITHMS["label_smoothing"], callbacks=[SignalAt(2, signal.SIGINT)]
        ).fit()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_eval_in_batches_resumes_with_the_pending_evaluation(tmp_path):
    reference = make_trainer(tmp_path / "a", ALGORITHMS["label_smoothing"], eval_interval="4ba")
    reference.fit()
    checkpoint = tmp_path / "a" / "checkpoints" / "epoch0-batch4.pt"  # saved before its eval
    resumed = make_trainer(
        tmp_path / "b", ALGORITHMS["label_smoothing"], eval_interval="4ba", load_path=checkpoint
    )
    resumed.fit()
    assert final_weights(resumed).keys() == final_weights(reference).keys()
    for key, value in final_weights(resumed).items():
        assert torch.equal(value, final_weights(reference)[key])
    after = [r for r in records(tmp_path / "a") if r["batch"] >= 4]
    assert [r for r in records(tmp_path / "b")] == after
