import io
import json

from loom import Trainer
from loom.callbacks import MetricsLogger
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
