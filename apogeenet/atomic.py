"""Files that are either the old version or the new one, never half of either.

Every output a kill could tear (checkpoints, models, the catalog, the store's tables) is written
to a temporary name in the same directory and moved over the final name with ``os.replace``,
which is atomic on POSIX file systems: a reader, or a rerun after ``kill -9``, sees the complete
previous file or the complete new one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_paths", "temporary_name"]


def temporary_name(path: Path) -> Path:
    """A hidden sibling of ``path`` unique to this process, with the same suffix (so that writers
    that choose a format by suffix, as astropy does, still work)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Temporary paths for several files that belong together (a catalog as FITS, Parquet and
    CSV): all are written first and only then moved into place, one after the other."""
    finals = [Path(p) for p in paths]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
    temps = [temporary_name(p) for p in finals]
    try:
        yield temps
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
