"""The baselines a scientist tries before a 4.7-million-parameter network: ridge regression and
The Cannon (Ness et al. 2015; Ho et al. 2017), on pseudo-continuum-normalised spectra, trained
on the same train split and judged on the same test split as APOGEE Net.

Pseudo-continuum (Ho et al. 2017, §2.3): each spectrum divided by a Gaussian-weighted running
mean of its good pixels (weights 1/σ², kernel width ``length`` Å), so that the continuum shape,
set by temperature, distance and extinction, is removed and the lines remain; bad pixels become
1 with inverse variance 0.

* Ridge: standardised labels (eq. 4) regressed on the normalised flux; the penalty ``alpha`` is
  chosen per label by the dev split's MSE from a grid.
* The Cannon: a quadratic model of every pixel in the three labels with a per-pixel scatter
  (the ``thecannon`` package), labels inferred by least squares.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import fftconvolve

from apogeenet.config import Baseline, BaselinesParams
from apogeenet.io.apstar import good_pixels
from apogeenet.labels.catalog import LABEL_COLUMNS, Normalisation

__all__ = ["BaselineFit", "baseline_frames", "fit_cannon", "fit_ridge", "normalised_spectra",
           "pseudo_continuum_normalise"]


def pseudo_continuum_normalise(flux: np.ndarray, error: np.ndarray, wavelength: np.ndarray,
                               length: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """(normalised flux, inverse variance), both (n, npix) float32; bad pixels 1 and 0."""
    flux, error = np.atleast_2d(flux), np.atleast_2d(error)
    good = good_pixels(flux, error)
    weight = np.where(good, 1.0 / np.where(good, error, 1.0) ** 2, 0.0)
    sigma_pixels = length / float(np.median(np.diff(wavelength)))
    offsets = np.arange(-int(4 * sigma_pixels), int(4 * sigma_pixels) + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_pixels) ** 2)[None, :]
    smooth = lambda a: fftconvolve(a, kernel, mode="same", axes=1)  # noqa: E731  (zeros beyond the ends)
    numerator, denominator = smooth(weight * np.where(good, flux, 0.0)), smooth(weight)
    denominator[denominator < 1e-12 * denominator.max(initial=0)] = 0  # FFT round-off where no pixel is near
    continuum = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    usable = good & (continuum > 0)
    normalised = np.where(usable, flux / np.where(usable, continuum, 1.0), 1.0)
    ivar = np.where(usable, weight * continuum**2, 0.0)
    return normalised.astype(np.float32), ivar.astype(np.float32)


@dataclass
class BaselineFit:
    """A fitted baseline: ``predict(normalised flux, ivar)`` gives physical labels (n, 3) in
    the order of :data:`~apogeenet.labels.catalog.LABEL_COLUMNS`."""

    name: str
    predict: object
    params: dict


def fit_ridge(x_train: np.ndarray, z_train: np.ndarray, x_dev: np.ndarray, z_dev: np.ndarray,
              table1: Normalisation, alphas: tuple[float, ...]) -> BaselineFit:
    """Ridge regression of the standardised labels ``z`` (eq. 4) on normalised flux ``x``, the
    penalty per label by the dev MSE; predictions are physical labels."""
    from sklearn.linear_model import Ridge

    dev_mse = np.array([np.mean((Ridge(alpha=a).fit(x_train, z_train).predict(x_dev) - z_dev) ** 2, axis=0)
                        for a in alphas])  # (n_alphas, 3)
    best = np.asarray(alphas)[np.argmin(dev_mse, axis=0)]
    model = Ridge(alpha=best).fit(x_train, z_train)
    return BaselineFit("ridge", lambda x, ivar: model.predict(x) * table1.std + table1.mean,
                       {f"alpha.{c.lower()}": float(a) for c, a in zip(LABEL_COLUMNS, best)}
                       | {"dev_mse": float(dev_mse.min(axis=0).mean())})


def fit_cannon(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, labels: np.ndarray) -> BaselineFit:
    """The Cannon, quadratic in (Teff, log g, [Fe/H]) (physical units), trained on these
    normalised spectra; predictions are physical labels."""
    import matplotlib

    with matplotlib.rc_context(), contextlib.redirect_stdout(io.StringIO()):  # it sets usetex and prints
        from TheCannon import dataset, model

        def data(train_flux, train_ivar, test_flux, test_ivar):
            ds = dataset.Dataset(wavelength, np.arange(len(train_flux)).astype(str), train_flux, train_ivar,
                                 labels, np.arange(len(test_flux)).astype(str), test_flux, test_ivar)
            ds.set_label_names(list(LABEL_COLUMNS))
            return ds

        cannon = model.CannonModel(2, useErrors=False)
        cannon.train(data(flux.astype(np.float64), ivar.astype(np.float64), flux[:1], ivar[:1]))

    def predict(x: np.ndarray, x_ivar: np.ndarray) -> np.ndarray:
        with matplotlib.rc_context(), contextlib.redirect_stdout(io.StringIO()):
            ds = data(flux[:1], ivar[:1], x.astype(np.float64), x_ivar.astype(np.float64))
            cannon.infer_labels(ds)
        return np.asarray(ds.test_label_vals, np.float64)

    return BaselineFit("cannon", predict, {"order": 2, "n_train": len(flux)})


def normalised_spectra(data, length: float, progress: bool = False, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pseudo_continuum_normalise` of every star of ``data`` (a
    :class:`~apogeenet.dataset.LabelledSpectra`), read ``block`` spectra at a time."""
    from apogeenet.progress import progress_bar

    shape = (len(data), data.store.wavelength.size)
    x, ivar = np.empty(shape, np.float32), np.empty(shape, np.float32)
    with progress_bar(len(data), "pseudo-continuum", enabled=progress) as bar:
        for start in range(0, len(data), block):
            positions = np.arange(start, min(start + block, len(data)))
            spectra = data.store.read(data.rows[positions])
            x[positions], ivar[positions] = pseudo_continuum_normalise(spectra.flux, spectra.error,
                                                                       data.store.wavelength, length)
            bar.advance(len(positions))
    return x, ivar


def baseline_frames(data, cfg: BaselinesParams, progress: bool = False) -> Iterator[tuple[str, pd.DataFrame, dict]]:
    """Fit each baseline of ``cfg.models`` on the train split of ``data`` (a
    :class:`~apogeenet.dataset.LabelledSpectra`) and predict every star: (name, the catalog with
    PRED_TEFF, PRED_LOGG, PRED_FE_H, the fit's parameters) for one model after the other, each
    fitted when it is asked for."""
    x, ivar = normalised_spectra(data, cfg.continuum_length, progress)
    train, dev = data.select(split="train"), data.select(split="dev")
    labels = data.catalog[list(LABEL_COLUMNS)].to_numpy(np.float64)
    for name in cfg.models:
        if name is Baseline.RIDGE:
            fit = fit_ridge(x[train], data.targets[train], x[dev], data.targets[dev], data.table1, cfg.ridge_alphas)
        else:
            fit = fit_cannon(data.store.wavelength, x[train], ivar[train], labels[train])
        pred = pd.DataFrame(fit.predict(x, ivar), columns=[f"PRED_{c}" for c in LABEL_COLUMNS])
        yield str(name), pd.concat([data.catalog.reset_index(drop=True), pred], axis=1), fit.params
