"""Monte-Carlo uncertainties (Olney et al. 2020, §3.5).

For each spectrum, ``predict.draws`` noisy copies are made, flux + N(0, 1) · σ_pixel, and passed
through the network; the standard deviation of the predictions (physical units) is the
uncertainty. σ_pixel is the apStar error capped at ``predict.error_cap`` times the spectrum's mean error,
where the mean is taken over good pixels only (finite flux, 0 < error < 1e10): bad pixels carry
the 1e10 sentinel and would otherwise swamp it. Bad pixels stay 0 in every draw, as in training.

Real apStar files also carry inflated errors without the sentinel (near chip gaps and telluric
lines), which pull the mean far above the typical error so that a cap at a multiple of the mean
hardly caps. ``error_reference: median`` caps at a multiple of the median good-pixel error instead (README,
"Inference, uncertainties and the catalog", has the figures on the real files).

The draws of a block of spectra go through the network together
(:meth:`ApogeeNet.forward_chunks`): the convolutions in chunks of ``predict.forward_batch`` (star,
draw) pairs on a CPU — a small chunk keeps its noise and the first layers' activations in the
cache (bench/infer.py measures it) — or of the whole block on a GPU, and the
fully connected head once over the block. Every draw is divided by its spectrum's flux unit
(:func:`apogeenet.model.flux_divisor`, the median good pixel for a per-spectrum unit): the unit
is the star's: the median of 8 575 noisy pixels hardly moves from draw to draw, and computing
it again per draw would cost time. The noise is made chunk by chunk on the network's
device by a counter-based generator (:mod:`apogeenet.noise`) keyed by (seed, key, draw, pixel),
``key`` the spectrum's stable identifier (a hash of its APOGEE_ID), so the numbers do not depend
on batch size, order or the number of workers: same seed, same numbers on one kind of device.

The fast alternative (``uncertainty: delta``, :func:`delta_predict`) propagates the same capped
pixel σ to first order, σ_k² = Σ_i (∂y_k/∂x_i)² σ_i², the gradient from one forward and three
backward passes at the spectrum, by default crossed with the gradient at one of its draws; the
paper's Monte Carlo stays the default and bench/infer.py reports how the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import hashlib

import numpy as np
import torch

from apogeenet.calibration import sigma_floor
from apogeenet.config import ErrorReference, PredictParams, Uncertainty
from apogeenet.errors import InputError
from apogeenet.io.apstar import good_pixels
from apogeenet.kernels import gradient_network, one_thread
from apogeenet.model import HIDDEN_SIZE, flux_divisor, prepare_flux
from apogeenet.noise import normal_noise, star_streams
from apogeenet.serving import Predictor

__all__ = ["MCResult", "delta_predict", "mean_good_error", "mc_predict", "median_good_error",
           "perturbation_sigma", "predict_arrays", "predict_store", "seed_keys", "total_sigma"]


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


def perturbation_sigma(flux: np.ndarray, error: np.ndarray, cap: float,
                       error_reference: ErrorReference = ErrorReference.MEAN) -> np.ndarray:
    """σ per pixel for the draws: the error capped at ``cap`` × the spectrum's ``error_reference``
    ("mean", the paper, or "median") good-pixel error; 0 on bad pixels (they stay 0)."""
    flux, error = np.atleast_2d(flux), np.atleast_2d(error)
    good = good_pixels(flux, error)
    typical = {ErrorReference.MEAN: mean_good_error,
               ErrorReference.MEDIAN: median_good_error}[ErrorReference(error_reference)](flux, error)
    limit = cap * typical[:, None]
    return np.where(good, np.minimum(error, limit), 0).astype(np.float32)


@dataclass
class MCResult:
    prediction: np.ndarray  # (n, 3) the network on the spectrum itself (TEFF, LOGG, FE_H); an ensemble's members' mean
    mean: np.ndarray        # (n, 3) mean over the draws (the prediction itself without draws or for the delta method)
    sigma: np.ndarray       # (n, 3) the pixel noise's σ: over the draws (ddof = 1, pooled within members) or first order
    hidden: np.ndarray      # (n, 512) float32 penultimate activations of the spectrum (the first member; apogeenet.domain)
    model_sigma: np.ndarray  # (n, 3) the members' spread on the spectrum (ddof = 1): the model's error; NaN for one network

    @property
    def total_sigma(self) -> np.ndarray:
        """:func:`total_sigma` of this result."""
        return total_sigma(self.sigma, self.model_sigma)


def total_sigma(sigma: np.ndarray, model_sigma: np.ndarray) -> np.ndarray:
    """σ of pixel noise and of the model together, √(σ² + σ_model²) (σ alone where σ_model is NaN:
    one network); NaN where σ is: the calibration's floor with the spread at full weight."""
    return sigma_floor(sigma, model_sigma, members=1)


def _member_spread(single: np.ndarray) -> np.ndarray:
    """The standard deviation (ddof = 1) over the members' predictions (K, n, 3); NaN for K = 1."""
    return single.std(axis=0, ddof=1) if len(single) > 1 else np.full(single.shape[1:], np.nan)


def _on_device(predictor: Predictor, flux: np.ndarray, error: np.ndarray, keys: np.ndarray, seed: int, cap: float,
               reference: ErrorReference):
    """(the networks in eval mode, their device, prepared flux, capped pixel σ, noise streams) there."""
    flux, error = np.atleast_2d(flux), np.atleast_2d(error)
    members = [net.eval() for net in predictor.members]
    device = next(predictor.first.parameters()).device
    prepared = torch.from_numpy(prepare_flux(flux, error)).to(device)
    sigma = torch.from_numpy(perturbation_sigma(flux, error, cap, reference)).to(device)
    return members, device, prepared, sigma, star_streams(seed, keys, device)


def mc_predict(predictor: Predictor, flux: np.ndarray, error: np.ndarray, keys: np.ndarray,
               cfg: PredictParams) -> MCResult:
    """Single-pass predictions and ``cfg.draws`` Monte-Carlo draws per spectrum, in physical units
    (``cfg.uncertainty`` none: the single pass alone, σ NaN).

    ``flux``/``error``: raw apStar arrays (n, 8575); ``keys``: one uint64 per spectrum that seeds
    its noise (with ``cfg.seed``). Spectra are processed in blocks whose draws together make at
    most ``cfg.max_batch`` network inputs, run ``cfg.forward_batch`` at a time on a CPU and all at
    once on a GPU; pixel σ capped by ``cfg.error_cap`` × ``cfg.error_reference``.

    An ensemble of K networks shares the draws: member j takes draws j, j + K, j + 2K, … (the
    same noise as draw number says, whatever K), so the Monte Carlo costs what one network's does.
    σ is then the draws' spread about each member's own mean, pooled (ddof = the members with
    draws); every member also sees the spectrum itself, and the spread of those K predictions is
    ``model_sigma``.
    """
    n_draws = 0 if cfg.uncertainty == Uncertainty.NONE else cfg.draws
    if 0 < n_draws < 2 * len(predictor.members):
        raise InputError(f"predict.draws {n_draws}: a Monte Carlo over an ensemble of {len(predictor.members)} "
                         f"networks needs at least {2 * len(predictor.members)} draws (two per member)")
    max_batch = cfg.max_batch
    members, device, prepared, sigma, streams = _on_device(predictor, flux, error, keys, cfg.seed, cfg.error_cap,
                                                           cfg.error_reference)
    unit = flux_divisor(prepared, predictor.flux_scale)    # the spectrum's, kept for its draws
    divided, sigma = prepared / unit, sigma / unit
    std, mu = np.asarray(predictor.table1.std), np.asarray(predictor.table1.mean)
    n, npix = prepared.shape
    chunk = cfg.forward_batch if device.type == "cpu" else max_batch
    single = np.empty((len(members), n, 3))
    mean, spread = np.empty((n, 3)), np.full((n, 3), np.nan)
    hidden = np.empty((n, HIDDEN_SIZE), np.float32)
    draws_of = [torch.arange(n_draws, device=device)[j::len(members)] for j in range(len(members))]
    per_block = max(1, max_batch // max(len(draws_of[0]), 1))

    def inputs(block: slice, draws: torch.Tensor):
        """The block's spectra, then each spectrum's ``draws``, ``chunk`` network inputs at a time."""
        for part in divided[block].split(chunk):
            yield part
        star = torch.arange(block.start, block.stop, device=device).repeat_interleave(len(draws))
        draw = draws.repeat(block.stop - block.start)
        for rows, numbers in zip(star.split(chunk), draw.split(chunk)):  # (flux + N(0,1)·σ) / unit
            yield divided[rows].addcmul_(normal_noise(streams[rows], numbers, npix), sigma[rows])

    with torch.inference_mode():
        for start in range(0, n, per_block):
            block = slice(start, min(start + per_block, n))
            m = block.stop - block.start
            total, within, groups = np.zeros((m, 3)), np.zeros((m, 3)), 0
            for j, (net, draws) in enumerate(zip(members, draws_of)):
                out, penultimate = net.forward_chunks(inputs(block, draws))
                out = predictor.mapped(j, out.double().cpu().numpy()) * std + mu
                single[j, block] = out[:m]
                if j == 0:
                    hidden[block] = penultimate[:m].cpu().numpy()
                per_star = out[m:].reshape(m, len(draws), 3)
                if len(draws):
                    total += per_star.sum(axis=1)
                    within += ((per_star - per_star.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
                    groups += 1
            mean[block] = total / n_draws if n_draws else single[:, block].mean(axis=0)
            if n_draws > groups:
                spread[block] = np.sqrt(within / (n_draws - groups))
    return MCResult(single.mean(axis=0), mean, spread, hidden, _member_spread(single))


DELTA_STEP = 1e-3
"""How far the forward difference of :func:`delta_predict` moves each output (standardised units,
eq. 4): far above the float32 rounding of an output and far below a typical σ."""


def delta_predict(predictor: Predictor, flux: np.ndarray, error: np.ndarray, keys: np.ndarray,
                  cfg: PredictParams) -> MCResult:
    """Single-pass predictions and their first-order (delta-method) σ, physical units.

    σ_k² = Σ_i (∂y_k/∂x_i)² σ_i², σ_i the capped pixel σ of the Monte Carlo (0 on bad pixels),
    the gradient g₀ from one forward and three backward passes at the spectrum.
    ``cfg.delta_points`` 1 is this textbook delta method. A network of ReLUs and max-pools has a
    gradient that jumps from pixel to pixel, and the jumps add to Σ g₀² what the draws average
    out, so it overestimates the Monte-Carlo σ (README has by how much). With ``points`` > 1 the cross
    product Σ_i g₀ᵢ ḡᵢ σ_i² is used instead, ḡ the mean gradient at ``points`` − 1 Monte-Carlo draws
    of the spectrum (noise and flux unit as in :func:`mc_predict`): their jumps are independent of
    g₀'s and cancel. Each term Σ_i ḡᵢ (σ_i² g₀ᵢ) is the derivative at a draw along σ² g₀, taken by a
    forward difference over a step that moves the output by ``DELTA_STEP``: four inference
    passes (the draw and three steps) in place of a forward and three backward passes (README,
    "Inference, uncertainties and the catalog", has the agreement and the speed). The flux unit is
    held fixed at the spectrum's: one pixel's noise hardly moves the median of 8 575, although
    locally the median pixel carries it all. An ensemble's σ² is the mean of its members' (each
    member's gradient is its own, scaled by the slope of its output map), its prediction the
    members' mean.
    """
    members, device, prepared, pixel_sigma, streams = _on_device(predictor, flux, error, keys, cfg.seed,
                                                                 cfg.error_cap, cfg.error_reference)
    std, mu = np.asarray(predictor.table1.std), np.asarray(predictor.table1.mean)
    n = len(prepared)
    single, variance = np.empty((len(members), n, 3)), np.zeros((n, 3))
    hidden = np.empty((n, HIDDEN_SIZE), np.float32)
    for j, net in enumerate(members):
        member_variance = _delta_member(net, predictor.flux_scale, prepared, pixel_sigma, streams, cfg,
                                        single[j], hidden if j == 0 else None)
        variance += member_variance * predictor.slopes(j, single[j]) ** 2 / len(members)
        single[j] = predictor.mapped(j, single[j])
    single = single * std + mu
    prediction = single.mean(axis=0)
    return MCResult(prediction, prediction.copy(), np.sqrt(np.clip(variance, 0, None)) * std, hidden,
                    _member_spread(single))


def _delta_member(model, flux_scale, prepared: torch.Tensor, pixel_sigma: torch.Tensor, streams: torch.Tensor,
                  cfg: PredictParams, prediction: np.ndarray, hidden: np.ndarray | None) -> np.ndarray:
    """One network's standardised predictions (written into ``prediction``, its activations into
    ``hidden`` unless None) and first-order variances (n, 3) for :func:`delta_predict`."""
    points, forward_batch = cfg.delta_points, cfg.forward_batch
    network = model.snapshot(gradient_network)
    n = len(prepared)
    chunk = forward_batch if prepared.device.type == "cpu" else n
    variance = np.empty((n, 3))
    for rows in torch.arange(n, device=prepared.device).split(chunk):
        unit = flux_divisor(prepared[rows], flux_scale)
        x, sigma = prepared[rows] / unit, pixel_sigma[rows] / unit  # the network's units
        m = len(rows)
        padded = torch.cat([x, x.new_zeros(chunk - m, x.shape[1])]) if m < chunk else x  # one batch size on a
        padded.requires_grad_(True)                       # CPU: oneDNN's backward of one row rounds otherwise
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            out, penultimate, features = network(padded)
            out, penultimate = out[:m], penultimate[:m]
            with one_thread(padded.device):  # the head backwards on one thread: the same bits in any process
                heads = [torch.autograd.grad(out[:, k].sum(), features, retain_graph=True)[0] for k in range(3)]
            gradient = torch.stack([torch.autograd.grad(features, padded, head, retain_graph=k < 2)[0][:m]
                                    for k, head in enumerate(heads)])                  # rows are independent
        picked = slice(int(rows[0]), int(rows[-1]) + 1)
        prediction[picked] = out.detach().double().cpu().numpy()
        if hidden is not None:
            hidden[picked] = penultimate.detach().cpu().numpy()
        if points == 1:
            variance[picked] = (gradient.double() * sigma.double()).square().sum(dim=-1).T.cpu().numpy()
        else:
            variance[picked] = _cross_at_draws(model, x.detach(), sigma, gradient, streams[rows], points - 1,
                                               forward_batch).cpu().numpy()
    return variance


def _cross_at_draws(model, x: torch.Tensor, sigma: torch.Tensor, gradient: torch.Tensor, streams: torch.Tensor,
                    draws: int, forward_batch: int) -> torch.Tensor:
    """Σ_i ḡ_ki g_ki σ_i² (m, 3) for spectra ``x`` (m, npix), their pixel σ and gradients g (3, m,
    npix), ḡ the mean gradient over ``draws`` draws: the forward differences of
    :func:`delta_predict`, all through the inference path (:meth:`ApogeeNet.forward_chunks`)."""
    m, npix = x.shape
    direction = gradient * sigma.square()                                   # σ² g, (3, m, npix)
    spread = (gradient * sigma).square().sum(dim=-1)                        # ‖σ g‖², ≈ the output's σ²
    step = torch.where(spread > 0, DELTA_STEP / spread, torch.ones_like(spread))  # (3, m)
    star = torch.arange(m, device=x.device).repeat(draws)
    draw = torch.arange(draws, device=x.device).repeat_interleave(m)
    base = x[star].addcmul_(normal_noise(streams[star], draw, npix), sigma[star])  # (draws·m, npix)
    moved = base.view(draws, 1, m, npix) + step[..., None] * direction           # (draws, 3, m, npix)
    inputs = torch.cat([base, moved.view(-1, npix)])
    with torch.inference_mode():
        out, _ = model.forward_chunks(inputs.split(forward_batch if x.device.type == "cpu" else len(inputs)))
    out = out.double()
    at_draw = out[:draws * m].view(draws, m, 3)
    at_step = torch.diagonal(out[draws * m:].view(draws, 3, m, 3), dim1=1, dim2=3)  # output k of step k
    return ((at_step - at_draw) / step.T.double()).mean(dim=0)


def predict_arrays(predictor: Predictor, flux: np.ndarray, error: np.ndarray, keys: np.ndarray,
                   cfg: PredictParams) -> MCResult:
    """Predictions and σ of raw apStar arrays by ``cfg.uncertainty``: the Monte Carlo
    (:func:`mc_predict`), the delta method (:func:`delta_predict`) or the single pass alone."""
    method = delta_predict if cfg.uncertainty == Uncertainty.DELTA else mc_predict
    return method(predictor, flux, error, keys, cfg)


def predict_store(predictor: Predictor, store, cfg: PredictParams, *, rows: np.ndarray | None = None) -> MCResult:
    """Predictions and σ for the store's ``rows`` (default all) of a
    :class:`apogeenet.store.SpectraStore`, read ``cfg.spectra_per_block`` spectra at a time: the
    Monte Carlo (each star's noise keyed by its APOGEE_ID), the delta method or the single pass
    alone (σ NaN), as ``cfg.uncertainty`` says (:func:`predict_arrays`)."""
    rows = np.arange(len(store.index)) if rows is None else np.asarray(rows)
    keys = seed_keys(store.index["apogee_id"].to_numpy()[rows])
    n = len(rows)
    found = MCResult(*(np.empty((n, 3)) for _ in range(3)), np.empty((n, HIDDEN_SIZE), np.float32), np.empty((n, 3)))
    for start in range(0, n, cfg.spectra_per_block):
        part = slice(start, min(start + cfg.spectra_per_block, n))
        batch = store.read(rows[part])
        result = predict_arrays(predictor, batch.flux, batch.error, keys[part], cfg)
        for name in ("prediction", "mean", "sigma", "hidden", "model_sigma"):
            getattr(found, name)[part] = getattr(result, name)
    return found


def seed_keys(apogee_ids) -> np.ndarray:
    """A stable integer per star (from SHA-256 of its APOGEE_ID) to seed its draws."""
    return np.array([int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "little")
                     for i in apogee_ids], dtype=np.uint64)
