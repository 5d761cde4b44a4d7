"""Physical APOGEE spectra from the Payne emulator, with a documented extension to cool stars.

The emulator (El-Badry et al. 2018; Ting et al. 2019; weights in ``apogeenet/data/payne``) maps
labels x = [Teff, log g, [Fe/H], [α/Fe]] to Kurucz surface fluxes on 7214 pixels: with
s = (x − x_min)/(x_max − x_min) − 0.5, each pixel i has y_i = W1_i · σ(W0_i s + b0_i) + b1_i and
f_ν = y / 1e6 (erg/s/cm²/Hz/sr), so the surface flux density is F_λ = 4π f_ν c / λ².

Outside its range [3529, 0.34, −0.99, −0.56] … [6983, 5.22, 0.52, 0.91] the network must not be
trusted, but the M dwarfs and YSOs of the paper reach 2600 K and log g 5.3. The extension:

1. evaluate the emulator at the labels clamped into its range;
2. log g, [Fe/H] and [α/Fe] beyond the range: add the first-order Taylor term
   ∂F/∂x_k (x_k − clamp(x_k)), the derivative taken by central differences at the clamp point;
3. Teff below 3529 K (τ = (3529 − Teff)/1000 K): split F into a continuum C (a smooth upper
   envelope) and lines F/C; rescale the continuum by the Planck ratio B_λ(Teff)/B_λ(3529 K);
   deepen the lines as (F/C)^(1 + κτ), κ = 1.5 (molecular lines strengthen in cooler
   atmospheres); and multiply by an H₂O pseudo-continuum 1 − τ·a(λ) whose depth a(λ) grows
   toward both ends of the H band, where the 1.4 and 1.9 µm water bands reach in.

All three are smooth in every label and reduce to the emulator itself inside its range, so Teff,
log g and [Fe/H] stay learnable from the spectrum below 3529 K.
"""

from __future__ import annotations

from functools import cached_property
from importlib.resources import files
from typing import NamedTuple

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from apogeenet.io.apstar import APSTAR_CDELT1, APSTAR_CRVAL1

__all__ = ["EMULATOR_LABELS", "PayneEmulator", "planck_lambda"]

EMULATOR_LABELS = ("teff", "logg", "fe_h", "alpha_fe")
_C_CGS = 2.99792458e10  # cm/s
_H_CGS = 6.62607015e-27
_K_CGS = 1.380649e-16
_KAPPA = 1.5             # line deepening per 1000 K below the emulator's edge
_ENVELOPE_PX = 151       # width of the running maximum that traces the continuum


def planck_lambda(wavelength_aa: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """Planck B_λ (arbitrary units) for wavelengths in Å and temperatures in K, broadcast."""
    lam = np.asarray(wavelength_aa) * 1e-8
    return 1.0 / (lam**5 * np.expm1(_H_CGS * _C_CGS / (lam * _K_CGS * np.asarray(teff))))


class _Weights(NamedTuple):
    w0: np.ndarray  # (7214, 5, 4)
    b0: np.ndarray  # (7214, 5)
    w1: np.ndarray  # (7214, 5)
    b1: np.ndarray  # (7214,)
    x_min: np.ndarray
    x_max: np.ndarray


class PayneEmulator:
    """Surface flux densities F_λ (erg/s/cm²/Å) for arrays of stars, vectorised over stars."""

    def __init__(self) -> None:
        root = files("apogeenet") / "data" / "payne"
        with np.load(str(root / "NN_unnormalized_spectra.npz")) as d:
            self._w = _Weights(*(d[k].astype(np.float64) for k in
                                 ("w_array_0", "b_array_0", "w_array_1", "b_array_1", "x_min", "x_max")))
        with np.load(str(root / "apogee_wavelength.npz")) as d:
            self.wavelength = d["wavelength"].astype(np.float64)
        with np.load(str(root / "apogee_mask.npz")) as d:
            self.flagged = d["apogee_mask"].astype(bool)

    @property
    def x_min(self) -> np.ndarray:
        return self._w.x_min

    @property
    def x_max(self) -> np.ndarray:
        return self._w.x_max

    @cached_property
    def pixel_index(self) -> np.ndarray:
        """Position of each emulator pixel on the 8575-pixel apStar grid (322 … 8305)."""
        return np.round((np.log10(self.wavelength) - APSTAR_CRVAL1) / APSTAR_CDELT1).astype(np.int64)

    @cached_property
    def _water_depth(self) -> np.ndarray:
        lam = self.wavelength
        return 0.25 * np.exp(-(lam - lam[0]) / 250.0) + 0.35 * np.exp((lam - lam[-1]) / 350.0)

    def _network(self, labels: np.ndarray) -> np.ndarray:
        """The raw network, labels (n, 4) inside the range -> F_λ (n, 7214)."""
        w = self._w
        s = (labels - w.x_min) / (w.x_max - w.x_min) - 0.5
        n_pix, n_hidden, n_labels = w.w0.shape
        hidden = s @ w.w0.reshape(n_pix * n_hidden, n_labels).T + w.b0.reshape(-1)  # one matmul
        activation = 1.0 / (1.0 + np.exp(-hidden))
        y = (activation.reshape(-1, n_pix, n_hidden) * w.w1).sum(axis=-1) + w.b1
        f_nu = y / 1e6
        return 4.0 * np.pi * f_nu * _C_CGS / (self.wavelength * 1e-8) ** 2 * 1e-8

    def surface_flux(self, labels: np.ndarray) -> np.ndarray:
        """F_λ at the stellar surface, (n, 7214), for labels (n, 4) = Teff, log g, [Fe/H], [α/Fe].

        Inside the emulator's range this is the emulator; outside it, the extension described
        in the module docstring.
        """
        labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
        if labels.shape[1] != 4 or not np.all(np.isfinite(labels)):
            raise ValueError("labels must be finite with columns Teff, log g, [Fe/H], [alpha/Fe]")
        clamped = np.clip(labels, self.x_min, self.x_max)
        flux = self._network(clamped)
        excess = labels - clamped
        for k in (1, 2, 3):  # Taylor term for log g, [Fe/H], [α/Fe] beyond the range
            out = excess[:, k] != 0
            if out.any():
                step = np.zeros(4)
                step[k] = 0.02 * (self.x_max[k] - self.x_min[k])
                lo = np.clip(clamped[out] - step, self.x_min, self.x_max)
                hi = np.clip(clamped[out] + step, self.x_min, self.x_max)
                slope = (self._network(hi) - self._network(lo)) / (hi[:, k] - lo[:, k])[:, None]
                flux[out] += slope * excess[out, k][:, None]
        cool = excess[:, 0] < 0
        if cool.any():
            flux[cool] = self._cool(flux[cool], labels[cool, 0], clamped[cool, 0])
        return flux

    def continuum(self, flux: np.ndarray) -> np.ndarray:
        """Smooth upper envelope of spectra (n, 7214): running maximum, then running mean."""
        envelope = maximum_filter1d(flux, size=_ENVELOPE_PX, axis=-1, mode="nearest")
        return uniform_filter1d(envelope, size=_ENVELOPE_PX, axis=-1, mode="nearest")

    def _cool(self, flux: np.ndarray, teff: np.ndarray, edge: np.ndarray) -> np.ndarray:
        tau = ((edge - teff) / 1000.0)[:, None]
        cont = self.continuum(flux)
        lines = np.clip(flux / cont, 1e-3, 1.0)
        planck = planck_lambda(self.wavelength, teff[:, None]) / planck_lambda(self.wavelength, edge[:, None])
        water = np.clip(1.0 - tau * self._water_depth, 0.05, 1.0)
        return cont * planck * lines ** (1.0 + _KAPPA * tau) * water
