"""The Trainer: the training loop, with plugin events at every step."""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Literal

import torch
from torch import nn

from loom.functional import cross_entropy
from loom.trainer.added_metrics import AddedMetrics
from loom.trainer.batch import (
    BatchKey,
    batch_size,
    describe_item,
    move_to_device,
    num_batches,
    split_batch,
    validate_batch_key,
)
from loom.trainer.checkpoint import (
    capture_rng_states,
    evaluated_model,
    load_checkpoint,
    restore_checkpoint,
    resumed_epoch_batches,
)
from loom.trainer.compiling import compile_model, compile_options
from loom.trainer.events import Algorithm, Callback, Engine, HookTable, add_note, fire
from loom.trainer.metrics import EVAL_METRICS, EvalMetrics, check_losses_are_finite
from loom.trainer.predict import predictions
from loom.trainer.runtime import (
    broadcast_buffers,
    check_cpu_threads,
    cpu_threads_for,
    distribute,
    grad_scaler_for,
    repeated_samples,
    resolve_device,
    scaled_or_clipped_step,
    seed_everything,
    use_deterministic_algorithms,
    validate_precision,
    wrap_model,
)
from loom.trainer.sharding import (
    Strategy,
    check_fits_sharding,
    even_out_forwards,
    forward_autocast,
    most_batches,
    shard_model,
)
from loom.trainer.signals import (
    SignalStop,
    TrainingInterrupted,
    interruption_message,
    stop_on_signals,
)
from loom.trainer.state import (
    Duration,
    State,
    TimeUnit,
    check_dataloader,
    check_epoch_has_batches,
    checked_optimizers,
    checked_schedulers,
    steps_on_a_metric,
)

__all__ = ["Trainer"]


class Trainer:
    """Trains a model, running algorithms and callbacks at every event of the loop.

    The loop, and which event fires where, is in the :class:`Event` docstring.
    ``print(trainer.schedule())`` shows which plugin runs at which event.

    Args:
        model: Any module whose ``forward(inputs)`` returns what ``loss_fn`` takes.
        train_dataloader: Yields training batches, by default ``(inputs, targets)``.
        eval_dataloader: Yields evaluation batches, or None for no evaluation.
        max_duration: How long to train: ``"10ep"``, ``"500ba"`` or ``"20000sp"``.
        optimizers: One optimizer or a list, built on the model's parameters.
        schedulers: Learning-rate schedulers (one or a list), stepped every batch; one
            with a ``monitor`` (``loom.optim.plateau``, a ``ReduceLROnPlateau``) after
            each evaluation at ``eval_interval``, with that metric.
        algorithms: Training methods, e.g. ``[LabelSmoothing(0.1)]``.
        callbacks: Observers, e.g. ``[ProgressBar(), MetricsLogger("metrics.jsonl")]``.
        eval_metrics: Metrics each evaluation computes beside loom's own, name ->
            metric: ``{"f1": torchmetrics.classification.MulticlassF1Score(10)}``,
            recorded as ``eval/f1`` (see :class:`~loom.trainer.added_metrics.AddedMetrics`).
        loss_fn: ``loss_fn(outputs, targets) -> scalar``: a 0-d tensor, the batch's
            mean (a loss per sample, such as ``reduction="none"``'s, is refused at the
            first batch, in training or evaluation). Defaults to cross-entropy
            against class indices or dense target distributions.
        input_key: Where the inputs are in a batch: an int, str or
            ``(getter, setter)`` pair (see ``get_batch_item``). The run's key:
            every plugin not given a key of its own uses it.
        target_key: Where the targets are in a batch, in the same forms.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        precision: ``"fp32"``; ``"bf16"`` (autocast on CPU and CUDA); ``"fp16"``
            (autocast with a gradient scaler, CUDA only).
        grad_accum: Splits each batch into this many microbatches, each with its
            forward and backward, before one optimizer step (the whole batch's gradients).
        grad_clip_norm: Clips the gradients' total 2-norm to this before each step.
        eval_interval: How often to evaluate, in epochs (``"1ep"``) or batches
            (``"500ba"``). Training also ends with an evaluation.
        seed: Seeds Python, NumPy and torch (data order, dropout) when given;
            ``loom.seed_everything`` before building the model repeats its weights.
        deterministic: Makes torch use deterministic kernels (process-wide).
        cpu_threads: torch's intra-op threads (process-wide, ``torch.set_num_threads``):
            an int; ``"auto"``, half the CPUs this process may use on a CPU device
            (none changed on a GPU or where ``OMP_NUM_THREADS`` is set, as under
            torchrun); None leaves torch's count as it is.
        load_path: A checkpoint to resume from: training continues where it
            stopped, and ends as the uninterrupted run would have (bitwise on CPU).
        load_weights_only: Take only the model's weights from ``load_path``
            (fine-tuning): the clock, optimizers and plugins start afresh.
        finite_check_interval: Checks the training losses for NaN or infinity every
            this many batches (one device read for all), at epoch ends and before
            every checkpoint; None: only the latter two.
        compile: ``torch.compile`` the model, in place, once the plugins' ``init``
            and the DDP wrap are done: True for torch's defaults, or a mapping of its
            options (``{"mode": "max-autotune"}``, ``{"backend": "aot_eager"}``),
            checked here. Checkpoints keep the model's own keys. See
            :mod:`loom.trainer.compiling`.
        strategy: Under torchrun, how the model is spread over the processes:
            ``"ddp"`` (DistributedDataParallel: each rank holds all of it) or
            ``"fsdp"`` (FSDP2's ``fully_shard``: each rank holds a share of every
            parameter, gradient and optimizer state, and checkpoints are sharded
            folders); or ``{"name": "fsdp", "blocks": [class names],
            "reshard_after_forward": bool}``. See :mod:`loom.trainer.sharding`.

    Raises:
        TypeError, ValueError: An argument is of the wrong type or value; the
            message names it. A ``train_dataloader`` that is a DataLoader yielding no
            batch (an empty dataset, or one smaller than ``batch_size`` with
            ``drop_last=True``; under torchrun, a rank's share) is refused here, naming
            the dataset's size, the batch size and ``drop_last``. An empty list builds
            a Trainer that can :meth:`eval` and :meth:`predict` but not :meth:`fit`.

    Examples:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from loom import Trainer
        >>> _ = torch.manual_seed(0)
        >>> inputs = torch.randn(64, 4)
        >>> targets = (inputs[:, 0] > 0).long()
        >>> model = torch.nn.Linear(4, 2)
        >>> trainer = Trainer(
        ...     model=model,
        ...     train_dataloader=DataLoader(TensorDataset(inputs, targets), batch_size=16),
        ...     eval_dataloader=DataLoader(TensorDataset(inputs, targets), batch_size=64),
        ...     max_duration="5ep",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.5),
        ... )
        >>> metrics = trainer.fit()
        >>> metrics["eval/accuracy"] > 0.9
        True
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataloader: Iterable[Any],
        eval_dataloader: Iterable[Any] | None = None,
        *,
        max_duration: str | Duration,
        optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        schedulers: Any = None,
        algorithms: Sequence[Algorithm] = (),
        callbacks: Sequence[Callback] = (),
        eval_metrics: Mapping[str, Any] | None = None,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        input_key: BatchKey = 0,
        target_key: BatchKey = 1,
        device: str | torch.device = "auto",
        precision: Literal["fp32", "bf16", "fp16"] = "fp32",
        grad_accum: int = 1,
        grad_clip_norm: float | None = None,
        eval_interval: str | Duration = "1ep",
        seed: int | None = None,
        deterministic: bool = False,
        cpu_threads: int | Literal["auto"] | None = "auto",
        load_path: str | os.PathLike[str] | None = None,
        load_weights_only: bool = False,
        finite_check_interval: int | None = 100,
        compile: bool | Mapping[str, Any] = False,
        strategy: Literal["ddp", "fsdp"] | Mapping[str, Any] = "ddp",
    ):
        # Every argument is checked before anything is seeded, moved or joined.
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        check_dataloader(train_dataloader, "train_dataloader")
        check_epoch_has_batches(train_dataloader)
        if eval_dataloader is not None:
            check_dataloader(eval_dataloader, "eval_dataloader")
        validate_batch_key(input_key, "input_key")
        validate_batch_key(target_key, "target_key")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable(outputs, targets), got {loss_fn!r}.")
        if type(grad_accum) is not int or grad_accum < 1:
            raise ValueError(f"grad_accum={grad_accum!r} must be an int >= 1.")
        if grad_clip_norm is not None and not (
            isinstance(grad_clip_norm, int | float) and 0 < grad_clip_norm < math.inf
        ):
            raise ValueError(
                f"grad_clip_norm={grad_clip_norm!r} must be a positive number or None."
            )
        if finite_check_interval is not None and (
            type(finite_check_interval) is not int or finite_check_interval < 1
        ):
            raise ValueError(
                f"finite_check_interval={finite_check_interval!r} must be an int >= 1 or None."
            )
        self.eval_interval = Duration.parse(eval_interval, name="eval_interval")
        if self.eval_interval.unit is TimeUnit.SAMPLE:
            raise ValueError(
                f"eval_interval={eval_interval!r} counts samples; give it in epochs ('1ep') "
                "or batches ('500ba')."
            )
        check_cpu_threads(cpu_threads)
        compiling = compile_options(compile)
        max_duration = Duration.parse(max_duration, name="max_duration")
        resolved_device = resolve_device(device)
        precision = validate_precision(precision, resolved_device)
        strategy = Strategy.parse(strategy)
        optimizers = checked_optimizers(optimizers, model)
        check_fits_sharding(strategy, model, precision, algorithms, optimizers)
        added_metrics = AddedMetrics(eval_metrics)
        schedulers = checked_schedulers(
            schedulers,
            evaluates=eval_dataloader is not None,
            computed=[*EVAL_METRICS, *added_metrics.keys],
        )
        engine = Engine(algorithms, callbacks)

        threads = cpu_threads_for(cpu_threads, resolved_device)
        if threads is not None:
            torch.set_num_threads(threads)
        if seed is not None:
            seed_everything(seed)
        if deterministic:
            use_deterministic_algorithms()
        train_dataloader, eval_dataloader, rank, world_size = distribute(
            train_dataloader, eval_dataloader, resolved_device, seed
        )
        if world_size > 1:  # this rank's share may hold no batch where the whole data did
            check_epoch_has_batches(train_dataloader, rank=rank, world_size=world_size)
        self.state = State(
            model=model.to(resolved_device),
            optimizers=optimizers,
            schedulers=schedulers,
            max_duration=max_duration,
            train_dataloader=train_dataloader,
            eval_dataloader=eval_dataloader,
            device=resolved_device,
            precision=precision,
            input_key=input_key,
            target_key=target_key,
            grad_scaler=grad_scaler_for(precision, resolved_device),
            rank=rank,
            world_size=world_size,
            strategy=strategy,
            algorithms=engine.algorithms,
            callbacks=engine.callbacks,
        )
        self.engine = engine
        added_metrics.to(resolved_device)
        self.eval_metrics = added_metrics
        self.loss_fn = cross_entropy if loss_fn is None else loss_fn
        self.grad_accum = grad_accum
        self.grad_clip_norm = grad_clip_norm
        self.finite_check_interval = finite_check_interval
        # A CPU run gets its batches where they are: walking them would cost a few us a step.
        self._move_batches = resolved_device.type != "cpu"
        # Stepped after every batch, or (ReduceLROnPlateau) after each scheduled evaluation.
        self._batch_schedulers = [s for s in schedulers if not steps_on_a_metric(s)]
        self._metric_schedulers = [s for s in schedulers if steps_on_a_metric(s)]
        self._eval_batch: int | None = None  # the evaluation batch in progress, for errors
        self._recompute_allowed = False  # True at before_optimizer_step only
        self._signals_to_agree: SignalStop | None = None  # while fit() runs under torchrun
        self._no_hooks = Engine().hooks  # state.evaluate fires no event
        # What the State's recompute_gradients and evaluate call back into.
        self.state._loop = SimpleNamespace(
            recompute_gradients=self._recompute_gradients, evaluate_model=self._evaluate_model
        )
        # {batch of the epoch: samples repeated at its end}, from the sampler's padding.
        self._repeats: dict[int, int] = repeated_samples(train_dataloader)
        fire(engine.hooks.init, self.state)
        if world_size > 1 and strategy.shards:  # after init, which may change the model
            shard_model(self.state.model, strategy, precision, optimizers, resolved_device)
        elif world_size > 1:
            self.state.model = wrap_model(self.state.model, resolved_device)
        self._autocast = forward_autocast(self.state.model, precision, resolved_device)
        if compiling is not None:  # after the wrap: the module inside DDP is compiled
            compile_model(self.state.model, compiling)
        if load_path is not None:
            self.load_checkpoint(load_path, weights_only=load_weights_only)

    def load_checkpoint(self, path: str | os.PathLike[str], *, weights_only: bool = False) -> None:
        """Resumes from the checkpoint at ``path``, or takes its model weights alone.

        Raises:
            FileNotFoundError: No file at ``path``.
            CheckpointError: The file is damaged, or was written by another model
                or another kind of run; the message says which. The run is left
                as it was.
        """
        restore_checkpoint(self.state, load_checkpoint(path), path, weights_only=weights_only)

    def schedule(self) -> str:
        """The loop's events with the plugins that run at each, in order."""
        return self.engine.schedule()

    def fit(self) -> dict[str, float]:
        """Trains until ``max_duration`` or until a plugin asks to stop.

        Returns:
            The latest metrics (``state.metrics``).

        Raises:
            ValueError: ``train_dataloader`` has no batches (an empty list), found
                before any event fires; or, for one without a length, it yields none
                in an epoch.
        """
        state, hooks = self.state, self.engine.hooks
        if num_batches(state.train_dataloader) == 0 and not self._should_stop():
            raise ValueError(
                "fit() has nothing to train on: train_dataloader has no batches (len 0). "
                "A Trainer built without training data can eval() and predict() only."
            )
        with stop_on_signals(state) as signals:
            # Under torchrun the ranks agree after every batch on stopping for a signal.
            self._signals_to_agree = signals if signals.agrees_across_ranks else None
            fire(hooks.fit_start, state)
            state.model.train()
            if self._eval_pending():  # resumed from a checkpoint taken just before an evaluation
                self._scheduled_eval()
            while not self._should_stop():
                self._train_epoch()
            signals.finishing()  # training is over: a signal from here changes nothing
            self._signals_to_agree = None
            if state.interrupt is None:  # an interrupted run stops as it is, to resume exactly
                self._conclude()
            fire(hooks.fit_end, state)
            state.batch = state.outputs = state.loss = None  # let go of the last batch's memory
        if state.interrupt is not None:
            raise TrainingInterrupted(interruption_message(state), state.interrupt)
        return dict(state.metrics)

    def _conclude(self) -> None:
        """The final evaluation (unless one just ran) and a partial epoch's loss."""
        state = self.state
        if state.eval_dataloader is not None and state.last_eval_batch != state.timestamp.batch:
            # Not scheduled: nothing trains after it, and a run extended on resume steps
            # its plateau schedule as the longer run would have.
            self._evaluate(state.eval_dataloader, by_the_loop="final")
        check_losses_are_finite(state)
        # Kept, not reset: the final checkpoint holds them, and a run extended from it
        # adds the epoch's later batches to them, as the longer run did.
        partial_epoch_loss = state.train_losses.mean()
        if partial_epoch_loss is not None:
            state.metrics["train/loss"] = partial_epoch_loss

    def eval(self, dataloader: Iterable[Any] | None = None) -> dict[str, float]:
        """Evaluates the model on ``dataloader`` (default: the eval dataloader).

        Returns:
            ``eval/loss``, ``eval/accuracy``, ``eval/top5_accuracy`` (with at least
            5 classes), ``eval/nll`` and ``eval/ece``; ``eval/loss`` alone when the
            outputs are not class scores (see :class:`~loom.trainer.EvalMetrics`);
            and ``eval/<name>`` of each of the Trainer's ``eval_metrics``. Also
            stored in ``state.metrics``.
        """
        dataloader = self.state.eval_dataloader if dataloader is None else dataloader
        if dataloader is None:
            raise ValueError("eval() needs a dataloader: pass one, or eval_dataloader to Trainer.")
        return self._evaluate(dataloader)

    def predict(
        self,
        dataloader: Iterable[Any],
        output: Literal["logits", "probabilities", "classes"] = "logits",
    ) -> torch.Tensor:
        """The model's outputs for every sample of ``dataloader``, in the dataset's order,
        as one CPU tensor with a row per sample.

        The model runs as in :meth:`eval` (eval mode, no gradients, the run's device,
        precision and ``input_key``; the batches need no targets) and goes back to the
        mode it was in. No event fires, and no metric or ``State`` field changes. A
        DataLoader with ``shuffle=True`` is read in order. Under torchrun each rank
        predicts its share, and every rank gets all the rows back in the dataset's
        order, without the samples a ``DistributedSampler`` repeats (every rank must
        call it). See :mod:`loom.trainer.predict`.

        Args:
            dataloader: Batches with the inputs at the run's ``input_key``.
            output: ``"logits"``, the model's outputs as they are; ``"probabilities"``,
                their softmax over dimension 1 (the classes), in float32; ``"classes"``,
                the index of the largest (int64, one per sample).

        Raises:
            ValueError: An unknown ``output``, outputs that are not class scores where
                ``output`` needs them or without a row per sample, or a loader that
                drops or yields no samples.
            TypeError: The outputs are not a tensor, or (under torchrun) loom cannot
                shard the loader.

        Examples:
            >>> import torch
            >>> from torch.utils.data import DataLoader, TensorDataset
            >>> model = torch.nn.Linear(3, 2)
            >>> trainer = Trainer(model, [], max_duration="1ep", device="cpu",
            ...                   optimizers=torch.optim.SGD(model.parameters(), lr=0.1))
            >>> inputs = torch.randn(10, 3)
            >>> loader = DataLoader(TensorDataset(inputs), batch_size=4, shuffle=True)
            >>> probabilities = trainer.predict(loader, output="probabilities")
            >>> probabilities.shape, bool(torch.allclose(probabilities.sum(dim=1), torch.ones(10)))
            (torch.Size([10, 2]), True)
            >>> torch.equal(trainer.predict(loader, output="classes"), model(inputs).argmax(dim=1))
            True
        """
        return predictions(self.state, dataloader, output)

    def _evaluate(
        self, dataloader: Iterable[Any], by_the_loop: str | None = None
    ) -> dict[str, float]:
        """One evaluation. ``by_the_loop``: ``"scheduled"`` (at ``eval_interval``: the
        schedulers that step on a metric step, before ``EVAL_END``, so a checkpoint taken
        there holds their step) or ``"final"``; the loop's evaluations mark
        ``state.last_eval_batch``, one a person calls does not. ``state.evaluation``
        says which, to the plugins."""
        state, hooks = self.state, self.engine.hooks
        was_training = state.model.training
        state.model.eval()
        state.evaluation = by_the_loop or "called"
        fire(hooks.eval_start, state)
        results, state.reliability = self._measure(evaluated_model(state), dataloader, hooks)
        state.metrics.update(results)
        if by_the_loop is not None:
            state.last_eval_batch = state.timestamp.batch
        if by_the_loop == "scheduled":
            self._step_on_metrics(results)
        fire(hooks.eval_end, state)
        state.batch = state.outputs = state.evaluation = None
        state.model.train(was_training)
        return results

    def _measure(
        self, model: nn.Module, dataloader: Iterable[Any], hooks: HookTable
    ) -> tuple[dict[str, float], dict[str, list[float]] | None]:
        """``model``'s evaluation metrics on ``dataloader``, and its calibration, firing
        the evaluation's batch events of ``hooks``; ``model`` runs in eval mode, under
        ``no_grad``, and goes back to its mode."""
        state, was_training = self.state, model.training
        model.eval()
        # Not DistributedDataParallel's wrapper, whose forward may broadcast buffers:
        # ranks evaluate different numbers of batches.
        if state.world_size > 1:
            broadcast_buffers(model)
        metrics, added = EvalMetrics(), self.eval_metrics
        added.reset()
        most = most_batches(model, dataloader, state.device)  # a sharded model's ranks agree
        inputs = None
        try:
            with torch.no_grad():
                for self._eval_batch, batch in enumerate(dataloader):
                    state.batch = (
                        move_to_device(batch, state.device) if self._move_batches else batch
                    )
                    fire(hooks.eval_batch_start, state)
                    fire(hooks.eval_before_forward, state)
                    inputs = state.get_inputs()
                    state.outputs = self._forward(model, inputs)
                    fire(hooks.eval_after_forward, state)
                    targets = state.get_targets()
                    loss = self._loss(targets)
                    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
                        raise ValueError(self._not_one_number(loss, "the evaluation loss"))
                    metrics.update(state.outputs, targets, loss)
                    if added:
                        added.update(state.outputs, targets)
                    fire(hooks.eval_batch_end, state)
                batches = 0 if self._eval_batch is None else self._eval_batch + 1
                even_out_forwards(model, batches, most, inputs)
        finally:
            self._eval_batch = None
            model.train(was_training)
        results = metrics.compute()
        if added:
            results.update(added.compute(state.device))
        return results, metrics.reliability

    def _evaluate_model(
        self, model: nn.Module, dataloader: Iterable[Any] | None = None
    ) -> dict[str, float]:
        """``state.evaluate``: ``model``'s metrics, with no event and no State change."""
        state = self.state
        dataloader = state.eval_dataloader if dataloader is None else dataloader
        if dataloader is None:
            raise ValueError(
                "state.evaluate(model) needs a dataloader: pass one, or eval_dataloader "
                "to the Trainer."
            )
        if not isinstance(model, nn.Module):
            raise TypeError(f"state.evaluate(model): model must be a Module, got {model!r}.")
        kept = state.batch, state.outputs
        try:
            results, _ = self._measure(model, dataloader, self._no_hooks)
        finally:
            state.batch, state.outputs = kept
        return results

    def _train_epoch(self) -> None:
        state, hooks, timestamp = self.state, self.engine.hooks, self.state.timestamp
        sampler = getattr(state.train_dataloader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(timestamp.epoch)  # a new shuffle each epoch, e.g. DistributedSampler
        if timestamp.batch_in_epoch == 0:
            fire(hooks.epoch_start, state)
            state.epoch_start_rng = capture_rng_states()
            batches = iter(state.train_dataloader)
        else:  # resumed mid-epoch
            batches = resumed_epoch_batches(state)
        evaluates_in_batches = self.eval_interval.unit is TimeUnit.BATCH
        for batch in batches:
            self._train_batch(batch)
            if evaluates_in_batches and self._eval_due(timestamp.batch):
                self._scheduled_eval()
            if self._should_stop():
                if timestamp.batch_in_epoch != num_batches(state.train_dataloader):
                    return  # stopped mid-epoch: the epoch did not end
                break
        if timestamp.batch_in_epoch == 0:
            raise ValueError(
                "train_dataloader yielded no batches in an epoch; check the dataset's "
                "length and the batch size (drop_last=True drops a last partial batch)."
            )
        check_losses_are_finite(state)  # before the clock moves on: it names the batch
        timestamp.epoch += 1
        timestamp.batch_in_epoch = 0
        state.metrics["train/loss"] = state.train_losses.compute()
        fire(hooks.epoch_end, state)
        if self.eval_interval.unit is TimeUnit.EPOCH and self._eval_due(timestamp.epoch):
            self._scheduled_eval()

    def _scheduled_eval(self) -> None:
        """An evaluation at ``eval_interval``."""
        self._evaluate(self.state.eval_dataloader, by_the_loop="scheduled")

    def _step_on_metrics(self, results: dict[str, float]) -> None:
        """Steps each scheduler that reacts to a metric (``ReduceLROnPlateau``) with the
        evaluation's value of the metric it monitors."""
        for scheduler in self._metric_schedulers:
            if scheduler.monitor not in results:
                raise ValueError(
                    f"{type(scheduler).__name__} monitors {scheduler.monitor!r}, which this "
                    f"evaluation did not compute: it computed {', '.join(sorted(results))}."
                )
            scheduler.step(results[scheduler.monitor])

    def _train_batch(self, batch: Any) -> None:
        state, hooks, timestamp = self.state, self.engine.hooks, self.state.timestamp
        state.batch = move_to_device(batch, state.device) if self._move_batches else batch
        repeated = self._repeats.get(timestamp.batch_in_epoch, 0) if self._repeats else 0
        state.repeated_samples = repeated
        fire(hooks.batch_start, state)
        inputs = state.get_inputs()
        num_samples = batch_size(inputs)
        loss = self._gradients(inputs, num_samples, repeated)
        # Detached, so the spent graph goes now: kept, it would slow every allocation.
        state.train_losses.update(loss.detach(), num_samples - repeated)
        if hooks.before_optimizer_step:
            self._recompute_allowed = True
            try:
                fire(hooks.before_optimizer_step, state)
            finally:
                self._recompute_allowed = False
        if state.grad_scaler is None and self.grad_clip_norm is None:
            for optimizer in state.optimizers:
                optimizer.step()
        else:
            scaled_or_clipped_step(
                state.optimizers, state.grad_scaler, state.model, self.grad_clip_norm
            )
        for scheduler in self._batch_schedulers:
            scheduler.step()
        timestamp.batch += 1
        timestamp.batch_in_epoch += 1
        timestamp.samples += num_samples
        if self.finite_check_interval and timestamp.batch % self.finite_check_interval == 0:
            check_losses_are_finite(state)
        fire(hooks.batch_end, state)
        if self._signals_to_agree is not None:
            self._signals_to_agree.agree()
        if repeated:
            state.repeated_samples = 0  # what comes next (an evaluation) repeats nothing

    def _gradients(self, inputs: Any, num_samples: int, repeated: int) -> torch.Tensor:
        """The batch's forward, loss and backward (each microbatch's), from zeroed
        gradients; returns its loss."""
        for optimizer in self.state.optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self.grad_accum == 1:
            return self._forward_backward(inputs, 1.0)
        return self._accumulate_microbatches(num_samples, repeated)

    def _recompute_gradients(self) -> torch.Tensor:
        """``state.recompute_gradients``: the batch once more, at ``before_optimizer_step``."""
        state = self.state
        if not self._recompute_allowed:
            raise RuntimeError(
                "state.recompute_gradients() runs the batch again before its optimizer "
                "step: call it at before_optimizer_step, not at another event."
            )
        inputs = state.get_inputs()
        self._recompute_allowed = False  # a hook of the second pass may not start a third
        state.recomputing = True
        try:
            return self._gradients(inputs, batch_size(inputs), state.repeated_samples).detach()
        finally:
            state.recomputing = False
            self._recompute_allowed = True

    def _forward_backward(self, inputs: Any, loss_weight: float) -> torch.Tensor:
        """Forward, loss and backward of one (micro)batch; returns the loss, unweighted
        (over the samples that count, when it holds repeated ones; see
        :meth:`_loss_without_repeats`).

        ``inputs`` are the batch's, read before ``before_forward``; they are read
        again after it only when one of its hooks may have replaced them.
        """
        state, hooks = self.state, self.engine.hooks
        fire(hooks.before_forward, state)
        if hooks.before_forward:  # a hook may have replaced them; without one, nothing did
            inputs = state.get_inputs()
        state.outputs = self._forward(state.model, inputs)
        fire(hooks.after_forward, state)
        fire(hooks.before_loss, state)
        targets = state.get_targets()
        state.loss = computed = self._loss(targets)
        counted = self._loss_without_repeats(targets) if state.repeated_samples else None
        fire(hooks.after_loss, state)
        fire(hooks.before_backward, state)
        loss = state.loss
        if counted is not None and loss is not computed:
            counted = None  # a plugin changed the loss: its batch's mean stands, changed
        # Here, after the plugins, once: the one check the step makes of the loss.
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
            what = "the loss to backpropagate"
            raise ValueError(self._not_one_number(loss, what, replaced=loss is not computed))
        scaled = loss if loss_weight == 1.0 else loss * loss_weight
        if state.grad_scaler is not None:
            scaled = state.grad_scaler.scale(scaled)
        scaled.backward()
        fire(hooks.after_backward, state)
        return loss if counted is None else counted

    def _loss_without_repeats(self, targets: Any) -> torch.Tensor | None:
        """The (micro)batch's loss over its samples that are not repeats, for the
        training loss (the gradient keeps them all, as with any ``DistributedSampler``).

        Only the Trainer's own loss, which keeps no state, is computed a second time,
        without gradient, on those samples; a loss function of your own is called once
        a batch, and its batch's mean (None here) stands for them, as it does when a
        plugin replaces the loss.
        """
        state = self.state
        outputs = state.outputs
        if self.loss_fn is not cross_entropy or not (
            isinstance(outputs, torch.Tensor) and isinstance(targets, torch.Tensor)
        ):
            return None
        kept = outputs.shape[0] - state.repeated_samples
        if kept <= 0:
            return None  # nothing counts: its weight in the training loss is 0
        with torch.no_grad():
            saved, state.outputs = outputs, outputs[:kept]
            try:
                return self._loss(targets[:kept])
            finally:
                state.outputs = saved

    def _accumulate_microbatches(self, num_samples: int, repeated: int) -> torch.Tensor:
        """Runs each microbatch, weighting its mean loss by its share of the samples.

        The batch's ``repeated`` samples, at its end, are in its last microbatches;
        the loss returned weighs each microbatch by its share of the others.
        """
        state = self.state
        whole_batch = state.batch
        batch_loss = torch.zeros((), device=state.device)
        microbatches = split_batch(whole_batch, self.grad_accum)
        # Under DistributedDataParallel, gradients are averaged over ranks once, after
        # the last microbatch's backward, not after each.
        no_sync = getattr(state.model, "no_sync", contextlib.nullcontext)
        counted_samples, samples_before = num_samples - repeated, 0
        for index, microbatch in enumerate(microbatches):
            state.batch = microbatch
            inputs = state.get_inputs()
            size = batch_size(inputs)
            samples_after = num_samples - samples_before - size
            state.repeated_samples = min(size, max(0, repeated - samples_after))
            counted_share = (size - state.repeated_samples) / max(counted_samples, 1)
            with no_sync() if index < len(microbatches) - 1 else contextlib.nullcontext():
                loss = self._forward_backward(inputs, size / num_samples).detach()
            batch_loss += loss * counted_share
            samples_before += size
        state.batch = whole_batch
        state.repeated_samples = repeated
        return batch_loss

    def _forward(self, model: nn.Module, inputs: Any) -> Any:
        try:
            if self._autocast is None:  # fp32: not even a null context on the hot path
                return model(inputs)
            with self._autocast:
                return model(inputs)
        except Exception as error:
            add_note(
                error,
                f"raised by the model's forward {self._where()}, inputs {describe_item(inputs)}",
            )
            raise

    def _loss(self, targets: Any) -> torch.Tensor:
        state = self.state
        try:
            if self._autocast is None:
                return self.loss_fn(state.outputs, targets)
            with self._autocast:
                return self.loss_fn(state.outputs, targets)
        except Exception as error:
            add_note(
                error,
                f"raised by loss_fn(outputs, targets) {self._where()}, "
                f"outputs {describe_item(state.outputs)}, targets {describe_item(targets)}",
            )
            raise

    def _not_one_number(self, loss: Any, what: str, replaced: bool = False) -> str:
        """The error for a ``loss`` that is not a 0-d tensor, where ``what`` needed one:
        blamed on ``loss_fn``, or on the algorithms that change the loss (``replaced``)."""
        if isinstance(loss, torch.Tensor):
            fix = "reduce it to one number over the batch, e.g. reduction='mean' or .mean()"
        else:
            fix = "return the tensor itself, not .item() or a float"
        if not replaced:
            return (
                f"loss_fn {_name_of(self.loss_fn)} returned {describe_item(loss)} "
                f"{self._where()}; {what} must be a scalar tensor (0-d): {fix}."
            )
        changers = [
            type(algorithm).__name__
            for algorithm in self.state.algorithms
            if any(e.action == "changes" and e.subject == "loss" for e in algorithm.effects)
        ]
        by = (
            f" (the algorithms that declare changing it: {', '.join(changers)})" if changers else ""
        )
        return (
            f"state.loss, as the plugins left it at before_backward{by}, is "
            f"{describe_item(loss)} {self._where()}; {what} must be a scalar tensor (0-d): "
            f"a plugin that replaces state.loss must {fix}."
        )

    def _where(self) -> str:
        timestamp = self.state.timestamp
        if self._eval_batch is not None:
            return (
                f"in evaluation, at batch {self._eval_batch + 1} of the evaluation (after "
                f"{timestamp.batch} training batches)"
            )
        return f"in training at {timestamp.current_batch()}"

    def _eval_pending(self) -> bool:
        """Whether an evaluation is due at this clock and has not run (a resumed run)."""
        state, timestamp = self.state, self.state.timestamp
        if state.eval_dataloader is None or timestamp.batch == 0:
            return False
        if state.last_eval_batch == timestamp.batch:
            return False
        if self.eval_interval.unit is TimeUnit.EPOCH:
            return timestamp.batch_in_epoch == 0 and self._eval_due(timestamp.epoch)
        return self._eval_due(timestamp.batch)

    def _should_stop(self) -> bool:
        state = self.state
        return state.stop_reason is not None or state.timestamp.reached(state.max_duration)

    def _eval_due(self, count: int) -> bool:
        return self.state.eval_dataloader is not None and count % self.eval_interval.value == 0


def _name_of(function: Any) -> str:
    """A loss function as an error names it: a function's qualified name, a module's
    class and reduction, a partial's function and keywords."""
    if isinstance(function, functools.partial):
        given = ", ".join(f"{key}={value!r}" for key, value in function.keywords.items())
        return f"{_name_of(function.func)} (partial, {given})" if given else _name_of(function.func)
    if isinstance(function, nn.Module):
        reduction = getattr(function, "reduction", None)
        shown = f"(reduction={reduction!r})" if isinstance(reduction, str) else "()"
        return f"{type(function).__name__}{shown}"
    name = getattr(function, "__qualname__", None)
    return name if isinstance(name, str) else type(function).__name__
