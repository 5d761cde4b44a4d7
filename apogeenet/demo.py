"""The embedded demo tree: real-format apStar files made from the two bundled real spectra.

Each demo star takes one of the bundled DR13 spectra (``apogeenet/data/examples``, see its
PROVENANCE.md), rescales it, and re-draws its noise at a new S/N for 1–3 visits, so the files
have exactly the real layout, bad pixels and masks. This is a stand-in for the physical
synthetic survey (issue "The synthetic APOGEE survey"), which will replace it as the default.
Every file depends only on (seed, its number), so a tree is byte-for-byte reproducible and
growing it never changes the files already made.
"""

from __future__ import annotations

import os
from functools import cache
from importlib.resources import files
from pathlib import Path

import numpy as np
from astropy.io import fits

from apogeenet.io.apstar import ApStar, good_pixels, read_apstar, twomass_id, write_apstar

__all__ = ["example_files", "make_demo_star", "make_demo_tree"]

_FIELDS = ("120-45", "180-45", "IC348", "N1333", "221+84", "090-45")


def example_files() -> list[Path]:
    """The real apStar files shipped with the package (one single-visit, one multi-visit)."""
    root = files("apogeenet") / "data" / "examples"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".fits"))


@cache
def _templates() -> tuple[ApStar, ...]:
    return tuple(read_apstar(p) for p in example_files())


def make_demo_star(seed: int, number: int) -> ApStar:
    """Demo star ``number`` of the tree made with ``seed``."""
    rng = np.random.default_rng([seed, number])
    template = _templates()[number % len(_templates())]
    flux_t, err_t = template.combined_flux, template.combined_error
    good = good_pixels(flux_t, err_t)
    snr_template = float(np.median(flux_t[good] / err_t[good]))
    snr = float(np.clip(rng.lognormal(np.log(60), 0.7), 5, 400))
    scale = 10 ** rng.uniform(-0.5, 0.5)
    nvisits = int(rng.integers(1, 4))
    truth = np.where(good, flux_t * scale, 0).astype(np.float64)
    sigma = np.where(good, err_t * scale * snr_template / snr, 0)
    visits = truth + rng.normal(size=(nvisits, truth.size)) * sigma * np.sqrt(nvisits)
    combined = np.where(good, visits.mean(axis=0), 0)
    error = np.where(good, sigma, 1e10)
    mask = template.combined_mask
    if nvisits == 1:
        flux, err, msk = combined, error, mask
    else:
        visit_err = np.where(good, sigma * np.sqrt(nvisits), 1e10)
        flux = np.vstack([combined, combined, np.where(good, visits, 0)])
        err = np.vstack([error, error, np.broadcast_to(visit_err, visits.shape)])
        msk = np.broadcast_to(mask, flux.shape)
    ra = float(rng.uniform(0, 360))
    dec = float(np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-30)), 1))))
    header = fits.Header()
    header["COMMENT"] = f"apogeenet demo star {number} (seed {seed}) from {template.apogee_id}"
    return ApStar(apogee_id=twomass_id(ra, dec), telescope="apo25m",
                  field=_FIELDS[int(rng.integers(len(_FIELDS)))], location_id=0,
                  nvisits=nvisits, snr=round(float(np.median(combined[good] / error[good])), 3),
                  ra=round(ra, 6), dec=round(dec, 6), flux=flux.astype(np.float32),
                  error=err.astype(np.float32), mask=np.ascontiguousarray(msk), header=header)


def make_demo_tree(out_dir: str | os.PathLike, n_files: int, seed: int) -> list[Path]:
    """Write ``n_files`` demo apStar files under ``out_dir/{TELESCOPE}/{FIELD}/``.

    Files already present are left alone (they are identical by construction).
    """
    out_dir = Path(out_dir)
    paths = []
    for number in range(n_files):
        star = make_demo_star(seed, number)
        path = out_dir / star.telescope / star.field / f"apStar-demo-{star.apogee_id}.fits"
        if not path.exists():
            write_apstar(star, path)
        paths.append(path)
    return paths
