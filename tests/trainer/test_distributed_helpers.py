import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, WeightedRandomSampler

from loom import Trainer
from loom.functional import all_reduce_max, all_reduce_sum, is_distributed
from loom.trainer.distributed import (
    EvalShardSampler,
    join_torchrun_job,
    shard_eval_loader,
    shard_train_loader,
)

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
    from loom.trainer.distributed import is_main_process

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
