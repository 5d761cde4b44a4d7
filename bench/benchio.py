"""Shared parts of the bench scripts: JSON on stdout (and to a file when asked), the model to time."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def bench_model(model: Path | None):
    """(Predictor, name): ``model``, else the project's adapted or trained model.pt, else a
    random network (the same cost as a trained one)."""
    import torch

    from apogeenet.config import load_params
    from apogeenet.labels.catalog import Normalisation
    from apogeenet.model import ApogeeNet
    from apogeenet.serving import Predictor

    cfg = load_params()
    model = model or next((p for p in (cfg.paths.adapted / "model.pt", cfg.paths.model / "model.pt")
                           if p.exists()), None)
    if model is not None:
        return Predictor.load(model), str(model)
    torch.manual_seed(0)
    return Predictor(ApogeeNet(3).eval(), Normalisation(4700, 900, 3.5, 1.2, -0.1, 0.25), None), "random network"
