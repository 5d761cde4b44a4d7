"""Input and output: apStar files (§2.1) and the SDSS Science Archive Server."""

from apogeenet.io.apstar import (
    APSTAR_CDELT1,
    APSTAR_CRVAL1,
    APSTAR_NPIX,
    BAD_PIXEL_ERROR,
    ApStar,
    ApStarError,
    content_hash,
    good_pixels,
    read_apstar,
    read_apstar_bytes,
    twomass_id,
    wavelength_grid,
    write_apstar,
)

__all__ = [
    "APSTAR_CDELT1",
    "APSTAR_CRVAL1",
    "APSTAR_NPIX",
    "BAD_PIXEL_ERROR",
    "ApStar",
    "ApStarError",
    "content_hash",
    "good_pixels",
    "read_apstar",
    "read_apstar_bytes",
    "twomass_id",
    "wavelength_grid",
    "write_apstar",
]
