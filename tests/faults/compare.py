"""Comparing a run directory with an uninterrupted run's: bitwise, but for seconds."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FOLDERS = ("checkpoints", "epochs")
"""The job's two checkpoint callbacks' folders (tests.faults.runs.JOB)."""

WALL_CLOCK_KEYS = frozenset({"seconds", "time"})
"""The only entries that may differ between a resumed and an uninterrupted run: seconds
of training (the metrics logger's and the recorder's states, summary.json) and
metrics.jsonl's ``time``."""

_PNG_END = b"IEND\xaeB`\x82"


def differences(saved: Any, expected: Any, where: str = "") -> list[str]:
    """Where two nested values (a checkpoint, a summary) differ, bitwise for tensors and
    floats; wall-clock entries (:data:`WALL_CLOCK_KEYS`) are left out."""
    if isinstance(expected, dict):
        if not isinstance(saved, dict):
            return [f"{where}: {type(saved).__name__}, expected a dict"]
        keys = (set(saved) | set(expected)) - WALL_CLOCK_KEYS
        found = []
        for key in sorted(keys, key=str):
            if key not in saved or key not in expected:
                found.append(
                    f"{where}.{key}: only in {'the run' if key in saved else 'the reference'}"
                )
            else:
                found += differences(saved[key], expected[key], f"{where}.{key}")
        return found
    if isinstance(expected, list | tuple):
        if not isinstance(saved, list | tuple) or len(saved) != len(expected):
            return [f"{where}: {_short(saved)}, expected {_short(expected)}"]
        found = []
        for index, (item, reference) in enumerate(zip(saved, expected, strict=True)):
            found += differences(item, reference, f"{where}[{index}]")
        return found
    if isinstance(expected, torch.Tensor):
        same = (
            isinstance(saved, torch.Tensor)
            and saved.dtype == expected.dtype
            and saved.shape == expected.shape
            and torch.equal(_bits(saved), _bits(expected))
        )
        return [] if same else [f"{where}: {_short(saved)}, expected {_short(expected)}"]
    if isinstance(expected, float) and isinstance(saved, float):
        same = struct.pack("<d", saved) == struct.pack("<d", expected)
        return [] if same else [f"{where}: {saved!r}, expected {expected!r}"]
    if type(saved) is not type(expected) or saved != expected:
        return [f"{where}: {_short(saved)}, expected {_short(expected)}"]
    return []


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    flat = tensor.detach().cpu().reshape(-1).contiguous()
    return flat if flat.dtype == torch.bool else flat.view(torch.uint8)


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        shown = value.flatten()[:4].tolist()
        return f"tensor {tuple(value.shape)} {value.dtype} {shown}..."
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def load(path: Path) -> Any:
    return torch.load(path, weights_only=True)


def records(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records, without their ``time``."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def status(run_dir: Path) -> str:
    return json.loads((run_dir / "status.json").read_text(encoding="utf-8"))["state"]


def temporary_files(run_dir: Path) -> list[str]:
    return sorted(
        str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name.endswith(".tmp")
    )


def _relative(value: Any, run_dir: Path) -> Any:
    """``value`` with every path into the run directory written from ``RUN/`` (a
    summary's checkpoint paths, absolute or relative to where the run started)."""
    inside = re.compile(rf"^(?:.*/)?{re.escape(run_dir.name)}/")
    if isinstance(value, dict):
        return {key: _relative(item, run_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [_relative(item, run_dir) for item in value]
    if isinstance(value, str):
        return inside.sub("RUN/", value)
    return value


def summary(run_dir: Path) -> dict[str, Any]:
    found = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    found.pop("run", None)  # the directory's name
    return _relative(found, run_dir)


def assert_every_file_whole(run_dir: Path, why: str) -> None:
    """What a killed run leaves: each checkpoint and weights file under its own name
    loads (a half-written one is only ever a temporary file)."""
    for path in sorted(run_dir.rglob("*.pt")):
        try:
            load(path)
        except Exception as error:
            raise AssertionError(f"{why}: {path} is not whole: {error!r}") from None


def assert_same_run(run_dir: Path, reference: Path, why: str) -> None:
    """``run_dir`` ends as the uninterrupted ``reference`` did: finished, no temporary
    file left, and its weights, every checkpoint (model, optimizers, schedulers,
    algorithms, callbacks, clock, generators, losses, metrics), metrics.jsonl,
    summary.json, artifacts and plots the same, bitwise, but for wall-clock seconds."""
    assert status(run_dir) == "finished", f"{why}: status.json says {status(run_dir)}"
    assert temporary_files(run_dir) == [], f"{why}: temporary files left"
    found = differences(load(run_dir / "model.pt"), load(reference / "model.pt"), "model.pt")
    for folder in CHECKPOINT_FOLDERS:
        names = sorted(p.name for p in (run_dir / folder).glob("*.pt"))
        expected = sorted(p.name for p in (reference / folder).glob("*.pt"))
        if names != expected:
            found.append(f"{folder}/ holds {names}, expected {expected}")
            names = sorted(set(names) & set(expected))
        for name in names:
            found += differences(
                load(run_dir / folder / name), load(reference / folder / name), f"{folder}/{name}"
            )
    found += differences(
        load(run_dir / "artifacts.pt"), load(reference / "artifacts.pt"), "artifacts.pt"
    )
    got, wanted = records(run_dir), records(reference)
    if got != wanted:
        found.append(
            "metrics.jsonl: "
            + "; ".join(differences(got, wanted, "records") or [f"{len(got)} records"])
        )
    found += differences(summary(run_dir), summary(reference), "summary.json")
    for plot in sorted(reference.glob("*.png")):
        drawn = run_dir / plot.name
        if not drawn.is_file() or not drawn.read_bytes().endswith(_PNG_END):
            found.append(f"{plot.name}: missing or cut short")
    assert not found, f"{why}: the run differs from the uninterrupted one:\n  " + "\n  ".join(
        found[:30]
    )
