"""A trained APOGEE Net as one self-contained object: weights + Table 1, physical predictions.

:class:`Predictor` is what training writes (``model.pt``) and what inference loads; the MLflow
pyfunc wrapper in :mod:`apogeenet.registry` takes flux arrays and returns Teff, log g and
[Fe/H] in physical units through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from apogeenet.calibration import SigmaCalibration
from apogeenet.domain import DomainReference
from apogeenet.labels.catalog import LABEL_COLUMNS, Normalisation
from apogeenet.model import ApogeeNet, scale_flux
from apogeenet.weights import ModelFileError, load_weights, save_weights

__all__ = ["Predictor"]


@dataclass
class Predictor:
    model: ApogeeNet
    table1: Normalisation
    flux_scale: float | None = 1.0
    """The network's flux unit: a constant, or None for each spectrum's median (:func:`scale_flux`)."""
    calibrations: dict[str, SigmaCalibration] = field(default_factory=dict)
    """The missing-error model of each uncertainty method (:mod:`apogeenet.calibration`), by method."""
    domain: DomainReference | None = None
    """The training set's activations, for the out-of-domain distance (:mod:`apogeenet.domain`)."""

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
        """Write weights, Table 1, the flux unit, the σ calibrations and the domain reference
        (atomically: a kill leaves the old file)."""
        path = Path(path)
        weights = {k: v.cpu() for k, v in self.model.state_dict().items()}
        extra = {"calibrations": {k: c.to_dict() for k, c in self.calibrations.items()}}
        if self.domain is not None:
            extra["domain"] = self.domain.to_dict()
        return save_weights({"model": weights, "table1": self.table1.to_dict(), "flux_scale": self.flux_scale,
                             "architecture": "ApogeeNet-AppendixB", "n_outputs": 3, **extra}, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """A saved model; a file that is not one raises :class:`ModelFileError` (no code runs)."""
        saved = load_weights(path, device)
        try:
            model = ApogeeNet(int(saved.get("n_outputs", 3)))
            model.load_state_dict(saved["model"])
            table1 = Normalisation(**saved["table1"])
            calibrations = {str(k): SigmaCalibration.from_dict(c) for k, c in saved.get("calibrations", {}).items()}
            domain = DomainReference.from_dict(saved["domain"]) if "domain" in saved else None
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise ModelFileError(f"{path}: not an apogeenet model.pt ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
        return cls(model.to(device).eval(), table1, saved.get("flux_scale", 1.0), calibrations, domain)

