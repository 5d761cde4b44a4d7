"""The real-data path as an astronomer walks it: a DR17-style allStar built from the headers of the
19 real DR13 apStar files served by a local SAS, the labels of Birky et al. (2020) (Teff and [Fe/H]; log g from eq. 3), `apogeenet init` from the allStar
(its spectra downloaded by the workspace's first stage) fine-tuning the synthetic survey's model,
and `dvc repro` end to end with no edit; the catalog is honest about what
so small a training set knows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits
from astropy.table import Table

from commands import run

pytestmark = [pytest.mark.slow, pytest.mark.shared]


def _dr17_allstar(real_apstar_dir: Path, fake_sas, path: Path) -> list[str]:
    """An allStar of DR17 names (APOGEE_ID, TELESCOPE, FIELD, NVISITS, GAIAEDR3_PARALLAX, ...)
    from the files' headers, each file served at its DR17 SAS place; returns the IDs."""
    rows = []
    for file in sorted(real_apstar_dir.glob("apStar-*.fits")):
        header = fits.getheader(file, 0)
        star = {"APOGEE_ID": header["OBJID"], "TELESCOPE": header["TELESCOP"], "FIELD": header["FIELD"],
                "NVISITS": int(header["NVISITS"]), "GAIAEDR3_PARALLAX": 10.0, "GAIAEDR3_PARALLAX_ERROR": 0.1}
        rows.append(star)
        fake_sas.files[f"sas/dr17/apogee/spectro/redux/dr17/stars/{star['TELESCOPE']}/{star['FIELD']}/"
                       f"apStar-dr17-{star['APOGEE_ID']}.fits"] = file.read_bytes()
    Table(rows=[tuple(r.values()) for r in rows], names=list(rows[0])).write(path)
    return [r["APOGEE_ID"] for r in rows]


def test_real_files_and_a_plain_label_table_run_end_to_end(trained, real_apstar_dir, fake_sas, tmp_path):
    allstar = tmp_path / "allStar-dr17-mine.fits"
    ids = _dr17_allstar(real_apstar_dir, fake_sas, allstar)
    spectra = tmp_path / "spectra"
    dry = run("download", "--catalog", allstar, "--out", spectra, "--base-url", fake_sas.url, "--dry-run",
              "--limit", 5, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("/stars/apo25m/") == 5 and "5 files, about" in dry.stdout and not spectra.exists()
    labels = real_apstar_dir.parent / "labels" / "birky2020_full_sample_results.fits.gz"
    workspace = tmp_path / "mine"
    synthetic = trained[0] / "calibrated" / "model.pt"  # the synthetic survey's model, fine-tuned on real labels
    made = run("init", workspace, "--allstar", allstar, "--base-url", fake_sas.url, "--labels", labels,
               "--logg-column", "none", "--description", "Birky et al. 2020", "--init-model", synthetic, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    stages = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]
    assert list(stages)[:2] == ["download", "ingest"] and "truth" not in (workspace / "dvc.yaml").read_text()
    bin_dir = Path(sys.executable).parent  # as after `source .venv/bin/activate`
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    dvc = bin_dir / "dvc"
    repro = subprocess.run([str(dvc), "repro"], cwd=workspace, capture_output=True, text=True, timeout=1500, env=env)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    assert len(list((workspace / "data" / "apStar").rglob("apStar-dr17-*.fits"))) == len(ids) == 19

    # every one of the 14 827 table rows without a label has its reason
    catalog = pd.read_parquet(workspace / "derived" / "labels" / "labels.parquet")
    rejects = pd.read_parquet(workspace / "derived" / "labels" / "rejects.parquet")
    assert len(catalog) + len(rejects) == len(Table.read(labels)) and set(catalog["SOURCE"]) == {"TABLE"}
    assert set(catalog["APOGEE_ID"]) <= set(ids) and (rejects["REASON"] == "TABLE: no spectrum in the store").all()

    # honest: with 13 labelled stars no σ calibration can be fitted, and no row is called clean
    table = Table.read(workspace / "derived" / "catalog" / "catalog.fits")
    header = table.meta
    assert len(table) == 19 and header["SIGCAL"] == "none" and header["TRAINED"] == "real spectra"
    assert header["LABTABLE"] == "Birky et al. 2020" and header["LABSRC"] == "TABLE" and len(header["WEIGHTS"]) == 64
    assert all((np.asarray(table["FLAGS"]) & 128) > 0) and all("UNCALIBRATED" in n for n in table["FLAG_NAMES"])
    assert header["FLAGB7"].startswith("UNCALIBRATED")
    assert len(Table.read(workspace / "derived" / "catalog" / "catalog_clean.fits")) == 0
    assert "has no sigma calibration" in repro.stdout
    # fine-tuned: the training started from the synthetic model's weights and moved them
    from apogeenet.serving import Predictor

    start, tuned = Predictor.load(synthetic), Predictor.load(workspace / "derived" / "model" / "model.pt")
    assert tuned.provenance["trained_on"] == "real spectra" and start.provenance["trained_on"] == "synthetic survey"
    first = next(iter(start.first.state_dict()))
    assert start.first.state_dict()[first].shape == tuned.first.state_dict()[first].shape
    assert not np.array_equal(start.first.state_dict()[first].numpy(), tuned.first.state_dict()[first].numpy())
