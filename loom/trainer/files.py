"""Writing files so that a reader, or a crash, never sees half of one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["write_atomically"]


def write_atomically(
    path: str | os.PathLike[str], content: str | bytes | Callable[[BinaryIO], Any]
) -> Path:
    """Writes ``content`` to ``path`` through a temporary file beside it, flushed to disk
    and renamed over ``path``: readers see the old file or the new one, never half.

    Args:
        path: The file to write; its folder is created if missing.
        content: Text (written as UTF-8), bytes, or a function that writes to the
            open binary file, e.g. ``lambda file: torch.save(obj, file)``.

    Returns:
        ``path``, as a Path.

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes" / "summary.json"
        >>> write_atomically(path, '{"done": true}').read_text()
        '{"done": true}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as file:
            if callable(content):
                content(file)
            else:
                file.write(content.encode("utf-8") if isinstance(content, str) else content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
