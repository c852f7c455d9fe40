"""The configuration layer: names for components, for YAML jobs."""

from loom.config.registry import ALGORITHMS, Registry

__all__ = ["ALGORITHMS", "Registry"]
