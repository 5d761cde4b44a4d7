"""What a trained APOGEE Net must do, whatever its exact weights: learn (the dev loss falls well
below predicting the mean) and move in the physical direction (a hotter star reads hotter)."""

from __future__ import annotations

import numpy as np
import pytest
from factories import GIANTS_AND_DWARFS, labelled_store

from apogeenet.config import TrainProfile
from apogeenet.model import prepare_flux
from apogeenet.serving import Predictor
from apogeenet.synth.populations import draw_survey
from apogeenet.synth.survey import SpectrumSynthesizer
from apogeenet.train import train_model

N_STARS, SEED = 400, 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo recipe (Adam, clipped) for 12 epochs on a 400-star survey's true parameters."""
    root = tmp_path_factory.mktemp("behaviour")
    data = labelled_store(root, N_STARS, seed=SEED)
    train, dev = data.select(split="train"), np.concatenate([data.select(split="dev"), data.select(split="test")])
    data.flux_scale = data.median_flux(train)
    cfg = TrainProfile(optimizer="adam", learning_rate=1e-3, batch_size=32, max_epochs=12, patience=12, grad_clip=1.0)
    return data, train, dev, train_model(data, train, dev, cfg, root / "ck")


def test_short_training_lowers_the_dev_loss_clearly(trained):
    data, train, dev, result = trained
    mean_loss = float(np.mean((data.targets[dev] - data.targets[train].mean(0)) ** 2))
    assert result.best_dev_loss < 0.6 * mean_loss, (result.best_dev_loss, mean_loss)


def test_a_hotter_star_is_predicted_hotter(trained):
    """Directional test: the same stars (same noise, distance, extinction), 300 K hotter, must
    come out hotter."""
    data, _, dev, result = trained
    stars = draw_survey(SEED, N_STARS, GIANTS_AND_DWARFS)  # the survey the store was made from
    held_out = stars[stars["apogee_id"].isin(data.catalog["APOGEE_ID"].iloc[dev])]
    held_out = held_out[held_out["teff"].between(4200, 5600)].head(24)
    hotter = held_out.assign(teff=held_out["teff"] + 300.0)
    synth = SpectrumSynthesizer(SEED)
    predictor = Predictor(result.model, data.table1, data.flux_scale)

    def predicted_teff(table) -> np.ndarray:
        spectra = [synth.observe(number, truth, star["snr_target"], int(star["nvisits"]))
                   for truth, (number, star) in zip(synth.noiseless(table), table.iterrows())]
        flux = np.stack([f if f.ndim == 1 else f[0] for f, _, _ in spectra])
        error = np.stack([e if e.ndim == 1 else e[0] for _, e, _ in spectra])
        return predictor.predict(prepare_flux(flux, error))["TEFF"].to_numpy()

    shift = predicted_teff(hotter) - predicted_teff(held_out)
    assert len(shift) >= 10
    assert np.mean(shift > 0) >= 0.9 and np.median(shift) > 100.0, np.round(shift)
