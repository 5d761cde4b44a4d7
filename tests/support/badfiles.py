"""Bad apStar files of every kind the reader must name (tests only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

BAD_KINDS = {
    "not_fits": "not a FITS file",
    "truncated": "truncated",
    "missing_hdu": "missing HDU",
    "wrong_pixels": "wrong pixel count",
    "wrong_grid": "wrong wavelength grid",
    "crpix_shift": "CRPIX1 = 101",
    "linear_grid": "CTYPE1 = 'LINEAR'",
    "dc_flag": "DC-FLAG = 0",
    "hdu1_grid": "wrong wavelength grid in HDU1",
    "zero_flux": "all zero or non-finite",
    "nan_flux": "all zero or non-finite",
    "no_error": "no positive error",
}


def make_bad(kind: str, good: Path, dest: Path) -> Path:
    """Write a copy of ``good`` broken in the way ``kind`` names."""
    raw = good.read_bytes()
    if kind == "not_fits":
        dest.write_text("this is a README, not a spectrum\n" * 200)
        return dest
    if kind == "truncated":
        dest.write_bytes(raw[: len(raw) * 3 // 5])
        return dest
    with fits.open(good) as hdul:
        hdus = fits.HDUList([h.copy() for h in hdul])
    if kind == "missing_hdu":
        hdus = fits.HDUList(hdus[:2])
    elif kind == "wrong_pixels":
        for h in hdus[1:4]:
            h.data = h.data[..., :8000]
        hdus[0].header["NWAVE"] = 8000
    elif kind == "wrong_grid":
        hdus[0].header["CRVAL1"] = 4.2
    elif kind == "crpix_shift":
        hdus[0].header["CRPIX1"] = 101
    elif kind == "linear_grid":
        hdus[0].header["CTYPE1"] = "LINEAR"
    elif kind == "dc_flag":
        hdus[0].header["DC-FLAG"] = 0
    elif kind == "hdu1_grid":
        hdus[1].header["CRVAL1"] = 4.2
    elif kind == "zero_flux":
        hdus[1].data = np.zeros_like(hdus[1].data)
    elif kind == "nan_flux":
        hdus[1].data = np.full_like(hdus[1].data, np.nan)
    elif kind == "no_error":
        hdus[2].data = np.zeros_like(hdus[2].data)
    else:
        raise ValueError(kind)
    hdus.writeto(dest)
    return dest
