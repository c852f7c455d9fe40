"""The run's state, which every plugin shares; its clock (durations and timestamps); and
the checks of what a run is made of."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import nn

from loom.trainer.batch import BatchKey, get_batch_item, num_batches, set_batch_item
from loom.trainer.metrics import TrainLoss
from loom.trainer.positions import batch_position
from loom.trainer.sharding import Strategy

__all__ = [
    "Duration",
    "State",
    "TimeUnit",
    "Timestamp",
    "check_dataloader",
    "check_epoch_has_batches",
    "checked_optimizers",
    "checked_schedulers",
    "steps_on_a_metric",
]

_DURATION_PATTERN = re.compile(r"(\d+)(ep|ba|sp)")
_ACCEPTED_FORMS = (
    "a positive whole number followed by a unit: '10ep' (epochs), "
    "'500ba' (batches) or '20000sp' (samples)"
)


class TimeUnit(str, Enum):
    """The units a :class:`Duration` counts in."""

    EPOCH = "ep"
    BATCH = "ba"
    SAMPLE = "sp"


_CLOCK_FIELDS = {TimeUnit.EPOCH: "epoch", TimeUnit.BATCH: "batch", TimeUnit.SAMPLE: "samples"}


@dataclass(frozen=True)
class Duration:
    """A length of training: a positive count of epochs, batches or samples.

    Examples:
        >>> Duration.parse("10ep")
        Duration(value=10, unit=<TimeUnit.EPOCH: 'ep'>)
        >>> str(Duration.parse("500ba"))
        '500ba'
    """

    value: int
    unit: TimeUnit
    clock_field: str = field(init=False, repr=False, compare=False)
    """The :class:`Timestamp` attribute that counts this duration's unit."""

    def __post_init__(self) -> None:
        # Looked up once here: the Trainer compares the clock with it after every batch.
        object.__setattr__(self, "clock_field", _CLOCK_FIELDS[TimeUnit(self.unit)])

    @classmethod
    def parse(cls, text: str | Duration, *, name: str = "duration") -> Duration:
        """Reads ``"<count><unit>"``; ``name`` is the argument named in errors.

        Raises:
            ValueError: ``text`` is not a positive whole number followed by
                ``ep``, ``ba`` or ``sp``.
        """
        if isinstance(text, Duration):
            return text
        match = _DURATION_PATTERN.fullmatch(text) if isinstance(text, str) else None
        if match is None or int(match.group(1)) == 0:
            raise ValueError(f"{name}={text!r} is not a duration; expected {_ACCEPTED_FORMS}.")
        return cls(int(match.group(1)), TimeUnit(match.group(2)))

    def __str__(self) -> str:
        return f"{self.value}{self.unit.value}"


@dataclass(slots=True)
class Timestamp:
    """The training clock, advanced by the Trainer.

    Attributes:
        epoch: Epochs completed.
        batch: Optimizer steps (training batches) completed since the start of training.
        batch_in_epoch: Batches completed in the current epoch.
        samples: Training samples consumed since the start of training.
    """

    epoch: int = 0
    batch: int = 0
    batch_in_epoch: int = 0
    samples: int = 0

    def current_batch(self) -> str:
        """The batch being trained, as people count (from 1): see :func:`batch_position`."""
        return batch_position(self.epoch, self.batch_in_epoch, self.batch)

    def last_batch(self) -> str:
        """The batch completed last, as people count: ``"epoch 3, batch 7 of the epoch
        (batch 53 of the run)"``, or ``"the end of epoch 2 (batch 46 of the run)"``."""
        if self.batch_in_epoch == 0:
            return f"the end of epoch {self.epoch} (batch {self.batch} of the run)"
        return batch_position(self.epoch, self.batch_in_epoch - 1, self.batch - 1)

    def reached(self, duration: Duration) -> bool:
        """Whether at least ``duration`` has elapsed since the start of training."""
        return getattr(self, duration.clock_field) >= duration.value

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "batch_in_epoch": self.batch_in_epoch,
            "samples": self.samples,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.batch = int(state["batch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.samples = int(state["samples"])


@dataclass(eq=False)
class State:
    """The run's state, shared by the Trainer and every plugin.

    Plugins read and write these fields and nothing else of the Trainer. Which
    event writes which field is in the :class:`~loom.trainer.events.Event` docstring.

    Attributes:
        model: The module being trained (wrapped, e.g. in DistributedDataParallel,
            when the run is distributed: after ``init``, so that a plugin may change the
            module there, its structure or its layout).
        optimizers: The optimizers, stepped in this order after every batch.
        schedulers: Learning-rate schedulers, stepped after every optimizer step; a
            ``ReduceLROnPlateau`` after each evaluation at ``eval_interval`` instead.
        max_duration: When training ends.
        train_dataloader: Yields the training batches.
        eval_dataloader: Yields the evaluation batches, or None.
        device: Where the model and batches live.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        input_key: Where the model's inputs are in a batch (see ``get_batch_item``):
            the run's key, which the Trainer and every plugin not given a key of
            its own use. Read and replace the inputs with :meth:`get_inputs` and
            :meth:`set_inputs`.
        target_key: Where the targets are in a batch, in the same way
            (:meth:`get_targets`, :meth:`set_targets`).
        rank: This process's rank among ``world_size`` processes (0 of 1 when
            not distributed).
        world_size: How many processes train together.
        strategy: How the model is spread over them: replicated (``"ddp"``) or
            sharded (``"fsdp"``); see :mod:`loom.trainer.sharding`.
        timestamp: The training clock.
        batch: The current batch (training or evaluation), on ``device``. Read and
            replace its inputs and targets with the methods below, other items with
            ``get_batch_item`` and ``set_batch_item``.
        repeated_samples: How many samples at the end of the current training
            (micro)batch repeat earlier ones of the epoch: under torchrun a
            ``DistributedSampler`` pads the data so that every rank has as many
            samples (see :func:`~loom.trainer.runtime.repeated_samples`). 0 but in
            an epoch's last batch. They count in the gradient, as with any
            ``DistributedSampler``; a plugin that gathers statistics over the
            epoch's samples leaves them out, as the training loss and online label
            smoothing do, so that every sample counts once whatever the world size.
        outputs: The model's outputs for the current batch, set after the forward.
        loss: The loss of the current (micro)batch, set after the loss, before
            ``backward``; an algorithm may replace it at ``before_backward``.
        metrics: The latest value of every metric, e.g. ``"train/loss"`` at
            ``epoch_end`` and ``"eval/accuracy"`` at ``eval_end``.
        reliability: The latest evaluation's calibration, for a reliability
            diagram: per equal-width confidence bin (``ECE_BINS`` of them), the
            sample ``count``, mean ``confidence`` and ``accuracy``. None before
            the first evaluation.
        grad_scaler: The fp16 gradient scaler, or None.
        stop_reason: Why training was asked to stop, or None; see :meth:`request_stop`.
        algorithms: The run's algorithms, in order (read only).
        callbacks: The run's callbacks, in order (read only).
        train_losses: The current epoch's training losses, kept on the device, read
            by each finite-loss check and once at ``epoch_end`` (``train/loss``).
        last_eval_batch: ``timestamp.batch`` at the loop's latest evaluation (at
            ``eval_interval`` or the final one; not one called as ``trainer.eval()``),
            or None.
        epoch_start_rng: Every generator's state when the current epoch's data
            iterator was made: a checkpoint holds it, so a run resumed mid-epoch
            gets the same shuffle.
        interrupt: The signal (``"SIGTERM"``, ``"SIGINT"``) that interrupted
            training, or None. Training then stops after the current batch, the
            plugins' ``fit_end`` runs (a checkpoint callback saves), and ``fit``
            raises :class:`~loom.trainer.signals.TrainingInterrupted`.
        checkpoint_path: The latest checkpoint to resume from, or None. A plugin
            that saves checkpoints sets it as soon as the file is complete, and
            declares so (``writes = ("checkpoint_path",)``).
        evaluation: Why the evaluation in progress runs: ``"scheduled"`` (at
            ``eval_interval``), ``"final"`` (the one that ends training), ``"called"``
            (``trainer.eval()``); None outside evaluations. A plugin that acts on the
            loop's evaluations (early stopping, best checkpoints) reads it.
        best_checkpoints: The checkpoints kept for their evaluation metric, best
            first, each ``{"path": ..., "metric": ..., "value": ...}``; written by
            the checkpoint callback that keeps them (``writes``), as
            ``checkpoint_path`` is.
        plots: The image files of the run's plots, which the plugin that draws them
            (a job's run recorder) lists at ``fit_end`` and declares (``writes``), for
            the trackers after it to upload.
        recomputing: True while :meth:`recompute_gradients` runs the batch again. A
            plugin that draws something at random for the batch (MixUp's pairing)
            uses its first draw again then, and one that gathers statistics (online
            label smoothing) does not count the batch twice.
        eval_model: The module the loop's evaluations and ``trainer.predict`` run,
            when not the one being trained: a plugin that keeps other weights sets
            it (EMA at ``init``, SWA at ``fit_end``) and declares so (``writes``).
            None: the trained model.
        export_model: The module whose weights are the run's result (a run
            directory's ``model.pt``), when not the one being trained; set, and
            declared, as ``eval_model`` is (by EMA, or by SWA at ``fit_end``). None:
            the trained model.
    """

    model: nn.Module
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[Any]
    max_duration: Duration
    train_dataloader: Iterable[Any]
    eval_dataloader: Iterable[Any] | None
    device: torch.device
    precision: str
    input_key: BatchKey = 0
    target_key: BatchKey = 1
    rank: int = 0
    world_size: int = 1
    strategy: Strategy = field(default_factory=Strategy)
    timestamp: Timestamp = field(default_factory=Timestamp)
    batch: Any = None
    repeated_samples: int = 0
    outputs: Any = None
    loss: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reliability: dict[str, list[float]] | None = None
    grad_scaler: torch.amp.GradScaler | None = None
    stop_reason: str | None = None
    algorithms: list[Any] = field(default_factory=list)
    callbacks: list[Any] = field(default_factory=list)
    train_losses: TrainLoss = field(default_factory=TrainLoss)
    last_eval_batch: int | None = None
    epoch_start_rng: dict[str, Any] | None = None
    interrupt: str | None = None
    checkpoint_path: str | None = None
    evaluation: str | None = None
    best_checkpoints: list[dict[str, Any]] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    recomputing: bool = False
    eval_model: nn.Module | None = None
    export_model: nn.Module | None = None
    # The Trainer's loop, which recompute_gradients and evaluate call back into.
    _loop: Any = field(default=None, repr=False)

    def get_inputs(self, key: BatchKey | None = None) -> Any:
        """The current batch's inputs: at the run's ``input_key``, or at ``key`` when given.

        Examples:
            >>> import torch
            >>> from loom.trainer import Duration
            >>> state = State(model=torch.nn.Identity(), optimizers=[], schedulers=[],
            ...               max_duration=Duration.parse("1ep"), train_dataloader=[],
            ...               eval_dataloader=None, device=torch.device("cpu"),
            ...               precision="fp32", input_key="image", target_key="label")
            >>> state.batch = {"image": torch.zeros(2, 3), "label": torch.tensor([0, 1])}
            >>> state.get_inputs().shape, state.get_targets().tolist()
            (torch.Size([2, 3]), [0, 1])
            >>> state.set_targets(torch.tensor([1, 1]))
            >>> state.batch["label"].tolist()
            [1, 1]
        """
        return get_batch_item(self.batch, self.input_key if key is None else key)

    def set_inputs(self, inputs: Any, key: BatchKey | None = None) -> None:
        """Replaces the current batch's inputs (at the run's ``input_key``, or ``key``).

        The batch is rebuilt (see ``set_batch_item``), so the dataloader's own
        containers are never changed.
        """
        self.batch = set_batch_item(self.batch, self.input_key if key is None else key, inputs)

    def get_targets(self, key: BatchKey | None = None) -> Any:
        """The current batch's targets: at the run's ``target_key``, or at ``key``."""
        return get_batch_item(self.batch, self.target_key if key is None else key)

    def set_targets(self, targets: Any, key: BatchKey | None = None) -> None:
        """Replaces the current batch's targets (at the run's ``target_key``, or ``key``)."""
        self.batch = set_batch_item(self.batch, self.target_key if key is None else key, targets)

    def request_stop(self, reason: str) -> None:
        """Asks the Trainer to end training after the current batch.

        Training ends once the event in progress has finished: after
        ``batch_end`` when asked during a batch, or after the evaluation that
        follows ``epoch_end`` when asked there. ``fit_end`` still fires.

        Args:
            reason: Shown to the user, e.g. ``"eval/loss has not improved for 3 epochs"``.
        """
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"request_stop(reason={reason!r}): give a non-empty string.")
        self.stop_reason = reason

    def recompute_gradients(self) -> torch.Tensor:
        """Runs the current batch's forward, loss and backward again, from zeroed
        gradients, and returns its loss (unweighted, as the first pass's): the
        extension point for methods that take more than one gradient per step
        (:class:`~loom.algorithms.SAM` changes the weights, then calls this).

        Only at ``before_optimizer_step``. Every microbatch runs again with every
        event from ``before_forward`` to ``after_backward``, and ``recomputing``
        True, so the algorithms change the batch as they did (the same targets, the
        same mixing) and count nothing twice. The training loss stays the first
        pass's.

        Raises:
            RuntimeError: Called at another event, or on a State no Trainer owns.
        """
        return self._trainer_loop("recompute_gradients").recompute_gradients()

    def evaluate(self, model: nn.Module, dataloader: Iterable[Any] | None = None) -> dict[str, Any]:
        """Evaluates ``model`` (e.g. an average of the trained weights) as the loop's
        evaluations do: the run's device, precision and keys, loom's metrics and the
        Trainer's ``eval_metrics``, on ``dataloader`` (default: ``eval_dataloader``).

        No event fires, and ``metrics``, ``batch`` and ``outputs`` are as they were;
        ``model`` goes back to the mode it was in. Under torchrun every rank calls it.

        Returns:
            The metrics, named as the loop's are (``eval/accuracy``, ...).

        Raises:
            ValueError: No dataloader to evaluate on.
            RuntimeError: On a State no Trainer owns.
        """
        return self._trainer_loop("evaluate").evaluate_model(model, dataloader)

    def _trainer_loop(self, method: str) -> Any:
        if self._loop is None:
            raise RuntimeError(
                f"state.{method}() calls back into the Trainer that owns this State; "
                "this one was built without a Trainer."
            )
        return self._loop

    @property
    def is_main_process(self) -> bool:
        """True on the one process (rank 0) that writes files and prints."""
        return self.rank == 0


# Checks of what a run is made of: the Trainer runs them on its arguments before it
# changes anything.


def check_dataloader(dataloader: Any, argument: str) -> None:
    if not isinstance(dataloader, Iterable) or isinstance(dataloader, torch.Tensor | str):
        raise TypeError(
            f"{argument} must be an iterable of batches such as a torch DataLoader, "
            f"got {type(dataloader).__name__}."
        )


def check_epoch_has_batches(loader: Any, rank: int = 0, world_size: int = 1) -> None:
    """Refuses a DataLoader (``rank``'s of ``world_size`` under torchrun) that yields no
    batch an epoch, naming its dataset's size, its batch size and ``drop_last``.

    Anything else passes: an empty list (a Trainer that only evaluates or predicts;
    ``fit`` refuses it), a loader with batches, one without a length (its epoch finds
    out).
    """
    dataset = getattr(loader, "dataset", None)
    if dataset is None or num_batches(loader) != 0:
        return
    dataset_size, samples = num_batches(dataset), num_batches(getattr(loader, "sampler", None))
    batch, drop_last = getattr(loader, "batch_size", None), getattr(loader, "drop_last", None)
    if samples is None or samples == dataset_size:
        samples = dataset_size
        held = f"its dataset has {'no' if dataset_size == 0 else dataset_size} samples"
    else:
        share = f", rank {rank}'s share of {world_size} ranks" if world_size > 1 else ""
        held = (
            f"its {type(loader.sampler).__name__} gives it {samples} of the dataset's "
            f"{dataset_size} samples{share}"
        )
    if not samples:
        why = f" (batch_size={batch}, drop_last={drop_last}); give it training data"
    elif batch is None:  # batches from a batch_sampler of one's own
        why = f", and its {type(loader.batch_sampler).__name__} makes no batch of them"
    else:
        why = (
            f", fewer than batch_size={batch}, and drop_last={drop_last} drops that partial "
            f"batch; use a batch_size of at most {samples}, or drop_last=False"
        )
    raise ValueError(f"train_dataloader yields no batches: {held}{why}.")


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


def checked_schedulers(
    schedulers: Any, evaluates: bool = True, computed: Sequence[str] | None = None
) -> list[Any]:
    """The schedulers as a list, each with a ``step()``; one that reacts to a metric
    (``ReduceLROnPlateau``) names it as its ``monitor``, which must be among the
    evaluation's ``computed`` metrics (when given), and needs an evaluation."""
    if schedulers is None:
        return []
    listed = schedulers if isinstance(schedulers, Sequence) else [schedulers]
    for index, scheduler in enumerate(listed):
        name = type(scheduler).__name__
        if not callable(getattr(scheduler, "step", None)):
            raise TypeError(
                f"schedulers[{index}] is a {name}, which has no step(); "
                "pass learning-rate schedulers such as torch.optim.lr_scheduler.CosineAnnealingLR."
            )
        if not steps_on_a_metric(scheduler):
            continue
        monitor = getattr(scheduler, "monitor", None)
        if not isinstance(monitor, str):
            raise TypeError(
                f"schedulers[{index}] is a {name}, which steps on a metric: say which, as "
                "scheduler.monitor = 'eval/loss', or build it with loom.optim.plateau; "
                f"its monitor is {monitor!r}."
            )
        if not evaluates:
            raise ValueError(
                f"schedulers[{index}] ({name}) steps on {monitor!r} after each evaluation, "
                "but there is no eval_dataloader: give one."
            )
        if computed is not None and monitor not in computed:
            raise ValueError(
                f"schedulers[{index}] ({name}) monitors {monitor!r}, which the evaluation "
                f"does not compute; it computes {', '.join(computed)} (eval_metrics add more)."
            )
    return list(listed)


def steps_on_a_metric(scheduler: Any) -> bool:
    """Whether the Trainer steps ``scheduler`` after each evaluation at ``eval_interval``,
    with the metric its ``monitor`` names, rather than after every batch: a
    ``ReduceLROnPlateau``."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
