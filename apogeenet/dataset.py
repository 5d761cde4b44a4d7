"""The labelled training set (§3.1): store rows joined to the label catalog, prepared flux and
standardised targets (eq. 4), the loss and the device training runs on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from apogeenet.errors import InputError
from apogeenet.io.apstar import APSTAR_NPIX
from apogeenet.labels.catalog import LABEL_COLUMNS, Normalisation
from apogeenet.model import prepare_flux, scale_flux
from apogeenet.serving import Predictor
from apogeenet.store import SpectraStore, primary_rows
from apogeenet.uncertainty import perturbation_sigma

__all__ = ["LabelledSpectra", "StagedSplit", "best_device", "standardised_mse"]


class LabelledSpectra:
    """Store rows joined to a label catalog; batches of prepared flux and standardised targets."""

    def __init__(self, store: SpectraStore, catalog: pd.DataFrame, table1: Normalisation,
                 flux_scale: float | None = 1.0) -> None:
        index = store.index.reset_index(drop=True)
        primary = primary_rows(index)  # a star with several files trains on its best one
        row_of = pd.Series(np.flatnonzero(primary), index=index["apogee_id"].to_numpy()[primary])
        catalog = catalog[catalog["APOGEE_ID"].isin(row_of.index)].reset_index(drop=True)
        self.store = store
        self.catalog = catalog
        self.rows = row_of.loc[catalog["APOGEE_ID"]].to_numpy()
        self.table1 = table1
        self.flux_scale = flux_scale
        labels = catalog[list(LABEL_COLUMNS)].to_numpy(np.float64)
        self.targets = ((labels - table1.mean) / table1.std).astype(np.float32)

    @classmethod
    def from_files(cls, store_dir: Path, labels_file: Path, table1_file: Path) -> LabelledSpectra:
        """The store joined to a label catalog and its Table 1 (files of ``apogeenet label``)."""
        import json

        from apogeenet.io.tables import read_table

        for needed in (labels_file, table1_file):
            if not Path(needed).exists():
                raise InputError(f"{needed} is missing: run `apogeenet label` first")
        table1 = Normalisation(**json.loads(Path(table1_file).read_text()))
        return cls(SpectraStore(store_dir), read_table(labels_file), table1)

    def with_flux_scale(self, flux_scale: float | None) -> LabelledSpectra:
        """The same stars with another flux unit (a model's; :func:`apogeenet.model.scale_flux`)."""
        import copy

        other = copy.copy(self)
        other.flux_scale = flux_scale
        return other

    def __len__(self) -> int:
        return len(self.catalog)

    def select(self, *, split: str | None = None, sources: tuple[str, ...] | None = None) -> np.ndarray:
        """Positions (into the catalog) of one split and/or some sources."""
        keep = np.ones(len(self), bool)
        if split is not None:
            keep &= (self.catalog["SPLIT"] == split).to_numpy()
        if sources is not None:
            keep &= self.catalog["SOURCE"].isin(sources).to_numpy()
        return np.flatnonzero(keep)

    def prepared(self, positions: np.ndarray) -> np.ndarray:
        """Raw flux of these stars as the network takes it (bad pixels 0), before the flux unit."""
        spectra = self.store.read(self.rows[positions])
        return prepare_flux(spectra.flux, spectra.error)

    def batch(self, positions: np.ndarray, device: torch.device | str = "cpu",
              noise: np.random.Generator | None = None, *, noise_cap: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input and standardised targets on ``device`` (the flux unit applied there);
        with ``noise``, each spectrum plus a draw of N(0, 1)·σ, σ the pixel error capped at
        ``noise_cap`` × the mean good-pixel error (the §3.5 perturbation)."""
        if noise is None:
            flux = self.prepared(positions)
        else:
            if noise_cap is None:
                raise ValueError("a noise draw needs its cap (noise_cap)")
            spectra = self.store.read(self.rows[positions])
            sigma = perturbation_sigma(spectra.flux, spectra.error, noise_cap)
            flux = prepare_flux(spectra.flux, spectra.error) + noise.standard_normal(sigma.shape, np.float32) * sigma
        flux = torch.from_numpy(flux).to(device)
        return scale_flux(flux, self.flux_scale), torch.from_numpy(self.targets[positions]).to(device)

    def median_flux(self, positions: np.ndarray, limit: int = 500) -> float:
        """Median good-pixel flux of (up to ``limit`` of) these spectra: the model's flux unit."""
        flux = self.prepared(np.sort(positions)[:limit])
        return float(np.median(flux[flux > 0]))

    def predictor_loss(self, predictor: Predictor, positions: np.ndarray) -> float:
        """:func:`standardised_mse` of a saved model through its own flux unit and Table 1 (so
        that models with other units compare on this catalog)."""
        physical = predictor.predict(self.prepared(positions)).to_numpy()
        return standardised_mse(self, positions, (physical - self.table1.mean) / self.table1.std)


class StagedSplit:
    """The stars of one split read from the store once and held where training runs (memory, or
    the GPU): their prepared flux and, for noise augmentation, their capped pixel σ, so that an
    epoch does no per-batch reading or bad-pixel work. :meth:`batch` gives what
    :meth:`LabelledSpectra.batch` gives for the same stars and noise generator (on a GPU the draws
    are made there, from a seed that generator gives)."""

    CHUNK = 1024  # stars read from the store at a time while staging

    def __init__(self, data: LabelledSpectra, positions: np.ndarray, device: torch.device | str = "cpu",
                 *, noise_cap: float | None = None) -> None:
        self.data, self.device = data, torch.device(device)
        self.slot = np.full(len(data), -1, np.int64)
        self.slot[positions] = np.arange(len(positions))
        self.flux = torch.empty((len(positions), APSTAR_NPIX), device=self.device)
        self.sigma = None if noise_cap is None else torch.empty_like(self.flux)
        for start in range(0, len(positions), self.CHUNK):  # filled in place: no second copy at the peak
            part = slice(start, start + self.CHUNK)
            spectra = data.store.read(data.rows[positions[part]])
            self.flux[part] = torch.from_numpy(prepare_flux(spectra.flux, spectra.error))
            if self.sigma is not None:
                self.sigma[part] = torch.from_numpy(perturbation_sigma(spectra.flux, spectra.error, noise_cap))
        self.targets = torch.from_numpy(data.targets[positions]).to(self.device)

    @staticmethod
    def nbytes(positions: np.ndarray, noise: bool) -> int:
        """Memory a staged split of these stars takes (float32 flux, and σ with noise)."""
        return len(positions) * APSTAR_NPIX * 4 * (2 if noise else 1)

    def batch(self, positions: np.ndarray, noise: np.random.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input and standardised targets of these stars (positions into the catalog, all
        staged); with ``noise`` plus its draws (:meth:`LabelledSpectra.batch`'s on a CPU; on a GPU
        a generator there, seeded from ``noise``)."""
        slots = self.slot[positions]
        if (slots < 0).any():
            raise ValueError("a batch asks for stars that were not staged")
        slots = torch.from_numpy(slots).to(self.device)
        flux = self.flux[slots]
        if noise is not None:
            if self.sigma is None:
                raise ValueError("a noise draw needs a split staged with its noise cap")
            if self.device.type == "cpu":
                draw = torch.from_numpy(noise.standard_normal(tuple(flux.shape), np.float32))
            else:
                generator = torch.Generator(self.device).manual_seed(int(noise.integers(2**62)))
                draw = torch.randn(flux.shape, generator=generator, device=self.device)
            flux = flux + draw * self.sigma[slots]
        return scale_flux(flux, self.data.flux_scale), self.targets[slots]


def standardised_mse(data: LabelledSpectra, positions: np.ndarray, prediction: np.ndarray) -> float:
    """The loss of §3.1: MSE of standardised predictions (eq. 4) against the targets."""
    return float(np.mean((prediction - data.targets[positions]) ** 2))


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
