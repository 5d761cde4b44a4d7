"""The baselines APOGEE Net is judged against: the pseudo-continuum, ridge regression and The
Cannon recover what they should on data made for them, and the stage writes what evaluate reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from factories import TABLE1

from apogeenet.baselines import fit_cannon, fit_ridge, pseudo_continuum_normalise

WAVE = np.geomspace(15100.0, 17000.0, 3000)


def test_pseudo_continuum_removes_the_continuum_and_keeps_the_lines():
    continuum = 100.0 * (WAVE / 16000.0) ** -3  # a steep, smooth slope
    lines = 1.0 - 0.4 * np.exp(-0.5 * ((WAVE[None, :] - np.array([[15500.0], [16200.0]])) / 0.5) ** 2).sum(0)
    flux = (continuum * lines)[None, :].astype(np.float32)
    error = np.full_like(flux, 0.5)
    error[0, 1000:1100] = 1e10  # a chip gap
    normalised, ivar = pseudo_continuum_normalise(flux, error, WAVE, length=50.0)
    inside = (np.arange(WAVE.size) > 300) & (np.arange(WAVE.size) < WAVE.size - 300)  # the kernel's reach
    inside[900:1200] = False  # ... also around the gap
    assert np.abs(normalised[0, inside] - lines[inside]).max() < 0.01  # the lines, on a flat continuum
    assert lines[inside].min() < 0.7  # (and there are deep lines to keep)
    assert (normalised[0, 1000:1100] == 1).all() and (ivar[0, 1000:1100] == 0).all()
    assert ivar[0, 0] == pytest.approx((continuum[0] / 0.5) ** 2, rel=0.02)  # 1/σ² of the normalised flux


def _linear_spectra(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.column_stack([rng.uniform(3500, 6000, n), rng.uniform(0.5, 5.0, n), rng.uniform(-1.5, 0.4, n)])
    z = (labels - TABLE1.mean) / TABLE1.std
    basis = rng.normal(0, 0.02, (3, 400))
    quadratic = rng.normal(0, 0.01, 400)
    flux = 1 + z @ basis + np.outer(z[:, 0] ** 2, quadratic) + rng.normal(0, 0.002, (n, 400))
    return labels, flux.astype(np.float32)


def test_ridge_recovers_linear_labels_and_picks_its_penalty_on_dev():
    rng = np.random.default_rng(0)
    labels, flux = _linear_spectra(400, rng)
    z = ((labels - TABLE1.mean) / TABLE1.std).astype(np.float32)
    fit = fit_ridge(flux[:300], z[:300], flux[300:350], z[300:350], TABLE1, (1e-4, 1e-2, 1.0, 100.0))
    pred = fit.predict(flux[350:], None)
    rms = np.sqrt(np.mean((pred - labels[350:]) ** 2, axis=0))
    assert rms[0] < 60 and rms[1] < 0.1 and rms[2] < 0.05, rms
    assert fit.params["alpha.teff"] < 100.0  # the largest penalty would wash the signal out


def test_the_cannon_recovers_labels_of_a_quadratic_world():
    rng = np.random.default_rng(1)
    labels, flux = _linear_spectra(160, rng)
    ivar = np.full_like(flux, 1 / 0.002**2)
    fit = fit_cannon(WAVE[:400], flux[:120], ivar[:120], labels[:120])
    pred = fit.predict(flux[120:], ivar[120:])
    rms = np.sqrt(np.mean((pred - labels[120:]) ** 2, axis=0))
    assert rms[0] < 60 and rms[1] < 0.1 and rms[2] < 0.05, rms
    import matplotlib

    assert not matplotlib.rcParams["text.usetex"]  # TheCannon's import must not switch our plots to LaTeX


@pytest.mark.slow
def test_baselines_stage_writes_what_evaluate_compares(project, tmp_path):
    from apogeenet.config import load_params
    from apogeenet.evaluate import comparison_table
    from apogeenet.io.tables import read_truth
    from apogeenet.pipeline import baselines
    from factories import settings

    cfg = load_params(project / "params.yaml").with_overrides({"paths.baselines": str(tmp_path)})
    result = baselines.run(settings(cfg, track=False))
    frames = {name: pd.read_parquet(tmp_path / name / "predictions.parquet") for name in ("ridge", "cannon")}
    for name, frame in frames.items():
        assert {"PRED_TEFF", "PRED_LOGG", "PRED_FE_H"} <= set(frame.columns) and frame["PRED_TEFF"].notna().all()
        assert result.metrics[f"{name}/test/full/teff_scatter_truth"] > 0
    table = comparison_table(frames, read_truth(cfg.paths.truth))
    assert list(table.columns) == ["ridge vs labels", "ridge vs truth", "cannon vs labels", "cannon vs truth", "best"]
    assert len(table) == 12 and set(table["best"]) <= {"ridge", "cannon"}
