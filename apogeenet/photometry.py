"""Photometric relations shared by the labels (§2.3–2.4) and the synthetic survey: bands,
extinction, bolometric corrections. Imports no other apogeenet module (isochrones, labels and
synth all build on it; nothing here builds on them).

* MIST v1.2 bolometric corrections at [Fe/H] = 0, A_V = 0 (package data): WISE W1–W3 for every
  star (W = Ks + BC_Ks − BC_W, keeping the model's own Ks), and all bands for stars given by
  labels rather than by age and mass (giants): M = M_bol − BC with M_bol = 4.74 − 2.5 log L.
  SDSS g and r for those come from Bessell B, V, R through Jordi et al. (2006).
* Extinction: A_band = A_V · A(λ_eff)/A(V) with the Gordon et al. (2023) average Milky Way
  law (R_V = 3.1) from ``dust_extinction``.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import astropy.units as u
import numpy as np
import pandas as pd
from dust_extinction.parameter_averages import G23
from scipy.interpolate import RegularGridInterpolator

__all__ = ["BANDS", "absolute_from_labels", "extinction", "extinction_curve", "wise_from_ks"]

#: Band name -> effective wavelength in µm (2MASS, Gaia DR2, PS1, WISE).
BANDS: dict[str, float] = {"J": 1.235, "H": 1.662, "K": 2.159, "G": 0.673, "BP": 0.532,
                           "RP": 0.797, "g": 0.481, "r": 0.617, "W1": 3.353, "W2": 4.603,
                           "W3": 11.561}
_BC_COLUMNS = {"2MASS_J": "J", "2MASS_H": "H", "2MASS_Ks": "K", "Gaia_G_DR2Rev": "G",
               "Gaia_BP_DR2Rev": "BP", "Gaia_RP_DR2Rev": "RP", "WISE_W1": "W1", "WISE_W2": "W2",
               "WISE_W3": "W3", "Bessell_B": "B", "Bessell_V": "V", "Bessell_R": "R"}
_G_CGS, _MSUN_G, _RSUN_CM = 6.674e-8, 1.989e33, 6.957e10


def _data(name: str) -> str:
    return str(files("apogeenet") / "data" / "isochrones" / name)


@cache
def _bc_interpolators() -> dict[str, RegularGridInterpolator]:
    table = pd.read_csv(_data("mist_bc_feh0_av0.csv.gz")).sort_values(["Teff", "logg"])
    teff, logg = np.unique(table["Teff"]), np.unique(table["logg"])
    out = {}
    for column, band in _BC_COLUMNS.items():
        values = table[column].to_numpy().reshape(teff.size, logg.size)
        out[band] = RegularGridInterpolator((teff, logg), values, bounds_error=False, fill_value=None)
    return out


def _bc(band: str, teff: np.ndarray, logg: np.ndarray) -> np.ndarray:
    interp = _bc_interpolators()[band]
    t_lo, t_hi = interp.grid[0][[0, -1]]
    g_lo, g_hi = interp.grid[1][[0, -1]]
    points = np.column_stack([np.clip(teff, t_lo, t_hi), np.clip(logg, g_lo, g_hi)])
    return interp(points)


def wise_from_ks(ks: np.ndarray, teff: np.ndarray, logg: np.ndarray) -> dict[str, np.ndarray]:
    """Absolute W1–W3 from absolute Ks and the MIST BCs at (Teff, log g)."""
    bc_k = _bc("K", teff, logg)
    return {band: ks + bc_k - _bc(band, teff, logg) for band in ("W1", "W2", "W3")}


def absolute_from_labels(teff: np.ndarray, logg: np.ndarray, mass: np.ndarray) -> pd.DataFrame:
    """Radius, log L and absolute magnitudes of stars given by labels (giants, field dwarfs):
    R = sqrt(G M / g), L = R² (Teff / 5772 K)⁴, then MIST BCs; g and r from Jordi et al. (2006):
    g = V + 0.630 (B − V) − 0.124 and r = R + 0.267 (V − R) + 0.088 (V − R ≤ 0.93),
    r = R + 0.77 (V − R) − 0.37 otherwise."""
    teff, logg, mass = (np.asarray(a, float) for a in (teff, logg, mass))
    radius = np.sqrt(_G_CGS * mass * _MSUN_G / 10.0**logg) / _RSUN_CM
    log_l = 2 * np.log10(radius) + 4 * np.log10(teff / 5772.0)
    m_bol = 4.74 - 2.5 * log_l
    mags = {band: m_bol - _bc(band, teff, logg) for band in
            ("J", "H", "K", "G", "BP", "RP", "W1", "W2", "W3", "B", "V", "R")}
    b, v, r = mags.pop("B"), mags.pop("V"), mags.pop("R")
    mags["g"] = v + 0.630 * (b - v) - 0.124
    mags["r"] = np.where(v - r <= 0.93, r + 0.267 * (v - r) + 0.088, r + 0.77 * (v - r) - 0.37)
    return pd.DataFrame({"radius": radius, "logL": log_l, **mags})


@cache
def _extinction_ratios() -> dict[str, float]:
    law = G23(Rv=3.1)
    return {band: float(law(lam * u.micron)) for band, lam in BANDS.items()}


def extinction(a_v: np.ndarray) -> dict[str, np.ndarray]:
    """A_band for each of :data:`BANDS` given A_V (Gordon et al. 2023, R_V = 3.1)."""
    a_v = np.asarray(a_v, float)
    return {band: a_v * ratio for band, ratio in _extinction_ratios().items()}


def extinction_curve(wavelength_aa: np.ndarray) -> np.ndarray:
    """A(λ)/A(V) at wavelengths in Å (Gordon et al. 2023, R_V = 3.1)."""
    return np.asarray(G23(Rv=3.1)(np.asarray(wavelength_aa) * u.AA), dtype=float)
