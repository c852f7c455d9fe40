"""Durations such as ``"10ep"``, ``"500ba"`` and ``"20000sp"``, and the training clock."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Duration", "TimeUnit", "Timestamp"]

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
