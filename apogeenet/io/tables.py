"""Catalog tables in the formats astronomers hand around: FITS, CSV and Parquet."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from astropy.table import Table

from apogeenet.atomic import atomic_path
from apogeenet.errors import UserFacingError

__all__ = ["TableError", "read_table", "read_truth", "table_format", "write_table"]

_FORMATS = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".csv": "csv",
            ".parquet": "parquet", ".pq": "parquet"}


class TableError(UserFacingError):
    """A catalog that cannot be read; the message names the file and the reason."""


def table_format(path: str | os.PathLike) -> str:
    """'fits', 'csv' or 'parquet' from the file name; TableError for anything else."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".gz") \
        else path.suffix.lower()
    kind = _FORMATS.get(suffix)
    if kind is None:
        raise TableError(f"{path}: unknown table format {suffix!r} (use FITS, CSV or Parquet)")
    return kind


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a FITS (first table HDU), CSV or Parquet catalog into a DataFrame.

    FITS byte strings come back as ``str`` with trailing blanks stripped; multidimensional FITS
    columns (allStar has several) are dropped, since a DataFrame column holds scalars.
    """
    path = Path(path)
    kind = table_format(path)
    if not path.exists():
        raise TableError(f"{path}: no such file")
    try:
        if kind == "csv":
            return pd.read_csv(path)
        if kind == "parquet":
            return pd.read_parquet(path)
        table = Table.read(path, format="fits")
    except Exception as exc:  # the readers raise many types; the user needs one line
        raise TableError(f"{path}: cannot read as {kind} ({type(exc).__name__}: {exc})") from None
    scalar = [name for name in table.colnames if table[name].ndim == 1]
    frame = table[scalar].to_pandas()
    for name in frame.columns:
        if frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name]):
            frame[name] = frame[name].map(_text)
    return frame


def _text(value):
    """A FITS string cell as str without padding (bytes decoded; empty or masked cells as they are)."""
    if isinstance(value, bytes):
        value = value.decode(errors="backslashreplace")
    return value.strip() if isinstance(value, str) else value


def write_table(frame: pd.DataFrame, path: str | os.PathLike, *, units: dict[str, str] | None = None,
                overwrite: bool = False) -> Path:
    """Write a DataFrame as FITS, CSV or Parquet (by suffix), atomically (:mod:`apogeenet.atomic`).

    ``units`` (column -> unit string) go into the FITS column units and the Parquet schema
    metadata; CSV has nowhere to keep them.
    """
    path = Path(path)
    kind = table_format(path)
    if path.exists() and not overwrite:
        raise TableError(f"{path} already exists (use --overwrite to replace it)")
    units = units or {}
    with atomic_path(path) as tmp:
        if kind == "fits":
            table = Table.from_pandas(frame)
            for name, unit in units.items():
                if name in table.colnames:
                    table[name].unit = unit
            table.write(tmp, format="fits", overwrite=True)
        elif kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrow = pa.Table.from_pandas(frame, preserve_index=False)
            meta = {**(arrow.schema.metadata or {}),
                    **{f"unit:{k}".encode(): v.encode() for k, v in units.items()}}
            pq.write_table(arrow.replace_schema_metadata(meta), tmp)
        else:
            frame.to_csv(tmp, index=False)
    return path


def read_truth(path: Path | None) -> pd.DataFrame | None:
    """True parameters of a synthetic survey (TEFF, LOGG, FE_H, … indexed by APOGEE_ID), or
    None where there is no such file (real data)."""
    return read_table(path).set_index("APOGEE_ID") if path is not None and Path(path).exists() else None
