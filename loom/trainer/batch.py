"""Reading and writing one item of a batch, whatever shape the batch has.

A key says where the item is:

* an ``int``: a position in a tuple or list (tuples, named tuples and lists are
  rebuilt, never changed in place);
* a ``str``: a key of a mapping (which is copied, never changed in place), else an
  attribute of an object (set in place);
* a ``(getter, setter)`` pair of callables: ``getter(batch) -> item`` and
  ``setter(batch, item) -> batch``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import torch

__all__ = [
    "BatchKey",
    "batch_size",
    "describe_item",
    "get_batch_item",
    "move_to_device",
    "num_batches",
    "set_batch_item",
    "split_batch",
    "validate_batch_key",
]

BatchKey = int | str | tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]

# Built once: written inline, `tuple | list` would build a union object on every call,
# and get_batch_item runs several times per training step.
_SEQUENCES = (tuple, list)


def get_batch_item(batch: Any, key: BatchKey) -> Any:
    """Returns the item of ``batch`` at ``key``.

    Raises:
        TypeError: ``key`` is of no accepted form, or does not fit the batch's type.
        IndexError: an ``int`` key is out of range.
        KeyError: a ``str`` key names no mapping key or attribute.

    Examples:
        >>> get_batch_item(("inputs", "targets"), 1)
        'targets'
        >>> get_batch_item({"image": 1, "label": 2}, "label")
        2
        >>> get_batch_item({"y": [3, 4]}, (lambda b: b["y"][0], lambda b, v: b))
        3
    """
    key_type = type(key)
    if key_type is int:
        if isinstance(batch, _SEQUENCES):
            try:
                return batch[key]
            except IndexError:
                raise IndexError(_out_of_range(batch, key)) from None
        raise TypeError(_position_needs_sequence(batch, key))
    if key_type is str:
        if isinstance(batch, Mapping):
            if key in batch:
                return batch[key]
            raise KeyError(_missing_key(batch, key))
        try:
            return getattr(batch, key)
        except AttributeError:
            raise KeyError(_missing_attribute(batch, key)) from None
    getter, _ = _accessor_pair(key, batch)
    return getter(batch)


def set_batch_item(batch: Any, key: BatchKey, value: Any) -> Any:
    """Returns ``batch`` with the item at ``key`` replaced by ``value``.

    Tuples, named tuples, lists and mappings are rebuilt, so the caller's
    containers are never changed; other objects get the attribute set in place.
    The item must already exist: a misspelled key is an error, not a new entry.

    Raises:
        TypeError: ``key`` is of no accepted form or does not fit the batch's type,
            or a setter returned None.
        IndexError: an ``int`` key is out of range.
        KeyError: a ``str`` key names no mapping key or attribute.

    Examples:
        >>> set_batch_item(("inputs", "targets"), 1, "smoothed")
        ('inputs', 'smoothed')
        >>> set_batch_item({"image": 1, "label": 2}, "label", 0)
        {'image': 1, 'label': 0}
    """
    key_type = type(key)
    if key_type is int:
        if isinstance(batch, _SEQUENCES):
            if not -len(batch) <= key < len(batch):
                raise IndexError(_out_of_range(batch, key))
            items = list(batch)
            items[key] = value
            if type(batch) is tuple or type(batch) is list:
                return type(batch)(items)
            if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
                return type(batch)(*items)
            return type(batch)(items)
        raise TypeError(_position_needs_sequence(batch, key))
    if key_type is str:
        if isinstance(batch, Mapping):
            if key not in batch:
                raise KeyError(_missing_key(batch, key))
            if not isinstance(batch, MutableMapping):
                raise TypeError(
                    f"cannot set batch key {key!r}: the batch is a read-only "
                    f"{type(batch).__name__}; yield dicts from the dataloader instead."
                )
            rebuilt = dict(batch) if type(batch) is dict else copy.copy(batch)
            rebuilt[key] = value
            return rebuilt
        if not hasattr(batch, key):
            raise KeyError(_missing_attribute(batch, key))
        setattr(batch, key, value)
        return batch
    _, setter = _accessor_pair(key, batch)
    rebuilt = setter(batch, value)
    if rebuilt is None:
        raise TypeError(
            f"the setter of batch key {key!r} returned None for a {type(batch).__name__} "
            "batch; a setter must return the batch, e.g. 'lambda batch, value: (batch[0], value)'."
        )
    return rebuilt


def validate_batch_key(key: Any, argument: str) -> None:
    """Checks that ``key`` has an accepted form, so a bad one fails before training starts.

    Raises:
        TypeError: ``key`` is neither an int, a str nor a (getter, setter) pair.
    """
    if type(key) in (int, str):
        return
    if isinstance(key, tuple) and len(key) == 2 and all(callable(part) for part in key):
        return
    raise TypeError(
        f"{argument}={key!r} is not a batch key; expected an int (position in a tuple or list), "
        "a str (mapping key or attribute) or a (getter, setter) pair of callables."
    )


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Moves every tensor in ``batch`` (nested tuples, lists and dicts) to ``device``.

    Tensors already there are returned as they are, at no cost; objects with a
    ``to(device)`` method are moved by it; anything else is left as it is.
    """
    if isinstance(batch, torch.Tensor):
        if batch.device == device:
            return batch
        return batch.to(device, non_blocking=True)
    if isinstance(batch, _SEQUENCES):
        moved = [move_to_device(item, device) for item in batch]
        if isinstance(batch, tuple) and hasattr(batch, "_fields"):
            return type(batch)(*moved)
        return type(batch)(moved)
    if isinstance(batch, Mapping):
        return type(batch)({key: move_to_device(item, device) for key, item in batch.items()})
    to = getattr(batch, "to", None)
    return to(device) if callable(to) else batch


def num_batches(dataloader: Any) -> int | None:
    """Batches per epoch of ``dataloader``, or None when it has no length (a stream)."""
    try:
        return len(dataloader)
    except TypeError:
        return None


def batch_size(item: Any) -> int:
    """The number of samples in a batch item: its first dimension, or its length."""
    if isinstance(item, torch.Tensor):
        try:
            return item.shape[0]
        except IndexError:  # a 0-d tensor: one sample
            return 1
    return len(item)


def describe_item(item: Any) -> str:
    """A batch item (or a model's outputs) as an error message shows it: a tensor's dtype,
    shape and device, anything else's type.

    Examples:
        >>> describe_item(torch.zeros(2, 3)), describe_item({"image": 1})
        ('float32 (2, 3) on cpu', 'dict')
    """
    if isinstance(item, torch.Tensor):
        return f"{str(item.dtype).removeprefix('torch.')} {tuple(item.shape)} on {item.device}"
    return type(item).__name__


def split_batch(batch: Any, num_chunks: int) -> list[Any]:
    """Splits every tensor of ``batch`` along its first dimension into ``num_chunks`` parts.

    Tuples, named tuples, lists and dicts are split item by item, so each part
    has the batch's structure. Parts differ in size by at most one sample when
    the batch does not divide evenly.

    Raises:
        TypeError: The batch holds something other than tensors and containers of them.
        ValueError: A tensor has fewer samples than ``num_chunks``.

    Examples:
        >>> import torch
        >>> parts = split_batch((torch.arange(4), torch.arange(4) * 10), 2)
        >>> [tuple(part[1].tolist()) for part in parts]
        [(0, 10), (20, 30)]
    """
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0 or batch.shape[0] < num_chunks:
            raise ValueError(
                f"cannot split a batch item of shape {tuple(batch.shape)} into "
                f"grad_accum={num_chunks} microbatches: it has fewer samples than that."
            )
        return list(batch.tensor_split(num_chunks))
    if isinstance(batch, _SEQUENCES):
        columns = [split_batch(item, num_chunks) for item in batch]
        named = isinstance(batch, tuple) and hasattr(batch, "_fields")
        rows = [[column[i] for column in columns] for i in range(num_chunks)]
        return [type(batch)(*row) if named else type(batch)(row) for row in rows]
    if isinstance(batch, Mapping):
        split = {key: split_batch(item, num_chunks) for key, item in batch.items()}
        return [
            type(batch)({key: parts[i] for key, parts in split.items()}) for i in range(num_chunks)
        ]
    raise TypeError(
        f"grad_accum needs batches made of tensors in tuples, lists or dicts; "
        f"found a {type(batch).__name__}, which cannot be split into microbatches."
    )


def _accessor_pair(key: Any, batch: Any) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
    if isinstance(key, tuple) and len(key) == 2 and all(callable(part) for part in key):
        return key
    raise TypeError(
        f"batch key {key!r} (for a {type(batch).__name__} batch) is not a batch key; expected "
        "an int (position in a tuple or list), a str (mapping key or attribute) "
        "or a (getter, setter) pair of callables."
    )


def _out_of_range(batch: Any, key: int) -> str:
    return (
        f"batch key {key} is out of range for a {type(batch).__name__} batch of "
        f"{len(batch)} items; valid positions are 0 to {len(batch) - 1}."
    )


def _position_needs_sequence(batch: Any, key: int) -> str:
    hint = (
        " Use a str key for a mapping batch."
        if isinstance(batch, Mapping)
        else " Use a (getter, setter) pair for other batch types."
    )
    return (
        f"batch key {key} is a position, but the batch is a {type(batch).__name__}, "
        f"not a tuple or list.{hint}"
    )


def _missing_key(batch: Mapping, key: str) -> str:
    return (
        f"batch key {key!r} is not in the {type(batch).__name__} batch; "
        f"its keys are {sorted(map(str, batch))}."
    )


def _missing_attribute(batch: Any, key: str) -> str:
    return f"batch key {key!r} is not an attribute of the {type(batch).__name__} batch."
