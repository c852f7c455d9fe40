"""The TensorBoard logger, read back with tensorboard's own reader."""

import subprocess
import sys

import pytest

from loom.callbacks import Checkpoint, TensorBoardLogger
from loom.config.job import resolve_job
from loom.runs import train_job
from tests.callbacks.tracked_run import fit, read_rows

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard extra is not installed (python3 -m pip install 'loom[tensorboard]')",
)


def scalars(log_dir):
    accumulator = event_accumulator.EventAccumulator(str(log_dir))
    accumulator.Reload()
    return accumulator, {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_tensorboard_gets_every_metric_at_the_runs_batch_and_the_epoch_beside_it(tmp_path):
    hparams = {"optimizer": {"name": "sgd", "lr": 0.1}, "seed": 0}
    trainer = fit([TensorBoardLogger(tmp_path, hparams=hparams)])
    accumulator, series = scalars(tmp_path)
    assert series["epoch"] == [(2, 1.0), (4, 2.0), (6, 3.0)]  # once a step
    assert [step for step, _ in series["train/loss"]] == [2, 4, 6]
    assert series["eval/accuracy"][-1] == (
        6, pytest.approx(trainer.state.metrics["eval/accuracy"])
    )  # fmt: skip
    plugin = accumulator.PluginTagToContent("hparams")
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    recorded = {key: value for key, value in start.session_start_info.hparams.items()}
    assert recorded["optimizer.lr"].number_value == 0.1
    assert recorded["optimizer.name"].string_value == "sgd"


def test_a_resumed_tensorboard_run_purges_and_logs_again_what_came_after(tmp_path):
    fit([TensorBoardLogger(tmp_path / "whole")], epochs=3)
    cut = tmp_path / "cut"
    fit([TensorBoardLogger(cut), Checkpoint(tmp_path, keep_last=None)], epochs=3)
    fit([TensorBoardLogger(cut)], epochs=3, load_path=tmp_path / "epoch2-batch4.pt")
    assert scalars(cut)[1] == scalars(tmp_path / "whole")[1]  # every series, once


def test_a_job_names_them_and_their_files_go_into_the_run_directory_with_the_plots(tmp_path):
    job = {
        "model": {"name": "mlp", "hidden_sizes": [8]},
        "data": {split: {"name": "synthetic", "num_samples": 32} for split in ("train", "eval")},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "callbacks": [{"name": "tensorboard"}, {"name": "csv", "csv_path": "logs/metrics.csv"}],
        "trainer": {"max_duration": "2ep", "device": "cpu"},
    }
    train_job(resolve_job(job), tmp_path / "run")
    assert len(read_rows(tmp_path / "run" / "logs" / "metrics.csv")) == 4
    accumulator, series = scalars(tmp_path / "run" / "tensorboard")
    assert len(series["eval/loss"]) == 2
    assert "_hparams_/session_start_info" in accumulator.PluginTagToContent("hparams")
    images = sorted(accumulator.Tags()["images"])
    assert images == ["plots/curves", "plots/reliability"]
    (curves,) = accumulator.Images("plots/curves")
    png = (tmp_path / "run" / "curves.png").read_bytes()
    assert (curves.step, curves.encoded_image_string) == (2, png)  # the file, as it is
    assert (curves.width, curves.height) == (
        int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    )  # fmt: skip


def test_without_tensorboard_the_error_says_what_to_install(tmp_path):
    script = (
        "import sys; sys.modules['torch.utils.tensorboard'] = None\n"
        "from loom.callbacks import TensorBoardLogger\n"
        f"TensorBoardLogger({str(tmp_path)!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: TensorBoardLogger needs tensorboard: python3 -m pip install "
        "'loom[tensorboard]' (or python3 -m pip install tensorboard)."
    )


def test_a_logger_that_raises_is_named_with_its_event_and_the_checkpoint_stays(
    tmp_path, monkeypatch
):
    def full_disk(self, batch, epoch, metrics):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TensorBoardLogger, "write", full_disk)
    logger = TensorBoardLogger(tmp_path / "tb")
    with pytest.raises(OSError, match="No space left") as raised:
        fit([Checkpoint(tmp_path / "checkpoints"), logger])
    logger._writer.abandon()  # as the process's exit would: no writer outlives the test
    assert "raised by callback TensorBoardLogger at event 'epoch_end'" in raised.value.__notes__
    (kept,) = (tmp_path / "checkpoints").iterdir()  # saved before the logger ran
    assert kept.name == "epoch1-batch2.pt"
