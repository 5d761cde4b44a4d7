"""`apogeenet init`: the workspace it makes (params, stages of the sources in use, no truth for real
data), the one-line refusals, and the synthetic workspace's stages equal to the project's dvc.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from apogeenet.config import load_params
from apogeenet.workspace import WorkspaceError, dvc_stages, init_workspace
from commands import run

REPO = Path(__file__).resolve().parents[2]


def _labels(tmp_path: Path) -> Path:
    table = tmp_path / "mine.csv"
    pd.DataFrame({"APOGEE_ID": ["A"], "TEFF": [3000.0], "FE_H": [0.0]}).to_csv(table, index=False)
    return table


def test_a_workspace_for_real_spectra_and_own_labels(tmp_path):
    spectra = tmp_path / "spectra"
    spectra.mkdir()
    cfg = init_workspace(tmp_path / "ws", spectra=spectra, label_table=_labels(tmp_path),
                         table_columns={"logg": None, "description": "Birky et al. 2020"})
    ws = tmp_path / "ws"
    assert load_params(ws / "params.yaml") == cfg  # the file says what init returned
    assert cfg.labels.sources == ("table",) and cfg.paths.truth is None and cfg.labels.table.logg is None
    assert cfg.paths.spectra == spectra.resolve() and (ws / cfg.paths.label_table).read_text() == _labels(tmp_path).read_text()
    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["ingest", "label", "validate", "train", "calibrate", "evaluate", "predict"]
    assert "truth" not in (ws / "dvc.yaml").read_text() and "--model ${paths.model}/model.pt" in stages["calibrate"]["cmd"]
    assert (ws / ".dvc").is_dir() and (ws / ".dvcignore").exists() and "dvc repro" in (ws / "README.md").read_text()


def test_the_paper_recipes_bring_adaptation(tmp_path):
    spectra = tmp_path / "spectra"
    spectra.mkdir()
    for name in ("allStar.fits", "members.txt"):
        (tmp_path / name).write_text("x")
    cfg = init_workspace(tmp_path / "ws", spectra=spectra, allstar=tmp_path / "allStar.fits",
                         members=tmp_path / "members.txt")
    assert cfg.labels.sources == ("mstar", "yso") and cfg.paths.payne is None
    stages = dvc_stages(cfg, synthetic=False)
    assert "adapt" in stages and "--adapted" not in stages["calibrate"]["cmd"]
    assert "${paths.adapted}/model.pt" in stages["calibrate"]["deps"]
    assert "--allstar ${paths.allstar} --members ${paths.members}" in stages["label"]["cmd"]


def test_the_synthetic_workspace_has_the_projects_stages():
    """`apogeenet init --synthetic` writes the stages of this project's dvc.yaml (its code
    dependencies aside, which a user's workspace cannot name): outputs, parameters, data inputs."""
    project = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    made = dvc_stages(load_params(REPO / "params.yaml"), synthetic=True)
    assert set(made) - {"synth"} == set(project)

    def names(entries):
        return sorted(e if isinstance(e, str) else next(iter(e)) for e in entries or [])

    for name, stage in project.items():
        for key in ("outs", "metrics", "plots", "params"):
            assert names(made[name].get(key)) == names(stage.get(key)), (name, key)
        data_deps = [d for d in stage["deps"] if d.startswith("$")]
        assert sorted(made[name]["deps"]) == sorted(data_deps), name


def test_init_refuses_with_one_line(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(WorkspaceError, match="not empty"):
        init_workspace(tmp_path / "full", synthetic=True)
    with pytest.raises(WorkspaceError, match="give --spectra"):
        init_workspace(tmp_path / "a", label_table=_labels(tmp_path))
    with pytest.raises(WorkspaceError, match="no labels to train on"):
        init_workspace(tmp_path / "b", spectra=tmp_path)
    with pytest.raises(WorkspaceError, match="no such file"):
        init_workspace(tmp_path / "c", spectra=tmp_path / "nowhere", label_table=_labels(tmp_path))
    result = run("init", tmp_path / "d", "--spectra", tmp_path, cwd=tmp_path)
    assert result.returncode == 2 and "no labels to train on" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


def test_predict_without_a_registry_names_the_next_step(tmp_path, multi_visit_file):
    """From an empty folder the default model (the registry's champion) cannot exist: one line
    that says to give a model file, and no mlruns/ made there."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    import subprocess

    from commands import EXE

    result = subprocess.run([EXE, "predict", str(multi_visit_file), "--out", str(tmp_path / "out")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "no model registry here" in result.stderr and "--model" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "mlruns").exists()


def test_a_copied_workspace_never_logs_into_the_originals_artifacts(tmp_path, monkeypatch):
    import shutil

    from apogeenet.errors import UserFacingError
    from apogeenet.tracking import mlflow_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    monkeypatch.chdir(original)
    with mlflow_run("train", "first"):
        pass
    shutil.copytree(original, copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow sets it; a new process starts without
    monkeypatch.chdir(copy)
    with pytest.raises(UserFacingError, match="copied from another workspace") as caught:
        with mlflow_run("train", "second"):
            pass
    assert str(original / "mlruns" / "artifacts") in str(caught.value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(original)
    with mlflow_run("train", "third"):  # the original keeps working
        pass
