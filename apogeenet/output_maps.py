"""Each member's outputs through a straight line fitted on the dev split (a linear recalibration).

A network stopped early on a small training set may compress its scale: its cool stars come out
too warm and its hot ones too cool, by an amount that differs from one seed to the next, and an
ensemble's mean inherits the compression of its worst member (docs/baselines.md, "The deep
ensemble"). For member j and parameter k the dev labels (standardised, eq. 4) are regressed on
the member's standardised output: ŷ' = slope · ŷ + intercept, the least-squares line.

A parameter's lines are kept only where they help the ensemble on dev stars they were not fitted
on: the dev split is cut in two halves by a hash of APOGEE_ID (the same halves on every CPU), the
lines fitted on each half predict the other, and the summed squared error of the ensemble's mean
must fall. Kept lines are then fitted on the whole dev split; otherwise that parameter stays as
the network gives it (slope 1, intercept 0).
"""

from __future__ import annotations

import numpy as np

from apogeenet.labels.catalog import LABEL_COLUMNS

__all__ = ["MIN_STARS_PER_HALF", "fit_output_maps", "identity_maps"]

MIN_STARS_PER_HALF = 20
"""Fewer labelled dev stars than this in either half: the parameter keeps no map."""


def identity_maps(n_members: int) -> np.ndarray:
    """(members, 3, 2) maps that change nothing: slope 1, intercept 0."""
    maps = np.zeros((n_members, len(LABEL_COLUMNS), 2))
    maps[..., 0] = 1.0
    return maps


def _lines(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(members, 2) least-squares [slope, intercept] of ``targets`` (n,) on each member's ``outputs`` (members, n)."""
    lines = []
    for output in outputs:
        design = np.stack([output, np.ones_like(output)], axis=1)
        lines.append(np.linalg.lstsq(design, targets, rcond=None)[0])
    return np.asarray(lines)


def _ensemble_sse(outputs: np.ndarray, targets: np.ndarray, lines: np.ndarray) -> float:
    """Squared error summed over stars of the members' mean after ``lines`` (members, 2)."""
    mean = (outputs * lines[:, :1] + lines[:, 1:]).mean(axis=0)
    return float(np.sum((mean - targets) ** 2))


def fit_output_maps(outputs: np.ndarray, targets: np.ndarray, half: np.ndarray,
                    parameters: tuple[str, ...] = ("teff", "logg", "fe_h")) -> tuple[np.ndarray, dict[str, float]]:
    """The maps (members, 3, 2) for ``outputs`` (members, n, 3), the dev stars' standardised
    outputs before any map, and their standardised labels ``targets`` (n, 3; NaN where a star has
    none), ``half`` (n,) True for one half of the dev split, for the ``parameters`` named (the
    others keep slope 1, intercept 0); and metrics per parameter: ``kept``
    (1 or 0), the cross-fitted dev RMS (standardised) ``rms_before``/``rms_after`` and each
    member's slope."""
    outputs, targets, half = np.asarray(outputs, np.float64), np.asarray(targets, np.float64), np.asarray(half, bool)
    maps = identity_maps(len(outputs))
    metrics: dict[str, float] = {}
    for k, column in enumerate(LABEL_COLUMNS):
        name = column.lower()
        if name not in parameters:
            continue
        known = np.isfinite(targets[:, k]) & np.all(np.isfinite(outputs[:, :, k]), axis=0)
        folds = [known & half, known & ~half]
        if min(int(f.sum()) for f in folds) < MIN_STARS_PER_HALF:
            metrics[f"output_map/{name}/kept"] = 0
            continue
        before = after = 0.0
        for fit_on, judge_on in (folds, folds[::-1]):
            lines = _lines(outputs[:, fit_on, k], targets[fit_on, k])
            before += _ensemble_sse(outputs[:, judge_on, k], targets[judge_on, k], maps[:, k])
            after += _ensemble_sse(outputs[:, judge_on, k], targets[judge_on, k], lines)
        lines = _lines(outputs[:, known, k], targets[known, k])
        kept = after < before and bool(np.all(lines[:, 0] > 0))
        if kept:
            maps[:, k] = lines
        count = int(known.sum())
        metrics |= {f"output_map/{name}/kept": int(kept), f"output_map/{name}/rms_before": float(np.sqrt(before / count)),
                    f"output_map/{name}/rms_after": float(np.sqrt(after / count))}
        metrics |= {f"output_map/{name}/slope_{j}": float(maps[j, k, 0]) for j in range(len(outputs))}
    return maps, metrics
