"""What differs between two resolved jobs, and which differences a resumed run may have.

A resumed run (``loom train --resume``, or ``--autoresume`` finding its run) must be the
run that was started: only :data:`RESUMABLE_CHANGES` may differ from the job in its
``config.yaml``, and not even those when the schedule is shaped by the run's length.

Examples:
    >>> run = {"optimizer": {"name": "sgd", "lr": 0.05}, "trainer": {"max_duration": "5ep"}}
    >>> now = {"optimizer": {"name": "sgd", "lr": 0.5}, "trainer": {"max_duration": "9ep"}}
    >>> changes = job_differences(run, now)
    >>> changes
    ['optimizer.lr', 'trainer.max_duration']
    >>> describe_differences(unresumable(changes), run, now)
    'optimizer.lr (0.05 in the run, 0.5 now)'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loom.optim.schedules import SHAPED_BY_RUN_LENGTH

__all__ = [
    "RESUMABLE_CHANGES",
    "describe_differences",
    "job_differences",
    "length_change_refused",
    "unresumable",
]

RESUMABLE_CHANGES = ("trainer.max_duration",)
"""What a resumed run may change from the job it started as: how long it trains."""


def job_differences(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two resolved jobs, sorted.

    An argument that one side's component has and the other's lacks (a newer torch's
    optimizer argument, say, filled with its default) is no difference; a component
    one side lacks altogether (a callback added) is.
    """
    first_flat, second_flat = _flatten(first), _flatten(second)

    def new_argument(key: str, other: dict[str, str]) -> bool:
        parent = key.rpartition(".")[0]
        return bool(parent) and any(name.startswith(f"{parent}.") for name in other)

    found = []
    for key in set(first_flat) | set(second_flat):
        if key in first_flat and key in second_flat:
            if first_flat[key] != second_flat[key]:
                found.append(key)
        elif not new_argument(key, second_flat if key in first_flat else first_flat):
            found.append(key)
    return sorted(found)


def unresumable(changes: list[str]) -> list[str]:
    """The ``changes`` a resumed run may not make (all but :data:`RESUMABLE_CHANGES`)."""
    return [key for key in changes if key not in RESUMABLE_CHANGES]


def describe_differences(
    keys: list[str], before: Mapping[str, Any], after: Mapping[str, Any]
) -> str:
    """Each key with its two values: ``optimizer.lr (0.05 in the run, 0.5 now)``."""
    old, new = _flatten(before), _flatten(after)
    return ", ".join(
        f"{key} ({old.get(key, 'absent')} in the run, {new.get(key, 'absent')} now)" for key in keys
    )


def length_change_refused(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """Why ``wanted`` may not resume ``saved`` with another ``trainer.max_duration``: its
    schedule (one of :data:`~loom.optim.schedules.SHAPED_BY_RUN_LENGTH`) takes its shape
    from the run's length, which the checkpoint holds. None when the length is the same
    or the schedule allows it."""
    schedule = saved["scheduler"]
    if (
        schedule is None
        or schedule["name"] not in SHAPED_BY_RUN_LENGTH
        or not job_differences(saved["trainer"], wanted["trainer"])
    ):
        return None
    return (
        f"trainer.max_duration ({saved['trainer']['max_duration']} in the run, "
        f"{wanted['trainer']['max_duration']} now) cannot change: the {schedule['name']} "
        "schedule is shaped by the run's length, which its checkpoint holds"
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(index), item) for index, item in enumerate(value))
    else:
        return {prefix: repr(value)}
    flat: dict[str, str] = {}
    for key, item in items:
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat
