"""A kill -9 at a dangerous moment loses nothing: training resumes to the uninterrupted result,
the catalog stays whole, MLflow runs are marked KILLED, registrations at once or killed leave the
registry consistent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kills import killed_at, prediction_setup


@pytest.mark.slow
@pytest.mark.parametrize("nth", [2, 3])  # 2: last.pt of epoch 0 … 3: best.pt of epoch 1
def test_training_killed_while_saving_resumes_to_the_uninterrupted_result(labelled, tmp_path, nth):
    from training_worker import train

    store, catalog = labelled
    clean = train(store, catalog, tmp_path / "clean")
    killed_at("torch:save", nth, f"from training_worker import train\n"
                                  f"train({str(store)!r}, {str(catalog)!r}, {str(tmp_path / 'killed')!r})",
               half_write=True)
    from apogeenet.weights import load_weights

    for checkpoint in (tmp_path / "killed").glob("[!.]*.pt"):  # none is torn: old or new, never half
        load_weights(checkpoint)
    resumed = train(store, catalog, tmp_path / "killed")
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["best.pt", "last.pt"]
    assert [h["dev_loss"] for h in resumed.history] == [h["dev_loss"] for h in clean.history]
    assert (resumed.best_dev_loss, resumed.best_epoch) == (clean.best_dev_loss, clean.best_epoch)
    for name, weights in clean.model.state_dict().items():
        assert torch.equal(weights, resumed.model.state_dict()[name]), name


@pytest.mark.slow
def test_a_killed_mlflow_run_is_marked_killed_by_the_next(tmp_path, monkeypatch):
    import mlflow

    from apogeenet.tracking import mlflow_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    child = ("import os, signal\nfrom apogeenet.tracking import mlflow_run\n"
             f"with mlflow_run('stage', 'doomed', root={str(tmp_path)!r}):\n"
             "    os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert result.returncode == -9
    with mlflow_run("stage", "next", root=tmp_path):
        pass
    runs = mlflow.search_runs(experiment_names=["stage"], output_format="list")
    assert {r.info.run_name: r.info.status for r in runs} == {"doomed": "KILLED", "next": "FINISHED"}


@pytest.mark.slow
@pytest.mark.parametrize("nth", [1, 2])  # after the catalog's FITS and Parquet, in the clean view's files
def test_a_kill_while_writing_the_catalog_leaves_the_previous_one_whole(small_tree, tmp_path, nth):
    import pandas as pd

    from apogeenet.config import load_params
    from apogeenet.pipeline import predict
    from factories import settings

    params, model = prediction_setup(small_tree, tmp_path)
    cfg = load_params(params)
    predict.run(settings(cfg, model=str(model), draws=3, track=False))  # run A
    catalog = tmp_path / "catalog"
    before = {p.name: p.read_bytes() for p in catalog.glob("catalog*")}
    killed_at("pandas:DataFrame.to_csv", nth,  # run B, another seed, killed while writing
               f"from apogeenet.config import load_params\nfrom apogeenet.pipeline import predict\n"
               f"predict.run(load_params({str(params)!r}).with_overrides({{'predict.seed': 1, 'predict.model': "
               f"{str(model)!r}, 'predict.draws': 3, 'tracking.enabled': False}}))")
    assert {p.name: p.read_bytes() for p in catalog.glob("catalog*")} == before  # A, whole, nothing of B
    seeded = cfg.with_overrides({"predict.seed": 1})
    predict.run(settings(seeded, model=str(model), draws=3, track=False))  # rerun B
    predict.run(settings(seeded, model=str(model), out_dir=tmp_path / "uninterrupted", draws=3, track=False))
    for name in ("catalog.parquet", "catalog_clean.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(catalog / name), pd.read_parquet(tmp_path / "uninterrupted" / name))


@pytest.mark.slow
def test_two_registrations_at_once_leave_the_better_model_champion(tmp_path):
    """A champion exists; two better models register 0.3 s apart, and measuring a model takes 1 s.
    Both used to measure the old champion at the same time and both promote themselves: the one
    that finished last (the worse) ended as champion."""
    import mlflow

    from apogeenet.registry import MODEL_NAME

    worker = Path(__file__).parents[1] / "support" / "registration_worker.py"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(worker.parent)}
    first = subprocess.run([sys.executable, str(worker), str(tmp_path), "0.95"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    better = subprocess.Popen([sys.executable, str(worker), str(tmp_path), "0.5"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time

    time.sleep(0.3)
    worse = subprocess.Popen([sys.executable, str(worker), str(tmp_path), "0.9"], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for process in (better, worse):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.tags["dev_loss"] == "0.25"
    assert {v.tags["dev_loss"] for v in client.search_model_versions(f"name='{MODEL_NAME}'")} == {
        "0.9025", "0.25", "0.81"}


@pytest.mark.slow
def test_a_registration_killed_after_the_version_is_created_leaves_it_tagged(tmp_path):
    import mlflow

    from apogeenet.registry import MODEL_NAME

    worker = Path(__file__).parents[1] / "support" / "registration_worker.py"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(worker.parent)}
    script = ("import os, runpy, signal, sys\nimport mlflow\nregister = mlflow.register_model\n"
              "def register_then_die(*args, **kwargs):\n    version = register(*args, **kwargs)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "mlflow.register_model = register_then_die\n"
              f"sys.argv = [{str(worker)!r}, {str(tmp_path)!r}, '0.5']\n"
              f"runpy.run_path({str(worker)!r}, run_name='__main__')\n")
    killed = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    again = subprocess.run([sys.executable, str(worker), str(tmp_path), "0.7"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert sorted(v.tags.get("dev_loss") for v in versions) == ["0.25", "0.49"]  # no version without its tag
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").tags["dev_loss"] == "0.49"
    runs = mlflow.search_runs(experiment_names=["race"], output_format="list")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
