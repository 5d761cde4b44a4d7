"""Where the project's local MLflow tracking store is, and the registered model's name: SQLite at ``mlruns/mlflow.db`` with
artifacts under ``mlruns/artifacts`` (MLflow 3 deprecates the plain file store), or
``$MLFLOW_TRACKING_URI``; and the file locks beside it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CHAMPION_URI", "LOCAL_STORE", "MODEL_NAME", "UI_ADDRESS", "tracking_lock", "tracking_root", "tracking_uri",
           "ui_link"]

MODEL_NAME = "apogeenet"
"""The registered model's name."""
CHAMPION_URI = f"models:/{MODEL_NAME}@champion"
"""The registry's best version (by dev loss): what predict and adapt use by default."""


UI_ADDRESS = "http://127.0.0.1:5000"
"""Where ``apogeenet ui`` (and ``mlflow ui``) serve the tracking store by default."""
LOCAL_STORE = "mlruns/mlflow.db"
"""The local SQLite store, relative to the working directory (without $MLFLOW_TRACKING_URI)."""


def tracking_root(root: str | os.PathLike = "mlruns") -> Path:
    """The local tracking directory (created if missing): the SQLite store's folder, or ``root``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    folder = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else Path(root)
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def tracking_lock(name: str, root: str | os.PathLike = "mlruns") -> Iterator[None]:
    """A file lock beside the tracking store, for what processes sharing it must do one at a
    time: creating the SQLite schema and experiments, moving the champion alias."""
    from filelock import FileLock

    with FileLock(str(tracking_root(root) / f".{name}.lock"), timeout=600):
        yield


def tracking_uri(root: str | os.PathLike = "mlruns") -> str:
    """``$MLFLOW_TRACKING_URI`` or SQLite under ``root`` (created if missing)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{tracking_root(root) / Path(LOCAL_STORE).name}"


def ui_link(experiment_id: str = "", run_id: str = "", *, registered: str = "", ui: str = UI_ADDRESS) -> str:
    """A link into the MLflow UI that opens in its model-training view (runs, metrics, models):
    MLflow 3 picks the view from the link's ``workflowType`` (else the GenAI view, traces) and
    keeps it on the pages the link leads to. The experiments list without ids; ``registered`` a
    registered model's page instead."""
    if registered:
        path = f"/#/models/{registered}"
    else:
        path = "/#/experiments" + (f"/{experiment_id}" if experiment_id else "") + (f"/runs/{run_id}" if run_id else "")
    return f"{ui}{path}?workflowType=machine_learning"
