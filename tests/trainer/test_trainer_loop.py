"""The loop contract: which events fire, in what order, with what the clock says."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from loom import Event, Trainer
from loom.trainer import Algorithm, Callback


class EventLog(Callback):
    def __init__(self):
        self.log = []
        for event in Event:
            setattr(self, event.value, self._recorder(event.value))

    def _recorder(self, name):
        def record(state):
            self.log.append((name, state.timestamp.epoch, state.timestamp.batch_in_epoch))

        return record


def train_batch(epoch, batch):
    """One training batch's events, with the clock as each event sees it."""
    during = [
        "batch_start", "before_forward", "after_forward", "before_loss", "after_loss",
        "before_backward", "after_backward",
    ]  # fmt: skip
    return [(name, epoch, batch) for name in during] + [("batch_end", epoch, batch + 1)]


def evaluation(epoch, num_batches):
    per_batch = ["eval_batch_start", "eval_before_forward", "eval_after_forward", "eval_batch_end"]
    return (
        [("eval_start", epoch, 0)]
        + [(name, epoch, 0) for _ in range(num_batches) for name in per_batch]
        + [("eval_end", epoch, 0)]
    )


def make_trainer(model, optimizer, callbacks=(), algorithms=(), num_samples=64, **kwargs):
    inputs, targets = torch.randn(num_samples, 8), torch.randint(0, 4, (num_samples,))
    dataset = TensorDataset(inputs, targets)
    kwargs.setdefault("eval_dataloader", DataLoader(dataset, batch_size=64))
    return Trainer(
        model,
        DataLoader(dataset, batch_size=32),
        optimizers=optimizer,
        callbacks=list(callbacks),
        algorithms=list(algorithms),
        device="cpu",
        **{"max_duration": "2ep", **kwargs},
    )


def test_two_epochs_with_evaluation_fire_exactly_this_sequence(model, optimizer):
    recorder = EventLog()
    trainer = make_trainer(model, optimizer, callbacks=[recorder])
    trainer.fit()
    expected = (
        [("init", 0, 0), ("fit_start", 0, 0)]
        + [("epoch_start", 0, 0)] + train_batch(0, 0) + train_batch(0, 1) + [("epoch_end", 1, 0)]
        + evaluation(1, num_batches=1)
        + [("epoch_start", 1, 0)] + train_batch(1, 0) + train_batch(1, 1) + [("epoch_end", 2, 0)]
        + evaluation(2, num_batches=1)
        + [("fit_end", 2, 0)]
    )  # fmt: skip
    assert recorder.log == expected


def test_batch_duration_ends_mid_epoch_without_epoch_end_and_evaluates_once(model, optimizer):
    recorder = EventLog()
    trainer = make_trainer(model, optimizer, callbacks=[recorder], max_duration="3ba")
    trainer.fit()
    names = [name for name, _, _ in recorder.log]
    assert names.count("batch_end") == 3
    assert names.count("epoch_end") == 1, "only the first epoch ran to its end"
    assert names.count("eval_start") == 2, "after epoch 1, then once more at the end of training"
    assert names[-1] == "fit_end"
    assert trainer.state.timestamp.batch == 3


def test_sample_duration_counts_samples(model, optimizer):
    trainer = make_trainer(model, optimizer, max_duration="96sp", eval_dataloader=None)
    trainer.fit()
    assert (trainer.state.timestamp.batch, trainer.state.timestamp.samples) == (3, 96)


def test_eval_interval_in_batches(model, optimizer):
    recorder = EventLog()
    trainer = make_trainer(
        model, optimizer, callbacks=[recorder], max_duration="4ba", eval_interval="3ba"
    )
    trainer.fit()
    evals = [(epoch, batch) for name, epoch, batch in recorder.log if name == "eval_end"]
    assert evals == [(1, 1), (2, 0)], "after batch 3 (mid-epoch) and at the end of training"


def test_a_plugin_can_stop_training_mid_epoch(model, optimizer):
    class StopAfterThree(Algorithm):
        def batch_end(self, state):
            if state.timestamp.batch == 3:
                state.request_stop("enough")

    recorder = EventLog()
    trainer = make_trainer(
        model, optimizer, algorithms=[StopAfterThree()], callbacks=[recorder], max_duration="10ep"
    )
    trainer.fit()
    assert trainer.state.timestamp.batch == 3
    assert trainer.state.stop_reason == "enough"
    names = [name for name, _, _ in recorder.log]
    assert names[-(len(evaluation(0, 1)) + 1) :] == [name for name, _, _ in evaluation(0, 1)] + [
        "fit_end"
    ]


def test_stop_requested_at_epoch_end_lets_its_evaluation_run(model, optimizer):
    class StopAtEpochEnd(Callback):
        def epoch_end(self, state):
            state.request_stop("converged")

    trainer = make_trainer(model, optimizer, callbacks=[StopAtEpochEnd()], max_duration="10ep")
    metrics = trainer.fit()
    assert trainer.state.timestamp.epoch == 1
    assert "eval/accuracy" in metrics


def test_request_stop_needs_a_reason(model, optimizer):
    trainer = make_trainer(model, optimizer)
    with pytest.raises(ValueError, match=r"request_stop\(reason=''\)"):
        trainer.state.request_stop("")


def test_empty_dataloader_is_an_error(model, optimizer):
    trainer = Trainer(model, [], max_duration="1ep", optimizers=optimizer, device="cpu")
    with pytest.raises(ValueError, match=r"train_dataloader yielded no batches"):
        trainer.fit()


def test_targets_are_read_after_before_loss_and_inputs_after_before_forward(model, optimizer):
    class SwapTargets(Algorithm):
        def before_forward(self, state):
            self.inputs_seen = state.batch[0]

        def before_loss(self, state):
            state.batch = (state.batch[0], torch.zeros_like(state.batch[1]))

    seen = {}

    def loss_fn(outputs, targets):
        seen.setdefault("targets", targets)  # the first call: training, not evaluation
        return torch.nn.functional.cross_entropy(outputs, targets)

    trainer = make_trainer(
        model, optimizer, algorithms=[SwapTargets()], loss_fn=loss_fn, max_duration="1ba"
    )
    trainer.fit()
    assert torch.equal(seen["targets"], torch.zeros(32, dtype=torch.long))
