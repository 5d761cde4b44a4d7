"""MLflow at the edge: the project's local tracking store, the typed result every stage returns,
and the one helper that logs it (:class:`Tracker`).

The store is SQLite at ``mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts`` (MLflow 3
deprecates the plain file store). ``MLFLOW_TRACKING_URI`` overrides it. ``mlflow`` is imported
here only, lazily, so library code and ``--help`` never pay for it.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apogeenet.atomic import process_alive

__all__ = ["StageResult", "Tracker", "data_version", "flat_params", "mlflow_run", "stage_run", "tracking_lock",
           "tracking_root", "tracking_uri"]


@dataclass(frozen=True)
class StageResult:
    """What a stage hands back to the CLI and the flows, and what :meth:`Tracker.log` records."""

    stage: str
    metrics: dict[str, Any]
    """Numbers (and a few structured values) of the stage; numeric finite ones go to MLflow."""
    params: dict[str, Any]
    """The stage's full resolved parameters (flattened, dotted keys)."""
    report: str
    """What a person reads: printed by the CLI and the flows."""
    artifacts: dict[Path, str] = field(default_factory=dict)
    """File or directory -> the MLflow artifact path it is logged under."""
    tags: dict[str, str] = field(default_factory=dict)
    passed: bool = True
    """False when the stage ran but its check failed (validation, evaluate's bars)."""
    experiment_id: str = ""
    run_id: str = ""
    """The MLflow run the result was logged to (empty when not tracked)."""

    def mlflow_link(self, ui: str = "http://127.0.0.1:5000") -> str:
        """Where the run opens in ``mlflow ui`` (its default address), or ``""``."""
        return f"{ui}/#/experiments/{self.experiment_id}/runs/{self.run_id}" if self.run_id else ""


def flat_params(section: Any, prefix: str = "") -> dict[str, Any]:
    """A config section (or nested dict) as ``{"a.b": value}`` with plain values."""
    values = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flat_params(value, f"{name}.")
        else:
            flat[name] = ",".join(map(str, value)) if isinstance(value, list) else value
    return flat


def data_version(labels_file: Path, dvc_file: Path = Path("data.dvc")) -> str:
    """The DVC hash of the raw inputs (``data.dvc``) and a hash of the label catalog: the
    ``data_version`` tag of training and evaluation runs."""
    import hashlib

    import yaml

    raw = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"] if dvc_file.exists() else "untracked"
    label_hash = hashlib.sha256(labels_file.read_bytes()).hexdigest()[:12] if labels_file.exists() else "none"
    return f"data={raw};labels={label_hash}"


class Tracker:
    """Where a stage reports while it runs: an MLflow run (``active``) or nowhere."""

    def __init__(self, active: bool) -> None:
        self.active = active

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        """Per-epoch (or per-round) curves."""
        if self.active:
            import mlflow

            mlflow.log_metrics(metrics, step=step)

    @contextmanager
    def nested(self, run_name: str) -> Iterator[Tracker]:
        """A child run (one adaptation round)."""
        if not self.active:
            yield self
            return
        import mlflow

        with mlflow.start_run(run_name=run_name, nested=True):
            yield self

    def log(self, result: StageResult) -> StageResult:
        """Log parameters, finite numeric metrics, tags and artifacts of ``result``; returns it with
        the run's ids."""
        if not self.active:
            return result
        import dataclasses

        import mlflow

        mlflow.log_params({k: "" if v is None else v for k, v in result.params.items()})
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)})
        mlflow.set_tags({**result.tags, "passed": str(result.passed)})
        for path, artifact_path in result.artifacts.items():
            if Path(path).is_dir():
                mlflow.log_artifacts(str(path), artifact_path=artifact_path)
            else:
                mlflow.log_artifact(str(path), artifact_path=artifact_path)
        run = mlflow.active_run().info
        return dataclasses.replace(result, experiment_id=run.experiment_id, run_id=run.run_id)


@contextmanager
def stage_run(track: bool, experiment: str, run_name: str, *, tags: dict[str, str] | None = None
              ) -> Iterator[Tracker]:
    """A :class:`Tracker` inside an MLflow run (:func:`mlflow_run`) when ``track``, else a silent one."""
    if not track:
        yield Tracker(False)
        return
    with mlflow_run(experiment, run_name, tags=tags):
        yield Tracker(True)


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
_EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
"""MLflow 3's UI opens such an experiment in its model-training view (runs, metrics, charts),
not the GenAI view (traces, prompts) it picks for an untagged one."""


def _close_killed_runs(experiment_id: str) -> None:
    """Mark KILLED the RUNNING runs of this host whose process no longer exists, and their
    nested runs."""
    import mlflow

    client = mlflow.MlflowClient()
    host = socket.gethostname()
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    killed = {run.info.run_id for run in running
              if run.data.tags.get(_HOST_TAG) == host and run.data.tags.get(_PID_TAG, "").isdigit()
              and not process_alive(int(run.data.tags[_PID_TAG]))}
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
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            artifacts = (Path(root).resolve() / "artifacts").as_uri()
            mlflow.create_experiment(experiment, artifact_location=artifacts, tags=_EXPERIMENT_TAGS)
        elif any(found.tags.get(k) != v for k, v in _EXPERIMENT_TAGS.items()):  # made by an older version
            for key, value in _EXPERIMENT_TAGS.items():
                mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
        experiment_id = mlflow.set_experiment(experiment).experiment_id
    _close_killed_runs(experiment_id)
    owner = {_PID_TAG: str(os.getpid()), _HOST_TAG: socket.gethostname()}
    with mlflow.start_run(run_name=run_name, tags={**(tags or {}), **owner}) as run:
        try:
            yield run
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
