"""Adding context to an exception without changing its type."""

from __future__ import annotations

__all__ = ["add_note"]


def add_note(error: BaseException, note: str) -> None:
    """Attaches ``note`` to ``error`` (printed under its traceback), keeping its type.

    Examples:
        >>> error = ValueError("bad value")
        >>> add_note(error, "raised by algorithm Example at event 'before_loss'")
        >>> error.__notes__
        ["raised by algorithm Example at event 'before_loss'"]
    """
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # Python 3.10: tracebacks do not print notes, but the attribute is standard.
        error.__notes__ = [*getattr(error, "__notes__", []), note]
