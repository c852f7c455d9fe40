"""Running ``loom train`` as a subprocess with faults injected (:mod:`tests.faults.inject`),
resuming it (in this process), and choosing the point of a run to fail at from a
reference run's trace."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.cli import main
from tests.conftest import TWO_PROCESS_TORCHRUN

REPO = Path(__file__).resolve().parents[2]

JOB = """\
# A tiny job with every kind of state a checkpoint must carry: shuffled data, dropout,
# momentum, a step schedule, online label smoothing's statistics, MixUp's draws, an EMA,
# two checkpoint callbacks (every 3 batches; every epoch with the best evaluation).
seed: 0
model: {name: mlp, hidden_sizes: [16], dropout: 0.1}
data:
  train: {name: synthetic, num_samples: 64, num_classes: 4, shape: [8], batch_size: 8}
  eval: {name: synthetic, split: test, num_samples: 32, num_classes: 4, shape: [8], batch_size: 8}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
scheduler: {name: step, step_size: 1ep, gamma: 0.5}
algorithms:
  - {name: online_label_smoothing, alpha: 0.5}
  - {name: mixup}
  - {name: ema, decay: 0.9}
callbacks:
  - {name: checkpoint, interval: 3ba, keep_last: 2}
  - {name: checkpoint, folder: epochs, interval: 1ep, keep_last: 1, best_metric: eval/accuracy}
trainer: {max_duration: 3ep, device: cpu, cpu_threads: 1}
"""
"""8 batches an epoch (4 a rank under a 2-process torchrun), 3 epochs, an evaluation of
4 batches (twice: the model and its EMA) after each."""

BATCHES_PER_EPOCH = 8
BATCHES_PER_RANK_EPOCH = BATCHES_PER_EPOCH // 2  # under a 2-process torchrun

INJECT = "tests.faults.inject"
TIMEOUT = 120  # seconds, for one process; a run takes a few


_CHECKPOINT_NAME = re.compile(r"(best-)?epoch\d+-batch\d+\.pt")
_INTERVAL_NAME = re.compile(r"epoch\d+-batch\d+\.pt")


def loom_command(*arguments: Any, torchrun: bool = False, restarts: int = 0) -> list[str]:
    """``python -m loom ARGUMENTS`` (under a 2-process torchrun if asked, which restarts
    the job up to ``restarts`` times when a process fails)."""
    if torchrun:
        start = [*TWO_PROCESS_TORCHRUN, "--max-restarts", str(restarts), "-m", "loom"]
    else:
        start = [sys.executable, "-m", "loom"]
    return [*start, *map(str, arguments)]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a rendezvous endpoint)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fault_environment(
    faults: Sequence[dict[str, Any]] = (),
    *,
    root: Path | None = None,
    trace: Path | None = None,
    barrier: str | None = None,
) -> dict[str, str]:
    """The environment of a ``loom train`` process, with its faults (see
    :mod:`tests.faults.inject`, which reads them)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_FAULT")}
    environment.pop("PYTHONUNBUFFERED", None)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), environment.get("PYTHONPATH")])
    )
    environment["OMP_NUM_THREADS"] = "1"
    # The variables tests.faults.inject reads (not imported here: it patches on import).
    if faults:
        environment["LOOM_FAULT"] = json.dumps(list(faults))
    if root is not None:
        environment["LOOM_FAULT_ROOT"] = str(root)
    if trace is not None:
        environment["LOOM_FAULT_TRACE"] = str(trace)
    if barrier is not None:
        environment["LOOM_FAULT_BARRIER"] = barrier
    return environment


def start(
    command: Sequence[str], environment: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.Popen:
    """A process in a session of its own, so that :func:`finish` ends all it started."""
    return subprocess.Popen(
        list(command),
        cwd=cwd,
        env=environment if environment is not None else fault_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Waits for ``process``; past ``timeout`` it fails the test. Whatever is left of its
    process group (torchrun's workers) is killed either way."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        out, err = process.communicate()
        raise AssertionError(
            f"{' '.join(process.args)} still ran after {timeout}s; killed.\n{err[-4000:]}"
        ) from None
    finally:
        kill_group(process)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to whatever is left of ``process``'s session."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def run(
    command: Sequence[str],
    environment: dict[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess:
    return finish(start(command, environment, cwd), timeout)


def train(
    job: Path, run_dir: Path, faults: Sequence[dict[str, Any]] = (), *, torchrun: bool = False
) -> subprocess.CompletedProcess:
    """``loom train JOB --run-dir RUN_DIR`` with ``faults`` injected."""
    command = loom_command(
        "train", job, "--run-dir", run_dir, "--import", INJECT, torchrun=torchrun
    )
    timeout = 3 * TIMEOUT if torchrun else TIMEOUT
    return run(command, fault_environment(faults, root=run_dir), timeout=timeout)


def resume(run_dir: Path, *, torchrun: bool = False) -> subprocess.CompletedProcess:
    """``loom train --resume RUN_DIR``, with no fault: in this process (no fault needs a
    process of its own, and each start costs seconds of the suite's budget), or under a
    2-process torchrun."""
    if torchrun:
        command = loom_command("train", "--resume", run_dir, torchrun=True)
        return run(command, timeout=3 * TIMEOUT)
    arguments = ["train", "--resume", str(run_dir)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(arguments)
    return subprocess.CompletedProcess(arguments, status, out.getvalue(), err.getvalue())


def tail(result: subprocess.CompletedProcess, characters: int = 3000) -> str:
    """The exit status and the end of standard error; under torchrun, loom's own lines
    first (the agent's traceback would hide them)."""
    ours = [
        line
        for line in result.stderr.splitlines()
        if line.startswith(("loom", "fault injected", "[rank"))
    ]
    shown = "\n".join(ours[-20:]) + "\n...\n" if "torch.distributed.run" in result.args else ""
    return f"exit status {result.returncode}; stderr ends:\n{shown}{result.stderr[-characters:]}"


# Choosing where to fail


@dataclass(frozen=True)
class Event:
    """One event of a traced run: the ``n``-th of its ``kind``, on ``path``."""

    kind: str
    n: int
    path: str | None

    @property
    def saves_a_checkpoint(self) -> bool:
        return self.kind == "checkpoint_save" or (
            self.kind == "replace"
            and self.path is not None
            and _CHECKPOINT_NAME.fullmatch(Path(self.path).name) is not None
        )

    @property
    def completes_an_interval_checkpoint(self) -> bool:
        return (
            self.kind == "replace"
            and self.path is not None
            and _INTERVAL_NAME.fullmatch(Path(self.path).name) is not None
        )

    def fault(self, moment: str, action: str = "kill", **more: Any) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "moment": moment, "action": action, **more}


MOMENTS = {
    "train_forward": ("before",),
    "eval_forward": ("before",),
    "checkpoint_save": ("before", "during", "after"),
    "save": ("before", "during", "after"),
    "replace": ("before", "after"),
    "metrics_write": ("before", "during", "after"),
    "savefig": ("before", "after"),
}


def read_trace(path: Path) -> list[Event]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Event(**json.loads(line)) for line in lines]


def resumable(trace: list[Event]) -> list[Event]:
    """The events after the first interval checkpoint is whole: a run killed there has
    one to resume from."""
    first = next(i for i, e in enumerate(trace) if e.completes_an_interval_checkpoint)
    return trace[first + 1 :]


def final_phase(trace: list[Event]) -> list[Event]:
    """The events after training and logging are over: the final checkpoints, summary,
    weights, plots, artifacts and status."""
    last = max(i for i, e in enumerate(trace) if e.kind in ("train_forward", "eval_forward"))
    last = max([last, *(i for i, e in enumerate(trace) if e.kind == "metrics_write")])
    return trace[last + 1 :]


def fault_points(trace: list[Event], phase: str) -> list[dict[str, Any]]:
    """Every point of ``phase`` at which a SIGKILL leaves a run that can be resumed."""
    later = resumable(trace)
    if phase == "mid-epoch":
        return [e.fault("before") for e in later if e.kind == "train_forward"]
    if phase == "evaluation":
        return [e.fault("before") for e in later if e.kind == "eval_forward"]
    if phase == "checkpoint write":
        return [
            e.fault(moment)
            for e in later
            if e.kind == "checkpoint_save"
            for moment in ("during", "after")
        ] + [e.fault("before") for e in later if e.saves_a_checkpoint and e.kind == "replace"]
    if phase == "between save and log":  # either order: a checkpoint and a record together
        return [
            first.fault("after")
            for first, second in itertools.pairwise(later)
            if "metrics_write" in (first.kind, second.kind)
            and (first.saves_a_checkpoint or second.saves_a_checkpoint)
        ]
    if phase == "metrics append":
        return [e.fault("during") for e in later if e.kind == "metrics_write"]
    if phase == "final files":
        return [e.fault(moment) for e in final_phase(trace) for moment in MOMENTS[e.kind]]
    raise ValueError(f"unknown phase {phase!r}")


def choose(points: list[dict[str, Any]], seed: int, phase: str) -> dict[str, Any]:
    assert points, f"no point of the phase {phase!r} in the reference run's trace"
    return random.Random(f"{seed}-{phase}").choice(points)
