"""Training machinery (§3.3): early stopping, best checkpoint, resume; evaluation tables (§3.5);
the MLflow pyfunc and registry aliases."""

from __future__ import annotations

import warnings

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from factories import TABLE1, labelled_store
from tolerances import output_atol

from apogeenet.config import AdaptParams, AdaptTraining, TrainProfile
from apogeenet.evaluate import evaluation_tables, metrics_from_tables, robust_sigma, tables_markdown
from apogeenet.labels.catalog import combine_labels
from apogeenet.model import ApogeeNet, scale_flux
from apogeenet.serving import Predictor
from apogeenet.dataset import LabelledSpectra
from apogeenet.train import train_model


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return labelled_store(tmp_path_factory.mktemp("train"), 24, seed=2)


def test_targets_are_standardised_with_table1(small):
    expected = (small.catalog["TEFF"].to_numpy() - 4700.0) / 900.0
    np.testing.assert_allclose(small.targets[:, 0], expected, rtol=1e-6)
    flux, target = small.batch(np.array([0, 3]))
    assert flux.shape == (2, 8575) and flux.dtype == torch.float32 and target.shape == (2, 3)


def test_early_stopping_keeps_the_best_and_resumes(small, tmp_path):
    train, dev = small.select(split="train"), small.select(split="dev")
    dev = dev if len(dev) else train[:2]
    cfg = TrainProfile(max_epochs=3, patience=5, batch_size=8)
    first = train_model(small, train, dev, cfg, tmp_path / "ck")
    assert len(first.history) == 3 and (tmp_path / "ck" / "best.pt").exists()
    assert first.best_dev_loss == min(h["dev_loss"] for h in first.history)
    # "kill" after 3 epochs, then ask for 5: it resumes at epoch 3, not 0
    resumed = train_model(small, train, dev, TrainProfile(max_epochs=5, patience=5, batch_size=8), tmp_path / "ck")
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3, 4]
    assert resumed.history[:3] == first.history
    # patience: a run whose dev loss cannot improve stops after `patience` epochs
    stop = train_model(small, train, dev, TrainProfile(max_epochs=50, patience=2, batch_size=8,
                                                      learning_rate=1e-12), tmp_path / "stuck")
    assert [h["epoch"] for h in stop.history] == [0, 1, 2] and stop.best_epoch == 0  # 0 improves on inf only


def test_noise_augmentation_draws_from_each_spectrums_own_errors(small):
    from apogeenet.uncertainty import perturbation_sigma

    positions = np.array([0, 1, 2])
    clean, _ = small.batch(positions)
    noisy, _ = small.batch(positions, noise=np.random.default_rng([0, 1, 0]), noise_cap=5.0)
    again, _ = small.batch(positions, noise=np.random.default_rng([0, 1, 0]), noise_cap=5.0)
    assert torch.equal(noisy, again)  # a function of its seed: a resumed epoch draws the same
    tight, _ = small.batch(positions, noise=np.random.default_rng([0, 1, 0]), noise_cap=0.5)
    assert (tight - clean).abs().max() < (noisy - clean).abs().max()  # the profile's cap is the one applied
    spectra = small.store.read(small.rows[positions])
    sigma = perturbation_sigma(spectra.flux, spectra.error, 5.0)
    good = sigma > 0
    z = ((noisy - clean).numpy() * small.flux_scale)[good] / sigma[good]
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert torch.equal(noisy[torch.from_numpy(~good)], clean[torch.from_numpy(~good)])  # bad pixels stay 0


@pytest.mark.slow
def test_augmented_training_resumes_to_the_same_run(small, tmp_path):
    train, dev = small.select(split="train"), small.select(split="dev")
    dev = dev if len(dev) else train[:2]
    cfg = TrainProfile(max_epochs=2, patience=5, batch_size=8, augment="noise")
    whole = train_model(small, train, dev, cfg, tmp_path / "whole")
    train_model(small, train, dev, TrainProfile(**{**cfg.model_dump(), "max_epochs": 1}), tmp_path / "cut")
    resumed = train_model(small, train, dev, cfg, tmp_path / "cut")
    assert resumed.history[1]["dev_loss"] == whole.history[1]["dev_loss"]
    assert whole.history[0]["train_loss"] != train_model(
        small, train, dev, TrainProfile(max_epochs=1, patience=5, batch_size=8), tmp_path / "plain").history[0]["train_loss"]


def test_tables_from_known_predictions():
    frame = pd.DataFrame({
        "SOURCE": ["PAYNE"] * 4 + ["MSTAR"] * 2, "SPLIT": ["train", "train", "test", "test", "test", "test"],
        "TEFF": [5000.0] * 6, "LOGG": [2.0] * 6, "FE_H": [0.0] * 6,
        "PRED_TEFF": [5000.0, 5000, 5090, 4910, 5180, 4820], "PRED_LOGG": [2.0] * 6, "PRED_FE_H": [0.0] * 6})
    table2, table3 = evaluation_tables(frame, TABLE1)
    assert table2.loc["payne", "test"] == pytest.approx((90 / 900) ** 2 / 3)
    assert table2.loc["mstar", "test"] == pytest.approx((180 / 900) ** 2 / 3)
    assert table3.loc[("payne", "teff", "scatter"), "test"] == pytest.approx(90.0)
    assert table3.loc[("full", "teff", "scatter"), "test"] == pytest.approx(np.sqrt((2 * 90**2 + 2 * 180**2) / 4))
    metrics = metrics_from_tables(table2, table3)
    assert metrics["test/mstar/teff_scatter"] == pytest.approx(180.0)
    assert "test/yso/mse" not in metrics  # empty groups are not invented
    assert "| payne | teff (K) | 0 | – | 90 |" in tables_markdown(table2, table3)
    assert robust_sigma(np.array([-1.0, 0.0, 1.0, 100.0])) == pytest.approx(1.4826)


@pytest.mark.floats
def test_predictor_round_trip_in_physical_units(tmp_path):
    torch.manual_seed(0)
    predictor = Predictor(ApogeeNet(3), TABLE1)
    flux = np.random.default_rng(0).uniform(10, 500, (3, 8575)).astype(np.float32)
    before = predictor.predict(flux)
    again = Predictor.load(predictor.save(tmp_path / "model.pt")).predict(flux)
    pd.testing.assert_frame_equal(before, again)
    inputs = torch.from_numpy(flux)
    z = predictor.first.eval()(inputs).detach().numpy()  # one batch, another summation order
    bound = output_atol(predictor.first, inputs)[:, 0] * 900
    assert np.all(np.abs(before["TEFF"] - (z[:, 0] * 900 + 4700)) <= bound)


@pytest.mark.slow
def test_registry_aliases_candidate_and_champion(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from apogeenet.online import OUTPUT_COLUMNS, example_input
    from apogeenet.pyfunc import log_and_register
    from apogeenet.registry import MODEL_NAME, load_predictor
    from apogeenet.tracking import mlflow_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    flux = np.random.default_rng(1).uniform(10, 500, (2, 8575)).astype(np.float32)
    request = example_input(flux, np.full_like(flux, 5.0), ["2MA", "2MB"])

    def constant_model(c):  # predicts the standardised value c for every star
        model = ApogeeNet(3)
        last = model.head[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.constant_(last.bias, c)
        return Predictor(model, TABLE1)

    def dev_loss_of(predictor):  # "dev set" whose standardised labels are all 0
        with torch.no_grad():
            return float((predictor.first.eval()(torch.from_numpy(flux)) ** 2).mean())

    results = []
    for i, c in enumerate([0.7, 0.95, 0.5]):  # dev losses 0.49, 0.90, 0.25
        with mlflow_run("test", f"run{i}", root=tmp_path):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results.append(log_and_register(constant_model(c), request[:1], dev_loss_of=dev_loss_of))
            assert not [w for w in caught if "type hint" in str(w.message)]  # the pyfunc's predict is typed
    assert [r["promoted"] for r in results] == [True, False, True]
    assert results[1]["champion_dev_loss"] == pytest.approx(0.49)
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL_NAME, "candidate").version) == "3"
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "3"
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    out = model.predict(request, params={"draws": 4})
    assert list(out.columns) == OUTPUT_COLUMNS and out["APOGEE_ID"].tolist() == ["2MA", "2MB"]
    assert client.get_model_version(MODEL_NAME, "2").tags["dev_loss"] == "0.9025"  # born with its tag
    assert "Dev loss 0.9025" in client.get_model_version(MODEL_NAME, "2").description
    assert client.get_registered_model(MODEL_NAME).description.startswith("APOGEE Net (Olney et al. 2020")
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/1", dst_path=str(tmp_path / "dl")))
    assert not list(local.rglob("*.pkl")), "a logged model must hold no pickled code"
    pd.testing.assert_frame_equal(load_predictor(f"models:/{MODEL_NAME}@champion").predict(flux),
                                  out[["TEFF", "LOGG", "FE_H"]])


def test_flux_unit_travels_with_the_model(tmp_path):
    torch.manual_seed(0)
    flux = np.random.default_rng(2).uniform(10, 500, (2, 8575)).astype(np.float32)
    scaled = Predictor(ApogeeNet(3), TABLE1, flux_scale=250.0)
    plain = Predictor(scaled.first, TABLE1)
    pd.testing.assert_frame_equal(scaled.predict(flux), plain.predict(flux / 250.0))
    assert Predictor.load(scaled.save(tmp_path / "m.pt")).flux_scale == 250.0


@pytest.mark.slow
def test_adaptation_rounds_follow_section_3_4(small, tmp_path):
    from apogeenet.adapt import adapt_model

    part = small.catalog[["APOGEE_ID", "TEFF", "LOGG", "FE_H"]]
    mixed = combine_labels({"PAYNE": part.iloc[:12], "MSTAR": part.iloc[12:18], "YSO": part.iloc[18:]})
    data = LabelledSpectra(small.store, mixed, TABLE1, flux_scale=small.median_flux(np.arange(len(small))))
    torch.manual_seed(0)
    init = ApogeeNet(3).state_dict()
    cfg = AdaptTraining(max_epochs=2, patience=2, batch_size=8)
    result = adapt_model(data, init, AdaptParams(payne_fraction=0.05, patience_rounds=1, max_rounds=4, training=cfg),
                         tmp_path / "adapt")
    n_focus_train = len(data.select(split="train", sources=("MSTAR", "YSO")))
    assert all(r["n_payne"] == 1 and r["n_train"] == n_focus_train + 1 for r in result.rounds)
    assert result.best_focus_loss <= result.initial_focus_loss
    losses = [r["focus_dev_loss"] for r in result.rounds]
    assert len(result.rounds) == 4 or losses[-1] >= min([result.initial_focus_loss, *losses[:-1]])


def test_adaptation_keeps_the_payne_dev_error_within_its_guard(small, tmp_path):
    from apogeenet.adapt import adapt_model, rms_per_parameter

    part = small.catalog[["APOGEE_ID", "TEFF", "LOGG", "FE_H"]]
    mixed = combine_labels({"PAYNE": part.iloc[:12], "MSTAR": part.iloc[12:18], "YSO": part.iloc[18:]})
    data = LabelledSpectra(small.store, mixed, TABLE1, flux_scale=None)
    torch.manual_seed(1)
    init = ApogeeNet(3).state_dict()
    payne_dev = data.select(split="dev", sources=("PAYNE",))
    start = ApogeeNet(3)
    start.load_state_dict(init)
    before = rms_per_parameter(start, data, payne_dev)
    cfg = AdaptTraining(max_epochs=3, patience=3, batch_size=4, learning_rate=3e-3)
    result = adapt_model(data, init, AdaptParams(max_payne_increase=0.0, patience_rounds=1, max_rounds=2,
                                                 training=cfg), tmp_path / "adapt")
    assert len(payne_dev) and np.all(rms_per_parameter(result.model, data, payne_dev) <= before + 1e-6)


def test_a_round_that_never_improves_returns_its_starting_weights(small, tmp_path):
    torch.manual_seed(2)
    init = ApogeeNet(3).state_dict()
    train, dev = small.select(split="train"), small.select(split="dev")
    calls = []

    def never_better(model):
        calls.append(1)
        return (1.0, float("inf"), 2.0)[len(calls) - 1]  # the starting weights best; inf: a guard broken

    result = train_model(small, train, dev, TrainProfile(max_epochs=2, patience=5, batch_size=8), tmp_path,
                         init_state=init, dev_loss=never_better)
    assert result.best_epoch == -1 and len(result.history) == 2
    assert all(torch.equal(v, init[k]) for k, v in result.model.state_dict().items())


@pytest.mark.floats
def test_per_spectrum_flux_unit_ignores_the_brightness(tmp_path):
    torch.manual_seed(0)
    flux = np.random.default_rng(3).uniform(10, 500, (3, 8575)).astype(np.float32)
    flux[:, :100] = 0  # bad pixels stay 0 and do not enter the median
    predictor = Predictor(ApogeeNet(3), TABLE1, flux_scale=None)
    scaled = torch.from_numpy(scale_flux(flux, None))  # the inputs differ by float32 rounding only
    bound = output_atol(predictor.first, scaled) * np.asarray(TABLE1.std)
    assert np.all(np.abs(predictor.predict(flux).to_numpy() - predictor.predict(flux * 37.5).to_numpy()) <= bound)
    assert Predictor.load(predictor.save(tmp_path / "m.pt")).flux_scale is None


def test_one_cycle_schedule_resumes_where_it_stopped(small, tmp_path):
    train, dev = small.select(split="train"), small.select(split="train")[:2]
    cfg = TrainProfile(max_epochs=3, patience=3, batch_size=8, schedule="onecycle", learning_rate=1e-3)
    train_model(small, train, dev, TrainProfile(**{**cfg.model_dump(), "patience": 1}), tmp_path / "ck")
    saved = torch.load(tmp_path / "ck" / "last.pt", weights_only=False)
    steps_done = saved["scheduler"]["last_epoch"]
    assert steps_done >= int(np.ceil(len(train) / 8))  # at least one epoch of steps
    full = train_model(small, train, dev, cfg, tmp_path / "ck")  # resumes, finishes the cycle
    final = torch.load(tmp_path / "ck" / "last.pt", weights_only=False)["scheduler"]
    assert final["last_epoch"] == 3 * int(np.ceil(len(train) / 8)) and len(full.history) == 3
    assert final["_last_lr"][0] < 0.1 * cfg.learning_rate  # annealed towards the end of the cycle


def test_a_diverging_run_stops_with_a_clear_error(small, tmp_path):
    from apogeenet.train import TrainingDiverged

    train = small.select(split="train")
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train_model(small, train, train[:2], TrainProfile(optimizer="sgd", learning_rate=1e8, max_epochs=3,
                                                         batch_size=8), tmp_path / "ck")
    # raw flux (scale 1): one SGD step of the whole split leaves the dev loss NaN — said, not a missing best.pt
    with pytest.raises(TrainingDiverged, match="the dev loss is nan in epoch 0"):
        train_model(small, train, train[:2], TrainProfile(optimizer="sgd", learning_rate=1e-3, max_epochs=1,
                                                         batch_size=len(train), dropout=0.0), tmp_path / "raw")


def test_a_checkpoint_of_other_targets_is_not_resumed(small, tmp_path):
    import copy

    train, dev = small.select(split="train"), small.select(split="train")[:2]
    cfg = TrainProfile(max_epochs=2, patience=5, batch_size=8)
    assert len(train_model(small, train, dev, cfg, tmp_path / "ck").history) == 2
    assert len(train_model(small, train, dev, cfg, tmp_path / "ck").history) == 2  # resumed: nothing left to do
    relabelled = copy.copy(small)
    relabelled.targets = small.targets + 0.5  # e.g. a new label catalog with the same stars
    again = train_model(relabelled, train, dev, cfg, tmp_path / "ck")
    assert [h["epoch"] for h in again.history] == [0, 1]  # started afresh


def test_a_huber_loss_is_pulled_less_by_a_label_outlier(small, tmp_path):
    """``loss: huber``: one label 20 standard deviations off moves a gradient step of eq. 4's MSE
    by 2·20 per star and of the Huber loss by at most 2·δ, so the prediction for that star moves
    ≥ 10× less (δ = 0.25: 80× in exact arithmetic)."""
    import copy

    small = small.with_flux_scale(None)  # each spectrum over its median: outputs of order 1 from the start
    train = small.select(split="train")
    outlier = copy.copy(small)
    outlier.targets = small.targets.copy()
    outlier.targets[train[0]] += 20.0
    flux, _ = small.batch(train[:1])
    moved = {}
    for loss in ("mse", "huber"):
        cfg = TrainProfile(optimizer="sgd", learning_rate=1e-3, max_epochs=1, batch_size=len(train), dropout=0.0,
                           loss=loss, huber_delta=0.25)
        runs = [train_model(d, train, train[:2], cfg, tmp_path / f"{loss}-{k}").model.eval()
                for k, d in enumerate((small, outlier))]
        with torch.no_grad():
            clean, dirty = (net(flux) for net in runs)
        moved[loss] = float((dirty - clean).abs().max())
    assert moved["mse"] > 10 * moved["huber"] > 0, moved


def test_a_huber_delta_per_parameter_is_each_parameters_huber_loss():
    """``huber_delta: [Teff, log g, [Fe/H]]`` is, column by column, the Huber loss of that column's
    δ (quadratic within δ_k, linear beyond); one δ for all is torch's own HuberLoss."""
    from apogeenet.train import _loss_function

    generator = torch.Generator().manual_seed(5)
    prediction, target = torch.randn(64, 3, generator=generator), torch.randn(64, 3, generator=generator)
    deltas = (0.25, 0.5, 1.0)
    per_column = torch.stack([torch.nn.HuberLoss(delta=d, reduction="none")(prediction[:, k], target[:, k])
                              for k, d in enumerate(deltas)], dim=1).mean()
    loss = _loss_function(TrainProfile(loss="huber", huber_delta=deltas))(prediction, target)
    # float32 sums of 192 terms taken in other orders (and δ² · h₁(r/δ) rounding apart from h_δ(r)):
    # within n ε of each other
    torch.testing.assert_close(loss, per_column, rtol=prediction.numel() * torch.finfo(torch.float32).eps, atol=0)
    assert isinstance(_loss_function(TrainProfile(loss="huber", huber_delta=(0.3,) * 3)), torch.nn.HuberLoss)
    with pytest.raises(ValueError):
        TrainProfile(loss="huber", huber_delta=(0.25, -1.0, 1.0))
