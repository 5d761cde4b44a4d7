"""Isochrone tables: the shipped PARSEC grid, and readers for users' own PARSEC (CMD) and MIST files.

Every reader returns an :class:`Isochrones` table with one row per (age, mass) point and the
columns ``age`` [Myr], ``mass`` [M☉], ``Teff`` [K], ``logg`` [cgs], ``logL`` [L☉], ``radius``
[R☉] and absolute magnitudes ``J H K G BP RP g r W1 W2 W3`` (a band the file lacks is NaN;
WISE is derived from Ks with the MIST bolometric corrections when absent).

* :func:`shipped_parsec` — PARSEC v1.2S, solar, 1–100 Myr and 500 Myr (package data).
* :func:`read_parsec_cmd` — the text files of the CMD web interface
  (http://stev.oapd.inaf.it/cgi-bin/cmd): ``#`` comments, a header line starting ``# Zini`` or
  ``Zini``, columns ``logAge Mini logL logTe logg`` and bands such as ``Gmag G_BPmag G_RPmag
  Jmag Hmag Ksmag W1mag W2mag W3mag`` (or ``Gmag_EDR3``-style names).
* :func:`read_mist_iso` — MIST ``*.iso.cmd`` files: blocks per age, each with a ``# EEP
  log10_isochrone_age_yr initial_mass …`` header, bands ``2MASS_J … Gaia_G_DR2Rev … WISE_W1``.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from apogeenet.errors import UserFacingError
from apogeenet.photometry import wise_from_ks

__all__ = ["BAND_NAMES", "Isochrones", "IsochroneError", "read_mist_iso", "read_parsec_cmd",
           "shipped_parsec"]

BAND_NAMES = ("J", "H", "K", "G", "BP", "RP", "g", "r", "W1", "W2", "W3")
PHYSICAL = ("Teff", "logg", "radius", "logL")
_SIGMA_SB_TERMS = 5772.0  # Teff of the Sun, for R = sqrt(L) (5772/Teff)^2


class IsochroneError(UserFacingError):
    """An isochrone file that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class Isochrones:
    """A table of isochrone points; see the module docstring for the columns."""

    table: pd.DataFrame
    source: str

    @property
    def ages(self) -> np.ndarray:
        return np.unique(self.table["age"].to_numpy())

    def mass_range(self) -> tuple[float, float]:
        return float(self.table["mass"].min()), float(self.table["mass"].max())

    def interpolate(self, age_myr: np.ndarray, mass: np.ndarray, *,
                    main_sequence_only: bool = False) -> pd.DataFrame:
        """Stars at (age, mass): linear in mass along the two isochrones that bracket each age,
        then linear in age. Masses beyond an isochrone's range take its end values (clip)."""
        grid = self.table[self.table["logg"] > 4.0] if main_sequence_only else self.table
        age_myr, mass = np.atleast_1d(np.asarray(age_myr, float)), np.atleast_1d(np.asarray(mass, float))
        ages = np.unique(grid["age"])
        lo = np.clip(np.searchsorted(ages, age_myr, side="right") - 1, 0, ages.size - 1)
        hi = np.clip(lo + 1, 0, ages.size - 1)
        span = ages[hi] - ages[lo]
        weight = np.clip(np.where(span > 0, (age_myr - ages[lo]) / np.where(span > 0, span, 1), 0), 0, 1)
        columns = [*PHYSICAL, *BAND_NAMES]
        result = np.zeros((age_myr.size, len(columns)))
        tracks = {age: track.sort_values("mass", kind="stable") for age, track in grid.groupby("age")}
        for w, idx in ((1 - weight, lo), (weight, hi)):
            for i in np.unique(idx):
                pick = idx == i
                track = tracks[ages[i]]
                for k, column in enumerate(columns):
                    result[pick, k] += w[pick] * np.interp(mass[pick], track["mass"], track[column])
        return pd.DataFrame(result, columns=columns)


def _finish(frame: pd.DataFrame, source: str) -> Isochrones:
    for band in BAND_NAMES:
        if band not in frame:
            frame[band] = np.nan
    if frame[["W1", "W2", "W3"]].isna().all().all() and frame["K"].notna().any():
        for band, values in wise_from_ks(frame["K"].to_numpy(), frame["Teff"].to_numpy(),
                                         frame["logg"].to_numpy()).items():
            frame[band] = values
    if "radius" not in frame or frame["radius"].isna().all():
        frame["radius"] = np.sqrt(10.0 ** frame["logL"]) * (_SIGMA_SB_TERMS / frame["Teff"]) ** 2
    frame = frame[["age", "mass", *PHYSICAL, *BAND_NAMES]].dropna(subset=["age", "mass", "Teff", "logg"])
    if frame.empty:
        raise IsochroneError(f"{source}: no usable isochrone points")
    return Isochrones(frame.sort_values(["age", "mass"]).reset_index(drop=True), source)


@cache
def shipped_parsec() -> Isochrones:
    """The PARSEC grid shipped with the package (see ``data/isochrones/PROVENANCE.md``)."""
    path = files("apogeenet") / "data" / "isochrones" / "parsec_solar_1-100Myr_500Myr.csv.gz"
    grid = pd.read_csv(str(path)).rename(columns={
        "2mass_jmag": "J", "2mass_hmag": "H", "2mass_kmag": "K", "gaia_gmag": "G",
        "gaia_bpmag": "BP", "gaia_rpmag": "RP", "ps1_gmag": "g", "ps1_rmag": "r"})
    return _finish(grid.drop(columns=["sdss_gmag", "sdss_rmag"]), "PARSEC v1.2S (shipped)")


# CMD column names per band, in order of preference (Gaia DR2 has G_BPbr/G_BPft; EDR3 G_BP)
_PARSEC_BANDS = {"J": ("Jmag",), "H": ("Hmag",), "K": ("Ksmag",), "G": ("Gmag",),
                 "BP": ("G_BPmag", "G_BPbrmag"), "RP": ("G_RPmag",), "g": ("gP1mag",),
                 "r": ("rP1mag",), "W1": ("W1mag",), "W2": ("W2mag",), "W3": ("W3mag",)}


def _read_columns(path: Path, is_header, kind: str, example: str, needed: set[str]) -> pd.DataFrame:
    """Whitespace-separated table whose column names sit on a (commented) header line."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise IsochroneError(f"{path}: cannot read ({exc.strerror or exc})") from None
    header_line = next((ln for ln in lines if is_header(ln)), None)
    if header_line is None:
        raise IsochroneError(f"{path}: no {kind} header line ('{example}')")
    header = header_line.lstrip("#").split()
    body = "\n".join(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")
                     and ln != header_line)
    data = pd.read_csv(io.StringIO(body), sep=r"\s+", names=header, engine="python")
    if not needed <= set(data.columns):
        raise IsochroneError(f"{path}: missing column(s) {sorted(needed - set(data.columns))}")
    return data


def read_parsec_cmd(path: str | os.PathLike) -> Isochrones:
    """Read a PARSEC isochrone file from the CMD web interface (see the module docstring)."""
    path = Path(path)
    data = _read_columns(path, lambda ln: re.match(r"^#?\s*Zini\s", ln) is not None, "PARSEC",
                         "# Zini MH logAge Mini ...", {"logAge", "Mini", "logL", "logTe", "logg"})
    frame = pd.DataFrame({"age": 10 ** data["logAge"] / 1e6, "mass": data["Mini"],
                          "Teff": 10 ** data["logTe"], "logg": data["logg"], "logL": data["logL"]})
    for band, names in _PARSEC_BANDS.items():
        column = next((c for c in names if c in data), None)
        if column:
            frame[band] = data[column]
    if "label" in data:  # drop post-AGB and white-dwarf phases (labels >= 8)
        frame = frame[data["label"].to_numpy() < 8]
    return _finish(frame, str(path))


_MIST_BANDS = {"2MASS_J": "J", "2MASS_H": "H", "2MASS_Ks": "K", "Gaia_G_DR2Rev": "G",
               "Gaia_BP_DR2Rev": "BP", "Gaia_RP_DR2Rev": "RP", "Gaia_G_EDR3": "G",
               "Gaia_BP_EDR3": "BP", "Gaia_RP_EDR3": "RP", "PS_g": "g", "PS_r": "r",
               "WISE_W1": "W1", "WISE_W2": "W2", "WISE_W3": "W3"}


def read_mist_iso(path: str | os.PathLike) -> Isochrones:
    """Read a MIST ``*.iso.cmd`` (or ``*.iso``) file (see the module docstring)."""
    path = Path(path)
    data = _read_columns(path, lambda ln: ln.lstrip("# ").startswith("EEP "), "MIST",
                         "# EEP log10_isochrone_age_yr ...",
                         {"log10_isochrone_age_yr", "initial_mass", "log_Teff", "log_g", "log_L"})
    frame = pd.DataFrame({"age": 10 ** data["log10_isochrone_age_yr"] / 1e6, "mass": data["initial_mass"],
                          "Teff": 10 ** data["log_Teff"], "logg": data["log_g"], "logL": data["log_L"]})
    if "log_R" in data:
        frame["radius"] = 10 ** data["log_R"]
    for column, band in _MIST_BANDS.items():
        if column in data and band not in frame:
            frame[band] = data[column]
    if "phase" in data:  # keep pre-main sequence to the AGB; drop post-AGB and WD (phase >= 6)
        frame = frame[data["phase"].to_numpy() < 6]
    return _finish(frame, str(path))
