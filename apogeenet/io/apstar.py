"""Reading and writing apStar files (Olney et al. 2020, §2.1).

An apStar file holds one star's spectra, Doppler-shifted to rest and resampled onto the common
log-linear wavelength grid (CRVAL1 = 4.179, CDELT1 = 6e-6 in log10 Å, 8575 pixels):

* HDU0: header only (APOGEE ID, telescope, field, NVISITS, SNR, coordinates, grid keywords);
* HDU1/HDU2/HDU3: flux, error (1e-17 erg/s/cm²/Å) and the pixel bitmask;
* HDU4–HDU7: sky, sky error, telluric, telluric error; HDU8: LSF coefficients; HDU9: RV table.

With NVISITS > 1 the image HDUs are (NVISITS + 2, 8575) and row 0 is the combined spectrum
(row 1 the globally weighted combination, rows 2… the visits); with NVISITS = 1 they are 1-D.
Bad pixels carry flux 0 and error 1e10.

Every array leaves this module in native byte order (astropy returns big-endian FITS data), so
``torch.from_numpy`` accepts it.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from apogeenet.config import IngestParams
from apogeenet.errors import UserFacingError

__all__ = [
    "APSTAR_CDELT1",
    "APSTAR_CRVAL1",
    "APSTAR_NPIX",
    "BAD_PIXEL_ERROR",
    "ApStar",
    "ApStarError",
    "good_pixels",
    "content_hash",
    "read_apstar",
    "read_apstar_bytes",
    "twomass_id",
    "wavelength_grid",
    "write_apstar",
]

APSTAR_NPIX = 8575
APSTAR_CRVAL1 = 4.179
APSTAR_CDELT1 = 6e-6
#: Error value that the APOGEE pipeline writes on pixels with no data.
BAD_PIXEL_ERROR = 1e10

_FLUX_UNIT = "Flux (10^-17 erg/s/cm^2/Ang)"
_ERROR_UNIT = "Error (10^-17 erg/s/cm^2/Ang)"


class ApStarError(UserFacingError):
    """An apStar file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True, eq=False)
class ApStar:
    """One apStar file: its header facts and its flux, error and mask arrays.

    Arrays are (NVISITS + 2, NWAVE) when NVISITS > 1 and (NWAVE,) when NVISITS = 1; flux and
    error are float32 in 1e-17 erg/s/cm²/Å, mask is an integer bitmask, all native-endian.
    """

    apogee_id: str
    telescope: str
    field: str
    location_id: int
    nvisits: int
    snr: float
    ra: float
    dec: float
    flux: np.ndarray
    error: np.ndarray
    mask: np.ndarray
    crval1: float = APSTAR_CRVAL1
    cdelt1: float = APSTAR_CDELT1
    header: fits.Header = field(default_factory=fits.Header, repr=False)
    path: str = ""

    @property
    def n_pixels(self) -> int:
        return int(self.flux.shape[-1])

    @property
    def combined_flux(self) -> np.ndarray:
        """Row 0 (the pixel-weighted combination) or the only row, shape (NWAVE,)."""
        return self.flux if self.flux.ndim == 1 else self.flux[0]

    @property
    def combined_error(self) -> np.ndarray:
        return self.error if self.error.ndim == 1 else self.error[0]

    @property
    def combined_mask(self) -> np.ndarray:
        return self.mask if self.mask.ndim == 1 else self.mask[0]

    @property
    def n_good_pixels(self) -> int:
        return int(good_pixels(self.combined_flux, self.combined_error).sum())

    @property
    def wavelength(self) -> np.ndarray:
        """Vacuum rest wavelength of each pixel in Å."""
        return wavelength_grid(self.crval1, self.cdelt1, self.n_pixels)

    def facts(self) -> dict[str, object]:
        """The header facts that ``apogeenet inspect`` prints."""
        return {
            "APOGEE_ID": self.apogee_id,
            "TELESCOPE": self.telescope,
            "FIELD": self.field,
            "NVISITS": self.nvisits,
            "SNR": self.snr,
            "RA": self.ra,
            "DEC": self.dec,
            "n_pixels": self.n_pixels,
            "n_good_pixels": self.n_good_pixels,
        }


def wavelength_grid(crval1: float = APSTAR_CRVAL1, cdelt1: float = APSTAR_CDELT1,
                    nwave: int = APSTAR_NPIX) -> np.ndarray:
    """Log-linear apStar grid: λ_i = 10**(CRVAL1 + i·CDELT1) Å, i = 0 … NWAVE−1."""
    return 10.0 ** (crval1 + cdelt1 * np.arange(nwave))


def twomass_id(ra: float, dec: float) -> str:
    """2MASS-style APOGEE ID ``2MHHMMSSss±DDMMSSs`` from J2000 degrees (digits truncated, as 2MASS does)."""
    centisec = int(np.floor((ra % 360.0) / 15.0 * 360000.0 + 1e-6))
    hh, rest = divmod(centisec, 360000)
    mm, cs = divmod(rest, 6000)
    decisec = int(np.floor(abs(dec) * 36000.0 + 1e-6))
    dd, rest = divmod(decisec, 36000)
    dm, ds = divmod(rest, 600)
    sign = "-" if dec < 0 else "+"
    return f"2M{hh:02d}{mm:02d}{cs:04d}{sign}{dd:02d}{dm:02d}{ds:03d}"


def good_pixels(flux: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Pixels with data: finite non-zero flux and a finite error in (0, 1e10)."""
    return (np.isfinite(flux) & (flux != 0) & np.isfinite(error)
            & (error > 0) & (error < BAD_PIXEL_ERROR))


DEFAULT_MAX_BYTES = int(IngestParams().max_file_mb * 2**20)


def read_bounded(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file (links followed) of at most ``max_bytes``, and its stat. A FIFO,
    a device (a link to /dev/zero), a directory or a larger file raises :class:`ApStarError`
    before anything is read, so nothing waits forever or fills the memory."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without waiting for a writer
    except OSError as exc:
        raise ApStarError(path, f"cannot read: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ApStarError(path, "not a regular file (a FIFO, device, socket or directory)")
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > max_bytes:
            raise ApStarError(path, f"{info.st_size / 2**20:.0f} MB, larger than the {max_bytes / 2**20:.0f} MB "
                                    "an apStar file may have (ingest.max_file_mb)")
        try:
            raw = fh.read(max_bytes + 1)
        except OSError as exc:
            raise ApStarError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ApStarError(path, f"grew past {max_bytes / 2**20:.0f} MB while being read")
    return raw, info


def read_apstar(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> ApStar:
    """Read an apStar file (a regular file of at most ``max_bytes``: :func:`read_bounded`).

    Raises
    ------
    ApStarError
        Not a regular file or too large, not FITS or truncated, a missing HDU, the wrong pixel
        count or grid, all flux zero or non-finite, or no positive error anywhere.
    """
    return read_apstar_bytes(read_bounded(path, max_bytes)[0], path)


def content_hash(raw: bytes) -> str:
    """SHA-256 of a file's bytes, the identity the spectra store keys files on."""
    return hashlib.sha256(raw).hexdigest()


def read_apstar_bytes(raw: bytes, path: str | os.PathLike = "<bytes>") -> ApStar:
    """Parse an apStar file already in memory (see :func:`read_apstar`)."""
    if len(raw) < 2880 or not raw.startswith(b"SIMPLE  ="):
        raise ApStarError(path, "not a FITS file")
    with warnings.catch_warnings(record=True) as caught:
        # astropy only warns about a truncated file; that warning becomes our error.
        warnings.simplefilter("always")
        try:
            with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False) as hdul:
                truncated = [w for w in caught if "truncated" in str(w.message)]
                if truncated:
                    raise ApStarError(path, f"truncated ({truncated[0].message})")
                return _parse(hdul, path)
        except ApStarError:
            raise
        except Exception as exc:  # noqa: BLE001 - astropy raises VerifyError, ValueError, ... on damage
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise ApStarError(path, f"not a readable FITS file ({type(exc).__name__}: {first})") from None


def _parse(hdul: fits.HDUList, path: str | os.PathLike) -> ApStar:
    if len(hdul) < 4:
        raise ApStarError(path, f"missing HDU: {len(hdul)} HDUs, need flux, error and mask in 1-3")
    hdr = hdul[0].header
    nwave = int(hdr.get("NWAVE", APSTAR_NPIX))
    crval1 = float(hdr.get("CRVAL1", np.nan))
    cdelt1 = float(hdr.get("CDELT1", np.nan))
    if nwave != APSTAR_NPIX:
        raise ApStarError(path, f"wrong pixel count: NWAVE = {nwave}, expected {APSTAR_NPIX}")
    for ext in range(4):  # the data HDUs' own grid cards, where present, must say the same
        _check_grid(hdul[ext].header, path, ext, primary=ext == 0)
    nvisits = int(hdr.get("NVISITS", 1))
    shape = (nwave,) if nvisits == 1 else (nvisits + 2, nwave)
    arrays = []
    for ext, name in ((1, "flux"), (2, "error"), (3, "mask")):
        data = hdul[ext].data
        if data is None:
            raise ApStarError(path, f"missing HDU: HDU{ext} ({name}) has no data")
        if data.shape[-1] != APSTAR_NPIX:
            raise ApStarError(path, f"wrong pixel count: HDU{ext} ({name}) has "
                                    f"{data.shape[-1]} pixels, expected {APSTAR_NPIX}")
        if data.shape != shape:
            raise ApStarError(path, f"HDU{ext} ({name}) has shape {data.shape}, "
                                    f"expected {shape} for NVISITS = {nvisits}")
        native = np.float32 if name != "mask" else data.dtype.newbyteorder("=")
        arrays.append(np.ascontiguousarray(data, dtype=native))
    flux, error, mask = arrays
    combined_flux = flux if flux.ndim == 1 else flux[0]
    combined_error = error if error.ndim == 1 else error[0]
    if not np.any(np.isfinite(combined_flux) & (combined_flux != 0)):
        raise ApStarError(path, "no data: the combined flux is all zero or non-finite")
    if not np.any(np.isfinite(combined_error) & (combined_error > 0)):
        raise ApStarError(path, "no positive error anywhere in the combined spectrum")
    return ApStar(
        apogee_id=str(hdr.get("APOGEE_ID", hdr.get("OBJID", ""))).strip(),
        telescope=str(hdr.get("TELESCOP", "")).strip(),
        field=str(hdr.get("FIELD", "")).strip(),
        location_id=int(hdr.get("LOCID", 0) or 0),
        nvisits=nvisits,
        snr=float(hdr.get("SNR", np.nan)),
        ra=float(hdr.get("RA", np.nan)),
        dec=float(hdr.get("DEC", np.nan)),
        flux=flux, error=error, mask=mask,
        crval1=crval1, cdelt1=cdelt1,
        header=hdr.copy(),
        path=str(path),
    )


def _check_grid(header: fits.Header, path: str | os.PathLike, ext: int, *, primary: bool) -> None:
    """The apStar grid: log-linear from pixel 1 at CRVAL1 = 4.179 in steps CDELT1 = 6e-6 (in
    HDU0 required; in HDU1-3 checked where given)."""
    crval1, cdelt1 = header.get("CRVAL1"), header.get("CDELT1")
    if primary or crval1 is not None or cdelt1 is not None:
        try:
            crval1, cdelt1 = float(crval1 if crval1 is not None else np.nan), float(cdelt1 if cdelt1 is not None else np.nan)
        except (TypeError, ValueError):
            crval1 = cdelt1 = np.nan
        if not (np.isclose(crval1, APSTAR_CRVAL1, rtol=0, atol=1e-9)
                and np.isclose(cdelt1, APSTAR_CDELT1, rtol=1e-6, atol=0)):
            raise ApStarError(path, f"wrong wavelength grid in HDU{ext}: CRVAL1 = {crval1}, CDELT1 = {cdelt1}, "
                                    f"expected {APSTAR_CRVAL1} and {APSTAR_CDELT1}")
    crpix1, ctype1, dc_flag = header.get("CRPIX1"), header.get("CTYPE1"), header.get("DC-FLAG")
    if crpix1 is not None and crpix1 != 1:
        raise ApStarError(path, f"wrong wavelength grid in HDU{ext}: CRPIX1 = {crpix1}, expected 1")
    if ctype1 is not None and str(ctype1).strip().upper() != "LOG-LINEAR":
        raise ApStarError(path, f"wrong wavelength grid in HDU{ext}: CTYPE1 = {ctype1!r}, expected 'LOG-LINEAR'")
    if dc_flag is not None and dc_flag != 1:
        raise ApStarError(path, f"wrong wavelength grid in HDU{ext}: DC-FLAG = {dc_flag}, expected 1 (log-linear)")


def write_apstar(star: ApStar, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``star`` in the apStar layout: HDU0 header, HDU1–3 flux/error/mask, HDU4–7
    sky/sky error/telluric/telluric error, HDU8 LSF coefficients.

    The primary header is ``star.header`` with the header facts and grid keywords set from the
    record, so a file read with :func:`read_apstar` and written again keeps every keyword. HDU4–8
    are written as neutral placeholders (no sky, telluric 1, LSF 0) and the RV/CCF table (HDU9)
    is not written; APOGEE Net uses HDU1–3 only. Nothing time-dependent is written, so the same
    record gives byte-identical files. The file is written to a temporary name and renamed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    nwave = star.flux.shape[-1]
    if not (star.flux.shape == star.error.shape == star.mask.shape):
        raise ValueError(f"flux, error and mask shapes differ: {star.flux.shape}, "
                         f"{star.error.shape}, {star.mask.shape}")
    expected = (nwave,) if star.nvisits == 1 else (star.nvisits + 2, nwave)
    if star.flux.shape != expected:
        raise ValueError(f"arrays of shape {star.flux.shape} do not fit NVISITS = {star.nvisits}")
    hdr = star.header.copy()
    for key in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND"):
        hdr.remove(key, ignore_missing=True)
    facts = {
        "OBJID": (star.apogee_id, "Object ID"),
        "TELESCOP": (star.telescope, "Telescope"),
        "LOCID": (star.location_id, "LocationID"),
        "FIELD": (star.field, "Field name"),
        "RA": (star.ra, "right ascension, deg, J2000"),
        "DEC": (star.dec, "declination, deg, J2000"),
        "NVISITS": (star.nvisits, "number of visit spectra combined"),
        "SNR": (star.snr, "final median Signal/Noise ratio"),
    }
    for key, value in {**facts, **_grid_cards(star.crval1, star.cdelt1, nwave, primary=True)}.items():
        hdr[key] = value
    primary = fits.PrimaryHDU(header=hdr)
    images = [
        (star.flux.astype(np.float32), _FLUX_UNIT),
        (star.error.astype(np.float32), _ERROR_UNIT),
        (star.mask, "Flag Mask (bitwise)"),
        (np.zeros_like(star.flux, dtype=np.float32), "Sky (10^-17 erg/s/cm^2/Ang)"),
        (np.zeros_like(star.flux, dtype=np.float32), "Sky Error (10^-17 erg/s/cm^2/Ang)"),
        (np.ones_like(star.flux, dtype=np.float32), "Telluric"),
        (np.zeros_like(star.flux, dtype=np.float32), "Telluric Error"),
    ]
    hdus: list[fits.hdu.base.ExtensionHDU] = []
    for data, unit in images:
        image = fits.ImageHDU(data=data)
        for key, value in _grid_cards(star.crval1, star.cdelt1, nwave, primary=False).items():
            image.header[key] = value
        image.header["BUNIT"] = unit
        hdus.append(image)
    lsf = fits.ImageHDU(data=np.zeros(26, dtype=np.float64))
    lsf.header["COMMENT"] = "LSF coefficients (placeholder written by apogeenet)"
    hdus.append(lsf)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fits.HDUList([primary, *hdus]).writeto(tmp, overwrite=True)
    os.replace(tmp, path)
    return path


def _grid_cards(crval1: float, cdelt1: float, nwave: int, *, primary: bool) -> dict:
    cards = {
        "CRVAL1": (crval1, "Start log10(wavelength)"),
        "CDELT1": (cdelt1, "Dispersion in log10(wavelength)"),
        "CRPIX1": (1, "Pixel of starting wavelength"),
        "CTYPE1": ("LOG-LINEAR", "Logarithmic wavelength scale"),
        "DC-FLAG": (1, "Logarithmic wavelength scale"),
    }
    return {"NWAVE": (nwave, "Number of wavelengths in subsequent HDUs"), **cards} if primary else cards
