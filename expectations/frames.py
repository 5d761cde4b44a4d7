"""The tables each suite checks, built from the pipeline's outputs (no Great Expectations here)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from apogeenet.io.apstar import good_pixels
from apogeenet.labels.catalog import DEFAULT_FRACTIONS, SPLITS
from apogeenet.labels.mdwarfs import find_columns
from apogeenet.labels.payne import PAYNE_LOGG_MAX, PAYNE_TEFF_MIN
from apogeenet.store import SpectraStore

__all__ = ["build_frames"]


def _mdwarf_frame(allstar: pd.DataFrame, mstar: pd.DataFrame) -> pd.DataFrame:
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


def _split_frame(catalog: pd.DataFrame, split_sigmas: float) -> pd.DataFrame:
    """Per source and split: the fraction, its target and how far it lies beyond the binomial
    noise of a hash split (``split_sigmas`` × √(p(1 − p)/n)), which the suite holds to the tolerance."""
    rows = []
    for source, group in catalog.groupby("SOURCE"):
        for split, target in zip(SPLITS, DEFAULT_FRACTIONS[source]):
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


def build_frames(catalog: pd.DataFrame, mstar: pd.DataFrame, allstar: pd.DataFrame,
                 store: SpectraStore, split_sigmas: float = 4.0) -> dict[str, pd.DataFrame]:
    """suite name -> DataFrame, for :func:`expectations.suites.build_suites`."""
    frames = {"mdwarf_cuts": _mdwarf_frame(allstar, mstar)}
    for source in ("PAYNE", "MSTAR", "YSO"):
        part = catalog[catalog["SOURCE"] == source].copy()
        if source == "PAYNE":
            part["PASSES_PAYNE_CUT"] = (part["TEFF"] > PAYNE_TEFF_MIN) | (part["LOGG"] < PAYNE_LOGG_MAX)
        frames[f"labels_{source.lower()}"] = part
    frames["catalog_integrity"] = catalog
    frames["split_fractions"] = _split_frame(catalog, split_sigmas)
    frames["spectra_store"] = _store_frame(store)
    return frames
