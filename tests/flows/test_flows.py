"""Every Prefect flow run once against the session's temporary Prefect server, and the tasks
whose logic does not need one through ``.fn()``."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from factories import tracking_in

pytestmark = pytest.mark.slow


def _runs(uri: str, experiment: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def _artifact(key: str) -> str:
    """The newest Markdown artifact ``key``, read back through the Prefect client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, f"no artifact {key}"
    assert found[0].type == "markdown"
    return found[0].data


def _links_its_run(markdown: str, runs: pd.DataFrame) -> bool:
    """The report links a run of ``runs`` in MLflow's model-training view, and shows its tables as
    Markdown tables (no code fence; a blank line before each)."""
    assert "```" not in markdown and "\n\n| " in markdown or "|" not in markdown
    return any(f"/runs/{run_id}?workflowType=machine_learning)" in markdown for run_id in runs["run_id"])


def test_label_flow_builds_labels_validates_and_logs(project, tmp_path, prefect_harness):
    from flows.label import label_flow

    with tracking_in(tmp_path) as uri:
        metrics = label_flow(str(project / "params.yaml"), track=True)
    assert metrics["validation"]["catalog_integrity/passed"] == 1
    labels = _runs(uri, "labels")
    assert len(labels) == 1 and labels["status"][0] == "FINISHED"
    assert labels["metrics.n_labels"][0] == metrics["n_labels"]
    assert labels["params.yso.n_train"][0] == "600" and labels["params.labels.recipe"][0] == "released"
    validation = _runs(uri, "validate")
    assert len(validation) == 1 and validation["tags.passed"][0] == "True"
    assert _links_its_run(_artifact("label-report"), labels)
    report = _artifact("validate-report")
    assert "catalog_integrity" in report and _links_its_run(report, validation)


def test_a_failing_gate_fails_the_validate_task(project, tmp_path):
    from flows.label import ValidationFailed, validate_task

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["validation"]["min_finite_fraction"] = 0.99  # synthetic spectra have 7214/8575 pixels
    params["paths"]["validation"] = str(tmp_path / "strict")
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValidationFailed, match="FAILED spectra_store"):
        validate_task.fn(str(tmp_path / "strict.yaml"), track=False)


def test_train_flow_pretrains_and_registers(trained, prefect_harness):
    from flows.train import train_flow

    root, _ = trained
    with tracking_in(root) as uri:
        metrics = train_flow("pretrain", str(root / "params.yaml"))
    assert metrics["version"] == "2" and "test/full/mse" in metrics
    runs = _runs(uri, "train")  # the fixture's and the flow's: each trains, then calibrates
    assert sorted(runs["tags.mlflow.runName"]) == ["calibrate", "calibrate", "pretrain", "pretrain"]
    trained = runs[runs["tags.mlflow.runName"] == "pretrain"]
    assert (trained["params.train.profiles.tiny.max_epochs"] == "1").all()
    assert "params.predict.draws" not in trained or trained["params.predict.draws"].isna().all()  # training reads none
    report = _artifact("train-report")  # Tables 2/3 of the run, linked
    assert "Table 2" in report and _links_its_run(report, trained)
    calibrated = _artifact("calibrate-report")
    assert "registered apogeenet version 2" in calibrated and _links_its_run(calibrated, runs)


def test_evaluate_flow_puts_the_network_beside_the_baselines(trained, prefect_harness):
    from flows.evaluate import evaluate_flow

    root, _ = trained
    with tracking_in(root) as uri:
        metrics = evaluate_flow(str(root / "calibrated" / "model.pt"), params_path=str(root / "params.yaml"))
    assert metrics["quality/passed"] in (0, 1) and len([k for k in metrics if k.endswith("_gain")]) == 12
    assert (root / "evaluation" / "flow" / "quality.md").read_text().startswith("Quality bar of")
    comparison = pd.read_csv(root / "evaluation" / "flow" / "comparison.csv")
    assert {"apogeenet vs truth", "ridge vs truth", "cannon vs truth"} <= set(comparison.columns)
    ratios = np.array([v for k, v in metrics.items() if k.startswith("comparison/") and k.endswith("_ratio")])
    assert len(ratios) == 12 and metrics["comparison/pairs"] == 24  # a cell ahead wins both, one behind loses one
    assert 2 * (ratios < 1).sum() <= metrics["comparison/wins"] <= 24 - (ratios > 1).sum()
    runs = _runs(uri, "evaluate").set_index("tags.mlflow.runName")
    assert set(runs.index) == {"apogeenet", "ridge", "cannon"}  # one run per model, side by side
    headline = sorted(c for c in runs.columns if c.startswith("metrics."))[:24]  # what MLflow's compare lists first
    assert headline == sorted(f"metrics.accuracy/{r}/{g}/{p}" for r in ("vs_labels", "vs_truth")
                              for g in ("full", "payne", "mstar", "yso") for p in ("teff", "logg", "fe_h"))
    for name in ("test/full/teff_scatter", "test/payne/logg_scatter_truth", "accuracy/vs_truth/yso/teff"):
        assert runs[f"metrics.{name}"].notna().all(), name  # the same metric names for every model
    assert runs.loc["apogeenet", "params.evaluate.min_gain.teff"] == "5.0"
    kind = mlflow.get_experiment_by_name("evaluate").tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"  # MLflow 3's UI opens the model-training view
    evaluated = _artifact("evaluate-report")
    assert "Quality bar of" in evaluated and _links_its_run(evaluated, runs.reset_index())
    verdict = evaluated.splitlines()[0]  # in words, first: a completed run whose bar is not met is not a crash
    assert verdict == "**evaluate: done, every check passed**" or verdict.startswith(
        "**evaluate: done, but not every check passed (checks failed: ")
    baselines = _artifact("baselines-report")  # one link per model's run
    assert "ridge" in baselines and all(f"/runs/{runs.loc[m, 'run_id']}?" in baselines for m in ("ridge", "cannon"))


def test_predict_flow_on_a_local_dask_cluster_gives_the_one_process_catalog(trained, prefect_harness):
    """The flow's shards on a LocalCluster of 2 worker processes, the catalog merged from their
    parts: byte for byte the catalog of `apogeenet predict` in one process."""
    from apogeenet.config import load_params
    from apogeenet.pipeline import predict
    from factories import settings
    from flows.predict import predict_flow

    root, _ = trained
    cfg = load_params(root / "params.yaml")
    environment = dict(os.environ)
    with tracking_in(root) as uri:
        metrics = predict_flow(str(root / "calibrated" / "model.pt"), params_path=str(root / "params.yaml"),
                               cluster="local", workers=2)
    # the Dask nannies' OMP_NUM_THREADS=1 & co. stay in the workers, not in this process's children
    assert {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} == {
        k: environment.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tracking_in(root):
        predict.run(settings(cfg, model=str(root / "calibrated" / "model.pt"), out_dir=root / "one-process", track=False))
    catalog = pd.read_parquet(root / "catalog" / "catalog.parquet")
    assert len(catalog) == metrics["n_spectra"] and metrics["n_clean"] == (catalog["FLAGS"] == 0).sum()
    for name in ("catalog.parquet", "catalog.csv", "catalog_clean.parquet"):
        assert (root / "catalog" / name).read_bytes() == (root / "one-process" / name).read_bytes(), name
    parts = list((root / "catalog" / ".parts").glob("*/part-*.parquet"))
    assert len(parts) == -(-metrics["n_spectra"] // 32) > 1  # shard_size 32: several shards ran
    runs = _runs(uri, "predict")
    assert len(runs) == 1 and runs["params.predict.draws"][0] == "5"
    report = _artifact("predict-report")  # the catalog summary, linked to its MLflow run
    assert f"Catalog of {metrics['n_spectra']} spectra" in report and _links_its_run(report, runs)