"""The deep ensemble (issue [5 of 6]): K networks in one model file, their mean as the prediction,
their spread as the model's error (``*_ERR_MODEL``) beside the pixel noise's (``*_ERR_MC``), and
the calibrated total (``*_ERR``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from factories import TABLE1, labelled_store
from tolerances import output_atol, sigma_atol

from apogeenet.calibration import PARAMETERS, SigmaCalibration, sigma_floor
from apogeenet.catalog import build_catalog
from apogeenet.config import PredictParams, TrainProfile, Uncertainty
from apogeenet.model import ApogeeNet, flux_divisor
from apogeenet.noise import normal_noise, star_streams
from apogeenet.serving import MAX_MEMBERS, Predictor
from apogeenet.train import train_ensemble, train_model
from apogeenet.uncertainty import delta_predict, mc_predict, perturbation_sigma, seed_keys
from apogeenet.weights import ModelFileError, load_weights


def _network(seed: int) -> ApogeeNet:
    torch.manual_seed(seed)
    return ApogeeNet(3).eval()


@pytest.fixture(scope="module")
def pair():
    return _network(1), _network(2)


@pytest.fixture(scope="module")
def spectrum():
    rng = np.random.default_rng(8)
    flux = rng.uniform(50, 150, (1, 8575)).astype(np.float32)
    error = (0.02 * flux).astype(np.float32)
    flux[:, :200], error[:, :200] = 0, 1e10
    return flux, error


def _bound(net: ApogeeNet, inputs: np.ndarray) -> np.ndarray:
    """float32 error bound of each physical output (tests/tolerances.py)."""
    return output_atol(net, torch.from_numpy(inputs.astype(np.float32))) * np.asarray(TABLE1.std)


@pytest.mark.floats
def test_members_share_the_draws_and_their_spread_is_the_models_error(pair, spectrum):
    """Member j takes draws j, j + K, …: the prediction is the members' mean on the spectrum, σ the
    draws' spread about each member's own mean (pooled), σ_model the spread of the members."""
    flux, error = spectrum
    n_draws = 8
    keys = seed_keys(["2M00000001+0000001"])
    result = mc_predict(Predictor(list(pair), TABLE1, None), flux, error, keys, PredictParams(draws=n_draws))
    prepared = np.where(error < 1e9, flux, 0).astype(np.float32)
    unit = float(flux_divisor(torch.from_numpy(prepared), None))
    noise = normal_noise(star_streams(0, keys).repeat(n_draws), torch.arange(n_draws), 8575).numpy()
    draws = (prepared + noise * perturbation_sigma(flux, error, 5.0)) / unit
    single, within, everything, bounds = [], 0.0, [], []
    for j, net in enumerate(pair):
        one = Predictor(net, TABLE1, unit)
        single.append(one.predict(prepared).to_numpy()[0])
        mine = one.predict(draws[j::2] * unit).to_numpy()
        within = within + ((mine - mine.mean(axis=0)) ** 2).sum(axis=0)
        everything.append(mine)
        bounds.append(_bound(net, np.vstack([prepared / unit, draws])))
    bound = np.max(bounds, axis=0)
    np.testing.assert_array_less(np.abs(result.prediction[0] - np.mean(single, axis=0)), bound.max(axis=0) + 1e-12)
    np.testing.assert_array_less(np.abs(result.model_sigma[0] - np.std(single, axis=0, ddof=1)),
                                 sigma_atol(bound, 2) + 1e-12)
    np.testing.assert_array_less(np.abs(result.mean[0] - np.vstack(everything).mean(axis=0)), bound.max(axis=0) + 1e-12)
    pooled = np.sqrt(within / (n_draws - 2))
    np.testing.assert_array_less(np.abs(result.sigma[0] - pooled), sigma_atol(bound, n_draws) + 1e-12)
    assert np.all(result.model_sigma > 10 * sigma_atol(bound, 2))  # two seeds: a spread far above rounding
    np.testing.assert_allclose(result.total_sigma, np.hypot(result.sigma, result.model_sigma), rtol=1e-12)


@pytest.mark.floats
def test_a_single_network_has_no_model_error_and_its_sigma_is_unchanged(pair, spectrum):
    flux, error = spectrum
    keys = seed_keys(["2M1"])
    result = mc_predict(Predictor(pair[0], TABLE1, None), flux, error, keys, PredictParams(draws=6))
    assert np.all(np.isnan(result.model_sigma))
    np.testing.assert_array_equal(result.total_sigma, result.sigma)  # *_ERR = the paper's σ before calibration


@pytest.mark.floats
def test_the_delta_method_of_an_ensemble_averages_its_members_variances(pair, spectrum):
    flux, error = spectrum
    keys, cfg = seed_keys(["2M2"]), PredictParams(uncertainty=Uncertainty.DELTA)
    both = delta_predict(Predictor(list(pair), TABLE1, None), flux, error, keys, cfg)
    each = [delta_predict(Predictor(net, TABLE1, None), flux, error, keys, cfg) for net in pair]
    np.testing.assert_allclose(both.sigma, np.sqrt(np.mean([e.sigma ** 2 for e in each], axis=0)), rtol=1e-9)
    np.testing.assert_allclose(both.prediction, np.mean([e.prediction for e in each], axis=0), rtol=1e-12)
    np.testing.assert_allclose(both.model_sigma, np.std([e.prediction for e in each], axis=0, ddof=1), rtol=1e-9)
    np.testing.assert_array_equal(both.hidden, each[0].hidden)  # the domain is measured on the first member


def test_an_ensemble_is_one_file_and_predicts_its_members_mean(pair, spectrum, tmp_path):
    flux, error = spectrum
    prepared = np.where(error < 1e9, flux, 0).astype(np.float32)
    ensemble = Predictor(list(pair), TABLE1, None)
    path = ensemble.save(tmp_path / "model.pt")
    assert len(load_weights(path)["members"]) == 2 and "model" not in load_weights(path)
    back = Predictor.load(path)
    assert len(back.members) == 2
    expected = np.mean([Predictor(net, TABLE1, None).predict(prepared).to_numpy() for net in pair], axis=0)
    np.testing.assert_allclose(back.predict(prepared).to_numpy(), expected, rtol=1e-12)
    single = Predictor(pair[0], TABLE1, None).save(tmp_path / "single.pt")
    assert "model" in load_weights(single) and "members" not in load_weights(single)  # the paper's file as before
    assert len(Predictor.load(single).members) == 1


def test_a_file_of_too_many_members_or_no_list_is_refused(pair, tmp_path):
    saved = load_weights(Predictor(pair[0], TABLE1, None).save(tmp_path / "one.pt"))
    state = saved.pop("model")
    for members, name in (([state] * (MAX_MEMBERS + 1), "many.pt"), ("not a list", "text.pt"), ([], "none.pt")):
        torch.save({**saved, "members": members}, tmp_path / name)
        with pytest.raises(ModelFileError, match="not an apogeenet model.pt.*members"):
            Predictor.load(tmp_path / name)


def test_the_catalog_calibrates_the_total_and_keeps_both_parts():
    index = pd.DataFrame({"apogee_id": ["2MA", "2MB"], "ra": [1.0, 2.0], "dec": [0.0, 1.0], "snr": [100.0, 50.0]})
    prediction = np.array([[4800.0, 2.5, -0.2], [5200.0, 3.0, 0.1]])
    sigma = np.array([[30.0, 0.04, 0.03], [60.0, 0.08, 0.06]])
    model_sigma = np.array([[40.0, 0.03, 0.04], [80.0, 0.06, 0.08]])
    common = dict(hot_teff=6700, bounds={"teff": (2000, 12000)}, n_good_pixels=np.array([8000, 8000]),
                  min_good_pixels=5000)
    plain = build_catalog(index, prediction, sigma, None, model_sigma=model_sigma, **common)
    np.testing.assert_allclose(plain["TEFF_ERR"], [50.0, 100.0])  # √(30² + 40²), √(60² + 80²)
    np.testing.assert_array_equal(plain["TEFF_ERR_MC"], sigma[:, 0])
    np.testing.assert_array_equal(plain["TEFF_ERR_MODEL"], model_sigma[:, 0])
    calibration = SigmaCalibration("monte_carlo", "truth", {"all": dict.fromkeys(PARAMETERS, [2.0, 30.0, 9.0])})
    calibrated = build_catalog(index, prediction, sigma, None, model_sigma=model_sigma, calibration=calibration,
                               **common)
    np.testing.assert_allclose(calibrated["TEFF_ERR"], np.sqrt(4 * np.array([50.0, 100.0]) ** 2 + 30.0 ** 2))
    blind = SigmaCalibration("monte_carlo", "truth", {"all": dict.fromkeys(PARAMETERS, [0.0, 10.0, 9.0])})
    floored = build_catalog(index, prediction, sigma, None, model_sigma=model_sigma, calibration=blind, members=2,
                            **common)  # a fit with a = 0 still keeps the pixel noise and the members' disagreement:
    np.testing.assert_allclose(floored["TEFF_ERR"], np.sqrt(sigma[:, 0] ** 2 + model_sigma[:, 0] ** 2 / 2))  # 41, 82 > b
    np.testing.assert_array_equal(sigma_floor(sigma, np.full_like(sigma, np.nan), 2), sigma)  # one network: σ
    one_network = build_catalog(index, prediction, sigma, None, **common)
    assert one_network["TEFF_ERR_MODEL"].isna().all()
    np.testing.assert_array_equal(one_network["TEFF_ERR"], sigma[:, 0])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return labelled_store(tmp_path_factory.mktemp("ensemble"), 16, seed=4)


def test_member_k_is_the_single_network_of_seed_plus_k(small, tmp_path):
    train, dev = small.select(split="train"), small.select(split="dev")
    dev = dev if len(dev) else train[:2]
    cfg = TrainProfile(max_epochs=1, batch_size=8, seed=5, members=2)
    members = train_ensemble(small, train, dev, cfg, tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["member0", "member1"]
    alone = train_model(small, train, dev, cfg.model_copy(update={"members": 1}), tmp_path / "alone", seed=6)
    first = next(iter(alone.model.state_dict()))
    assert torch.equal(members[1].model.state_dict()[first], alone.model.state_dict()[first])
    assert not torch.equal(members[0].model.state_dict()[first], members[1].model.state_dict()[first])


def test_fewer_than_two_draws_per_member_is_refused_and_no_draws_is_the_single_pass(pair, spectrum):
    from apogeenet.errors import InputError

    flux, error = spectrum
    ensemble, keys = Predictor(list(pair), TABLE1, None), seed_keys(["2M3"])
    with pytest.raises(InputError, match="at least 4 draws"):
        mc_predict(ensemble, flux, error, keys, PredictParams(draws=3))
    none = mc_predict(ensemble, flux, error, keys, PredictParams(uncertainty=Uncertainty.NONE))
    four = mc_predict(ensemble, flux, error, keys, PredictParams(draws=4))
    assert np.all(np.isnan(none.sigma)) and np.all(np.isfinite(four.sigma))
    prepared = np.where(error < 1e9, flux, 0).astype(np.float32)
    unit = float(flux_divisor(torch.from_numpy(prepared), None))
    bound = np.max([_bound(net, prepared / unit) for net in pair], axis=0)  # the head runs over other batches
    np.testing.assert_array_less(np.abs(none.prediction - four.prediction), bound + 1e-12)
    np.testing.assert_array_less(np.abs(none.model_sigma - four.model_sigma)[0], sigma_atol(bound, 2) + 1e-12)
    assert np.all(none.model_sigma > 0)


def test_the_label_scales_bias_is_a_systematic_term_in_the_model_and_the_header(pair, tmp_path):
    from apogeenet.calibrate_model import label_systematics
    from apogeenet.catalog import systematics_header

    truth = pd.DataFrame({"TEFF": [3500.0, 3600, 3700, 5000, 5100], "LOGG": [4.8, 4.9, 5.0, 2.5, 2.6],
                          "FE_H": [0.0, 0.1, -0.1, 0.0, 0.2]}, index=["a", "b", "c", "d", "e"])
    catalog = pd.DataFrame({"APOGEE_ID": ["a", "b", "c", "d", "e"], "SOURCE": ["MSTAR"] * 3 + ["PAYNE"] * 2,
                            "TEFF": [3510.0, 3590, 3730, 5000, 5100], "LOGG": [4.87, 4.96, 5.07, 2.5, 2.6],
                            "FE_H": [0.0, 0.1, -0.1, 0.0, np.nan]})
    terms = label_systematics(catalog, truth)
    np.testing.assert_allclose(terms["MSTAR"]["LOGG"][:1], [0.2 / 3], rtol=1e-9)  # (0.07 + 0.06 + 0.07) / 3
    np.testing.assert_allclose(terms["MSTAR"]["TEFF"], [10.0, np.std([10, -10, 30], ddof=1) / np.sqrt(3), 3])
    assert "FE_H" not in terms["PAYNE"]  # one finite offset: no error to give
    model = Predictor(list(pair), TABLE1, None, systematics=terms)
    back = Predictor.load(model.save(tmp_path / "model.pt"))
    assert back.systematics == terms
    header = systematics_header(back.systematics)
    assert header["sysMLOGG"] == pytest.approx(0.066667, abs=1e-6) and "not in *_ERR" in header["sysref"]
    assert "no truth" in systematics_header({})["sysref"]
    saved = load_weights(tmp_path / "model.pt")
    torch.save({**saved, "systematics": {"MSTAR": {"LOGG": [float("nan"), 0.0, 1.0]}}}, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="systematics"):
        Predictor.load(tmp_path / "bad.pt")
