"""Checks of the Trainer's arguments that take more than a line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["check_iterable", "checked_optimizers", "checked_schedulers"]


def check_iterable(dataloader: Any, argument: str) -> None:
    if not isinstance(dataloader, Iterable) or isinstance(dataloader, torch.Tensor | str):
        raise TypeError(
            f"{argument} must be an iterable of batches such as a torch DataLoader, "
            f"got {type(dataloader).__name__}."
        )


def checked_optimizers(optimizers: Any, model: nn.Module) -> list[torch.optim.Optimizer]:
    listed = [optimizers] if isinstance(optimizers, torch.optim.Optimizer) else optimizers
    if not isinstance(listed, Sequence) or not listed:
        raise TypeError(
            f"optimizers must be a torch optimizer or a non-empty list of them, got {optimizers!r}."
        )
    model_parameters = {id(parameter) for parameter in model.parameters()}
    for index, optimizer in enumerate(listed):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizers[{index}] is a {type(optimizer).__name__}, not a torch optimizer."
            )
        held = (id(p) for group in optimizer.param_groups for p in group["params"])
        if not any(parameter in model_parameters for parameter in held):
            raise ValueError(
                f"optimizers[{index}] ({type(optimizer).__name__}) holds none of the model's "
                "parameters; build it from model.parameters() of this model."
            )
    return list(listed)


def checked_schedulers(schedulers: Any) -> list[Any]:
    if schedulers is None:
        return []
    listed = schedulers if isinstance(schedulers, Sequence) else [schedulers]
    for index, scheduler in enumerate(listed):
        if not callable(getattr(scheduler, "step", None)):
            raise TypeError(
                f"schedulers[{index}] is a {type(scheduler).__name__}, which has no step(); "
                "pass learning-rate schedulers such as torch.optim.lr_scheduler.CosineAnnealingLR."
            )
    return list(listed)
