import json
import os
import pickle
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import loom
from loom.cli import main
from loom.config import MODELS, REGISTRIES
from loom.config.job import resolve_job
from loom.config.job_file import read_job_file
from loom.models import SmallCNN
from loom.trainer import Event
from tests.conftest import TWO_PROCESS_TORCHRUN


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"loom {loom.__version__}"
    assert main([]) == 0
    assert "events" in capsys.readouterr().out


def test_events_prints_the_loop(capsys):
    assert main(["events"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.strip() for line in lines[: len(Event)]] == [event.value for event in Event]
    assert "callbacks run in the order given at every event." in lines[-1]


def test_python_dash_m_loom_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "loom", "events"], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[0] == "init"


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def run_loom(capsys, *arguments):
    status = main([str(argument) for argument in arguments])
    output = capsys.readouterr()
    return status, output.out, output.err


@pytest.mark.parametrize(
    "command", ["train", "validate", "list", "compare", "predict", "export", "events"]
)
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: loom " + command in capsys.readouterr().out


def test_train_digits_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, out, _ = run_loom(capsys, "train", CONFIGS / "digits.yaml", "--run-dir", run_dir)
    assert status == 0
    assert f"run directory: {run_dir}" in out
    files = {path.name for path in run_dir.iterdir()}
    assert files == {
        "artifacts.pt",
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "model.pt",
        "curves.png",
        "reliability.png",
        "soft_labels.png",
        "status.json",
    }
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 30
    assert summary["metrics"]["eval/accuracy"] > 0.9  # 97% and more is the benchmark's bar
    saved = resolve_job(read_job_file(run_dir / "config.yaml"))
    assert saved == resolve_job(read_job_file(CONFIGS / "digits.yaml"))
    weights = torch.load(run_dir / "model.pt", weights_only=True)
    assert set(weights) == set(SmallCNN(num_classes=10, in_channels=1).state_dict())
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if "eval/accuracy" in r] == list(range(1, 31))
    checkpoints = [path.name for path in (run_dir / "checkpoints").iterdir()]
    assert checkpoints == ["epoch30-batch690.pt"]  # every epoch, the latest kept


def write_cifar_like(root):
    """Tiny stand-ins for the CIFAR archives, so the CIFAR jobs can dry-run."""
    for folder, files, labels, names, meta in (
        (
            "cifar-10-batches-py",
            [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"],
            b"labels",
            b"label_names",
            "batches.meta",
        ),
        ("cifar-100-python", ["train", "test"], b"fine_labels", b"fine_label_names", "meta"),
    ):
        (root / folder).mkdir(parents=True)
        for name in files:
            batch = {b"data": np.zeros((8, 3072), dtype=np.uint8), labels: [0, 1] * 4}
            (root / folder / name).write_bytes(pickle.dumps(batch))
        (root / folder / meta).write_bytes(pickle.dumps({names: [b"a", b"b"]}))


# A dry run of a few batches ends before SWA's start epoch, and SWA says so.
@pytest.mark.filterwarnings("ignore:SWA averaged no epoch")
@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda path: path.name)
def test_every_config_validates_and_dry_runs(tmp_path, capsys, path):
    overrides = []
    if "cifar" in path.name:  # stand-in files, a narrow net, no worker processes
        write_cifar_like(tmp_path)
        overrides = [
            f"data.{split}.{key}={value}"
            for split in ("train", "eval")
            for key, value in (("root", tmp_path), ("num_workers", 0))
        ]
        overrides += ["model.width=2", "data.train.batch_size=4", "trainer.device=cpu"]
    if "distill" in path.name:  # its teacher: a run of configs/digits.yaml, one batch long
        teacher = tmp_path / "teacher"
        trained = run_loom(
            capsys,
            "train",
            CONFIGS / "digits.yaml",
            "trainer.max_duration=1ba",
            "--run-dir",
            teacher,
        )
        assert trained[0] == 0, trained[2]
        overrides = [f"algorithms.0.teacher={teacher}"]
    status, out, err = run_loom(capsys, "validate", path, *overrides)  # builds: needs the data
    assert status == 0, err
    with_overrides = f" (with {' '.join(overrides)})" if overrides else ""
    assert out.splitlines()[0] == f"{path}: valid job{with_overrides}."
    status, out, _ = run_loom(capsys, "train", path, *overrides, "--dry-run", 2)
    assert status == 0
    written = out.splitlines()[-1].removeprefix(
        "dry run passed: 2 train and eval batches; the run wrote "
    )
    expected = {"checkpoints", "config.yaml", "curves.png", "metrics.jsonl", "model.pt"}
    expected |= {"status.json"}
    expected |= {"reliability.png", "summary.json"}
    if "online_label_smoothing" in path.read_text():  # the learned soft labels too
        expected |= {"artifacts.pt", "soft_labels.png"}
    assert written == f"{', '.join(sorted(expected))} (into a temporary directory, now removed)."
    assert list(Path(tempfile.gettempdir()).glob("loom-dry-run-*")) == []


def test_print_config_reloads_to_the_same_job(tmp_path, capsys):
    status, out, _ = run_loom(
        capsys,
        "train",
        CONFIGS / "digits.yaml",
        "optimizer.lr=1e-2",
        "algorithms.0.alpha=0.3",
        "--print-config",
    )
    assert status == 0
    (tmp_path / "printed.yaml").write_text(out)
    status, again, _ = run_loom(capsys, "train", tmp_path / "printed.yaml", "--print-config")
    assert again == out
    job = yaml.safe_load(out)
    assert job["optimizer"]["lr"] == 0.01
    assert job["algorithms"][0]["alpha"] == 0.3


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (
            None,
            ["model.widht=3"],
            r"model\.widht: unknown key \(did you mean "
            r"'width'\?\)",
        ),
        ("", [], r"is empty"),
        (
            "model: !!python/object/apply:os.system [ls]",
            [],
            r"tags such as !!python/object are "
            r"refused",
        ),
        (
            None,
            ["optimizer.lr=fast"],
            r"\(with optimizer\.lr=fast\): optimizer\.lr: expected "
            r"float, got 'fast' \(str\)\.",
        ),
        (
            None,
            ["optimizer.momentun=0.5"],
            r"optimizer\.momentun: unknown key \(did you mean "
            r"'momentum'\?\)",
        ),
        (None, ["model.name=resnet"], r"model\.name: unknown model 'resnet'"),
        (None, ["scheduler.name=step"], r"scheduler\.step_size: missing required argument"),
        (
            None,
            ["trainer.max_duration"],
            r"override 'trainer\.max_duration' must be "
            r"key\.path=value",
        ),
    ],
)
def test_job_errors_are_one_line_and_exit_2(tmp_path, capsys, text, overrides, message):
    path = CONFIGS / "digits.yaml"
    if text is not None:
        path = tmp_path / "job.yaml"
        path.write_text(text)
    for command in ("validate", "train"):
        status, out, err = run_loom(capsys, command, path, *overrides)
        assert status == 2
        assert out == ""
        assert err.startswith(f"loom {command}: error: {path}")
        assert re.search(message, err), err
        assert len(err.strip().splitlines()) == 1
        assert "Traceback" not in err


def test_a_missing_file_and_a_missing_dataset(tmp_path, capsys):
    status, _, err = run_loom(capsys, "validate", tmp_path / "nope.yaml")
    assert status == 2
    assert "does not exist" in err
    status, _, err = run_loom(
        capsys,
        "train",
        CONFIGS / "cifar10_resnet18.yaml",
        f"data.train.root={tmp_path}",
        "--dry-run",
        "1",
    )
    assert status == 2
    assert re.search(r"data\.train \(cifar10\): dataset 'cifar10': .* not found under root", err)


def test_list_shows_every_name_with_its_arguments(capsys):
    status, out, _ = run_loom(capsys, "list")
    assert status == 0
    for registry in REGISTRIES.values():
        for name in registry:
            assert f"  {name}: " in out
    assert "      milestones: list[duration" in out
    status, out, _ = run_loom(capsys, "list", "models")
    assert out.startswith("models:\n  cifar_resnet: ")
    assert "schedulers:" not in out
    status, _, err = run_loom(capsys, "list", "widgets")
    assert status == 2
    assert "unknown kind 'widgets'; one of model, dataset" in err


def test_import_registers_user_components(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_components.py").write_text(
        "import torch\n"
        "from loom.config import MODELS\n\n"
        "@MODELS.register('tiny_linear')\n"
        "class TinyLinear(torch.nn.Sequential):\n"
        "    '''One linear layer.'''\n"
        "    def __init__(self, num_classes: int, in_features: int, bias: bool = True):\n"
        "        super().__init__(torch.nn.Flatten(), torch.nn.Linear(in_features, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(MODELS._entries, "tiny_linear", raising=False)
    try:
        status, _, err = run_loom(
            capsys, "validate", CONFIGS / "digits_baseline.yaml", "model={name: tiny_linear}"
        )
        assert status == 2
        assert "unknown model 'tiny_linear'" in err
        status, out, _ = run_loom(
            capsys,
            "train",
            CONFIGS / "digits_baseline.yaml",
            "model={name: tiny_linear}",
            "--import",
            "my_components",
            "--dry-run",
            "1",
        )
        assert status == 0, out
        status, _, err = run_loom(capsys, "list", "--import", "not_a_module")
        assert status == 2
        assert "--import not_a_module: No module named 'not_a_module'" in err
    finally:
        MODELS._entries.pop("tiny_linear", None)
        sys.modules.pop("my_components", None)


def test_seeds_make_one_run_each_and_compare_groups_them(tmp_path, capsys):
    for name, algorithm in (("ols", "online_label_smoothing"), ("ls", "label_smoothing")):
        status, out, _ = run_loom(
            capsys,
            "train",
            CONFIGS / "digits.yaml",
            f"algorithms.0={{name: {algorithm}}}",
            "trainer.max_duration=1ep",
            "callbacks=[]",
            "--seeds",
            "0,1",
            "--run-dir",
            tmp_path / name,
        )
        assert status == 0
        assert f"compare them with: loom compare {tmp_path / name}" in out
        assert sorted(path.name for path in (tmp_path / name).iterdir()) == ["seed0", "seed1"]
        seeds = [
            yaml.safe_load((tmp_path / name / s / "config.yaml").read_text())["seed"]
            for s in ("seed0", "seed1")
        ]
        assert seeds == [0, 1]
    plot, markdown = tmp_path / "compare.png", tmp_path / "compare.md"  # beside the runs
    status, out, _ = run_loom(capsys, "compare", tmp_path / "ols", tmp_path / "ls")
    assert status == 0
    header, *rows = out.splitlines()[:3]
    assert header.split()[:3] == ["run", "seeds", "accuracy"]
    assert [row.split()[:2] for row in rows] == [["ols", "2"], ["ls", "2"]]
    accuracies = [
        json.loads((tmp_path / "ols" / s / "summary.json").read_text())["metrics"]["eval/accuracy"]
        for s in ("seed0", "seed1")
    ]
    mean, spread = statistics.fmean(accuracies), statistics.stdev(accuracies)
    assert f"{mean:.4f} ± {spread:.4f}" in rows[0]
    assert markdown.read_text().startswith("| run | seeds | accuracy | best acc |")
    assert "accuracy by seed:" in out
    assert "### accuracy by seed\n| run | seed 0 | seed 1 |" in markdown.read_text()
    assert "\n| accuracy | ols | ls | 0,1 | " in markdown.read_text(), "they differ in algorithms"
    assert plot.stat().st_size > 0
    assert not Path("compare.md").exists(), "nothing is written into the current directory"
    status, _, _ = run_loom(capsys, "compare", tmp_path / "ols", "--out", tmp_path / "elsewhere")
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == [
        "compare.md", "compare.png",
    ]  # fmt: skip
    status, _, err = run_loom(capsys, "compare", tmp_path / "ols" / "seed0" / "checkpoints")
    assert status == 2
    assert "is not a run directory and holds none" in err


def test_seeds_are_a_list_of_distinct_ints(capsys):
    for bad in ("1,x", "1,1", "-1"):
        with pytest.raises(SystemExit):
            main(["train", str(CONFIGS / "digits.yaml"), "--seeds", bad])
        assert "--seeds" in capsys.readouterr().err


def test_dry_run_needs_a_positive_batch_count(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(CONFIGS / "digits.yaml"), "--dry-run", "0"])
    assert exit_.value.code == 2
    assert "--dry-run: '0' is not a number of batches >= 1" in capsys.readouterr().err


def test_resume_needs_a_run_with_a_checkpoint(tmp_path, capsys):
    status, _, err = run_loom(capsys, "train", CONFIGS / "digits.yaml", "--resume", tmp_path)
    assert status == 2
    assert f"--resume {tmp_path}: no checkpoint in {tmp_path / 'checkpoints'}" in err
    status, _, err = run_loom(
        capsys, "train", CONFIGS / "digits.yaml", "--resume", tmp_path, "--run-dir", tmp_path
    )
    assert status == 2
    assert "give --resume RUN_DIR or --run-dir DIR, not both" in err


def test_list_markdown_is_the_reference_section(capsys):
    status, out, _ = run_loom(capsys, "list", "--markdown")
    assert status == 0
    reference = (CONFIGS.parent / "docs" / "config.md").read_text()
    assert reference.endswith(out)


@pytest.mark.slow
def test_torchrun_runs_a_job_on_two_processes_in_one_run_directory(tmp_path):
    """Without --run-dir, rank 0 names and creates the run directory for both ranks
    (each rank's clock would name its own); rank 0 alone prints and writes."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "seed: 0\n"
        "model: {name: mlp}\n"
        "data:\n"
        "  train: {name: synthetic, num_samples: 128, batch_size: 16}\n"
        "  eval: {name: synthetic, split: test, num_samples: 64, batch_size: 32}\n"
        "optimizer: {name: sgd, lr: 0.1}\n"
        "trainer: {max_duration: 2ep, device: cpu}\n"
    )
    command = [*TWO_PROCESS_TORCHRUN, "-m", "loom", "train", str(job)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert result.stdout.count(f"run directory: runs/{run_dir.name}") == 2  # start and end
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["batches"] == 2 * 4  # 128 samples, 64 a rank, batches of 16
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 1, 2, 2]
    result = subprocess.run(
        [*command, "--dry-run", "2"], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("dry run passed") == 1  # rank 0 alone prints
    assert len(list((tmp_path / "runs").iterdir())) == 1, "a dry run makes no run directory"


def loom_command(*arguments, timeout=120):
    """The real command in a subprocess (``python -m loom`` is ``loom``)."""
    command = [sys.executable, "-m", "loom", *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_overrides_go_before_or_after_the_options_in_the_order_given(capsys):
    job = CONFIGS / "digits.yaml"
    status, out, err = run_loom(
        capsys, "validate", job, "--import", "json", "trainer.max_duration=6ep"
    )
    assert status == 0, err
    assert "valid job (with trainer.max_duration=6ep)" in out
    status, out, err = run_loom(
        capsys, "train", job, "optimizer.lr=0.5", "--print-config", "trainer.max_duration=6ep",
        "optimizer.lr=0.25",
    )  # fmt: skip
    assert status == 0, err
    resolved = yaml.safe_load(out)
    assert resolved["trainer"]["max_duration"] == "6ep"
    assert resolved["optimizer"]["lr"] == 0.25  # the later of the two
    with pytest.raises(SystemExit) as unknown:
        main(["validate", str(job), "trainer.max_duration=6ep", "--bogus"])
    assert unknown.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["list"], ["events"], ["list", "model"]])
def test_a_reader_that_goes_away_gets_no_traceback(command):
    """``loom list | head``: the pipe closes before loom has written; it stops quietly.
    Buffered output (no PYTHONUNBUFFERED) is written only when flushed: that must be
    inside the command too, not left to the interpreter's exit."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    process = subprocess.Popen(
        [sys.executable, "-m", "loom", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment,
    )  # fmt: skip
    process.stdout.close()  # before loom (still importing torch) writes a line
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGPIPE, errors.decode()
    assert errors == b"", errors.decode()


def test_a_broken_pipe_other_than_standard_output_is_an_error(monkeypatch, capsys):
    def write_to_a_closed_pipe(args):
        reader, writer = os.pipe()
        os.close(reader)
        with os.fdopen(writer, "w") as stream:
            stream.write("x" * 100_000)
        return 0

    import loom.cli

    original = loom.cli._print_events
    monkeypatch.setattr(loom.cli, "_print_events", write_to_a_closed_pipe)
    try:
        with pytest.raises(BrokenPipeError):
            main(["events"])
    finally:
        monkeypatch.setattr(loom.cli, "_print_events", original)
    print("standard output still works")
    assert capsys.readouterr().out == "standard output still works\n"


def test_a_double_dash_before_the_overrides_is_taken_as_argparse_means_it():
    printed = loom_command(
        "train", CONFIGS / "digits.yaml", "--print-config", "--", "trainer.max_duration=6ep"
    )
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["trainer"]["max_duration"] == "6ep"


def test_a_relative_checkpoint_folder_is_inside_the_run_directory_and_resumes(
    tmp_path, capsys, monkeypatch
):
    """Run from another directory: the folder is the run's, and --resume finds it there."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "model: {name: mlp, hidden_sizes: [8]}\n"
        "data: {train: {name: synthetic, num_samples: 64, shape: [4], batch_size: 16}}\n"
        "optimizer: {name: sgd, lr: 0.1}\n"
        "callbacks: [{name: checkpoint, folder: ckpt, interval: 1ep}]\n"
        "trainer: {max_duration: 1ep, device: cpu}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_dir = tmp_path / "run"

    monkeypatch.chdir(elsewhere)
    first = run_loom(capsys, "train", job, "--run-dir", run_dir)
    assert first[0] == 0, first[2]
    assert [path.name for path in (run_dir / "ckpt").iterdir()] == ["epoch1-batch4.pt"]
    assert list(elsewhere.iterdir()) == []
    resumed = run_loom(capsys, "train", job, "--resume", run_dir, "trainer.max_duration=2ep")
    assert resumed[0] == 0, resumed[2]
    assert json.loads((run_dir / "summary.json").read_text())["batches"] == 8


def test_a_job_that_cannot_be_built_names_no_run_directory(tmp_path, capsys, monkeypatch):
    """Nor leaves one: the default run directory, created before the job is built (so
    that two runs started in the same second never share one), is removed."""
    monkeypatch.chdir(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(
        "model: {name: mlp, hidden_sizes: [-3]}\n"
        "data: {train: {name: synthetic, batch_size: 16}}\n"
        "optimizer: {name: sgd, lr: 0.1}\n"
        "trainer: {max_duration: 1ep, device: cpu}\n"
    )
    status, out, err = run_loom(capsys, "train", job, "--run-dir", tmp_path / "run")
    assert status == 2
    assert "hidden_sizes[0]=-3 must be a positive int" in err
    assert "run directory" not in out
    assert not (tmp_path / "run").exists()
    assert run_loom(capsys, "train", job)[0] == 2
    assert list((tmp_path / "runs").iterdir()) == []


def test_training_time_adds_up_across_resumes(tmp_path, capsys):
    """summary.json's seconds and metrics.jsonl's time go on from the checkpoint's count,
    also when a finished run is resumed (which trains nothing more)."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "model: {name: mlp, hidden_sizes: [64]}\n"
        "data: {train: {name: synthetic, num_samples: 512, shape: [16], batch_size: 8}}\n"
        "optimizer: {name: sgd, lr: 0.05}\n"
        "trainer: {max_duration: 2ep, device: cpu}\n"
    )
    run_dir = tmp_path / "run"
    assert run_loom(capsys, "train", job, "--run-dir", run_dir)[0] == 0
    first = json.loads((run_dir / "summary.json").read_text())["seconds"]
    (checkpoint,) = (run_dir / "checkpoints").iterdir()
    counted = {entry["name"]: entry["state"] for entry in torch.load(checkpoint)["callbacks"]}
    assert 0 < counted["RunRecorder"]["seconds"] <= first

    assert run_loom(capsys, "train", job, "--resume", run_dir)[0] == 0  # already finished
    again = json.loads((run_dir / "summary.json").read_text())["seconds"]
    assert again >= counted["RunRecorder"]["seconds"]

    extended = run_loom(capsys, "train", job, "--resume", run_dir, "trainer.max_duration=3ep")
    assert extended[0] == 0, extended[2]
    records = (run_dir / "metrics.jsonl").read_text().splitlines()
    times = [json.loads(line)["time"] for line in records]
    assert len(times) == 3
    assert times == sorted(times)  # the third epoch's goes on from the second's
    assert json.loads((run_dir / "summary.json").read_text())["seconds"] > first


def test_a_run_resumes_as_the_job_it_started_as(tmp_path, capsys):
    """Started with overrides, it resumes from its config.yaml alone; only max_duration
    may change, and a job file or override that changes anything else is refused."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "model: {name: mlp, hidden_sizes: [16]}\n"
        "data: {train: {name: synthetic, num_samples: 64, shape: [8], batch_size: 16}}\n"
        "optimizer: {name: sgd, lr: 0.1}\n"
        "trainer: {max_duration: 5ep, device: cpu}\n"
    )
    run_dir = tmp_path / "run"
    started = run_loom(
        capsys, "train", job, "--run-dir", run_dir, "trainer.max_duration=1ep", "optimizer.lr=0.05"
    )
    assert started[0] == 0, started[2]

    extended = run_loom(capsys, "train", "--resume", run_dir, "trainer.max_duration=2ep")
    assert extended[0] == 0, extended[2]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["batches"] == 8  # 2 epochs of 4: the override's, not the file's 5
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optimizer"]["lr"] == 0.05

    status, _, err = run_loom(capsys, "train", "--resume", run_dir, "optimizer.lr=0.5")
    assert status == 2
    assert (
        f"--resume {run_dir}: the overrides change optimizer.lr (0.05 in the run, 0.5 now)" in err
    )
    status, _, err = run_loom(capsys, "train", job, "--resume", run_dir)
    assert status == 2
    assert f"{job} changes optimizer.lr (0.05 in the run, 0.1 now) of the job" in err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.train.batch_size=0", r"data\.train\.batch_size: 0 must be at least 1\."),
        (
            "model.num_classes=5",
            r"model\.num_classes: 5, but the training data has 10 classes",
        ),
        (
            "algorithms.0.n_classes=5",
            r"algorithms\.0\.n_classes: 5, but the model has 10 outputs",
        ),
        (
            "model.in_channels=3",
            r"model\.in_channels: 3, but the training data's samples have 1 channels",
        ),
        (
            "trainer.target_key=label",
            r"trainer\.target_key: batch key 'label' is not an attribute of the list batch",
        ),
    ],
)
def test_sizes_that_contradict_the_data_are_found_by_validate_and_before_training(
    override, message, capsys, tmp_path
):
    job = CONFIGS / "digits.yaml"
    for command in (["validate", job, override], ["train", job, override, "--run-dir", tmp_path]):
        status, out, err = run_loom(capsys, *command)
        assert status == 2, (command, out)
        assert re.search(message, err), err
        assert "Traceback" not in err
        assert "run directory" not in out
    real = loom_command("train", job, override, "--run-dir", tmp_path / "run")  # the command
    assert real.returncode == 2
    assert re.search(message, real.stderr), real.stderr
    assert "Traceback" not in real.stderr
    assert not (tmp_path / "run").exists()


def test_review_mends_of_resume_and_validate(tmp_path, capsys):
    """A length-shaped schedule keeps its run's length on resume; validate takes a
    checkpoint callback without a folder; of two checkpoint callbacks the latest resumes."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "model: {name: mlp, hidden_sizes: [8]}\n"
        "data: {train: {name: synthetic, num_samples: 64, shape: [4], batch_size: 16}}\n"
        "optimizer: {name: sgd, lr: 0.1}\n"
        "scheduler: {name: cosine}\n"
        "callbacks: [{name: checkpoint, interval: 1ep}, "
        "{name: checkpoint, folder: sparse, interval: 2ep, keep_last: null}]\n"
        "trainer: {max_duration: 3ep, device: cpu}\n"
    )
    assert run_loom(capsys, "validate", job)[0] == 0
    run_dir = tmp_path / "run"
    assert run_loom(capsys, "train", job, "--run-dir", run_dir)[0] == 0
    status, _, err = run_loom(capsys, "train", "--resume", run_dir, "trainer.max_duration=4ep")
    assert status == 2
    assert "trainer.max_duration (3ep in the run, 4ep now) cannot change: the cosine" in err
    # Both checkpoint callbacks' folders are searched for the latest checkpoint.
    from loom.runs import RunDirectory

    saved = resolve_job(read_job_file(run_dir / "config.yaml"))
    folders = RunDirectory(run_dir).checkpoint_folders(saved)
    assert folders == [run_dir / "checkpoints", run_dir / "sparse"]
    status, _, err = run_loom(capsys, "train", "--resume", run_dir)
    assert status == 0, err


LONG_SMALL_JOB = (
    "model: {name: mlp, hidden_sizes: [8]}\n"
    "data: {train: {name: synthetic, num_samples: 256, shape: [4], batch_size: 16}}\n"
    "optimizer: {name: sgd, lr: 0.1}\n"
    "callbacks: [{name: checkpoint, interval: 3ba, keep_last: 1}]\n"
    "trainer: {max_duration: 2000ep, device: cpu}\n"
)


def interrupted_run(job, run_dir, signal_number):
    """``loom train`` stopped by ``signal_number`` once its first checkpoint is written."""
    with subprocess.Popen(
        [sys.executable, "-m", "loom", "train", str(job), "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            deadline = time.monotonic() + 120
            while not list((run_dir / "checkpoints").glob("*.pt")):
                assert time.monotonic() < deadline, "no checkpoint within two minutes"
                assert process.poll() is None, process.communicate()
                time.sleep(0.01)
            time.sleep(0.2)  # a few intervals on: the first checkpoint has been pruned
            process.send_signal(signal_number)
            _, err = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 128 + signal_number, err
    return err


@pytest.mark.slow
def test_summaries_name_checkpoints_that_exist_and_compare_skips_unfinished_runs(tmp_path, capsys):
    """After SIGINT, SIGTERM and a normal end the summary's checkpoint exists (the
    interval's keep_last prunes as it goes); compare takes the finished run only and
    names the others, with their states and how to resume. Only the interrupted runs
    need a process of their own (a signal to send)."""
    job = tmp_path / "job.yaml"
    job.write_text(LONG_SMALL_JOB)
    runs = tmp_path / "runs"
    for name, signal_number in [("int", signal.SIGINT), ("term", signal.SIGTERM)]:
        interrupted_run(job, runs / name, signal_number)
    finished = run_loom(
        capsys, "train", job, "--run-dir", runs / "done", "trainer.max_duration=1ep"
    )
    assert finished[0] == 0, finished[2]
    diverged = run_loom(capsys, "train", job, "--run-dir", runs / "diverged", "optimizer.lr=1e30")
    assert diverged[0] == 1, diverged[2]
    for name in ("int", "term", "done"):
        summary = json.loads((runs / name / "summary.json").read_text())
        assert Path(summary["checkpoint"]).is_file(), (name, summary["checkpoint"])
        (kept,) = (runs / name / "checkpoints").iterdir()
        assert summary["checkpoint"] == str(kept)
        assert summary["batches"] == torch.load(kept, weights_only=True)["timestamp"]["batch"]

    status, compared, err = run_loom(capsys, "compare", runs)
    assert status == 0, err
    table = compared[: compared.index("curves side by side")].splitlines()
    assert [row.split()[0] for row in table[1:]] == ["done"]  # the one finished run alone
    skipped = compared[compared.index("skipped 3 runs that have not finished:") :]
    assert f"{runs / 'diverged'}: failed: NonFiniteLossError: the training loss" in skipped
    for name, signal_name in [("int", "SIGINT"), ("term", "SIGTERM")]:
        assert re.search(
            rf"{runs / name}: interrupted: training stopped on {signal_name} after .*"
            rf"; resume with: loom train --resume {runs / name}\n",
            skipped,
        )
    status, _, err = run_loom(capsys, "compare", runs / "int", runs / "diverged")
    assert status == 2
    assert "no finished run to compare; skipped:\n  " in err


def test_a_job_file_that_cannot_be_read_is_named_once(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("seed: 0\nseed: 1\n")
    status, _, err = run_loom(capsys, "validate", job)
    assert status == 2
    assert err == (
        f"loom validate: error: {job}: key 'seed' is given twice in one mapping, at line 1 "
        "and at line 2; YAML would keep the second silently. Give it once.\n"
    )


def test_validate_checks_the_trainer_section_and_names_the_device_of_another_machine(capsys):
    job = CONFIGS / "digits.yaml"
    status, _, err = run_loom(capsys, "validate", job, "trainer.grad_accum=0")
    assert status == 2
    assert "trainer: grad_accum=0 must be an int >= 1" in err
    status, _, err = run_loom(capsys, "validate", job, "trainer.device=gpu")
    assert status == 2
    assert "trainer.device: device='gpu' is not a device; expected 'auto'" in err
    # A GPU job is valid here too, if this machine has none: its device is the runner's.
    status, _, err = run_loom(
        capsys, "validate", job, "trainer.device=cuda", "trainer.precision=fp16"
    )
    assert status == 0, err


def test_validate_shows_what_the_algorithms_change_and_refuses_what_cannot_compose(capsys):
    job = CONFIGS / "digits.yaml"
    composed = "algorithms=[{name: online_label_smoothing}, {name: mixup}]"
    status, out, err = run_loom(capsys, "validate", job, composed)
    assert status == 0, err
    assert out.splitlines()[1:] == [
        "What the algorithms read and change, in the order it happens:",
        "  before_forward  MixUp changes inputs (mixes)",
        "  after_forward   MixUp restores inputs",
        "  before_loss     OnlineLabelSmoothing reads targets (as the batch holds them, "
        "unchanged), changes targets (smooths); MixUp changes targets (mixes)",
        "  after_loss      MixUp restores targets; OnlineLabelSmoothing restores targets, "
        "reads targets (as the batch holds them, unchanged)",
        "  targets at before_loss: OnlineLabelSmoothing smooths, then MixUp mixes; "
        "order-sensitive: OnlineLabelSmoothing reads the targets as the batch holds them, "
        "so it must stay listed before MixUp.",
    ]
    shown = (CONFIGS.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "\n".join(out.splitlines()[1:]) in shown  # the page shows what it prints
    both = "algorithms=[{name: mixup}, {name: cutmix}]"
    status, _, err = run_loom(capsys, "validate", job, both)
    assert status == 2
    assert err.strip().endswith(
        f"{job} (with {both}): algorithms: MixUp and CutMix both mix the inputs (at "
        "before_forward): the inputs would be mixed twice. To train with both MixUp and "
        "CutMix, MixUpOrCutMix picks one of them per batch."
    )


def test_a_run_still_running_is_not_resumed_beside_itself(tmp_path, capsys):
    from types import SimpleNamespace

    from loom.runs import RunDirectory
    from loom.runs.status import recording_status

    job = tmp_path / "job.yaml"
    job.write_text(LONG_SMALL_JOB.replace("2000ep", "1ep"))
    run_dir = tmp_path / "run"
    assert run_loom(capsys, "train", job, "--run-dir", run_dir)[0] == 0
    this_process = SimpleNamespace(is_main_process=True, stop_reason=None)
    with recording_status(RunDirectory(run_dir), this_process):  # as if it still trained
        status, _, err = run_loom(capsys, "train", "--resume", run_dir)
    assert status == 2
    assert f"--resume {run_dir}: the run is still running (process {os.getpid()} on" in err
    assert run_loom(capsys, "train", "--resume", run_dir)[0] == 0  # finished: resumes


def test_validate_orders_a_jobs_trackers_as_train_does(capsys):
    """Trackers run last in a job: listed before the callback whose metrics they log,
    they are valid, not refused as a reader before its writer."""
    job = CONFIGS / "digits.yaml"
    tracked = "callbacks=[{name: csv}, {name: learning_rates}]"
    status, out, err = run_loom(capsys, "validate", job, tracked)
    assert status == 0, err
    assert "valid job" in out
    watched = "callbacks=[{name: early_stopping, monitor: train/lr}, {name: learning_rates}]"
    status, _, err = run_loom(capsys, "validate", job, watched)
    assert status == 2
    assert "reads state.metrics, which" in err


def test_a_run_dir_that_is_a_file_and_a_damaged_config_to_resume_are_one_line(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(
        "model: {name: mlp}\n"
        "data: {train: {name: synthetic, batch_size: 16}}\n"
        "optimizer: {name: sgd, lr: 0.1}\n"
        "trainer: {max_duration: 1ep, device: cpu}\n"
    )
    a_file = tmp_path / "taken"
    a_file.write_text("")
    status, _, err = run_loom(capsys, "train", job, "--run-dir", a_file)
    assert (status, err) == (
        2,
        f"loom train: error: --run-dir {a_file}: it is a file; give a directory.\n",
    )
    run = tmp_path / "run"
    assert run_loom(capsys, "train", job, "--run-dir", run)[0] == 0
    (run / "config.yaml").write_bytes(b"model: {name: mlp\n\xff")
    status, _, err = run_loom(capsys, "train", "--resume", run)
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"loom train: error: --resume {run}: {run / 'config.yaml'} is not UTF-8")
    assert err.rstrip().endswith("(loom train JOB --resume RUN_DIR).")


@pytest.mark.parametrize("when", ["before training", "in training"])
def test_a_signal_that_stops_at_once_is_one_line_with_what_resumes(
    tmp_path, capsys, monkeypatch, when
):
    """A third signal (or Ctrl-C before training) is a KeyboardInterrupt: one line, the
    signal's status, and the resume command only where a run started (before, a Ctrl-C
    before the run directory was chosen raised UnboundLocalError)."""
    import loom.runs.train
    from loom.trainer.signals import StoppedAtOnce

    def interrupted(job, run_dir, *, resume=False, checkpoint=None, on_start=None):
        if when == "in training":
            on_start()
        raise StoppedAtOnce("SIGTERM")

    monkeypatch.setattr(loom.runs.train, "train_job", interrupted)
    monkeypatch.chdir(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(
        "model: {name: mlp}\n"
        "data: {train: {name: synthetic, batch_size: 16}}\n"
        "optimizer: {name: sgd, lr: 0.1}\n"
        "trainer: {max_duration: 1ep, device: cpu}\n"
    )
    status, _, err = run_loom(capsys, "train", job)
    assert status == 128 + signal.SIGTERM
    if when == "in training":
        (run_dir,) = (tmp_path / "runs").iterdir()
        assert err == (
            "loom train: stopped at once by SIGTERM, the third signal; the latest checkpoint "
            f"written stands.\nresume with: loom train --resume runs/{run_dir.name}\n"
        )
    else:
        stopped = "loom train: stopped at once by SIGTERM, the third signal"
        assert err == f"{stopped}; training had not started.\n"
        assert list((tmp_path / "runs").iterdir()) == []


def test_a_torchrun_worker_that_could_not_rejoin_after_a_restart_is_one_line(
    capsys, monkeypatch, tmp_path
):
    """Before the process group starts, nothing written: the fix, in one line, exit 2."""
    environment = {
        "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "RANK": "0", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1", "TORCHELASTIC_MAX_RESTARTS": "1",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }  # fmt: skip
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    run_dir = tmp_path / "run"
    status, _, err = run_loom(
        capsys, "train", CONFIGS / "digits.yaml", "--run-dir", run_dir, "--autoresume"
    )
    assert status == 2
    (line,) = err.splitlines()
    assert line.startswith("loom train: error: torchrun --max-restarts 1 across nodes")
    assert "Set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in line
    assert not run_dir.exists()
