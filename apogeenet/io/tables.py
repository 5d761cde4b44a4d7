"""Catalog tables in the formats astronomers hand around: FITS, CSV and Parquet."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from astropy.table import Table

__all__ = ["TableError", "read_table"]

_FORMATS = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".csv": "csv",
            ".parquet": "parquet", ".pq": "parquet"}


class TableError(ValueError):
    """A catalog that cannot be read; the message names the file and the reason."""


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a FITS (first table HDU), CSV or Parquet catalog into a DataFrame.

    FITS byte strings come back as ``str`` with trailing blanks stripped; multidimensional FITS
    columns (allStar has several) are dropped, since a DataFrame column holds scalars.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".gz") \
        else path.suffix.lower()
    kind = _FORMATS.get(suffix)
    if kind is None:
        raise TableError(f"{path}: unknown table format {suffix!r} (use FITS, CSV or Parquet)")
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
            frame[name] = frame[name].map(lambda v: v.decode() if isinstance(v, bytes) else v)
            frame[name] = frame[name].str.strip()
    return frame
