"""Where and how a run executes: device, seeds, CPU threads, precision, torchrun (signals
are :mod:`loom.trainer.signals`).

Under ``torchrun`` (``WORLD_SIZE`` > 1) the Trainer calls :func:`join_torchrun_job`:
the process group starts (NCCL on CUDA, gloo on the CPU), the model is wrapped in
DistributedDataParallel, and the data loaders are sharded, the training data with
``DistributedSampler`` (padded, so every rank takes the same number of steps) and
the evaluation data without padding, so no sample is counted twice.
"""

from __future__ import annotations

import gc
import os
import pickle
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
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
    "PRECISIONS",
    "EvalShardSampler",
    "TorchrunSetupError",
    "autocast_context",
    "available_cpus",
    "broadcast_buffers",
    "check_cpu_threads",
    "check_restarts_can_rejoin",
    "cpu_threads_for",
    "decided_by_rank_zero",
    "destroy_process_group",
    "distribute",
    "grad_scaler_for",
    "is_main_process",
    "join_torchrun_job",
    "parse_device",
    "repeated_samples",
    "resolve_device",
    "scaled_or_clipped_step",
    "seed_everything",
    "shard_eval_loader",
    "shard_train_loader",
    "takes_a_sampler",
    "torchrun_world_size",
    "use_deterministic_algorithms",
    "validate_precision",
    "wrap_model",
]

# Device and seeds


def resolve_device(device: str | torch.device) -> torch.device:
    """Turns ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a device into a device.

    ``"auto"`` is CUDA when available, else the CPU. Under torchrun, ``"auto"`` and
    ``"cuda"`` mean this process's GPU, ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: The name is not a device, or CUDA was asked for but is not available.
    """
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        resolved = torch.device("cuda")
    else:
        resolved = parse_device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for CUDA, which is not available here.")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return resolved


def parse_device(device: str | torch.device) -> torch.device:
    """The device a name means (``"cpu"``, ``"cuda:1"``), whether or not this machine
    has it; ``"auto"`` is :func:`resolve_device`'s to decide.

    Raises:
        ValueError: The name is not a device.
    """
    if isinstance(device, torch.device):
        return device
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r} is not a device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from None


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's (CPU and every CUDA device) generators.

    Call it before building the model so that its initial weights are repeatable.

    Examples:
        >>> import torch
        >>> seed_everything(0); a = torch.rand(2)
        >>> seed_everything(0); b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """
    if type(seed) is not int or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic_algorithms() -> None:
    """Makes torch pick deterministic kernels (slower on CUDA), for runs that must repeat bitwise.

    This is process-wide, as ``torch.use_deterministic_algorithms`` is.
    """
    # cuBLAS needs a fixed workspace to be deterministic; it must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


# CPU threads


def check_cpu_threads(cpu_threads: Any) -> None:
    """Refuses a ``cpu_threads`` that is not an int >= 1, ``"auto"`` or None."""
    if cpu_threads is None or cpu_threads == "auto":
        return
    if type(cpu_threads) is not int or cpu_threads < 1:
        raise ValueError(
            f"cpu_threads={cpu_threads!r} must be an int >= 1, 'auto' (half the CPUs this "
            "process may use, on a CPU device) or None (torch's setting, left as it is)."
        )


def cpu_threads_for(cpu_threads: int | str | None, device: torch.device) -> int | None:
    """The intra-op thread count a run on ``device`` asks torch for, or None to leave
    torch's own.

    ``"auto"`` is half the CPUs this process may use (its affinity mask, so
    ``taskset`` and a container's cpuset count; a CPU quota does not), at least one, on
    a CPU device; it leaves the count alone on a GPU, and wherever ``OMP_NUM_THREADS``
    is set (torchrun sets it to 1 when it starts several processes). Half, because
    torch's default of every core lets one busy neighbour stall every parallel
    operation: on a 2-core machine with one core busy, two threads train the digits job
    3x slower than one (see docs/benchmarks.md, "CPU threads"). The count changes the
    float results' last bits, so it is decided by the machine, not by its load.

    Examples:
        >>> cpu_threads_for(3, torch.device("cpu")), cpu_threads_for(None, torch.device("cpu"))
        (3, None)
    """
    if cpu_threads != "auto":
        return cpu_threads  # type: ignore[return-value]
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, available_cpus() // 2)


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS keeps one."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Precision

PRECISIONS = ("fp32", "bf16", "fp16")


def validate_precision(precision: str, device: torch.device) -> str:
    """Checks that ``precision`` is known and runs on ``device``.

    Raises:
        ValueError: An unknown precision, or fp16 anywhere but CUDA.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA device, but the device is {device}; "
            "use precision='bf16' for mixed precision on the CPU."
        )
    return precision


def autocast_context(precision: str, device: torch.device) -> torch.autocast | None:
    """A reusable context that runs the forward and loss at ``precision``, or None for fp32.

    bf16 and fp16 get ``torch.autocast`` for the device type; the same object is
    entered for every batch.
    """
    if precision == "fp32":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler_for(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (whose small gradients underflow without one), else None."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def scaled_or_clipped_step(
    optimizers: list[torch.optim.Optimizer],
    scaler: torch.amp.GradScaler | None,
    model: nn.Module,
    grad_clip_norm: float | None,
) -> None:
    """The optimizer step with fp16 loss scaling or gradient clipping, or both (the plain
    step, with neither, is the loop's own)."""
    if grad_clip_norm is not None:
        if scaler is not None:
            for optimizer in optimizers:
                scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    for optimizer in optimizers:
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
    if scaler is not None:
        scaler.update()


# torchrun


class TorchrunSetupError(RuntimeError):
    """The environment a process was started in cannot start its part of a torchrun job
    (a world without this process's rank; restarts that could not rejoin); the message
    says what to change."""


_TIMEOUT = timedelta(minutes=10)  # a rank stuck this long in a collective ends the job


def torchrun_world_size() -> int:
    """How many processes ``torchrun`` started (1 outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def distribute(
    train_dataloader: Any, eval_dataloader: Any, device: torch.device, seed: int | None
) -> tuple[Any, Any, int, int]:
    """Under torchrun, joins the job and shards the loaders; alone, returns them as they
    are. Also returns (rank, world size). The model is wrapped in DistributedDataParallel
    later, by :func:`wrap_model`, once the plugins' ``init`` has changed it as they will."""
    if torchrun_world_size() == 1:
        return train_dataloader, eval_dataloader, 0, 1
    rank, world_size = join_torchrun_job(device)
    train_dataloader = shard_train_loader(train_dataloader, rank, world_size, seed or 0)
    if eval_dataloader is not None:
        eval_dataloader = shard_eval_loader(eval_dataloader, rank, world_size)
    return train_dataloader, eval_dataloader, rank, world_size


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or the only process, before or after the group starts:
    the one process that prints and writes files."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def decided_by_rank_zero(decide: Callable[[], Any], what: str) -> Any:
    """What ``decide()`` returns on rank 0, on every rank; or the exception it raised,
    raised on every rank. Alone, ``decide()``. For the decisions a run must take once for
    all its processes (its run directory, whether it resumes): a file system read or a
    clock at each rank could answer each its own way.

    Raises:
        RuntimeError: A rank other than 0, before the process group started (it has no
            way to hear rank 0's answer); the message names ``what`` was decided.

    Examples:
        >>> decided_by_rank_zero(lambda: "runs/digits-1", "the run directory")
        'runs/digits-1'
    """
    answer: list[Any] = [None]
    if is_main_process():
        try:
            answer[0] = ("value", decide())
        except Exception as error:  # every rank raises it
            answer[0] = ("error", error)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_rank() == 0:
            try:
                pickle.dumps(answer[0])
            except Exception as error:  # what cannot travel would leave the others waiting
                kind, value = answer[0]
                shown = f"{type(value).__name__}: {value}" if kind == "error" else repr(value)
                answer[0] = (
                    "error",
                    RuntimeError(f"{what}: {shown} (cannot be sent to every rank: {error})"),
                )
        dist.broadcast_object_list(answer, src=0)
    if answer[0] is None:
        raise RuntimeError(
            f"{what} is rank 0's to decide: on another rank the process group must be "
            "started first (join_torchrun_job)."
        )
    kind, value = answer[0]
    if kind == "error":
        raise value
    return value


def join_torchrun_job(device: torch.device) -> tuple[int, int]:
    """Starts this process's part of the process group, once; returns (rank, world size).

    Raises:
        TorchrunSetupError: The environment names a world of several processes but not
            this one's rank (started by something other than ``torchrun``), or asks
            for restarts it could not rejoin after (:func:`check_restarts_can_rejoin`).
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise TorchrunSetupError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start "
            "distributed runs with torchrun, e.g. torchrun --nproc_per_node 2 train.py."
        )
    check_restarts_can_rejoin()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # this rank's GPU, before NCCL touches any
    backend = "nccl" if device.type == "cuda" else "gloo"
    store, rank, world_size = next(dist.rendezvous("env://", timeout=_TIMEOUT))
    # torchrun's restarts may hand the new processes the store of the ones they replace,
    # whose addresses a process group would then try to connect to (gloo: "Connection
    # refused", or a hang): each attempt keeps its keys apart. Only where one agent
    # started every rank (one node): agents count their restarts each their own way, so
    # across nodes the counts may differ (check_restarts_can_rejoin refuses that case).
    if int(os.environ.get("LOCAL_WORLD_SIZE", "0")) == world_size:
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"loom/attempt{attempt}", store)
    dist.init_process_group(
        backend, store=store, rank=rank, world_size=world_size, timeout=_TIMEOUT
    )
    return dist.get_rank(), dist.get_world_size()


def check_restarts_can_rejoin() -> None:
    """Refuses, before the process group starts, a job of several torchrun agents (nodes)
    that may restart (``--max-restarts`` above 0) through the store torchrun shares with
    its workers: that store outlives a restart, with the replaced group's keys in it, and
    the agents count their restarts each its own way (one whose workers were healthy
    restarts them without counting), so the nodes' new workers have no count they agree
    on to keep their keys apart, and look for each other at the old group's addresses (a
    gloo or NCCL connection timeout). With ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` each
    restart gets a store of its own. One agent counts for all its workers, so one node's
    restarts are safe (:func:`join_torchrun_job` keeps each attempt's keys apart).

    Raises:
        TorchrunSetupError: Such a job; the message says what to set.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if local_world_size < world_size and restarts > 0 and shared:
        raise TorchrunSetupError(
            f"torchrun --max-restarts {restarts} across nodes ({world_size} processes, "
            f"{local_world_size} on this one) with the rendezvous store shared with the "
            "workers: after a restart the nodes' workers could not find each other (it "
            "keeps the replaced group's addresses, and the nodes count their restarts "
            "apart). Set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in torchrun's environment "
            "on every node (each restart then gets a store of its own), or --max-restarts 0."
        )


def destroy_process_group() -> None:
    """Leaves the process group, if this process is in one (at the end of a job).

    What still holds the group and is no longer used (a DistributedDataParallel's
    reducer in a finished Trainer's reference cycles) is collected first, so that the
    group ends here: left to the interpreter's exit, gloo's threads end after it has
    gone, and the process may abort ("terminate called without an active exception"):
    a finished job failed so in 5 of 28 two-process runs on a loaded 2-core machine,
    and in none of 28 with the collection.
    Call it once the Trainer is out of scope.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
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


def repeated_samples(loader: Any) -> dict[int, int]:
    """Where this rank's epoch repeats samples: ``{batch of the epoch: how many at its end}``.

    A ``DistributedSampler`` (without ``drop_last``) gives every rank as many samples by
    repeating the first few of its order at the end: with 121 samples on 2 ranks, one
    of them is seen twice each epoch. Statistics over an epoch's samples (the training
    loss, online label smoothing's matrix) leave these out, so that every sample counts
    once whatever the number of ranks. Empty for any other sampler.

    Examples:
        >>> import torch
        >>> from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
        >>> data = TensorDataset(torch.arange(121))
        >>> sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=False)
        >>> repeated_samples(DataLoader(data, batch_size=30, sampler=sampler))
        {2: 1}
    """
    sampler = getattr(loader, "sampler", None)
    batch_size = getattr(loader, "batch_size", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last or not batch_size:
        return {}
    # This rank's i-th sample is the (i * num_replicas + rank)-th of the padded order,
    # whose positions from len(dataset) on repeat earlier ones.
    first_repeat = max(0, -(-(len(sampler.dataset) - sampler.rank) // sampler.num_replicas))
    end = sampler.num_samples
    if loader.drop_last:  # the loader drops a last partial batch, and any repeat in it
        end -= end % batch_size
    repeats = {}
    for position in range(first_repeat, end):
        batch = position // batch_size
        repeats[batch] = repeats.get(batch, 0) + 1
    return repeats


def shard_eval_loader(
    loader: Any, rank: int, world_size: int, argument: str = "eval_dataloader"
) -> Any:
    """``loader`` reading this rank's part of the evaluation data, nothing repeated; a
    loader it cannot shard is refused naming ``argument``."""
    sampler = _sampler_of(loader, argument)
    if isinstance(sampler, DistributedSampler | EvalShardSampler):
        return loader
    return _rebuild(loader, EvalShardSampler(len(loader.dataset), rank, world_size))


def takes_a_sampler(loader: Any) -> bool:
    """Whether loom can give ``loader`` another sampler: a torch DataLoader (rebuilt with
    it), or a loader with a ``with_sampler(sampler)`` method that returns itself reading
    in that order (:class:`~loom.data.memory_loader.MemoryLoader`)."""
    return isinstance(loader, DataLoader) or callable(getattr(loader, "with_sampler", None))


def _sampler_of(loader: Any, argument: str) -> Sampler:
    if not takes_a_sampler(loader):
        raise TypeError(
            f"{argument} is a {type(loader).__name__}; under torchrun each process must read "
            "its own share of the data: pass a torch DataLoader or a MemoryLoader (loom "
            "shards them) or give it a DistributedSampler yourself."
        )
    if loader.batch_size is None or not isinstance(
        loader.sampler, RandomSampler | SequentialSampler | DistributedSampler | EvalShardSampler
    ):
        raise TypeError(
            f"{argument} samples with {type(loader.sampler).__name__}; under torchrun loom "
            "shards only loaders with shuffle=True/False: give yours a DistributedSampler."
        )
    return loader.sampler


def _rebuild(loader: Any, sampler: Sampler) -> Any:
    if not isinstance(loader, DataLoader):
        return loader.with_sampler(sampler)
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
