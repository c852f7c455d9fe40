"""Where a run executes: devices, torchrun's environment, sharding and collectives, and
two CPU processes under torchrun on gloo (sharding, reduced metrics, OLS, resume, faults)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, WeightedRandomSampler

from loom import Trainer
from loom.algorithms import OnlineLabelSmoothing
from loom.callbacks import latest_checkpoint
from loom.functional import all_reduce_max, all_reduce_sum, is_distributed
from loom.trainer.runtime import (
    EvalShardSampler,
    is_main_process,
    join_torchrun_job,
    shard_eval_loader,
    shard_train_loader,
)
from tests.conftest import TWO_PROCESS_TORCHRUN

sys.path.insert(0, str(Path(__file__).parent))
import distributed_job

SCRIPT = Path(__file__).with_name("distributed_job.py")

DATA = TensorDataset(torch.arange(10).float(), torch.arange(10))


def test_eval_shards_cover_every_sample_once():
    shards = [list(EvalShardSampler(10, rank, 3)) for rank in range(3)]
    assert sorted(index for shard in shards for index in shard) == list(range(10))
    assert [len(shard) for shard in shards] == [4, 3, 3]


def test_loaders_are_rebuilt_with_the_ranks_share():
    train = shard_train_loader(
        DataLoader(DATA, batch_size=2, shuffle=True, drop_last=True), rank=1, world_size=2, seed=7
    )
    assert isinstance(train.sampler, DistributedSampler)
    assert (train.sampler.shuffle, train.sampler.seed, train.sampler.rank) == (True, 7, 1)
    assert (train.batch_size, train.drop_last) == (2, True)
    evaluation = shard_eval_loader(DataLoader(DATA, batch_size=4), rank=1, world_size=2)
    assert [batch[1].tolist() for batch in evaluation] == [[1, 3, 5, 7], [9]]
    mine = DataLoader(DATA, sampler=DistributedSampler(DATA, num_replicas=2, rank=0))
    assert shard_train_loader(mine, rank=0, world_size=2, seed=0) is mine


def test_loaders_loom_cannot_shard_are_named():
    with pytest.raises(
        TypeError,
        match=r"train_dataloader is a list; under torchrun each "
        r"process must read its own share",
    ):
        shard_train_loader([(1, 2)], rank=0, world_size=2, seed=0)
    weighted = DataLoader(DATA, sampler=WeightedRandomSampler([1.0] * 10, 10))
    with pytest.raises(TypeError, match=r"eval_dataloader samples with WeightedRandomSampler"):
        shard_eval_loader(weighted, rank=0, world_size=2)


def test_collectives_are_the_identity_in_one_process():
    assert not is_distributed()
    values = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(values) is values
    assert all_reduce_max(values).tolist() == [1.0, 2.0]


def test_a_world_without_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(
        RuntimeError,
        match=r"WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT "
        r"not set: start distributed runs with torchrun",
    ):
        join_torchrun_job(torch.device("cpu"))
    model = torch.nn.Linear(1, 2)
    with pytest.raises(RuntimeError, match=r"start distributed runs with torchrun"):
        Trainer(
            model,
            DataLoader(DATA, batch_size=2),
            max_duration="1ep",
            optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            device="cpu",
        )


def test_the_main_process_is_rank_0_of_the_environment(monkeypatch):

    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()


@pytest.mark.gpu
def test_cuda_means_this_ranks_gpu_under_torchrun(monkeypatch):
    from loom.trainer import resolve_device

    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count() - 1))
    expected = torch.device("cuda", torch.cuda.device_count() - 1)
    assert resolve_device("cuda") == resolve_device("auto") == expected
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


# Two processes under torchrun


def torchrun(*arguments, timeout=180):
    command = [*TWO_PROCESS_TORCHRUN, str(SCRIPT), *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_ranks")
    result = torchrun(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.slow
def test_two_ranks_train_one_model_on_halves_of_the_data(two_ranks):
    _, (rank0, rank1) = two_ranks
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["batches"] == 3 * 5  # 70 samples, 35 a rank, batches of 8: 5 steps an epoch
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), key


@pytest.mark.slow
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


@pytest.mark.slow
def test_online_label_smoothing_matrix_is_the_same_on_every_rank(two_ranks):
    _, (rank0, rank1) = two_ranks
    assert torch.equal(rank0["matrix"], rank1["matrix"])
    assert not torch.equal(rank0["matrix"], OnlineLabelSmoothing(n_classes=3).matrix)


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_rank_that_raises_ends_the_job_with_its_error(tmp_path):
    started = time.monotonic()
    result = torchrun(tmp_path, 4, timeout=120)
    assert result.returncode != 0
    assert "rank 1 fails on purpose at batch 4" in result.stderr
    assert "raised by callback FailAt at event 'batch_end'" in result.stderr
    assert time.monotonic() - started < 120
    assert not (tmp_path / "rank0.pt").exists()
