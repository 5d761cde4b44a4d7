"""Are the synthetic labels learnable from the spectra? A plain ridge-regression probe.

A linear model on the log of median-normalised flux, fitted on one part of a survey and scored on
the rest, must beat predicting the training mean by a wide margin for every label, also in the
cool-star extension (M dwarfs, YSOs) — the precondition for APOGEE Net to learn anything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["LABELS", "ridge_learnability"]

LABELS = ("teff", "logg", "fe_h")


def _features(flux: np.ndarray) -> np.ndarray:
    """log of flux over its median, per spectrum (removes distance and extinction scale)."""
    flux = np.clip(flux, 1e-6 * np.median(flux, axis=1, keepdims=True), None)
    return np.log(flux / np.median(flux, axis=1, keepdims=True))


def ridge_learnability(flux: np.ndarray, stars: pd.DataFrame, *, train_fraction: float = 0.75,
                       alpha: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Held-out RMS of a ridge model and of the training mean, per label and population.

    Parameters
    ----------
    flux : (n, n_pixels) observed spectra (only pixels with data).
    stars : table with the true ``teff``, ``logg``, ``fe_h`` and ``population`` of each row.

    Returns
    -------
    DataFrame indexed by (population, label) with ``rms_ridge``, ``rms_mean`` and their
    ratio ``gain`` (> 1 is better than the mean); population ``all`` pools the test set.
    """
    rng = np.random.default_rng(seed)
    n = len(stars)
    test = np.zeros(n, bool)
    test[rng.permutation(n)[: int(round(n * (1 - train_fraction)))]] = True
    x = _features(flux)
    mu, sd = x[~test].mean(0), x[~test].std(0) + 1e-9
    x = (x - mu) / sd
    y = stars[list(LABELS)].to_numpy(float)
    y_mean, y_sd = y[~test].mean(0), y[~test].std(0)
    yz = (y - y_mean) / y_sd
    xt = x[~test]
    # dual form: (X Xᵀ + αI)⁻¹ — cheaper than the primal with 7000+ pixels and a few thousand stars
    gram = xt @ xt.T + alpha * xt.shape[1] / 100 * np.eye(xt.shape[0])
    coef = xt.T @ np.linalg.solve(gram, yz[~test])
    pred = (x[test] @ coef) * y_sd + y_mean
    truth = y[test]
    pops = stars["population"].to_numpy()[test]
    rows = []
    for pop in ["all", *sorted(set(pops))]:
        pick = np.ones(len(pops), bool) if pop == "all" else pops == pop
        for k, label in enumerate(LABELS):
            rms_ridge = float(np.sqrt(np.mean((pred[pick, k] - truth[pick, k]) ** 2)))
            rms_mean = float(np.sqrt(np.mean((y_mean[k] - truth[pick, k]) ** 2)))
            rows.append({"population": pop, "label": label, "n_test": int(pick.sum()),
                         "rms_ridge": rms_ridge, "rms_mean": rms_mean, "gain": rms_mean / rms_ridge})
    return pd.DataFrame(rows).set_index(["population", "label"])
