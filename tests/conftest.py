from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """A small project (120-star survey, store, validated labels, params.yaml) shared by the
    stage tests (tests/support/factories.py)."""
    from factories import project

    return project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server per test session (per xdist worker) for the flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):  # a loaded 2-core machine starts it slowly
        yield


BUILDS_A_PROJECT = {"project", "trained", "small_tree", "tree", "labelled", "project_copy", "odd_tree",
                    "prefect_harness"}
"""Fixtures that make a survey, a store, labels, a trained model or a Prefect server."""
WHOLE_SYSTEM = {"system", "flows"}
"""Test folders that run whole commands in processes, flows and races."""


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` (``run.py test --fast`` leaves them out) the tests that need a built project
    or run the whole system, whatever their own body costs."""
    for item in items:
        folder = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
        if folder in WHOLE_SYSTEM or BUILDS_A_PROJECT & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
