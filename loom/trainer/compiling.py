"""``torch.compile`` for a run: its options checked before anything is built, the model
compiled in place.

The model is compiled with ``nn.Module.compile``, in place, not wrapped: its
``state_dict`` keeps its own names (no ``_orig_mod.``), every plugin that reads
``state.model`` sees the module it was given, and evaluations run the same compiled
module (in eval mode and without gradients: one more graph). Under torchrun the module
inside DistributedDataParallel is the one compiled, so DDP's reducer sees the
gradients of one compiled backward (a wrapped ``torch.compile(DDP(model))`` breaks its
graph in DDP's own forward in the torch loom installs, and compiles nothing).

Algorithms that edit the batch stay eager, in their hooks around the compiled forward;
they change the inputs' values, not their shapes or dtypes, so they cost no
recompilation per batch (a test counts the graphs).

Examples:
    >>> compile_options(True), compile_options({"mode": "max-autotune"})
    ({}, {'mode': 'max-autotune'})
    >>> compile_options({"fullgrahp": True})
    Traceback (most recent call last):
    ...
    ValueError: compile: unknown option 'fullgrahp' (did you mean 'fullgraph'?); ...
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["COMPILE_OPTIONS", "compile_model", "compile_options"]

COMPILE_OPTIONS = tuple(
    name for name in inspect.signature(torch.compile).parameters if name != "model"
)
"""The keyword arguments of ``torch.compile`` that ``compile={...}`` may give."""


def compile_options(compile: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``torch.compile`` keyword arguments ``compile`` asks for, or None for an eager
    run: True is torch's defaults; a mapping gives options, each checked against what
    this torch knows (a backend, a mode, an inductor option).

    Raises:
        TypeError: ``compile`` is neither a bool nor a mapping.
        ValueError: An option, backend, mode or inductor option torch does not know;
            the message lists the known ones.
    """
    if compile is None or compile is False:
        return None
    if compile is True:
        return {}
    if not isinstance(compile, Mapping):
        raise TypeError(
            f"compile={compile!r} must be True, False or a mapping of torch.compile's "
            f"options ({', '.join(COMPILE_OPTIONS)})."
        )
    for key in compile:
        if key not in COMPILE_OPTIONS:
            raise ValueError(
                f"compile: unknown option {key!r}{_did_you_mean(key, COMPILE_OPTIONS)}; "
                f"torch.compile takes {', '.join(COMPILE_OPTIONS)}."
            )
    options = dict(compile)
    _check_choice(options.get("backend"), "backend", _backends(), allow_callable=True)
    _check_choice(options.get("mode"), "mode", _modes())
    inductor = options.get("options")
    if inductor is not None:
        if not isinstance(inductor, Mapping):
            raise ValueError(
                f"compile.options: {inductor!r} must be a mapping of inductor options."
            )
        if options.get("mode") is not None:
            raise ValueError(
                "compile: give either mode or options, not both (torch.compile refuses both)."
            )
        known = _inductor_options()
        for key in inductor:
            if key not in known:
                raise ValueError(
                    f"compile.options: unknown inductor option {key!r}"
                    f"{_did_you_mean(key, known)}; torch._inductor.list_options() lists "
                    "the known ones."
                )
    return options


def compile_model(model: nn.Module, options: Mapping[str, Any]) -> None:
    """Compiles ``model`` in place (the module inside a DistributedDataParallel)."""
    from loom.trainer.checkpoint import unwrap_model

    unwrap_model(model).compile(**options)


def _check_choice(value: Any, name: str, known: list[str], allow_callable: bool = False) -> None:
    if value is None or (allow_callable and callable(value)):
        return
    if not isinstance(value, str) or value not in known:
        raise ValueError(
            f"compile.{name}: {value!r} is not one torch knows{_did_you_mean(value, known)}; "
            f"expected one of {', '.join(known)}."
        )


def _backends() -> list[str]:
    from torch._dynamo import list_backends

    return sorted(list_backends(exclude_tags=()))


def _modes() -> list[str]:
    from torch._inductor import list_mode_options

    return list(list_mode_options())


def _inductor_options() -> list[str]:
    from torch._inductor import list_options

    return list(list_options())


def _did_you_mean(key: Any, known: Any) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
