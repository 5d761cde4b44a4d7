"""A model file a user receives is data: a crafted pickle runs no code and gets one line; the
project's own models and checkpoints load as plain weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from commands import run
from factories import TABLE1

from apogeenet.model import ApogeeNet
from apogeenet.serving import Predictor
from apogeenet.train import load_checkpoint
from apogeenet.weights import ModelFileError


class _Payload:
    """Unpickling this runs a shell command: what a crafted model.pt would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_model(path: Path, marker: Path) -> Path:
    """A model.pt that looks real (weights, Table 1) but carries a payload."""
    weights = {k: v for k, v in ApogeeNet(3).state_dict().items()}
    torch.save({"model": weights, "table1": TABLE1.to_dict(), "flux_scale": 1.0, "hook": _Payload(marker)},
               path)
    return path


def test_a_crafted_model_file_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = _crafted_model(tmp_path / "model.pt", marker)
    with pytest.raises(ModelFileError, match="refused without running it"):
        Predictor.load(evil)
    assert load_checkpoint(evil) is None  # a planted checkpoints/last.pt: training starts afresh
    assert not marker.exists()


@pytest.mark.parametrize("command", [["predict", "--no-track", "--model"], ["evaluate", "--no-track", "--model"],
                                     ["train", "--no-track", "--init"]])
def test_a_crafted_model_file_gets_one_line_and_exit_2(command, project, tmp_path):
    marker = tmp_path / "pwned"
    evil = _crafted_model(tmp_path / "evil.pt", marker)
    result = run(*command, evil, "--out", tmp_path / "out", "--params", project / "params.yaml", cwd=tmp_path)
    assert not marker.exists(), "the payload ran"
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_real_model_and_checkpoints_load_as_plain_weights(tmp_path):
    predictor = Predictor(ApogeeNet(3), TABLE1, flux_scale=None)
    back = Predictor.load(predictor.save(tmp_path / "model.pt"))
    # reproducible bytes (dvc.lock): the temporary name of the atomic write leaves no trace
    assert predictor.save(tmp_path / "other.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()
    assert all(torch.equal(v, back.first.state_dict()[k]) for k, v in predictor.first.state_dict().items())
    torch.save({"model": predictor.first.state_dict(), "rng": {"cpu": torch.get_rng_state()}}, tmp_path / "last.pt")
    assert set(load_checkpoint(tmp_path / "last.pt")) == {"model", "rng"}
