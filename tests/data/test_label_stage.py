"""The label stage end to end on a small survey: CLI/DVC command, GE gates, Prefect flow, MLflow."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from apogeenet.cli import app
from apogeenet.config import load_params
from apogeenet.pipeline import label, validate
from factories import settings
from commands import EXE


def test_label_then_validate_writes_everything(project):
    cfg = load_params(project / "params.yaml")
    metrics = json.loads((cfg.paths.labels / "metrics.json").read_text())
    labels = pd.read_parquet(cfg.paths.labels / "labels.parquet")
    assert metrics["n_labels"] == len(labels) > 40
    assert set(labels["SOURCE"]) == {"PAYNE", "MSTAR", "YSO"}
    table1 = json.loads((cfg.paths.labels / "table1.json").read_text())
    train = labels[labels["SPLIT"] == "train"]
    assert table1["teff_mean"] == pytest.approx(train["TEFF"].mean())
    report = validate.run(settings(cfg, track=False))
    assert report.passed, report.report
    assert (cfg.paths.validation / "summary.json").exists()
    assert (cfg.paths.validation / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()
    again = label.run(settings(cfg, track=False))  # splits are kept from the earlier catalog
    relabelled = pd.read_parquet(cfg.paths.labels / "labels.parquet")
    assert again.metrics["n_labels"] == metrics["n_labels"]
    assert dict(zip(labels["APOGEE_ID"], labels["SPLIT"])) == dict(zip(relabelled["APOGEE_ID"], relabelled["SPLIT"]))


def test_a_failing_gate_stops_with_a_readable_summary(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["validation"]["min_finite_fraction"] = 0.99  # synthetic spectra have 7214/8575 pixels
    params["paths"]["validation"] = str(project / "strict-validation")
    bad = project / "strict.yaml"
    bad.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["validate", "--params", str(bad)])
    assert result.exit_code == 1
    assert "spectra_store: FAILED" in result.output
    assert "expect_column_values_to_be_between(FINITE_FRACTION) [0.99, 1.0]: 120 of 120 rows unexpected" in result.output
    summary = json.loads((project / "strict-validation" / "summary.json").read_text())
    assert summary["success"] is False and summary["failures"][0]["suite"] == "spectra_store"
    # the gate cannot be skipped: nothing trains on labels that failed it
    trained = subprocess.run([EXE, "train", "--no-track", "--params", str(bad), "--out", str(project / "never")],
                             capture_output=True, text=True, cwd=project, timeout=300)
    assert trained.returncode == 2 and "failed validation (spectra_store)" in trained.stderr
    assert not (project / "never").exists()
