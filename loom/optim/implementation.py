"""Which of torch's step implementations a job's optimizer uses when the job leaves it to
loom: the fused kernel where torch has one for the device, else torch's own default.

torch's SGD, Adam and AdamW each step in one of three ways: a Python loop over the
parameters, ``foreach`` (one multi-tensor kernel per operation) or ``fused`` (one kernel
for the whole update). They compute the same update up to float rounding; torch
defaults to ``foreach`` on CUDA and the loop on the CPU, and never to ``fused``. Measured
here (``benchmarks/compile_and_data.py``, one CPU thread) the fused step is the fastest
on the CPU for all three, 1.2x to 3.6x faster than the loop (``foreach`` 1.0x to 1.2x),
and torch documents it as the fastest on CUDA; so a job that sets neither ``foreach``
nor ``fused`` gets ``fused=True`` on those devices. A job that sets either keeps exactly
what it set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from loom.trainer.sharding import FUSED_ON_SHARDS

__all__ = ["FUSED_DEVICES", "FUSED_OPTIMIZERS", "fastest_step"]

FUSED_DEVICES = frozenset({"cpu", "cuda"})
"""The device types whose fused SGD, Adam and AdamW steps loom chooses by default."""

FUSED_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
"""The optimizers whose fused step loom chooses: those measured, with a fused kernel on
every device of :data:`FUSED_DEVICES` (torch's Adagrad, say, has one on the CPU only)."""


def fastest_step(
    optimizer: Any,
    arguments: Mapping[str, Any],
    parameters: Iterable[torch.Tensor],
    device: torch.device,
    sharded: bool = False,
) -> dict[str, Any]:
    """``arguments`` for ``optimizer`` with ``fused=True`` where the fused step is the
    fastest correct choice: the optimizer is one of :data:`FUSED_OPTIMIZERS` (or a
    subclass), ``arguments`` leave both ``fused`` and ``foreach`` unset (None), nothing
    asks for a differentiable step, the run is on a device of :data:`FUSED_DEVICES`, and
    every parameter is a float tensor (torch's fused kernels take no other), and, for a
    model that ``strategy="fsdp"`` will shard (``sharded``), the optimizer is one whose
    fused step runs on sharded parameters (:data:`~loom.trainer.sharding.FUSED_ON_SHARDS`).
    Otherwise ``arguments`` as they are.

    Examples:
        >>> weights = [torch.nn.Parameter(torch.zeros(3))]
        >>> fastest_step(torch.optim.Adam, {"lr": 0.1}, weights, torch.device("cpu"))
        {'lr': 0.1, 'fused': True}
        >>> fastest_step(torch.optim.Adam, {"lr": 0.1, "foreach": False}, weights,
        ...              torch.device("cpu"))
        {'lr': 0.1, 'foreach': False}
    """
    chosen = dict(arguments)
    if not _is_one_of(optimizer, FUSED_OPTIMIZERS) or device.type not in FUSED_DEVICES:
        return chosen
    if chosen.get("fused") is not None or chosen.get("foreach") is not None:
        return chosen
    if chosen.get("differentiable"):
        return chosen
    if sharded and not _is_one_of(optimizer, FUSED_ON_SHARDS):
        return chosen
    if not all(parameter.is_floating_point() for parameter in parameters):
        return chosen
    chosen["fused"] = True
    return chosen


def _is_one_of(optimizer: Any, classes: tuple[type, ...]) -> bool:
    return isinstance(optimizer, type) and issubclass(optimizer, classes)
