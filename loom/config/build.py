"""Building a resolved job: datasets, loaders, model, optimizer, schedule, plugins, Trainer."""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from loom.config.job import LOADER_KEY, METRIC_KEY, WRAP
from loom.config.loaders import LOADER_FACTS, LOADERS
from loom.config.registries import (
    ALGORITHMS,
    CALLBACKS,
    DATASETS,
    METRICS,
    MODELS,
    OPTIMIZERS,
    SCHEDULERS,
    WRAPPERS,
)
from loom.config.registry import Registry
from loom.config.schema import ConfigError, parameters_of
from loom.config.teacher import TEACHER, WEIGHTS, find_teacher
from loom.optim.implementation import fastest_step
from loom.trainer import (
    EVAL_METRICS,
    Algorithm,
    Callback,
    CheckpointError,
    CompositionError,
    Duration,
    TimeUnit,
    Trainer,
    get_batch_item,
    num_batches,
    seed_everything,
)
from loom.trainer.checkpoint import capture_rng_states, restore_rng_states
from loom.trainer.runtime import resolve_device, shard_train_loader, torchrun_world_size
from loom.trainer.sharding import Strategy
from loom.trainer.state import steps_on_a_metric

__all__ = ["JobParts", "build_job"]


@dataclass
class JobParts:
    """Everything a resolved job builds; :meth:`trainer` puts it together."""

    model: torch.nn.Module
    train_loader: Any
    eval_loader: Any
    optimizer: torch.optim.Optimizer
    schedulers: list[Any]
    algorithms: list[Algorithm]
    callbacks: list[Callback]
    eval_metrics: dict[str, Any]
    """The metrics each evaluation adds, by the key they are recorded under."""
    classes: list[str] | None
    """The training dataset's class names, when it has them."""
    seed: int | None
    trainer_arguments: dict[str, Any]

    def trainer(
        self,
        extra_callbacks: Sequence[Callback] = (),
        load_path: str | os.PathLike[str] | None = None,
    ) -> Trainer:
        """The job's Trainer, with ``extra_callbacks`` after the job's own, resuming
        from the checkpoint at ``load_path`` when given. Wherever the job lists them,
        its checkpoint callbacks (those that write ``state.checkpoint_path``) come
        after the extra callbacks that do not read it (a metrics log: no checkpoint is
        ever ahead of the log) and before those that do (the run recorder's summary);
        its trackers (the callbacks that read ``state.plots``) come last: after every
        callback whose metrics they log, and after the run recorder that draws the
        plots."""
        trackers = [callback for callback in self.callbacks if "plots" in callback.reads]
        savers = [
            callback
            for callback in self.callbacks
            if "checkpoint_path" in callback.writes and callback not in trackers
        ]
        others = [c for c in self.callbacks if c not in trackers and c not in savers]
        extra = list(extra_callbacks)
        readers = [i for i, callback in enumerate(extra) if "checkpoint_path" in callback.reads]
        at = readers[0] if readers else len(extra)
        callbacks = [*others, *extra[:at], *savers, *extra[at:], *trackers]
        with _section("trainer"):
            try:
                return Trainer(
                    self.model,
                    self.train_loader,
                    self.eval_loader,
                    optimizers=self.optimizer,
                    schedulers=self.schedulers,
                    algorithms=self.algorithms,
                    callbacks=callbacks,
                    eval_metrics=self.eval_metrics,
                    seed=self.seed,
                    load_path=load_path,
                    **self.trainer_arguments,
                )
            except CompositionError as error:  # about the algorithms' section, not this one
                raise ConfigError(f"algorithms: {error}") from error


def build_job(
    job: Mapping[str, Any],
    *,
    limit_batches: int | None = None,
    checkpoint_folder: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
) -> JobParts:
    """Builds the parts of a job that :func:`~loom.config.job.resolve_job` returned.

    Arguments a model or algorithm takes but the job left out (``num_classes``,
    ``in_channels``, ``in_features``, ``n_classes``) are taken from the training
    dataset.

    Args:
        job: A resolved job.
        limit_batches: Give each loader only this many batches' worth of samples (a
            dry run).
        checkpoint_folder: The ``folder`` of a ``checkpoint`` callback that
            leaves it out (a run's ``checkpoints/``); a relative ``folder`` a callback
            is given is taken inside the directory that holds this one, the run's.
        dry_run: Whether this is a dry run (``loom train --dry-run``), whose trackers
            write inside its own run directory only: an ``mlflow`` logger's store is
            there whatever the job or ``$MLFLOW_TRACKING_URI`` says.

    Raises:
        ConfigError: A component refused its arguments or could not be built;
            the message names the section. Training data with no batch an epoch (an
            empty dataset, or one smaller than ``data.train.batch_size`` with
            ``drop_last``, on the whole or on each torchrun rank) is named by those keys.

    Examples:
        >>> from loom.config.job import resolve_job
        >>> job = resolve_job({
        ...     "model": {"name": "mlp", "hidden_sizes": [16]},
        ...     "data": {"train": {"name": "synthetic", "num_samples": 64, "shape": [4]}},
        ...     "optimizer": {"name": "sgd", "lr": 0.1},
        ...     "trainer": {"max_duration": "2ep", "device": "cpu"},
        ... })
        >>> metrics = build_job(job).trainer().fit()
        >>> sorted(metrics)
        ['train/loss']
    """
    if job["seed"] is not None:
        seed_everything(job["seed"])  # before the model, so its initial weights repeat
    data = job["data"]
    # The facts come from the dataset itself: a wrapper may change what a sample looks
    # like (as_dict), not what the model and algorithms must know of the data.
    train_factory = LOADERS["train"][data["train"][LOADER_KEY]]
    eval_factory = LOADERS["eval"][data["eval"][LOADER_KEY]] if data["eval"] else None
    with _section("trainer.device"):
        device = resolve_device(job["trainer"]["device"])
    # What a memory loader needs of the run: where to hold the data, which item to augment.
    loading = {"device": device, "input_key": job["trainer"]["input_key"]}
    train_set = _build(DATASETS, data["train"], "data.train", drop=_not_dataset_keys(train_factory))
    if num_batches(train_set) == 0:  # its length (None for a stream)
        raise ConfigError(
            f"data.train ({data['train']['name']}): the dataset has no samples, so training "
            "would have no batch; check its arguments (its folder, split or size)."
        )
    facts = _dataset_facts(train_set)
    train_set = _wrapped(train_set, data["train"], "data.train")
    with _section(f"data.train (loader: {data['train'][LOADER_KEY]})"):
        train = _loader(train_factory, train_set, data["train"], limit_batches, loading)
    _check_training_batches(train)
    _check_batch_keys(train, job["trainer"])
    evaluation = None
    if data["eval"] is not None:
        eval_set = _build(DATASETS, data["eval"], "data.eval", drop=_not_dataset_keys(eval_factory))
        eval_set = _wrapped(eval_set, data["eval"], "data.eval")
        with _section(f"data.eval (loader: {data['eval'][LOADER_KEY]})"):
            evaluation = _loader(eval_factory, eval_set, data["eval"], limit_batches, loading)
    run_dir = None if checkpoint_folder is None else Path(checkpoint_folder).parent
    # What a callback leaves out that the run fills in: where its files go, the job.
    where = {
        "folder": None if checkpoint_folder is None else str(checkpoint_folder),
        "log_dir": None if run_dir is None else str(run_dir / "tensorboard"),
        "csv_path": None if run_dir is None else str(run_dir / "metrics.csv"),
        "hparams": dict(job),
        "tracking_uri": _mlflow_tracking_uri(run_dir, environment=not dry_run),
        "run_name": None if run_dir is None else run_dir.name,
    }

    _check_against_the_data(job, facts)
    model = _build(MODELS, job["model"], "model", facts=facts)
    parameters = list(model.parameters())
    optimizer_class = OPTIMIZERS.get(job["optimizer"]["name"], "optimizer.name")
    with _section("trainer.strategy"):
        sharded = Strategy.parse(job["trainer"]["strategy"]).shards
    optimizer_spec = fastest_step(
        optimizer_class, job["optimizer"], parameters, device, sharded=sharded
    )
    optimizer = _build(OPTIMIZERS, optimizer_spec, "optimizer", positional=parameters)
    schedulers = []
    if job["scheduler"] is not None:
        timing = {
            "batches_per_epoch": len(train),
            "total_batches": _total_batches(job, train),
        }
        schedule = _build(
            SCHEDULERS, job["scheduler"], "scheduler", positional=optimizer, facts=timing
        )
        # The Trainer refuses these too, in its arguments' names; here in the job's.
        if steps_on_a_metric(schedule) and evaluation is None:
            raise ConfigError(
                f"scheduler ({job['scheduler']['name']}): steps on {schedule.monitor!r} after "
                "each evaluation, but the job has no data.eval: give one."
            )
        schedulers.append(schedule)
    callbacks = [
        _build(
            CALLBACKS,
            _in_run_directory(_private(spec) if dry_run else spec, run_dir),
            f"callbacks.{index}",
            facts=where,
        )
        for index, spec in enumerate(job["callbacks"])
    ]
    _check_watched_metrics(job, schedulers, callbacks)
    return JobParts(
        model=model,
        train_loader=train,
        eval_loader=evaluation,
        optimizer=optimizer,
        schedulers=schedulers,
        algorithms=[
            _algorithm(spec, f"algorithms.{index}", facts)
            for index, spec in enumerate(job["algorithms"])
        ],
        callbacks=callbacks,
        eval_metrics={
            spec[METRIC_KEY]: _build(
                METRICS,
                {k: v for k, v in spec.items() if k != METRIC_KEY},
                f"eval_metrics.{index}",
                facts=facts,
            )
            for index, spec in enumerate(job["eval_metrics"])
        },
        classes=facts["classes"],
        seed=job["seed"],
        # The device resolved once, here: the loaders hold their data and the optimizer
        # chose its step on it, so the Trainer takes it too rather than the job's name.
        trainer_arguments={**job["trainer"], "device": device},
    )


_WATCHING = ("monitor", "best_metric")
"""The arguments by which a schedule or callback names the metric it watches
(``plateau``, ``early_stopping``; ``checkpoint``'s best ones)."""


def _check_watched_metrics(
    job: Mapping[str, Any], schedulers: Sequence[Any], callbacks: Sequence[Any]
) -> None:
    """Each ``eval/`` metric a schedule or callback watches is one the evaluation
    computes (loom's own, or the job's ``eval_metrics``): before training, not at the
    first evaluation."""
    computed = [*EVAL_METRICS, *(f"eval/{spec[METRIC_KEY]}" for spec in job["eval_metrics"])]
    watchers = [("scheduler", schedule) for schedule in schedulers] + [
        (f"callbacks.{index}", callback) for index, callback in enumerate(callbacks)
    ]
    for path, watcher in watchers:
        for argument in _WATCHING:
            metric = getattr(watcher, argument, None)
            if isinstance(metric, str) and metric.startswith("eval/") and metric not in computed:
                raise ConfigError(
                    f"{path}.{argument}: {metric!r} is not a metric the evaluation computes; "
                    f"it computes {', '.join(computed)} (eval_metrics add more)."
                )


def _build(
    registry: Registry,
    spec: Mapping[str, Any],
    path: str,
    *,
    positional: Any = None,
    facts: Mapping[str, Any] | None = None,
    drop: frozenset[str] = frozenset(),
) -> Any:
    component = registry.get(spec["name"], f"{path}.name")
    arguments = {k: v for k, v in spec.items() if k != "name" and k not in drop}
    accepted = inspect.signature(component).parameters
    for name, value in (facts or {}).items():
        if name in accepted and name not in arguments:
            if value is None:
                raise ConfigError(
                    f"{path}.{name}: missing, and this job cannot fill it in; set it."
                )
            arguments[name] = value
    with _section(f"{path} ({spec['name']})"):
        if positional is not None:
            return component(positional, **arguments)
        return component(**arguments)


def _algorithm(spec: Mapping[str, Any], path: str, facts: Mapping[str, Any]) -> Any:
    """An algorithm. A ``teacher`` it names (see :mod:`loom.config.teacher`) is built
    first, as the job's model is, and its weights loaded: a file that does not fit it
    is named by the teacher's path in the job."""
    if TEACHER not in spec:
        return _build(ALGORITHMS, spec, path, facts=facts)
    source = find_teacher(spec, path, MODELS)
    teacher = _build(MODELS, source.model, source.where, facts=facts)
    arguments = {**spec, TEACHER: teacher, WEIGHTS: str(source.weights)}
    try:
        return _build(ALGORITHMS, arguments, path, facts=facts)
    except CheckpointError as error:
        # Built with this job's data facts: a teacher of other classes cannot fit.
        classes = facts.get("num_classes")
        note = (
            ""
            if classes is None
            else (
                f" The teacher is built for this job's data ({classes} classes): a teacher "
                "trained on other classes cannot teach this student."
            )
        )
        raise ConfigError(f"{path}.{TEACHER}: {spec[TEACHER]!r}: {error}{note}") from None


_RUN_PATHS = {"checkpoint": "folder", "tensorboard": "log_dir", "csv": "csv_path"}
"""The callbacks whose files belong to the run, and the argument that says where."""


def _mlflow_tracking_uri(run_dir: Path | None, environment: bool = True) -> str | None:
    """Where a job's MLflow runs go: ``$MLFLOW_TRACKING_URI``, as MLflow's users set it
    (unless ``environment`` is False), else a SQLite store in the run directory (MLflow
    3's local store)."""
    configured = os.environ.get("MLFLOW_TRACKING_URI") if environment else None
    if configured or run_dir is None:
        return configured or None
    return f"sqlite:///{(run_dir / 'mlflow' / 'mlflow.db').resolve()}"


def _private(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """A dry run's callback spec: a tracker's store of its own left out, so that the run
    directory's is used (a dry run must leave no run in a shared store)."""
    return {key: value for key, value in spec.items() if key != "tracking_uri"}


def _in_run_directory(spec: Mapping[str, Any], run_dir: Path | None) -> Mapping[str, Any]:
    """A callback's spec with a relative path of its files inside the run directory (a
    checkpoint's ``folder``, where ``loom train --resume RUN_DIR`` looks; a logger's),
    not in whatever directory the command ran from."""
    key = _RUN_PATHS.get(spec["name"])
    path = spec.get(key) if key is not None else None
    if run_dir is None or not isinstance(path, str) or Path(path).is_absolute():
        return spec
    return {**spec, key: str(run_dir / path)}


def _wrapped(dataset: Any, spec: Mapping[str, Any], path: str) -> Any:
    """``dataset`` inside the section's wrappers, the first listed innermost."""
    for index, wrapper in enumerate(spec[WRAP]):
        dataset = _build(WRAPPERS, wrapper, f"{path}.{WRAP}.{index}", positional=dataset)
    return dataset


def _loader(
    factory: Any,
    dataset: Any,
    spec: Mapping[str, Any],
    limit: int | None,
    facts: Mapping[str, Any],
) -> Any:
    keys = _loader_keys(factory)
    arguments = {k: v for k, v in spec.items() if k in keys}
    if limit is not None:
        # The first `limit` batches' worth of samples: still a loader loom can shard, so
        # a dry run under torchrun shards it like the real run.
        dataset = Subset(dataset, range(min(len(dataset), limit * arguments["batch_size"])))
    wanted = inspect.signature(factory).parameters
    return factory(dataset, **arguments, **{k: v for k, v in facts.items() if k in wanted})


def _loader_keys(factory: Any) -> frozenset[str]:
    """The keys of a data section that are ``factory``'s."""
    return frozenset(parameter.name for parameter in parameters_of(factory, skip=LOADER_FACTS))


def _not_dataset_keys(factory: Any) -> frozenset[str]:
    """The keys of a data section that are not the dataset's own arguments."""
    return _loader_keys(factory) | {LOADER_KEY, WRAP}


def _dataset_facts(dataset: Any) -> dict[str, Any]:
    """What the model and algorithms may need to know about the training data."""
    classes = getattr(dataset, "classes", None)
    num_classes = len(classes) if classes is not None else None
    try:
        inputs = dataset[0][0]
    except Exception as error:
        raise ConfigError(f"data.train: reading the first example failed: {error}") from error
    shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else None
    return {
        "classes": list(classes) if classes is not None else None,
        "num_classes": num_classes,
        "n_classes": num_classes,
        "in_channels": shape[0] if shape else None,
        "in_features": math.prod(shape) if shape else None,
    }


def _check_training_batches(loader: Any) -> None:
    """An epoch of the training loader has a batch, on each rank's share under torchrun:
    named here by the job's keys, not by the Trainer's arguments or at the first epoch
    (nor as a division by zero in a schedule's length)."""
    samples, world_size = num_batches(loader.dataset), torchrun_world_size()
    if samples is None or not loader.drop_last:
        return  # without drop_last a sample makes a batch; an empty dataset is named before
    if len(loader) == 0:
        share, held = samples, f"the dataset has {samples} samples"
    elif world_size > 1:
        # Every rank's share is the same size: rank 0's tells (sharded as the Trainer will).
        share = len(shard_train_loader(loader, 0, world_size, 0).sampler)
        held = f"the dataset's {samples} samples give each of the {world_size} ranks {share}"
    else:
        return
    if share >= loader.batch_size:
        return
    fix = f"data.train.batch_size to at most {share}, or " if share else ""
    raise ConfigError(
        f"data.train.batch_size: {loader.batch_size} with data.train.drop_last: true leaves "
        f"no training batch: {held}, fewer than one batch, and drop_last drops them; set "
        f"{fix}data.train.drop_last to false."
    )


def _check_batch_keys(loader: Any, trainer: Mapping[str, Any]) -> None:
    """The run's ``input_key`` and ``target_key`` against a batch of the training data's
    first sample, collated as the loader does: a key the batches lack is named here, not
    at the first step. The generators are put back, so what the job draws stays as it was
    (a random transform may draw)."""
    states = capture_rng_states()
    try:
        batch = loader.collate_fn([loader.dataset[0]])
    except Exception:  # no first sample to read this way: the first step will tell
        return
    finally:
        restore_rng_states(states)
    for name in ("input_key", "target_key"):
        try:
            get_batch_item(batch, trainer[name])
        except (KeyError, IndexError, TypeError) as error:
            message = error.args[0] if error.args else str(error)
            raise ConfigError(f"trainer.{name}: {message}") from None


def _check_against_the_data(job: Mapping[str, Any], facts: Mapping[str, Any]) -> None:
    """A size the job sets that the training data contradicts, named by its path here
    rather than found at the first batch (and blamed on whatever read it first)."""
    model = job["model"]
    for key, meaning in (("in_channels", "channels"), ("in_features", "input values")):
        given, found = model.get(key), facts[key]
        if given is not None and found is not None and given != found:
            raise ConfigError(
                f"model.{key}: {given}, but the training data's samples have {found} "
                f"{meaning}; leave it out to take the data's."
            )
    classes = facts["num_classes"]
    outputs = model.get("num_classes", classes)
    if outputs is not None and classes is not None and outputs < classes:
        raise ConfigError(
            f"model.num_classes: {outputs}, but the training data has {classes} classes; "
            "leave it out to take the data's."
        )
    for index, spec in enumerate(job["algorithms"]):
        given = spec.get("n_classes")
        if given is not None and outputs is not None and given != outputs:
            raise ConfigError(
                f"algorithms.{index}.n_classes: {given}, but the model has {outputs} outputs "
                "(model.num_classes, or the data's class count); leave it out to take those."
            )


def _total_batches(job: Mapping[str, Any], loader: Any) -> int:
    """How many steps the run takes: each epoch's batches, the last maybe partial."""
    duration = Duration.parse(job["trainer"]["max_duration"], name="trainer.max_duration")
    batches_per_epoch = len(loader)
    if duration.unit is TimeUnit.EPOCH:
        return duration.value * batches_per_epoch
    if duration.unit is TimeUnit.BATCH:
        return duration.value
    # Samples: whole epochs, then the batches that reach the rest (an epoch's last
    # batch may be partial, so the samples are not a multiple of the batch size).
    batch_size = loader.batch_size
    samples_per_epoch = min(len(loader.dataset), batches_per_epoch * batch_size)
    epochs, rest = divmod(duration.value, samples_per_epoch)
    return epochs * batches_per_epoch + min(batches_per_epoch, math.ceil(rest / batch_size))


@contextlib.contextmanager
def _section(where: str) -> Iterator[None]:
    """Turns a constructor's complaint into a ConfigError that says which section."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        raise ConfigError(f"{where}: {error}") from error
