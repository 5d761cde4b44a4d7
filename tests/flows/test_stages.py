"""The evaluate and predict stages on the small trained project: the quality bar, the adaptation
check, the σ calibration and the Table 4 catalog with its products."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from apogeenet.config import load_params
from apogeenet.errors import InputError
from apogeenet.pipeline import evaluate, predict
from apogeenet.serving import Predictor
from apogeenet.store import SpectraStore
from factories import settings


@pytest.mark.slow
def test_evaluate_writes_the_quality_bar_and_the_adaptation_check(trained, tmp_path):
    root, _ = trained
    cfg = load_params(root / "params.yaml")
    out = tmp_path / "eval"
    model = str(cfg.paths.calibrated / "model.pt")
    metrics = evaluate.run(settings(cfg, judged=model, baseline=model, evaluation=out, track=False)).metrics
    quality = pd.read_csv(out / "quality.csv")
    assert len(quality) == 12 and set(quality["required"]) == {5.0, 4.0, 3.0}
    row = quality[(quality.group == "payne") & (quality.parameter == "teff")].iloc[0]
    assert row["gain"] == pytest.approx(row["mean_rms"] / row["rms"])
    assert np.isnan(row["paper_rms"])  # the paper's Table 3 has no Payne group
    yso = quality[(quality.group == "yso") & (quality.parameter == "teff")].iloc[0]
    assert yso["paper_rms"] == 490.99 and yso["vs_paper"] == pytest.approx(yso["rms"] / 490.99)
    assert metrics["quality/yso/teff_vs_paper"] == pytest.approx(yso["vs_paper"])
    # the synthetic survey's truth: the labels' own error and the gain against the truth
    assert (quality["label_error"] > 0).all() and (quality["rms_truth"] > 0).all()
    assert metrics["quality/n_passed_truth"] == int((quality["gain_truth"] >= quality["required"]).sum())
    assert metrics["quality/passed"] == int(quality["passed"].all())
    assert "adaptation/passed" not in metrics  # a model is not compared with itself
    assert json.loads((out / "metrics.json").read_text())["test/full/mse"] == metrics["test/full/mse"]
    # the σ of the test split before and after calibration, against the truth and the labels
    report = pd.read_csv(out / "calibration_truth.csv").set_index(["group", "parameter"])
    assert report.loc[("all", "TEFF"), "n"] == (pd.read_parquet(cfg.paths.labels / "labels.parquet")["SPLIT"]
                                                  == "test").sum()
    assert metrics["calibration_truth/all/teff_z_robust_sigma"] == pytest.approx(report.loc[("all", "TEFF"),
                                                                                          "z_robust_sigma"])
    assert (out / "z_histograms.png").stat().st_size > 0 and "Bar (groups" in (out / "calibration.md").read_text()
    result = subprocess.run([str(Path(sys.executable).parent / "apogeenet"), "evaluate", "--model",
                             str(tmp_path / "missing.pt"), "--no-track", "--params", str(root / "params.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no such model file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_predict_writes_table4_catalog_and_products(trained, tmp_path):
    root, _ = trained
    cfg = load_params(root / "params.yaml")
    out = tmp_path / "catalog"
    model = str(cfg.paths.calibrated / "model.pt")
    metrics = predict.run(settings(cfg, model=model, out_dir=out, draws=5, track=False)).metrics
    store_size = len(SpectraStore(cfg.paths.store))
    catalog = pd.read_parquet(out / "catalog.parquet")
    assert len(catalog) == metrics["n_spectra"] == store_size
    assert (catalog["TEFF_ERR"] > 0).all() and set(catalog["DATA_SET"]) <= {"train", "dev", "test", "none"}
    labels = pd.read_parquet(cfg.paths.labels / "labels.parquet")
    assert (catalog["DATA_TYPE"] != "none").sum() == catalog["APOGEE_ID"].isin(labels["APOGEE_ID"]).sum()
    clean = Table.read(out / "catalog_clean.fits")
    assert len(clean) == metrics["n_clean"] == (catalog["FLAGS"] == 0).sum()
    for name in ("kiel_by_type.png", "sigma_vs_snr.png", "yso_selection.png", "calibration_truth.csv",
                 "z_histograms.png", "summary.md"):
        assert (out / name).stat().st_size > 0
    # the calibrated σ is the model's stored fit applied to the total of the Monte-Carlo σ and the
    # spread of the ensemble's two members, never below the pixel σ with the spread's standard error
    # of the two members' mean
    predictor = Predictor.load(model)
    assert set(predictor.calibrations) == {"monte_carlo", "delta"} and predictor.domain is not None
    assert len(predictor.members) == 2 and (catalog[["TEFF_ERR_MODEL", "LOGG_ERR_MODEL", "FE_H_ERR_MODEL"]] > 0).all().all()
    values = catalog[["TEFF", "LOGG", "FE_H"]].to_numpy()
    pixel = catalog[["TEFF_ERR_MC", "LOGG_ERR_MC", "FE_H_ERR_MC"]].to_numpy()
    spread = catalog[["TEFF_ERR_MODEL", "LOGG_ERR_MODEL", "FE_H_ERR_MODEL"]].to_numpy()
    expected = predictor.calibrations["monte_carlo"].apply(values, np.hypot(pixel, spread), catalog["DATA_TYPE"].to_numpy(),
                                                           floor=np.sqrt(pixel ** 2 + spread ** 2 / 2))
    np.testing.assert_allclose(catalog[["TEFF_ERR", "LOGG_ERR", "FE_H_ERR"]].to_numpy(), expected, rtol=1e-12)
    assert np.isfinite(catalog["DOMAIN_DIST"]).all()
    assert ((catalog["FLAGS"] & 16) > 0).tolist() == (catalog["DOMAIN_DIST"] > predictor.domain.threshold).tolist()
    again = predict.run(settings(cfg, model=model, out_dir=tmp_path / "again", draws=5, track=False))
    assert again.metrics == metrics  # same seed, same numbers
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again" / "catalog.parquet"), catalog)
    result = subprocess.run([str(Path(sys.executable).parent / "apogeenet"), "predict", "--model",
                             "models:/apogeenet@nosuchalias", "--no-track", "--params", str(root / "params.yaml")],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"})
    assert result.returncode == 2 and "cannot load this model" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.shared
def test_predict_runs_on_a_store_of_real_apstar_files(trained, real_apstar_dir, tmp_path):
    from apogeenet.ingest import ingest

    root, _ = trained
    cfg = load_params(root / "params.yaml")
    ingest(real_apstar_dir, tmp_path / "real_store", workers=1)
    metrics = predict.run(settings(cfg, model=str(cfg.paths.calibrated / "model.pt"), store=tmp_path / "real_store", out_dir=tmp_path / "real", draws=4, track=False)).metrics
    catalog = Table.read(tmp_path / "real" / "catalog.fits")
    assert metrics["n_spectra"] == len(catalog) == len(SpectraStore(tmp_path / "real_store")) > 0
    assert (catalog["DATA_TYPE"] == "none").all()  # real stars carry no labels here
    assert all(c["RA"] >= 0 for c in catalog) and str(catalog["TEFF_ERR"].unit) == "K"
    # a model trained on the synthetic survey says nothing about these M dwarfs: every row leaves the
    # clean view (OUT_OF_DOMAIN or LARGE_SIGMA; with the demo's model all are OUT_OF_DOMAIN, README), and
    # no clean row is off The Cannon's Teff (Birky et al. 2020) by > 3 σ
    assert ((catalog["FLAGS"] & (16 | 32)) > 0).all(), catalog["APOGEE_ID", "DOMAIN_DIST", "TEFF_ERR"]
    reference = pd.read_csv(real_apstar_dir.parent / "labels" / "apstar_dr13_labels.csv").set_index("APOGEE_ID")
    clean = pd.read_parquet(tmp_path / "real" / "catalog_clean.parquet")
    off = (clean["TEFF"] - reference["BIRKY2020_TEFF"].reindex(clean["APOGEE_ID"]).to_numpy()).abs()
    assert not (off > 3 * clean["TEFF_ERR"]).any()


def test_calibration_against_the_labels_where_a_survey_has_no_truth(trained):
    """A real survey has no truth table: the σ calibration is fitted against the labels (and a
    demand for the truth there is a one-line error, not a traceback)."""
    from apogeenet.calibrate_model import calibrate_predictor
    from apogeenet.pipeline.common import training_data

    root, _ = trained
    cfg = load_params(root / "params.yaml")
    data = training_data(cfg)
    predictor = Predictor.load(cfg.paths.calibrated / "model.pt")
    data.flux_scale = predictor.flux_scale
    labels = cfg.calibration.model_copy(update={"reference": "labels", "methods": ("monte_carlo",)})
    metrics = calibrate_predictor(predictor, data, cfg.predict, labels, None)
    fitted = predictor.calibrations["monte_carlo"]
    assert fitted.reference == "labels" and metrics["sigma_calibration/monte_carlo/fitted"] == 1
    assert fitted.terms["all"] != Predictor.load(cfg.paths.calibrated / "model.pt").calibrations["monte_carlo"].terms["all"]
    truth = cfg.calibration.model_copy(update={"reference": "truth"})
    with pytest.raises(InputError, match="no truth table"):
        calibrate_predictor(predictor, data, cfg.predict, truth, None)


@pytest.mark.slow
def test_predict_joins_only_the_labels_the_model_was_trained_on(trained, tmp_path):
    """The model carries the SHA-256 of its label catalog: other labels are refused (one line),
    never joined as if the model had learned them; the catalog's header says what it learned from."""
    import shutil

    from apogeenet.pipeline.common import StageError

    root, _ = trained
    cfg = load_params(root / "params.yaml")
    model = str(cfg.paths.calibrated / "model.pt")
    assert Predictor.load(model).provenance["labels_sha256"]
    other = tmp_path / "other_labels"
    shutil.copytree(cfg.paths.labels, other)
    labels = pd.read_parquet(other / "labels.parquet")
    labels.loc[0, "TEFF"] += 100.0
    labels.to_parquet(other / "labels.parquet")
    run = settings(cfg, model=model, out_dir=tmp_path / "cat", draws=4, track=False).with_overrides(
        {"paths.labels": str(other)})
    with pytest.raises(StageError, match="other labels than .* was trained on"):
        predict.run(run)
    predict.run(settings(cfg, model=model, out_dir=tmp_path / "cat", draws=4, track=False))
    header = Table.read(tmp_path / "cat" / "catalog.fits").meta
    assert header["TRAINED"] == "synthetic survey" and header["LABSRC"] == "PAYNE,MSTAR,YSO"
    assert header["MODELVER"].startswith("none") and len(header["WEIGHTS"]) == 64
