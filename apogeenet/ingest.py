"""Ingest: a tree of apStar files into a spectra store (:mod:`apogeenet.store` reads it).

What a kill cannot break: a segment file is written under a temporary name and renamed when
complete, and the index (the only thing that makes rows visible) is rewritten atomically after
each segment, so a store is always its last consistent index; segment files that no index row
refers to (a kill between the two steps, a file whose content changed) and torn temporary files
are removed by the next ingest. A file whose content changes is written to a new segment and its
index row repointed; a file that no longer exists leaves the index. One ingest at a time holds
the store's lock; a second one stops with one line.

Ingest is incremental: a file whose size and modification time match the stat cache
(``.stat-cache.parquet``, ignored by DVC through ``.dvcignore``) is not opened; one whose bytes
hash to the indexed SHA-256 is not parsed again. Index, rejects and spectra depend only on the
files' contents, so the same tree gives byte-identical stores (and a stable ``dvc.lock``).
Every file under the tree ends in the index or in the rejects with a reason: unreadable
directories, dangling links, link loops and names that are not UTF-8 included.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR
from typing import Any, NamedTuple

import h5py
import numpy as np
import pandas as pd

from apogeenet.atomic import atomic_path
from apogeenet.io.apstar import DEFAULT_MAX_BYTES, ApStarError, content_hash, read_apstar_bytes, read_bounded
from apogeenet.progress import progress_bar
from apogeenet.store import (INDEX_COLUMNS, INDEX_FILE, LEGACY_SPECTRA_FILE, REJECTS_FILE, SEGMENT_ARRAYS, SEGMENTS_DIR,
                             SpectraStore, StoreError, read_index, segment_maps, segment_path)

__all__ = ["IngestReport", "ingest", "ingest_files", "ingest_shard", "scan_tree", "write_segment"]

STAT_CACHE_FILE = ".stat-cache.parquet"
LOCK_FILE = ".ingest.lock"
REJECT_COLUMNS = ["file", "reason"]
STAT_COLUMNS = ["file", "size", "mtime_ns"]
SHARD_FILES = 256
"""Files per ingest shard (and so at most spectra per segment): small enough that 2 processes
share a 2 000-file survey, large enough that DR17 makes 2 600 segments."""
Submit = Callable[..., Any]
"""``submit(function, *args)`` → an object whose ``result()`` is ``function(*args)`` (a Dask or
Prefect future)."""


@dataclass
class IngestReport:
    scanned: int = 0
    ingested: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    newly_rejected: int = 0
    removed: int = 0
    repaired: int = 0
    """Index rows whose segment was missing or damaged: their files were read and written again."""
    seconds: float = 0.0
    rejects: list[tuple[str, str]] = field(default_factory=list)

    @property
    def did_work(self) -> bool:
        return bool(self.ingested or self.updated or self.removed or self.newly_rejected)


def display_name(rel: str) -> str:
    """A file name as it can be stored and printed: bytes that are not UTF-8 shown as \\xNN."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _is_utf8(rel: str) -> bool:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scan_tree(src_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every ``*.fits`` file under ``src_dir`` (links followed, each directory once), and a
    (name, reason) for everything that cannot be read: an unreadable directory, a dangling link,
    a link loop, a name that is not UTF-8. Both sorted, so the result depends only on the tree."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()

    def rel(path: Path) -> str:
        return display_name(path.relative_to(src_dir).as_posix())

    stack = [src_dir]
    while stack:
        directory = stack.pop()
        info = directory.stat()
        if (info.st_dev, info.st_ino) in seen:
            problems.append((rel(directory), "symbolic link loop: a directory already scanned"))
            continue
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            problems.append((rel(directory) + "/", f"cannot read directory: {exc.strerror or exc}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                target = path.stat()  # follows links
            except OSError as exc:
                if entry.name.endswith(".fits") or entry.is_symlink():
                    reason = {errno.ENOENT: "dangling symbolic link", errno.ELOOP: "symbolic link loop"}.get(
                        exc.errno, f"cannot read: {exc.strerror or exc}")
                    problems.append((rel(path), reason))
                continue
            if S_ISDIR(target.st_mode):
                stack.append(path)
            elif entry.name.endswith(".fits"):
                if _is_utf8(path.relative_to(src_dir).as_posix()):
                    files.append(path)
                else:
                    problems.append((rel(path), "file name is not valid UTF-8: rename the file"))
    return sorted(files), sorted(problems)


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


def _load(job: tuple[Path, str, str | None, int]) -> _Loaded:
    """Read (a regular file within the size cap), hash and parse one file (runs in a worker process)."""
    path, rel, known_hash, max_bytes = job
    try:
        raw, stat = read_bounded(path, max_bytes)
    except ApStarError as exc:
        return _Loaded(rel, "", 0, 0, reason=exc.reason)
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


def ingest_shard(store_dir: str | os.PathLike, segment: int,
                 jobs: Sequence[tuple[Path, str, str | None, int]]) -> list[_Loaded]:
    """Read a shard of files and write its accepted spectra, in order, as segment ``segment``
    (atomically; nothing when none is accepted); returns each file's table facts without arrays.
    Runs anywhere the store's directory is visible: a worker process, a Dask worker."""
    loaded = [_load(job) for job in jobs]
    accepted = [item.arrays for item in loaded if item.arrays is not None]
    if accepted:
        write_segment(Path(store_dir), segment, [np.stack([a[k] for a in accepted]) for k in range(len(SEGMENT_ARRAYS))])
    return [item._replace(arrays=None) for item in loaded]


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_segment(store_dir: Path, segment: int, arrays: Sequence[np.ndarray]) -> None:
    """One segment file from its flux, error and mask arrays (n, 8575), complete or not at all.
    A store is only its index: rows become visible when an index row points at them."""
    (store_dir / SEGMENTS_DIR).mkdir(parents=True, exist_ok=True)
    with atomic_path(segment_path(store_dir, segment)) as tmp:
        with h5py.File(tmp, "w", track_order=False) as h5:
            for (name, dtype), values in zip(SEGMENT_ARRAYS.items(), arrays):
                h5.create_dataset(name, data=np.asarray(values).astype(dtype, copy=False), track_times=False)


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _tidy(store_dir: Path, index: pd.DataFrame) -> None:
    """Remove segment files no index row refers to and temporary files left by a kill."""
    folder = store_dir / SEGMENTS_DIR
    if not folder.is_dir():
        return
    used = {segment_path(store_dir, s).name for s in index["segment"].unique()}
    for path in folder.iterdir():
        if path.name not in used:
            path.unlink(missing_ok=True)


def _open_state(store_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Index (without rows whose segment is damaged), rejects and stat cache of a store (empty
    when new or unreadable; an old single-file store is started afresh: its files are ingested
    again), and how many rows were dropped as damaged."""
    index_file, rejects_file = store_dir / INDEX_FILE, store_dir / REJECTS_FILE
    stat_file = store_dir / STAT_CACHE_FILE
    legacy = store_dir / LEGACY_SPECTRA_FILE
    if legacy.exists():
        for path in (index_file, rejects_file, stat_file, legacy):
            path.unlink(missing_ok=True)
    index = read_index(index_file)[0] if index_file.exists() else _empty(INDEX_COLUMNS)
    try:
        rejects = pd.read_parquet(rejects_file) if rejects_file.exists() else _empty(REJECT_COLUMNS)
        if list(rejects.columns) != REJECT_COLUMNS:
            raise ValueError("columns")
    except Exception:  # a garbage rejects table: its files are simply read again
        rejects = _empty(REJECT_COLUMNS)
    try:
        cached = pd.read_parquet(stat_file) if stat_file.exists() else _empty(STAT_COLUMNS)
        if list(cached.columns) != STAT_COLUMNS:
            raise ValueError("columns")
    except Exception:  # only a cache: without it every file is hashed again
        cached = _empty(STAT_COLUMNS)
    verified = _without_damaged_rows(store_dir, index)
    return verified, rejects, cached, len(index) - len(verified)


def _without_damaged_rows(store_dir: Path, index: pd.DataFrame) -> pd.DataFrame:
    """The index without rows whose segment is missing or damaged (their files are then read and
    written again, like new files)."""
    if index.empty:
        return index
    keep = np.ones(len(index), bool)
    segments, offsets = index["segment"].to_numpy(np.int64), index["offset"].to_numpy(np.int64)
    for seg in np.unique(segments):
        rows = segments == seg
        if (offsets[rows] < 0).any() or segment_maps(segment_path(store_dir, seg), int(offsets[rows].max()) + 1)[1]:
            keep &= ~rows
    return index[keep].reset_index(drop=True)


def ingest(src_dir: str | os.PathLike, store_dir: str | os.PathLike, *, workers: int = 2,
           segment_rows: int = SHARD_FILES, progress: bool = False, submit: Submit | None = None,
           max_bytes: int = DEFAULT_MAX_BYTES) -> IngestReport:
    """Ingest every ``*.fits`` under ``src_dir`` into the store at ``store_dir``.

    The files to read are cut into shards of ``segment_rows`` consecutive files (in name order, so
    the layout depends only on the tree); each shard is read and its accepted spectra written as
    one segment by :func:`ingest_shard` — in ``workers`` processes (in this process when 1), or
    wherever ``submit(ingest_shard, store_dir, segment, jobs)`` runs it (a Dask worker: the
    returned future's ``result()`` is the shard's table rows, never its arrays). Every file ends
    either in the index or in the rejects table with its reason. The index is rewritten after
    each shard, in shard order, so an interrupted ingest keeps what it wrote, and a shard whose
    worker died leaves at most a segment no index row points at (removed by the next ingest). A
    second ingest into the same store while one runs raises :class:`StoreError`.
    """
    from filelock import FileLock, Timeout

    src_dir, store_dir = Path(src_dir), Path(store_dir)
    if not src_dir.is_dir():
        raise StoreError(f"{src_dir}: no such directory")
    store_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(store_dir / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise StoreError(f"{store_dir}: another ingest is writing to this store; wait for it to finish "
                         "(or remove the store if no ingest runs)") from None
    try:
        return _ingest_locked(src_dir, store_dir, workers=workers, segment_rows=segment_rows, progress=progress,
                              submit=submit, max_bytes=max_bytes)
    finally:
        lock.release()


def _ingest_locked(src_dir: Path, store_dir: Path, *, workers: int, segment_rows: int,
                   progress: bool, submit: Submit | None, max_bytes: int) -> IngestReport:
    started = time.perf_counter()
    index_file, rejects_file = store_dir / INDEX_FILE, store_dir / REJECTS_FILE
    stat_file = store_dir / STAT_CACHE_FILE
    index, rejects, cached, repaired = _open_state(store_dir)
    _tidy(store_dir, index)

    files, problems = scan_tree(src_dir)
    rel_of = {p: p.relative_to(src_dir).as_posix() for p in files}
    present = set(rel_of.values()) | {name for name, _ in problems}
    report = IngestReport(scanned=len(files) + len(problems), repaired=repaired)

    removed = ~index["file"].isin(present)
    report.removed = int(removed.sum())
    index = index[~removed].reset_index(drop=True)
    old_rejects = set(rejects["file"])
    rejects = rejects[rejects["file"].isin(present)].reset_index(drop=True)

    by_file = {f: i for i, f in enumerate(index["file"])}
    known_files = set(by_file) | set(rejects["file"])
    stats = {f: (int(s), int(m)) for f, s, m in
             zip(cached["file"], cached["size"], cached["mtime_ns"]) if f in known_files}
    index_rows = index.to_dict("records")
    reject_rows = {r["file"]: r for r in rejects.to_dict("records")}
    dropped: set[int] = set()  # index rows of files that were good and no longer are
    for name, reason in problems:
        if name in by_file:
            dropped.add(by_file[name])
        report.newly_rejected += name not in old_rejects or reject_rows[name]["reason"] != reason
        reject_rows[name] = {"file": name, "reason": reason}
    jobs = []
    for path in files:
        rel = rel_of[path]
        try:
            stat = path.stat()
        except OSError as exc:  # removed since the scan
            reject_rows[rel] = {"file": rel, "reason": f"cannot read: {exc.strerror or exc}"}
            continue
        if stats.get(rel) == (stat.st_size, stat.st_mtime_ns):
            report.unchanged += 1
            continue
        known = index.at[by_file[rel], "sha256"] if rel in by_file else None
        jobs.append((path, rel, known, max_bytes))

    next_segment = max((int(s) + 1 for s in index["segment"]), default=0)  # _tidy left no other files
    shards = [jobs[i:i + segment_rows] for i in range(0, len(jobs), segment_rows)]

    def flush() -> None:
        kept = pd.DataFrame([r for i, r in enumerate(index_rows) if i not in dropped], columns=INDEX_COLUMNS)
        _write_atomic(kept, index_file)
        _write_atomic(pd.DataFrame(sorted(reject_rows.values(), key=lambda r: r["file"]),
                                   columns=REJECT_COLUMNS), rejects_file)
        _write_atomic(_stat_frame(stats), stat_file)

    def results() -> Iterator[list[_Loaded]]:
        arguments = [(store_dir, next_segment + k, shard) for k, shard in enumerate(shards)]
        if submit is not None:
            futures = [submit(ingest_shard, *args) for args in arguments]
            yield from (future.result() for future in futures)  # in shard order: a stable index
        elif workers == 1 or len(shards) <= 1:
            yield from (ingest_shard(*args) for args in arguments)
        else:
            context = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(max_workers=min(workers, len(shards)), mp_context=context) as pool:
                yield from pool.map(ingest_shard, *zip(*arguments))

    with progress_bar(len(jobs), "ingest", enabled=progress) as bar:
        for segment, shard in zip(range(next_segment, next_segment + len(shards)), results()):
            offset = 0
            for loaded in shard:
                bar.advance()
                row = by_file.get(loaded.file)
                if loaded.size:
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
                if row is None:
                    index_rows.append(_index_row(loaded, segment, offset))
                    report.ingested += 1
                else:
                    index_rows[row] = _index_row(loaded, segment, offset)
                    report.updated += 1
                offset += 1
            flush()
    if jobs or report.removed or report.newly_rejected or dropped:
        flush()
    _tidy(store_dir, pd.read_parquet(index_file) if index_file.exists() else _empty(INDEX_COLUMNS))
    report.rejected = len(reject_rows)
    report.rejects = sorted((r["file"], r["reason"]) for r in reject_rows.values())
    report.seconds = time.perf_counter() - started
    return report


def ingest_files(files: Sequence[str | os.PathLike], work_dir: Path, *, workers: int = 2,
                 progress: bool = False, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[SpectraStore | None, list[tuple[str, str]]]:
    """A store (``work_dir/store``) of an explicit list of apStar files, each linked under
    ``work_dir/files`` by its position in the list; returns the store (None when no file could be
    read) and (file as given, reason) for each file that could not be read, missing ones included."""
    links = Path(work_dir) / "files"
    links.mkdir(parents=True, exist_ok=True)
    given, problems = {}, []
    for k, name in enumerate(files):
        path = Path(name)
        if not path.exists():
            problems.append((str(name), "no such file"))
            continue
        link = links / f"{k:07d}-{path.stem}.fits"
        link.symlink_to(path.resolve())
        given[link.name] = str(name)
    report = ingest(links, Path(work_dir) / "store", workers=workers, progress=progress, max_bytes=max_bytes)
    problems += [(given.get(name, name), reason) for name, reason in report.rejects]
    return (SpectraStore(Path(work_dir) / "store") if report.ingested else None), problems


def _index_row(loaded: _Loaded, segment: int, offset: int) -> dict:
    return {**loaded.facts, "file": loaded.file, "sha256": loaded.sha256,
            "segment": int(segment), "offset": int(offset)}


def _stat_frame(stats: dict[str, tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame([(f, s, m) for f, (s, m) in sorted(stats.items())], columns=STAT_COLUMNS)
