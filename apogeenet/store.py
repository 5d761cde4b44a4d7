"""The spectra store: every apStar file of a tree, ingested once, read fast in random batches.

Layout of a store directory::

    spectra.h5        /segments/<k>/{flux, error, mask}: contiguous (n_k, 8575) datasets
    index.parquet     one row per ingested file: header facts, file, sha256, segment, offset
    rejects.parquet   one row per file that could not be ingested, with the reason

Only the combined spectrum (apStar row 0) is stored: flux and error float32 in
1e-17 erg/s/cm²/Å, the mask int32. Each ingest appends its new rows as one or more new segments;
datasets are written uncompressed and contiguous so that readers memory-map them and gather a
random batch with one fancy-indexing copy (the training and inference hot path). A file whose
content changes is rewritten in place; a file that no longer exists leaves the index.

Ingest is incremental: a file whose size and modification time match the stat cache
(``.stat-cache.parquet``, ignored by DVC through ``.dvcignore``) is not opened; one whose bytes
hash to the indexed SHA-256 is not parsed again. Index, rejects and spectra depend only on the
files' contents, so the same tree gives byte-identical stores (and a stable ``dvc.lock``).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import pandas as pd

from apogeenet.io.apstar import (APSTAR_CDELT1, APSTAR_CRVAL1, APSTAR_NPIX, ApStarError,
                                 content_hash, read_apstar_bytes, wavelength_grid)
from apogeenet.progress import progress_bar

__all__ = ["IngestReport", "SpectraBatch", "SpectraStore", "StoreError", "ingest"]

SPECTRA_FILE = "spectra.h5"
INDEX_FILE = "index.parquet"
REJECTS_FILE = "rejects.parquet"
STAT_CACHE_FILE = ".stat-cache.parquet"
_ARRAYS = {"flux": np.float32, "error": np.float32, "mask": np.int32}
INDEX_COLUMNS = ["apogee_id", "telescope", "field", "location_id", "nvisits", "snr", "ra", "dec",
                 "n_good_pixels", "file", "sha256", "segment", "offset"]
REJECT_COLUMNS = ["file", "reason"]
STAT_COLUMNS = ["file", "size", "mtime_ns"]


class StoreError(ValueError):
    """A store directory that is missing or inconsistent."""


class SpectraBatch(NamedTuple):
    """Combined spectra of a batch of stars, each array (n, 8575)."""

    flux: np.ndarray
    error: np.ndarray
    mask: np.ndarray


@dataclass
class IngestReport:
    scanned: int = 0
    ingested: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    newly_rejected: int = 0
    removed: int = 0
    seconds: float = 0.0
    rejects: list[tuple[str, str]] = field(default_factory=list)

    @property
    def did_work(self) -> bool:
        return bool(self.ingested or self.updated or self.removed or self.newly_rejected)


# --------------------------------------------------------------------------------------- reading


class SpectraStore:
    """Read access to a store; rows are numbered as in :attr:`index` (0 … len − 1).

    Memory maps are opened lazily in each process, so a store object may be shared with
    DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        index_file = self.path / INDEX_FILE
        if not index_file.exists():
            raise StoreError(f"{self.path}: not a spectra store (no {INDEX_FILE}); "
                             f"create one with `apogeenet ingest SRC_DIR {self.path}`")
        self.index = pd.read_parquet(index_file)
        self._segments = self.index["segment"].to_numpy(np.int64)
        self._offsets = self.index["offset"].to_numpy(np.int64)
        self._maps: dict[int, dict[str, np.memmap]] = {}
        self._pid = -1

    def __len__(self) -> int:
        return len(self.index)

    @property
    def wavelength(self) -> np.ndarray:
        """Vacuum wavelength of each pixel in Å."""
        return wavelength_grid(APSTAR_CRVAL1, APSTAR_CDELT1, APSTAR_NPIX)

    def _open_maps(self) -> None:
        self._maps = {}
        if len(self) == 0:
            self._pid = os.getpid()
            return
        spectra = self.path / SPECTRA_FILE
        with h5py.File(spectra, "r") as h5:
            for seg in np.unique(self._segments):
                group = h5[f"segments/{seg:06d}"]
                maps = {}
                for name in _ARRAYS:
                    ds = group[name]
                    offset = ds.id.get_offset()
                    if offset is None or ds.chunks is not None or ds.compression is not None:
                        raise StoreError(f"{spectra}: segment {seg} {name} is not contiguous")
                    maps[name] = np.memmap(spectra, dtype=ds.dtype, mode="r", offset=offset,
                                           shape=ds.shape)
                self._maps[int(seg)] = maps
        self._pid = os.getpid()

    def read(self, rows: Sequence[int] | np.ndarray) -> SpectraBatch:
        """Flux, error and mask of ``rows`` (any order, repeats allowed), each (len(rows), 8575)."""
        if self._pid != os.getpid():
            self._open_maps()
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {rows.shape}")
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row out of range for a store of {len(self)} spectra")
        segments, offsets = self._segments[rows], self._offsets[rows]
        unique = np.unique(segments)
        if unique.size == 1:
            maps = self._maps[int(unique[0])]
            return SpectraBatch(*(maps[name][offsets] for name in _ARRAYS))
        out = SpectraBatch(*(np.empty((rows.size, APSTAR_NPIX), dtype) for dtype in _ARRAYS.values()))
        for seg in unique:
            pick = segments == seg
            maps = self._maps[int(seg)]
            for name, target in zip(_ARRAYS, out):
                target[pick] = maps[name][offsets[pick]]
        return out

    def iter_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, SpectraBatch]]:
        """Consecutive (rows, batch) pairs covering the whole store."""
        for start in range(0, len(self), batch_size):
            rows = np.arange(start, min(start + batch_size, len(self)))
            yield rows, self.read(rows)


# -------------------------------------------------------------------------------------- ingesting


class _Loaded(NamedTuple):
    file: str
    sha256: str
    size: int
    mtime_ns: int
    facts: dict | None = None
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    reason: str = ""
    same_content: bool = False


def _load(job: tuple[Path, str, str | None]) -> _Loaded:
    """Read, hash and parse one file (runs in a worker process)."""
    path, rel, known_hash = job
    stat = path.stat()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return _Loaded(rel, "", stat.st_size, stat.st_mtime_ns, reason=f"cannot read: {exc}")
    sha = content_hash(raw)
    if sha == known_hash:
        return _Loaded(rel, sha, stat.st_size, stat.st_mtime_ns, same_content=True)
    try:
        star = read_apstar_bytes(raw, path)
    except ApStarError as exc:
        return _Loaded(rel, sha, stat.st_size, stat.st_mtime_ns, reason=exc.reason)
    facts = {"apogee_id": star.apogee_id, "telescope": star.telescope, "field": star.field,
             "location_id": star.location_id, "nvisits": star.nvisits, "snr": star.snr,
             "ra": star.ra, "dec": star.dec, "n_good_pixels": star.n_good_pixels}
    arrays = (star.combined_flux, star.combined_error, star.combined_mask.astype(np.int32))
    return _Loaded(rel, sha, stat.st_size, stat.st_mtime_ns, facts=facts, arrays=arrays)


def _scan(src_dir: Path) -> list[Path]:
    return sorted(p for p in src_dir.rglob("*.fits") if p.is_file() and not p.name.startswith("."))


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def ingest(src_dir: str | os.PathLike, store_dir: str | os.PathLike, *, workers: int = 2,
           segment_rows: int = 2048, progress: bool = False) -> IngestReport:
    """Ingest every ``*.fits`` under ``src_dir`` into the store at ``store_dir``.

    Files are parsed in ``workers`` processes (in this process when 1). Every file ends either
    in the index or in the rejects table with its reason. At most ``segment_rows`` spectra are
    held in memory before they are written as a segment; the index is rewritten after each
    segment, so an interrupted ingest keeps what it wrote.
    """
    started = time.perf_counter()
    src_dir, store_dir = Path(src_dir), Path(store_dir)
    if not src_dir.is_dir():
        raise StoreError(f"{src_dir}: no such directory")
    store_dir.mkdir(parents=True, exist_ok=True)
    index_file, rejects_file = store_dir / INDEX_FILE, store_dir / REJECTS_FILE
    stat_file = store_dir / STAT_CACHE_FILE
    index = pd.read_parquet(index_file) if index_file.exists() else _empty(INDEX_COLUMNS)
    rejects = pd.read_parquet(rejects_file) if rejects_file.exists() else _empty(REJECT_COLUMNS)
    cached = pd.read_parquet(stat_file) if stat_file.exists() else _empty(STAT_COLUMNS)

    files = _scan(src_dir)
    rel_of = {p: p.relative_to(src_dir).as_posix() for p in files}
    present = set(rel_of.values())
    report = IngestReport(scanned=len(files))

    removed = ~index["file"].isin(present)
    report.removed = int(removed.sum())
    index = index[~removed].reset_index(drop=True)
    rejects = rejects[rejects["file"].isin(present)].reset_index(drop=True)

    by_file = {f: i for i, f in enumerate(index["file"])}
    known_files = set(by_file) | set(rejects["file"])
    stats = {f: (int(s), int(m)) for f, s, m in
             zip(cached["file"], cached["size"], cached["mtime_ns"]) if f in known_files}
    jobs = []
    for path in files:
        rel, stat = rel_of[path], path.stat()
        if stats.get(rel) == (stat.st_size, stat.st_mtime_ns):
            report.unchanged += 1
            continue
        known = index.at[by_file[rel], "sha256"] if rel in by_file else None
        jobs.append((path, rel, known))

    if not jobs:
        report.rejected = len(rejects)
        report.rejects = list(zip(rejects["file"], rejects["reason"]))
        if report.removed:
            _write_atomic(index, index_file)
            _write_atomic(rejects, rejects_file)
            _write_atomic(_stat_frame(stats), stat_file)
        report.seconds = time.perf_counter() - started
        return report

    index_rows = index.to_dict("records")
    reject_rows = {r["file"]: r for r in rejects.to_dict("records")}
    next_segment = _next_segment(store_dir)
    buffer: list[_Loaded] = []
    dropped: set[int] = set()  # index rows of files that were good and no longer are

    def flush() -> None:
        nonlocal next_segment
        if buffer:
            with h5py.File(store_dir / SPECTRA_FILE, "a") as h5:
                group = h5.create_group(f"segments/{next_segment:06d}")
                for k, (name, dtype) in enumerate(_ARRAYS.items()):
                    group.create_dataset(name, data=np.stack([b.arrays[k] for b in buffer]).astype(dtype),
                                         track_times=False)
            for offset, loaded in enumerate(buffer):
                index_rows.append(_index_row(loaded, next_segment, offset))
            next_segment += 1
            buffer.clear()
        kept = [r for i, r in enumerate(index_rows) if i not in dropped]
        _write_atomic(pd.DataFrame(kept, columns=INDEX_COLUMNS), index_file)
        _write_atomic(pd.DataFrame(list(reject_rows.values()), columns=REJECT_COLUMNS), rejects_file)
        _write_atomic(_stat_frame(stats), stat_file)

    def results() -> Iterator[_Loaded]:
        if workers == 1 or len(jobs) == 1:
            yield from map(_load, jobs)
            return
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
            yield from pool.map(_load, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))

    with progress_bar(len(jobs), "ingest", enabled=progress) as bar:
        for loaded in results():
            bar.advance()
            row = by_file.get(loaded.file)
            stats[loaded.file] = (loaded.size, loaded.mtime_ns)
            if loaded.same_content:  # touched, not changed
                report.unchanged += 1
                continue
            if loaded.reason:
                reject_rows[loaded.file] = {"file": loaded.file, "reason": loaded.reason}
                report.newly_rejected += 1
                if row is not None:
                    dropped.add(row)
                continue
            reject_rows.pop(loaded.file, None)
            if row is not None:
                old = index_rows[row]
                _overwrite(store_dir, old["segment"], old["offset"], loaded.arrays)
                index_rows[row] = _index_row(loaded, old["segment"], old["offset"])
                report.updated += 1
            else:
                buffer.append(loaded)
                report.ingested += 1
                if len(buffer) >= segment_rows:
                    flush()
        flush()
    report.rejected = len(reject_rows)
    report.rejects = [(r["file"], r["reason"]) for r in reject_rows.values()]
    report.seconds = time.perf_counter() - started
    return report


def _next_segment(store_dir: Path) -> int:
    spectra = store_dir / SPECTRA_FILE
    if not spectra.exists():
        return 0
    with h5py.File(spectra, "r") as h5:
        return max((int(k) + 1 for k in h5.get("segments", {}).keys()), default=0)


def _index_row(loaded: _Loaded, segment: int, offset: int) -> dict:
    return {**loaded.facts, "file": loaded.file, "sha256": loaded.sha256,
            "segment": int(segment), "offset": int(offset)}


def _stat_frame(stats: dict[str, tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame([(f, s, m) for f, (s, m) in sorted(stats.items())], columns=STAT_COLUMNS)


def _overwrite(store_dir: Path, segment: int, offset: int, arrays: tuple) -> None:
    with h5py.File(store_dir / SPECTRA_FILE, "a") as h5:
        group = h5[f"segments/{int(segment):06d}"]
        for name, values in zip(_ARRAYS, arrays):
            group[name][int(offset)] = values
