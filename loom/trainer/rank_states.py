"""Each rank's own part of a checkpoint, so that a run under torchrun resumes exactly.

The ranks of a torchrun job share the model, the optimizers, the schedulers and the
clock, but not everything: each has its own share of the epoch's training losses, its
own generators, and plugins that gather statistics over the samples it sees (online
label smoothing's per-class sums) hold its own. Rank 0 writes the checkpoint, with its
values where a single process would put them and, under ``ranks``, what each rank holds
that differs from rank 0's; every rank loads its own. Saving rank 0's alone and loading
it everywhere would resume another run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "PER_RANK_ENTRIES",
    "gather_rank_states",
    "rank_states_problem",
    "rank_view",
]

PER_RANK_ENTRIES = ("rng", "epoch_start_rng", "algorithms", "callbacks", "train_losses")
"""The checkpoint entries a rank may hold its own value of."""

_PLUGIN_LISTS = ("algorithms", "callbacks")


def gather_rank_states(checkpoint: dict[str, Any], rank: int, world_size: int) -> list | None:
    """Every rank's :data:`PER_RANK_ENTRIES` of ``checkpoint`` (each rank's own capture),
    gathered on rank 0, each entry kept only where it differs from rank 0's (a plugin
    list entry by entry, None where equal). Every rank must call it; rank 0 gets the
    list, one dict per rank, the others None.
    """
    mine = {key: _on_cpu(checkpoint[key]) for key in PER_RANK_ENTRIES}
    gathered: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if gathered is None:
        return None
    reference = gathered[0]
    return [
        {} if index == 0 else _differences(part, reference) for index, part in enumerate(gathered)
    ]


def rank_view(checkpoint: Mapping[str, Any], rank: int) -> dict[str, Any]:
    """``checkpoint`` as rank ``rank`` saved it: rank 0's entries with this rank's own
    put in their place. A checkpoint without ``ranks`` is every rank's as it is."""
    view = dict(checkpoint)
    ranks = checkpoint.get("ranks")
    if not ranks or rank >= len(ranks):
        return view
    for key, value in ranks[rank].items():
        if key in _PLUGIN_LISTS and len(value) == len(checkpoint[key]):
            # None: the same as rank 0's (a list of another length holds no None).
            view[key] = [
                entry if own is None else own
                for entry, own in zip(checkpoint[key], value, strict=True)
            ]
        else:
            view[key] = value
    return view


def rank_states_problem(checkpoint: Mapping[str, Any]) -> str | None:
    """What is malformed in ``checkpoint``'s ``ranks`` entry, or None (also when it has none)."""
    ranks, count = checkpoint.get("ranks"), checkpoint.get("world_size")
    if ranks is None:
        return None
    if not isinstance(ranks, list) or type(count) is not int or len(ranks) != count:
        return f"not one state per rank of its world_size {count!r}"
    for index, part in enumerate(ranks):
        if not isinstance(part, Mapping) or not set(part) <= set(PER_RANK_ENTRIES):
            return f"rank {index}'s is not a mapping of {', '.join(PER_RANK_ENTRIES)}"
        for key in _PLUGIN_LISTS:
            if key in part and (
                not isinstance(part[key], list)
                or not isinstance(checkpoint.get(key), list)
                or (len(part[key]) != len(checkpoint[key]) and None in part[key])
            ):
                return f"rank {index}'s {key!r} is not one state per plugin"
    return None


def _differences(part: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in part.items():
        if key in _PLUGIN_LISTS:
            if len(value) != len(reference[key]):  # a callback on some ranks only: all its own
                kept[key] = value
                continue
            own = [None if _equal(a, b) else a for a, b in zip(value, reference[key], strict=True)]
            if any(entry is not None for entry in own):
                kept[key] = own
        elif not _equal(value, reference[key]):
            kept[key] = value
    return kept


def _equal(first: Any, second: Any) -> bool:
    """Whether two checkpoint values are the same: tensors bitwise (NaNs where each has one)."""
    if isinstance(first, torch.Tensor) or isinstance(second, torch.Tensor):
        return (
            isinstance(first, torch.Tensor)
            and isinstance(second, torch.Tensor)
            and first.dtype == second.dtype
            and first.shape == second.shape
            and torch.equal(_bits(first), _bits(second))
        )
    if isinstance(first, Mapping):
        return (
            isinstance(second, Mapping)
            and first.keys() == second.keys()
            and all(_equal(first[key], second[key]) for key in first)
        )
    if isinstance(first, list | tuple):
        return (
            type(first) is type(second)
            and len(first) == len(second)
            and all(_equal(a, b) for a, b in zip(first, second, strict=True))
        )
    return type(first) is type(second) and (
        first == second or (first != first and second != second)
    )


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, so that equal NaNs compare equal and -0.0 differs from 0.0."""
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def _on_cpu(value: Any) -> Any:
    """``value`` with every tensor moved to the CPU: what rank 0 unpickles must not name
    another rank's GPU. (Not ``move_to_device``, whose copies do not wait: these are
    pickled at once. Plugin states are plain dicts, lists and tensors, as
    ``torch.load(weights_only=True)`` reads them.)"""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {key: _on_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_on_cpu(item) for item in value)
    return value
