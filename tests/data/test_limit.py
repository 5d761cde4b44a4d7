"""The physical limit (apogeenet.synth.limit): the Cramér–Rao bound is the scatter that a
maximum-likelihood fit of the survey's own forward model reaches on noisy copies of a spectrum."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import least_squares

from apogeenet.synth.limit import PARAMETERS, STEPS, bounds, fisher_matrices
from apogeenet.synth.survey import SpectrumSynthesizer

GIANT = {"teff": 4750.0, "logg": 2.6, "fe_h": -0.2, "alpha_fe": 0.05, "radius": 10.0, "distance_pc": 2000.0,
         "av": 0.3}


def _star(theta: np.ndarray) -> pd.DataFrame:
    """The giant with θ (PARAMETERS order) set."""
    values = dict(zip(("teff", "logg", "fe_h", "alpha_fe"), theta[:4]))
    radius = GIANT["radius"] * np.exp((theta[4] - np.log(GIANT["radius"] ** 2)) / 2)
    return pd.DataFrame([{**GIANT, **values, "radius": radius, "av": theta[5]}])


def test_the_bound_is_the_scatter_of_a_maximum_likelihood_fit():
    synth = SpectrumSynthesizer(seed=0)
    truth = np.array([GIANT["teff"], GIANT["logg"], GIANT["fe_h"], GIANT["alpha_fe"], np.log(GIANT["radius"] ** 2),
                      GIANT["av"]])
    mean = synth.expected_flux(_star(truth))[0]
    sigma = np.full(mean.shape, np.median(mean) / 30)  # S/N 30: far from the bound's linear regime it would fail
    sigma[:400] = np.inf  # pixels without data carry nothing
    marginal, known = bounds(fisher_matrices(pd.DataFrame([GIANT]), sigma[None]))
    assert np.all(known[0] < marginal[0])  # marginalising the nuisance parameters costs information
    rng = np.random.default_rng(3)
    weight = np.where(np.isfinite(sigma), 1 / np.where(np.isfinite(sigma), sigma, 1), 0)
    scale = np.array([STEPS[name] for name in PARAMETERS]) * 100
    fits = []
    for _ in range(60):
        observed = mean + rng.standard_normal(mean.shape) * np.where(np.isfinite(sigma), sigma, 0)
        fit = least_squares(lambda t: (synth.expected_flux(_star(t))[0] - observed) * weight, truth, x_scale=scale,
                            diff_step=1e-7)
        fits.append(fit.x[:3])
    scatter = np.std(fits, axis=0, ddof=1)
    # 60 fits: the sample σ is known to ≈ 9 %; 0.7–1.3 is over three of those
    np.testing.assert_array_less(0.7 * marginal[0], scatter)
    np.testing.assert_array_less(scatter, 1.3 * marginal[0])


def test_the_bound_scales_with_the_noise_and_needs_pixels():
    sigma = np.full((1, 7214), 5.0)
    one, _ = bounds(fisher_matrices(pd.DataFrame([GIANT]), sigma))
    double, _ = bounds(fisher_matrices(pd.DataFrame([GIANT]), 2 * sigma))
    np.testing.assert_allclose(double, 2 * one, rtol=1e-9)
    half = sigma.copy()
    half[:, ::2] = np.inf
    fewer, _ = bounds(fisher_matrices(pd.DataFrame([GIANT]), half))
    assert np.all(fewer > one)
