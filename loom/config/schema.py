"""Constructor signatures as the schema of a job file: which keys exist, and their types.

A component's configurable arguments are its keyword parameters whose annotations
have a plain-data form (bool, int, float, str, None, lists, mappings, literals and
unions of them). Values are checked and coerced against those annotations, so
``lr: 1e-3`` (a string to YAML) becomes a float, and every error names the dotted
path of the offending key.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from loom.trainer import Duration

__all__ = [
    "REQUIRED",
    "ConfigError",
    "Parameter",
    "coerce",
    "did_you_mean",
    "parameters_of",
    "resolve_arguments",
    "type_name",
]

REQUIRED = inspect.Parameter.empty
"""The default of a parameter the job must give."""

_SEQUENCE_ORIGINS = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
_MAPPING_ORIGINS = (dict, collections.abc.Mapping)
_SCALARS = (bool, int, float, str)


class ConfigError(ValueError):
    """A job file or override that cannot become a job; the message says where and why."""


@dataclass(frozen=True)
class Parameter:
    """One configurable argument of a component."""

    name: str
    annotation: Any
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """``name: type = default``, as ``loom list`` and the docs show it."""
        text = f"{self.name}: {type_name(self.annotation)}"
        default = _plain_default(self.default, self.annotation)
        return text if self.required else f"{text} = {default!r}"


def parameters_of(component: Callable[..., Any], *, skip: Collection[str] = ()) -> list[Parameter]:
    """The arguments of ``component`` a job file can set, in signature order.

    Parameters named in ``skip`` (those the job builder passes itself, such as an
    optimizer's ``params``), ``*args``/``**kwargs``, and parameters whose type has
    no plain-data form (a stream, a module) are left out.

    Examples:
        >>> def sgd(params, lr: float, momentum: float = 0.0): ...
        >>> [p.describe() for p in parameters_of(sgd, skip={"params"})]
        ['lr: float', 'momentum: float = 0.0']
    """
    function = component.__init__ if inspect.isclass(component) else component
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # an annotation that cannot be resolved is taken as "any plain value"
        hints = {}
    found = []
    for parameter in inspect.signature(component).parameters.values():
        if parameter.name in skip or parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            continue
        annotation = _plain_form(hints.get(parameter.name, Any))
        if annotation is None:
            if parameter.default is REQUIRED:
                raise TypeError(
                    f"{_qualified_name(component)} cannot be built from a job file: its "
                    f"required argument {parameter.name!r} has no plain-data type."
                )
            continue
        found.append(Parameter(parameter.name, annotation, parameter.default))
    return found


def resolve_arguments(
    component: Callable[..., Any],
    arguments: Mapping[str, Any],
    path: str,
    *,
    skip: Collection[str] = (),
    supplied: Collection[str] = (),
) -> dict[str, Any]:
    """Checks ``arguments`` against ``component``'s signature, coerces them, adds defaults.

    Args:
        component: The class or function the arguments are for.
        arguments: The job file's keyword arguments for it.
        path: Where ``arguments`` sit in the job file, for error messages ("model").
        skip: Parameters the builder always passes itself; a job may not set them.
        supplied: Parameters the builder fills when the job leaves them out,
            over any default (a model's ``num_classes`` and ``in_channels``,
            from the dataset).

    Returns:
        Every configurable argument: the given ones coerced, then the defaults.
        Supplied arguments the job left out stay out.

    Raises:
        ConfigError: An unknown key (with the closest known one), a value of the
            wrong type, or a missing required argument.
    """
    parameters = {p.name: p for p in parameters_of(component, skip=skip)}
    for key in arguments:
        if key not in parameters:
            raise ConfigError(
                f"{_join(path, key)}: unknown key{did_you_mean(key, parameters)}; "
                f"{_qualified_name(component)} takes {_listing(parameters)}."
            )
    resolved = {}
    for name, parameter in parameters.items():
        if name in arguments:
            resolved[name] = coerce(arguments[name], parameter.annotation, _join(path, name))
        elif name in supplied:
            continue  # the builder fills it, over any default
        elif not parameter.required:
            resolved[name] = _plain_default(parameter.default, parameter.annotation)
        else:
            raise ConfigError(
                f"{_join(path, name)}: missing required argument "
                f"({parameter.describe()}) of {_qualified_name(component)}."
            )
    return resolved


def coerce(value: Any, annotation: Any, path: str) -> Any:
    """``value`` as the plain-data type ``annotation`` asks for.

    Strings that spell a number become numbers where a number is expected (YAML
    reads ``1e-3`` as a string); whole floats become ints; nothing else is guessed.

    Examples:
        >>> coerce("1e-3", float, "optimizer.lr")
        0.001
        >>> coerce("fast", float, "optimizer.lr")
        Traceback (most recent call last):
        loom.config.schema.ConfigError: optimizer.lr: expected float, got 'fast' (str).
    """
    annotation = _plain_form(annotation) or annotation
    result = _coerce(value, annotation, path)
    if result is _NO_MATCH:
        hint = ""
        if isinstance(value, bool):  # YAML reads yes/no/on/off unquoted as booleans
            hint = " (YAML reads unquoted yes, no, on and off as booleans: quote a string)"
        raise ConfigError(
            f"{path}: expected {type_name(annotation)}, got {value!r} "
            f"({type(value).__name__}){hint}."
        )
    return result


def type_name(annotation: Any) -> str:
    """A readable name for a plain-data annotation: ``float | None``, ``list[int]``."""
    if annotation is Any:
        return "any"
    if annotation is Duration:
        return "duration ('10ep', '500ba' or '20000sp')"
    if annotation is type(None):
        return "None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(choice) for choice in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(member) for member in args)
    if origin in _SEQUENCE_ORIGINS:
        return f"list[{type_name(args[0]) if args else 'any'}]"
    if origin in _MAPPING_ORIGINS:
        return f"mapping[str, {type_name(args[1]) if len(args) == 2 else 'any'}]"
    return getattr(annotation, "__name__", str(annotation))


_NO_MATCH = object()


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if annotation is type(None):
        return None if value is None else _NO_MATCH
    if origin is typing.Literal:
        return value if value in args else _NO_MATCH
    if origin in (typing.Union, types.UnionType):
        # A value that already has one of the types keeps it; only then try converting.
        for member in args:
            if _is_exactly(value, member):
                return _coerce(value, member, path)
        for member in args:
            result = _coerce(value, member, path)
            if result is not _NO_MATCH:
                return result
        return _NO_MATCH
    if origin in _SEQUENCE_ORIGINS:
        if not isinstance(value, list | tuple):
            return _NO_MATCH
        item_type = args[0] if args else Any
        return [coerce(item, item_type, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin in _MAPPING_ORIGINS or annotation in _MAPPING_ORIGINS:
        if not isinstance(value, dict):
            return _NO_MATCH
        value_type = args[1] if len(args) == 2 else Any
        return {key: coerce(item, value_type, _join(path, str(key))) for key, item in value.items()}
    if annotation in _SEQUENCE_ORIGINS:
        return list(value) if isinstance(value, list | tuple) else _NO_MATCH
    return _coerce_scalar(value, annotation)


def _coerce_scalar(value: Any, annotation: type) -> Any:
    if annotation is Duration:
        try:
            return str(Duration.parse(value))
        except ValueError:
            return _NO_MATCH
    if isinstance(value, bool):  # True is an int to Python, never to a job file
        return value if annotation is bool else _NO_MATCH
    if annotation is bool or annotation is str:
        return value if isinstance(value, annotation) else _NO_MATCH
    if annotation is float:
        if isinstance(value, int | float):
            return float(value)
        return _parse_number(value, float)
    if annotation is int:
        number = value if isinstance(value, int | float) else _parse_number(value, float)
        if number is _NO_MATCH or not float(number).is_integer():
            return _NO_MATCH
        return int(number)
    return _NO_MATCH


def _parse_number(value: Any, kind: type) -> Any:
    if not isinstance(value, str):
        return _NO_MATCH
    try:
        return kind(value)
    except ValueError:
        return _NO_MATCH


def _is_exactly(value: Any, annotation: Any) -> bool:
    if annotation is type(None):
        return value is None
    if annotation in _SCALARS:
        return type(value) is annotation
    origin = typing.get_origin(annotation)
    if origin in _SEQUENCE_ORIGINS or annotation in _SEQUENCE_ORIGINS:
        return isinstance(value, list | tuple)
    if origin in _MAPPING_ORIGINS or annotation in _MAPPING_ORIGINS:
        return isinstance(value, dict)
    return False


def _plain_form(annotation: Any) -> Any:
    """The plain-data part of ``annotation``, or None where it has none."""
    if annotation is Any or annotation is type(None) or annotation in _SCALARS:
        return annotation
    if annotation is Duration:
        return Duration  # written as a string such as "10ep", checked as a duration
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return annotation if all(isinstance(a, _SCALARS) for a in args) else None
    if origin in (typing.Union, types.UnionType):
        if Duration in args:  # `str | Duration`: the string must spell a duration
            args = tuple(arg for arg in args if arg is not str)
        plain = [form for form in map(_plain_form, args) if form is not None]
        if not plain or plain == [type(None)]:
            return None
        return plain[0] if len(plain) == 1 else typing.Union[tuple(plain)]  # noqa: UP007
    if origin in _SEQUENCE_ORIGINS:
        item = _plain_form(args[0]) if args else Any
        return None if item is None else list[item]
    if origin in _MAPPING_ORIGINS:
        value = _plain_form(args[1]) if len(args) == 2 else Any
        return None if value is None else dict[str, value]
    if annotation in _SEQUENCE_ORIGINS or annotation in _MAPPING_ORIGINS:
        return annotation
    return None


def _plain_default(default: Any, annotation: Any = Any) -> Any:
    """A default as the job file would write it: ``0`` for a float is ``0.0``."""
    result = _coerce(default, annotation, "")
    if result is _NO_MATCH:  # a default outside its own annotation is the author's choice
        result = default
    return list(result) if isinstance(result, tuple) else result


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def did_you_mean(key: object, known: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``key``, else ``""``."""
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _listing(parameters: Mapping[str, Parameter]) -> str:
    return ", ".join(parameters) if parameters else "no arguments"


def _qualified_name(component: Any) -> str:
    return getattr(component, "__qualname__", repr(component))
