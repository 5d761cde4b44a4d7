"""What a setting invalidates: the pipeline is committed as up to date (every dependency and output
a placeholder), one setting of params.yaml changes, and `dvc status` names the stages that must run
again — training reads no inference setting, so the hours of training never rerun for a draw count."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).parent / "dvc")


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    """A copy of the pipeline with placeholder files for every path it names, committed by DVC."""
    root = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    for package in ("apogeenet", "expectations"):
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "data"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    resolve = lambda text: re.sub(r"\$\{(\w+)\.(\w+)\}", lambda m: str(params[m[1]][m[2]]), text)  # noqa: E731
    for stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values():
        named = [*stage.get("deps", []), *(next(iter(o)) if isinstance(o, dict) else o
                                          for kind in ("outs", "metrics", "plots") for o in stage.get(kind, []))]
        for path in (root / resolve(n) for n in named):
            if path.exists():
                continue
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("placeholder")
            else:
                (path / "placeholder").parent.mkdir(parents=True, exist_ok=True)
                (path / "placeholder").write_text("placeholder")
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=root, check=True, env=_env())
    subprocess.run([DVC, "commit", "-f", "-q"], cwd=root, check=True, env=_env())
    return root


def _env() -> dict:
    return {**os.environ, "DVC_NO_ANALYTICS": "1"}


def _stale_after(root: Path, section: str, key: str, value) -> set[str]:
    """The stages `dvc status` names once ``section.key`` of params.yaml is ``value`` (then restored)."""
    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    node = params
    for part in section.split("."):
        node = node[part]
    node[key] = value
    try:
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        status = subprocess.run([DVC, "status", "--json"], cwd=root, capture_output=True, text=True, check=True,
                                env=_env())
    finally:
        (root / "params.yaml").write_text(original)
    return set(json.loads(status.stdout or "{}"))


def test_the_committed_copy_is_up_to_date(committed):
    status = subprocess.run([DVC, "status", "--json"], cwd=committed, capture_output=True, text=True, check=True,
                            env=_env())
    assert json.loads(status.stdout or "{}") == {}


@pytest.mark.parametrize("section, key, value", [("predict", "draws", 37), ("predict", "error_cap", 4.0),
                                                 ("predict", "error_reference", "median")])
def test_an_inference_setting_leaves_training_up_to_date(committed, section, key, value):
    stale = _stale_after(committed, section, key, value)
    assert {"calibrate", "evaluate", "predict"} <= stale
    assert not stale & {"label", "validate", "train", "adapt", "baselines"}


def test_a_training_setting_reruns_training(committed):
    assert _stale_after(committed, "train.profiles.demo", "max_epochs", 3) == {"train"}
    assert _stale_after(committed, "calibration", "clip", 3.0) == {"calibrate"}
