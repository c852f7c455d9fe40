"""The registered components as Markdown: ``loom list --markdown``, and docs/config.md."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from loom.config.registries import REGISTRIES
from loom.config.schema import Parameter, type_name

__all__ = ["components_markdown", "parameters_table"]


def components_markdown(kinds: Sequence[str] = tuple(REGISTRIES)) -> str:
    """A ``###`` heading per kind, a ``####`` entry per name with its summary and arguments.

    Examples:
        >>> print(components_markdown(["callback"]).splitlines()[0])
        ### callbacks
    """
    blocks = []
    for kind in kinds:
        registry = REGISTRIES[kind]
        blocks.append(f"### {kind}s")
        for name in registry:
            parameters = registry.parameters(name)
            table = "No arguments."
            if parameters:
                table = parameters_table(parameters, registry.supplied)
            blocks.append(f"#### `{name}`\n\n{registry.summary(name)}\n\n{table}")
    return "\n\n".join(blocks) + "\n"


def parameters_table(parameters: Sequence[Parameter], supplied: Collection[str] = ()) -> str:
    """``| key | type | default |`` rows, one per parameter; ``supplied``: those a job
    fills when left out (a dataset's facts, a run's checkpoint folder)."""
    rows = ["| key | type | default |", "|---|---|---|"]
    for parameter in parameters:
        if parameter.name in supplied:  # filled in by the job even where it has a default
            default = "from the job"
        elif parameter.required:
            default = "required"
        else:
            default = f"`{parameter.describe().split(' = ', 1)[1]}`"
        kind = type_name(parameter.annotation).replace("|", "\\|")
        rows.append(f"| `{parameter.name}` | {kind} | {default} |")
    return "\n".join(rows)
