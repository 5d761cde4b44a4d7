"""CUDA paths (§3.3 training on the GPU, bfloat16 autocast as an option; §3.5 inference): run
where a CUDA device is present (``bench/device_checks.sh`` runs them on a borrowed GPU), skipped
elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import TABLE1, labelled_store

from apogeenet.config import PredictParams, TrainProfile
from apogeenet.model import prepare_flux
from apogeenet.serving import Predictor
from apogeenet.dataset import LabelledSpectra, best_device
from apogeenet.train import train_model
from apogeenet.uncertainty import mc_predict, seed_keys

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TOLERANCE = np.array([10.0, 0.01, 0.01])  # K, dex, dex: what a change of device may move


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> LabelledSpectra:
    return labelled_store(tmp_path_factory.mktemp("cuda"), 400, seed=4, workers=2, flux_scale=None)


@pytest.fixture(scope="module")
def trained(survey, tmp_path_factory):
    return _train(survey, tmp_path_factory.mktemp("ck"), amp=False)


def _train(data: LabelledSpectra, checkpoints, *, amp: bool):
    train, dev = data.select(split="train"), np.concatenate([data.select(split="dev"), data.select(split="test")])
    cfg = TrainProfile(optimizer="adam", learning_rate=1e-3, batch_size=32, max_epochs=12, patience=12,
                      grad_clip=1.0, schedule="onecycle", amp=amp)
    result = train_model(data, train, dev, cfg, checkpoints)
    mean_loss = float(np.mean((data.targets[dev] - data.targets[train].mean(0)) ** 2))
    return result, mean_loss


def test_training_runs_on_the_gpu_and_lowers_the_dev_loss(trained):
    result, mean_loss = trained
    assert best_device().type == "cuda"
    assert result.best_dev_loss < 0.6 * mean_loss, (result.best_dev_loss, mean_loss)
    assert next(result.model.parameters()).device.type == "cpu"  # handed back on the CPU


def test_bfloat16_autocast_training_also_learns(survey, tmp_path):
    result, mean_loss = _train(survey, tmp_path, amp=True)
    assert all(np.isfinite(h["train_loss"]) for h in result.history)
    assert result.best_dev_loss < 0.6 * mean_loss, (result.best_dev_loss, mean_loss)


def test_gpu_and_cpu_predictions_agree(survey, trained, tmp_path):
    result, _ = trained
    path = Predictor(result.model.cpu(), TABLE1, None).save(tmp_path / "model.pt")
    spectra = survey.store.read(survey.rows[:64])
    flux = prepare_flux(spectra.flux, spectra.error)
    cpu = Predictor.load(path).predict(flux).to_numpy()
    on_gpu = Predictor.load(path, device="cuda")
    gpu = on_gpu.predict(flux).to_numpy()
    assert np.all(np.abs(gpu - cpu).max(axis=0) < TOLERANCE), np.abs(gpu - cpu).max(axis=0)
    # a model saved from the GPU loads on a machine without one
    weights = torch.load(on_gpu.save(tmp_path / "from_gpu.pt"), weights_only=False)["model"]
    assert all(w.device.type == "cpu" for w in weights.values())


def test_monte_carlo_sigma_does_not_depend_on_the_device(survey, trained, tmp_path):
    result, _ = trained
    spectra = survey.store.read(survey.rows[:12])
    keys = seed_keys(survey.catalog["APOGEE_ID"].to_numpy()[:12])
    predictor = Predictor(result.model.cpu(), TABLE1, None)
    cpu = mc_predict(predictor, spectra.flux, spectra.error, keys, PredictParams(draws=30, max_batch=200))
    gpu = mc_predict(predictor.to("cuda"), spectra.flux, spectra.error, keys, PredictParams(draws=30, max_batch=200))
    predictor.to("cpu")
    assert np.all(np.abs(gpu.prediction - cpu.prediction).max(axis=0) < TOLERANCE)
    assert np.all(np.abs(gpu.sigma - cpu.sigma).max(axis=0) < TOLERANCE)
    assert np.all(cpu.sigma > 0)


def test_noise_made_on_the_gpu_is_the_cpus():
    """Same integer bits on both devices; the float32 Box–Muller step may differ in the last bits."""
    from apogeenet.noise import normal_noise, star_streams

    keys = np.arange(6, dtype=np.uint64) * np.uint64(2**40 + 3)
    draws = torch.arange(5).repeat(6)
    cpu = normal_noise(star_streams(3, keys).repeat_interleave(5), draws, 8575)
    gpu = normal_noise(star_streams(3, keys, "cuda").repeat_interleave(5), draws.cuda(), 8575).cpu()
    assert torch.allclose(gpu, cpu, rtol=0, atol=1e-5)


def test_delta_sigma_does_not_depend_on_the_device(survey, trained):
    from apogeenet.uncertainty import delta_predict

    result, _ = trained
    spectra = survey.store.read(survey.rows[:12])
    keys = seed_keys(survey.catalog["APOGEE_ID"].to_numpy()[:12])
    predictor = Predictor(result.model.cpu(), TABLE1, None)
    cpu = delta_predict(predictor, spectra.flux, spectra.error, keys, PredictParams(uncertainty="delta"))
    gpu = delta_predict(predictor.to("cuda"), spectra.flux, spectra.error, keys, PredictParams(uncertainty="delta"))
    predictor.to("cpu")
    assert np.all(np.abs(gpu.sigma - cpu.sigma).max(axis=0) < TOLERANCE)
