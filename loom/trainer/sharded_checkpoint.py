"""Sharded checkpoints: a folder per checkpoint, which every rank writes its share of
through ``torch.distributed.checkpoint`` (DCP).

A run of ``strategy="fsdp"`` checkpoints into a folder such as ``epoch2-batch20/``:

- the model's weights and the optimizers' states, as DCP writes them (a
  ``__<rank>_0.distcp`` file a rank and ``.metadata``), through
  ``get_model_state_dict`` / ``get_optimizer_state_dict``: each rank writes the shards
  it holds, and any number of ranks reads them back (DCP reshards: a folder written
  by 2 ranks resumes with 1 or with 3, and loads into an unsharded model);
- ``run.pt``, everything else a checkpoint holds (the clock, generators, plugins, each
  rank's own states; see :mod:`loom.trainer.checkpoint`), written by rank 0, with the
  model's and the optimizers' entries as tensors of their full shapes on the ``meta``
  device: what a resume checks against the run before it reads a shard.

The folder is filled under a hidden temporary name and renamed when complete, so a
reader (a resume, ``latest_checkpoint``) never sees half of one.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from loom.trainer.files import publish_folder, temporary_folder, write_atomically
from loom.trainer.runtime import decided_by_rank_zero, is_main_process

__all__ = [
    "RUN_FILE",
    "is_sharded_checkpoint",
    "load_sharded_model",
    "load_sharded_optimizers",
    "optimizer_skeletons",
    "save_sharded_checkpoint",
    "sharded_optimizer_mismatch",
    "sharded_state",
    "shards_problem",
    "skeleton",
]

RUN_FILE = "run.pt"
"""The file of a sharded checkpoint's folder that holds all but the tensors' values."""


def is_sharded_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a sharded checkpoint's folder (a checkpoint file is not)."""
    return Path(path).is_dir()


def sharded_state(model: nn.Module, optimizers: Sequence[Any]) -> dict[str, Any]:
    """The model's and the optimizers' states under DCP's names, each rank's shards of
    them: what a sharded checkpoint's folder holds besides ``run.pt`` (and, as
    :func:`skeleton`, in it). Changes no optimizer."""
    return {"model": _model_state(model), "optimizers": _optimizer_states(model, optimizers)}


def save_sharded_checkpoint(checkpoint: dict[str, Any], shards: dict[str, Any], path: Path) -> Path:
    """Writes ``checkpoint`` (as :func:`~loom.trainer.checkpoint.capture_checkpoint`
    captured it on this rank) and ``shards`` (from :func:`sharded_state`) to the folder
    ``path``. Every rank calls it; rank 0's ``checkpoint`` is the one written.

    Raises:
        FileWriteError: The folder cannot be written.
    """
    temporary = decided_by_rank_zero(lambda: temporary_folder(path), "the checkpoint's folder")
    import torch.distributed.checkpoint as dcp

    # Every rank's shards and the metadata are written when it returns, on every rank.
    with _alone_is_meant():
        dcp.save(shards, checkpoint_id=temporary, no_dist=not _in_a_group())
    if is_main_process():
        write_atomically(temporary / RUN_FILE, lambda file: torch.save(checkpoint, file))
        publish_folder(temporary, path)
    return path


def skeleton(value: Any) -> Any:
    """``value`` with every tensor (a DTensor too) replaced by one of its full shape and
    dtype on the ``meta`` device, which holds no data: a state dict's structure."""
    if isinstance(value, torch.Tensor):
        return torch.empty(value.shape, dtype=value.dtype, device="meta")
    if isinstance(value, Mapping):
        return {key: skeleton(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(skeleton(item) for item in value)
    return value


def optimizer_skeletons(model: nn.Module, optimizers: Sequence[Any]) -> list[Any]:
    """The structure of each optimizer's state, keyed by parameter names (see
    :func:`skeleton`); changes no optimizer."""
    states = _optimizer_states(model, optimizers)
    return [skeleton(states[str(index)]) for index in range(len(optimizers))]


def sharded_optimizer_mismatch(have: Any, saved: Any) -> str | None:
    """What keeps the optimizer state of structure ``saved`` (a checkpoint's) from
    loading into one of structure ``have`` (this run's; both from
    :func:`optimizer_skeletons`), or None. This run's optimizer may not have stepped
    (no state of its own to compare with): then the saved state's parameters are
    checked against its groups, and its settings; a parameter that never had a gradient
    has no saved state."""
    if (
        not isinstance(saved, Mapping)
        or not isinstance(saved.get("state"), Mapping)
        or not isinstance(saved.get("param_groups"), list)
        or not all(isinstance(group, Mapping) for group in saved["param_groups"])
    ):
        return "it is not an optimizer's state"
    groups, saved_groups = have["param_groups"], saved["param_groups"]
    if len(groups) != len(saved_groups):
        return f"{len(saved_groups)} parameter groups in the checkpoint, {len(groups)} here"
    for index, (group, saved_group) in enumerate(zip(groups, saved_groups, strict=True)):
        if list(group["params"]) != list(saved_group.get("params", ())):
            return f"parameter group {index} holds other parameters in the checkpoint"
        foreign = sorted(set(saved_group) - set(group))
        if foreign:
            return (
                f"its parameter group {index} has settings {', '.join(foreign)} that this "
                "optimizer does not: it was written by another optimizer"
            )
    parameters = {name for group in groups for name in group["params"]}
    for name, theirs in saved["state"].items():
        if name not in parameters or not isinstance(theirs, Mapping):
            return f"it holds state for {name!r}, which this optimizer does not step"
        mine = have["state"].get(name)
        if mine is None:  # this optimizer has not stepped yet
            continue
        if set(theirs) != set(mine):
            return (
                f"its state of {name} holds {sorted(theirs)}, this optimizer's "
                f"{sorted(mine)}: it was written by another optimizer"
            )
        for key, value in mine.items():
            if isinstance(value, torch.Tensor) and _shape(theirs[key]) != tuple(value.shape):
                return (
                    f"its {key!r} of {name} is {_shape(theirs[key])}, this "
                    f"optimizer's is {tuple(value.shape)}"
                )
    return None


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def shards_problem(path: str | os.PathLike[str], model_keys: Sequence[str]) -> str | None:
    """What keeps the checkpoint folder ``path`` from being read (its ``.metadata``
    unreadable, a shard file missing, a weight of ``model_keys`` not in it), or None:
    checked before a resume changes anything."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(path)).read_metadata()
    except Exception as error:  # a missing or damaged .metadata, in torch's words
        return f"its shards' .metadata cannot be read ({type(error).__name__}: {error})"
    files = {getattr(where, "relative_path", None) for where in metadata.storage_data.values()}
    missing = sorted(name for name in files if name and not (Path(path) / name).is_file())
    if missing:
        return f"its shard file {missing[0]} is missing"
    absent = [key for key in model_keys if f"model.{key}" not in metadata.state_dict_metadata]
    if absent:
        return f"its shards hold no {absent[0]}"
    return None


def load_sharded_model(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Reads the model's weights from the checkpoint folder ``path`` into ``model``,
    sharded or not, whatever number of ranks wrote it. Under torchrun every rank calls
    it. Checked beforehand against the folder's ``run.pt``."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    shards = {"model": _model_state(model)}
    _read_shards(shards, path)
    set_model_state_dict(model, shards["model"])


def load_sharded_optimizers(
    model: nn.Module, optimizers: Sequence[Any], saved: Sequence[Any], path: str | os.PathLike[str]
) -> None:
    """Reads the optimizers' states from the checkpoint folder ``path`` (as
    :func:`load_sharded_model` reads the model's); ``saved`` is their structure, as the
    folder's ``run.pt`` holds it. An optimizer saved before its first step has no state
    in the shards: it takes its groups' settings alone, as a fresh one."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    stepped = [index for index, structure in enumerate(saved) if structure["state"]]
    if stepped:
        # DCP gives an optimizer that has not stepped its state first (one step at a
        # learning rate of 0), into which it reads the saved one.
        states = _optimizer_states(model, optimizers, initialise=stepped)
        for index in stepped:  # what the checkpoint holds: no state of a parameter it had not
            state = states[str(index)]["state"]
            states[str(index)]["state"] = {
                name: state[name] for name in saved[index]["state"] if name in state
            }
        shards = {"optimizers": {str(index): states[str(index)] for index in stepped}}
        _read_shards(shards, path)
    for index, optimizer in enumerate(optimizers):
        if index in stepped:
            # Not strict: a parameter that never had a gradient has no saved state, and
            # gets none (checked against run.pt already).
            set_optimizer_state_dict(
                model,
                optimizer,
                shards["optimizers"][str(index)],
                options=StateDictOptions(strict=False),
            )
            continue
        optimizer.state.clear()
        for group, settings in zip(
            optimizer.param_groups, saved[index]["param_groups"], strict=True
        ):
            group.update(
                {
                    key: value
                    for key, value in settings.items()
                    if key != "params" and not isinstance(value, torch.Tensor)
                }
            )


def _read_shards(shards: dict[str, Any], path: str | os.PathLike[str]) -> None:
    import torch.distributed.checkpoint as dcp

    with _alone_is_meant():
        dcp.load(shards, checkpoint_id=str(path), no_dist=not _in_a_group())


@contextlib.contextmanager
def _alone_is_meant() -> Iterator[None]:
    """Without DCP's warning that it assumes one process where there is no process
    group: that is what loom asks for then (``no_dist``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _model_state(model: nn.Module) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model)


def _optimizer_states(
    model: nn.Module, optimizers: Sequence[Any], initialise: Sequence[int] = ()
) -> dict[str, Any]:
    """Each optimizer's state by its index as a string (DCP's keys are names), keyed
    by parameter names. One that has not stepped has no state: its groups alone (DCP
    would step it once to make one, which changes it: a later step is not a first one)
    but for those in ``initialise``, which are to read a saved state."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    names = {id(parameter): name for name, parameter in model.named_parameters()}
    states = {}
    for index, optimizer in enumerate(optimizers):
        if optimizer.state or index in initialise:
            states[str(index)] = get_optimizer_state_dict(model, optimizer)
            continue
        groups = [
            {**group, "params": [names[id(parameter)] for parameter in group["params"]]}
            for group in optimizer.param_groups
        ]
        states[str(index)] = {"state": {}, "param_groups": groups}
    return states


def _in_a_group() -> bool:
    return dist.is_available() and dist.is_initialized()
