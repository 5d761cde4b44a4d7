"""Stellar populations of the synthetic survey (the samples of paper §2.2–2.4).

* ``giant`` and ``dwarf``: the Payne regime. Giants follow a red-giant branch and red clump in
  (Teff, log g) with [Fe/H]-dependent temperatures; dwarfs are PARSEC 500 Myr main-sequence stars
  of 0.55–1.4 M☉ (≈ 3700–6950 K), so a few fall below 4000 K and fail the §2.2 cut.
* ``mdwarf``: PARSEC 500 Myr main-sequence stars of 0.09–0.65 M☉ kept only inside the §2.3
  selection box. Their r and g magnitudes are set so that the empirical relations the paper inverts
  hold at the star's true Teff and [Fe/H] (Mann et al. 2015 r−J; Hejazi et al. 2015 g−K, offset
  by the released catalog's −0.0369 dex; the root nearest the isochrone's own g−K), since the
  solar-metallicity isochrones carry no metallicity in their colours.
* ``yso``: members of the star-forming regions of §2.4 drawn from PARSEC at 1–100 Myr with
  region ages, distances and A_V up to 20 mag.
* ``field``: Payne-regime giants and dwarfs that happen to lie in those regions' fields.

Every star gets an apparent H in APOGEE's range (H ≤ 13.5), photometry with survey-like errors
and missing values, a Gaia parallax (a fraction with poor astrometric solutions), NVISITS and an
S/N that follows H.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord

from apogeenet.io.apstar import twomass_id
from apogeenet.isochrones import shipped_parsec
from apogeenet.photometry import BANDS, absolute_from_labels, extinction
from apogeenet.portable import quantise_frame

__all__ = ["POPULATIONS", "REGIONS", "Region", "draw_population", "draw_survey", "observe"]

POPULATIONS = ("giant", "dwarf", "mdwarf", "yso", "field")


@dataclass(frozen=True)
class Region:
    name: str
    ra: float
    dec: float
    radius_deg: float
    distance_pc: float
    age_myr: tuple[float, float]
    fields: tuple[str, ...]


#: Star-forming regions and young clusters whose fields the paper treats separately (§2.3–2.4).
REGIONS: dict[str, Region] = {r.name: r for r in (
    Region("Orion", 83.82, -5.39, 3.0, 400.0, (1.0, 5.0), ("ORIONA", "ORIONB")),
    Region("Perseus", 54.5, 31.7, 2.2, 300.0, (1.0, 6.0), ("IC348", "N1333")),
    Region("NGC2264", 100.25, 9.88, 1.5, 720.0, (1.5, 6.0), ("N2264",)),
    Region("Pleiades", 56.75, 24.12, 2.5, 136.0, (90.0, 100.0), ("PLEIADES",)),
)}

# Empirical relations (paper eqs. 1-2 and the released catalog, DATA.md)
_HEJAZI = (-14.259, 0.0519, 29.5926, -0.0529, -17.6762, 0.7032)
_RELEASED_FEH_OFFSET = 0.0369
_MANN = (2.532, -1.319, 0.4449, -0.07151, 0.004333)
_MANN_FEH = 0.05629
_BOX = {"JK": (0.7, 1.05), "gK": (3.37, 8.46), "MK": (5.0, 10.0)}
_H_RANGE = (7.0, 13.5)
_TEFF_MAX = 6950.0  # the emulator's upper edge; hotter stars are not part of the survey


def _sky(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform on the sky north of δ = −30° (the APO 2.5 m view)."""
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-30)), 1, n)))
    return ra, dec


def _field_names(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """APOGEE-style field names from Galactic coordinates, e.g. ``120-45``."""
    gal = SkyCoord(ra=ra, dec=dec, unit="deg").galactic
    lon = (np.round(gal.l.deg / 30) * 30 % 360).astype(int)
    lat = (np.round(gal.b.deg / 15) * 15).astype(int)
    return np.array([f"{lo:03d}{la:+03d}" for lo, la in zip(lon, lat)])


def _in_region(rng: np.random.Generator, region: Region, n: int):
    r = region.radius_deg * np.sqrt(rng.uniform(0, 1, n))
    theta = rng.uniform(0, 2 * np.pi, n)
    dec = region.dec + r * np.sin(theta)
    ra = region.ra + r * np.cos(theta) / np.cos(np.radians(region.dec))
    fields = np.array(region.fields)[rng.integers(len(region.fields), size=n)]
    return ra % 360, dec, fields


def _metallicity(rng, n, mean, sigma, lo, hi):
    fe_h = np.clip(rng.normal(mean, sigma, n), lo, hi)
    alpha = np.clip(-0.25 * fe_h + rng.normal(0, 0.05, n), -0.1, 0.4)
    return fe_h, alpha


def _distance_for_h(rng, abs_h, a_h, n):
    """Distances (pc) that put stars at apparent H uniform in APOGEE's range."""
    h = rng.uniform(_H_RANGE[0] + 0.5, _H_RANGE[1] - 0.7, n)
    return 10 ** ((h - abs_h - a_h) / 5 + 1)


def _giants(rng, n):
    clump = rng.uniform(size=n) < 0.3
    fe_h, alpha = _metallicity(rng, n, -0.15, 0.25, -0.95, 0.45)
    logg = np.where(clump, rng.normal(2.45, 0.08, n), rng.uniform(0.9, 3.6, n))
    teff = np.where(clump, rng.normal(4750, 90, n), 4850 + 420 * (logg - 2.5) + rng.normal(0, 70, n))
    teff = teff - 250 * fe_h
    mass = rng.uniform(0.9, 2.0, n)
    stars = absolute_from_labels(teff, logg, mass)
    return pd.DataFrame({"teff": teff, "logg": logg, "fe_h": fe_h, "alpha_fe": alpha,
                         "mass": mass, "age_myr": np.nan}).join(stars)


def _parsec_main_sequence(rng, n, mass_range, fe_mean, fe_sigma, fe_range):
    mass = rng.uniform(*mass_range, n)
    stars = shipped_parsec().interpolate(np.full(n, 500.0), mass, main_sequence_only=True)
    stars["Teff"] = np.minimum(stars["Teff"], _TEFF_MAX)
    fe_h, alpha = _metallicity(rng, n, fe_mean, fe_sigma, *fe_range)
    return pd.DataFrame({"teff": stars.pop("Teff"), "logg": stars.pop("logg"), "fe_h": fe_h,
                         "alpha_fe": alpha, "mass": mass, "age_myr": 500.0}).join(stars)


def _mann_r_minus_j(teff: np.ndarray, fe_h: np.ndarray) -> np.ndarray:
    """Invert Mann et al. (2015): Teff/3500 = P(r−J) + 0.05629 [Fe/H], on 0.8 ≤ r−J ≤ 5.5."""
    grid = np.linspace(0.8, 5.5, 2000)
    poly = sum(c * grid**k for k, c in enumerate(_MANN))  # decreasing in r−J on this range
    return np.interp(-(teff / 3500 - _MANN_FEH * fe_h), -poly, grid)


def _hejazi_g_minus_k(fe_h: np.ndarray, j_k: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Invert Hejazi et al. (2015) eq. 1 (released offset) for g−K, the root nearest ``near``;
    where no root exists, the g−K of the relation's maximum."""
    a1, a2, a3, a4, a5, a6 = _HEJAZI
    target = fe_h + _RELEASED_FEH_OFFSET
    qa, qb, qc = a4, a2 + a6 * j_k, a1 + a3 * j_k + a5 * j_k**2 - target
    disc = qb**2 - 4 * qa * qc
    root = np.sqrt(np.clip(disc, 0, None))
    r1, r2 = (-qb + root) / (2 * qa), (-qb - root) / (2 * qa)
    best = np.where(np.abs(r1 - near) < np.abs(r2 - near), r1, r2)
    return np.where(disc >= 0, best, -qb / (2 * qa))


def _mdwarfs(rng, n):
    out = []
    while sum(len(o) for o in out) < n:
        k = 3 * n + 20
        stars = _parsec_main_sequence(rng, k, (0.09, 0.65), -0.1, 0.2, (-0.7, 0.3))
        stars = stars[stars["teff"] >= 2600].reset_index(drop=True)
        j_k = (stars["J"] - stars["K"]).to_numpy()
        stars["r"] = stars["J"] + _mann_r_minus_j(stars["teff"].to_numpy(), stars["fe_h"].to_numpy())
        g_k = _hejazi_g_minus_k(stars["fe_h"].to_numpy(), j_k, (stars["g"] - stars["K"]).to_numpy())
        stars["g"] = stars["K"] + g_k
        inside = ((j_k > _BOX["JK"][0]) & (j_k < _BOX["JK"][1]) & (g_k > _BOX["gK"][0])
                  & (g_k < _BOX["gK"][1]) & (stars["K"] > _BOX["MK"][0]) & (stars["K"] < _BOX["MK"][1]))
        out.append(stars[inside.to_numpy()])
    return pd.concat(out, ignore_index=True).iloc[:n].reset_index(drop=True)


def draw_population(rng: np.random.Generator, population: str, n: int) -> pd.DataFrame:
    """Truth and absolute photometry, position, distance and A_V for ``n`` stars."""
    if population == "giant":
        stars = _giants(rng, n)
    elif population == "dwarf":
        stars = _parsec_main_sequence(rng, n, (0.55, 1.4), -0.05, 0.2, (-0.9, 0.45))
    elif population == "mdwarf":
        stars = _mdwarfs(rng, n)
    elif population == "yso":
        return _ysos(rng, n)
    elif population == "field":
        half = n // 2
        stars = pd.concat([_giants(rng, half),
                           _parsec_main_sequence(rng, n - half, (0.7, 1.4), -0.05, 0.2, (-0.9, 0.45))],
                          ignore_index=True)
        region_names = np.array(list(REGIONS))[rng.integers(len(REGIONS), size=n)]
        ra, dec, fields = np.zeros(n), np.zeros(n), np.empty(n, dtype=object)
        for name in np.unique(region_names):
            pick = region_names == name
            ra[pick], dec[pick], fields[pick] = _in_region(rng, REGIONS[name], int(pick.sum()))
        stars["av"] = np.clip(rng.exponential(1.5, n), 0, 10)
        stars["distance_pc"] = _distance_for_h(rng, stars["H"], extinction(stars["av"])["H"], n)
        return stars.assign(ra=ra, dec=dec, field=fields.astype(str), region="", population=population)
    else:
        raise ValueError(f"unknown population {population!r}; choose from {POPULATIONS}")
    ra, dec = _sky(rng, n)
    local = population == "mdwarf"
    stars["av"] = np.clip(rng.exponential(0.03 if local else 0.4, n), 0, 0.3 if local else 4.0)
    stars["distance_pc"] = _distance_for_h(rng, stars["H"], extinction(stars["av"])["H"], n)
    return stars.assign(ra=ra, dec=dec, field=_field_names(ra, dec), region="", population=population)


def _ysos(rng, n):
    out = []
    names = list(REGIONS)
    while sum(len(o) for o in out) < n:
        k = 4 * n + 20
        region_names = np.array(names)[rng.integers(len(names), size=k)]
        age, dist, av = np.zeros(k), np.zeros(k), np.zeros(k)
        ra, dec, fields = np.zeros(k), np.zeros(k), np.empty(k, dtype=object)
        for name in names:
            pick = region_names == name
            m, region = int(pick.sum()), REGIONS[name]
            lo, hi = region.age_myr
            age[pick] = np.exp(rng.uniform(np.log(lo), np.log(hi), m))
            dist[pick] = rng.normal(region.distance_pc, 0.04 * region.distance_pc, m)
            av[pick] = (np.clip(rng.normal(0.12, 0.03, m), 0, None) if name == "Pleiades"
                        else np.clip(rng.exponential(3.0, m), 0, 20))
            ra[pick], dec[pick], fields[pick] = _in_region(rng, region, m)
        mass = np.clip(10 ** rng.normal(np.log10(0.3), 0.45, k), 0.09, 2.4)
        stars = shipped_parsec().interpolate(age, mass)
        stars = pd.DataFrame({"teff": stars.pop("Teff"), "logg": stars.pop("logg"),
                              "fe_h": rng.normal(0.0, 0.05, k), "alpha_fe": 0.0, "mass": mass,
                              "age_myr": age}).join(stars)
        stars = stars.assign(av=av, distance_pc=dist, ra=ra, dec=dec, field=fields.astype(str),
                             region=region_names, population="yso")
        apparent_h = stars["H"] + 5 * np.log10(dist / 10) + extinction(av)["H"]
        keep = ((apparent_h > _H_RANGE[0]) & (apparent_h < _H_RANGE[1]) & (stars["teff"] >= 2600)
                & (stars["teff"] <= _TEFF_MAX))
        out.append(stars[keep.to_numpy()])
    return pd.concat(out, ignore_index=True).iloc[:n].reset_index(drop=True)


def _noise(rng, mags, floor, scale, limit):
    sigma = floor + scale * 10 ** (0.4 * (mags - limit))
    return mags + rng.normal(0, 1, mags.shape) * sigma, sigma


def observe(rng: np.random.Generator, stars: pd.DataFrame) -> pd.DataFrame:
    """Apparent magnitudes with errors and missing values, Gaia parallaxes, NVISITS and S/N,
    from absolute magnitudes ``M_<band>``, ``distance_pc`` and ``av``.

    Missing values are NaN: 2MASS fainter than 17.5; Gaia G > 20.7 (BP/RP > 20.3) and 3 % without
    parallax; PS1 brighter than 12.5 (saturated) or fainter than 22.5; WISE W1/W2/W3 fainter
    than 17.5/16.5/12.5. Parallax errors follow Gaia DR2 (0.04 mas at G < 15, 0.7 mas at
    G = 20); 8 % of stars have a poor astrometric solution whose error adds 20–100 % of the
    parallax, so about half of those fail parallax/σ > 3.
    Gaia DR2 radius and luminosity (5 % scatter) are given only where DR2 reported them:
    R > 0.5 R☉, log L > −1.54 and M_G < 10.
    S/N = 100 · (NVISITS/3)^½ · 10^(−0.2 (H − 11)), with 10 % scatter and 5 % of stars observed
    in poor conditions (× 0.1–0.5), clipped to 3 … 1500.
    """
    n = len(stars)
    mu = 5 * np.log10(stars["distance_pc"].to_numpy() / 10)
    ext = extinction(stars["av"].to_numpy())
    out = pd.DataFrame(index=stars.index)
    specs = {"J": (0.02, 0.1, 16.0, 17.5), "H": (0.02, 0.1, 15.5, 17.0), "K": (0.02, 0.1, 15.0, 16.5),
             "G": (0.002, 0.02, 20.0, 20.7), "BP": (0.005, 0.05, 20.0, 20.3), "RP": (0.005, 0.05, 19.5, 20.3),
             "g": (0.01, 0.05, 21.5, 22.5), "r": (0.01, 0.05, 21.0, 22.5),
             "W1": (0.02, 0.1, 16.5, 17.5), "W2": (0.02, 0.1, 15.5, 16.5), "W3": (0.03, 0.15, 11.5, 12.5)}
    true_apparent = {}
    for band in BANDS:
        floor, scale, limit, faint = specs[band]
        true = stars[f"M_{band}"].to_numpy() + mu + ext[band]
        true_apparent[band] = true
        obs, sigma = _noise(rng, true, floor, scale, limit)
        missing = true > faint
        if band in ("g", "r"):
            missing |= true < 12.5
        out[band], out[f"{band}_err"] = np.where(missing, np.nan, obs), np.where(missing, np.nan, sigma)
    g_true = true_apparent["G"]
    plx_err = 0.04 + 0.7 * 10 ** (0.4 * (g_true - 20))
    poor = rng.uniform(size=n) < 0.08
    plx_true = 1000.0 / stars["distance_pc"].to_numpy()
    plx_err = np.where(poor, plx_err + plx_true * rng.uniform(0.2, 1.0, n), plx_err)
    plx = plx_true + rng.normal(0, 1, n) * plx_err
    no_plx = (rng.uniform(size=n) < 0.03) | (g_true > 20.7)
    out["parallax"], out["parallax_error"] = np.where(no_plx, np.nan, plx), np.where(no_plx, np.nan, plx_err)
    # Gaia DR2 Apsis-FLAME radius and luminosity, reported only where DR2 did (paper §2.4)
    log_l = stars["logL"].to_numpy()
    m_g = g_true - mu
    reported = (stars["radius"].to_numpy() > 0.5) & (log_l > -1.54) & (m_g < 10) & np.isfinite(out["G"])
    out["gaia_radius"] = np.where(reported, stars["radius"].to_numpy() * rng.lognormal(0, 0.05, n), np.nan)
    out["gaia_lum"] = np.where(reported, 10**log_l * rng.lognormal(0, 0.05, n), np.nan)
    nvisits = rng.choice([1, 2, 3], size=n, p=[0.3, 0.3, 0.4])
    snr = 100 * np.sqrt(nvisits / 3) * 10 ** (-0.2 * (true_apparent["H"] - 11)) * rng.lognormal(0, 0.1, n)
    snr = np.where(rng.uniform(size=n) < 0.05, snr * rng.uniform(0.1, 0.5, n), snr)
    out["nvisits"], out["snr_target"] = nvisits, np.clip(snr, 3, 1500)
    out["h_true"] = true_apparent["H"]
    return out


def draw_survey(seed: int, n_stars: int, fractions: dict[str, float]) -> pd.DataFrame:
    """All stars of a survey: truth, positions, photometry; one row per star, unique APOGEE IDs.

    Float columns are quantised (:mod:`apogeenet.portable`) so that the files made from
    them are the same on every CPU."""
    rng = np.random.default_rng(seed)
    counts = {p: int(np.floor(fractions.get(p, 0.0) * n_stars)) for p in POPULATIONS}
    counts["giant"] += n_stars - sum(counts.values())
    parts = [draw_population(rng, p, c) for p, c in counts.items() if c > 0]
    stars = pd.concat(parts, ignore_index=True).rename(columns={b: f"M_{b}" for b in BANDS})
    stars = stars.join(observe(rng, stars))
    stars = quantise_frame(stars.iloc[rng.permutation(len(stars))].reset_index(drop=True))
    ids = [twomass_id(r, d) for r, d in zip(stars["ra"], stars["dec"])]
    seen: set[str] = set()
    for i, apogee_id in enumerate(ids):  # nudge the rare coincident designation
        while apogee_id in seen:
            stars.loc[i, "ra"] = (stars.loc[i, "ra"] + 1e-4) % 360
            apogee_id = twomass_id(stars.loc[i, "ra"], stars.loc[i, "dec"])
        seen.add(apogee_id)
        ids[i] = apogee_id
    stars.insert(0, "apogee_id", ids)
    stars["telescope"] = "apo25m"
    return stars
