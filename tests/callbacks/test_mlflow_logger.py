"""The MLflow logger, read back with MLflow's own client."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from loom.callbacks import Checkpoint, MLflowLogger
from loom.config.job import resolve_job
from loom.runs import train_job
from loom.trainer import Callback, TrainingInterrupted
from tests.callbacks.tracked_run import fit

mlflow = pytest.importorskip(
    "mlflow", reason="the mlflow extra is not installed (python3 -m pip install 'loom[mlflow]')"
)


_TEMPLATE = {}  # the path of an empty store, made once: MLflow's tables take a second


@pytest.fixture(scope="module", autouse=True)
def empty_store(tmp_path_factory):
    database = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{database}").search_experiments()  # makes the tables
    _TEMPLATE["path"] = database


def store(tmp_path):
    """A test's own SQLite store, a copy of the empty one."""
    database = tmp_path / "store" / "mlflow.db"
    if not database.exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_TEMPLATE["path"], database)
    return f"sqlite:///{database}"


def history(uri, run_id):
    client = mlflow.MlflowClient(uri)
    keys = client.get_run(run_id).data.metrics
    return {
        key: [(metric.step, metric.value) for metric in client.get_metric_history(run_id, key)]
        for key in keys
    }


def test_every_metric_is_at_the_runs_batch_with_the_epoch_and_the_params_beside(tmp_path):
    uri = store(tmp_path)
    logger = MLflowLogger(uri, experiment="tiny", hparams={"optimizer": {"lr": 0.1}, "seed": 0})
    trainer = fit([logger])
    client = mlflow.MlflowClient(uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tiny"
    assert run.data.params == {"optimizer.lr": "0.1", "seed": "0"}
    series = history(uri, logger.run_id)
    assert series["epoch"] == [(2, 1.0), (4, 2.0), (6, 3.0)]
    assert [step for step, _ in series["train/loss"]] == [2, 4, 6]
    assert series["eval/accuracy"][-1] == (
        6, pytest.approx(trainer.state.metrics["eval/accuracy"])
    )  # fmt: skip
    # The artifacts lie beside the database, not in the working directory.
    assert run.info.artifact_uri.startswith((tmp_path / "store" / "artifacts").as_uri())


def test_a_resumed_run_continues_the_same_mlflow_run_with_each_step_once(tmp_path):
    whole = MLflowLogger(store(tmp_path))
    fit([whole], epochs=3)
    first = MLflowLogger(store(tmp_path))
    fit([Checkpoint(tmp_path / "checkpoints", keep_last=None), first], epochs=3)
    resumed = MLflowLogger(store(tmp_path))
    fit([resumed], epochs=3, load_path=tmp_path / "checkpoints" / "epoch1-batch2.pt")
    assert resumed.run_id == first.run_id
    uri = store(tmp_path)
    assert history(uri, first.run_id) == history(uri, whole.run_id)
    assert mlflow.MlflowClient(uri).get_run(first.run_id).info.status == "FINISHED"


def test_a_checkpoint_never_holds_more_than_mlflow(tmp_path):
    """Records are written when a checkpoint is taken: a killed run's resume has them."""
    seen = []

    class Look(Callback):
        def epoch_end(self, state):
            seen.append(len(history(store(tmp_path), logger.run_id).get("train/loss", [])))

    logger = MLflowLogger(store(tmp_path))
    fit([logger, Checkpoint(tmp_path / "checkpoints", interval="1ep"), Look()], epochs=2)
    assert seen == [1, 2]  # each epoch end's loss, written before its checkpoint


def test_an_interrupted_run_is_killed_and_its_resume_finishes_it(tmp_path):
    class Interrupt(Callback):
        def batch_end(self, state):
            if state.timestamp.batch == 3:
                state.interrupt = "SIGTERM"

    logger = MLflowLogger(store(tmp_path))
    with pytest.raises(TrainingInterrupted):
        fit([Checkpoint(tmp_path / "checkpoints"), logger, Interrupt()])
    client = mlflow.MlflowClient(store(tmp_path))
    assert client.get_run(logger.run_id).info.status == "KILLED"
    (saved,) = (tmp_path / "checkpoints").iterdir()
    resumed = MLflowLogger(store(tmp_path))
    fit([resumed], load_path=saved)
    assert (resumed.run_id, client.get_run(logger.run_id).info.status) == (
        logger.run_id, "FINISHED",
    )  # fmt: skip


def test_a_training_that_raises_leaves_a_failed_run_with_what_it_logged(tmp_path):
    script = textwrap.dedent(f"""
        import torch
        from loom import Trainer
        from loom.callbacks import MLflowLogger
        from loom.trainer import Callback

        class Fail(Callback):
            def batch_end(self, state):
                if state.timestamp.batch == 5:
                    raise RuntimeError("the data broke")

        model = torch.nn.Linear(3, 2)
        logger = MLflowLogger({store(tmp_path)!r})
        print(logger, flush=True)
        try:
            Trainer(
                model, [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 2,
                max_duration="4ep", optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
                device="cpu", callbacks=[logger, Fail()],
            ).fit()
        finally:
            print(logger.run_id, flush=True)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "RuntimeError: the data broke" in result.stderr
    run_id = result.stdout.split()[-1]
    client = mlflow.MlflowClient(store(tmp_path))
    assert client.get_run(run_id).info.status == "FAILED"
    assert [step for step, _ in history(store(tmp_path), run_id)["train/loss"]] == [2, 4]


def test_a_job_stores_its_runs_in_the_run_directory_with_the_job_and_plots(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    job = {
        "model": {"name": "mlp", "hidden_sizes": [8]},
        "data": {split: {"name": "synthetic", "num_samples": 32} for split in ("train", "eval")},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "callbacks": [{"name": "mlflow"}, {"name": "learning_rates"}],
        "trainer": {"max_duration": "2ep", "device": "cpu"},
    }
    run_dir = tmp_path / "run"
    train_job(resolve_job(job), run_dir)
    client = mlflow.MlflowClient(f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs(client.search_experiments()[0].experiment_id)
    assert (run.info.run_name, run.info.status) == ("run", "FINISHED")
    assert run.data.params["optimizer.lr"] == "0.1"
    assert run.data.params["model.hidden_sizes.0"] == "8"
    assert "train/lr" in run.data.metrics  # listed after it, logged all the same
    plots = {artifact.path for artifact in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/curves.png", "plots/reliability.png"}
    assert (run_dir / "mlflow" / "artifacts").is_dir()


def test_an_http_server_that_does_not_answer_is_named_before_training():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    with pytest.raises(ValueError, match="MLflow server does not answer") as raised:
        MLflowLogger(uri)
    assert str(raised.value).startswith(f"tracking_uri='{uri}': ")


def test_an_error_in_the_store_names_the_logger_and_the_event(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    logger = MLflowLogger(f"sqlite:///{blocked / 'mlflow.db'}")  # a folder that cannot be
    with pytest.raises(RuntimeError, match="MLflowLogger: MLflow at sqlite:///") as raised:
        fit([logger])
    assert "failed: FileExistsError" in str(raised.value)
    assert "raised by callback MLflowLogger at event 'fit_start'" in raised.value.__notes__


def test_a_writer_that_dies_mid_run_is_named_at_the_next_checkpoint(tmp_path):
    class KillTheWriter(Callback):
        def batch_end(self, state):
            if state.timestamp.batch == 3:
                os.kill(logger._writer.pid, signal.SIGKILL)

    logger = MLflowLogger(store(tmp_path))
    with pytest.raises(RuntimeError, match=r"its writer process ended \(killed by SIGKILL\)"):
        fit([logger, KillTheWriter(), Checkpoint(tmp_path / "checkpoints")])
    assert logger._writer is None  # nothing left for the exit to end


def test_a_signal_to_the_trainers_process_group_interrupts_training_not_the_writer(tmp_path):
    """A Ctrl-C reaches the terminal's whole process group, torchrun's SIGTERM its
    workers' group: the writer, in a session of its own, still ends the run KILLED."""
    script = textwrap.dedent(f"""
        import os, signal, torch
        from loom import Trainer
        from loom.callbacks import Checkpoint, MLflowLogger
        from loom.trainer import Callback

        class Signal(Callback):
            def batch_end(self, state):
                if state.timestamp.batch == 3:
                    os.killpg(0, signal.SIGTERM)

        model = torch.nn.Linear(3, 2)
        logger = MLflowLogger({store(tmp_path)!r})
        try:
            Trainer(
                model, [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 2,
                max_duration="4ep", optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
                device="cpu", callbacks=[Checkpoint({str(tmp_path / "checkpoints")!r}), logger,
                                         Signal()],
            ).fit()
        finally:
            print(logger.run_id, flush=True)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        start_new_session=True,  # its own group, which the script signals
    )  # fmt: skip
    assert "TrainingInterrupted" in result.stderr, result.stderr[-2000:]
    assert "MLflowLogger" not in result.stderr
    run_id = result.stdout.split()[-1]
    assert mlflow.MlflowClient(store(tmp_path)).get_run(run_id).info.status == "KILLED"
    assert (tmp_path / "checkpoints" / "epoch1-batch3.pt").is_file()  # the interrupt's


def test_an_mlflow_error_mid_run_is_raised_with_mlflows_message(tmp_path):
    class BadKey(Callback):
        writes = ("metrics",)

        def epoch_end(self, state):
            state.metrics["train/acc@1"] = 0.5  # MLflow refuses the @

    with pytest.raises(RuntimeError) as raised:
        fit([BadKey(), MLflowLogger(store(tmp_path))], epochs=4)
    message = str(raised.value)
    assert message.startswith(f"MLflowLogger: MLflow at {store(tmp_path)} failed: MlflowExcep")
    assert "train/acc@1" in message


def test_a_resume_in_another_store_names_both(tmp_path):
    first = MLflowLogger(store(tmp_path))
    fit([Checkpoint(tmp_path / "checkpoints", keep_last=None), first], epochs=2)
    other = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    with pytest.raises(ValueError, match="the checkpoint's MLflow run") as raised:
        fit([MLflowLogger(other)], load_path=tmp_path / "checkpoints" / "epoch1-batch2.pt")
    assert str(raised.value).startswith(f"tracking_uri={other!r}: ")
    assert f"is in {store(tmp_path)!r}; give that tracking_uri" in str(raised.value)


def test_a_writer_that_stops_answering_is_killed_at_the_timeout(tmp_path):
    class Stall(Callback):
        def batch_end(self, state):
            if state.timestamp.batch == 1:
                os.kill(logger._writer.pid, signal.SIGSTOP)
                logger._writer.timeout = 1  # opening took longer

    logger = MLflowLogger(store(tmp_path))
    with pytest.raises(TimeoutError, match=r"took over timeout=1 s to write the records"):
        fit([Stall(), Checkpoint(tmp_path / "checkpoints"), logger])
    assert logger._writer is None  # killed and reaped: the exit does not wait for it


def test_a_dry_run_leaves_no_run_in_the_shared_store(tmp_path, monkeypatch):
    from loom.runs import dry_run_job

    shared = tmp_path / "shared.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{shared}")
    job = {
        "model": {"name": "mlp", "hidden_sizes": [8]},
        "data": {"train": {"name": "synthetic", "num_samples": 32}},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "callbacks": [
            {"name": "mlflow"},
            {"name": "mlflow", "tracking_uri": f"sqlite:///{shared}"},
        ],
        "trainer": {"max_duration": "2ep", "device": "cpu"},
    }
    assert "mlflow" in dry_run_job(resolve_job(job), 1)
    assert not shared.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"experiment": ""}, "experiment='' must be a name"),
        ({"timeout": 0}, "timeout=0 must be a number of seconds above 0"),
        ({"timeout": float("inf")}, "timeout=inf must be a number of seconds above 0"),
        ({"tracking_uri": 3}, "tracking_uri=3 must be a string or None"),
        ({"hparams": [1]}, r"hparams=\[1\] must be a mapping or None"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises((TypeError, ValueError), match=message):
        MLflowLogger(**arguments)


def test_without_mlflow_the_error_says_what_to_install(tmp_path):
    script = (
        "import importlib.util, sys\n"
        "find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'mlflow' else find(name, *a)\n"
        "from loom.callbacks import MLflowLogger\n"
        "MLflowLogger()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: MLflowLogger needs mlflow: python3 -m pip install 'loom[mlflow]' "
        "(or python3 -m pip install mlflow)."
    )
