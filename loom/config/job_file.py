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


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _JobLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping.

    Only the check is added: what a document may hold (plain data, no tags such as
    ``!!python/object``) is ``SafeLoader``'s.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_repeated_keys(self, node, (), set())
        return super().construct_document(node)


def _refuse_repeated_keys(
    loader: _JobLoader, node: yaml.Node, path: tuple[str, ...], seen: set[int]
) -> None:
    """Raises :class:`_DuplicateKey` for the first key given twice in a mapping under
    ``node``, which sits at config ``path``; a node reached again (an alias) is not
    walked twice."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_repeated_keys(loader, item, (*path, str(index)), seen)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    marks: dict[Any, yaml.Mark] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            # "<<: *base": the keys it brings may be given again, to override them;
            # a mapping written in place is checked as this one's part.
            merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for part in merged:
                _refuse_repeated_keys(loader, part, path, seen)
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            continue  # a list or mapping as a key: the constructor refuses it
        key, mark = loader.construct_object(key_node), key_node.start_mark
        try:
            first = marks.setdefault(key, mark)
        except TypeError:  # unhashable: the constructor says so
            continue
        if first is not mark:
            shown = f" ({'.'.join((*path, str(key)))})" if path else ""  # top level: the key
            raise _DuplicateKey(
                f"key {key!r}{shown} is given twice in one mapping, at {_line(first, mark)} "
                f"and at {_line(mark, first)}; YAML would keep the second silently. Give it once."
            )
        _refuse_repeated_keys(loader, value_node, (*path, str(key)), seen)


def _line(mark: yaml.Mark, other: yaml.Mark) -> str:
    """``mark``'s line, and its column when ``other`` is on the same line."""
    line = f"line {mark.line + 1}"
    return f"{line}, column {mark.column + 1}" if mark.line == other.line else line


def read_job_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in the YAML file at ``path``, read as ``yaml.safe_load`` reads it.

    Every reader of a job's YAML (a job file, a run's ``config.yaml``) goes through here,
    so all of them refuse what it refuses.

    Raises:
        ConfigError: The file is missing, empty, not UTF-8 (the line and byte are
            named), not YAML, not a mapping, gives a key twice in one mapping (named
            with its config path, such as ``optimizer.lr``, and both lines), or uses a
            tag such as ``!!python/object`` (job files hold plain data only).
    """
    path = Path(path)
    if not path.is_file():
        where = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"job file {str(path)!r} {where}; give the path of a YAML job file.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)  # in bytes, from 1
        raise ConfigError(
            f"{path} is not UTF-8 text: byte 0x{data[error.start]:02x} at line {line}, "
            f"column {column} (byte offset {error.start}); a job file is a YAML text file, "
            "saved as UTF-8."
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
    except yaml.MarkedYAMLError as error:  # one line: what, and where
        context = f", {error.context} {_position(error, 'context_mark')}" if error.context else ""
        raise ConfigError(
            f"{path} is not valid YAML: {error.problem} {_position(error)}{context}."
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(error).split())}.") from None
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


def _position(error: yaml.MarkedYAMLError, which: str = "problem_mark") -> str:
    mark = getattr(error, which)
    return f"at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
