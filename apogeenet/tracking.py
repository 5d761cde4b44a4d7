"""MLflow at the edge: the typed result every stage returns, and the one decorator that owns a
stage's MLflow run (:func:`tracked`): it opens the run, hands the stage a :class:`Tracker` for
its curves, logs the result's parameters, metrics, tags and artifacts, and registers the model
the result offers. ``mlflow`` is imported here, in :mod:`apogeenet.registry` and :mod:`apogeenet.pyfunc` only, lazily, so
library code and ``--help`` never pay for it; where the store is: :mod:`apogeenet.mlflow_store`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apogeenet.atomic import process_alive
from apogeenet.errors import UserFacingError
from apogeenet.mlflow_store import tracking_lock, tracking_uri

__all__ = ["EXPERIMENT_DESCRIPTIONS", "Registration", "StageResult", "Tracker", "data_version", "flat_params", "mlflow_run", "tracked"]


@dataclass(frozen=True)
class Registration:
    """A model a stage offers the registry: the saved predictor, an input example (a request of
    one spectrum, :func:`apogeenet.online.example_input`), how to measure a model's loss on the
    current dev set (the champion comparison) and the function that logs and registers it
    (:func:`apogeenet.pyfunc.log_and_register`: only the stage that registers imports it)."""

    predictor: Any
    example: Any
    dev_loss_of: Callable[[Any], float]
    log_and_register: Callable[..., dict]


@dataclass(frozen=True)
class StageResult:
    """What a stage hands back to the CLI and the flows, and what :func:`tracked` records."""

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
    register: Registration | None = None
    """A model to register (logged and registered by :func:`tracked`, then dropped)."""
    runs: tuple[StageResult, ...] = ()
    """Results logged as runs of their own beside the stage's (the baselines, one per model)."""
    started: float | None = None
    """When the work began (``time.time()``), for a result logged as a run after it (``runs``)."""
    experiment_id: str = ""
    run_id: str = ""
    """The MLflow run the result was logged to (empty when not tracked)."""

    def mlflow_link(self) -> str:
        """Where the run opens in ``apogeenet ui`` (its model-training view), or ``""``."""
        from apogeenet.mlflow_store import ui_link

        return ui_link(self.experiment_id, self.run_id) if self.run_id else ""


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
    import yaml

    from apogeenet.gate import file_sha256

    raw = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"] if dvc_file.exists() else "untracked"
    label_hash = file_sha256(labels_file)[:12] if labels_file.exists() else "none"
    return f"data={raw};labels={label_hash}"


class Tracker:
    """Where a stage reports while it runs: an MLflow run (``active``) or nowhere; ``progress``
    says whether the stage draws progress bars (a terminal) or not (a flow)."""

    def __init__(self, active: bool, progress: bool = False) -> None:
        self.active = active
        self.progress = progress

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
        """Log parameters, finite numeric metrics, tags and artifacts of ``result`` in the current
        run and register the model it offers; returns it with the run's ids (and the registry's
        answer in its metrics and report)."""
        if not self.active:
            return dataclasses.replace(result, register=None)
        import mlflow

        mlflow.log_params({k: "" if v is None else v for k, v in result.params.items()})
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)})
        mlflow.set_tags({**result.tags, "passed": str(result.passed)})
        for path, artifact_path in result.artifacts.items():
            for file, folder in _artifact_files(Path(path), artifact_path):
                mlflow.log_artifact(str(file), artifact_path=folder)
        if result.register is not None:
            result = _registered(result)
        run = mlflow.active_run().info
        return dataclasses.replace(result, experiment_id=run.experiment_id, run_id=run.run_id, register=None)


def _artifact_files(path: Path, artifact_path: str) -> Iterator[tuple[Path, str]]:
    """The files of ``path`` (a file or a folder) with the artifact folder each goes to; hidden
    files and folders (a catalog's ``.parts``, locks) are working state, not results."""
    if not path.is_dir():
        yield path, artifact_path
        return
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path)
        if file.is_file() and not any(part.startswith(".") for part in relative.parts):
            yield file, "/".join([artifact_path, *relative.parent.parts])


def _registered(result: StageResult) -> StageResult:
    """Log and register the model ``result`` offers (its ``log_and_register``)."""
    import mlflow

    offer = result.register
    registry = offer.log_and_register(offer.predictor, offer.example, dev_loss_of=offer.dev_loss_of)
    mlflow.set_tags({"registered_version": registry["version"], "champion": str(registry["promoted"])})
    replaced = registry.pop("replaced_unusable_champion", "")
    warning = f"the champion could not be read and was replaced ({replaced})\n" if replaced else ""
    return dataclasses.replace(result, metrics={**result.metrics, **registry},
                               report=f"{warning}registered apogeenet version {registry['version']} (candidate); "
                                      f"champion is version {registry['champion_version']}\n{result.report}")


def tracked(experiment: str, run_name: str | None) -> Callable[[Callable[[Any, Tracker], StageResult]],
                                                                Callable[..., StageResult]]:
    """Make ``stage(cfg, tracker) -> StageResult`` the entry ``stage(cfg, *, progress=False)``.

    With ``cfg.tracking.enabled`` the stage runs inside an MLflow run of ``experiment`` named
    ``run_name`` and its result is logged (and its model registered) there; the results in
    ``result.runs`` are each logged as a run of their own in the same experiment (named by their
    stage). ``run_name`` None: the stage has no run of its own, only those.
    """
    def decorate(stage: Callable[[Any, Tracker], StageResult]) -> Callable[..., StageResult]:
        @functools.wraps(stage)
        def entry(cfg, *, progress: bool = False) -> StageResult:
            track = cfg.tracking.enabled
            if not track or run_name is None:
                result = Tracker(False).log(stage(cfg, Tracker(False, progress)))
            else:
                with mlflow_run(experiment, run_name):
                    result = Tracker(True, progress).log(stage(cfg, Tracker(True, progress)))
            if track and result.runs:
                logged = []
                for own in result.runs:
                    with mlflow_run(experiment, own.stage, started=own.started):
                        logged.append(Tracker(True).log(own))
                result = dataclasses.replace(result, runs=tuple(logged))
            return result

        return entry

    return decorate


_PID_TAG, _HOST_TAG = "apogeenet.pid", "apogeenet.host"
_EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
"""What the experiment holds (model training); MLflow 3.17's UI picks its view from the link
instead (:func:`apogeenet.mlflow_store.ui_link`)."""
EXPERIMENT_DESCRIPTIONS = {
    "labels": "Training labels (Olney et al. 2020, sect. 2.2-2.4): Payne, photometric M-dwarf and YSO labels, "
              "Table 1, the YSO photometric network. One run per `apogeenet label`.",
    "validate": "Great Expectations gates on the labels, the colour/magnitude cuts and the spectra store, "
                "before anything trains. One run per `apogeenet validate`.",
    "train": "APOGEE Net: `pretrain` runs (sect. 3.3, the training profile of params.yaml), `adapt` runs "
             "(sect. 3.4, the 5 %-Payne rounds as nested runs) and `calibrate` runs, which fit the sigma "
             "calibration and register the model as a version of `apogeenet`.",
    "evaluate": "The models side by side on the same splits: APOGEE Net (Tables 2/3, quality bar, adaptation "
                "check), ridge and The Cannon. Compare the runs; the metrics `accuracy/*` are the 24 test "
                "RMS values against the labels and the truth.",
    "predict": "Batch inference of a registered model over a spectra store: the Table 4 catalog with "
               "Monte-Carlo sigma, flags and the sect. 4 YSO selection.",
}
"""Each experiment's description (the MLflow UI shows it on the experiment's page)."""


def _source() -> str:
    """What started the run, for its Source column: the Prefect flow run (not Prefect's engine
    module that MLflow would name) or the command line."""
    import sys

    if "prefect" in sys.modules:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            return f"prefect flow {context.flow.name} ({context.flow_run.name})"
    return " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:2]])


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


def _check_artifacts_inside(experiment, root: Path) -> None:
    """A tracking store copied with its workspace still names the original's artifact folder
    (MLflow stores it absolute): refuse to write there rather than mix two workspaces' runs."""
    from urllib.parse import unquote, urlparse

    location = urlparse(experiment.artifact_location)
    if location.scheme != "file":
        return
    folder = Path(unquote(location.path)).resolve()
    if not folder.is_relative_to(root):
        raise UserFacingError(f"the tracking store {root} was copied from another workspace: its experiment "
                              f"{experiment.name!r} keeps artifacts in {folder}; remove {root} in this copy (or "
                              "set MLFLOW_TRACKING_URI) so that runs here are logged here")


@contextmanager
def mlflow_run(experiment: str, run_name: str, *, root: str | os.PathLike = "mlruns",
               tags: dict[str, str] | None = None, started: float | None = None) -> Iterator[object]:
    """Start a run in ``experiment`` (created with artifacts under ``root/artifacts``).

    An exception inside the block marks the run FAILED and is re-raised, so a crashed run never
    looks finished. A run whose process was killed (``kill -9``: nothing can run at that moment)
    is marked KILLED by the next run in the same experiment on the same host: each run carries
    its process id and host name as tags. ``started`` (a ``time.time()``) opens the run at that
    moment: a run logged after its work (a baseline's fit) spans the work.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    with tracking_lock("setup", root):  # two stages starting on a fresh store: one creates it
        found = mlflow.get_experiment_by_name(experiment)
        wanted = {**_EXPERIMENT_TAGS, **({"mlflow.note.content": EXPERIMENT_DESCRIPTIONS[experiment]}
                                         if experiment in EXPERIMENT_DESCRIPTIONS else {})}
        if found is None:
            artifacts = (Path(root).resolve() / "artifacts").as_uri()
            mlflow.create_experiment(experiment, artifact_location=artifacts, tags=wanted)
        elif tracking_uri(root) == f"sqlite:///{Path(root).resolve() / 'mlflow.db'}":  # this folder's own store
            _check_artifacts_inside(found, Path(root).resolve())
        if found is not None and any(found.tags.get(k) != v for k, v in wanted.items()):  # an older version's
            for key, value in wanted.items():
                mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
        experiment_id = mlflow.set_experiment(experiment).experiment_id
    _close_killed_runs(experiment_id)
    owner = {_PID_TAG: str(os.getpid()), _HOST_TAG: socket.gethostname(), "mlflow.source.name": _source()}
    if started is not None:  # a run that records work done before it opened spans that work
        run_id = mlflow.MlflowClient().create_run(experiment_id, start_time=int(started * 1000),
                                                  tags={**(tags or {}), **owner, "mlflow.runName": run_name}).info.run_id
        opened = mlflow.start_run(run_id=run_id)
    else:
        opened = mlflow.start_run(run_name=run_name, tags={**(tags or {}), **owner})
    with opened as run:
        try:
            yield run
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
