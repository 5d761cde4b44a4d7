"""One label catalog with splits and the Table 1 normalisation (Olney et al. 2020, §2–§3.1).

Sources are PAYNE (§2.2), MSTAR (§2.3), YSO (§2.4) and TABLE (one's own labels); a star that
qualifies twice keeps the label of the more specific procedure, TABLE (the user's word) over YSO
over MSTAR over PAYNE. Splits are 80/10/10 % for PAYNE and 60/20/20 % for MSTAR and YSO (§3), and
TABLE's ``labels.table.split``: each star's from a SHA-256 of its own APOGEE ID within its
source, and kept from any earlier catalog, so neither adding stars nor another star's change of
source moves a star. Table 1 is the mean and σ of each label over the training split of all
sources (eq. 4 standardises with them), from correctly rounded sums; label values are quantised
(:mod:`apogeenet.portable`), so the catalog is the same bytes on every CPU.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from apogeenet.config import LabelsParams
from apogeenet.errors import InputError
from apogeenet.portable import TABLE_BITS, exact_mean_std, quantise

__all__ = ["LABEL_COLUMNS", "SOURCES", "SPLITS", "Normalisation", "assign_splits", "combine_labels", "label_fractions",
           "normalisation", "stable_unit"]

SOURCES = ("PAYNE", "MSTAR", "YSO", "TABLE")
SPLITS = ("train", "dev", "test")
LABEL_COLUMNS = ("TEFF", "LOGG", "FE_H")
DEFAULT_FRACTIONS = {"PAYNE": (0.8, 0.1, 0.1), "MSTAR": (0.6, 0.2, 0.2), "YSO": (0.6, 0.2, 0.2),
                     "TABLE": (0.6, 0.2, 0.2)}
_PRIORITY = {"TABLE": -1, "YSO": 0, "MSTAR": 1, "PAYNE": 2}


def stable_unit(apogee_id: str) -> float:
    """A number in [0, 1) fixed by the APOGEE ID alone (first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256(apogee_id.strip().encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(apogee_ids, sources, fractions: dict[str, tuple[float, float, float]] | None = None,
                  previous: dict[str, str] | None = None) -> np.ndarray:
    """'train', 'dev' or 'test' per star.

    A star in ``previous`` (APOGEE_ID -> split of an earlier catalog) keeps its split, so adding
    stars never moves existing ones. Any other star's split depends on its own ID and source
    alone: :func:`stable_unit` of its ID against its source's cumulative fractions. No star's
    split depends on which other stars are labelled; each source's fractions carry binomial noise
    (σ = √(p(1 − p)/n), which the validation gate allows for).
    """
    fractions = fractions or DEFAULT_FRACTIONS
    previous = previous or {}
    out = np.empty(len(sources), dtype=object)
    for i, (apogee_id, source) in enumerate(zip(map(str, apogee_ids), sources)):
        if apogee_id in previous:
            out[i] = previous[apogee_id]
            continue
        edges = np.cumsum(fractions[source])
        out[i] = SPLITS[min(int(np.searchsorted(edges, stable_unit(apogee_id), side="right")), len(SPLITS) - 1)]
    return out


def label_fractions(labels: LabelsParams) -> dict[str, tuple[float, float, float]]:
    """Train, dev and test fractions per source: the paper's (§3) and ``labels.table.split``."""
    return {**DEFAULT_FRACTIONS, "TABLE": tuple(labels.table.split)}


def combine_labels(parts: dict[str, pd.DataFrame],
                   fractions: dict[str, tuple[float, float, float]] | None = None,
                   previous: dict[str, str] | None = None) -> pd.DataFrame:
    """APOGEE_ID, TEFF, LOGG, FE_H, SOURCE, LABEL_FLAGS, SPLIT from per-source tables.

    Each part has APOGEE_ID, TEFF, LOGG, FE_H and optionally LABEL_FLAGS. Rows with a missing
    label are dropped (they cannot train); duplicates keep the highest-priority source.
    """
    frames = []
    for source, part in parts.items():
        if source not in SOURCES:
            raise InputError(f"unknown source {source!r}; use {SOURCES}")
        frame = part[["APOGEE_ID", *LABEL_COLUMNS]].copy()
        frame["LABEL_FLAGS"] = part["LABEL_FLAGS"].to_numpy(np.int32) if "LABEL_FLAGS" in part else 0
        frame["SOURCE"] = source
        frames.append(frame)
    catalog = pd.concat(frames, ignore_index=True)
    catalog = catalog[np.isfinite(catalog[list(LABEL_COLUMNS)].to_numpy(float)).all(axis=1)]
    catalog = (catalog.assign(_rank=catalog["SOURCE"].map(_PRIORITY))
               .sort_values(["_rank", "APOGEE_ID"]).drop_duplicates("APOGEE_ID")
               .drop(columns="_rank").sort_values("APOGEE_ID").reset_index(drop=True))
    for column in LABEL_COLUMNS:
        catalog[column] = quantise(catalog[column].to_numpy(np.float64), TABLE_BITS)
    catalog["SPLIT"] = assign_splits(catalog["APOGEE_ID"], catalog["SOURCE"], fractions, previous)
    return catalog[["APOGEE_ID", *LABEL_COLUMNS, "SOURCE", "LABEL_FLAGS", "SPLIT"]]


@dataclass(frozen=True)
class Normalisation:
    """Table 1: mean and σ of each label over the training split (eq. 4)."""

    teff_mean: float
    teff_std: float
    logg_mean: float
    logg_std: float
    fe_h_mean: float
    fe_h_std: float

    @property
    def mean(self) -> np.ndarray:
        return np.array([self.teff_mean, self.logg_mean, self.fe_h_mean])

    @property
    def std(self) -> np.ndarray:
        return np.array([self.teff_std, self.logg_std, self.fe_h_std])

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def normalisation(catalog: pd.DataFrame) -> Normalisation:
    """Table 1 from the training split of a label catalog (correctly rounded sums: the same
    values on every CPU)."""
    train = catalog[catalog["SPLIT"] == "train"]
    if train.empty:
        raise InputError("the label catalog has no training stars")
    mean, std = exact_mean_std(train[list(LABEL_COLUMNS)].to_numpy(np.float64))
    values = {}
    for k, column in enumerate(LABEL_COLUMNS):
        values[f"{column.lower()}_mean"], values[f"{column.lower()}_std"] = float(mean[k]), float(std[k])
    return Normalisation(**values)
