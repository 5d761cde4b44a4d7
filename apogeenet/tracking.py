"""MLflow at the edge: the project's local tracking store and a run context for commands/flows.

The store is SQLite at ``mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts`` (MLflow 3
deprecates the plain file store). ``MLFLOW_TRACKING_URI`` overrides it. ``mlflow`` is imported
here only, lazily, so library code and ``--help`` never pay for it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["mlflow_run", "tracking_lock", "tracking_root", "tracking_uri"]


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
    return f"sqlite:///{tracking_root(root) / 'mlflow.db'}"


_PID_TAG, _HOST_TAG = "apogeenet.pid", "apogeenet.host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _close_killed_runs(experiment_id: str) -> None:
    """Mark KILLED the RUNNING runs of this host whose process no longer exists, and their
    nested runs."""
    import mlflow

    client = mlflow.MlflowClient()
    host = socket.gethostname()
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    killed = {run.info.run_id for run in running
              if run.data.tags.get(_HOST_TAG) == host and run.data.tags.get(_PID_TAG, "").isdigit()
              and not _alive(int(run.data.tags[_PID_TAG]))}
    for run in running:
        if run.info.run_id in killed or run.data.tags.get("mlflow.parentRunId") in killed:
            client.set_terminated(run.info.run_id, status="KILLED")


@contextmanager
def mlflow_run(experiment: str, run_name: str, *, root: str | os.PathLike = "mlruns",
               tags: dict[str, str] | None = None) -> Iterator[object]:
    """Start a run in ``experiment`` (created with artifacts under ``root/artifacts``).

    An exception inside the block marks the run FAILED and is re-raised, so a crashed run never
    looks finished. A run whose process was killed (``kill -9``: nothing can run at that moment)
    is marked KILLED by the next run in the same experiment on the same host: each run carries
    its process id and host name as tags.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    with tracking_lock("setup", root):  # two stages starting on a fresh store: one creates it
        if mlflow.get_experiment_by_name(experiment) is None:
            artifacts = (Path(root).resolve() / "artifacts").as_uri()
            mlflow.create_experiment(experiment, artifact_location=artifacts)
        experiment_id = mlflow.set_experiment(experiment).experiment_id
    _close_killed_runs(experiment_id)
    owner = {_PID_TAG: str(os.getpid()), _HOST_TAG: socket.gethostname()}
    with mlflow.start_run(run_name=run_name, tags={**(tags or {}), **owner}) as run:
        try:
            yield run
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
