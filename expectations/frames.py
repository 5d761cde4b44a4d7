"""The tables each suite checks, built from the pipeline's outputs (no Great Expectations here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from apogeenet.io.apstar import good_pixels
from apogeenet.errors import UserFacingError
from apogeenet.labels.catalog import SOURCES, SPLITS, normalisation
from apogeenet.labels.mdwarfs import find_columns
from apogeenet.labels.payne import PAYNE_LOGG_MAX, PAYNE_TEFF_MIN
from apogeenet.store import SpectraStore

__all__ = ["build_frames"]


def _mdwarf_frame(allstar: pd.DataFrame | None, mstar: pd.DataFrame) -> pd.DataFrame:
    if allstar is None or not mstar["SELECTED"].any():  # no M-dwarf source: nothing to check
        return pd.DataFrame({name: pd.Series(dtype=float) for name in ("J_K", "G_K", "M_K", "PARALLAX_OVER_ERROR")}
                            | {"APOGEE_ID": pd.Series(dtype=str), "FIELD": pd.Series(dtype=str)})
    cols = find_columns(allstar, ("g", "J", "K", "parallax", "parallax_error", "field"))
    selected = mstar[mstar["SELECTED"]].merge(allstar, on="APOGEE_ID", how="left", suffixes=("", "_A"))
    return pd.DataFrame({
        "APOGEE_ID": selected["APOGEE_ID"],
        "J_K": selected[cols["J"]] - selected[cols["K"]],
        "G_K": selected[cols["g"]] - selected[cols["K"]],
        "M_K": selected["M_K"],
        "PARALLAX_OVER_ERROR": selected[cols["parallax"]] / selected[cols["parallax_error"]],
        "FIELD": selected[cols["field"]].astype(str),
    })


REQUIRED = {"APOGEE_ID": False, "TEFF": True, "LOGG": True, "FE_H": True, "SOURCE": False, "SPLIT": False}
"""The label catalog's columns: name -> numeric."""


def _schema_frame(catalog: pd.DataFrame) -> pd.DataFrame:
    """One row per required column: present, and numeric where it must be."""
    return pd.DataFrame([{"COLUMN": name, "PRESENT": name in catalog.columns,
                          "NUMERIC": (not numeric) or (name in catalog.columns
                                                       and pd.api.types.is_numeric_dtype(catalog[name]))}
                         for name, numeric in REQUIRED.items()])


def _conformed(catalog: pd.DataFrame) -> pd.DataFrame:
    """The catalog with every required column present (missing: empty) and labels numeric (text:
    empty), so that the other suites count what is wrong instead of failing to run."""
    out = catalog.copy()
    for name, numeric in REQUIRED.items():
        if name not in out.columns:
            out[name] = pd.Series(np.nan, index=out.index, dtype=float if numeric else object)
        elif numeric:
            out[name] = pd.to_numeric(out[name], errors="coerce")
    return out


def _table1_frame(catalog: pd.DataFrame, table1_file: Path) -> pd.DataFrame:
    """Each Table 1 value as stored in ``table1.json`` and as the catalog's training split gives it."""
    try:
        stored = json.loads(table1_file.read_text())
        expected = normalisation(catalog).to_dict()
    except (OSError, ValueError, UserFacingError) as exc:
        return pd.DataFrame([{"NAME": table1_file.name, "STORED": np.nan, "FROM_LABELS": np.nan, "AGREES": False,
                              "PROBLEM": f"{type(exc).__name__}: {str(exc)[:120]}"}])
    if not isinstance(stored, dict):
        stored = {}
    return pd.DataFrame([{"NAME": key, "STORED": stored.get(key, np.nan), "FROM_LABELS": value,
                          "AGREES": isinstance(stored.get(key), (int, float)) and float(stored[key]) == value,
                          "PROBLEM": ""} for key, value in expected.items()])


def _split_frame(catalog: pd.DataFrame, split_sigmas: float, fractions: dict[str, tuple]) -> pd.DataFrame:
    """Per source and split: the fraction, its target and how far it lies beyond the binomial
    noise of a hash split (``split_sigmas`` × √(p(1 − p)/n)), which the suite holds to the tolerance."""
    rows = []
    for source, group in catalog[catalog["SOURCE"].isin(list(fractions))].groupby("SOURCE"):
        for split, target in zip(SPLITS, fractions[source]):
            fraction = float((group["SPLIT"] == split).mean())
            noise = split_sigmas * float(np.sqrt(target * (1 - target) / len(group)))
            rows.append({"SOURCE": source, "SPLIT": split, "N": len(group), "FRACTION": fraction,
                         "TARGET": target, "FRACTION_MINUS_TARGET": fraction - target,
                         "BINOMIAL_ALLOWANCE": noise, "BEYOND_NOISE": max(0.0, abs(fraction - target) - noise)})
    return pd.DataFrame(rows)


def _store_frame(store: SpectraStore, batch: int = 512) -> pd.DataFrame:
    finite = np.empty(len(store))
    for rows, spectra in store.iter_batches(batch):
        finite[rows] = good_pixels(spectra.flux, spectra.error).mean(axis=1)
    return pd.DataFrame({"APOGEE_ID": store.index["apogee_id"], "SNR": store.index["snr"],
                         "N_PIXELS": store.wavelength.size, "FINITE_FRACTION": finite})


def build_frames(catalog: pd.DataFrame, mstar: pd.DataFrame, allstar: pd.DataFrame | None,
                 store: SpectraStore, *, split_sigmas: float, fractions: dict[str, tuple],
                 table1_file: Path | None = None) -> dict[str, pd.DataFrame]:
    """suite name -> DataFrame, for :func:`expectations.suites.build_suites` (``fractions``: the
    target train, dev, test fractions per source)."""
    frames = {"catalog_schema": _schema_frame(catalog), "mdwarf_cuts": _mdwarf_frame(allstar, mstar)}
    catalog = _conformed(catalog)
    for source in SOURCES:
        part = catalog[catalog["SOURCE"] == source].copy()
        if source == "PAYNE":
            part["PASSES_PAYNE_CUT"] = (part["TEFF"] > PAYNE_TEFF_MIN) | (part["LOGG"] < PAYNE_LOGG_MAX)
        frames[f"labels_{source.lower()}"] = part
    frames["catalog_integrity"] = catalog
    frames["split_fractions"] = _split_frame(catalog, split_sigmas, fractions)
    if table1_file is not None:
        frames["table1"] = _table1_frame(catalog, table1_file)
    frames["spectra_store"] = _store_frame(store)
    return frames
