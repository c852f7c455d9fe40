"""EarlyStopping: when it stops, what it says, that it resumes exactly, and bad input."""

import json

import pytest
import torch

from loom import Trainer
from loom.callbacks import Checkpoint, EarlyStopping
from loom.config.job import resolve_job
from loom.runs import train_job
from loom.trainer import Callback


class MetricSeries(Callback):
    """Puts the next of ``values`` into ``state.metrics[key]`` at each ``event``."""

    def __init__(self, key, values, event):
        self.key, self.values = key, list(values)
        setattr(self, event, self._put)

    def _put(self, state):
        state.metrics[self.key] = self.values.pop(0)


def fit_with(values, stopping, epochs=10, key="train/score", event="epoch_end"):
    model = torch.nn.Linear(2, 2)
    batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))] * 2
    trainer = Trainer(
        model, batches, max_duration=f"{epochs}ep", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[MetricSeries(key, values, event), stopping],
    )  # fmt: skip
    trainer.fit()
    return trainer.state


def test_it_stops_after_patience_checks_without_an_improvement_beyond_min_delta():
    # Best 0.5 at epoch 2; 0.45 is not better by more than 0.1; the third miss stops.
    values = [1.0, 0.5, 0.45, 0.6, 0.49, 0.3, 0.2, 0.1, 0.0, 0.0]
    state = fit_with(values, EarlyStopping("train/score", patience=3, min_delta=0.1))
    assert state.timestamp.epoch == 5
    assert state.stop_reason == (
        "train/score went 3 checks without improving by more than 0.1 on its best, 0.5, "
        "seen after the end of epoch 2 (batch 4 of the run)"
    )


def test_max_mode_and_a_patience_of_one():
    state = fit_with([0.1, 0.2, 0.2, 0.9], EarlyStopping("train/score", "max", patience=1))
    assert state.timestamp.epoch == 3  # 0.2 again is no improvement
    assert state.stop_reason.startswith("train/score went 1 check without improving on its")


def test_an_evaluation_metric_is_checked_at_each_evaluation_in_batches():
    model = torch.nn.Linear(2, 2)
    batches = [(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))] * 5  # nothing to learn
    trainer = Trainer(
        model, batches, batches[:1], max_duration="3ep", eval_interval="2ba", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
        callbacks=[EarlyStopping("eval/loss", patience=2)],
    )  # fmt: skip
    trainer.fit()
    assert trainer.state.timestamp.batch == 6  # evaluations at 2, 4, 6: two misses
    assert trainer.state.stop_reason.startswith("eval/loss went 2 checks without improving")
    assert trainer.state.stop_reason.endswith(
        "seen after epoch 1, batch 2 of the epoch (batch 2 of the run)"
    )


def test_a_resumed_run_stops_where_the_uninterrupted_one_did(tmp_path):
    def run(load_path=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        batches = [(torch.randn(8, 3), torch.randint(0, 2, (8,))) for _ in range(3)]
        trainer = Trainer(
            model, batches, batches[:1], max_duration="30ep", device="cpu",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.5),
            callbacks=[
                EarlyStopping("eval/accuracy", "max", patience=3),
                Checkpoint(tmp_path, interval="1ep", keep_last=None),
            ],
            load_path=load_path,
        )  # fmt: skip
        trainer.fit()
        return trainer.state

    whole = run()
    assert whole.timestamp.epoch < 30, "the test needs a run that stops early"
    for epoch in (1, whole.timestamp.epoch - 1, whole.timestamp.epoch):
        path = tmp_path / f"epoch{epoch}-batch{3 * epoch}.pt"
        resumed = run(load_path=path)
        assert resumed.timestamp.epoch == whole.timestamp.epoch, epoch
        assert resumed.stop_reason == whole.stop_reason, epoch
        assert torch.equal(resumed.model.weight, whole.model.weight), epoch


def test_a_run_resumed_after_it_stopped_trains_no_further():
    stopping = EarlyStopping("train/score", patience=1)
    stopping.load_state_dict(
        {
            "best": 0.5,
            "best_at": "the end of epoch 2",
            "waited": 1,
            "stopped": "train/score went 1 check",
        }
    )
    state = fit_with([0.0] * 10, stopping)
    assert (state.timestamp.batch, state.stop_reason) == (0, "train/score went 1 check")


def test_a_job_names_it_and_the_summary_says_why_the_run_stopped(tmp_path):
    job = {
        "model": {"name": "mlp", "hidden_sizes": [8]},
        "data": {split: {"name": "synthetic", "num_samples": 32} for split in ("train", "eval")},
        "optimizer": {"name": "sgd", "lr": 0.0},
        "callbacks": [{"name": "early_stopping", "monitor": "eval/loss", "patience": 2}],
        "trainer": {"max_duration": "20ep", "device": "cpu"},
    }
    train_job(resolve_job(job), tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 3
    assert summary["stop_reason"].startswith("eval/loss went 2 checks without improving on its")


def test_bad_input_is_named():
    for arguments, message in [
        ({"monitor": "loss"}, r"monitor='loss' must be a metric's name"),
        ({"monitor": "eval/loss", "mode": "lower"}, r"mode='lower' must be 'min' or 'max'"),
        ({"monitor": "eval/loss", "patience": 0}, r"patience=0 must be an int >= 1"),
        ({"monitor": "eval/loss", "min_delta": -1}, r"min_delta=-1 must be a number >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            EarlyStopping(**arguments)
    with pytest.raises(KeyError, match=r"monitor='train/f1' is not among the metrics at this"):
        fit_with([0.0] * 3, EarlyStopping("train/f1"), epochs=3)


def test_only_evaluations_at_eval_interval_count():
    model = torch.nn.Linear(2, 2)
    batches = [(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))]  # nothing to learn
    stopping = EarlyStopping("eval/loss", patience=2)
    trainer = Trainer(
        model, batches, batches, max_duration="3ep", eval_interval="2ep", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0), callbacks=[stopping],
    )  # fmt: skip
    trainer.fit()  # evaluations at epoch 2 (scheduled) and 3 (the final one)
    trainer.eval()  # and one of one's own
    assert (stopping.waited, trainer.state.stop_reason) == (0, None)


def test_a_monitor_that_is_always_nan_says_so_and_one_without_its_evaluation_is_refused():
    state = fit_with([float("nan")] * 3, EarlyStopping("train/score", patience=2))
    assert state.stop_reason == "train/score was NaN at each of 2 checks"
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"monitor='eval/loss' is checked at each evaluation"):
        Trainer(
            model, [(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))], max_duration="1ep",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
            callbacks=[EarlyStopping("eval/loss")],
        ).fit()  # fmt: skip


def test_the_final_checkpoint_holds_the_stop_whatever_the_callbacks_order(tmp_path):
    """A checkpoint listed before EarlyStopping saves at epoch_end before the stop; the
    final save at fit_end holds it, so the run resumed from it trains no further."""
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

    def run(load_path=None):
        stopping = EarlyStopping("train/score", patience=2)
        model = torch.nn.Linear(2, 2)
        batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
        trainer = Trainer(
            model, batches, max_duration="6ep", device="cpu", load_path=load_path,
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            callbacks=[Checkpoint(tmp_path), MetricSeries("train/score", values, "epoch_end"),
                       stopping],
        )  # fmt: skip
        trainer.fit()
        return trainer.state

    first = run()
    assert first.timestamp.epoch == 3
    resumed = run(load_path=tmp_path / "epoch3-batch3.pt")
    assert (resumed.timestamp.epoch, resumed.stop_reason) == (3, first.stop_reason)


def test_a_resume_that_watches_another_metric_is_refused(tmp_path):
    from loom.trainer import CheckpointError

    def trainer(stopping, load_path=None):
        model = torch.nn.Linear(2, 2)
        batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
        return Trainer(
            model, batches, batches, max_duration="2ep", device="cpu", load_path=load_path,
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            callbacks=[stopping, Checkpoint(tmp_path, best_metric="eval/loss", best_mode="min")],
        )  # fmt: skip

    trainer(EarlyStopping("eval/loss")).fit()
    with pytest.raises(CheckpointError, match=r"EarlyStopping refused .*watched 'eval/loss'"):
        trainer(EarlyStopping("eval/accuracy", "max"), load_path=tmp_path / "epoch2-batch2.pt")
