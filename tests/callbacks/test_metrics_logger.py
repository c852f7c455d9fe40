import copy
import io
import json
import shutil

import pytest
import torch

from loom import Trainer
from loom.callbacks import Checkpoint, MetricsLogError, MetricsLogger
from loom.trainer import Callback


def test_jsonl_records_every_epoch_and_evaluation(tmp_path, model, loaders, optimizer):
    path = tmp_path / "logs" / "metrics.jsonl"
    console = io.StringIO()
    trainer = Trainer(
        model, loaders[0], loaders[1], optimizers=optimizer, max_duration="2ep", device="cpu",
        callbacks=[MetricsLogger(path, stream=console)],
    )  # fmt: skip
    metrics = trainer.fit()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["epoch"], r["batch"], r["samples"]) for r in records] == [(1, 8, 256)] * 2 + [
        (2, 16, 512)
    ] * 2
    assert set(records[0]) == {"epoch", "batch", "samples", "time", "train/loss"}
    assert records[-1]["eval/accuracy"] == metrics["eval/accuracy"]
    assert records[-2]["train/loss"] == metrics["train/loss"]
    assert records[-1]["eval/nll"] == metrics["eval/nll"]  # the file keeps both
    table = console.getvalue().splitlines()
    # The default loss's evaluation loss is the NLL: the table shows the number once.
    header = "epoch batch train/loss eval/loss eval/accuracy eval/ece time"
    assert table[0].split() == header.split()
    assert [row.split()[:2] for row in table[1:]] == [["1", "8"], ["2", "16"]]
    assert table[2].split()[4] == f"{metrics['eval/accuracy']:.4f}"


def test_a_fresh_run_starts_the_file_and_a_resumed_one_appends(tmp_path, model, loaders, optimizer):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"stale": true}\n')
    trainer = Trainer(
        model,
        loaders[0],
        optimizers=optimizer,
        max_duration="1ep",
        device="cpu",
        callbacks=[MetricsLogger(path, console=False)],
    )
    trainer.fit()
    assert len(path.read_text().splitlines()) == 1
    trainer.state.max_duration = trainer.state.max_duration.parse("2ep")
    trainer.fit()  # continues from batch 8, as a resumed run does
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2]


def test_mid_epoch_evaluations_get_their_own_rows_and_the_stop_reason_is_shown(
    model, loaders, optimizer
):
    class StopAtFive(Callback):
        def batch_end(self, state):
            if state.timestamp.batch == 5:
                state.request_stop("patience ran out")

    console = io.StringIO()
    trainer = Trainer(
        model, loaders[0], loaders[1], optimizers=optimizer, max_duration="2ep", device="cpu",
        eval_interval="3ba", callbacks=[StopAtFive(), MetricsLogger(stream=console)],
    )  # fmt: skip
    trainer.fit()
    lines = console.getvalue().splitlines()
    assert [line.split()[1] for line in lines[1:-1]] == ["3", "5"]
    assert lines[-1] == "stopped early: patience ran out"


def test_nothing_is_written_off_the_main_process(tmp_path, model, loaders, optimizer):
    path = tmp_path / "metrics.jsonl"
    console = io.StringIO()
    trainer = Trainer(
        model,
        loaders[0],
        optimizers=optimizer,
        max_duration="1ep",
        device="cpu",
        callbacks=[MetricsLogger(path, stream=console)],
    )
    trainer.state.rank = 1
    trainer.fit()
    assert not path.exists()
    assert console.getvalue() == ""


def test_the_table_shows_the_nll_where_it_is_not_the_loss(model, loaders, optimizer):
    import torch.nn.functional as F

    console = io.StringIO()
    Trainer(
        model, loaders[0], loaders[1], optimizers=optimizer, max_duration="1ep", device="cpu",
        loss_fn=lambda outputs, targets: F.cross_entropy(outputs, targets, label_smoothing=0.2),
        callbacks=[MetricsLogger(stream=console)],
    ).fit()  # fmt: skip
    header = "epoch batch train/loss eval/loss eval/accuracy eval/nll eval/ece time"
    assert console.getvalue().splitlines()[0].split() == header.split()


def logged_run(folder, model, loaders, load_path=None):
    """Three epochs with an evaluation after each, the checkpoint listed before the log
    (as a Python user may list them), one checkpoint kept per epoch."""
    torch.manual_seed(0)
    return Trainer(
        model,
        loaders[0],
        loaders[1],
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        max_duration="3ep",
        device="cpu",
        callbacks=[
            Checkpoint(folder / "checkpoints", interval="1ep", keep_last=None),
            MetricsLogger(folder / "metrics.jsonl", console=False),
        ],
        load_path=load_path,
    )


def without_time(path):
    return [
        {k: v for k, v in json.loads(line).items() if k != "time"}
        for line in path.read_text().splitlines()
    ]


@pytest.fixture
def whole_log(tmp_path, loaders):
    """The log of an uninterrupted run, and its lines, the checkpoint of epoch 2."""
    folder = tmp_path / "whole"
    logged_run(folder, copy.deepcopy(MODEL), loaders).fit()
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return without_time(folder / "metrics.jsonl"), lines, folder / "checkpoints"


MODEL = torch.nn.Sequential(torch.nn.Linear(8, 4))


def resumed_log(tmp_path, loaders, whole_log, lines_left):
    """The log after resuming from the epoch-2 checkpoint, with ``lines_left`` the file
    the killed run left."""
    _, _, checkpoints = whole_log
    folder = tmp_path / "killed"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoints / "epoch2-batch16.pt", folder / "checkpoints")
    (folder / "metrics.jsonl").write_text(lines_left)
    resumed = logged_run(
        folder, copy.deepcopy(MODEL), loaders, load_path=folder / "checkpoints/epoch2-batch16.pt"
    )
    resumed.fit()
    return without_time(folder / "metrics.jsonl")


def test_a_kill_between_the_save_and_the_log_loses_no_record(tmp_path, loaders, whole_log):
    """Killed after the epoch-2 checkpoint was saved and before its record was logged:
    the resumed run, which starts after that epoch, writes the record back."""
    records, lines, _ = whole_log
    epoch_two = next(i for i, r in enumerate(records) if r["epoch"] == 2 and "train/loss" in r)
    left = "".join(f"{line}\n" for line in lines[:epoch_two])
    assert resumed_log(tmp_path, loaders, whole_log, left) == records


def test_a_last_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path, loaders, whole_log):
    records, lines, _ = whole_log
    epoch_two_eval = next(i for i, r in enumerate(records) if r["epoch"] == 2 and "eval/loss" in r)
    left = "".join(f"{line}\n" for line in lines[:epoch_two_eval]) + lines[epoch_two_eval][:9]
    assert resumed_log(tmp_path, loaders, whole_log, left) == records


def test_a_damaged_line_before_the_last_is_an_error_naming_it(tmp_path, loaders, whole_log):
    _, lines, _ = whole_log
    left = "".join(f"{line}\n" for line in [lines[0], "{not json", *lines[1:3]])
    with pytest.raises(MetricsLogError, match=r"metrics\.jsonl line 2 is not a metrics record"):
        resumed_log(tmp_path, loaders, whole_log, left)
