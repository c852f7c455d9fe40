"""Checkpoints: the whole of a run as plain data, saved atomically and restored exactly.

A checkpoint holds the model (keys without the ``module.`` or ``_orig_mod.`` that
DistributedDataParallel and ``torch.compile`` add), optimizers, schedulers, gradient
scaler, the clock, every generator's state (now and at the start of the epoch), every
plugin's ``state_dict()``, the epoch's losses so far, the latest metrics and
calibration, and under torchrun each rank's own states. It loads
with ``torch.load(weights_only=True)``: nothing in it is ever imported or run.

A run whose model is sharded (``strategy="fsdp"``) checkpoints into a folder instead of
a file, every rank writing its shards (:mod:`loom.trainer.sharded_checkpoint`); every
function here that reads a checkpoint takes either.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from loom.trainer.events import Plugin, describe_plugin
from loom.trainer.files import write_atomically
from loom.trainer.metrics import check_losses_are_finite
from loom.trainer.rank_states import (
    gather_rank_states,
    rank_states_problem,
    rank_view,
)
from loom.trainer.sharded_checkpoint import (
    RUN_FILE,
    is_sharded_checkpoint,
    load_sharded_model,
    load_sharded_optimizers,
    optimizer_skeletons,
    save_sharded_checkpoint,
    sharded_optimizer_mismatch,
    sharded_state,
    shards_problem,
    skeleton,
)
from loom.trainer.sharding import full_model_state_dict, is_sharded
from loom.trainer.state import State

__all__ = [
    "CheckpointError",
    "capture_checkpoint",
    "capture_rng_states",
    "checkpoint_name",
    "evaluated_model",
    "exported_weights",
    "load_algorithm_states",
    "load_checkpoint",
    "load_model_weights",
    "model_state_dict",
    "restore_checkpoint",
    "restore_rng_states",
    "resumed_epoch_batches",
    "save_checkpoint",
    "unwrap_model",
    "write_checkpoint",
]

FORMAT_VERSION = 1
_SHOWN = 5  # keys listed in a mismatch message before "and N more"
_RUN_ENTRIES = (
    "optimizers", "schedulers", "grad_scaler", "timestamp", "rng", "epoch_start_rng",
    "algorithms", "callbacks", "train_losses", "metrics", "last_eval_batch",
)  # fmt: skip
_CLOCK_FIELDS = ("epoch", "batch", "batch_in_epoch", "samples")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this run; the message names the file."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel, DataParallel and ``torch.compile``
    wrappers. Only those: a model of one's own whose submodule is called ``module`` is
    no wrapper."""
    # torch.compile's wrapper class is private to torch; and where its module is not
    # imported yet, nothing has been compiled (importing it would cost a second).
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    compiled = getattr(eval_frame, "OptimizedModule", None)
    while True:
        if isinstance(model, _PARALLEL_WRAPPERS):
            model = model.module
        elif compiled is not None and isinstance(model, compiled):
            model = model._orig_mod
        else:
            return model


_PARALLEL_WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def evaluated_model(state: State) -> nn.Module:
    """The module evaluations and predictions run: ``state.eval_model`` when a plugin
    set one (an EMA of the weights), else the trained model, unwrapped."""
    return unwrap_model(state.model) if state.eval_model is None else state.eval_model


def exported_weights(state: State) -> dict[str, torch.Tensor]:
    """The run's resulting weights, on the CPU: ``state.export_model``'s when a plugin
    set one (averaged weights), else the trained model's (see :func:`model_state_dict`).

    A sharded model's are gathered from every rank onto the main process (the others
    get an empty dict): then every rank must call it."""
    model = state.model if state.export_model is None else state.export_model
    if is_sharded(model):
        return full_model_state_dict(model)
    return {key: value.cpu() for key, value in model_state_dict(model).items()}


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights and buffers under the names of the unwrapped model (a
    ``torch.compile``-d submodule's under its own name too)."""
    state = unwrap_model(model).state_dict()
    return {key.replace("._orig_mod.", "."): value.detach() for key, value in state.items()}


def capture_checkpoint(state: State) -> dict[str, Any]:
    """The run in ``state`` as a checkpoint.

    Under torchrun every rank must call it: the main process's checkpoint holds, under
    ``ranks``, what each rank's generators, epoch losses and plugins hold of their own
    (see :mod:`loom.trainer.rank_states`), so that each rank resumes as itself.

    Raises:
        NonFiniteLossError: A training loss since the last check is NaN or
            infinite: a checkpoint of a diverged run would replace a good one.
    """
    return _captured(state)[0]


def _captured(state: State) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """:func:`capture_checkpoint`'s checkpoint, and a sharded run's shards (from
    :func:`~loom.trainer.sharded_checkpoint.sharded_state`; None for a file), whose
    structure the checkpoint holds."""
    check_losses_are_finite(state)
    shards = None
    if state.strategy.shards:  # the values go to the folder's shards, the structure here
        shards = sharded_state(unwrap_model(state.model), state.optimizers)
        weights: Any = skeleton(shards["model"])
        optimizers: list[Any] = [
            skeleton(shards["optimizers"][str(index)]) for index in range(len(state.optimizers))
        ]
    else:
        weights = model_state_dict(state.model)
        optimizers = [optimizer.state_dict() for optimizer in state.optimizers]
    checkpoint = {
        "format": FORMAT_VERSION,
        "sharded": state.strategy.shards,
        "model": weights,
        "optimizers": optimizers,
        "schedulers": [scheduler.state_dict() for scheduler in state.schedulers],
        "grad_scaler": state.grad_scaler.state_dict() if state.grad_scaler else None,
        "timestamp": state.timestamp.state_dict(),
        "rng": capture_rng_states(),
        "epoch_start_rng": state.epoch_start_rng,
        "algorithms": _plugin_states(state.algorithms),
        "callbacks": _plugin_states(state.callbacks),
        "train_losses": state.train_losses.state_dict(),
        "metrics": dict(state.metrics),
        "last_eval_batch": state.last_eval_batch,
        "reliability": state.reliability,  # a run resumed at its end draws it again
        "world_size": state.world_size,
    }
    if state.world_size > 1:
        checkpoint["ranks"] = gather_rank_states(checkpoint, state.rank, state.world_size)
    return checkpoint, shards


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Writes ``checkpoint`` to ``path`` atomically: a crash mid-save leaves the old file.
    (A sharded run's is a folder: :func:`write_checkpoint` writes either.)"""
    return write_atomically(path, lambda file: torch.save(checkpoint, file))


def checkpoint_name(state: State, stem: str) -> str:
    """The name of the run's checkpoint ``stem``: ``<stem>.pt``, or the folder ``<stem>``
    for a sharded run."""
    return stem if state.strategy.shards else f"{stem}.pt"


def write_checkpoint(state: State, path: str | os.PathLike[str]) -> Path:
    """Captures the run and writes it to ``path`` (named by :func:`checkpoint_name`): a file
    that the main process writes, or a sharded run's folder, which every rank writes
    its shards of. Under torchrun every rank must call it. Returns ``path``.

    Raises:
        NonFiniteLossError: As :func:`capture_checkpoint`.
        FileWriteError: The file or folder cannot be written.
    """
    checkpoint, shards = _captured(state)  # on every rank: each gives its own part
    path = Path(path)
    if shards is not None:
        return save_sharded_checkpoint(checkpoint, shards, path)
    if state.is_main_process:
        save_checkpoint(checkpoint, path)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a checkpoint with ``weights_only=True``.

    A sharded checkpoint's folder gives its ``run.pt``: the model's and optimizers'
    entries hold the tensors' shapes (on the ``meta`` device), their values stay in the
    shards, which :func:`restore_checkpoint` reads.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: The file is truncated, corrupt, or not a loom checkpoint.
    """
    checkpoint = _read(_run_file(Path(path)))
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a loom checkpoint: it holds no 'model' entry."
        )
    return checkpoint


def load_model_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Loads into ``model`` (inside any wrapper) the weights in ``path``: a checkpoint's
    model, or a file that holds a state dict alone, as a run's ``model.pt`` does. Read
    with ``weights_only=True``; checked against the model before anything is loaded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: The file cannot be read, holds no weights, or its weights do
            not fit the model (the message names the keys and shapes that differ).

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.pt"
        >>> torch.save(torch.nn.Linear(2, 3).state_dict(), path)
        >>> load_model_weights(torch.nn.Linear(2, 3), path)
        >>> load_model_weights(torch.nn.Linear(2, 4), path)
        Traceback (most recent call last):
        ...
        loom.trainer.checkpoint.CheckpointError: checkpoint '...model.pt' does not fit this
        model (Linear): other shapes: weight is (3, 2) in the checkpoint, (4, 2) in the model, ...
    """
    saved = _read(_run_file(Path(path)))
    is_checkpoint = isinstance(saved, dict) and "format" in saved and "model" in saved
    weights = saved["model"] if is_checkpoint else saved
    model = unwrap_model(model)
    _check_model_fits(model, weights, path)
    _load_weights(model, saved if is_checkpoint else {}, weights, path)


def _load_weights(model: nn.Module, checkpoint: Mapping[str, Any], weights: Any, path: Any) -> None:
    """``weights`` (checked) into ``model``: from the shards of a sharded checkpoint at
    ``path``; into a sharded model, each rank taking its shards of the full tensors."""
    if checkpoint.get("sharded"):
        _check_shards(path, weights)
        with _shards_read(path):
            load_sharded_model(model, path)
    elif is_sharded(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(weights)


def _check_shards(path: Any, weights: Mapping[str, Any]) -> None:
    problem = shards_problem(path, list(weights))
    if problem:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {problem}.")


@contextlib.contextmanager
def _shards_read(path: Any) -> Iterator[None]:
    """DCP's failure to read a folder (a shard damaged after the checks) as a
    CheckpointError: DCP's own exception is no ``Exception``, and would pass every
    handler of one."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except CheckpointException as error:
        reason = " ".join(str(error).split())[:300]
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {reason}.") from None


def _run_file(path: Path) -> Path:
    """The file to read of the checkpoint at ``path``: itself, or a sharded folder's
    ``run.pt``."""
    if not is_sharded_checkpoint(path):
        return path
    run_file = path / RUN_FILE
    if not run_file.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} is a folder without {RUN_FILE}: not a loom sharded "
            "checkpoint, or one whose save did not complete."
        )
    return run_file


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read: {_unreadable(error)}."
        ) from None


def _unreadable(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, without torch's advice to unpickle
    the file anyway, which a loom checkpoint never needs."""
    text = _TERMINAL_STYLES.sub("", str(error)).strip()
    foreign = _FOREIGN_OBJECT.search(text)
    if foreign:
        return (
            f"it holds a Python object ({foreign[1] or foreign[2]}) besides tensors and "
            "plain data, which loom never unpickles: it was not written by loom"
        )
    _, unpickler, detail = text.partition("WeightsUnpickler error:")
    details = [line.strip() for line in (detail if unpickler else text).splitlines()]
    # Not a line of torch's advice to load with weights_only=False.
    reasons = [line for line in details if line and "weights_only" not in line]
    reason = reasons[0] if reasons else type(error).__name__
    return f"it is truncated, corrupt or not a checkpoint ({reason})"


_FOREIGN_OBJECT = re.compile(
    r"Unsupported (?:global: GLOBAL|class) (\S+)|unsupported GLOBAL (\S+) whose module"
)
"""How torch (2.3 to 2.6 and later) names a global its weights-only unpickler refuses."""

_TERMINAL_STYLES = re.compile(r"\x1b\[[0-9;]*m")
"""The colour and bold codes torch puts in some messages."""


def restore_checkpoint(
    state: State, checkpoint: dict[str, Any], path: str | os.PathLike[str], *, weights_only: bool
) -> None:
    """Loads ``checkpoint`` into the run: the model alone, or everything to resume.

    Everything is checked before anything changes: the model's keys and shapes, the
    optimizers' parameter groups and state, the schedulers, the plugins, the clock
    and the generators. The plugins then load their states, and are put back as
    they were if one refuses its own. A checkpoint that does not fit leaves the run
    as it was.

    Raises:
        CheckpointError: The weights do not fit the model, or the run has other
            optimizers, schedulers or plugins than the checkpoint's, or an entry
            is missing or malformed; the message says which.
    """
    model = unwrap_model(state.model)
    _check_model_fits(model, checkpoint["model"], path)
    if weights_only:
        _load_weights(model, checkpoint, checkpoint["model"], path)
        return
    sharded = bool(checkpoint.get("sharded"))
    if is_sharded(model) and not sharded:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is a file, written by a run whose model was not "
            "sharded: its optimizers' states cannot be sharded. Resume it with "
            "strategy='ddp', or load its weights alone (load_weights_only)."
        )
    _check_ranks_fit(state, checkpoint, path)
    if checkpoint.get("world_size") == state.world_size:  # else every rank takes rank 0's
        checkpoint = rank_view(checkpoint, state.rank)  # its own generators, plugins, losses
    _check_run_fits(state, checkpoint, path)
    if sharded:
        _check_shards(path, checkpoint["model"])
    _restore_plugins(_plugin_pairs(state, checkpoint), path)
    # Nothing below can refuse the checkpoint: all of it was checked above.
    if sharded:
        with _shards_read(path):
            load_sharded_model(model, path)
            load_sharded_optimizers(model, state.optimizers, checkpoint["optimizers"], path)
    else:
        model.load_state_dict(checkpoint["model"])
        for optimizer, saved in zip(state.optimizers, checkpoint["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
    for scheduler, saved in zip(state.schedulers, checkpoint["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    if state.grad_scaler is not None and checkpoint["grad_scaler"]:
        state.grad_scaler.load_state_dict(checkpoint["grad_scaler"])
    state.timestamp.load_state_dict(checkpoint["timestamp"])
    saved_losses = checkpoint["train_losses"]
    losses = saved_losses["losses"].to(state.device)
    # A checkpoint from before the sample counts were kept: its batches were full ones.
    full_batch = getattr(state.train_dataloader, "batch_size", None) or 1
    samples = saved_losses.get("samples", torch.full(losses.shape, full_batch))
    state.train_losses.load_state_dict({"losses": losses, "samples": samples})
    state.metrics = dict(checkpoint["metrics"])
    state.last_eval_batch = checkpoint["last_eval_batch"]
    state.reliability = checkpoint.get("reliability")  # absent before loom saved it
    state.epoch_start_rng = checkpoint["epoch_start_rng"]
    restore_rng_states(checkpoint["rng"])


def capture_rng_states() -> dict[str, Any]:
    """Python's, NumPy's and torch's generator states (every initialized CUDA device's too).

    Tensors, ints and lists only, so the snapshot loads with ``weights_only=True``.

    Examples:
        >>> import torch
        >>> states = capture_rng_states(); first = torch.rand(3)
        >>> restore_rng_states(states); torch.equal(torch.rand(3), first)
        True
    """
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "torch": torch.get_rng_state(),
        # Only devices this process has touched: asking others would initialize CUDA.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Puts back the generators as :func:`capture_rng_states` found them."""
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    numpy = states["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gauss"],
        )
    )
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])


def resumed_epoch_batches(state: State) -> Iterator[Any]:
    """The epoch's data iterator, past the ``state.timestamp.batch_in_epoch`` batches
    trained before the checkpoint.

    The iterator is made under the generators' state of the epoch's start, so it
    shuffles as it did (and workers get the same seeds); the batches already
    trained are loaded again and dropped; then the generators go back to the
    checkpoint's state.

    Raises:
        CheckpointError: The checkpoint has no record of the epoch's start, or the
            data now has fewer batches per epoch than the checkpoint's position.
    """
    position = state.timestamp.batch_in_epoch
    if state.epoch_start_rng is None:
        raise CheckpointError(
            f"cannot resume after batch {position} of an epoch: the checkpoint has no "
            "record of the epoch's start."
        )
    now = capture_rng_states()
    restore_rng_states(state.epoch_start_rng)
    batches = iter(state.train_dataloader)
    for skipped in range(position):
        if next(batches, None) is None:
            raise CheckpointError(
                f"the checkpoint stopped after batch {position} of an epoch, but "
                f"train_dataloader yields only {skipped} batches per epoch now."
            )
    restore_rng_states(now)
    return batches


def _plugin_states(plugins: list[Any]) -> list[dict[str, Any]]:
    return [{"name": type(plugin).__name__, "state": plugin.state_dict()} for plugin in plugins]


def _check_model_fits(model: nn.Module, weights: Any, path: Any) -> None:
    if not isinstance(weights, Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its 'model' entry is a {type(weights).__name__}, "
            "not a mapping of parameter names to tensors."
        )
    expected = model.state_dict()
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    reshaped = [
        f"{key} is {_shape(weights[key])} in the checkpoint, "
        f"{tuple(expected[key].shape)} in the model"
        for key in expected
        if key in weights and _shape(weights[key]) != tuple(expected[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_some(unexpected)}")
    if reshaped:
        problems.append(f"other shapes: {_some(reshaped)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit this model ({type(model).__name__}): "
            f"{'; '.join(problems)}. Was it written by another model or configuration?"
        )


def _check_ranks_fit(state: State, checkpoint: dict[str, Any], path: Any) -> None:
    """A checkpoint of another number of processes resumes only from an epoch's end:
    each rank's share of an epoch's data depends on their number. There every rank
    takes rank 0's states (the run goes on, as another run: its batches are others)."""
    problem = rank_states_problem(checkpoint)
    if problem is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} has a malformed 'ranks' entry: {problem}.")
    saved = checkpoint.get("world_size")
    clock = checkpoint.get("timestamp")
    position = clock.get("batch_in_epoch") if isinstance(clock, Mapping) else None
    if saved is None or saved == state.world_size or not position:
        return
    raise CheckpointError(
        f"checkpoint {str(path)!r} was written by {saved} processes and this run has "
        f"{state.world_size}: it was taken after batch {position} of an epoch, and each "
        f"rank's share of an epoch's data depends on the number of processes. Resume with "
        f"{saved} (torchrun --nproc_per_node {saved}), from a checkpoint of an epoch's end, "
        "or load its weights alone."
    )


def _check_run_fits(state: State, checkpoint: dict[str, Any], path: Any) -> None:
    """Every check a resume needs besides the model's, changing nothing."""

    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {str(path)!r} {problem}")

    if checkpoint.get("format") != FORMAT_VERSION:
        raise refuse(
            f"has format {checkpoint.get('format')!r}; this loom reads format "
            f"{FORMAT_VERSION}. Load its weights alone with load_weights_only."
        )
    missing = [entry for entry in _RUN_ENTRIES if entry not in checkpoint]
    if missing:
        raise refuse(
            f"holds no {', '.join(map(repr, missing))}: it cannot resume a run "
            "(load its weights alone with load_weights_only)."
        )
    for key, have in (("optimizers", state.optimizers), ("schedulers", state.schedulers)):
        if len(checkpoint[key]) != len(have):
            raise refuse(
                f"holds {len(checkpoint[key])} {key}, this run has {len(have)}: resume "
                "with the job that wrote it, or load the weights alone."
            )
    if checkpoint.get("sharded"):
        skeletons = optimizer_skeletons(unwrap_model(state.model), state.optimizers)
        problems = [
            sharded_optimizer_mismatch(have, saved)
            for have, saved in zip(skeletons, checkpoint["optimizers"], strict=True)
        ]
    else:
        problems = [
            _optimizer_mismatch(optimizer, saved)
            for optimizer, saved in zip(state.optimizers, checkpoint["optimizers"], strict=True)
        ]
    for index, (optimizer, problem) in enumerate(zip(state.optimizers, problems, strict=True)):
        if problem:
            raise refuse(
                f"does not fit optimizers[{index}] ({type(optimizer).__name__}): {problem}."
            )
    for index, (scheduler, saved) in enumerate(
        zip(state.schedulers, checkpoint["schedulers"], strict=True)
    ):
        have = set(scheduler.state_dict())
        if not isinstance(saved, Mapping) or set(saved) != have:
            raise refuse(
                f"does not fit schedulers[{index}] ({type(scheduler).__name__}): it was "
                "written by another kind of scheduler."
            )
    for kind in ("algorithms", "callbacks"):
        entries = checkpoint[kind]
        if not isinstance(entries, list) or not all(
            isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and "state" in entry
            for entry in entries
        ):
            raise refuse(f"has a malformed {kind!r} entry: not a list of named plugin states.")
    saved_algorithms = [entry["name"] for entry in checkpoint["algorithms"]]
    run_algorithms = [type(algorithm).__name__ for algorithm in state.algorithms]
    if saved_algorithms != run_algorithms:
        raise refuse(
            f"was written with algorithms {saved_algorithms}, this run has {run_algorithms}: "
            "resume with the same algorithms in the same order."
        )
    clock = checkpoint["timestamp"]
    if not isinstance(clock, Mapping) or not all(
        type(clock.get(name)) is int and clock[name] >= 0 for name in _CLOCK_FIELDS
    ):
        raise refuse(f"has a malformed clock {clock!r}; expected {', '.join(_CLOCK_FIELDS)}.")
    generators = capture_rng_states()  # what this process's generators' states look like
    for entry in ("rng", "epoch_start_rng"):
        saved = checkpoint[entry]
        if not (saved is None and entry == "epoch_start_rng") and not _fits(saved, generators):
            raise refuse(f"has a malformed {entry!r} entry: not the generators' states.")
    metrics, last_eval = checkpoint["metrics"], checkpoint["last_eval_batch"]
    if not isinstance(metrics, Mapping) or not all(
        isinstance(key, str) and isinstance(value, int | float) for key, value in metrics.items()
    ):
        raise refuse("has a malformed 'metrics' entry: not a mapping of names to numbers.")
    if last_eval is not None and (type(last_eval) is not int or last_eval < 0):
        raise refuse(f"has a malformed 'last_eval_batch' {last_eval!r}.")
    reliability = checkpoint.get("reliability")
    if reliability is not None and not (
        isinstance(reliability, Mapping)
        and all(
            isinstance(values, list) and all(isinstance(v, int | float) for v in values)
            for values in reliability.values()
        )
    ):
        raise refuse("has a malformed 'reliability' entry: not lists of numbers by name.")
    scaler = checkpoint["grad_scaler"]
    if scaler is not None and not isinstance(scaler, Mapping):
        raise refuse("has a malformed 'grad_scaler' entry.")
    if (
        state.grad_scaler is not None
        and scaler
        and set(scaler) != set(state.grad_scaler.state_dict())
    ):
        raise refuse("holds a gradient scaler's state that does not fit this run's.")
    losses = checkpoint["train_losses"]
    losses = losses.get("losses") if isinstance(losses, Mapping) else None
    if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
        raise refuse("has a malformed 'train_losses' entry: not the epoch's losses.")
    samples = checkpoint["train_losses"].get("samples")
    if samples is not None and (
        not isinstance(samples, torch.Tensor) or samples.shape != losses.shape
    ):
        raise refuse("has a malformed 'train_losses' entry: no sample count for each loss.")


def _fits(saved: Any, reference: Any) -> bool:
    """Whether ``saved`` has the structure of ``reference`` (a generator snapshot of this
    process): the same keys, tensors of the same dtype and shape, as many numbers."""
    if isinstance(reference, Mapping):
        return (
            isinstance(saved, Mapping)
            and set(saved) == set(reference)
            and all(_fits(saved[key], reference[key]) for key in reference)
        )
    if isinstance(reference, torch.Tensor):
        return (
            isinstance(saved, torch.Tensor)
            and saved.dtype == reference.dtype
            and saved.shape == reference.shape
        )
    if isinstance(reference, list):  # CUDA: a state per device touched; Python: 625 ints
        if not isinstance(saved, list):
            return False
        if all(isinstance(item, torch.Tensor) for item in [*saved, *reference]):
            return True
        return len(saved) == len(reference) and all(type(item) is int for item in saved)
    if reference is None or isinstance(reference, float):  # Python's gauss_next is either
        return saved is None or type(saved) is float
    return type(saved) is type(reference)


def _optimizer_mismatch(optimizer: torch.optim.Optimizer, saved: Any) -> str | None:
    """What keeps ``saved`` from loading into ``optimizer``, or None."""
    if not isinstance(saved, Mapping) or not {"state", "param_groups"} <= set(saved):
        return "it is not an optimizer's state"
    groups, saved_groups = optimizer.param_groups, saved["param_groups"]
    if len(groups) != len(saved_groups):
        return f"{len(saved_groups)} parameter groups in the checkpoint, {len(groups)} here"
    parameters = []
    for index, (group, saved_group) in enumerate(zip(groups, saved_groups, strict=True)):
        if len(group["params"]) != len(saved_group["params"]):
            return (
                f"parameter group {index} holds {len(saved_group['params'])} parameters in the "
                f"checkpoint, {len(group['params'])} here"
            )
        # A newer torch may add settings to a group; another optimizer has other ones.
        foreign = sorted(set(saved_group) - set(group))
        if foreign:
            return (
                f"its parameter group {index} has settings {', '.join(foreign)} that "
                f"{type(optimizer).__name__} does not: it was written by another optimizer"
            )
        parameters += group["params"]
    if not isinstance(saved["state"], Mapping) or not all(
        isinstance(entries, Mapping) for entries in saved["state"].values()
    ):
        return "its per-parameter state is not a mapping of mappings"
    for index, entries in saved["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(parameters):
            return f"it holds state for parameter {index!r}, which this optimizer does not have"
        # Shapes are only comparable with this optimizer's own state for the parameter
        # (momentum is shaped like it; a factored second moment is not).
        have = optimizer.state.get(parameters[index], {})
        for name, value in entries.items():
            mine = have.get(name)
            if isinstance(mine, torch.Tensor) and _shape(value) != tuple(mine.shape):
                return (
                    f"its {name!r} of parameter {index} is {_shape(value)}, this "
                    f"optimizer's is {tuple(mine.shape)}"
                )
    return None


def load_algorithm_states(state: State, checkpoint: Mapping[str, Any], path: Any) -> None:
    """The run's algorithms take their states from ``checkpoint`` (as
    :func:`load_checkpoint` read it from ``path``), by position, as a resumed run's do,
    and nothing else of it: for what reads an algorithm's state without resuming (an
    average of the weights, to export). If one refuses, each gets its own back.

    Raises:
        CheckpointError: The checkpoint was written with other algorithms, or one of
            them refused its state; the run is left as it was.
    """
    entries = checkpoint.get("algorithms")
    entries = entries if isinstance(entries, list) else []
    saved = [entry.get("name") if isinstance(entry, Mapping) else None for entry in entries]
    have = [type(algorithm).__name__ for algorithm in state.algorithms]
    if saved != have or not all("state" in entry for entry in entries):
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written with algorithms {saved}, this run has "
            f"{have}: it is another job's."
        )
    pairs: list[tuple[Plugin, Any]] = [
        (algorithm, entry["state"])
        for algorithm, entry in zip(state.algorithms, entries, strict=True)
    ]
    _restore_plugins(pairs, path)


def _plugin_pairs(state: State, checkpoint: dict[str, Any]) -> list[tuple[Plugin, Any]]:
    """Each plugin with the saved state it takes: algorithms by position, callbacks by class."""
    pairs: list[tuple[Plugin, Any]] = [
        (algorithm, saved["state"])
        for algorithm, saved in zip(state.algorithms, checkpoint["algorithms"], strict=True)
    ]
    # Callbacks observe, so a resumed run may add or drop some (a progress bar, a
    # logger): each takes the state of the first unused saved callback of its class.
    unused = list(checkpoint["callbacks"])
    for callback in state.callbacks:
        for index, saved in enumerate(unused):
            if saved["name"] == type(callback).__name__:
                pairs.append((callback, unused.pop(index)["state"]))
                break
    return pairs


def _restore_plugins(pairs: list[tuple[Plugin, Any]], path: Any) -> None:
    """Loads each plugin's state; if one refuses, every plugin gets its own state back."""
    before: list[tuple[Plugin, dict[str, Any]]] = []
    for plugin, saved in pairs:
        before.append((plugin, copy.deepcopy(plugin.state_dict())))
        try:
            plugin.load_state_dict(saved)
        except Exception as error:
            for restored, state in before:
                restored.load_state_dict(state)
            reason = " ".join(str(error).split())  # one line, whatever the plugin raised
            raise CheckpointError(
                f"checkpoint {str(path)!r}: {describe_plugin(plugin)} refused its saved "
                f"state ({type(error).__name__}: {reason}); the run was left as it was."
            ) from error


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")
