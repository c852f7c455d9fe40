"""EMA: an exponential moving average of the weights, evaluated and kept as the result."""

from __future__ import annotations

from typing import Literal

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

from loom.algorithms.weight_averaging import ONE_RESULT, WeightAveraging
from loom.functional import check_fraction
from loom.functional.checks import check_choice
from loom.trainer import State, changes, reads, unwrap_model

__all__ = ["EMA"]

EVALUATE = ("both", "ema")


class EMA(WeightAveraging):
    """Keeps ``ema = decay * ema + (1 - decay) * w`` of the weights and buffers, every
    ``every`` batches after the optimizer step.

    Built on ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn`` and
    ``use_buffers=True``, as swa_utils documents for an EMA: BatchNorm's running
    statistics are averaged with the weights, so the average needs no extra pass over
    the data. Until batch ``start`` (the warm-up) the average is a copy of the weights
    at each update; from then on each update blends.

    Evaluation (``evaluate``): ``"both"`` evaluates the trained weights as usual and
    then the average, whose metrics are ``eval/ema/accuracy``, ``eval/ema/loss``, ...
    beside them (a checkpoint's ``best_metric`` or early stopping may watch them);
    ``"ema"`` evaluates the average instead (``eval/...`` are its metrics, and
    ``trainer.predict`` uses it). With ``export`` the average is the run's result: a
    job's ``model.pt``. The average lives in checkpoints, and a resumed run continues
    it exactly; :attr:`model` is it, as a module.

    Args:
        decay: How much of the average each update keeps, in [0, 1); 0.999 averages
            over about the last 1000 updates.
        every: Updates every this many batches.
        start: Batches of warm-up, during which the average copies the weights.
        evaluate: ``"both"`` or ``"ema"``, as above.
        export: Whether the run's result (``model.pt``) is the average.

    Examples:
        >>> from loom.algorithms import EMA
        >>> EMA(decay=0.99, every=10)
        EMA(decay=0.99, every=10)
    """

    metrics_name = "ema"
    effects = (
        reads("model", at="batch_end"),
        changes("result", at="init", how="replaces", hint=ONE_RESULT),
    )

    def __init__(
        self,
        decay: float = 0.999,
        every: int = 1,
        start: int = 0,
        evaluate: Literal["both", "ema"] = "both",
        export: bool = True,
    ):
        super().__init__()
        try:
            self.decay = check_fraction(decay, "decay")
            if self.decay == 1.0:
                raise ValueError(f"decay={decay!r} must be below 1: the average would not move.")
            self.evaluate = check_choice(evaluate, "evaluate", EVALUATE)
        except (TypeError, ValueError) as error:
            raise type(error)(f"EMA: {error}") from None
        for name, value, least in (("every", every, 1), ("start", start, 0)):
            if type(value) is not int or value < least:
                raise ValueError(f"EMA: {name}={value!r} must be a whole number >= {least}.")
        if not isinstance(export, bool):
            raise TypeError(f"EMA: export={export!r} must be True or False.")
        self.every, self.start, self.export = every, start, export
        self.writes = (
            *(("eval_model",) if evaluate == "ema" else ()),
            *(("export_model",) if export else ()),
        )
        if not self.writes:  # evaluated beside the weights, not their replacement
            self.effects = self.effects[:1]

    def init(self, state: State) -> None:
        super().init(state)
        self.build_average(state, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        if self.evaluate == "ema":
            state.eval_model = self.model
        if self.export:
            state.export_model = self.model

    def batch_end(self, state: State) -> None:
        batch = state.timestamp.batch
        if batch % self.every:
            return
        if batch <= self.start:  # warm-up: a copy, and the first update after it blends
            self._copy_weights(state)
            self.averaged.n_averaged.fill_(1)
        else:
            self.averaged.update_parameters(unwrap_model(state.model))

    def _copy_weights(self, state: State) -> None:
        model = unwrap_model(state.model)
        with torch.no_grad():
            for mine, theirs in zip(self._tensors(self.model), self._tensors(model), strict=True):
                mine.copy_(theirs)

    def fit_start(self, state: State) -> None:
        if int(self.averaged.n_averaged) == 0:  # no update yet: the weights as loaded
            self._copy_weights(state)

    def eval_end(self, state: State) -> None:
        # Beside the loop's evaluations, on their data; trainer.eval(loader) of your own
        # evaluates the weights alone.
        if self.evaluate == "both" and state.evaluation != "called":
            self.report(state)

    @staticmethod
    def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
        return [tensor.detach() for tensor in (*model.parameters(), *model.buffers())]

    def __repr__(self) -> str:
        options = {"decay": self.decay}
        defaults = {"every": 1, "start": 0, "evaluate": "both", "export": True}
        options.update({k: getattr(self, k) for k, v in defaults.items() if getattr(self, k) != v})
        return f"EMA({', '.join(f'{k}={v!r}' for k, v in options.items())})"
