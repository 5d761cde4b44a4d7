"""The synthetic survey on disk: apStar files and the catalogs the pipeline reads.

Layout of a survey directory::

    apStar/{TELESCOPE}/{FIELD}/apStar-synth-{APOGEE_ID}.fits   one per star, the real apStar layout
    allStar-synth.fits          allStar-like catalog (positions, S/N, photometry, parallaxes)
    payne-synth.fits            Payne-format labels (Ting et al. 2019 columns) for §2.2
    members-kounkel2019-synth.fits   YSO membership (Kounkel et al. 2019 format) for §2.4
    truth-synth.fits            the true labels: for evaluation only, never for training

Observed flux: the surface flux F_λ of :class:`~apogeenet.synth.emulator.PayneEmulator` scaled by
(R/d)² and reddened by 10^(−0.4 A_V A(λ)/A(V)) (Gordon et al. 2023), in 1e-17 erg/s/cm²/Å.
Noise: σ_i = (F̃/S/N)·(F_i/F̃)^½ (photon-like, F̃ the median flux), ×3 on the fixed set of
sky/telluric pixels (mask bit 12, SIG_SKYLINE); each of NVISITS visits has σ·√NVISITS and row 0
is their mean, so the stated errors are those of the noise actually added. Pixels outside the
emulator's 7214 (chip gaps, ends) get flux 0, error 1e10 and mask bit 0 (BADPIX), as real files.

Star ``i`` of a survey depends only on (seed, i), and nothing time-dependent is written, so the
same seed and size give byte-identical files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from apogeenet.io.apstar import APSTAR_NPIX, BAD_PIXEL_ERROR, ApStar, write_apstar
from apogeenet.labels.catalog import LABEL_COLUMNS
from apogeenet.photometry import BANDS, extinction_curve
from apogeenet.progress import progress_bar
from apogeenet.synth.emulator import EMULATOR_LABELS, PayneEmulator
from apogeenet.synth.files import SurveyFiles
from apogeenet.synth.populations import draw_survey
from apogeenet.portable import SPECTRUM_BITS, quantise

__all__ = ["SurveyReport", "SpectrumSynthesizer", "make_survey", "spectrum_path"]

BADPIX, SIG_SKYLINE = 1 << 0, 1 << 12
_RSUN_CM, _PC_CM = 6.957e10, 3.0857e18
_SKY_ERROR_FACTOR = 3.0


@dataclass(frozen=True)
class SurveyReport:
    n_stars: int
    counts: dict[str, int]
    out_dir: Path
    seconds: float


class SpectrumSynthesizer:
    """Observed apStar spectra of synthetic stars (vectorised physics, per-star noise)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.emulator = PayneEmulator()

    @cached_property
    def _reddening_curve(self) -> np.ndarray:
        return extinction_curve(self.emulator.wavelength)

    def expected_flux(self, stars: pd.DataFrame) -> np.ndarray:
        """The survey's forward model: observed flux without noise on the emulator's pixels,
        (n, 7214), 1e-17 erg/s/cm²/Å, float64 — the surface flux of the labels (``teff``,
        ``logg``, ``fe_h``, ``alpha_fe``) diluted by (``radius``/``distance_pc``)² and reddened by
        ``av``."""
        labels = stars[list(EMULATOR_LABELS)].to_numpy(dtype=np.float64)
        surface = self.emulator.surface_flux(labels)
        dilution = (stars["radius"].to_numpy() * _RSUN_CM / (stars["distance_pc"].to_numpy() * _PC_CM)) ** 2
        reddening = 10 ** (-0.4 * stars["av"].to_numpy()[:, None] * self._reddening_curve)
        return surface * dilution[:, None] * reddening * 1e17

    def noiseless(self, stars: pd.DataFrame) -> np.ndarray:
        """:meth:`expected_flux` quantised to :data:`~apogeenet.portable.SPECTRUM_BITS` so that the
        noisy files made from it (exact IEEE operations from here on) are the same on every CPU."""
        return quantise(self.expected_flux(stars), SPECTRUM_BITS)

    def observe(self, number: int, truth: np.ndarray, snr: float, nvisits: int) -> tuple[np.ndarray, ...]:
        """Noisy flux, error and mask on the full apStar grid for star ``number``.

        Arrays are (NWAVE,) for one visit, else (NVISITS + 2, NWAVE) with row 0 the mean of the
        visits (and row 1 the same combination)."""
        rng = np.random.default_rng([self.seed, 1, number])
        typical = np.median(truth)
        sigma = typical / snr * np.sqrt(np.clip(truth / typical, 1e-4, None))
        sigma = np.where(self.emulator.flagged, sigma * _SKY_ERROR_FACTOR, sigma)
        visits = truth + rng.standard_normal((nvisits, truth.size)) * sigma * np.sqrt(nvisits)
        pix = self.emulator.pixel_index
        rows = 1 if nvisits == 1 else nvisits + 2
        flux = np.zeros((rows, APSTAR_NPIX), np.float32)
        error = np.full((rows, APSTAR_NPIX), BAD_PIXEL_ERROR, np.float32)
        mask = np.full((rows, APSTAR_NPIX), BADPIX, np.int16)
        combined = visits.mean(axis=0)
        flux[:, pix] = combined if rows == 1 else np.vstack([combined, combined, visits])
        error[:, pix] = sigma if rows == 1 else np.vstack([sigma, sigma, np.tile(sigma * np.sqrt(nvisits), (nvisits, 1))])
        mask[:, pix] = np.where(self.emulator.flagged, SIG_SKYLINE, 0)
        if rows == 1:
            return flux[0], error[0], mask[0]
        return flux, error, mask

    def combined(self, stars: pd.DataFrame, *, chunk: int = 256) -> np.ndarray:
        """Noisy combined spectra (row 0) on the emulator's pixels, (n, 7214), at each star's
        ``snr_target`` and ``nvisits``; row i is star i of a table indexed 0 … n − 1."""
        out = np.empty((len(stars), self.emulator.wavelength.size), np.float32)
        for start in range(0, len(stars), chunk):
            block = stars.iloc[start:start + chunk]
            truth = self.noiseless(block)
            for k, (number, star) in enumerate(block.iterrows()):
                flux, _, _ = self.observe(number, truth[k], star["snr_target"], int(star["nvisits"]))
                out[start + k] = (flux if flux.ndim == 1 else flux[0])[self.emulator.pixel_index]
        return out


def _apstar(star: pd.Series, flux, error, mask) -> ApStar:
    combined_f, combined_e = (flux, error) if flux.ndim == 1 else (flux[0], error[0])
    good = combined_e < BAD_PIXEL_ERROR
    header = fits.Header()
    for band in ("J", "H", "K"):
        header[band] = (float(np.nan_to_num(star[band], nan=99.999)), f"2MASS {band} magnitude")
    header["COMMENT"] = "apogeenet synthetic survey: Payne-emulator spectrum, see apogeenet.synth"
    return ApStar(apogee_id=star["apogee_id"], telescope=star["telescope"], field=star["field"],
                  location_id=0, nvisits=int(star["nvisits"]),
                  snr=round(float(np.median(combined_f[good] / combined_e[good])), 3),
                  ra=round(float(star["ra"]), 6), dec=round(float(star["dec"]), 6),
                  flux=flux, error=error, mask=mask, header=header)


def spectrum_path(spectra_dir: Path, star: pd.Series) -> Path:
    return spectra_dir / star["telescope"] / star["field"] / f"apStar-synth-{star['apogee_id']}.fits"


def make_survey(out: str | os.PathLike | SurveyFiles, n_stars: int, seed: int, fractions: dict[str, float], *,
                chunk: int = 256, progress: bool = False) -> tuple[pd.DataFrame, SurveyReport]:
    """Write a synthetic survey of ``n_stars`` (see the module docstring) to ``out``: a
    :class:`SurveyFiles` or a directory (default names); returns the star table.

    Spectra are computed ``chunk`` stars at a time and written as they are made, so memory stays
    bounded whatever the size. Files already present are rewritten only if their bytes differ.
    """
    started = time.perf_counter()
    files = out if isinstance(out, SurveyFiles) else SurveyFiles.under(out)
    stars = draw_survey(seed, n_stars, fractions)
    synth = SpectrumSynthesizer(seed)
    snr = np.empty(len(stars))
    with progress_bar(len(stars), "synth", enabled=progress) as bar:
        for start in range(0, len(stars), chunk):
            block = stars.iloc[start:start + chunk]
            truth = synth.noiseless(block)
            for k, (number, star) in enumerate(block.iterrows()):
                arrays = synth.observe(number, truth[k], star["snr_target"], int(star["nvisits"]))
                record = _apstar(star, *arrays)
                snr[number] = record.snr
                _write_if_changed(record, spectrum_path(files.spectra, star))
                bar.advance()
    stars["snr"] = snr
    _write_catalogs(files, stars, seed)
    counts = {str(k): int(v) for k, v in stars["population"].value_counts().sort_index().items()}
    return stars, SurveyReport(len(stars), counts, files.allstar.parent, time.perf_counter() - started)


def _replace_if_changed(tmp: Path, path: Path) -> None:
    """Move ``tmp`` over ``path`` unless the bytes are equal: regenerating the same survey leaves
    files, their mtimes and ``dvc status`` untouched."""
    if path.exists() and path.read_bytes() == tmp.read_bytes():
        tmp.unlink()
    else:
        os.replace(tmp, path)


def _write_if_changed(record: ApStar, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.new")
    write_apstar(record, tmp, overwrite=True)
    _replace_if_changed(tmp, path)


def _table(columns: dict[str, tuple[np.ndarray, str | None, str]]) -> Table:
    table = Table()
    for name, (values, unit, description) in columns.items():
        table[name] = values
        if unit:
            table[name].unit = unit
        table[name].description = description
    return table


def _write_table(table: Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    table.write(tmp, format="fits", overwrite=True)
    _replace_if_changed(tmp, path)


def _write_catalogs(files: SurveyFiles, stars: pd.DataFrame, seed: int) -> None:
    f = lambda c: stars[c].to_numpy(dtype=np.float64)  # noqa: E731
    ids = stars["apogee_id"].to_numpy(dtype=str)
    photometry = {}
    names = {"J": "J", "H": "H", "K": "K", "G": "GAIA_G", "BP": "GAIA_BP", "RP": "GAIA_RP",
             "g": "PS1_G", "r": "PS1_R", "W1": "W1", "W2": "W2", "W3": "W3"}
    for band in BANDS:
        photometry[names[band]] = (f(band), "mag", f"apparent {band} (NaN: not measured)")
        photometry[f"{names[band]}_ERR"] = (f(f"{band}_err"), "mag", f"error of {band}")
    allstar = _table({
        "APOGEE_ID": (ids, None, "2MASS-style identifier"),
        "TELESCOPE": (stars["telescope"].to_numpy(dtype=str), None, "telescope"),
        "FIELD": (stars["field"].to_numpy(dtype=str), None, "APOGEE field"),
        "RA": (f("ra"), "deg", "right ascension (J2000)"),
        "DEC": (f("dec"), "deg", "declination (J2000)"),
        "SNR": (f("snr"), None, "median S/N per pixel of the combined spectrum"),
        "NVISITS": (stars["nvisits"].to_numpy(dtype=np.int32), None, "number of visits"),
        **photometry,
        "GAIA_PARALLAX": (f("parallax"), "mas", "Gaia DR2 parallax (NaN: none)"),
        "GAIA_PARALLAX_ERROR": (f("parallax_error"), "mas", "parallax error"),
        "GAIA_RADIUS": (f("gaia_radius"), "solRad", "Gaia DR2 FLAME radius (NaN: not reported)"),
        "GAIA_LUM": (f("gaia_lum"), "solLum", "Gaia DR2 FLAME luminosity (NaN: not reported)"),
    })
    allstar.meta["SYNTH"] = (f"apogeenet synthetic survey, seed {seed}")
    _write_table(allstar, files.allstar)

    payne = stars[stars["population"].isin(["giant", "dwarf", "field"])]
    rng = np.random.default_rng([seed, 2])
    scale = 1 + 30 / payne["snr"].to_numpy()
    errors = {"TEFF": 50 * scale, "LOGG": 0.08 * scale, "FE_H": 0.04 * scale}
    values = {"TEFF": payne["teff"].to_numpy() + rng.normal(0, 1, len(payne)) * errors["TEFF"],
              "LOGG": payne["logg"].to_numpy() + rng.normal(0, 1, len(payne)) * errors["LOGG"],
              "FE_H": payne["fe_h"].to_numpy() + rng.normal(0, 1, len(payne)) * errors["FE_H"]}
    # The Payne's unphysical log g-[Fe/H] correlation for cool dwarfs (paper §2.2)
    cool = (payne["teff"].to_numpy() < 4000) & (payne["logg"].to_numpy() > 3.5)
    shift = rng.normal(-0.3, 0.3, len(payne))
    values["FE_H"] = np.where(cool, values["FE_H"] + shift, values["FE_H"])
    values["LOGG"] = np.where(cool, values["LOGG"] + 1.2 * shift, values["LOGG"])
    units = {"TEFF": "K", "LOGG": None, "FE_H": None}  # dex: FITS has no such unit
    payne_columns = {"APOGEE_ID": (payne["apogee_id"].to_numpy(dtype=str), None, "identifier")}
    for name in LABEL_COLUMNS:
        payne_columns[name] = (values[name], units[name], f"Payne {name}" + ("" if units[name] else " (dex)"))
        payne_columns[f"{name}_ERR"] = (errors[name], units[name], f"error of {name}")
    _write_table(_table(payne_columns), files.payne)

    members = stars[stars["population"] == "yso"]
    _write_table(_table({
        "APOGEE_ID": (members["apogee_id"].to_numpy(dtype=str), None, "identifier"),
        "REGION": (members["region"].to_numpy(dtype=str), None, "star-forming region"),
        "RA": (members["ra"].to_numpy(), "deg", "right ascension"),
        "DEC": (members["dec"].to_numpy(), "deg", "declination"),
    }), files.members)

    _write_table(_table({
        "APOGEE_ID": (ids, None, "identifier"),
        "POPULATION": (stars["population"].to_numpy(dtype=str), None, "giant/dwarf/mdwarf/yso/field"),
        "REGION": (stars["region"].to_numpy(dtype=str), None, "region of YSO members"),
        "TEFF": (f("teff"), "K", "true effective temperature"),
        "LOGG": (f("logg"), None, "true surface gravity, log10(g / cm s-2)"),
        "FE_H": (f("fe_h"), None, "true [Fe/H] (dex)"),
        "ALPHA_FE": (f("alpha_fe"), None, "true [alpha/Fe] (dex)"),
        "MASS": (f("mass"), "solMass", "mass"),
        "RADIUS": (f("radius"), "solRad", "radius"),
        "AGE": (f("age_myr"), "Myr", "isochrone age (NaN: drawn from labels)"),
        "DISTANCE": (f("distance_pc"), "pc", "distance"),
        "AV": (f("av"), "mag", "V-band extinction"),
    }), files.truth)
