"""Reading a job file and applying ``key.path=value`` overrides to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from loom.config.schema import ConfigError

__all__ = ["apply_overrides", "read_job_file"]


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one mapping: YAML keeps the last, so the first would be lost."""


class _JobLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping."""


def _mapping_without_repeats(loader: _JobLoader, node: yaml.MappingNode) -> Any:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # "<<: *base": its keys may be given again, to override them
        key = loader.construct_object(key_node)
        try:
            first = lines.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # an unhashable key: the constructor below says so
            continue
        if first != key_node.start_mark.line + 1:
            raise _DuplicateKey(
                f"key {key!r} is given twice in one mapping, at line {first} and at line "
                f"{key_node.start_mark.line + 1}; YAML would keep the second silently. "
                "Give it once."
            )
    return loader.construct_mapping(node)


_JobLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)


def read_job_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in the YAML file at ``path``, read as ``yaml.safe_load`` reads it.

    Raises:
        ConfigError: The file is missing, empty, not UTF-8, not YAML, not a mapping,
            gives a key twice in one mapping, or uses a tag such as ``!!python/object``
            (job files hold plain data only).
    """
    path = Path(path)
    if not path.is_file():
        where = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"job file {str(path)!r} {where}; give the path of a YAML job file.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path} is not UTF-8 text (at byte offset {error.start}); a job file is a YAML "
            "text file, saved as UTF-8."
        ) from None
    try:
        config = yaml.load(text, Loader=_JobLoader)  # safe_load's, with no repeated keys
    except _DuplicateKey as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(
            f"{path}: {error.problem} {_position(error)}. Job files hold plain data only: "
            "tags such as !!python/object are refused."
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if config is None:
        raise ConfigError(f"{path}: the job file is empty; see configs/digits.yaml for one.")
    if not isinstance(config, dict):
        raise ConfigError(
            f"{path}: a job file is a mapping of sections (model, data, optimizer, trainer, ...), "
            f"got a {type(config).__name__}."
        )
    return config


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``config`` with each ``"key.path=value"`` applied; the value is read as YAML.

    Keys of sections are dotted (``optimizer.lr=0.05``), list items by position
    (``algorithms.0.alpha=0.3``). A key that is not in the file may be set; the
    job's validation then decides whether the component takes it.

    Raises:
        ConfigError: An override without ``=``, a path through a value, or a
            list position out of range.

    Examples:
        >>> apply_overrides({"optimizer": {"name": "sgd", "lr": 0.1}}, ["optimizer.lr=1e-2"])
        {'optimizer': {'name': 'sgd', 'lr': '1e-2'}}
    """
    for override in overrides:
        key_path, equals, text = override.partition("=")
        keys = key_path.split(".")
        if not equals or not all(keys):
            raise ConfigError(
                f"override {override!r} must be key.path=value, e.g. optimizer.lr=0.05."
            )
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        _set(config, keys, value, override)
    return config


def _set(config: dict[str, Any], keys: list[str], value: Any, override: str) -> None:
    node: Any = config
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(
                    f"override {override!r}: {where} is not an item of a list of {len(node)}."
                )
            index: Any = int(key)
        elif isinstance(node, dict):
            index = key
        else:
            parent = ".".join(keys[:depth])
            raise ConfigError(
                f"override {override!r}: {parent} holds {node!r}, not a section with keys."
            )
        if last:
            node[index] = value
        else:
            if isinstance(node, dict) and node.get(index) is None:
                node[index] = {}
            node = node[index]


def _position(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark
    return f"at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
