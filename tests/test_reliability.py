"""Hostile input, kills and races (issue [1 of 5]): a file is data, never code, never a path
outside the output; a kill at a dangerous moment loses nothing; bad input gets one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import run

from apogeenet.labels.catalog import Normalisation
from apogeenet.model import ApogeeNet
from apogeenet.serving import ModelFileError, Predictor
from apogeenet.train import load_checkpoint

TABLE1 = Normalisation(4700.0, 900.0, 3.5, 1.2, -0.1, 0.25)


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


# ------------------------------------------------------------------------------ no code from files


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
    assert all(torch.equal(v, back.model.state_dict()[k]) for k, v in predictor.model.state_dict().items())
    torch.save({"model": predictor.model.state_dict(), "rng": {"cpu": torch.get_rng_state()}}, tmp_path / "last.pt")
    assert set(load_checkpoint(tmp_path / "last.pt")) == {"model", "rng"}
