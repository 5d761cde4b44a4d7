"""How unlike the training spectra a spectrum is, as the network sees it (the out-of-domain flag).

A network trained on one set of spectra returns a number for any input; the number means
something only for spectra like the ones it learned from (Olney et al. 2020, §3.6, leave out what
the training set did not cover). The measure here is the Mahalanobis distance of a spectrum's
512 penultimate activations (:meth:`apogeenet.model.ApogeeNet.forward_hidden`) from those of the
training split: mean and covariance of the training stars' activations, the covariance shrunk
towards its mean variance by ``shrinkage`` (512 dimensions, ~1 400 stars), kept as a whitening
matrix. The flag threshold is a quantile (``calibration.domain_quantile``) of the dev split's
distances, so about 1 − quantile of spectra like the training set's are flagged.

Chosen on the default survey and the 19 real DR13 apStar files of ../shared with a model
trained on the synthetic survey (README, "Calibrated uncertainties and the out-of-domain
flag"): the dev split's distances have median ~17 and 99th percentile ~55; every real file lies
at 100–1 260.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DomainReference", "fit_domain"]


@dataclass
class DomainReference:
    """Mean activations (512,), whitening matrix W (512, 512: d = ‖W (h − mean)‖) and the
    distance above which a spectrum is flagged; stored in ``model.pt`` (:mod:`apogeenet.serving`)."""

    mean: np.ndarray
    whitening: np.ndarray
    threshold: float
    quantile: float

    def distance(self, hidden: np.ndarray | torch.Tensor) -> np.ndarray:
        """Mahalanobis distance of each row of penultimate activations (n, 512)."""
        if isinstance(hidden, torch.Tensor):
            hidden = hidden.detach().cpu().numpy()
        centred = np.asarray(hidden, np.float64) - self.mean
        return np.linalg.norm(centred @ self.whitening.T, axis=1)

    def to_dict(self) -> dict:
        """Plain tensors and numbers (``torch.load(weights_only=True)`` reads them back)."""
        return {"mean": torch.from_numpy(self.mean.astype(np.float32)),
                "whitening": torch.from_numpy(self.whitening.astype(np.float32)),
                "threshold": float(self.threshold), "quantile": float(self.quantile)}

    @classmethod
    def from_dict(cls, saved: dict) -> DomainReference:
        return cls(np.asarray(saved["mean"], np.float64), np.asarray(saved["whitening"], np.float64),
                   float(saved["threshold"]), float(saved["quantile"]))


def fit_domain(train_hidden: np.ndarray, dev_hidden: np.ndarray, *, quantile: float = 0.99,
               shrinkage: float = 1e-3) -> DomainReference:
    """The reference from the training split's activations; the threshold from the dev split's."""
    train_hidden = np.asarray(train_hidden, np.float64)
    mean = train_hidden.mean(axis=0)
    covariance = np.cov(train_hidden, rowvar=False)
    covariance += shrinkage * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
    # W = L^-1 with C = L L^T: ‖W d‖² = dᵀ C⁻¹ d
    whitening = np.linalg.inv(np.linalg.cholesky(covariance))
    reference = DomainReference(mean, whitening, np.inf, quantile)
    reference.threshold = float(np.quantile(reference.distance(dev_hidden), quantile))
    return reference
