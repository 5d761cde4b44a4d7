"""A trained APOGEE Net as one self-contained object: weights + Table 1, physical predictions.

:class:`Predictor` is what training writes (``model.pt``) and what inference loads; the MLflow
pyfunc wrapper in :mod:`apogeenet.registry` takes flux arrays and returns Teff, log g and
[Fe/H] in physical units through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from apogeenet.labels.catalog import LABEL_COLUMNS, Normalisation
from apogeenet.model import ApogeeNet, scale_flux

__all__ = ["Predictor"]


@dataclass
class Predictor:
    model: ApogeeNet
    table1: Normalisation
    flux_scale: float | None = 1.0
    """The network's flux unit: a constant, or None for each spectrum's median (:func:`scale_flux`)."""

    def predict(self, flux: np.ndarray, batch_size: int = 16) -> pd.DataFrame:
        """TEFF [K], LOGG, FE_H for prepared raw flux (n, 8575) (bad pixels already 0)."""
        flux = np.atleast_2d(flux)
        device = next(self.model.parameters()).device
        self.model.eval()
        out = np.empty((len(flux), 3), np.float64)
        with torch.inference_mode():
            for start in range(0, len(flux), 64 * batch_size):  # bounds the memory of the features
                block = scale_flux(torch.from_numpy(flux[start:start + 64 * batch_size]).to(device), self.flux_scale)
                out[start:start + len(block)] = self.model.forward_chunked(block, batch_size).double().cpu().numpy()
        physical = out * self.table1.std + self.table1.mean
        return pd.DataFrame(physical, columns=list(LABEL_COLUMNS))

    def to(self, device: str | torch.device) -> Predictor:
        """Move the network to ``device`` (e.g. :func:`apogeenet.train.best_device`); returns self."""
        self.model = self.model.to(device)
        return self

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = {k: v.cpu() for k, v in self.model.state_dict().items()}
        torch.save({"model": weights, "table1": self.table1.to_dict(), "flux_scale": self.flux_scale,
                    "architecture": "ApogeeNet-AppendixB", "n_outputs": 3}, path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        saved = torch.load(path, map_location=device, weights_only=False)
        model = ApogeeNet(saved.get("n_outputs", 3))
        model.load_state_dict(saved["model"])
        return cls(model.to(device).eval(), Normalisation(**saved["table1"]), saved.get("flux_scale", 1.0))
