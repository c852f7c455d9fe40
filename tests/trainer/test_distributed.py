"""torchrun with two CPU processes on gloo: sharding, reduced metrics, OLS, resume, faults."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from loom import Trainer
from loom.algorithms import OnlineLabelSmoothing
from loom.callbacks import latest_checkpoint
from tests.conftest import TWO_PROCESS_TORCHRUN

sys.path.insert(0, str(Path(__file__).parent))
import distributed_job

SCRIPT = Path(__file__).with_name("distributed_job.py")
pytestmark = pytest.mark.slow


def torchrun(*arguments, timeout=180):
    command = [*TWO_PROCESS_TORCHRUN, str(SCRIPT), *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_ranks")
    result = torchrun(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def test_two_ranks_train_one_model_on_halves_of_the_data(two_ranks):
    _, (rank0, rank1) = two_ranks
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["batches"] == 3 * 5  # 70 samples, 35 a rank, batches of 8: 5 steps an epoch
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), key


def test_eval_metrics_equal_one_process_evaluating_everything(two_ranks):
    _, (rank0, rank1) = two_ranks
    assert rank0["metrics"] == rank1["metrics"]
    net = distributed_job.model()
    net.load_state_dict(rank0["model"])
    _, eval_set = distributed_job.datasets()
    alone = Trainer(
        net,
        [],
        DataLoader(eval_set, batch_size=20),
        max_duration="1ep",
        optimizers=torch.optim.SGD(net.parameters(), lr=0.1),
        device="cpu",
    )
    expected = alone.eval()
    for key, value in expected.items():
        assert rank0["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_online_label_smoothing_matrix_is_the_same_on_every_rank(two_ranks):
    _, (rank0, rank1) = two_ranks
    assert torch.equal(rank0["matrix"], rank1["matrix"])
    assert not torch.equal(rank0["matrix"], OnlineLabelSmoothing(n_classes=3).matrix)


def test_a_two_rank_checkpoint_resumes_in_one_process(two_ranks):
    out, _ = two_ranks
    checkpoint = out / "checkpoints" / "epoch1-batch6.pt"
    assert latest_checkpoint(out / "checkpoints").name == "epoch2-batch15.pt"
    train_set, _ = distributed_job.datasets()
    net = distributed_job.model()
    resumed = Trainer(
        net,
        DataLoader(train_set, batch_size=8, shuffle=True),
        max_duration="3ep",
        optimizers=torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        algorithms=[OnlineLabelSmoothing(n_classes=3)],
        device="cpu",
        load_path=checkpoint,
    )
    assert resumed.state.timestamp.batch == 6
    resumed.fit()  # alone, the rest of the run takes 9 steps an epoch
    assert resumed.state.timestamp.epoch == 3


def test_a_rank_that_raises_ends_the_job_with_its_error(tmp_path):
    started = time.monotonic()
    result = torchrun(tmp_path, 4, timeout=120)
    assert result.returncode != 0
    assert "rank 1 fails on purpose at batch 4" in result.stderr
    assert "raised by callback FailAt at event 'batch_end'" in result.stderr
    assert time.monotonic() - started < 120
    assert not (tmp_path / "rank0.pt").exists()
