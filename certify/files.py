"""How every output of the toolkit is written: atomically, under a lock, and only to a regular file.

Results files and their settings (:mod:`certify.results`) and training checkpoints
(``encoders``) follow the same three rules:

- a file is written through a temporary file in its folder, fsynced and renamed over the old one,
  so a reader (or a run killed midway) sees the old file or the new one, never a torn one;
- a run holds an exclusive lock (``fcntl.flock`` on ``<file>.lock``, which records the holder's
  pid and goes when the holder releases it or dies) while it writes, so a second run is refused
  instead of mixing its writes with the first's;
- a path that cannot hold a file (a folder, a device, a path below a file) is refused before any
  work is done.

Example:
    >>> descriptor = take_lock(path)
    >>> try:
    ...     write_atomically(path, "idx\\tlabel\\n")
    ... finally:
    ...     release_lock(path, descriptor)
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(
    path: str | os.PathLike[str], content: str | bytes | Callable[[BinaryIO], object]
) -> None:
    """Write ``content`` to ``path`` through a temporary file in the same folder and a rename:
    never a torn file. The folder must exist.

    Args:
        path: the file to write or replace.
        content: text (written as UTF-8), bytes, or a function that writes to the binary file
            it is given (such as ``lambda file: torch.save(payload, file)``).

    Raises:
        OSError: if the file cannot be written; the temporary file is removed.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(handle, "wb") as file:
            if callable(content):
                content(file)
            else:
                file.write(content.encode("utf-8") if isinstance(content, str) else content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class LockHeldError(ValueError):
    """Another holder has the lock of a file; ``holder`` says who ("pid N on HOST")."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is in use by another run ({holder})")
        self.holder = holder


def take_lock(path: str | os.PathLike[str]) -> int:
    """Take the exclusive lock of ``path`` (``<path>.lock``, in the file's folder, which must
    exist) without waiting; return its descriptor for :func:`release_lock`.

    Raises:
        LockHeldError: naming the holder, if another process or descriptor holds it.
    """
    path = Path(path)
    lock_path = path.with_name(path.name + ".lock")
    while True:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 200).decode("utf-8", errors="replace").strip()
            os.close(descriptor)
            raise LockHeldError(path, holder or "starting") from None
        # The last holder unlinks the lock file as it releases it: if that happened between our
        # open and our flock, we hold a lock nobody else can see, so take the new file's.
        try:
            if os.path.samestat(os.fstat(descriptor), os.stat(lock_path)):
                break
        except FileNotFoundError:
            pass
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    return descriptor


def release_lock(path: str | os.PathLike[str], descriptor: int) -> None:
    """Give back the lock that :func:`take_lock` returned for ``path``."""
    path = Path(path)
    path.with_name(path.name + ".lock").unlink(missing_ok=True)  # while still holding the lock
    os.close(descriptor)


def path_problem(path: Path, writable: bool = False) -> tuple[str, Path | None] | None:
    """What keeps ``path`` from being written as a regular file, or None when nothing does.

    Returns:
        ("folder", None) if the path is a folder or names none; ("not a file", None) if it
        exists but is not a regular file (a device, a FIFO, a socket); ("below a file", parent)
        if the nearest existing path above it is a file; with ``writable``, ("not writable",
        parent) if that nearest existing folder cannot be written. Missing folders are fine:
        writing creates them.
    """
    if not path.name or path.is_dir():
        return ("folder", None)
    if path.exists():
        if not path.is_file():
            return ("not a file", None)
        if not writable:
            return None
    for parent in path.parents:  # the nearest existing path above must be a (writable) folder
        if parent.exists():
            if not parent.is_dir():
                return ("below a file", parent)
            if writable and not os.access(parent, os.W_OK | os.X_OK):
                return ("not writable", parent)
            return None
    return None
