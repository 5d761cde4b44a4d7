"""Payne labels (Olney et al. 2020, §2.2): Ting et al. (2019) Teff, log g and [Fe/H] are adopted
for stars with Teff > 4000 K or log g < 3.5; cooler dwarfs are left to the photometric relations
because the Payne's log g and [Fe/H] correlate unphysically there."""

from __future__ import annotations

import numpy as np
import pandas as pd

from apogeenet.errors import InputError
from apogeenet.labels.catalog import LABEL_COLUMNS

__all__ = ["PAYNE_LOGG_MAX", "PAYNE_TEFF_MIN", "payne_labels"]

PAYNE_TEFF_MIN = 4000.0
PAYNE_LOGG_MAX = 3.5


def payne_labels(table: pd.DataFrame) -> pd.DataFrame:
    """APOGEE_ID, TEFF, LOGG, FE_H of the rows that pass the §2.2 cut (finite labels only).

    ``table`` has the Ting et al. (2019) columns APOGEE_ID, TEFF, LOGG, FE_H (any case).
    """
    frame = table.rename(columns=str.upper)
    missing = [c for c in ("APOGEE_ID", "TEFF", "LOGG", "FE_H") if c not in frame.columns]
    if missing:
        raise InputError(f"Payne table lacks column(s) {', '.join(missing)}")
    teff, logg, fe_h = (frame[c].to_numpy(float) for c in LABEL_COLUMNS)
    keep = ((teff > PAYNE_TEFF_MIN) | (logg < PAYNE_LOGG_MAX)) & np.isfinite(teff + logg + fe_h)
    return frame.loc[keep, ["APOGEE_ID", "TEFF", "LOGG", "FE_H"]].reset_index(drop=True)
