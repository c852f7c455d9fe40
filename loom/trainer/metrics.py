"""Training and evaluation metrics, accumulated on the device and read once, and the
health check that stops a run whose loss is no longer finite."""

from __future__ import annotations

import functools
import math
import warnings
from typing import TYPE_CHECKING, Any

import torch

from loom.functional.collectives import all_reduce_max, all_reduce_sum, is_distributed
from loom.functional.cross_entropy import IGNORE_INDEX
from loom.trainer.positions import batch_position

if TYPE_CHECKING:  # State holds a TrainLoss, so this module cannot import it at run time
    from loom.trainer.state import State

__all__ = [
    "ECE_BINS",
    "EVAL_METRICS",
    "EvalMetrics",
    "NonFiniteLossError",
    "TrainLoss",
    "check_losses_are_finite",
]

ECE_BINS = 15
"""Equal-width confidence bins of the expected calibration error."""

EVAL_METRICS = ("eval/loss", "eval/accuracy", "eval/top5_accuracy", "eval/nll", "eval/ece")
"""What an evaluation can compute (:meth:`EvalMetrics.compute`): each is one of these."""


# Layout of the packed accumulator: a few totals, then the calibration bins. One
# buffer means one host transfer per evaluation.
_LOSS, _COUNT, _TOP1, _TOP5, _NLL, _NOT_CLASSES = range(6)
_BIN_COUNT, _BIN_CONFIDENCE, _BIN_CORRECT = (6 + i * ECE_BINS for i in range(3))


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the batch."""


def check_losses_are_finite(state: State) -> None:
    """Raises NonFiniteLossError naming the first NaN or infinite loss not yet checked,
    and the latest checkpoint written (``state.checkpoint_path``), from before it.

    Under torchrun every rank checks at the same points and raises together, naming
    the first such batch of any rank's (one rank raising alone would leave the others
    waiting in the next collective).
    """
    position = state.train_losses.first_non_finite()
    if state.world_size > 1 and is_distributed():
        position = _first_on_any_rank(position, state.device)
    if position is not None:
        timestamp = state.timestamp
        run_batch = timestamp.batch - timestamp.batch_in_epoch + position
        where = batch_position(timestamp.epoch, position, run_batch)
        # No checkpoint is written once a loss is not finite: the latest is from before.
        latest = (
            ""
            if state.checkpoint_path is None
            else f" (the latest, from before it: {state.checkpoint_path})"
        )
        raise NonFiniteLossError(
            f"the training loss is not finite at {where}; training stopped and "
            f"the checkpoints already written were left as they were{latest}. Lower the "
            "learning rate, clip gradients (grad_clip_norm) or check the inputs of that batch."
        )


def _first_on_any_rank(position: int | None, device: torch.device) -> int | None:
    none = 2**62  # no position: later than any
    mine = torch.tensor(-(none if position is None else position), device=device)
    first = -int(all_reduce_max(mine).item())
    return None if first == none else first


class TrainLoss:
    """Mean training loss per sample over the batches since the last :meth:`compute`.

    Each batch's mean loss weighs as many samples as the batch counts, so that the
    result is the mean over the epoch's samples whatever the batch sizes and the
    number of ranks (a batch's repeated samples, see ``State.repeated_samples``, do
    not count). Keeps every batch's loss on the device and reads them only when
    asked (one number per :meth:`first_non_finite`, one per :meth:`compute`), so the
    training step never waits for the device. ``update(loss, samples)`` adds one
    batch: its loss, a scalar tensor detached from its graph (so that no spent graph
    outlives its step), and the number of samples it counts.

    Examples:
        >>> losses = TrainLoss()
        >>> losses.update(torch.tensor(0.5), 3)
        >>> losses.update(torch.tensor(0.25), 1)  # a last, smaller batch
        >>> losses.compute()  # (3 * 0.5 + 1 * 0.25) / 4
        0.4375
    """

    def __init__(self) -> None:
        self._checked: list[torch.Tensor] = []  # 1-D chunks, known to be finite
        self._unchecked: torch.Tensor | None = None  # 1-D, stacked but not yet found finite
        self._pending: list[torch.Tensor] = []  # 0-D, one per batch
        self._samples: list[int] = []  # one per batch, in the order of the losses

    def update(self, loss: torch.Tensor, samples: int) -> None:
        self._pending.append(loss)
        self._samples.append(samples)

    def compute(self) -> float | None:
        """The mean since the last call (None if no batch ran), then starts over.

        Under torchrun, the mean over every rank's samples (every rank must call it).
        """
        mean = self.mean()
        self._checked, self._unchecked, self._samples = [], None, []
        return mean

    def mean(self) -> float | None:
        """The mean since the last :meth:`compute`, which goes on counting: that of an
        epoch cut short, whose later batches a resumed run adds (as :meth:`compute`,
        every rank must call it)."""
        losses = self._all()
        if losses is None:
            return None
        samples = torch.tensor(self._samples, dtype=torch.float32, device=losses.device)
        # A batch that counts nothing is left out, not multiplied: 0 * inf would be NaN.
        weighted = torch.where(samples > 0, losses.float() * samples, 0.0)
        totals = all_reduce_sum(torch.stack([weighted.sum(), samples.sum()])).tolist()
        return totals[0] / totals[1] if totals[1] > 0 else None

    def first_non_finite(self) -> int | None:
        """The position (batch of the epoch) of the first NaN or infinite loss not checked
        before, or None. One read from the device for all the new losses.

        Examples:
            >>> losses = TrainLoss()
            >>> for value in (0.5, float("nan"), 0.2):
            ...     losses.update(torch.tensor(value), 8)
            >>> losses.first_non_finite()
            1
        """
        new = self._unchecked_losses()
        if new is None:
            return None
        # The sum is finite when every loss is, so the common case costs one reduction
        # and one read; only a sum that overflowed or met a NaN looks loss by loss.
        if not math.isfinite(new.sum(dtype=torch.float32).item()):
            finite = new.isfinite()
            if not bool(finite.all()):  # left unchecked: reported again until compute()
                already_checked = sum(len(chunk) for chunk in self._checked)
                return already_checked + int((~finite).nonzero()[0])
        self._checked.append(new)
        self._unchecked = None
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The epoch's losses and their batches' sample counts so far, so a resumed
        epoch reports the same mean."""
        losses = self._all()
        return {
            "losses": losses.float().cpu() if losses is not None else torch.zeros(0),
            "samples": torch.tensor(self._samples, dtype=torch.long),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """``losses`` and ``samples`` as :meth:`state_dict` gives them."""
        self._checked, self._unchecked = [], state["losses"]
        self._samples = state["samples"].tolist()
        self._pending.clear()

    def _unchecked_losses(self) -> torch.Tensor | None:
        """The losses not yet found finite, as one 1-D tensor (None if there are none)."""
        parts = [] if self._unchecked is None else [self._unchecked]
        if self._pending:
            parts.append(torch.stack(self._pending).reshape(-1))
            self._pending.clear()
        parts = [part for part in parts if len(part)]
        if not parts:
            self._unchecked = None
            return None
        self._unchecked = parts[0] if len(parts) == 1 else torch.cat(parts)
        return self._unchecked

    def _all(self) -> torch.Tensor | None:
        """Every loss since the last compute, as one 1-D tensor, in batch order."""
        unchecked = self._unchecked_losses()
        parts = self._checked if unchecked is None else [*self._checked, unchecked]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class EvalMetrics:
    """Loss, top-1/top-5 accuracy, NLL and expected calibration error over an eval set.

    Outputs of shape ``(N, C, ...)`` count one sample per position; targets are
    class indices (positions equal to -100 are skipped) or dense distributions
    (whose argmax is the label). Any other outputs and targets (a regression's, say:
    one output a sample, or dense targets that are not distributions) are not class
    scores and labels: the evaluation then reports ``eval/loss`` alone, the mean over
    samples, and says so once.

    Examples:
        >>> import torch
        >>> metrics = EvalMetrics()
        >>> logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
        >>> metrics.update(logits, torch.tensor([0, 1, 1]), loss=torch.tensor(0.5))
        >>> round(metrics.compute()["eval/accuracy"], 4)
        0.6667
    """

    def __init__(self) -> None:
        self._totals: torch.Tensor | None = None
        self._num_classes = 0
        self.reliability: dict[str, list[float]] | None = None
        """After :meth:`compute`: per confidence bin, its ``count``, mean
        ``confidence`` and ``accuracy`` (0 where empty): a reliability diagram."""

    def reset(self) -> None:
        self._totals = None

    @torch.no_grad()
    def update(self, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        """Adds a batch: its logits, targets and mean ``loss`` over its samples."""
        if not _class_scores_and_labels(outputs, targets):
            self._add(_loss_only(outputs, loss))
            return
        num_classes = outputs.shape[1]
        logits = outputs.detach().float().movedim(1, -1).reshape(-1, num_classes)
        not_distributions = torch.zeros((), device=logits.device)
        if targets.is_floating_point():
            rows = targets.detach().movedim(1, -1).reshape(-1, num_classes)
            labels = rows.argmax(dim=1)
            valid = torch.ones_like(labels, dtype=torch.float32)
            # Read with the totals, once an evaluation: dense targets that are not
            # distributions (nor all-zero ignored rows) are a regression's.
            mass = rows.float().sum(dim=1)
            # Low-precision targets (bf16 rounds near 1 in steps of 0.004) sum less exactly.
            tolerance = max(1e-3, 4 * num_classes * torch.finfo(targets.dtype).eps)
            off = ((mass - 1).abs() > tolerance) & (mass != 0)
            not_distributions = ((rows < 0).any(dim=1) | off).any().float()
        else:
            labels = targets.detach().reshape(-1)
            valid = (labels != IGNORE_INDEX).float()
            labels = labels.clamp(min=0)  # ignored positions get weight 0 below
        log_probs = torch.log_softmax(logits, dim=1)
        confidence, predicted = log_probs.max(dim=1)
        confidence = confidence.exp()
        correct = (predicted == labels).float() * valid
        top_k = min(5, num_classes)
        in_top5 = (log_probs.topk(top_k, dim=1).indices == labels[:, None]).any(dim=1)
        nll = -log_probs.gather(1, labels[:, None]).squeeze(1)
        count = valid.sum()

        head = torch.stack(
            [
                loss.detach().float() * count,
                count,
                correct.sum(),
                (in_top5.float() * valid).sum(),
                (nll * valid).sum(),
                not_distributions,
            ]
        )
        bins = (confidence * ECE_BINS).ceil().long().clamp(1, ECE_BINS) - 1
        per_bin = torch.zeros(3, ECE_BINS, dtype=torch.float64, device=logits.device)
        per_bin.index_add_(1, bins, torch.stack([valid, confidence * valid, correct]).double())
        self._add(torch.cat([head.double(), per_bin.flatten()]))
        self._num_classes = num_classes

    def _add(self, totals: torch.Tensor) -> None:
        self._totals = totals if self._totals is None else self._totals.add_(totals)

    def compute(self) -> dict[str, float]:
        """The metrics over everything added since the last :meth:`reset`.

        Under torchrun, over every rank's samples, as one process evaluating all of
        them would report (every rank must call it, even one that saw no batch).
        """
        totals = self._totals
        if is_distributed():
            if totals is None:
                totals = torch.zeros(_BIN_CORRECT + ECE_BINS, dtype=torch.float64, device=_device())
            all_reduce_sum(totals)
            num_classes = torch.tensor([self._num_classes], device=totals.device)
            self._num_classes = int(all_reduce_max(num_classes).item())
        if totals is None:
            return {}
        values = totals.tolist()  # the one host transfer of an evaluation
        count = values[_COUNT]
        if count == 0:
            return {}
        if values[_NOT_CLASSES]:
            _say_once_that_only_the_loss_is_reported()
            self.reliability = None
            return {"eval/loss": values[_LOSS] / count}
        bin_gaps = (
            abs(values[_BIN_CORRECT + b] - values[_BIN_CONFIDENCE + b]) for b in range(ECE_BINS)
        )
        metrics = {
            "eval/loss": values[_LOSS] / count,
            "eval/accuracy": values[_TOP1] / count,
        }
        if self._num_classes >= 5:
            metrics["eval/top5_accuracy"] = values[_TOP5] / count
        metrics["eval/nll"] = values[_NLL] / count
        metrics["eval/ece"] = sum(bin_gaps) / count
        counts = values[_BIN_COUNT : _BIN_COUNT + ECE_BINS]
        self.reliability = {
            "count": counts,
            "confidence": _per_sample(values[_BIN_CONFIDENCE : _BIN_CONFIDENCE + ECE_BINS], counts),
            "accuracy": _per_sample(values[_BIN_CORRECT : _BIN_CORRECT + ECE_BINS], counts),
        }
        return metrics


def _class_scores_and_labels(outputs: Any, targets: Any) -> bool:
    """Whether the shapes are those of class scores ``(N, C, ...)``, ``C >= 2``, and of
    class indices ``(N, ...)`` or dense targets of the scores' shape."""
    if not (isinstance(outputs, torch.Tensor) and isinstance(targets, torch.Tensor)):
        return False
    if outputs.dim() < 2 or outputs.shape[1] < 2 or not outputs.is_floating_point():
        return False
    if targets.is_floating_point():
        return targets.shape == outputs.shape
    return targets.dtype != torch.bool and targets.shape == (outputs.shape[0], *outputs.shape[2:])


def _loss_only(outputs: Any, loss: torch.Tensor) -> torch.Tensor:
    """The totals of a batch that is not classification: its loss over its samples."""
    samples = len(outputs) if isinstance(outputs, torch.Tensor) and outputs.dim() else 1
    totals = torch.zeros(_BIN_CORRECT + ECE_BINS, dtype=torch.float64, device=loss.device)
    totals[_LOSS] = loss.detach().double() * samples
    totals[_COUNT] = samples
    totals[_NOT_CLASSES] = 1
    return totals


@functools.cache
def _say_once_that_only_the_loss_is_reported() -> None:
    warnings.warn(
        "evaluation: the outputs and targets are not class scores (N, C, ...) with C >= 2 "
        "and class indices or distributions, so only eval/loss is reported (no accuracy, "
        "NLL or calibration, which would be meaningless).",
        stacklevel=3,
    )


def _device() -> torch.device:
    """Where this process's collectives run: its GPU under NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _per_sample(sums: list[float], counts: list[float]) -> list[float]:
    return [total / count if count else 0.0 for total, count in zip(sums, counts, strict=True)]
