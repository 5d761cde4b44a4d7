"""params.yaml validates, and every DVC stage's command answers --help."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from apogeenet.cli import app
from apogeenet.config import ConfigError, Params, load_params

REPO = Path(__file__).resolve().parents[2]


def test_repository_params_validate():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.download.release in ("dr14", "dr16", "dr17")
    assert not params.paths.store.is_relative_to("data"), "derived outputs must stay out of data/"


@pytest.mark.parametrize("text, message", [
    ("ingest:\n  workers: 0\n", "ingest.workers"),
    ("download:\n  release: dr5\n", "download.release"),
    ("synth:\n  n_star: 3\n", "synth.n_star"),
    ("synth:\n  fractions: {giant: 0.5}\n", "sum to 1"),
    ("synth:\n  fractions: {giants: 1.0}\n", "unknown population"),
    ("ingest: [\n", "not valid YAML"),
    ("train:\n  profile: fast\n", "unknown profile 'fast'"),  # a typo dies at load, not mid-training
    ("- just\n- a list\n", "expected a mapping"),
    ("train:\n  profiles:\n    demo: {optimizer: rmsprop}\n", "'sgd' or 'adam'"),
    ("adapt:\n  stop_on: best\n", "'groups', 'focus' or 'all'"),
    ("adapt:\n  learning_rate: 0.001\n", "adapt.learning_rate: Extra inputs"),  # now adapt.training
    ("paths:\n  raw: data\n", "paths.raw: Extra inputs"),
    ("train:\n  profiles:\n    demo: {members: 0}\n", "train.profiles.demo.members"),  # a deep ensemble of
    ("train:\n  profiles:\n    demo: {members: 33}\n", "train.profiles.demo.members"),  # 1 to 32 networks
    ("adapt:\n  training: {members: 3}\n", "each member of the starting model is adapted on its own"),
])
def test_bad_params_name_the_key(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(path)


def test_every_dvc_stage_command_answers_help():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages, "dvc.yaml has no stages"
    for name, stage in stages.items():
        argv = shlex.split(stage["cmd"])
        assert argv[0] == "apogeenet", f"stage {name} should call the installed command"
        result = CliRunner().invoke(app, [argv[1], "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_dvc_stage_params_exist_in_params_yaml():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert part in node, f"stage {name}: params.yaml has no {key}"
                node = node[part]


def test_data_dvc_tracks_the_raw_folder_and_stages_stay_outside_it():
    tracked = yaml.safe_load((REPO / "data.dvc").read_text())["outs"]
    assert [o["path"] for o in tracked] == ["data"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    resolve = lambda text: re.sub(r"\$\{(\w+)\.(\w+)\}", lambda m: params[m[1]][m[2]], text)  # noqa: E731
    for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values():
        for out in stage.get("outs", []):
            path = resolve(next(iter(out)) if isinstance(out, dict) else out)
            assert not Path(path).is_relative_to("data"), path


def test_help_is_fast_enough_to_be_pleasant():
    result = subprocess.run(["python", "-X", "importtime", "-c", "import apogeenet.cli"],
                            capture_output=True, text=True, cwd=REPO)
    heavy = [m for m in ("torch", "mlflow", "prefect", "great_expectations", "astropy.io.fits")
             if f" {m}\n" in result.stderr]
    assert heavy == [], f"importing the CLI pulls in {heavy}"


def test_a_named_params_file_must_exist_and_be_a_file(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no such parameters file"):
        load_params(tmp_path / "typo.yaml")
    with pytest.raises(ConfigError, match="not a file"):
        load_params(tmp_path)
    monkeypatch.setenv("APOGEENET_PARAMS", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match="no such parameters file"):
        load_params()
    monkeypatch.delenv("APOGEENET_PARAMS")
    monkeypatch.chdir(tmp_path)
    assert load_params() == Params()  # only the default ./params.yaml may be absent


@pytest.mark.parametrize("args, message", [
    (["train", "--params", "missing.yaml"], "no such parameters file"),
    (["train", "--params", "."], "not a file"),
    (["train", "--params", "profile.yaml"], "unknown profile"),
])
def test_params_mistakes_are_one_line_from_the_command(tmp_path, args, message):
    from commands import run

    (tmp_path / "profile.yaml").write_text("train:\n  profile: fast\n")
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_overrides_are_validated_like_the_file():
    params = Params()
    assert params.with_overrides({"train.profile": "paper"}).train.active().optimizer == "sgd"
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        params.with_overrides({"train.profile": "fast"})
    with pytest.raises(ConfigError, match="'mean' or 'median'"):
        params.with_overrides({"predict.error_reference": "max"})


def test_one_type_per_tunable():
    """The library takes the config sections themselves: no parallel dataclass to drift."""
    import inspect

    from apogeenet.adapt import adapt_model
    from apogeenet.config import AdaptParams, TrainProfile, YSOParams
    from apogeenet.labels.build import build_labels
    from apogeenet.train import train_model

    assert inspect.signature(train_model).parameters["cfg"].annotation == "TrainProfile"
    assert inspect.signature(adapt_model).parameters["cfg"].annotation == "AdaptParams"
    assert inspect.signature(build_labels).parameters["yso"].annotation == "YSOParams"
    assert {TrainProfile, AdaptParams, YSOParams} <= {type(v) for v in (
        Params().train.active(), Params().adapt, Params().yso, Params().adapt.training)}
