"""Checks that a dataset's files are where a job says, before anything reads them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["require_files"]


def require_files(
    root: str | os.PathLike[str], dataset: str, files: Sequence[str], source: str
) -> Path:
    """Returns ``root`` as a Path if every one of ``files`` (relative to it) exists.

    Raises:
        FileNotFoundError: Naming the dataset, the root, the missing files and
            where to get them. Nothing is downloaded: jobs run offline.
    """
    root = Path(root).expanduser()
    missing = [name for name in files if not (root / name).exists()]
    if missing:
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        raise FileNotFoundError(
            f"dataset {dataset!r}: {shown} not found under root {str(root)!r}. loom never "
            f"downloads: put {source} there, so that {root / files[0]} exists, or set the "
            "dataset's root to where they are."
        )
    return root
