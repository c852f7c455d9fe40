"""Collectives for code that keeps statistics: a sum over processes, or nothing alone.

A plugin that gathers statistics during training (online label smoothing's
per-class sums) calls :func:`all_reduce_sum` where it turns them into a result. In
a ``torchrun`` job every process then holds the sum over all of them, so the result
is the same on every rank and does not depend on how many ranks share the data; in
a single process the call does nothing. Every rank must make the same calls in the
same order, as with any collective.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_reduce_max", "all_reduce_sum", "is_distributed"]


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sums ``tensor`` over all processes, in place; returns it. Alone: returns it as is.

    Examples:
        >>> import torch
        >>> all_reduce_sum(torch.tensor([1.0, 2.0]))  # one process: unchanged
        tensor([1., 2.])
    """
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of ``tensor`` over all processes, in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor
