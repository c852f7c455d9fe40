"""Checkpoint: saves the run at an interval, keeps the last few and the best one."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from loom.trainer import (
    Callback,
    Duration,
    State,
    TimeUnit,
    checkpoint_name,
    remove_stale_temporaries,
    write_checkpoint,
)
from loom.trainer.files import remove_path

__all__ = ["Checkpoint", "latest_checkpoint"]

_NAME = re.compile(r"epoch(\d+)-batch(\d+)(?:\.pt)?")
"""An interval checkpoint's name: a file, or a sharded run's folder (no suffix)."""
_BEST = re.compile(r"best-epoch\d+-batch\d+(?:\.pt)?")


class Checkpoint(Callback):
    """Saves ``<folder>/epoch<E>-batch<B>.pt`` every ``interval``, at the end of training,
    and when a signal interrupts it; with ``best_metric``, also the ``keep_best``
    evaluations that scored best on it, as ``<folder>/best-epoch<E>-batch<B>.pt``. A
    sharded run (``strategy="fsdp"``) saves folders of the same names without ``.pt``.

    Each interval and final save sets ``state.checkpoint_path`` to the new file as soon
    as it is complete, and each best one ``state.best_checkpoints`` (best first), so
    the callbacks listed after this one (a run's summary, a logger) read the
    checkpoints of the moment, also at ``fit_end``.

    Each file is written to a temporary name and renamed, so a crash during a save
    leaves the previous checkpoint whole (a folder is filled under a temporary name and
    renamed). A checkpoint is never taken of a run whose loss has become NaN or
    infinite. Only the main process writes a file; under torchrun it holds every
    rank's own state too (each rank resumes as itself), so every rank takes part in
    each save, as each writes its shards of a folder. The final save at ``fit_end`` is
    skipped only when nothing ran since the latest one, so it holds an evaluation or a
    plugin's decision to stop that came after that one.
    Interval checkpoints are pruned by their place in training, the furthest kept; best
    ones among themselves, and a resumed run forgets the best files its first run wrote
    after the checkpoint.
    Resume with ``Trainer(..., load_path=latest_checkpoint(folder))``.

    Args:
        folder: Where the checkpoints go.
        interval: How often: in epochs (``"1ep"``) or batches (``"200ba"``).
        keep_last: How many interval checkpoints to keep (the oldest go first);
            None keeps all.
        best_metric: An evaluation metric, e.g. ``"eval/accuracy"``, or None.
        best_mode: ``"max"`` if larger is better, ``"min"`` if smaller is.
        keep_best: How many of the best evaluations to keep (the k best, not the
            first k); needs ``best_metric``. Of equal values the earlier is kept. Only
            the loop's evaluations rank, not a ``trainer.eval()`` of one's own.

    Examples:
        >>> import pathlib, tempfile, torch
        >>> from loom import Trainer
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> model = torch.nn.Linear(2, 2)
        >>> batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))] * 3
        >>> trainer = Trainer(
        ...     model, batches, max_duration="2ep", device="cpu",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        ...     callbacks=[Checkpoint(folder, interval="1ep", keep_last=1)],
        ... )
        >>> _ = trainer.fit()
        >>> sorted(path.name for path in folder.iterdir()), latest_checkpoint(folder).name
        (['epoch2-batch6.pt'], 'epoch2-batch6.pt')
    """

    writes = ("checkpoint_path", "best_checkpoints")
    reads = ("metrics",)  # every checkpoint holds them, and best_metric compares one

    def __init__(
        self,
        folder: str | os.PathLike[str],
        interval: str | Duration = "1ep",
        keep_last: int | None = 1,
        best_metric: str | None = None,
        best_mode: Literal["max", "min"] = "max",
        keep_best: int = 1,
    ):
        if not isinstance(folder, str | os.PathLike):
            raise TypeError(f"folder={folder!r} must be a path.")
        self.interval = Duration.parse(interval, name="interval")
        if self.interval.unit is TimeUnit.SAMPLE:
            raise ValueError(f"interval={interval!r} counts samples; give epochs or batches.")
        if keep_last is not None and (type(keep_last) is not int or keep_last < 1):
            raise ValueError(f"keep_last={keep_last!r} must be an int >= 1 or None.")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode={best_mode!r} must be 'max' or 'min'.")
        if type(keep_best) is not int or keep_best < 1:
            raise ValueError(f"keep_best={keep_best!r} must be an int >= 1.")
        if keep_best > 1 and best_metric is None:
            raise ValueError(
                f"keep_best={keep_best} keeps the best checkpoints by a metric: give "
                "best_metric too, e.g. best_metric='eval/accuracy'."
            )
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.keep_best = keep_best
        self.best: list[tuple[float, str]] = []  # (value, file name) of the kept, best first
        self._saved: tuple[Any, ...] | None = None  # the moment of the latest interval save

    @property
    def best_value(self) -> float | None:
        """The best value of ``best_metric`` so far, or None."""
        return self.best[0][0] if self.best else None

    def batch_end(self, state: State) -> None:
        if (
            self.interval.unit is TimeUnit.BATCH
            and state.timestamp.batch % self.interval.value == 0
        ):
            self._save(state)

    def epoch_end(self, state: State) -> None:
        if (
            self.interval.unit is TimeUnit.EPOCH
            and state.timestamp.epoch % self.interval.value == 0
        ):
            self._save(state)

    def eval_end(self, state: State) -> None:
        if self.best_metric is None or state.evaluation not in ("scheduled", "final"):
            return  # a trainer.eval() of one's own (a test set, say) ranks nothing
        value = state.metrics.get(self.best_metric)
        if value is None:
            raise KeyError(
                f"best_metric={self.best_metric!r} is not among the evaluation's metrics: "
                f"{', '.join(sorted(state.metrics))}."
            )
        timestamp = state.timestamp
        name = checkpoint_name(state, f"best-epoch{timestamp.epoch}-batch{timestamp.batch}")
        others = [(v, n) for v, n in self.best if n != name]  # an evaluation replayed
        ranked = sorted([*others, (value, name)], key=self._rank)
        if value != value or (value, name) not in ranked[: self.keep_best]:  # NaN: nowhere
            return
        self.best, dropped = ranked[: self.keep_best], ranked[self.keep_best :]
        self._publish(state)
        write_checkpoint(state, self.folder / name)  # it holds the list it is in
        if state.is_main_process:
            for _, old in dropped:
                remove_path(self.folder / old)

    def fit_start(self, state: State) -> None:
        if state.is_main_process:
            remove_stale_temporaries(self.folder)  # a save that a kill cut short
        if self.best_metric is not None and state.eval_dataloader is None:
            raise ValueError(
                f"Checkpoint: best_metric={self.best_metric!r} ranks evaluations, but the "
                "Trainer has no eval_dataloader: give one, or leave best_metric out."
            )
        if self.best_metric is None:
            return
        if state.is_main_process and state.timestamp.batch > 0:
            self._forget_best_files_the_resumed_run_did_not_keep()
        self._publish(state)  # a resumed run's, from its checkpoint

    def fit_end(self, state: State) -> None:
        # The end, an interruption, or what ran since the latest save at this batch (an
        # evaluation, a plugin's decision to stop): the checkpoint a resume starts from.
        if self._saved != _moment(state):
            self._save(state)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_metric": self.best_metric,
            "best_mode": self.best_mode,
            "best": [[value, name] for value, name in self.best],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "best" not in state:  # written before keep_best: best.pt, which no longer counts
            self.best = []
            return
        saved = (state.get("best_metric", self.best_metric), state.get("best_mode", self.best_mode))
        if state["best"] and saved != (self.best_metric, self.best_mode):
            raise ValueError(
                f"Checkpoint: the checkpoint ranked by {saved[0]!r} ({saved[1]}), this run "
                f"by {self.best_metric!r} ({self.best_mode}); resume with the same "
                "best_metric and best_mode, or start a new run."
            )
        self.best = [(float(value), Path(name).name) for value, name in state["best"]]

    def _forget_best_files_the_resumed_run_did_not_keep(self) -> None:
        """A resumed run's best list is its checkpoint's (the same on every rank): a best
        file the first run wrote after the checkpoint, which the resumed run writes again
        if it ranks, is deleted. (A listed file the first run deleted later is deleted
        again, as the replayed evaluation that outranks it comes.)"""
        listed = {name for _, name in self.best}
        for path in self.folder.glob("best-epoch*-batch*"):
            if _BEST.fullmatch(path.name) and path.name not in listed:
                remove_path(path)

    def _rank(self, entry: tuple[float, str]) -> float:
        """Best first; ``sorted`` keeps the earlier of equal values first."""
        return -entry[0] if self.best_mode == "max" else entry[0]

    def _publish(self, state: State) -> None:
        state.best_checkpoints = [
            {"path": str(self.folder / name), "metric": self.best_metric, "value": value}
            for value, name in self.best
        ]

    def _save(self, state: State) -> None:
        self._saved = _moment(state)
        timestamp = state.timestamp
        path = self.folder / checkpoint_name(
            state, f"epoch{timestamp.epoch}-batch{timestamp.batch}"
        )
        # Every rank: the checkpoint rank 0 writes (or all write), that each resumes from.
        state.checkpoint_path = str(write_checkpoint(state, path))
        if state.is_main_process and self.keep_last is not None:
            for _, old in _interval_checkpoints(self.folder)[: -self.keep_last]:
                remove_path(old)


def _moment(state: State) -> tuple[Any, ...]:
    """What a checkpoint of this moment would hold that one of an earlier moment at the
    same batch would not: an evaluation since, a request to stop since."""
    return (state.timestamp.batch, state.last_eval_batch, state.stop_reason)


def latest_checkpoint(*folders: str | os.PathLike[str]) -> Path | None:
    """The interval checkpoint furthest into training in ``folders`` (one, or those of
    several checkpoint callbacks), or None."""
    found = sorted(entry for folder in folders for entry in _interval_checkpoints(Path(folder)))
    return found[-1][1] if found else None


def _interval_checkpoints(folder: Path) -> list[tuple[tuple[int, int], Path]]:
    """The interval checkpoints in ``folder`` with their place in training,
    ``(batch, epoch)``, in the order training wrote them."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.fullmatch(path.name)
        if match:
            found.append(((int(match[2]), int(match[1])), path))
    return sorted(found)
