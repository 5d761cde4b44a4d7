"""Gates that cannot be skipped: a star in two files fails validation (and trains once when
allowed), labels changed after validation do not train."""

from __future__ import annotations

import numpy as np
from commands import run


def test_the_same_star_in_two_files_fails_validation_and_trains_once(project_copy):
    import json
    import shutil

    from apogeenet.config import load_params
    from apogeenet.pipeline import validate
    from apogeenet.pipeline.common import training_data
    from factories import settings
    from apogeenet.ingest import ingest

    cfg = load_params(project_copy / "params.yaml")
    first = sorted(cfg.paths.spectra.rglob("*.fits"))[0]
    shutil.copy(first, first.with_name("copy-" + first.name))
    ingest(cfg.paths.spectra, cfg.paths.store, workers=1)
    report = validate.run(settings(cfg, track=False))
    assert not report.passed and report.metrics["spectra_store/passed"] == 0
    failures = json.loads((cfg.paths.validation / "summary.json").read_text())["failures"]
    assert [(f["suite"], f["expectation"]) for f in failures] == [("spectra_store", "expect_column_values_to_be_unique")]
    allowed = cfg.with_overrides({"validation.allow_duplicate_stars": True})
    assert validate.run(settings(allowed, track=False)).passed
    data = training_data(allowed)
    assert data.catalog["APOGEE_ID"].is_unique and len(set(data.rows)) == len(data.rows)


def test_labels_changed_after_validation_do_not_train(project_copy):
    import pandas as pd

    labels = project_copy / "derived" / "labels" / "labels.parquet"
    frame = pd.read_parquet(labels)
    frame.loc[0, "TEFF"] = np.nan  # a NaN label slipped in after the gates ran
    frame.to_parquet(labels)
    result = run("train", "--no-track", "--params", project_copy / "params.yaml", cwd=project_copy)
    assert result.returncode == 2 and "changed since they were validated" in result.stderr
