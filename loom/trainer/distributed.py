"""Training as one of several processes started by ``torchrun``.

The Trainer calls :func:`join_torchrun_job` when the environment says it runs
under ``torchrun`` (``WORLD_SIZE`` > 1): the process group starts (NCCL on CUDA,
gloo on the CPU), the model is wrapped in DistributedDataParallel, and the data
loaders are sharded, the training data with ``DistributedSampler`` (padded, so
every rank takes the same number of steps) and the evaluation data without
padding, so no sample is counted twice.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

__all__ = [
    "EvalShardSampler",
    "broadcast_buffers",
    "destroy_process_group",
    "is_main_process",
    "join_torchrun_job",
    "shard_eval_loader",
    "shard_train_loader",
    "torchrun_world_size",
    "wrap_model",
]

_TIMEOUT = timedelta(minutes=10)  # a rank stuck this long in a collective ends the job


def torchrun_world_size() -> int:
    """How many processes ``torchrun`` started (1 outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or the only process, before or after the group starts:
    the one process that prints and writes files."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def join_torchrun_job(device: torch.device) -> tuple[int, int]:
    """Starts this process's part of the process group, once; returns (rank, world size).

    Raises:
        RuntimeError: The environment names a world of several processes but not
            this one's rank (started by something other than ``torchrun``).
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start "
            "distributed runs with torchrun, e.g. torchrun --nproc_per_node 2 -m loom train JOB."
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)  # this rank's GPU, before NCCL touches any
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=_TIMEOUT)
    return dist.get_rank(), dist.get_world_size()


def destroy_process_group() -> None:
    """Leaves the process group, if this process is in one (at the end of a job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel, on this rank's device."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def broadcast_buffers(model: nn.Module) -> None:
    """Gives every rank rank 0's buffers (batch-norm statistics).

    DistributedDataParallel broadcasts them at the start of each training forward,
    so after the last one each rank holds its own; an evaluation of "the model"
    needs them equal.
    """
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


class EvalShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: the ranks split the data with no sample
    repeated (DistributedSampler pads to equal shards, which would count some twice)."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Any:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def shard_train_loader(loader: Any, rank: int, world_size: int, seed: int) -> Any:
    """``loader`` taking this rank's share of the data each epoch.

    A loader with a shuffling or sequential sampler is rebuilt with a
    ``DistributedSampler`` (shuffled with ``seed`` and the epoch, so every epoch
    differs and a resumed run repeats it); one that already has a
    ``DistributedSampler`` is kept.

    Raises:
        TypeError: ``loader`` is not a DataLoader, or samples in its own way.
    """
    sampler = _sampler_of(loader, "train_dataloader")
    if isinstance(sampler, DistributedSampler):
        return loader
    shuffle = isinstance(sampler, RandomSampler)
    sharded = DistributedSampler(
        loader.dataset,
        num_replicas=world_size,
        rank=rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=loader.drop_last,
    )
    return _rebuild(loader, sharded)


def shard_eval_loader(loader: Any, rank: int, world_size: int) -> Any:
    """``loader`` reading this rank's part of the evaluation data, nothing repeated."""
    sampler = _sampler_of(loader, "eval_dataloader")
    if isinstance(sampler, DistributedSampler | EvalShardSampler):
        return loader
    return _rebuild(loader, EvalShardSampler(len(loader.dataset), rank, world_size))


def _sampler_of(loader: Any, argument: str) -> Sampler:
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"{argument} is a {type(loader).__name__}; under torchrun each process must read "
            "its own share of the data: pass a torch DataLoader (loom shards it) or give it "
            "a DistributedSampler yourself."
        )
    if loader.batch_size is None or not isinstance(
        loader.sampler, RandomSampler | SequentialSampler | DistributedSampler | EvalShardSampler
    ):
        raise TypeError(
            f"{argument} samples with {type(loader.sampler).__name__}; under torchrun loom "
            "shards only loaders with shuffle=True/False: give yours a DistributedSampler."
        )
    return loader.sampler


def _rebuild(loader: DataLoader, sampler: Sampler) -> DataLoader:
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
        persistent_workers=loader.persistent_workers,
    )
