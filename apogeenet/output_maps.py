"""Each member's outputs through straight lines fitted on the dev split (a linear recalibration),
one line per region of the output.

A network stopped early on a small training set may compress its scale: its cool stars come out
too warm and its hot ones too cool, by an amount that differs from one seed to the next, and an
ensemble's mean inherits the compression of its worst member (docs/baselines.md, "The deep
ensemble"). The compression is not the same across the Kiel diagram: on the 10 000-star survey
the ensemble puts the §2.3 M dwarfs 50 K above their own labels (more for the coolest) while its
giants sit on theirs, so one line for all stars cannot take it out. For member j, parameter k
and region r of the member's own output (:func:`apogeenet.calibration.region_index`: the
§2.2 Payne regime, the §4.1 young-star triangle, the §2.3 cool main sequence) the dev labels
(standardised, eq. 4) are regressed on the member's standardised output, ŷ' = slope · ŷ +
intercept, over the dev stars whose output lies in r. The line minimises the Huber loss the
demo profile trains with (``huber_delta`` per parameter in Table 1 σ; None: least squares), so
the skewed tail of the photometric YSO labels pulls a line no more than it pulled the network.

A line set (parameter, region) is kept only where it helps the ensemble on dev stars it was not
fitted on: the dev split is cut in two halves by a hash of APOGEE_ID (the same halves on every
CPU), the lines fitted on each half predict the other, and the same loss summed over the stars
the region's lines touch must fall. Kept lines are then fitted on the whole dev split; otherwise
that parameter stays as the network gives it in that region (slope 1, intercept 0).
"""

from __future__ import annotations

import numpy as np

from apogeenet.calibration import REGIONS, region_index
from apogeenet.labels.catalog import LABEL_COLUMNS

__all__ = ["MIN_STARS_PER_HALF", "fit_output_maps", "identity_maps"]

MIN_STARS_PER_HALF = 20
"""Fewer labelled dev stars of a region than this in either half: the region keeps no map."""

LINE_ITERATIONS = 50
"""Iteratively reweighted least-squares steps of a Huber line (it converges in a few)."""


def identity_maps(n_members: int) -> np.ndarray:
    """(members, regions, 3, 2) maps that change nothing: slope 1, intercept 0 (the model file's
    ``output_maps``, applied by :meth:`apogeenet.serving.Predictor.mapped`)."""
    maps = np.zeros((n_members, len(REGIONS), len(LABEL_COLUMNS), 2))
    maps[..., 0] = 1.0
    return maps


def _loss(residual: np.ndarray, delta: float | None) -> np.ndarray:
    """Huber loss of each residual (quadratic within ``delta``; None: the square)."""
    if delta is None:
        return 0.5 * residual ** 2
    size = np.abs(residual)
    return np.where(size < delta, 0.5 * residual ** 2, delta * (size - 0.5 * delta))


def _line(output: np.ndarray, target: np.ndarray, delta: float | None) -> np.ndarray:
    """[slope, intercept] minimising the Huber loss of ``target`` on ``output`` (reweighted least squares)."""
    design = np.stack([output, np.ones_like(output)], axis=1)
    line = np.linalg.lstsq(design, target, rcond=None)[0]
    for _ in range(LINE_ITERATIONS if delta is not None else 0):
        size = np.abs(design @ line - target)
        root = np.sqrt(np.where(size < delta, 1.0, delta / np.maximum(size, 1e-300)))
        updated = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)[0]
        if np.allclose(updated, line, rtol=0, atol=1e-12):
            break
        line = updated
    return line


def _ensemble_loss(outputs, targets, regions, region, lines, delta) -> float:
    """Loss summed over stars of the members' mean (``outputs`` (members, n)) when each member's
    outputs in ``region`` go through its line in ``lines`` (members, 2)."""
    inside = regions == region
    moved = np.where(inside, outputs * lines[:, :1] + lines[:, 1:], outputs)
    return float(np.sum(_loss(moved.mean(axis=0) - targets, delta)))


def fit_output_maps(outputs: np.ndarray, targets: np.ndarray, half: np.ndarray, table1,
                    parameters: tuple[str, ...] = ("teff", "logg", "fe_h"),
                    huber_delta: tuple[float, float, float] | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """The maps (members, regions, 3, 2) for ``outputs`` (members, n, 3), the dev stars'
    standardised outputs before any map, and their standardised labels ``targets`` (n, 3; NaN
    where a star has none), ``half`` (n,) True for one half of the dev split, ``table1`` (its
    ``mean`` and ``std`` place an output in its region), for the ``parameters`` named (the others
    keep slope 1, intercept 0), the lines minimising the Huber loss with ``huber_delta`` (Teff,
    log g, [Fe/H]; None: least squares); and metrics per parameter and region: ``kept`` (1 or 0), the
    cross-fitted dev RMS (standardised, over the stars the region's lines touch)
    ``rms_before``/``rms_after`` and each member's slope."""
    outputs, targets, half = np.asarray(outputs, np.float64), np.asarray(targets, np.float64), np.asarray(half, bool)
    mean, std = np.asarray(table1.mean, float), np.asarray(table1.std, float)
    regions = region_index(outputs * std + mean)  # (members, n)
    maps = identity_maps(len(outputs))
    metrics: dict[str, float] = {}
    for k, column in enumerate(LABEL_COLUMNS):
        name = column.lower()
        if name not in parameters:
            continue
        known = np.isfinite(targets[:, k]) & np.all(np.isfinite(outputs[:, :, k]), axis=0)
        delta = None if huber_delta is None else huber_delta[k]
        for r, region in enumerate(REGIONS):
            key = f"output_map/{name}/{region}"
            inside = (regions == r) & known  # (members, n): the stars each member's line is fitted on
            folds = [half, ~half]
            if min(int((inside[j] & fold).sum()) for j in range(len(outputs)) for fold in folds) < MIN_STARS_PER_HALF:
                metrics[f"{key}/kept"] = 0
                continue
            touched = known & np.any(regions == r, axis=0)
            squares, losses = np.zeros(2), np.zeros(2)  # [before, after] the lines, cross-fitted
            for fit_on, judge_on in (folds, folds[::-1]):
                lines = np.array([_line(outputs[j, inside[j] & fit_on, k], targets[inside[j] & fit_on, k], delta)
                                  for j in range(len(outputs))])
                judged = touched & judge_on
                args = (outputs[:, judged, k], targets[judged, k], regions[:, judged], r)
                for i, candidate in enumerate((maps[:, r, k], lines)):
                    squares[i] += _ensemble_loss(*args, candidate, None)
                    losses[i] += _ensemble_loss(*args, candidate, delta)
            lines = np.array([_line(outputs[j, inside[j], k], targets[inside[j], k], delta)
                              for j in range(len(outputs))])
            kept = losses[1] < losses[0] and bool(np.all(lines[:, 0] > 0))
            if kept:
                maps[:, r, k] = lines
            rms = np.sqrt(2 * squares / max(int(touched.sum()), 1))
            metrics |= {f"{key}/kept": int(kept), f"{key}/rms_before": float(rms[0]),
                        f"{key}/rms_after": float(rms[1])}
            metrics |= {f"{key}/slope_{j}": float(maps[j, r, k, 0]) for j in range(len(outputs))}
    return maps, metrics
