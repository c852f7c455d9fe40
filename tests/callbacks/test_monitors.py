"""Monitors: learning rates and throughput as metrics every logger gets, and max_time."""

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from loom import Trainer
from loom.callbacks import LearningRates, MaxTime, Throughput
from loom.callbacks.monitors import parse_seconds
from loom.config.job import resolve_job
from loom.optim import step
from loom.runs import train_job
from loom.trainer import Callback
from tests.conftest import TWO_PROCESS_TORCHRUN

BATCHES = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 3


def test_learning_rates_are_recorded_per_group_as_each_epoch_ends():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    first = torch.optim.SGD(model[0].parameters(), lr=0.5)
    second = torch.optim.SGD(
        [{"params": model[1].weight, "lr": 0.25}, {"params": model[1].bias}], lr=0.125
    )
    seen = []

    class Copy(Callback):
        def epoch_end(self, state):
            seen.append({k: v for k, v in state.metrics.items() if k.startswith("train/lr")})

    trainer = Trainer(
        model, BATCHES, max_duration="2ep", device="cpu", optimizers=[first, second],
        schedulers=step(first, batches_per_epoch=3, total_batches=6, step_size="1ep", gamma=0.1),
        callbacks=[LearningRates(), Copy()],
    )  # fmt: skip
    trainer.fit()
    assert seen[0] == {"train/lr/0": 0.5, "train/lr/1": 0.25, "train/lr/2": 0.125}
    assert seen[1]["train/lr/0"] == pytest.approx(0.05)  # as the epoch started: decayed once


class Clock:
    """A stand-in for time.perf_counter, which Ticks moves: each training batch takes
    1 s, each evaluation batch 10 s, whatever the machine's load."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Ticks(Callback):
    def __init__(self, clock):
        self.clock = clock

    def batch_end(self, state):
        self.clock.now += 1.0

    def eval_batch_end(self, state):
        self.clock.now += 10.0


def test_throughput_counts_the_epochs_training_without_its_evaluations(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("loom.callbacks.monitors.time.perf_counter", clock)
    seen = {}

    class Copy(Callback):
        def epoch_end(self, state):
            seen.update(state.metrics)

    model = torch.nn.Linear(3, 2)
    trainer = Trainer(
        model, BATCHES, BATCHES[:1], max_duration="1ep", eval_interval="1ba", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[Ticks(clock), Throughput(), Copy()],
    )  # fmt: skip
    trainer.fit()
    # 3 batches of 4 in 3 s; the three evaluations within the epoch (30 s) left out.
    assert seen["train/samples_per_second"] == pytest.approx(4.0)
    assert seen["train/batches_per_second"] == pytest.approx(1.0)
    assert "train/peak_memory_gib" not in seen  # a CPU run


class SlowStep(Callback):
    def batch_end(self, state):
        time.sleep(0.05)


def test_max_time_stops_after_the_batch_that_crosses_it_and_counts_across_resumes():
    model = torch.nn.Linear(3, 2)
    arguments = {
        "max_duration": "100ep", "device": "cpu",
        "optimizers": torch.optim.SGD(model.parameters(), lr=0.1),
    }  # fmt: skip
    limit = MaxTime("1s")
    trainer = Trainer(model, BATCHES, callbacks=[SlowStep(), limit], **arguments)
    trainer.fit()
    batches = trainer.state.timestamp.batch
    assert 1 <= batches <= 20  # each step sleeps 0.05 s: the 20th crosses 1 s at the latest
    assert limit.state_dict()["seconds"] >= 1.0
    assert trainer.state.stop_reason.startswith("max_time 1s reached after epoch ")
    resumed = MaxTime("1h")
    resumed.load_state_dict({"seconds": 3600.0})  # a checkpoint's count
    again = Trainer(model, BATCHES, callbacks=[resumed], **arguments)
    again.fit()
    assert again.state.timestamp.batch == 0  # past its limit already: nothing more
    assert again.state.stop_reason == "max_time 1h reached before this run resumed"


def test_times_are_parsed_or_refused():
    assert [parse_seconds(text) for text in ("45s", "2h30m", "1h5m10s")] == [45, 9000, 3910]
    for bad in ("", "2.5h", "30m2h", "0s", "1d", 90):
        with pytest.raises(ValueError, match=rf"limit={bad!r}"):
            MaxTime(bad)


def test_a_job_logs_what_the_monitors_record(tmp_path):
    job = {
        "model": {"name": "mlp", "hidden_sizes": [8]},
        "data": {"train": {"name": "synthetic", "num_samples": 32}},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "callbacks": [{"name": "learning_rates"}, {"name": "throughput"}],
        "trainer": {"max_duration": "2ep", "device": "cpu"},
    }
    train_job(resolve_job(job), tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["train/lr"] for record in records] == [0.1, 0.1]
    assert all(record["train/samples_per_second"] > 0 for record in records)


@pytest.mark.slow
def test_ranks_whose_clocks_differ_stop_at_the_same_batch(tmp_path):
    script = Path(__file__).with_name("max_time_job.py")
    command = [*TWO_PROCESS_TORCHRUN, str(script), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["batch"] % 20 == 0  # where the ranks agree
    assert ranks[0]["reason"].startswith("max_time 1s reached after")
