"""A job's teacher: the model an algorithm's ``teacher`` entry names, and its weights.

An algorithm argument called ``teacher`` (distillation's) is a model the configuration
layer builds, since plugins may not import models. A job names it in one of three forms::

    teacher: runs/digits-teacher                            # a run of `loom train`
    teacher: {run: runs/digits-teacher, checkpoint: best}   # final, last, best or a path
    teacher: {model: {name: small_cnn, width: 32}, weights: teacher.pt}

A run's teacher is the model of its ``config.yaml``, with the weights of its
``model.pt`` (``final``, the default), of its latest interval checkpoint (``last``), of
the first of the best checkpoints its ``summary.json`` lists (``best``), or of a file (a
relative path is looked for in the current directory, then in the run's). The
algorithm's own ``weights``, when a job gives it, is the file instead, and the entry
then names none. Either way the model section is built as the job's own model is: what
it leaves out (``num_classes``, ``in_channels``) comes from the job's training data. The
weights are read with ``weights_only=True``; nothing is ever imported from a path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.config.job_file import read_job_file
from loom.config.registry import Registry
from loom.config.run_directory import RunDirectory, RunFileError
from loom.config.schema import ConfigError, did_you_mean, resolve_arguments

__all__ = ["TEACHER", "WEIGHTS", "TeacherSource", "find_teacher"]

TEACHER = "teacher"
"""The argument of an algorithm that names a model for the configuration layer to build."""

WEIGHTS = "weights"
"""The argument beside it that names the file of the teacher's weights."""

_FORMS = (
    "a run directory of loom train, {run: RUN_DIR, checkpoint: final|last|best|PATH}, "
    "or {model: {name: ..., ...}, weights: PATH}"
)


@dataclass(frozen=True)
class TeacherSource:
    """What a ``teacher`` entry names, before the model is built.

    Attributes:
        model: The teacher's model section, its arguments checked and defaults filled.
        weights: The file its weights are in.
        where: The model section's place, for errors (``algorithms.0.teacher.model``).
    """

    model: dict[str, Any]
    weights: Path
    where: str


def find_teacher(spec: Mapping[str, Any], path: str, models: Registry) -> TeacherSource:
    """The model section and weights file that an algorithm's ``teacher`` entry (and its
    ``weights``, when given) name.

    Args:
        spec: The algorithm's entry in the job, with its ``teacher``: a run directory,
            ``{run:, checkpoint:}`` or ``{model:, weights:}``.
        path: The entry's place in the job (``algorithms.0``), for errors.
        models: The registry of models the teacher's section names.

    Raises:
        ConfigError: Another form, a run directory or file that does not exist, weights
            named twice, or a model section that does not resolve; the message names
            the place (``algorithms.0.teacher``) and the value.
    """
    value, where = spec[TEACHER], f"{path}.{TEACHER}"
    given = spec.get(WEIGHTS)
    if given is not None:
        given = _weights_file(given, f"{path}.{WEIGHTS}")
    if isinstance(value, str):
        return _run_teacher(value, given or "final", where, models)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {value!r} is not a teacher; give {_FORMS}.")
    form = ("run", "checkpoint") if "run" in value else ("model", "weights")
    for key in value:
        if key not in form:
            raise ConfigError(
                f"{where}.{key}: unknown key{did_you_mean(key, form)}; a teacher is {_FORMS}."
            )
    if given is not None and form[1] in value:
        raise ConfigError(
            f"{path}.{WEIGHTS}: {str(given)!r}, but {where}.{form[1]} names the teacher's "
            "weights too; give one of the two."
        )
    if "run" in value:
        run, checkpoint = value["run"], value.get("checkpoint", "final")
        for key, text in (("run", run), ("checkpoint", checkpoint)):
            if not isinstance(text, str):
                raise ConfigError(f"{where}.{key}: expected a string, got {text!r}.")
        return _run_teacher(run, given or checkpoint, where, models)
    if "model" not in value:
        raise ConfigError(f"{where}.model: missing; a teacher is {_FORMS}.")
    if given is None and "weights" not in value:
        raise ConfigError(f"{where}.weights: missing; a teacher is {_FORMS}.")
    weights = given or _weights_file(value["weights"], f"{where}.weights")
    section = f"{where}.model"
    return TeacherSource(_model_section(value["model"], section, models), weights, section)


def _weights_file(value: Any, path: str) -> Path:
    if not isinstance(value, str) or not Path(value).exists():  # a sharded one is a folder
        raise ConfigError(
            f"{path}: no such file {value!r}; give the path of a checkpoint or of a run's model.pt."
        )
    return Path(value)


def _run_teacher(run: str, checkpoint: str | Path, path: str, models: Registry) -> TeacherSource:
    """The model of the run in ``run``, with the weights that ``checkpoint`` names there
    (or the file it is)."""
    files = RunDirectory(run)
    try:
        files.check_started()
        job = read_job_file(files.config)
    except (RunFileError, ConfigError) as error:
        raise ConfigError(f"{path}: {error}") from None
    where = f"{path} (the model of {files.config})"
    model = _model_section(job.get("model"), where, models)
    if isinstance(checkpoint, Path):
        return TeacherSource(model, checkpoint, where)
    try:
        weights = files.weights_file(job, checkpoint, option="checkpoint")
    except RunFileError as error:
        raise ConfigError(f"{path}: {error}") from None
    return TeacherSource(model, weights, where)


def _model_section(section: Any, path: str, models: Registry) -> dict[str, Any]:
    """A model section with its arguments checked and its defaults filled, as a job's."""
    if not isinstance(section, Mapping) or "name" not in section:
        raise ConfigError(
            f"{path}: expected a model section such as {{name: small_cnn, ...}}, got {section!r}."
        )
    component = models.get(section["name"], f"{path}.name")
    arguments = {key: value for key, value in section.items() if key != "name"}
    resolved = resolve_arguments(
        component, arguments, path, skip=models.skip, supplied=models.supplied
    )
    return {"name": section["name"], **resolved}
