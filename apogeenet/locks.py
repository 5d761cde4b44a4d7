"""One writer per output: advisory locks that the operating system releases when a process dies.

Two commands writing into one directory mix their outputs (two `train` runs share
``checkpoints/best.pt``; a second `predict` removes the parts of the first). Each command that
writes a directory holds :func:`one_writer` on it for its whole run; a second one stops at once
with one line. Work that many processes share (the shards of one predict plan, on Dask workers or
a Slurm array) holds :func:`shared` on the plan; whoever would remove the plan asks
:func:`remove_unless_used` and a plan in use stays. The locks are ``flock`` locks on a
file in the directory: nothing to clean up after ``kill -9``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from apogeenet.errors import UserFacingError

__all__ = ["Busy", "LOCK_FILE", "one_writer", "remove_unless_used", "shared"]

LOCK_FILE = ".apogeenet.lock"


class Busy(UserFacingError):
    """Another process holds the output this command would write."""


def _open(directory: Path, create: bool) -> int:
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        return os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserFacingError(f"{directory}: cannot write there ({exc.strerror or exc})") from None


@contextmanager
def _held(directory: str | os.PathLike, mode: int, busy: str, create: bool = True) -> Iterator[None]:
    directory = Path(directory)
    fd = _open(directory, create)
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{directory}: {busy}") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def one_writer(directory: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold ``directory`` for ``command`` (e.g. "train") for the duration of a ``with``; a second
    holder raises :class:`Busy` naming the command."""
    return _held(directory, fcntl.LOCK_EX,
                 f"another `apogeenet {command}` is writing there; wait for it to finish or give another --out")


def shared(directory: str | os.PathLike) -> Iterator[None]:
    """Hold ``directory`` together with other sharers (shards of one plan); refused while it is
    held exclusively."""
    return _held(directory, fcntl.LOCK_SH, "it is being removed; run the command again", create=False)


def remove_unless_used(directory: str | os.PathLike) -> bool:
    """Remove ``directory`` unless somebody holds it (True when removed); never waits."""
    directory = Path(directory)
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        shutil.rmtree(directory, ignore_errors=True)  # removed while held: no sharer can start
    finally:
        os.close(fd)
    return True
