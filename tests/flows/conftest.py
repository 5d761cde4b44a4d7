from __future__ import annotations

import pytest
import yaml
from factories import tracking_in

TINY_PROFILE = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 16, "max_epochs": 1, "patience": 1,
                "grad_clip": 1.0}


@pytest.fixture(scope="module")
def trained(project, tmp_path_factory):
    """The small project with a tiny trained model (an ensemble of two), calibrated (``root/calibrated/model.pt``) and
    registered as champion in its own MLflow store; returns (root, {"MLFLOW_TRACKING_URI": …})."""
    from apogeenet.config import load_params
    from apogeenet.pipeline import calibrate, train

    root = tmp_path_factory.mktemp("trained")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["paths"] |= {k: str(root / k) for k in ("model", "adapted", "calibrated", "baselines", "evaluation",
                                                   "catalog")}
    params |= {"train": {"profile": "tiny", "profiles": {"tiny": {**TINY_PROFILE, "members": 2}}}, "predict": {"draws": 5, "shard_size": 32, "spectra_per_block": 16},
               "adapt": {"max_rounds": 1, "patience_rounds": 1, "training": {**TINY_PROFILE, "learning_rate": 2e-5}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    params["calibration"] = {**params.get("calibration", {}), "model": str(root / "model" / "model.pt")}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with tracking_in(root) as uri:
        assert "version" not in train.run(load_params(root / "params.yaml")).metrics  # training registers nothing
        result = calibrate.run(load_params(root / "params.yaml"))
    assert result.metrics["version"] == "1" and result.metrics["promoted"]
    # an ensemble's calibration also reports the terms its pixel-noise σ alone would need
    assert {"sigma_calibration/monte_carlo/all/teff_a_pixel_only", "sigma_calibration/delta/all/logg_b_pixel_only",
            "sigma_calibration/monte_carlo/all/teff_a"} <= set(result.metrics)
    return root, {"MLFLOW_TRACKING_URI": uri}
