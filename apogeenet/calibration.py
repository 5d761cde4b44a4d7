"""Calibrated uncertainties: the paper's σ (§3.5) and a model of the error it misses.

The Monte-Carlo σ of §3.5 propagates only the pixel noise; the network's own error (finite
training set, label noise it learned, regions of parameter space it covers thinly) is not in it,
so on a test split the σ is too small (the paper saw a factor ≈ 4; astra ships
σ = 1.25 σ_raw + 10 K; README, "Calibrated uncertainties", has this project's figures). The
model of the missing error, per parameter and per region of the prediction:

    σ_cal² = max(a² σ² + b², σ_pixel² + σ_model² / K)

σ is the method's σ (an ensemble's: with the members' spread σ_model), σ_pixel the method's
pixel-noise σ alone, K the members. The floor (:func:`sigma_floor`) is what the model's own parts
guarantee: the members share the pixels, so their mean keeps the whole pixel noise, and it errs
by at least the standard error of a mean of K members. No model of the other errors makes a
star's error smaller, so a calibrated σ is never below the paper's own σ nor blind to members
that disagree, whatever a the dev split's bright, in-domain stars allow (a faint or
out-of-domain file predicted later keeps its noise and its disagreement).

a and b are fitted on the dev split only: their ratio by a Gaussian likelihood of the residuals
(prediction − reference) with an iterative ``clip``·σ_cal clip and the variance of the clipped
Gaussian restored, the level so that the median |z| is 0.6745 as for N(0, 1). The residuals are
heavier-tailed than a Gaussian (the network's error is not only noise), so a likelihood alone,
even clipped, sets σ by the shoulders and leaves the core of z too narrow; the median sets it by
the core, which is what "68 % within 1σ" asks (README, "Calibrated uncertainties"). The
reference is the survey's truth when it has one (the synthetic survey) or else the labels (then
σ_cal is the error against the label scale, label noise included).

Regions: a star with a label source (PAYNE, MSTAR, YSO: the procedure of §2.2–2.4 its labels
come from, decided by its photometry, membership and Payne parameters, not by the label values)
takes the fit of its source, since the sources' errors differ (a YSO predicted on the main
sequence errs like a YSO, not like an M dwarf of the §2.3 box). A star without one (unlabelled,
or a file predicted outside the project) takes the fit of the region of its prediction:
``payne`` (Teff > 4 000 K or log g < 3.5, the §2.2 Payne regime), ``young`` (otherwise inside
the §4.1 (Teff, log g) triangle of young stars) and ``cool_dwarf`` (the rest: the §2.3 low-mass
main sequence). A source or region with fewer than ``min_stars`` dev stars takes the fit of all
dev stars. One calibration per uncertainty method (Monte Carlo, delta method), stored in
``model.pt`` and so in the registry with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq, minimize
from scipy.stats import norm

from apogeenet.kiel import in_yso_polygon
from apogeenet.labels.catalog import LABEL_COLUMNS, SOURCES

__all__ = ["PARAMETERS", "REGIONS", "SigmaCalibration", "TooFewStars", "calibrated_sigma", "fit_calibration",
           "fit_missing_error", "prediction_regions", "region_index", "sigma_floor"]

PARAMETERS = LABEL_COLUMNS
REGIONS = ("payne", "young", "cool_dwarf")
ALL = "all"


class TooFewStars(ValueError):
    """The dev split has fewer usable stars than ``calibration.min_stars``."""


def prediction_regions(prediction: np.ndarray) -> np.ndarray:
    """The calibration region of each prediction (n, 3: TEFF, LOGG, FE_H)."""
    teff, logg = prediction[:, 0], prediction[:, 1]
    payne = (teff > 4000.0) | (logg < 3.5)
    young = ~payne & in_yso_polygon(teff, logg)
    return np.where(payne, "payne", np.where(young, "young", "cool_dwarf"))


def region_index(prediction: np.ndarray) -> np.ndarray:
    """Position in :data:`REGIONS` of each prediction's region (…, 3: TEFF, LOGG, FE_H)."""
    prediction = np.asarray(prediction, float)
    names = prediction_regions(prediction.reshape(-1, len(PARAMETERS)))
    index = np.zeros(len(names), int)
    for r, region in enumerate(REGIONS):
        index[names == region] = r
    return index.reshape(prediction.shape[:-1])


def _label_sources(sources, n: int) -> np.ndarray:
    """Each star's label source (PAYNE, MSTAR, YSO), "" where it has none (``sources`` None: no star)."""
    given = np.asarray(sources if sources is not None else [""] * n, object)
    return np.where(np.isin(given, SOURCES), given, "")


def sigma_floor(sigma: np.ndarray, model_sigma: np.ndarray | None = None, members: int = 1) -> np.ndarray:
    """√(σ² + σ_model² / K): the pixel-noise σ of a mean of K members and the standard error of that
    mean from their spread (None or NaN spread: one network, σ alone)."""
    spread = np.zeros_like(sigma) if model_sigma is None else np.where(np.isfinite(model_sigma), model_sigma, 0.0)
    return np.sqrt(np.square(sigma) + np.square(spread) / members)


def calibrated_sigma(sigma: np.ndarray, a: float, b: float, floor: np.ndarray | None = None) -> np.ndarray:
    """σ_cal = √(a² σ² + b²), never below ``floor`` (:func:`sigma_floor`; None: no floor)."""
    out = np.sqrt(a ** 2 * np.square(sigma) + b ** 2)
    return out if floor is None else np.fmax(out, floor)


def fit_missing_error(residual: np.ndarray, sigma: np.ndarray, *, floor: np.ndarray | None = None,
                      clip: float = 2.5, iterations: int = 30) -> tuple[float, float]:
    """(a, b) of σ_cal = max(√(a² σ² + b²), floor) (:func:`calibrated_sigma`): the ratio of a to b by
    maximum likelihood of the residuals inside ±clip σ_cal, their level such that the median
    |residual| / σ_cal is 0.6745, as for N(0, 1) (where the floor alone already exceeds that, a = b = 0)."""
    residual, sigma = np.asarray(residual, float), np.asarray(sigma, float)
    restore = 1.0 - 2.0 * clip * norm.pdf(clip) / (2.0 * norm.cdf(clip) - 1.0)  # variance of N(0,1) in ±clip
    scale = float(np.median(np.abs(residual))) or 1.0
    r, s = residual / scale, sigma / scale  # fit in units of the typical residual
    f = None if floor is None else np.asarray(floor, float) / scale
    keep = np.ones(len(r), bool)
    x = np.array([0.0, 0.0])
    for _ in range(iterations):
        def negative_log_likelihood(x, r=r[keep], s=s[keep], f=None if f is None else f[keep]):
            variance = calibrated_sigma(s, *np.exp(x), f) ** 2 * restore
            return 0.5 * np.sum(np.log(variance) + r ** 2 / variance)

        x = minimize(negative_log_likelihood, x, method="Nelder-Mead",
                     options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 4000}).x
        inside = np.abs(r) < clip * calibrated_sigma(s, *np.exp(x), f)
        if np.array_equal(inside, keep) or inside.sum() < 3:
            break
        keep = inside
    a, b = np.exp(x)
    level = _level(np.abs(r), np.sqrt(a ** 2 * s ** 2 + b ** 2), f)
    return float(a * level), float(b * level * scale)


def _level(r: np.ndarray, shape: np.ndarray, floor: np.ndarray | None) -> float:
    """The factor L with median(r / max(L · shape, floor)) = 0.6745 (0 where the floor alone gives
    less; non-increasing in L, so bisection on log L)."""
    target = norm.ppf(0.75)
    unfloored = float(np.median(r / shape)) / target
    if floor is None or unfloored <= 0:  # no floor, or residuals mostly zero: nothing to solve
        return unfloored

    def excess(log_level: float) -> float:
        return float(np.median(r / np.fmax(np.exp(log_level) * shape, floor))) - target

    high = np.log(unfloored)
    low = high - 30.0  # the floor binds for every star down there
    if excess(high) >= 0:  # the floor does not move the median
        return unfloored
    if excess(low) <= 0:
        return 0.0
    return float(np.exp(brentq(excess, low, high, xtol=1e-12)))


@dataclass
class SigmaCalibration:
    """(a, b, n dev stars) per region and parameter, for σ of one ``method`` against ``reference``."""

    method: str
    reference: str
    terms: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def apply(self, prediction: np.ndarray, sigma: np.ndarray, sources=None,
              floor: np.ndarray | None = None) -> np.ndarray:
        """Calibrated σ (n, 3) for predictions and σ (each (n, 3); an ensemble's: the total of
        pixel noise and spread) of stars with label ``sources`` (PAYNE, MSTAR, YSO; anything else
        or None: none), never below ``floor`` (n, 3: :func:`sigma_floor`); NaN σ stays NaN. A star
        without a source, or whose source has no fit of its own, takes its prediction region's
        fit, then the fit of all dev stars."""
        by_source, by_prediction = _label_sources(sources, len(prediction)), prediction_regions(prediction)
        fitted = np.where(np.isin(by_source, list(self.terms)), by_source,
                          np.where(np.isin(by_prediction, list(self.terms)), by_prediction, ALL))
        out = np.full(sigma.shape, np.nan)
        for region in np.unique(fitted):
            rows = fitted == region
            for k, name in enumerate(PARAMETERS):
                a, b, _ = self.terms[str(region)][name]
                out[rows, k] = calibrated_sigma(sigma[rows, k], a, b, None if floor is None else floor[rows, k])
        return out

    def to_dict(self) -> dict:
        return {"method": self.method, "reference": self.reference, "terms": self.terms}

    @classmethod
    def from_dict(cls, saved: dict) -> SigmaCalibration:
        return cls(str(saved["method"]), str(saved["reference"]),
                   {str(r): {str(p): [float(v) for v in t] for p, t in terms.items()}
                    for r, terms in saved["terms"].items()})


def fit_calibration(prediction: np.ndarray, sigma: np.ndarray, reference: np.ndarray, *, method: str,
                    reference_name: str, sources=None, floor: np.ndarray | None = None, clip: float = 2.5,
                    min_stars: int = 20) -> SigmaCalibration:
    """The missing-error model from dev-split predictions, their σ and reference values (each
    (n, 3)), their ``floor`` (n, 3, :func:`sigma_floor`; None: none) and the stars' label ``sources``: one fit
    per source and per prediction region with at least ``min_stars`` usable stars, and one of all (``all``)."""
    by_source = _label_sources(sources, len(prediction))
    by_prediction = prediction_regions(prediction)
    calibration = SigmaCalibration(method, reference_name)
    for region, rows in [(ALL, np.ones(len(prediction), bool))] + [(r, by_prediction == r) for r in REGIONS] + [
            (s, by_source == s) for s in SOURCES]:
        terms = {}
        for k, name in enumerate(PARAMETERS):
            ok = rows & np.isfinite(reference[:, k]) & np.isfinite(sigma[:, k]) & (sigma[:, k] > 0)
            if ok.sum() < min_stars:
                break
            a, b = fit_missing_error(prediction[ok, k] - reference[ok, k], sigma[ok, k], clip=clip,
                                     floor=None if floor is None else floor[ok, k])
            terms[name] = [a, b, float(ok.sum())]
        else:
            calibration.terms[region] = terms
    if ALL not in calibration.terms:
        raise TooFewStars(f"too few dev stars with finite σ and reference values to calibrate ({min_stars} needed)")
    return calibration
