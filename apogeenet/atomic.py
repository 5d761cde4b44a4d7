"""Files that are either the old version or the new one, never half of either.

Every output a kill could tear (checkpoints, models, the catalog, the store's tables) is written
to a temporary name in the same directory and moved over the final name with ``os.replace``,
which is atomic on POSIX file systems: a reader, or a rerun after ``kill -9``, sees the complete
previous file or the complete new one.

Files that belong together (a catalog as FITS, Parquet and CSV, all rows and the clean view) are
moved one after the other, so a kill between two moves would leave some old and some new. A
journal (``.journal-<pid>.json``, written atomically once every temporary file is complete)
lists the moves; the next writer of that directory finds the journal of a dead process and
finishes its moves before anything else (roll forward), and removes temporary files that dead
processes left.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_paths", "process_alive", "recover", "temporary_name"]

_TEMPORARY = re.compile(r"^\..*\.tmp-(\d+)(\.[^.]*)?$")
_JOURNAL = re.compile(r"^\.journal-(\d+)\.json$")


def temporary_name(path: Path) -> Path:
    """A hidden sibling of ``path`` unique to this process, with the same suffix (so that writers
    that choose a format by suffix, as astropy does, still work)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


def process_alive(pid: int) -> bool:
    """Whether a process of this host with this id exists (ours counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def recover(directory: str | os.PathLike) -> None:
    """Finish the moves of journals left by dead processes in ``directory`` and remove the
    temporary files dead processes left there."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for journal in sorted(directory.iterdir()):
        match = _JOURNAL.match(journal.name)
        if not match or process_alive(int(match[1])):
            continue
        try:
            moves = json.loads(journal.read_text())
        except (OSError, ValueError):
            moves = []  # never complete: the moves had not begun
        for tmp, final in moves:
            if Path(tmp).exists():
                os.replace(tmp, final)
        journal.unlink(missing_ok=True)
    for path in directory.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and not process_alive(int(match[1])) and path.is_file():
            path.unlink(missing_ok=True)


@contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Temporary paths for several files that belong together (a catalog as FITS, Parquet and
    CSV): all are written first, then a journal of the moves, then the moves; a kill during the
    moves is finished by the next writer (:func:`recover`)."""
    finals = [Path(p) for p in paths]
    for parent in {final.parent for final in finals}:
        parent.mkdir(parents=True, exist_ok=True)
        if len(finals) > 1:
            recover(parent)
    temps = [temporary_name(p) for p in finals]
    journal = finals[0].parent / f".journal-{os.getpid()}.json"
    try:
        yield temps
        if len(finals) > 1:
            with open(temporary_name(journal), "w") as fh:
                json.dump([[str(t.resolve()), str(f.resolve())] for t, f in zip(temps, finals)], fh)
            os.replace(temporary_name(journal), journal)
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
        journal.unlink(missing_ok=True)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        temporary_name(journal).unlink(missing_ok=True)
