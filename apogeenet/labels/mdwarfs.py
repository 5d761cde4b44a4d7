"""Photometric labels for low-mass main-sequence stars (Olney et al. 2020, §2.3).

Selection: 0.7 < J−K < 1.05, 3.37 < g−K < 8.46, 5 < M_K < 10 (M_K from the Gaia parallax) and
parallax/σ > 3, outside the fields of star-forming regions and young clusters.

Two recipes for the labels:

* ``paper`` — eqs. 1–3 as printed: Hejazi et al. (2015) [Fe/H] from g−K and J−K (eq. 1); Mann
  et al. (2015) Teff from r−J and J−H (eq. 2), with the factor 3500 that the printed equation
  drops (Mann give Teff/3500 = polynomial); Veyette et al. (2017) log g (eq. 3).
* ``released`` (default) — what the released catalog (astro_ml_MS_Labels_May_29_2019.fits)
  actually used: eq. 1 minus 0.0369 dex; Mann et al. (2015)'s r−J + [Fe/H] relation,
  Teff/3500 = 2.532 − 1.319X + 0.4449X² − 0.07151X³ + 0.004333X⁴ + 0.05629[Fe/H], X = r−J, with
  that [Fe/H]; eq. 3 for log g.

A star outside a relation's stated validity range keeps its label and gets a flag bit.
"""

from __future__ import annotations

from enum import IntFlag

import numpy as np
import pandas as pd

from apogeenet.config import Recipe
from apogeenet.errors import InputError

__all__ = ["COLUMN_ALIASES", "LabelFlag", "SELECTION_BOX", "absolute_k", "find_columns", "hejazi_feh", "label_table",
           "mann_teff_feh", "mann_teff_printed", "mdwarf_labels", "select_mdwarfs", "veyette_logg"]


HEJAZI_A = (-14.259, 0.0519, 29.5926, -0.0529, -17.6762, 0.7032)               # eq. 1
MANN_B_PRINTED = (2.151, -1.092, 0.3767, -0.06292, 0.003950, 0.1697, -0.03106)  # eq. 2 (×3500)
MANN_RJ_FEH = (2.532, -1.319, 0.4449, -0.07151, 0.004333)                       # + 0.05629 [Fe/H]
MANN_FEH_TERM = 0.05629
VEYETTE = (7.912, -0.1880, -1.334e-3, 1.313e-7)                                  # eq. 3
RELEASED_FEH_OFFSET = 0.0369

#: Photometric selection of §2.3 (open intervals).
SELECTION_BOX = {"J-K": (0.7, 1.05), "g-K": (3.37, 8.46), "M_K": (5.0, 10.0)}
MIN_PARALLAX_OVER_ERROR = 3.0


class LabelFlag(IntFlag):
    """Bits of the ``LABEL_FLAGS`` column: a relation applied outside its stated range."""

    FEH_RANGE = 1   # Hejazi: -0.73 <= [Fe/H] <= 0.3, 3.3 <= g-K <= 8.46, 0.71 <= J-K <= 1.01
    TEFF_RANGE = 2  # Mann: 4.6 < M_K < 9.8, 2700 < Teff < 4100 K, -0.6 < [Fe/H] < 0.5
    LOGG_RANGE = 4  # Veyette: 3200 < Teff < 4100 K, -0.7 < [Fe/H] < 0.3
    NO_M_K = 8      # no usable parallax, so the M_K range of Mann could not be checked


# Accepted column names, in order of preference (exact case first).
COLUMN_ALIASES = {
    "g": ("g", "PS1_G", "gmag", "g_mag"), "r": ("r", "PS1_R", "rmag", "r_mag"),
    "J": ("J", "J_app", "Jmag", "J_MAG"), "H": ("H", "H_app", "Hmag", "H_MAG"),
    "K": ("K", "K_app", "Ks", "Kmag", "K_MAG"),
    "parallax": ("parallax", "GAIA_PARALLAX", "plx", "PARALLAX"),
    "parallax_error": ("parallax_error", "GAIA_PARALLAX_ERROR", "plx_error", "e_plx", "PARALLAX_ERROR"),
    "field": ("field", "FIELD"),
}


def find_columns(frame: pd.DataFrame, names: tuple[str, ...]) -> dict[str, str]:
    """Map each of ``names`` to a column of ``frame`` through :data:`COLUMN_ALIASES`.

    Raises ValueError naming every column that is missing.
    """
    found, missing = {}, []
    lower = {c.lower(): c for c in frame.columns}
    for name in names:
        options = COLUMN_ALIASES.get(name, (name,))
        hit = next((c for c in options if c in frame.columns), None)
        if hit is None:  # case-insensitive, but never let 'g' match Gaia 'G'
            hit = next((lower[c.lower()] for c in options if len(c) > 1 and c.lower() in lower), None)
        if hit is None:
            missing.append(f"{name} (any of {', '.join(options)})")
        else:
            found[name] = hit
    if missing:
        raise InputError("missing column(s): " + "; ".join(missing))
    return found


def absolute_k(k: np.ndarray, parallax_mas: np.ndarray) -> np.ndarray:
    """M_K = K + 5 log10(ϖ / mas) − 10; NaN where the parallax is not positive."""
    parallax_mas = np.asarray(parallax_mas, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(parallax_mas > 0, k + 5 * np.log10(parallax_mas) - 10, np.nan)


def hejazi_feh(g_k: np.ndarray, j_k: np.ndarray) -> np.ndarray:
    """Eq. 1 (Hejazi et al. 2015)."""
    a = HEJAZI_A
    return a[0] + a[1] * g_k + a[2] * j_k + a[3] * g_k**2 + a[4] * j_k**2 + a[5] * g_k * j_k


def mann_teff_printed(r_j: np.ndarray, j_h: np.ndarray) -> np.ndarray:
    """Eq. 2 with Mann et al. (2015)'s factor: Teff = 3500 · (B0 + B1 X + … + B5 (J−H) + B6 (J−H)²)."""
    b = MANN_B_PRINTED
    return 3500 * (b[0] + b[1] * r_j + b[2] * r_j**2 + b[3] * r_j**3 + b[4] * r_j**4
                   + b[5] * j_h + b[6] * j_h**2)


def mann_teff_feh(r_j: np.ndarray, fe_h: np.ndarray) -> np.ndarray:
    """Mann et al. (2015) r−J + [Fe/H] relation, the one the released catalog used."""
    c = MANN_RJ_FEH
    return 3500 * (c[0] + c[1] * r_j + c[2] * r_j**2 + c[3] * r_j**3 + c[4] * r_j**4
                   + MANN_FEH_TERM * fe_h)


def veyette_logg(teff: np.ndarray, fe_h: np.ndarray) -> np.ndarray:
    """Eq. 3 (Veyette et al. 2017)."""
    v = VEYETTE
    return v[0] + v[1] * fe_h + v[2] * teff + v[3] * teff**2


def mdwarf_labels(g, r, j, h, k, *, m_k=None, recipe: Recipe = Recipe.RELEASED) -> pd.DataFrame:
    """TEFF, LOGG, FE_H and LABEL_FLAGS from apparent g, r, J, H, K (arrays of equal length).

    ``m_k`` (absolute K) is used only to check the Teff relation's M_K range; without it the
    NO_M_K bit is set.
    """
    recipe = Recipe(recipe)  # a plain string from a caller is checked here
    g, r, j, h, k = (np.asarray(a, float) for a in (g, r, j, h, k))
    g_k, j_k = g - k, j - k
    fe_h = hejazi_feh(g_k, j_k)
    if recipe is Recipe.RELEASED:
        fe_h = fe_h - RELEASED_FEH_OFFSET
        teff = mann_teff_feh(r - j, fe_h)
    else:
        teff = mann_teff_printed(r - j, j - h)
    logg = veyette_logg(teff, fe_h)

    flags = np.zeros(g.size, np.int32)
    bad_feh = ~((fe_h >= -0.73) & (fe_h <= 0.3) & (g_k >= 3.3) & (g_k <= 8.46)
                & (j_k >= 0.71) & (j_k <= 1.01))
    flags |= np.where(bad_feh, LabelFlag.FEH_RANGE, 0).astype(np.int32)
    bad_teff = ~((teff > 2700) & (teff < 4100) & (fe_h > -0.6) & (fe_h < 0.5))
    if m_k is None:
        flags |= np.int32(LabelFlag.NO_M_K)
    else:
        m_k = np.asarray(m_k, float)
        bad_teff |= ~((m_k > 4.6) & (m_k < 9.8))
        flags |= np.where(np.isnan(m_k), LabelFlag.NO_M_K, 0).astype(np.int32)
    flags |= np.where(bad_teff, LabelFlag.TEFF_RANGE, 0).astype(np.int32)
    bad_logg = ~((teff > 3200) & (teff < 4100) & (fe_h > -0.7) & (fe_h < 0.3))
    flags |= np.where(bad_logg, LabelFlag.LOGG_RANGE, 0).astype(np.int32)
    return pd.DataFrame({"TEFF": teff, "LOGG": logg, "FE_H": fe_h, "LABEL_FLAGS": flags})


def select_mdwarfs(j, k, g, parallax, parallax_error, field, *,
                   excluded_fields: frozenset[str] | set[str]) -> pd.DataFrame:
    """The §2.3 selection, one boolean column per criterion and ``SELECTED`` for all of them.

    Columns: M_K, IN_BOX (colours and M_K), PARALLAX_OK (ϖ/σ > 3), YOUNG_FIELD (the field is one
    of ``excluded_fields``: those stars go to the YSO procedure), SELECTED.
    """
    j, k, g = (np.asarray(a, float) for a in (j, k, g))
    parallax, parallax_error = np.asarray(parallax, float), np.asarray(parallax_error, float)
    m_k = absolute_k(k, parallax)
    box = SELECTION_BOX
    with np.errstate(invalid="ignore"):
        in_box = ((j - k > box["J-K"][0]) & (j - k < box["J-K"][1]) & (g - k > box["g-K"][0])
                  & (g - k < box["g-K"][1]) & (m_k > box["M_K"][0]) & (m_k < box["M_K"][1]))
        parallax_ok = parallax / parallax_error > MIN_PARALLAX_OVER_ERROR
    young = np.isin(np.asarray(field, dtype=str), sorted(excluded_fields))
    return pd.DataFrame({"M_K": m_k, "IN_BOX": in_box, "PARALLAX_OK": parallax_ok,
                         "YOUNG_FIELD": young, "SELECTED": in_box & parallax_ok & ~young})


def label_table(table: pd.DataFrame, *, recipe: Recipe, select: bool = False,
                young_fields: set[str] = frozenset()) -> pd.DataFrame:
    """``table`` (any of the accepted column names) with TEFF, LOGG, FE_H, LABEL_FLAGS (and M_K
    when it has a parallax); with ``select`` also the §2.3 selection (``SELECTED``; needs
    parallax, parallax_error and field). Missing columns raise :class:`InputError`."""
    needed = ("g", "r", "J", "H", "K") + (("parallax", "parallax_error", "field") if select else ())
    cols = find_columns(table, needed)
    try:
        plx = find_columns(table, ("parallax",))["parallax"]
    except InputError:
        m_k = None
    else:
        m_k = absolute_k(table[cols["K"]], table[plx])
    labels = mdwarf_labels(*(table[cols[b]] for b in ("g", "r", "J", "H", "K")), m_k=m_k, recipe=recipe)
    result = table.drop(columns=[c for c in labels.columns if c in table.columns]).join(labels)
    if select:
        selection = select_mdwarfs(table[cols["J"]], table[cols["K"]], table[cols["g"]], table[cols["parallax"]],
                                   table[cols["parallax_error"]], table[cols["field"]], excluded_fields=young_fields)
        result = result.drop(columns=[c for c in selection.columns if c in result.columns]).join(selection)
    return result
