"""The registered components as Markdown: ``loom list --markdown``, and docs/config.md."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from loom.config.registries import ALGORITHMS, REGISTRIES
from loom.config.schema import Parameter, type_name
from loom.trainer import Algorithm, CompositionError, composition

__all__ = [
    "COMPOSITION_MARKER",
    "components_markdown",
    "composition_markdown",
    "parameters_table",
]

COMPOSITION_MARKER = "<!-- generated: composition -->"
"""Where a method card's generated "Composes with" table starts; it runs to the next
``## `` heading."""


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


def composition_markdown(name: str) -> str:
    """How the algorithm ``name`` combines with each registered one (itself included),
    listed before it and after it, as the Trainer checks it from their declared effects:
    the table of a method card's "Composes with" section.

    Examples:
        >>> table = composition_markdown("mixup")
        >>> "| `online_label_smoothing` | **refused**: OnlineLabelSmoothing reads" in table
        True
    """
    this = ALGORITHMS.get(name)
    rows = [
        f"Checked by the Trainer from the algorithms' declared effects, before training; "
        f"this table is generated from them. `{this.__name__}` listed first or second:",
        "",
        "| with | listed first | listed second |",
        "|---|---|---|",
    ]
    for other_name in ALGORITHMS:
        other = ALGORITHMS.get(other_name)
        cells = [_composed([this, other]), _composed([other, this])]
        rows.append(f"| `{other_name}` | {cells[0]} | {cells[1]} |")
    return "\n".join(rows) + "\n"


def _composed(algorithms: list[type[Algorithm]]) -> str:
    try:
        notes = composition(algorithms)
    except CompositionError as error:
        return f"**refused**: {error}".replace("|", "\\|")
    # Each note is a sentence of its own.
    return " ".join(["trains;" if notes else "trains", *notes]).replace("|", "\\|")
