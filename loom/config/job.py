"""A job: a validated job file, every default filled in, ready to build or print."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import yaml

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
from loom.config.schema import (
    ConfigError,
    coerce,
    did_you_mean,
    parameters_of,
    resolve_arguments,
)
from loom.trainer import EVAL_METRICS, Trainer

__all__ = [
    "DEFAULT_LOADER",
    "LOADER_KEY",
    "METRIC_KEY",
    "SECTIONS",
    "TRAINER_ARGUMENTS_BUILT_BY_JOBS",
    "WRAP",
    "dump_job",
    "resolve_job",
]

SECTIONS = (
    "seed",
    "model",
    "data",
    "optimizer",
    "scheduler",
    "algorithms",
    "callbacks",
    "eval_metrics",
    "trainer",
)
"""The top-level keys of a job file, in the order a resolved job prints them."""

TRAINER_ARGUMENTS_BUILT_BY_JOBS = frozenset(
    {
        "model",
        "train_dataloader",
        "eval_dataloader",
        "optimizers",
        "schedulers",
        "algorithms",
        "callbacks",
        "eval_metrics",
        "loss_fn",
        "seed",
        "load_path",
        "load_weights_only",
    }
)
"""Trainer arguments that come from other sections; the ``trainer`` section sets the rest."""

WRAP = "wrap"
"""The key of a data section that lists dataset wrappers (``label_noise``, ``as_dict``)."""

METRIC_KEY = "key"
"""The key of an ``eval_metrics`` entry that names what it is recorded as (``eval/<key>``)."""

_REQUIRED_SECTIONS = ("model", "data", "optimizer", "trainer")
LOADER_KEY = "loader"
"""The key of a data section that names its loader: ``dataloader`` (the default) or
``memory`` (see :mod:`loom.config.loaders`)."""

DEFAULT_LOADER = "dataloader"

# Dataset options that draw anew for every sample read (when truthy): a memory loader
# reads each sample once, so left to the dataset they would freeze one draw for the run.
_PER_SAMPLE_RANDOM = ("random_crop_padding", "horizontal_flip", "random_resized_crop")


def resolve_job(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validates a job file's contents and fills in every default.

    The result holds plain data only, in ``SECTIONS`` order; printed with
    :func:`dump_job` and read back, it resolves to itself.

    Raises:
        ConfigError: The first problem found, with the dotted path of the key.

    Examples:
        >>> job = resolve_job({
        ...     "model": {"name": "mlp", "hidden_sizes": [32]},
        ...     "data": {"train": {"name": "synthetic", "num_samples": 64}},
        ...     "optimizer": {"name": "sgd", "lr": "1e-1"},
        ...     "trainer": {"max_duration": "2ep"},
        ... })
        >>> job["optimizer"]["lr"], job["data"]["train"]["batch_size"], job["scheduler"]
        (0.1, 64, None)
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"a job is a mapping of sections, got {type(config).__name__}.")
    _refuse_unknown_keys(
        config, SECTIONS, "", f"a job file has {', '.join(SECTIONS)}", what="section"
    )
    for section in _REQUIRED_SECTIONS:
        if config.get(section) is None:
            raise ConfigError(
                f"{section}: missing section; every job needs {', '.join(_REQUIRED_SECTIONS)}."
            )
    scheduler = config.get("scheduler")
    return {
        "seed": coerce(config.get("seed"), int | None, "seed"),
        "model": _component(config["model"], MODELS, "model"),
        "data": _data(config["data"]),
        "optimizer": _component(config["optimizer"], OPTIMIZERS, "optimizer"),
        "scheduler": None if scheduler is None else _component(scheduler, SCHEDULERS, "scheduler"),
        "algorithms": _components(config.get("algorithms"), ALGORITHMS, "algorithms"),
        "callbacks": _components(config.get("callbacks"), CALLBACKS, "callbacks"),
        "eval_metrics": _eval_metrics(config.get("eval_metrics")),
        "trainer": _trainer(config["trainer"]),
    }


def dump_job(job: Mapping[str, Any]) -> str:
    """A resolved job as YAML, sections in order."""
    return yaml.safe_dump(dict(job), sort_keys=False)


def _component(spec: Any, registry: Registry, path: str) -> dict[str, Any]:
    name = _name(spec, registry, path)
    arguments = {key: value for key, value in spec.items() if key != "name"}
    resolved = resolve_arguments(
        registry.get(name), arguments, path, skip=registry.skip, supplied=registry.supplied
    )
    return {"name": name, **resolved}


def _components(specs: Any, registry: Registry, path: str) -> list[dict[str, Any]]:
    return [
        _component(spec, registry, f"{path}.{index}")
        for index, spec in enumerate(_components_list(specs, path))
    ]


def _components_list(specs: Any, path: str) -> list[Any]:
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise ConfigError(
            f"{path}: expected a list of {{name: ..., <arguments>}} entries, got {specs!r}."
        )
    return specs


def _eval_metrics(specs: Any) -> list[dict[str, Any]]:
    """Each entry resolved, with the ``key`` it is recorded under (its name by default),
    no two alike."""
    resolved: list[dict[str, Any]] = []
    for index, spec in enumerate(_components_list(specs, "eval_metrics")):
        path = f"eval_metrics.{index}"
        key = spec.get(METRIC_KEY, spec.get("name")) if isinstance(spec, Mapping) else None
        if isinstance(spec, Mapping) and METRIC_KEY in spec:
            spec = {k: v for k, v in spec.items() if k != METRIC_KEY}
        entry = _component(spec, METRICS, path)
        if not isinstance(key, str) or not key or "/" in key:
            raise ConfigError(f"{path}.{METRIC_KEY}: {key!r} must be a word such as 'f1'.")
        if f"eval/{key}" in EVAL_METRICS:
            raise ConfigError(
                f"{path}.{METRIC_KEY}: {key!r} is loom's own eval/{key}; give this metric a "
                f"{METRIC_KEY} of its own."
            )
        for earlier, other in enumerate(resolved):
            if other[METRIC_KEY] == key:
                raise ConfigError(
                    f"{path}: eval/{key} is eval_metrics.{earlier}'s already; give this one "
                    f"a {METRIC_KEY} of its own, e.g. {METRIC_KEY}: {key}_2."
                )
        resolved.append({**entry, METRIC_KEY: key})
    return resolved


def _data(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"data: expected a mapping with 'train' and 'eval', got {spec!r}.")
    _refuse_unknown_keys(spec, LOADERS, "data.", "data has train and eval")
    if spec.get("train") is None:
        raise ConfigError("data.train: missing; name the training dataset, e.g. {name: digits}.")
    resolved = {
        split: None if spec.get(split) is None else _dataset(spec[split], f"data.{split}", loaders)
        for split, loaders in LOADERS.items()
    }
    for index, wrapper in enumerate((resolved["eval"] or {}).get(WRAP, [])):
        if getattr(WRAPPERS.get(wrapper["name"]), "training_only", False):
            raise ConfigError(
                f"data.eval.{WRAP}.{index} ({wrapper['name']}): this wrapper goes on the "
                "training data only; evaluation measures against the true labels."
            )
    return resolved


def _dataset(spec: Any, path: str, loaders: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset's arguments and its loader's, side by side in one mapping. An option
    both take (a memory loader's batched ``random_crop_padding``) is the loader's."""
    name = _name(spec, DATASETS, path)
    dataset = DATASETS.get(name)
    kind = _loader_kind(spec, path, loaders)
    loader = loaders[kind]
    loader_keys = {parameter.name for parameter in parameters_of(loader, skip=LOADER_FACTS)}
    dataset_keys = {parameter.name for parameter in DATASETS.parameters(name)}
    arguments = {k: v for k, v in spec.items() if k not in ("name", LOADER_KEY, WRAP)}
    arguments = _without_other_loaders_defaults(
        arguments, path, kind, loaders, loader_keys | dataset_keys
    )
    _refuse_unknown_keys(
        arguments,
        loader_keys | dataset_keys,
        f"{path}.",
        f"dataset {name!r} takes {', '.join(sorted(dataset_keys)) or 'no arguments'}, "
        f"its loader ({kind}) takes {', '.join(sorted(loader_keys))}, {LOADER_KEY} chooses "
        f"{' or '.join(loaders)}, and {WRAP} lists wrappers",
    )
    loading = resolve_arguments(
        loader, {k: v for k, v in arguments.items() if k in loader_keys}, path, skip=LOADER_FACTS
    )
    _check_loading(loading, path)
    own = {k: v for k, v in arguments.items() if k in dataset_keys and k not in loader_keys}
    if kind != DEFAULT_LOADER:  # what the loader does not take stays the dataset's: once
        for key in _PER_SAMPLE_RANDOM:
            if own.get(key):
                raise ConfigError(
                    f"{path}.{key}: the {kind} loader reads each sample once, so this "
                    "random transform would be drawn once for the whole run; use "
                    f"{LOADER_KEY}: {DEFAULT_LOADER}, or leave {key} out."
                )
    return {
        "name": name,
        LOADER_KEY: kind,
        **{k: v for k, v in resolve_arguments(dataset, own, path).items() if k not in loading},
        **loading,
        WRAP: _components(spec.get(WRAP), WRAPPERS, f"{path}.{WRAP}"),
    }


def _without_other_loaders_defaults(
    arguments: Mapping[str, Any],
    path: str,
    kind: str,
    loaders: Mapping[str, Any],
    known: Collection[str],
) -> dict[str, Any]:
    """``arguments`` less the keys of another loader left at their defaults, as a resolved
    job of that loader holds them: so ``data.train.loader=memory`` over a run's
    ``config.yaml`` switches loaders. Another loader's key set to anything else would be
    silently unused, and is refused."""
    kept = dict(arguments)
    for other, factory in loaders.items():
        if other == kind:
            continue
        for parameter in parameters_of(factory, skip=LOADER_FACTS):
            name = parameter.name
            if name not in kept or name in known:
                continue
            if kept[name] != parameter.default:
                raise ConfigError(
                    f"{path}.{name}: {kept[name]!r} is for the {other} loader, but this "
                    f"section's {LOADER_KEY} is {kind}, which has no {name}; leave it out or "
                    f"set {LOADER_KEY}: {other}."
                )
            del kept[name]
    return kept


def _loader_kind(spec: Mapping[str, Any], path: str, loaders: Mapping[str, Any]) -> str:
    kind = spec.get(LOADER_KEY, DEFAULT_LOADER)
    if kind not in loaders:
        raise ConfigError(
            f"{path}.{LOADER_KEY}: {kind!r} is not a loader; expected "
            f"{' or '.join(repr(name) for name in loaders)}."
        )
    return kind


def _check_loading(arguments: Mapping[str, Any], path: str) -> None:
    """The loader's counts, checked here rather than by torch at the first batch."""
    if arguments["batch_size"] < 1:
        raise ConfigError(f"{path}.batch_size: {arguments['batch_size']} must be at least 1.")
    if arguments.get("num_workers", 0) < 0:
        raise ConfigError(f"{path}.num_workers: {arguments['num_workers']} must be 0 or more.")


def _trainer(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"trainer: expected a mapping of Trainer arguments, got {spec!r}.")
    return resolve_arguments(Trainer, spec, "trainer", skip=TRAINER_ARGUMENTS_BUILT_BY_JOBS)


def _name(spec: Any, registry: Registry, path: str) -> str:
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping such as {{name: {next(iter(registry))}, ...}}, "
            f"got {spec!r}."
        )
    if "name" not in spec:
        raise ConfigError(f"{path}.name: missing; one of {', '.join(registry)}.")
    registry.get(spec["name"], f"{path}.name")  # unknown names fail here, with a suggestion
    return spec["name"]


def _refuse_unknown_keys(
    spec: Any, known: Collection[str], prefix: str, listing: str, what: str = "key"
) -> None:
    """A ConfigError for the first key of ``spec`` not in ``known``, with a suggestion."""
    for key in spec:
        if key not in known:
            hint = did_you_mean(key, known)
            raise ConfigError(f"{prefix}{key}: unknown {what}{hint}; {listing}.")
