"""FSDP2 under torchrun (gloo, on the CPU): it trains what DDP trains, resumes exactly from
its sharded checkpoints, and those checkpoints load with another number of ranks.

Each test runs ``fsdp_job.py`` in its phases (see its docstring) and compares what
they saved. The phases share one module-scoped run of ``fsdp``, which writes the
checkpoints the others load.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loom.trainer import load_checkpoint, load_model_weights
from tests.conftest import TWO_PROCESS_TORCHRUN
from tests.trainer import fsdp_job

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("fsdp_job.py")
THREE_PROCESS_TORCHRUN = [*TWO_PROCESS_TORCHRUN[:-1], "3"]


def run(start, out, phase):
    command = [*start, str(SCRIPT), str(out), phase]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]


def saved(out, name):
    return torch.load(out / f"{name}.pt", weights_only=False)


def assert_same(first, second):
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


def assert_same_optimizer(first, second):
    assert first["state"].keys() == second["state"].keys()
    for name, entries in first["state"].items():
        assert_same(entries, second["state"][name])
    assert first["param_groups"] == second["param_groups"]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    """The 2-rank FSDP run (checkpoints every epoch in ``checkpoints-fsdp``)."""
    out = tmp_path_factory.mktemp("fsdp")
    run(TWO_PROCESS_TORCHRUN, out, "fsdp")
    return out


def test_fsdp_trains_what_ddp_trains(fsdp_run):
    """Same global batches, OLS, MixUp, clipping, a fused AdamW step, an uneven
    evaluation (51 and 50 samples): the reductions differ, and on 2 ranks the float
    sums do not (a + b is b + a), so the runs are equal bitwise."""
    run(TWO_PROCESS_TORCHRUN, fsdp_run, "ddp")
    fsdp, ddp = saved(fsdp_run, "fsdp2"), saved(fsdp_run, "ddp2")
    assert_same(fsdp["weights"], ddp["weights"])
    assert all(value.device.type == "cpu" for value in fsdp["weights"].values())
    assert fsdp["metrics"] == ddp["metrics"]
    assert torch.equal(fsdp["matrix"], ddp["matrix"])
    assert torch.equal(fsdp["predictions"], ddp["predictions"])
    assert fsdp["predictions"].shape == (101, 3)  # every evaluation sample once, in order


def test_a_resumed_fsdp_run_ends_as_the_uninterrupted_one(fsdp_run):
    """Compiled, too: the resumed run compiles its sharded model (aot_eager)."""
    names = sorted(path.name for path in (fsdp_run / "checkpoints-fsdp").iterdir())
    assert names == ["epoch1-batch4", "epoch2-batch8", "epoch3-batch12"]
    folder = fsdp_run / "checkpoints-fsdp" / "epoch1-batch4"
    assert {"run.pt", ".metadata", "__0_0.distcp", "__1_0.distcp"} <= {
        path.name for path in folder.iterdir()
    }
    run(TWO_PROCESS_TORCHRUN, fsdp_run, "resume")
    fsdp, resumed = saved(fsdp_run, "fsdp2"), saved(fsdp_run, "resume2")
    assert_same(resumed["weights"], fsdp["weights"])
    assert resumed["metrics"] == fsdp["metrics"]
    assert torch.equal(resumed["matrix"], fsdp["matrix"])
    # The resumed run's own last checkpoint holds what the first run's did.
    first, again = (
        fsdp_run / f"checkpoints-{name}" / "epoch3-batch12" for name in ("fsdp", "resume")
    )
    assert sorted(path.name for path in again.iterdir()) == sorted(
        path.name for path in first.iterdir()
    )
    weights = []
    for folder in (first, again):
        model = fsdp_job.mlp()
        load_model_weights(model, folder)
        weights.append(model.state_dict())
    assert_same(weights[1], weights[0])
    run_parts = [load_checkpoint(folder) for folder in (first, again)]
    assert run_parts[1]["timestamp"] == run_parts[0]["timestamp"]
    assert torch.equal(
        run_parts[1]["algorithms"][0]["state"]["matrix"],
        run_parts[0]["algorithms"][0]["state"]["matrix"],
    )


@pytest.mark.parametrize("ranks", [1, 3])
def test_a_checkpoint_of_two_ranks_loads_with_another_number(fsdp_run, ranks):
    """Resharded: the weights and the optimizer's moments right after the load are the
    2-rank run's at that epoch, bitwise; then the run trains on to its end."""
    start = [sys.executable] if ranks == 1 else THREE_PROCESS_TORCHRUN
    run(start, fsdp_run, "reshard")
    at_epoch_one = saved(fsdp_run, "fsdp2")["epochs"][1]
    resharded = saved(fsdp_run, f"reshard{ranks}")
    assert_same(resharded["loaded"]["weights"], at_epoch_one["weights"])
    assert_same_optimizer(resharded["loaded"]["optimizer"], at_epoch_one["optimizer"])
    assert sorted(resharded["epochs"]) == [2, 3]
    assert all(value == value for value in resharded["metrics"].values())  # not NaN


def test_fsdp_by_named_blocks_trains_what_ddp_trains(fsdp_run):
    """A ResNet sharded block by block, its blocks given stochastic depth at init (the
    class a block is named by counts for its subclass), batch norm's buffers, and
    distillation from a teacher that stays whole on every rank."""
    if not (fsdp_run / "ddp-blocks2.pt").exists():  # the first test ran it, unless deselected
        run(TWO_PROCESS_TORCHRUN, fsdp_run, "ddp")
    ddp, fsdp = saved(fsdp_run, "ddp-blocks2"), saved(fsdp_run, "fsdp-blocks2")
    assert_same(fsdp["weights"], ddp["weights"])
    assert any("running_mean" in key for key in fsdp["weights"])
    assert fsdp["metrics"] == ddp["metrics"]
