"""Writing files and folders so that a reader, or a crash, never sees half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

__all__ = [
    "FileWriteError",
    "publish_folder",
    "remove_path",
    "remove_stale_temporaries",
    "temporary_folder",
    "write_atomically",
]

_TEMPORARY = ".{name}.{token}.tmp"
"""The name of a file being written, beside the file it becomes (hidden, never matched
by the names a run's files are looked up by)."""

_STALE = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
"""The names :data:`_TEMPORARY` makes (``token_hex(4)``: 8 hex digits), and no other."""

_SET_ASIDE = ".{name}.replaced"
"""Where :func:`publish_folder` moves the folder it replaces while it renames the new one."""


class FileWriteError(OSError):
    """A file could not be written (a full disk, a read-only folder): the message names
    the file and the reason, in one line."""

    @classmethod
    def of(cls, error: OSError, path: str | os.PathLike[str]) -> FileWriteError:
        """``error``, raised writing ``path``, as one that names ``path``."""
        return cls(error.errno, error.strerror or str(error), str(path))

    def __str__(self) -> str:
        reason = self.strerror or "unknown error"
        hint = _HINTS.get(self.errno, "")
        return f"cannot write {self.filename}: {reason}{hint}"


_HINTS = {
    errno.ENOSPC: " (the disk is full: free space, then resume the run)",
    errno.EDQUOT: " (the disk quota is used up: free space, then resume the run)",
    errno.EROFS: " (the file system is read-only: give a writable run directory)",
    errno.EACCES: " (no permission: give a writable run directory)",
}


def write_atomically(
    path: str | os.PathLike[str], content: str | bytes | Callable[[BinaryIO], Any]
) -> Path:
    """Writes ``content`` to ``path`` through a temporary file beside it, flushed to disk
    and renamed over ``path``, then the folder flushed too: readers see the old file or
    the new one, never half, and a power cut after the return keeps the new one.

    The temporary file is created anew (never an existing file or a link planted at its
    name); a process killed mid-write leaves it behind, which
    :func:`remove_stale_temporaries` clears.

    Args:
        path: The file to write; its folder is created if missing.
        content: Text (written as UTF-8), bytes, or a function that writes to the
            open binary file, e.g. ``lambda file: torch.save(obj, file)``.

    Returns:
        ``path``, as a Path.

    Raises:
        FileWriteError: The folder or the file cannot be written (a full disk, a
            read-only folder); ``path`` is left as it was, unless only the flush of the
            folder after the rename failed (then it is the new file, maybe not on disk).

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes" / "summary.json"
        >>> write_atomically(path, '{"done": true}').read_text()
        '{"done": true}'
    """
    path = Path(path)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary, descriptor = _create_temporary(path)
        with open(descriptor, "wb") as raw:
            file = _Recording(raw)
            try:
                if callable(content):
                    content(file)  # type: ignore[arg-type]
                else:
                    file.write(content.encode("utf-8") if isinstance(content, str) else content)
                file.flush()
            except Exception as error:
                # torch.save reports a failed write as its own RuntimeError; the OSError
                # it hides says why.
                raise (file.error or error) from None
            os.fsync(raw.fileno())
        os.replace(temporary, path)
        temporary = None
        _sync_folder(path.parent)
    except OSError as error:
        raise FileWriteError.of(error, path) from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):  # a read-only disk: the first error is the one
                temporary.unlink()
    return path


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Deletes the temporary files and folders that a process killed inside
    :func:`write_atomically` or while filling a :func:`temporary_folder` left in
    ``folder`` (named ``.<name>.<8 hex digits>.tmp``; nothing else); returns them. Call
    it only where no other process writes.

    Examples:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".model.pt.3f9a1c2e.tmp").write_bytes(b"half")
        >>> [path.name for path in remove_stale_temporaries(folder)]
        ['.model.pt.3f9a1c2e.tmp']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for aside in folder.glob(".*.replaced"):  # a kill inside publish_folder
        original = folder / aside.name[1 : -len(".replaced")]
        if original.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(aside, original)
    stale = sorted(path for path in folder.glob(".*.tmp") if _STALE.fullmatch(path.name))
    for path in stale:
        remove_path(path)  # a folder being written is a sharded save's
    return stale


def remove_path(path: str | os.PathLike[str]) -> None:
    """Deletes the file or the folder (with what it holds) at ``path``, if any; a link,
    not what it points to. A file a reader holds open on some file systems stays: the
    next pruning takes it."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def temporary_folder(path: str | os.PathLike[str]) -> Path:
    """A new, empty, hidden folder beside ``path``, to fill and then
    :func:`publish_folder` as ``path``: readers never see a folder half written, and a
    process killed while filling it leaves a temporary that
    :func:`remove_stale_temporaries` clears.

    Raises:
        FileWriteError: The folder cannot be created (a full disk, a read-only folder).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            temporary = path.with_name(
                _TEMPORARY.format(name=path.name, token=secrets.token_hex(4))
            )
            try:
                temporary.mkdir()  # exclusive, as O_EXCL is for a file
                return temporary
            except FileExistsError:
                continue
    except OSError as error:
        raise FileWriteError.of(error, path) from None


def publish_folder(temporary: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Renames the filled ``temporary`` (from :func:`temporary_folder`) to ``path``, its
    files and then its parent flushed to disk first. A folder already at ``path`` (the
    same checkpoint, written again by a resumed run) is replaced: it is moved aside,
    and deleted once the new one is in place (a kill between the two renames leaves it
    aside, and :func:`remove_stale_temporaries` puts it back).

    Raises:
        FileWriteError: A flush or the rename failed; ``path`` is left as it was.
    """
    temporary, path = Path(temporary), Path(path)
    try:
        for file in temporary.iterdir():
            if file.is_file():
                _sync_file(file)
        _sync_folder(temporary)
        replaced = None
        if path.is_dir():
            # Aside under a name remove_stale_temporaries gives back, should a kill come
            # before the new one is in place.
            replaced = path.with_name(_SET_ASIDE.format(name=path.name))
            shutil.rmtree(replaced, ignore_errors=True)
            os.replace(path, replaced)
        os.replace(temporary, path)
        _sync_folder(path.parent)
    except OSError as error:
        raise FileWriteError.of(error, path) from None
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return path


def _create_temporary(path: Path) -> tuple[Path, int]:
    # O_EXCL: never an existing file, and never through a link at that name.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = path.with_name(_TEMPORARY.format(name=path.name, token=secrets.token_hex(4)))
        try:
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:
            continue


def _sync_file(file: Path) -> None:
    descriptor = os.open(file, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    """Flushes the folder's entries, so that the rename outlives a power cut (POSIX)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _Recording:
    """A binary file that keeps the first OSError of a write, which a writer may hide."""

    def __init__(self, file: IO[bytes]):
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)
