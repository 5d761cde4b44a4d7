"""The spectra store: every apStar file of a tree, ingested once, read fast in random batches.

Layout of a store directory::

    segments/<k>.h5   /flux, /error, /mask: contiguous (n_k, 8575) datasets, one file per segment
    index.parquet     one row per ingested file: header facts, file, sha256, segment, offset
    rejects.parquet   one row per file that could not be ingested, with the reason

Only the combined spectrum (apStar row 0) is stored: flux and error float32 in
1e-17 erg/s/cm²/Å, the mask int32. Each ingest appends its new rows as one or more new segment
files; datasets are written uncompressed and contiguous so that readers memory-map them and
gather a random batch with one fancy-indexing copy (the training and inference hot path).

Writing a store is :mod:`apogeenet.ingest`.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import pandas as pd

from apogeenet.errors import UserFacingError
from apogeenet.io.apstar import APSTAR_CDELT1, APSTAR_CRVAL1, APSTAR_NPIX, wavelength_grid

__all__ = ["INDEX_COLUMNS", "INDEX_FILE", "REJECTS_FILE", "SEGMENT_ARRAYS", "SpectraBatch", "SpectraStore", "StoreChanged", "StoreError",
           "primary_rows", "read_index", "segment_maps", "segment_path"]

SEGMENTS_DIR = "segments"
INDEX_FILE = "index.parquet"
REJECTS_FILE = "rejects.parquet"
LEGACY_SPECTRA_FILE = "spectra.h5"  # one HDF5 file for every segment (stores before 2026-11)
SEGMENT_ARRAYS = {"flux": np.float32, "error": np.float32, "mask": np.int32}
INDEX_COLUMNS = ["apogee_id", "telescope", "field", "location_id", "nvisits", "snr", "ra", "dec",
                 "n_good_pixels", "file", "sha256", "segment", "offset"]


class StoreError(UserFacingError):
    """A store directory that is missing, inconsistent or busy."""


class StoreChanged(StoreError):
    """The store's index is not the one a plan was made on (an ingest ran in between)."""


def read_index(index_file: Path) -> tuple[pd.DataFrame, str]:
    """The index table and the SHA-256 of the bytes it was parsed from (one read)."""
    raw = index_file.read_bytes()
    try:
        index = pd.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises its own errors for a garbage file
        raise StoreError(f"{index_file}: unreadable store index ({type(exc).__name__}); run "
                         f"`apogeenet ingest SRC_DIR {index_file.parent}` again") from None
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise StoreError(f"{index_file}: not a store index (no column {', '.join(missing)}); run "
                         f"`apogeenet ingest SRC_DIR {index_file.parent}` again")
    return index, hashlib.sha256(raw).hexdigest()


class SpectraBatch(NamedTuple):
    """Combined spectra of a batch of stars, each array (n, 8575)."""

    flux: np.ndarray
    error: np.ndarray
    mask: np.ndarray


def segment_path(store_dir: Path, segment: int) -> Path:
    return store_dir / SEGMENTS_DIR / f"{int(segment):06d}.h5"


class SpectraStore:
    """Read access to a store; rows are numbered as in :attr:`index` (0 … len − 1).

    Memory maps are opened lazily in each process, so a store object may be shared with
    DataLoader workers. ``index_sha256`` pins the index: a store whose index has other bytes
    raises :class:`StoreChanged` (rows are numbered by the index, so a plan made on another index
    would attach spectra to the wrong stars); :meth:`check_unchanged` asks again after reading.
    """

    def __init__(self, path: str | os.PathLike, *, index_sha256: str | None = None) -> None:
        self.path = Path(path)
        index_file = self.path / INDEX_FILE
        if not index_file.exists():
            raise StoreError(f"{self.path}: not a spectra store (no {INDEX_FILE}); "
                             f"create one with `apogeenet ingest SRC_DIR {self.path}`")
        if (self.path / LEGACY_SPECTRA_FILE).exists():
            raise StoreError(f"{self.path}: a store in the old single-file layout; run `apogeenet ingest "
                             f"SRC_DIR {self.path}` once to convert it")
        self.index, self.index_sha256 = read_index(index_file)
        if index_sha256 is not None and index_sha256 != self.index_sha256:
            raise self._changed()
        self._segments = self.index["segment"].to_numpy(np.int64)
        self._offsets = self.index["offset"].to_numpy(np.int64)
        self._maps: dict[int, dict[str, np.memmap]] = {}
        self._pid = -1

    def __len__(self) -> int:
        return len(self.index)

    def _changed(self) -> StoreChanged:
        return StoreChanged(f"{self.path}: the store changed since this work was planned (an ingest ran); "
                            "run the command again to plan on the new store")

    def check_unchanged(self) -> None:
        """Raise :class:`StoreChanged` unless the index on disk is still the one read."""
        try:
            current = hashlib.sha256((self.path / INDEX_FILE).read_bytes()).hexdigest()
        except OSError:
            current = None
        if current != self.index_sha256:
            raise self._changed()

    @property
    def wavelength(self) -> np.ndarray:
        """Vacuum wavelength of each pixel in Å."""
        return wavelength_grid(APSTAR_CRVAL1, APSTAR_CDELT1, APSTAR_NPIX)

    def _open_maps(self) -> None:
        self._maps = {}
        for seg in np.unique(self._segments):
            path = segment_path(self.path, seg)
            needed = int(self._offsets[self._segments == seg].max()) + 1
            maps, problem = segment_maps(path, needed)
            if problem:
                raise StoreError(f"{path}: {problem}; run `apogeenet ingest` again to repair the store")
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
            return SpectraBatch(*(maps[name][offsets] for name in SEGMENT_ARRAYS))
        out = SpectraBatch(*(np.empty((rows.size, APSTAR_NPIX), dtype) for dtype in SEGMENT_ARRAYS.values()))
        for seg in unique:
            pick = segments == seg
            maps = self._maps[int(seg)]
            for name, target in zip(SEGMENT_ARRAYS, out):
                target[pick] = maps[name][offsets[pick]]
        return out

    def iter_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, SpectraBatch]]:
        """Consecutive (rows, batch) pairs covering the whole store."""
        for start in range(0, len(self), batch_size):
            rows = np.arange(start, min(start + batch_size, len(self)))
            yield rows, self.read(rows)


def segment_maps(path: Path, needed: int) -> tuple[dict[str, np.memmap], str]:
    """Memory maps of a segment's arrays, or a reason it cannot serve ``needed`` rows (missing,
    truncated, not HDF5, chunked or compressed, another shape or type)."""
    maps = {}
    try:
        size = path.stat().st_size
        with h5py.File(path, "r") as h5:
            for name, dtype in SEGMENT_ARRAYS.items():
                ds = h5[name]
                offset = ds.id.get_offset()
                if offset is None or ds.chunks is not None or ds.compression is not None:
                    return {}, f"{name} is not contiguous"
                if ds.dtype != dtype or ds.ndim != 2 or ds.shape[1] != APSTAR_NPIX or ds.shape[0] < needed:
                    return {}, f"{name} has shape {ds.shape} and type {ds.dtype}, needs ({needed}+, {APSTAR_NPIX}) {np.dtype(dtype)}"
                if offset + ds.dtype.itemsize * ds.shape[0] * ds.shape[1] > size:
                    return {}, f"{name} runs past the end of the file (truncated)"
                maps[name] = np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        return {}, f"unreadable segment ({type(exc).__name__})"
    return maps, ""


def primary_rows(index: pd.DataFrame) -> np.ndarray:
    """True for the row of each ``apogee_id`` with the highest ``snr`` (the first of equals): the
    spectrum that trains and enters the clean catalog when a star has several files."""
    order = pd.DataFrame({"id": index["apogee_id"].to_numpy(), "snr": -index["snr"].to_numpy(float)})
    order = order.sort_values(["id", "snr"], kind="stable")
    primary = np.zeros(len(order), bool)
    primary[order.drop_duplicates("id").index.to_numpy()] = True
    return primary
