"""MLflow at the edge: the project's local tracking store and a run context for commands/flows.

The store is SQLite at ``mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts`` (MLflow 3
deprecates the plain file store). ``MLFLOW_TRACKING_URI`` overrides it. ``mlflow`` is imported
here only, lazily, so library code and ``--help`` never pay for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["mlflow_run", "tracking_uri"]


def tracking_uri(root: str | os.PathLike = "mlruns") -> str:
    """``$MLFLOW_TRACKING_URI`` or SQLite under ``root`` (created if missing)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


@contextmanager
def mlflow_run(experiment: str, run_name: str, *, root: str | os.PathLike = "mlruns",
               tags: dict[str, str] | None = None) -> Iterator[object]:
    """Start a run in ``experiment`` (created with artifacts under ``root/artifacts``).

    An exception inside the block marks the run FAILED and is re-raised, so a crashed run never
    looks finished.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    if mlflow.get_experiment_by_name(experiment) is None:
        artifacts = (Path(root).resolve() / "artifacts").as_uri()
        mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        try:
            yield run
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
