"""Monte-Carlo uncertainties (Olney et al. 2020, §3.5).

For each spectrum, ``n_draws`` noisy copies are made, flux + N(0, 1) · σ_pixel, and passed
through the network; the standard deviation of the predictions (physical units) is the
uncertainty. σ_pixel is the apStar error capped at ``cap`` (5) times the spectrum's mean error,
where the mean is taken over good pixels only (finite flux, 0 < error < 1e10): bad pixels carry
the 1e10 sentinel and would otherwise swamp it. Bad pixels stay 0 in every draw, as in training.

Real apStar files also carry inflated errors without the sentinel (near chip gaps and telluric
lines), which pull the mean far above the typical error so that a cap at 5 × the mean hardly
caps. The option ``reference="median"`` caps at 5 × the median good-pixel error instead (README,
"Inference, uncertainties and the catalog", has the figures on the real files).

All draws of a block of spectra are made together (one array of up to ``max_batch`` inputs) and
go through the network together (:meth:`ApogeeNet.forward_chunked`): the convolutions in chunks
of ``forward_batch`` — on a CPU a small chunk keeps the first layers' activations (8 × 8575
floats each) in cache (bench/infer.py measures it) — and the fully connected head once over the
block. The noise of a spectrum comes
from a generator seeded by (seed, key), with ``key`` the spectrum's stable identifier (its row in
the store), so the numbers do not depend on batch size or order: same seed, same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import hashlib

import numpy as np
import pandas as pd
import torch

from apogeenet.config import ErrorReference, PredictParams
from apogeenet.io.apstar import good_pixels
from apogeenet.model import prepare_flux, scale_flux
from apogeenet.serving import Predictor

__all__ = ["MCResult", "calibration", "mean_good_error", "mc_predict", "median_good_error",
           "perturbation_sigma", "predict_store", "seed_keys"]


def mean_good_error(flux: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Mean error over each spectrum's good pixels (NaN where a spectrum has none)."""
    good = good_pixels(flux, error)
    total = np.where(good, error, 0).sum(axis=-1, dtype=np.float64)
    count = good.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def median_good_error(flux: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Median error over each spectrum's good pixels (NaN where a spectrum has none)."""
    good = good_pixels(flux, error)
    return np.nanmedian(np.where(good, error, np.nan), axis=-1)


def perturbation_sigma(flux: np.ndarray, error: np.ndarray, cap: float = 5.0,
                       reference: ErrorReference = ErrorReference.MEAN) -> np.ndarray:
    """σ per pixel for the draws: the error capped at ``cap`` × the spectrum's ``reference``
    ("mean", the paper, or "median") good-pixel error; 0 on bad pixels (they stay 0)."""
    flux, error = np.atleast_2d(flux), np.atleast_2d(error)
    good = good_pixels(flux, error)
    typical = {ErrorReference.MEAN: mean_good_error,
               ErrorReference.MEDIAN: median_good_error}[ErrorReference(reference)](flux, error)
    limit = cap * typical[:, None]
    return np.where(good, np.minimum(error, limit), 0).astype(np.float32)


@dataclass
class MCResult:
    prediction: np.ndarray  # (n, 3) the network on the spectrum itself (TEFF, LOGG, FE_H)
    mean: np.ndarray        # (n, 3) mean over the draws
    sigma: np.ndarray       # (n, 3) standard deviation over the draws (ddof = 1)


def mc_predict(predictor: Predictor, flux: np.ndarray, error: np.ndarray, keys: np.ndarray, *,
               n_draws: int = 100, seed: int = 0, cap: float = 5.0,
               max_batch: int = 1600, forward_batch: int = 16,
               reference: ErrorReference = ErrorReference.MEAN) -> MCResult:
    """Single-pass predictions and ``n_draws`` Monte-Carlo draws per spectrum, in physical units.

    ``flux``/``error``: raw apStar arrays (n, 8575); ``keys``: one integer per spectrum that seeds
    its noise. Spectra are processed in blocks whose draws together make at most ``max_batch``
    network inputs, run ``forward_batch`` at a time.
    """
    flux, error = np.atleast_2d(flux), np.atleast_2d(error)
    prepared = prepare_flux(flux, error)
    sigma = perturbation_sigma(flux, error, cap, reference)
    model = predictor.model.eval()
    device = next(model.parameters()).device
    std, mu = np.asarray(predictor.table1.std), np.asarray(predictor.table1.mean)
    n = len(prepared)
    prediction = np.empty((n, 3))
    mean, spread = np.empty((n, 3)), np.empty((n, 3))
    per_block = max(1, max_batch // max(n_draws, 1))
    with torch.inference_mode():
        for start in range(0, n, per_block):
            block = slice(start, min(start + per_block, n))
            base, s = prepared[block], sigma[block]
            m, npix = base.shape
            inputs = np.empty((m * (n_draws + 1), npix), np.float32)  # the spectra, then their draws
            inputs[:m] = base
            noise = inputs[m:].reshape(m, n_draws, npix)
            for i, key in enumerate(keys[block]):  # drawn on the CPU: the same on every device
                np.random.default_rng([seed, int(key)]).standard_normal(out=noise[i], dtype=np.float32)
            x = torch.from_numpy(inputs).to(device)
            draws = x[m:].view(m, n_draws, npix)
            draws.mul_(torch.from_numpy(s).to(device)[:, None]).add_(x[:m, None])  # flux + N(0,1)·σ
            out = model.forward_chunked(scale_flux(x, predictor.flux_scale), forward_batch)
            out = out.double().cpu().numpy() * std + mu
            prediction[block] = out[:m]
            per_star = out[m:].reshape(m, n_draws, 3)
            mean[block] = per_star.mean(axis=1)
            spread[block] = per_star.std(axis=1, ddof=1) if n_draws > 1 else np.nan
    return MCResult(prediction, mean, spread)


def predict_store(predictor: Predictor, store, cfg: PredictParams, *, n_draws: int | None = None,
                  progress: bool = False) -> MCResult:
    """:func:`mc_predict` over every row of a :class:`apogeenet.store.SpectraStore`, read
    ``cfg.spectra_per_block`` spectra at a time; each star's noise seeded by its APOGEE_ID."""
    from apogeenet.progress import progress_bar

    n_draws = n_draws or cfg.draws
    keys = seed_keys(store.index["apogee_id"])
    n = len(store.index)
    prediction, mean, sigma = np.empty((n, 3)), np.empty((n, 3)), np.empty((n, 3))
    with progress_bar(n, f"predict ({n_draws} draws)", enabled=progress) as bar:
        for rows, batch in store.iter_batches(cfg.spectra_per_block):
            result = mc_predict(predictor, batch.flux, batch.error, keys[rows], n_draws=n_draws,
                                seed=cfg.seed, cap=cfg.error_cap, max_batch=cfg.max_batch,
                                forward_batch=cfg.forward_batch, reference=cfg.error_reference)
            prediction[rows], mean[rows], sigma[rows] = result.prediction, result.mean, result.sigma
            bar.advance(len(rows))
    return MCResult(prediction, mean, sigma)


def seed_keys(apogee_ids) -> np.ndarray:
    """A stable integer per star (from SHA-256 of its APOGEE_ID) to seed its draws."""
    return np.array([int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "little")
                     for i in apogee_ids], dtype=np.uint64)


def calibration(catalog: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """How honest the σ are, per parameter, on the rows of ``catalog`` (Table 4 columns).

    ``reference``: the values the predictions are judged against (truth or labels), indexed by
    APOGEE_ID with TEFF, LOGG, FE_H. Columns: Spearman ρ of σ against SNR (negative: σ grows as
    SNR falls) and its p-value; for z = (prediction − reference)/σ its standard deviation, robust
    σ (1.4826 MAD) and the fraction with |z| < 1 (0.68 if σ were right); the RMS error and the
    median σ.
    """
    from scipy.stats import spearmanr

    from apogeenet.evaluate import robust_sigma

    rows = []
    for name in ("TEFF", "LOGG", "FE_H"):
        sigma = catalog[f"{name}_ERR"].to_numpy(float)
        rho, p = spearmanr(sigma, catalog["SNR"].to_numpy(float), nan_policy="omit")
        ref = reference[name].reindex(catalog["APOGEE_ID"]).to_numpy(float)
        error = catalog[name].to_numpy(float) - ref
        ok = np.isfinite(error) & (sigma > 0)
        z = error[ok] / sigma[ok]
        row = {"parameter": name, "n": int(ok.sum()), "spearman_sigma_snr": float(rho), "spearman_p": float(p),
               "z_std": np.nan, "z_robust_sigma": np.nan, "frac_within_1sigma": np.nan, "rms_error": np.nan,
               "median_sigma": np.nan}
        if z.size:
            row.update(z_std=float(np.std(z)), z_robust_sigma=robust_sigma(z),
                       frac_within_1sigma=float(np.mean(np.abs(z) < 1)),
                       rms_error=float(np.sqrt(np.mean(error[ok] ** 2))), median_sigma=float(np.median(sigma[ok])))
        rows.append(row)
    return pd.DataFrame(rows).set_index("parameter")
