"""The part EMA and SWA share: a second copy of the weights, kept beside the trained
ones by ``torch.optim.swa_utils.AveragedModel``, checkpointed with the run, evaluated
and exported."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from loom.trainer import Algorithm, State, unwrap_model

__all__ = ["ONE_RESULT", "WeightAveraging"]

ONE_RESULT = "Give all but one export=False and evaluate='both'."


class WeightAveraging(Algorithm):
    """Base of the algorithms that keep an average of the weights.

    At ``init`` the average is built on the trained model (unwrapped from
    DistributedDataParallel), on its device: a deep copy, so it starts as the model is
    then and shares nothing with it. Subclasses update it.

    Attributes:
        averaged: The ``AveragedModel``; None before ``init``.
    """

    # A subclass's name for its metrics: eval/<name>/accuracy.
    metrics_name = ""

    sharding_refusal = (
        "it keeps a whole copy of the weights on every rank, averaged from the trained "
        "ones, which FSDP splits across the ranks."
    )

    def __init__(self) -> None:
        self.averaged: AveragedModel | None = None

    @property
    def model(self) -> nn.Module:
        """The averaged weights, as a module like the trained one (after ``init``)."""
        if self.averaged is None:
            raise RuntimeError(
                f"{type(self).__name__} builds its average at the Trainer's init; "
                "pass it to a Trainer first."
            )
        return self.averaged.module

    def init(self, state: State) -> None:
        """Refuses a second average of the same kind: both would report one set of
        metrics (``eval/<metrics_name>/...``)."""
        twins = [a for a in state.algorithms if type(a) is type(self)]
        if len(twins) > 1:
            name = type(self).__name__
            raise ValueError(
                f"{name} is listed {len(twins)} times; list it once: each would report "
                f"its average as the same eval/{self.metrics_name}/* metrics."
            )

    def build_average(self, state: State, **options: Any) -> None:
        """The ``AveragedModel`` of the trained model, with ``options`` (``multi_avg_fn``,
        ``use_buffers``)."""
        self.averaged = AveragedModel(unwrap_model(state.model), **options)

    def report(self, state: State) -> dict[str, Any]:
        """Evaluates the average as the loop evaluates the model and adds its metrics to
        ``state.metrics`` as ``eval/<metrics_name>/...``; returns them."""
        results = state.evaluate(self.model)
        named = {
            f"eval/{self.metrics_name}/{key.removeprefix('eval/')}": value
            for key, value in results.items()
        }
        state.metrics.update(named)
        return named

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and buffers, and how many updates they hold."""
        return {"averaged": self.averaged.state_dict() if self.averaged is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the average, after checking that every tensor fits this model's."""
        saved = state.get("averaged") if isinstance(state, Mapping) else None
        name = type(self).__name__
        if self.averaged is None or not isinstance(saved, Mapping):
            raise ValueError(f"{name}: the checkpoint holds no average of this model's weights.")
        have = self.averaged.state_dict()
        if set(saved) != set(have):
            missing = sorted(set(have) - set(saved))[:3]
            extra = sorted(set(saved) - set(have))[:3]
            raise ValueError(
                f"{name}: the checkpoint's average is of another model (missing "
                f"{missing}, unexpected {extra})."
            )
        for key, tensor in have.items():
            other = saved[key]
            if not isinstance(other, torch.Tensor) or other.shape != tensor.shape:
                raise ValueError(
                    f"{name}: the checkpoint's average has {key} of shape "
                    f"{tuple(getattr(other, 'shape', ()))}, this model's is {tuple(tensor.shape)}."
                )
        self.averaged.load_state_dict(saved)
