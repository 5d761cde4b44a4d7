"""A trained APOGEE Net as one self-contained object: weights + Table 1, physical predictions.

:class:`Predictor` is what training writes (``model.pt``) and what inference loads; the MLflow
pyfunc wrapper in :mod:`apogeenet.pyfunc` takes flux arrays and returns Teff, log g and
[Fe/H] in physical units through it.

A model is a deep ensemble of one or more networks (``members``, trained from different seeds,
``train.profiles.*.members``): its prediction is the members' mean, the spread of their
predictions the model's own error (:mod:`apogeenet.uncertainty`). One member is the paper's
single network; a file of one member is written as before (``model``), several as ``members``.
Each member's outputs may pass through straight lines fitted on the dev split, one per region of
the output (:mod:`apogeenet.output_maps`), before they are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from apogeenet.calibration import REGIONS, SigmaCalibration, region_index
from apogeenet.domain import DomainReference
from apogeenet.labels.catalog import LABEL_COLUMNS, Normalisation
from apogeenet.model import HIDDEN_SIZE, ApogeeNet, scale_flux
from apogeenet.weights import ModelFileError, load_weights, save_weights

__all__ = ["MAX_MEMBERS", "Predictor"]


MAX_MEMBERS = 32
"""The most networks an ensemble (a model file) may hold: a file is data, its size bounded."""


@dataclass
class Predictor:
    members: list[ApogeeNet]
    """The ensemble's networks (a single network is given and kept as a list of one)."""
    table1: Normalisation
    flux_scale: float | None = 1.0
    """The network's flux unit: a constant, or None for each spectrum's median (:func:`scale_flux`)."""
    calibrations: dict[str, SigmaCalibration] = field(default_factory=dict)
    """The missing-error model of each uncertainty method (:mod:`apogeenet.calibration`), by method."""
    domain: DomainReference | None = None
    """The training set's activations, for the out-of-domain distance (:mod:`apogeenet.domain`)."""
    provenance: dict[str, str] = field(default_factory=dict)
    """What the model was trained on (:func:`apogeenet.pipeline.common.provenance`): the label
    catalog's SHA-256, the data version, synthetic or real, the label sources."""
    systematics: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """The label scale's bias per label source and parameter, [mean label − truth, its standard
    error, stars], where a truth measured it (:func:`apogeenet.calibrate_model.label_systematics`):
    a systematic term of every prediction the model learned from those labels, kept apart from σ."""
    output_maps: np.ndarray | None = None
    """(members, regions, 3, 2): each member's standardised output k in region r becomes slope · output + intercept
    (:mod:`apogeenet.output_maps`, fitted by ``apogeenet calibrate``); None: the outputs as they are."""

    def __post_init__(self) -> None:
        if isinstance(self.members, ApogeeNet):
            self.members = [self.members]
        self.members = list(self.members)
        if not 1 <= len(self.members) <= MAX_MEMBERS:
            raise ValueError(f"an ensemble of 1 to {MAX_MEMBERS} networks, not {len(self.members)}")
        if self.output_maps is not None:
            self.output_maps = np.asarray(self.output_maps, np.float64)
            if self.output_maps.ndim == 3:  # a map of one line for every region (models of before regions)
                self.output_maps = np.repeat(self.output_maps[:, None], len(REGIONS), axis=1)
            if self.output_maps.shape != (len(self.members), len(REGIONS), len(LABEL_COLUMNS), 2) \
                    or not np.all(np.isfinite(self.output_maps)) or not np.all(self.output_maps[..., 0] > 0):
                raise ValueError(f"output maps must be finite (members, {len(REGIONS)} regions, 3, 2) with "
                                 f"positive slopes, not of shape {self.output_maps.shape}")

    def _lines(self, member: int, standardised: np.ndarray) -> np.ndarray:
        """(…, 3, 2) the line of member ``member``'s map for the region of each of its outputs (…, 3)."""
        return self.output_maps[member][region_index(standardised * self.table1.std + self.table1.mean)]

    def mapped(self, member: int, standardised: np.ndarray) -> np.ndarray:
        """Member ``member``'s standardised outputs (…, 3) through its output map, each by the line
        of its own region (as they are without a map)."""
        if self.output_maps is None:
            return standardised
        lines = self._lines(member, standardised)
        return standardised * lines[..., 0] + lines[..., 1]

    def slopes(self, member: int, standardised: np.ndarray) -> np.ndarray:
        """(…, 3) how much member ``member``'s output map stretches each of its outputs
        ``standardised`` (…, 3) where they are: a σ there scales by it."""
        if self.output_maps is None:
            return np.ones(np.shape(standardised))
        return self._lines(member, standardised)[..., 0]

    @property
    def first(self) -> ApogeeNet:
        """The first member: its penultimate activations are the ones the domain reference measures."""
        return self.members[0]

    def predict(self, flux: np.ndarray, batch_size: int = 16) -> pd.DataFrame:
        """TEFF [K], LOGG, FE_H for prepared raw flux (n, 8575) (bad pixels already 0): the
        members' mean (each through its output map)."""
        outputs = self.member_outputs(flux, batch_size)
        mapped = np.mean([self.mapped(j, out) for j, out in enumerate(outputs)], axis=0)
        return pd.DataFrame(mapped * self.table1.std + self.table1.mean, columns=list(LABEL_COLUMNS))

    def member_outputs(self, flux: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Each member's standardised outputs (members, n, 3) for prepared raw flux (n, 8575),
        before any output map."""
        flux = np.atleast_2d(flux)
        device = next(self.first.parameters()).device
        out = np.zeros((len(self.members), len(flux), 3), np.float64)
        with torch.inference_mode():
            for start in range(0, len(flux), 64 * batch_size):  # bounds the memory of the features
                block = scale_flux(torch.from_numpy(flux[start:start + 64 * batch_size]).to(device), self.flux_scale)
                for j, net in enumerate(self.members):
                    out[j, start:start + len(block)] = net.eval().forward_chunked(block, batch_size).double().cpu().numpy()
        return out

    def to(self, device: str | torch.device) -> Predictor:
        """Move the networks to ``device`` (e.g. :func:`apogeenet.dataset.best_device`); returns self."""
        self.members = [net.to(device) for net in self.members]
        return self

    def save(self, path: str | Path) -> Path:
        """Write weights, Table 1, the flux unit, the σ calibrations and the domain reference
        (atomically: a kill leaves the old file)."""
        path = Path(path)
        weights = [{k: v.cpu() for k, v in net.state_dict().items()} for net in self.members]
        extra = {"calibrations": {k: c.to_dict() for k, c in self.calibrations.items()},
                 "provenance": dict(self.provenance), "systematics": self.systematics}
        if self.domain is not None:
            extra["domain"] = self.domain.to_dict()
        if self.output_maps is not None:
            extra["output_maps"] = self.output_maps.tolist()
        networks = {"model": weights[0]} if len(weights) == 1 else {"members": weights}
        return save_weights({**networks, "table1": self.table1.to_dict(), "flux_scale": self.flux_scale,
                             "architecture": "ApogeeNet-AppendixB", "n_outputs": 3, **extra}, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """A saved model; a file that is not one raises :class:`ModelFileError` (no code runs)."""
        saved = load_weights(path, device)
        try:
            if saved.get("n_outputs", 3) != len(LABEL_COLUMNS):
                raise ValueError(f"a network of {saved.get('n_outputs')!r} outputs, not Teff, log g and [Fe/H]")
            states = saved["members"] if "members" in saved else [saved["model"]]
            if not isinstance(states, list) or not 1 <= len(states) <= MAX_MEMBERS:
                raise ValueError(f"members must be a list of 1 to {MAX_MEMBERS} networks")
            members = []
            for state in states:
                members.append(ApogeeNet(len(LABEL_COLUMNS)))
                members[-1].load_state_dict(state)
            table1 = Normalisation(**saved["table1"])
            calibrations = {str(k): SigmaCalibration.from_dict(c) for k, c in saved.get("calibrations", {}).items()}
            domain = DomainReference.from_dict(saved["domain"]) if "domain" in saved else None
            flux_scale = saved.get("flux_scale", 1.0)
            provenance = saved.get("provenance", {})
            systematics = saved.get("systematics", {})
            output_maps = saved.get("output_maps")
            if output_maps is not None and not (isinstance(output_maps, list) and len(output_maps) == len(members)):
                raise ValueError(f"output_maps must be a list of one map per member ({len(members)})")
            _check_contents(table1, flux_scale, calibrations, domain)
            _check_provenance(provenance)
            _check_systematics(systematics)
            return cls([net.to(device).eval() for net in members], table1, flux_scale, calibrations, domain,
                       provenance, systematics, output_maps)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise ModelFileError(f"{path}: not an apogeenet model.pt ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None


MAX_PROVENANCE = 32
"""Entries of a model's provenance; each key and value at most 256 characters."""


def _check_provenance(provenance) -> None:
    """A model's provenance is a small mapping of text to text (ValueError otherwise)."""
    if not isinstance(provenance, dict) or len(provenance) > MAX_PROVENANCE or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 256 and len(v) <= 256 for k, v in provenance.items()):
        raise ValueError(f"provenance must be at most {MAX_PROVENANCE} short texts by name")


def _check_systematics(systematics) -> None:
    """Systematic terms: per label source (at most 8), per parameter, three finite numbers."""
    if not isinstance(systematics, dict) or len(systematics) > 8 or not all(
            isinstance(source, str) and len(source) <= 16 and isinstance(terms, dict)
            and set(terms) <= set(LABEL_COLUMNS) and all(
                isinstance(v, list) and len(v) == 3 and np.all(np.isfinite(np.asarray(v, float))) for v in terms.values())
            for source, terms in systematics.items()):
        raise ValueError("systematics must be at most 8 label sources of [bias, error, stars] per parameter")


def _check_contents(table1: Normalisation, flux_scale, calibrations: dict[str, SigmaCalibration],
                    domain: DomainReference | None) -> None:
    """What a model file carries besides its weights, checked when it is opened (ValueError):
    Table 1 finite with σ > 0, the flux unit a positive number or None (each spectrum's median),
    calibration terms finite and ≥ 0, a domain reference of the network's hidden width."""
    if not (np.all(np.isfinite(table1.mean)) and np.all(np.isfinite(table1.std)) and np.all(table1.std > 0)):
        raise ValueError(f"Table 1 must be finite with σ > 0 (σ = {table1.std.tolist()})")
    if flux_scale is not None and not (isinstance(flux_scale, (int, float)) and np.isfinite(flux_scale)
                                       and flux_scale > 0):
        raise ValueError(f"flux_scale must be a positive number or None, not {flux_scale!r}")
    for name, calibration in calibrations.items():
        for terms in calibration.terms.values():
            values = np.asarray(list(terms.values()), float)
            if not (np.all(np.isfinite(values)) and np.all(values >= 0)):
                raise ValueError(f"calibration {name!r} has terms that are not finite and >= 0")
    if domain is not None:
        width = HIDDEN_SIZE
        if domain.mean.shape != (width,) or domain.whitening.shape != (width, width) \
                or not np.all(np.isfinite(domain.whitening)) or not np.isfinite(domain.threshold) or domain.threshold <= 0:
            raise ValueError(f"domain reference of shape {domain.mean.shape}/{domain.whitening.shape}, "
                             f"threshold {domain.threshold}: needs ({width},)/({width}, {width}) and a positive threshold")

