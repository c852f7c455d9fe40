"""Checkpoints: the whole of a run as plain tensors and containers, saved atomically.

A checkpoint holds the model (keys without the ``module.`` or ``_orig_mod.`` that
DistributedDataParallel and ``torch.compile`` add), optimizers, schedulers, gradient
scaler, the clock, every generator's state (now and at the start of the epoch), every
plugin's ``state_dict()``, the epoch's losses so far and the latest metrics. It loads
with ``torch.load(weights_only=True)``: nothing in it is ever imported or run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from loom.trainer.rng import capture_rng_states, restore_rng_states
from loom.trainer.state import State

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "capture_checkpoint",
    "load_checkpoint",
    "model_state_dict",
    "restore_checkpoint",
    "save_checkpoint",
    "unwrap_model",
    "write_atomically",
]

FORMAT_VERSION = 1
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 5  # keys listed in a mismatch message before "and N more"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this run; the message names the file."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the batch."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel and ``torch.compile`` wrappers."""
    while isinstance(getattr(model, "module", None), nn.Module) or isinstance(
        getattr(model, "_orig_mod", None), nn.Module
    ):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights and buffers under the names of the unwrapped model."""
    return {_strip_wrappers(k): v.detach() for k, v in model.state_dict().items()}


def capture_checkpoint(state: State) -> dict[str, Any]:
    """The run in ``state`` as a checkpoint.

    Raises:
        NonFiniteLossError: A training loss since the last check is NaN or
            infinite: a checkpoint of a diverged run would replace a good one.
    """
    check_losses_are_finite(state)
    return {
        "format": FORMAT_VERSION,
        "model": model_state_dict(state.model),
        "optimizers": [optimizer.state_dict() for optimizer in state.optimizers],
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
    }


def check_losses_are_finite(state: State) -> None:
    """Raises NonFiniteLossError naming the first NaN or infinite loss not yet checked."""
    position = state.train_losses.first_non_finite()
    if position is not None:
        epoch_batch = state.timestamp.batch - state.timestamp.batch_in_epoch + position
        raise NonFiniteLossError(
            f"the training loss is not finite at epoch {state.timestamp.epoch}, batch "
            f"{position} of the epoch (batch {epoch_batch} of the run); training stopped and "
            "the checkpoints already written were left as they were. Lower the learning "
            "rate, clip gradients (grad_clip_norm) or check the inputs of that batch."
        )


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Writes ``checkpoint`` to ``path`` atomically: a crash mid-save leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: torch.save(checkpoint, file))
    return path


def write_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Writes a temporary file beside ``path``, flushes it to disk, then renames it over
    ``path``: readers see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: The file is truncated, corrupt, or not a loom checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read: it is truncated, corrupt or not a "
            f"checkpoint ({reason})."
        ) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a loom checkpoint: it holds no 'model' entry."
        )
    return checkpoint


def restore_checkpoint(
    state: State, checkpoint: dict[str, Any], path: str | os.PathLike[str], *, weights_only: bool
) -> None:
    """Loads ``checkpoint`` into the run: the model alone, or everything to resume.

    Everything is checked before anything changes, so a checkpoint that does not
    fit leaves the run as it was.

    Raises:
        CheckpointError: The weights do not fit the model (missing or unexpected
            keys, other shapes), or the run has other optimizers, schedulers or
            plugins than the checkpoint's.
    """
    model = unwrap_model(state.model)
    _check_model_fits(model, checkpoint["model"], path)
    if not weights_only:
        if checkpoint.get("format") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has format {checkpoint.get('format')!r}; this loom "
                f"reads format {FORMAT_VERSION}. Load its weights alone with load_weights_only."
            )
        for key, have in (("optimizers", state.optimizers), ("schedulers", state.schedulers)):
            if len(checkpoint[key]) != len(have):
                raise CheckpointError(
                    f"checkpoint {str(path)!r} holds {len(checkpoint[key])} {key}, this run has "
                    f"{len(have)}: resume with the job that wrote it, or load the weights alone."
                )
        saved_algorithms = [entry["name"] for entry in checkpoint["algorithms"]]
        run_algorithms = [type(algorithm).__name__ for algorithm in state.algorithms]
        if saved_algorithms != run_algorithms:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written with algorithms {saved_algorithms}, this "
                f"run has {run_algorithms}: resume with the same algorithms in the same order."
            )
    model.load_state_dict(checkpoint["model"])
    if weights_only:
        return
    try:
        for optimizer, saved in zip(state.optimizers, checkpoint["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
    except ValueError as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its optimizer state does not fit this run's ({error})."
        ) from None
    for scheduler, saved in zip(state.schedulers, checkpoint["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    if state.grad_scaler is not None and checkpoint["grad_scaler"]:
        state.grad_scaler.load_state_dict(checkpoint["grad_scaler"])
    for algorithm, saved in zip(state.algorithms, checkpoint["algorithms"], strict=True):
        algorithm.load_state_dict(saved["state"])
    # Callbacks observe, so a resumed run may add or drop some (a progress bar, a
    # logger): each takes the state of the first unused saved callback of its class.
    unused = list(checkpoint["callbacks"])
    for callback in state.callbacks:
        for index, saved in enumerate(unused):
            if saved["name"] == type(callback).__name__:
                callback.load_state_dict(unused.pop(index)["state"])
                break
    state.timestamp.load_state_dict(checkpoint["timestamp"])
    losses = checkpoint["train_losses"]["losses"].to(state.device)
    state.train_losses.load_state_dict({"losses": losses})
    state.metrics = dict(checkpoint["metrics"])
    state.last_eval_batch = checkpoint["last_eval_batch"]
    state.epoch_start_rng = checkpoint["epoch_start_rng"]
    restore_rng_states(checkpoint["rng"])


def _plugin_states(plugins: list[Any]) -> list[dict[str, Any]]:
    return [{"name": type(plugin).__name__, "state": plugin.state_dict()} for plugin in plugins]


def _check_model_fits(model: nn.Module, weights: dict[str, Any], path: Any) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    reshaped = [
        f"{key} is {tuple(weights[key].shape)} in the checkpoint, "
        f"{tuple(expected[key].shape)} in the model"
        for key in expected
        if key in weights and weights[key].shape != expected[key].shape
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


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key.replace("._orig_mod.", ".")  # a compiled submodule


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")
