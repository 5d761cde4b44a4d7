"""The physical limit of the synthetic survey: the Cramér–Rao bound on Teff, log g and [Fe/H]
that a star's own spectrum allows (bench/limit.py reports it beside every model's error).

The survey's forward model gives the expected flux on the emulator's pixels, μ(θ) = F_λ(Teff,
log g, [Fe/H], [α/Fe]) · (R/d)² · 10^(−0.4 A_V k(λ))
(:meth:`apogeenet.synth.survey.SpectrumSynthesizer.expected_flux`); with the pixel errors σ_i of the
star's file the Fisher information is F = Σ_i J_i J_iᵀ / σ_i², J = ∂μ/∂θ at the true θ, over
θ = (Teff, log g, [Fe/H], [α/Fe], ln (R/d)², A_V): the three labels and every other quantity the
survey draws for a star (it draws no radial velocity, veiling or continuum error: its spectra are
on the rest frame and exactly the model's shape). The bound on label k is √((F⁻¹)_kk), the
nuisance parameters marginalised: no unbiased estimator from that spectrum does better.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["PARAMETERS", "STEPS", "bounds", "fisher_matrices"]

PARAMETERS = ("teff", "logg", "fe_h", "alpha_fe", "ln_dilution", "av")
"""θ: the three labels, then the nuisance parameters the survey draws for every star."""
STEPS = {"teff": 1.0, "logg": 1e-3, "fe_h": 1e-3, "alpha_fe": 1e-3, "ln_dilution": 1e-3, "av": 1e-3}
"""Central-difference steps (K, dex, dex, dex, ln, mag): far below any bound, far above rounding."""


def _shifted(stars: pd.DataFrame, name: str, step: float) -> pd.DataFrame:
    """``stars`` with θ ``name`` moved by ``step`` (ln (R/d)² through the radius)."""
    moved = stars.copy()
    if name == "ln_dilution":
        moved["radius"] = moved["radius"] * np.exp(step / 2)
    else:
        moved[name] = moved[name] + step
    return moved


def fisher_matrices(stars: pd.DataFrame, sigma: np.ndarray) -> np.ndarray:
    """F (n, 6, 6) over :data:`PARAMETERS` of each star (the survey's columns teff, logg, fe_h,
    alpha_fe, radius, distance_pc, av) from its pixel σ on the emulator's pixels (n, 7214; inf
    where a pixel carries nothing): J by central differences of the survey's own forward model
    (:meth:`apogeenet.synth.survey.SpectrumSynthesizer.expected_flux`)."""
    from apogeenet.synth.survey import SpectrumSynthesizer

    synth = SpectrumSynthesizer(seed=0)
    jacobian = np.stack([(synth.expected_flux(_shifted(stars, name, STEPS[name]))
                          - synth.expected_flux(_shifted(stars, name, -STEPS[name]))) / (2 * STEPS[name])
                         for name in PARAMETERS], axis=1)
    weighted = jacobian / sigma[:, None, :]
    return np.einsum("nap,nbp->nab", weighted, weighted)


def bounds(fisher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the bound on the three labels with the nuisance marginalised, with it known), each (n, 3)."""
    marginal = np.sqrt(np.diagonal(np.linalg.inv(fisher), axis1=1, axis2=2)[:, :3])
    known = np.sqrt(np.diagonal(np.linalg.inv(fisher[:, :3, :3]), axis1=1, axis2=2))
    return marginal, known
