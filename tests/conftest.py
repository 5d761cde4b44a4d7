from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from apogeenet.examples import example_files

# Offline and quiet (STACK.md); Prefect's temporary server starts slowly on a loaded machine.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("APOGEENET_SHARED", REPO.parent / "shared"))
REAL_APSTAR = SHARED / "data" / "real" / "apstar_dr13"


@pytest.fixture(scope="session")
def real_apstar_dir() -> Path:
    if not REAL_APSTAR.is_dir():
        pytest.skip(f"real apStar files not found at {REAL_APSTAR} (../shared is absent)")
    return REAL_APSTAR


@pytest.fixture(scope="session")
def multi_visit_file() -> Path:
    return next(p for p in example_files() if "2M00452143" in p.name)


@pytest.fixture(scope="session")
def single_visit_file() -> Path:
    return next(p for p in example_files() if "2M03290406" in p.name)


@pytest.fixture()
def fake_sas():
    from sas_server import FakeSAS, start

    sas = FakeSAS()
    server = start(sas)
    yield sas
    server.shutdown()
    server.server_close()


SMALL_YSO = {"n_train": 600, "n_test": 200, "epochs": 2, "batch_size": 128, "learning_rate": 0.003, "seed": 1}


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    """A small project (120-star survey, store, labels) shared by the stage tests."""
    from apogeenet.config import load_params
    from apogeenet.stages import label_stage, validate_stage
    from apogeenet.store import ingest
    from apogeenet.synth.survey import make_survey

    root = tmp_path_factory.mktemp("project")
    make_survey(root / "data" / "synth", 120, seed=9, fractions={"giant": 0.4, "dwarf": 0.1,
                                                                 "mdwarf": 0.3, "yso": 0.2})
    ingest(root / "data" / "synth" / "apStar", root / "derived" / "store", workers=1)
    params = {"paths": {k: str(root / v) for k, v in {
        "raw": "data/synth", "spectra": "data/synth/apStar", "store": "derived/store",
        "labels": "derived/labels", "validation": "derived/validation"}.items()},
        "yso": SMALL_YSO, "validation": {"split_tolerance": 0.2}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_params(root / "params.yaml")
    label_stage(cfg, track=False)  # every test starts from validated labels
    assert validate_stage(cfg).success
    return root
