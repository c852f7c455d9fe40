"""Distillation: the loss blended with a frozen teacher's softened outputs on the same inputs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from loom.functional import check_fraction, check_positive, distillation_loss
from loom.trainer import (
    Algorithm,
    BatchKey,
    CheckpointError,
    State,
    changes,
    load_model_weights,
    reads,
    unwrap_model,
    validate_batch_key,
)
from loom.trainer.runtime import autocast_context

__all__ = ["Distillation", "weights_sha256"]

IN_MEMORY = "in memory"
"""The ``teacher_source`` of a teacher whose weights came from no file."""


class Distillation(Algorithm):
    """Trains on ``alpha * T**2 * KL(teacher / T || student / T) + (1 - alpha) * loss``.

    A frozen ``teacher`` runs on every training batch; the student learns from its
    softened probabilities as well as from the targets (see
    :func:`loom.functional.distillation_loss`). At ``init`` the teacher goes to the
    run's device, in eval mode, without gradients; it stays apart from the student: not
    in its ``state_dict``, not in any optimizer. At ``after_forward`` it runs, under
    ``torch.no_grad()`` and the run's precision, on the inputs as the batch holds them
    then: listed after MixUp, whose inputs go back at ``after_forward`` after this runs
    (algorithms run in reverse there), it sees the mixed inputs the student saw. At
    ``after_loss`` the run's loss is replaced by the blend, so ``train/loss`` is the
    loss optimised. Evaluation never runs the teacher.

    A checkpoint holds where the teacher's weights came from and their SHA-256; a run
    resumed with another teacher is refused.

    Args:
        teacher: The teacher model: any module whose outputs have the student's shape.
            A job file names it instead (a run directory, ``{run: RUN_DIR, checkpoint:
            final|last|best|PATH}`` or ``{model: {...}, weights: PATH}``), and the
            job's builder builds it: see :mod:`loom.config.teacher`.
        weights: A checkpoint, or the ``model.pt`` of a finished loom run, to load into
            ``teacher`` first (weights only, read with ``weights_only=True``); None
            keeps the teacher's weights as they are. In a job, the file the teacher
            entry names is taken unless this is given.
        temperature: ``T`` > 0, how much both distributions are softened (1 leaves
            them); Hinton et al. try 1 to 20, and 2 to 5 is common.
        alpha: The weight of the teacher's term, in [0, 1]; 0 trains on the loss alone.
        input_key: Where the teacher's inputs are in a batch, when not at the run's
            ``input_key`` (int, str or (getter, setter)); None uses the run's.

    Raises:
        TypeError, ValueError: An argument of the wrong type or value.
        FileNotFoundError: No file at ``weights``.
        CheckpointError: The file at ``weights`` cannot be read or does not fit
            ``teacher``.

    Examples:
        >>> import torch
        >>> from loom.algorithms import Distillation
        >>> teacher = torch.nn.Linear(4, 3)
        >>> Distillation(teacher, temperature=2.0, alpha=0.5)
        Distillation(teacher=Linear, temperature=2.0, alpha=0.5)
        >>> sorted(Distillation(teacher).state_dict())
        ['teacher_sha256', 'teacher_source']
    """

    effects = (
        reads("inputs", at="after_forward", needs="as_used"),
        changes("loss", at="after_loss", how="replaces"),
    )

    def __init__(
        self,
        # str and dict: the forms a job file names the teacher in, which are the job's
        # schema (the constructor's signature); only a module is taken here.
        teacher: nn.Module | str | dict[str, Any],
        weights: str | os.PathLike[str] | None = None,
        temperature: float = 4.0,
        alpha: float = 0.9,
        input_key: BatchKey | None = None,
    ):
        if isinstance(teacher, str | Mapping):
            raise TypeError(
                f"Distillation: teacher={teacher!r} names a teacher as a job file does, and "
                "a job's builder (loom.config.build_job) builds it; in Python, pass the "
                "model, and weights= for the file of its weights."
            )
        if not isinstance(teacher, nn.Module):
            raise TypeError(
                f"Distillation: teacher must be a torch.nn.Module, got {teacher!r} "
                f"({type(teacher).__name__})."
            )
        if weights is not None and not isinstance(weights, str | os.PathLike):
            raise TypeError(
                f"Distillation: weights={weights!r} must be the path of a checkpoint or a "
                "model.pt, or None."
            )
        try:
            self.temperature = check_positive(temperature, "temperature")
            self.alpha = check_fraction(alpha, "alpha")
            if input_key is not None:
                validate_batch_key(input_key, "input_key")
        except (TypeError, ValueError) as error:
            raise type(error)(f"Distillation: {error}") from None
        self.teacher = teacher
        self.weights = None if weights is None else os.fspath(weights)
        self.input_key = input_key
        if self.weights is not None:
            _load_teacher(teacher, self.weights)
        # Once: the teacher is frozen, and hashing a large one takes a while.
        self.teacher_sha256 = weights_sha256(teacher)
        self._autocast: torch.autocast | None = None
        self._teacher_logits: torch.Tensor | None = None

    def init(self, state: State) -> None:
        _refuse_a_shared_teacher(self.teacher, state)
        self.teacher.to(state.device).eval().requires_grad_(False)
        self._autocast = autocast_context(state.precision, state.device)

    def after_forward(self, state: State) -> None:
        inputs = state.get_inputs(self.input_key)
        with torch.no_grad():
            if self._autocast is None:
                logits = self.teacher(inputs)
            else:
                with self._autocast:
                    logits = self.teacher(inputs)
        _check_outputs(self.teacher, logits, state.outputs)
        self._teacher_logits = logits

    def after_loss(self, state: State) -> None:
        logits, self._teacher_logits = self._teacher_logits, None
        state.loss = distillation_loss(
            state.outputs, logits, state.loss, self.temperature, self.alpha
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "teacher_source": IN_MEMORY if self.weights is None else self.weights,
            "teacher_sha256": self.teacher_sha256,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("teacher_sha256") if isinstance(state, Mapping) else None
        if not isinstance(saved, str):
            raise ValueError(
                f"Distillation: the saved state {state!r} names no teacher_sha256, so the "
                "teacher it was trained with cannot be checked."
            )
        if saved != self.teacher_sha256:
            raise ValueError(
                f"Distillation: the checkpoint was trained with another teacher (from "
                f"{state.get('teacher_source')}, weights sha256 {saved}); this run's teacher "
                f"(from {self.state_dict()['teacher_source']}) has sha256 "
                f"{self.teacher_sha256}. Resume with the teacher it was trained with."
            )

    def __repr__(self) -> str:
        weights = "" if self.weights is None else f", weights={self.weights!r}"
        key = "" if self.input_key is None else f", input_key={self.input_key!r}"
        return (
            f"Distillation(teacher={type(self.teacher).__name__}{weights}, "
            f"temperature={self.temperature}, alpha={self.alpha}{key})"
        )


def weights_sha256(model: nn.Module) -> str:
    """The SHA-256 of ``model``'s weights: the bytes of each ``state_dict`` tensor, in
    key order.

    Examples:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 2)
        >>> weights_sha256(layer) == weights_sha256(torch.nn.Linear(2, 2))
        False
    """
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def _load_teacher(teacher: nn.Module, weights: str) -> None:
    try:
        load_model_weights(teacher, weights)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"Distillation: weights={weights!r}: {error}") from None
    except CheckpointError as error:
        raise CheckpointError(
            f"Distillation: weights={weights!r} cannot be loaded into teacher "
            f"({type(teacher).__name__}): {error}"
        ) from None


def _refuse_a_shared_teacher(teacher: nn.Module, state: State) -> None:
    """A teacher that is the student, or shares a parameter with it or an optimizer,
    would be frozen with it, or trained."""
    trained = {id(parameter) for parameter in state.model.parameters()}
    for optimizer in state.optimizers:
        trained.update(id(p) for group in optimizer.param_groups for p in group["params"])
    shared = [name for name, parameter in teacher.named_parameters() if id(parameter) in trained]
    if teacher is unwrap_model(state.model):
        problem = "is the model being trained"
    elif shared:
        problem = f"shares its parameter {shared[0]!r} with the model being trained or an optimizer"
    else:
        return
    raise ValueError(
        f"Distillation: teacher ({type(teacher).__name__}) {problem}; give a separate, "
        "trained model (a copy.deepcopy of one, or one loaded with weights=...)."
    )


def _check_outputs(teacher: nn.Module, logits: Any, outputs: Any) -> None:
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(
            f"Distillation needs the model's outputs as a tensor of class scores, got "
            f"{type(outputs).__name__}."
        )
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"Distillation: teacher ({type(teacher).__name__}) returned "
            f"{type(logits).__name__}, not a tensor of class scores."
        )
    if logits.shape != outputs.shape:
        raise ValueError(
            f"Distillation: teacher ({type(teacher).__name__}) gives outputs of shape "
            f"{tuple(logits.shape)}, the student {tuple(outputs.shape)}: the teacher must "
            "score the student's classes (dimension 1) for the same inputs."
        )
