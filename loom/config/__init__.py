"""The configuration layer: registries of named components, job files, and building jobs."""

from loom.config.registries import (
    ALGORITHMS,
    CALLBACKS,
    DATASETS,
    MODELS,
    OPTIMIZERS,
    REGISTRIES,
    SCHEDULERS,
    WRAPPERS,
)
from loom.config.registry import Registry
from loom.config.schema import ConfigError

__all__ = [
    "ALGORITHMS",
    "CALLBACKS",
    "DATASETS",
    "MODELS",
    "OPTIMIZERS",
    "REGISTRIES",
    "SCHEDULERS",
    "WRAPPERS",
    "ConfigError",
    "Registry",
]
