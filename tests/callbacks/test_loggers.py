"""The CSV logger, read back with csv, and what the trackers share."""

from pathlib import Path

from loom.callbacks import Checkpoint, CSVLogger, RecordLogger
from loom.callbacks.loggers import flat_hyperparameters
from loom.config.job import resolve_job
from loom.config.registries import CALLBACKS
from loom.runs import train_job
from tests.callbacks.tracked_run import fit, read_rows


def test_csv_has_a_row_per_epoch_end_and_evaluation_with_every_metric_a_column(tmp_path):
    trainer = fit([CSVLogger(tmp_path / "metrics.csv")])
    rows = read_rows(tmp_path / "metrics.csv")
    assert [(row["epoch"], row["batch"]) for row in rows] == [
        ("1", "2"), ("1", "2"), ("2", "4"), ("2", "4"), ("3", "6"), ("3", "6"),
    ]  # fmt: skip
    assert (rows[0]["train/loss"] != "", rows[0]["eval/loss"]) == (True, "")  # the epoch's
    assert (rows[1]["eval/loss"] != "", rows[1]["train/loss"]) == (True, "")  # its eval's
    assert float(rows[-1]["eval/accuracy"]) == trainer.state.metrics["eval/accuracy"]


def test_a_resumed_csv_keeps_the_rows_from_before_its_checkpoint(tmp_path):
    whole = tmp_path / "whole.csv"
    fit([CSVLogger(whole)], epochs=3)
    cut = tmp_path / "cut.csv"
    fit([CSVLogger(cut), Checkpoint(tmp_path, keep_last=None)], epochs=3)
    with cut.open("a") as file:
        file.write("3,6,0.71")  # a row a crash cut short
    resumed = fit([CSVLogger(cut)], epochs=3, load_path=tmp_path / "epoch2-batch4.pt")
    assert resumed.state.timestamp.epoch == 3
    assert read_rows(cut) == read_rows(whole)  # the third epoch's rows once, not twice


class Recording(RecordLogger):
    """A tracker of one's own: what the base hands each hook."""

    def __init__(self):
        self.calls = []

    def open(self, state):
        self.calls.append(("open", state.timestamp.batch))

    def write(self, batch, epoch, metrics):
        self.calls.append(("write", batch, epoch, sorted(metrics)))

    def close(self, state):
        self.calls.append(("close", list(state.plots)))


def test_a_tracker_of_ones_own_gets_each_record_at_its_batch_and_epoch():
    tracker = Recording()
    fit([tracker], epochs=1)
    assert tracker.calls == [
        ("open", 0),
        ("write", 2, 1, ["train/loss"]),
        ("write", 2, 1, ["eval/accuracy", "eval/ece", "eval/loss", "eval/nll"]),
        ("close", []),  # no run recorder drew plots
    ]


def test_a_jobs_trackers_run_last_with_every_metric_and_the_plots(tmp_path, monkeypatch):
    tracker = Recording()

    def recording():
        return tracker

    monkeypatch.setitem(CALLBACKS._entries, "recording", recording)
    job = {
        "model": {"name": "mlp", "hidden_sizes": [8]},
        "data": {split: {"name": "synthetic", "num_samples": 32} for split in ("train", "eval")},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "callbacks": [{"name": "csv"}, {"name": "recording"}, {"name": "throughput"}],
        "trainer": {"max_duration": "1ep", "device": "cpu"},
    }
    run_dir = tmp_path / "run"
    train_job(resolve_job(job), run_dir)
    rows = read_rows(run_dir / "metrics.csv")
    assert rows[0]["train/samples_per_second"] != ""  # throughput's, listed after the csv
    plots = [str(run_dir / "curves.png"), str(run_dir / "reliability.png")]
    assert tracker.calls[-1] == ("close", plots)  # drawn before it closed


def test_flat_hyperparameters_keep_one_type_a_key():
    flat = flat_hyperparameters(
        {"a": {"b": [1, {"c": True}]}, "none": None, "text": "x" * 300, "path": Path("/runs")}
    )
    assert flat == {"a.b.0": 1, "a.b.1.c": True, "text": "x" * 250, "path": "/runs"}


def test_an_evaluation_called_after_fit_is_not_a_record_of_the_run():
    tracker = Recording()
    trainer = fit([tracker], epochs=1)
    calls = list(tracker.calls)
    trainer.eval()  # e.g. on a test set, once the tracker has closed
    assert tracker.calls == calls
