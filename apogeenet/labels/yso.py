"""YSO labels from photometry with a network trained on isochrones (Olney et al. 2020, §2.4).

Training stars are drawn from isochrones: mass U(0.08, 3) M☉ clipped to the grid's mass range
(0.09–2.4 M☉ for the shipped PARSEC grid), age U(1, 100) Myr, A_V U(0, 20), distance
U(50, 1000) pc, [Fe/H] = 0. Inputs (12): apparent G, BP, RP, J, H, K, W1, W2, W3, each replaced
by its limiting magnitude when fainter (G 19, BP 20.5, RP 17.5, J 17, H 16, K 16, W1 16, W2 16,
W3 13.5; G is required); the stellar radius and log L only where Gaia DR2 reported them
(R > 0.5 R☉, log L > −1.54, M_G < 10), else their limits 0.5 and −1.54; and the distance.
Outputs (5): log age, log mass, A_V, log Teff and log g. The network has three convolutional
layers with max pooling and two fully connected layers; inputs and outputs are standardised
with the training set's mean and σ, which travel with the weights. The network and its training
are in :mod:`apogeenet.labels.yso_net`: the same weights on every CPU.

Photometric noise (:class:`PhotometricNoise`). The paper applied no scatter to the synthetic
training photometry. A network trained on exact photometry leans on colour differences of a few
hundredths of a magnitude, the size of real catalogue errors, and mislabels members whose
photometry carries such errors (README, "Labels"). So by default the training photometry gets the
catalogue's own errors: for each band the median quoted error at that magnitude in the allStar
table, and a fractional scatter on Gaia radius, luminosity and distance. ``noise="none"`` keeps
the paper's noise-free training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from apogeenet.errors import InputError
from apogeenet.isochrones import Isochrones
from apogeenet.labels.yso_net import YSONet, train_network
from apogeenet.photometry import extinction
from apogeenet.portable import FEATURE_BITS, TABLE_BITS, exact_mean_std, quantise, quantise_frame

__all__ = ["CATALOG_COLUMNS", "FEATURES", "LIMITS", "TARGETS", "PhotometricNoise", "YSOModel",
           "features_from_catalog", "synthetic_photometry", "train_yso_net"]

LIMITS = {"G": 19.0, "BP": 20.5, "RP": 17.5, "J": 17.0, "H": 16.0, "K": 16.0, "W1": 16.0,
          "W2": 16.0, "W3": 13.5}
RADIUS_LIMIT, LOGL_LIMIT, MG_LIMIT = 0.5, -1.54, 10.0
FEATURES = (*LIMITS, "radius", "logL", "distance")
TARGETS = ("log_age", "log_mass", "av", "log_teff", "logg")
ARITHMETIC = "float64, fixed-point products"  # how a saved network was trained (yso_net.py)
#: allStar-like column of each band.
CATALOG_COLUMNS = {"G": "GAIA_G", "BP": "GAIA_BP", "RP": "GAIA_RP", "J": "J", "H": "H", "K": "K",
                   "W1": "W1", "W2": "W2", "W3": "W3"}


@dataclass(frozen=True)
class PhotometricNoise:
    """Catalogue-like errors for the synthetic training photometry: per band, the typical quoted
    error as a function of magnitude (``curves[band] = (magnitudes, errors)``, interpolated and
    held constant beyond the ends), and fractional scatters of the Gaia radius and luminosity and
    of the distance."""

    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    radius_lum: float = 0.05
    distance: float = 0.05

    @classmethod
    def from_catalog(cls, catalog: pd.DataFrame, *, radius_lum: float = 0.05, distance: float = 0.05,
                     bin_mag: float = 0.5) -> PhotometricNoise:
        """Curves from a catalogue's own ``<column>`` and ``<column>_ERR`` pairs: the median error
        in bins of ``bin_mag`` magnitudes. Raises ValueError naming bands without usable errors."""
        frame = catalog.rename(columns=str.upper)
        curves, missing = {}, []
        for band, column in CATALOG_COLUMNS.items():
            if column not in frame or f"{column}_ERR" not in frame:
                missing.append(f"{column}_ERR")
                continue
            mag, err = frame[column].to_numpy(float), frame[f"{column}_ERR"].to_numpy(float)
            ok = np.isfinite(mag) & np.isfinite(err) & (err > 0)
            if ok.sum() < 2:
                missing.append(f"{column}_ERR")
                continue
            bins = np.floor(mag[ok] / bin_mag).astype(int)
            per_bin = pd.DataFrame({"bin": bins, "mag": mag[ok], "err": err[ok]}).groupby("bin").median()
            curves[band] = (per_bin["mag"].to_numpy(), per_bin["err"].to_numpy())
        if missing:
            raise InputError(f"catalog lacks photometric errors for the YSO network's noise: {', '.join(missing)} "
                             "(set yso.noise: none to train without noise, as the paper did)")
        return cls(curves, radius_lum, distance)

    def sigma(self, band: str, mags: np.ndarray) -> np.ndarray:
        magnitudes, errors = self.curves[band]
        return np.interp(mags, magnitudes, errors)

    def apply(self, rng: np.random.Generator, mags: dict[str, np.ndarray], radius: np.ndarray,
              log_l: np.ndarray, distance: np.ndarray):
        """Noisy copies of the magnitudes, radius, log L and distance."""
        n = len(radius)
        noisy = {band: values + rng.standard_normal(n) * self.sigma(band, values) for band, values in mags.items()}
        return (noisy, radius * rng.lognormal(0, self.radius_lum, n),
                log_l + rng.normal(0, self.radius_lum, n) / np.log(10), distance * rng.lognormal(0, self.distance, n))


def _features(mags: dict[str, np.ndarray], radius: np.ndarray, log_l: np.ndarray,
              distance: np.ndarray) -> np.ndarray:
    """Apply the limits of §2.4 and stack the 12 inputs, (n, 12)."""
    columns = []
    for band, limit in LIMITS.items():
        values = np.asarray(mags[band], float)
        columns.append(np.where(np.isfinite(values) & (values < limit), values, limit))
    mu = 5 * np.log10(np.asarray(distance, float) / 10)
    m_g = np.asarray(mags["G"], float) - mu
    reported = (np.isfinite(radius) & (radius > RADIUS_LIMIT) & np.isfinite(log_l)
                & (log_l > LOGL_LIMIT) & (m_g < MG_LIMIT))
    columns.append(np.where(reported, radius, RADIUS_LIMIT))
    columns.append(np.where(reported, log_l, LOGL_LIMIT))
    columns.append(np.asarray(distance, float))
    return np.column_stack(columns)


def synthetic_photometry(isochrones: Isochrones, n: int, seed: int,
                         noise: PhotometricNoise | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Features (n, 12) and the true targets of ``n`` isochrone stars detected in G (see the
    module docstring), with ``noise`` added to the observables when given; stars fainter than
    G = 19 are drawn again."""
    rng = np.random.default_rng(seed)
    xs, ys, kept = [], [], 0
    while kept < n:
        x, y = _draw(isochrones, rng, 2 * (n - kept) + 100, noise)
        xs.append(x)
        ys.append(y)
        kept += len(x)
    return np.vstack(xs)[:n], pd.concat(ys, ignore_index=True).iloc[:n]


def _draw(isochrones: Isochrones, rng: np.random.Generator, n: int,
          noise: PhotometricNoise | None) -> tuple[np.ndarray, pd.DataFrame]:
    lo, hi = isochrones.mass_range()
    mass = np.clip(rng.uniform(0.08, 3.0, n), lo, hi)
    age = rng.uniform(1.0, 100.0, n)
    av = rng.uniform(0.0, 20.0, n)
    distance = rng.uniform(50.0, 1000.0, n)
    stars = isochrones.interpolate(age, mass)
    mu = 5 * np.log10(distance / 10)
    ext = extinction(av)
    mags = {band: stars[band].to_numpy() + mu + ext[band] for band in LIMITS}
    observed = (mags, stars["radius"].to_numpy(), stars["logL"].to_numpy(), distance)
    if noise is not None:
        observed = noise.apply(rng, *observed)
    mags = observed[0]
    x = _features(*observed)
    targets = pd.DataFrame({"log_age": np.log10(age), "log_mass": np.log10(mass), "av": av,
                            "log_teff": np.log10(stars["Teff"].to_numpy()),
                            "logg": stars["logg"].to_numpy()})
    keep = mags["G"] < LIMITS["G"]  # G is required
    return x[keep], targets[keep].reset_index(drop=True)


def features_from_catalog(catalog: pd.DataFrame, distance_pc: np.ndarray) -> np.ndarray:
    """The 12 inputs for real (or synthetic-survey) stars from allStar-like columns
    GAIA_G, GAIA_BP, GAIA_RP, J, H, K, W1, W2, W3, GAIA_RADIUS and GAIA_LUM (NaN: not reported)."""
    frame = catalog.rename(columns=str.upper)
    missing = [c for c in [*CATALOG_COLUMNS.values(), "GAIA_RADIUS", "GAIA_LUM"] if c not in frame.columns]
    if missing:
        raise InputError(f"catalog lacks column(s) {', '.join(missing)} for the YSO network")
    mags = {band: frame[col].to_numpy(float) for band, col in CATALOG_COLUMNS.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        log_l = np.log10(frame["GAIA_LUM"].to_numpy(float))
    return _features(mags, frame["GAIA_RADIUS"].to_numpy(float), log_l, distance_pc)


@dataclass
class YSOModel:
    """The network with the standardisation it was trained with; predictions in physical units.
    Inputs are quantised to :data:`~apogeenet.portable.FEATURE_BITS` and predictions to
    :data:`~apogeenet.portable.TABLE_BITS`, so the labels are the same bytes on every CPU."""

    net: YSONet
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray

    def predict(self, x: np.ndarray) -> pd.DataFrame:
        """Age [Myr], mass [M☉], A_V, Teff [K], log g and the log targets, one row per star."""
        z = (quantise(x, FEATURE_BITS) - self.x_mean) / self.x_std
        y = self.net.forward(z)[0] * self.y_std + self.y_mean
        out = pd.DataFrame(y, columns=list(TARGETS))
        out["age"], out["mass"], out["teff"] = 10 ** out["log_age"], 10 ** out["log_mass"], 10 ** out["log_teff"]
        return quantise_frame(out, TABLE_BITS)

    def state(self) -> dict:
        """Plain tensors and names (loads with ``torch.load(weights_only=True)``)."""
        return {"weights": {k: torch.from_numpy(v) for k, v in self.net.params.items()},
                **{k: torch.from_numpy(getattr(self, k)) for k in ("x_mean", "x_std", "y_mean", "y_std")},
                "features": list(FEATURES), "targets": list(TARGETS), "arithmetic": ARITHMETIC}

    @classmethod
    def from_state(cls, state: dict) -> YSOModel:
        if state.get("arithmetic") != ARITHMETIC:
            raise InputError("saved YSO network was trained by an earlier version (float32 torch): run "
                             "`apogeenet label` again")
        if tuple(state["features"]) != FEATURES or tuple(state["targets"]) != TARGETS:
            raise InputError("saved YSO network has different inputs or outputs than this version")
        net = YSONet({k: np.asarray(v, np.float64) for k, v in state["weights"].items()})
        return cls(net, *(np.asarray(state[k], np.float64) for k in ("x_mean", "x_std", "y_mean", "y_std")))


def train_yso_net(x: np.ndarray, y: pd.DataFrame, *, epochs: int, batch_size: int,
                  learning_rate: float, seed: int, dev_fraction: float = 0.1,
                  on_epoch=None) -> tuple[YSOModel, list[dict]]:
    """Adam with a one-cycle learning-rate schedule (peak ``learning_rate``) on the MSE of
    standardised targets; keeps the weights of the best dev epoch. Inputs and targets are
    quantised first and the arithmetic is CPU-independent (:mod:`apogeenet.labels.yso_net`), so
    the same inputs and seed give the same weights on every machine.

    ``on_epoch(epoch, train_loss, dev_loss)`` is called after every epoch (for logging).
    Returns the model and the per-epoch history.
    """
    rng = np.random.default_rng(seed)
    x = quantise(x, FEATURE_BITS)
    y_arr = quantise(y[list(TARGETS)].to_numpy(float), FEATURE_BITS)
    n_dev = int(len(x) * dev_fraction)
    order = rng.permutation(len(x))
    dev, train = order[:n_dev], order[n_dev:]
    x_mean, x_std = exact_mean_std(x[train])
    y_mean, y_std = exact_mean_std(y_arr[train])
    x_std, y_std = x_std + 1e-9, y_std + 1e-9
    net, history = train_network((x - x_mean) / x_std, (y_arr - y_mean) / y_std, train, dev, epochs=epochs,
                                 batch_size=batch_size, learning_rate=learning_rate, rng=rng, on_epoch=on_epoch)
    return YSOModel(net, x_mean, x_std, y_mean, y_std), history
