"""SWA: the weights averaged over the last epochs, with BatchNorm recomputed for them."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch.optim.swa_utils import SWALR, update_bn

from loom.algorithms.weight_averaging import ONE_RESULT, WeightAveraging
from loom.functional import all_reduce_sum, check_positive
from loom.functional.checks import check_choice
from loom.trainer import (
    State,
    TimeUnit,
    changes,
    get_batch_item,
    move_to_device,
    reads,
    unwrap_model,
)
from loom.trainer.checkpoint import capture_rng_states, restore_rng_states

__all__ = ["SWA"]

ANNEALING = ("cos", "linear")
EVALUATE = ("both", "swa")


class SWA(WeightAveraging):
    """Stochastic weight averaging (Izmailov et al., 2018): the equal-weight average of
    the weights at the end of every epoch from ``start_epoch`` on.

    Built on ``torch.optim.swa_utils``, as its documentation uses it. ``AveragedModel``
    averages the weights at each ``epoch_end`` from the end of epoch ``start_epoch``
    (counting from 0) on. With ``swa_lr``, ``SWALR`` takes the learning rate over from
    that epoch: it anneals from the rate then to ``swa_lr`` over ``anneal_epochs``
    epochs, stepped once an epoch, and is set before every batch, whatever the run's
    own schedulers do meanwhile; without it the run's schedule goes on.

    At ``fit_end`` (of a run that was not interrupted) ``update_bn`` recomputes the
    average's BatchNorm statistics with a pass over the training data, under
    ``no_grad`` and leaving every random generator as it was; under torchrun each rank
    passes over its share and the statistics are averaged over the ranks. Then, with
    an ``eval_dataloader``, the average is evaluated: ``evaluate="both"`` adds its
    metrics as ``eval/swa/accuracy``, ... beside the trained weights' final ones;
    ``"swa"`` makes them the run's final ``eval/...`` metrics (what ``fit`` returns and
    a job's summary holds; ``trainer.predict`` then uses the average too). With
    ``export`` the average is the run's result (a job's ``model.pt``). Everything is in
    checkpoints: a resumed run averages and anneals as the uninterrupted one.

    Args:
        start_epoch: The first epoch whose end is averaged (from 0).
        swa_lr: The learning rate SWALR anneals to and keeps; None leaves the rate to
            the run's schedulers.
        anneal_epochs: Epochs SWALR takes to reach ``swa_lr`` (0: at once).
        anneal_strategy: ``"cos"`` or ``"linear"``.
        evaluate: ``"both"`` or ``"swa"``, as above.
        export: Whether the run's result (``model.pt``) is the average.

    Examples:
        >>> from loom.algorithms import SWA
        >>> SWA(start_epoch=75, swa_lr=0.05)
        SWA(start_epoch=75, swa_lr=0.05)
    """

    metrics_name = "swa"
    effects = (
        changes("optimizer_step", at="batch_start", how="sets the learning rate"),
        reads("model", at="epoch_end"),
        changes("result", at="fit_end", how="replaces", hint=ONE_RESULT),
    )

    def __init__(
        self,
        start_epoch: int,
        swa_lr: float | None = None,
        anneal_epochs: int = 5,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        evaluate: Literal["both", "swa"] = "both",
        export: bool = True,
    ):
        super().__init__()
        for name, value in (("start_epoch", start_epoch), ("anneal_epochs", anneal_epochs)):
            if type(value) is not int or value < 0:
                raise ValueError(f"SWA: {name}={value!r} must be a whole number >= 0.")
        try:
            self.swa_lr = None if swa_lr is None else check_positive(swa_lr, "swa_lr")
            self.anneal_strategy = check_choice(anneal_strategy, "anneal_strategy", ANNEALING)
            self.evaluate = check_choice(evaluate, "evaluate", EVALUATE)
        except (TypeError, ValueError) as error:
            raise type(error)(f"SWA: {error}") from None
        if not isinstance(export, bool):
            raise TypeError(f"SWA: export={export!r} must be True or False.")
        self.start_epoch, self.anneal_epochs, self.export = start_epoch, anneal_epochs, export
        self.writes = (
            *(("eval_model",) if evaluate == "swa" else ()),
            *(("export_model",) if export else ()),
        )
        # The class declares all SWA can do (the cards' tables); an instance, what it does.
        sets_rate, averages, replaces_result = type(self).effects
        self.effects = (
            *((sets_rate,) if swa_lr is not None else ()),
            averages,
            *((replaces_result,) if self.writes else ()),
        )
        self._schedulers: list[SWALR] = []
        self._saved_schedulers: list[dict[str, Any]] | None = None

    def init(self, state: State) -> None:
        super().init(state)
        duration = state.max_duration
        if duration.unit is TimeUnit.EPOCH and self.start_epoch >= duration.value:
            raise ValueError(
                f"SWA: start_epoch={self.start_epoch} is not below max_duration="
                f"{duration}: nothing would be averaged (epochs count from 0)."
            )
        self.build_average(state)  # equal weights; buffers come from update_bn
        if self.swa_lr is not None:
            for optimizer in state.optimizers:
                for group in optimizer.param_groups:
                    # SWALR's own settings, there from the start, so that a checkpoint's
                    # optimizer has the same settings before SWA takes over and after.
                    group.setdefault("swa_lr", self.swa_lr)
                    group.setdefault("initial_lr", group["lr"])

    @property
    def averaging(self) -> bool:
        """Whether any epoch has been averaged yet."""
        return self.averaged is not None and int(self.averaged.n_averaged) > 0

    def batch_start(self, state: State) -> None:
        if self.swa_lr is not None and state.timestamp.epoch >= self.start_epoch:
            self._set_learning_rates(state)

    def epoch_end(self, state: State) -> None:
        if state.timestamp.epoch <= self.start_epoch:  # the epoch that ended is before it
            return
        self.averaged.update_parameters(unwrap_model(state.model))
        if self.swa_lr is not None:
            self._set_learning_rates(state)  # what SWALR set, whatever stepped since
            for scheduler in self._schedulers:
                scheduler.step()

    def fit_end(self, state: State) -> None:
        if state.interrupt is not None:
            return  # resumed, the run goes on averaging
        if not self.averaging:
            warnings.warn(
                f"SWA averaged no epoch: training ended after {state.timestamp.epoch} "
                f"epochs, and averaging starts at the end of epoch {self.start_epoch} "
                "(from 0); the run's result is the trained weights.",
                stacklevel=2,
            )
            return
        self._update_batch_norm(state)
        if self.evaluate == "swa":
            state.eval_model = self.model
            if state.eval_dataloader is not None:
                state.metrics.update(state.evaluate(self.model))
        elif state.eval_dataloader is not None:
            self.report(state)
        if self.export:
            state.export_model = self.model

    def _take_over_learning_rate(self, state: State) -> None:
        self._schedulers = [
            SWALR(
                optimizer,
                swa_lr=self.swa_lr,
                anneal_epochs=self.anneal_epochs,
                anneal_strategy=self.anneal_strategy,
            )
            for optimizer in state.optimizers
        ]
        if self._saved_schedulers is not None:  # resumed: SWALR as it was saved
            for scheduler, saved in zip(self._schedulers, self._saved_schedulers, strict=True):
                scheduler.load_state_dict(saved)
            self._saved_schedulers = None

    def _set_learning_rates(self, state: State) -> None:
        """Each group's rate as SWALR last set it; SWALR made first, where it is not yet
        (the first SWA epoch, or a resumed run)."""
        if not self._schedulers:
            self._take_over_learning_rate(state)
        for scheduler in self._schedulers:
            groups = scheduler.optimizer.param_groups
            for group, rate in zip(groups, scheduler.get_last_lr(), strict=True):
                group["lr"] = rate

    def _update_batch_norm(self, state: State) -> None:
        """``update_bn`` over the training data (this rank's share), then the ranks' mean."""
        rng = capture_rng_states()  # the pass shuffles: leave the generators as they were
        moves = state.device.type != "cpu"
        inputs = (
            get_batch_item(move_to_device(batch, state.device) if moves else batch, state.input_key)
            for batch in state.train_dataloader
        )
        update_bn(inputs, self.model)
        restore_rng_states(rng)
        if state.world_size > 1:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    for statistic in (module.running_mean, module.running_var):
                        if statistic is not None:
                            statistic.copy_(all_reduce_sum(statistic.clone()) / state.world_size)

    def state_dict(self) -> dict[str, Any]:
        """The average, and SWALR's state once it has taken over."""
        schedulers = [scheduler.state_dict() for scheduler in self._schedulers]
        # Loaded but not made again yet (a checkpoint between the resume and the next
        # batch, at the pending evaluation): the loaded state, not none.
        return {**super().state_dict(), "schedulers": schedulers or self._saved_schedulers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        schedulers = state.get("schedulers") if isinstance(state, dict) else None
        if schedulers is not None and (
            not isinstance(schedulers, list) or not all(isinstance(s, dict) for s in schedulers)
        ):
            raise ValueError("SWA: the checkpoint's SWALR states are not a list of mappings.")
        super().load_state_dict(state)
        self._schedulers = []  # made again, then loaded, at the next batch
        self._saved_schedulers = schedulers

    def __repr__(self) -> str:
        options: dict[str, Any] = {"start_epoch": self.start_epoch}
        if self.swa_lr is not None:
            options.update(swa_lr=self.swa_lr)
            if self.anneal_epochs != 5:
                options.update(anneal_epochs=self.anneal_epochs)
            if self.anneal_strategy != "cos":
                options.update(anneal_strategy=self.anneal_strategy)
        if self.evaluate != "both":
            options.update(evaluate=self.evaluate)
        if not self.export:
            options.update(export=False)
        return f"SWA({', '.join(f'{k}={v!r}' for k, v in options.items())})"
