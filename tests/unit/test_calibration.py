"""The σ calibration (apogeenet.calibration) and the out-of-domain distance (apogeenet.domain)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from factories import TABLE1

from apogeenet.calibration import (TooFewStars, calibrated_sigma, fit_calibration, fit_missing_error,
                                   prediction_regions)
from apogeenet.domain import fit_domain
from apogeenet.model import ApogeeNet
from apogeenet.reliability import (calibration_bar, calibration_markdown, calibration_report, exact_sigma_pass_rate,
                                  meets_bar, rescaling_meets_bar)
from apogeenet.serving import Predictor


def test_the_missing_error_model_is_recovered_and_outliers_do_not_inflate_it():
    rng = np.random.default_rng(1)
    sigma = rng.uniform(10, 100, 4000)
    true_a, true_b = 1.3, 40.0
    residual = rng.standard_normal(4000) * np.sqrt(true_a ** 2 * sigma ** 2 + true_b ** 2)
    a, b = fit_missing_error(residual, sigma)
    assert a == pytest.approx(true_a, rel=0.06) and b == pytest.approx(true_b, rel=0.12)
    residual[:200] = 50 * residual[:200]  # 5 % catastrophic residuals
    a_out, b_out = fit_missing_error(residual, sigma)
    assert a_out == pytest.approx(true_a, rel=0.12) and b_out == pytest.approx(true_b, rel=0.2)
    heavy = rng.standard_t(3, 4000) * np.sqrt(true_a ** 2 * sigma ** 2 + true_b ** 2)  # heavy tails
    a_t, b_t = fit_missing_error(heavy, sigma)
    z = heavy / np.sqrt(a_t ** 2 * sigma ** 2 + b_t ** 2)
    assert np.median(np.abs(z)) == pytest.approx(0.6745, rel=1e-3)  # the core matches N(0, 1)


def test_a_calibrated_sigma_never_falls_below_the_pixel_noise_it_propagates():
    """A dev split of bright stars whose σ says nothing of their error fits a ≈ 0; a faint star
    must still get at least its own pixel-noise σ, not the bright stars' b."""
    rng = np.random.default_rng(5)
    sigma = rng.uniform(1.0, 10.0, 400)           # high S/N: pixel noise far below the model's error
    residual = rng.standard_normal(400) * (60.0 - 3.0 * sigma)  # ... which does not grow with it
    a_free, b_free = fit_missing_error(residual, sigma)
    assert calibrated_sigma(np.array([900.0]), a_free, b_free)[0] < 100.0  # without the floor: the bright stars' σ
    a, b = fit_missing_error(residual, sigma, floor=sigma)
    z = residual / calibrated_sigma(sigma, a, b, sigma)
    assert np.median(np.abs(z)) == pytest.approx(norm.ppf(0.75), rel=1e-9)
    faint = np.array([900.0, 20.0])
    calibrated = calibrated_sigma(faint, a, b, faint)
    assert calibrated[0] >= 900.0 and calibrated[1] == pytest.approx(b, rel=0.05) and b > 30.0
    floored = fit_calibration(np.zeros((400, 3)), np.tile(sigma[:, None], 3), -np.tile(residual[:, None], 3),
                              method="monte_carlo", reference_name="truth", floor=np.tile(sigma[:, None], 3))
    dwarf = np.array([[3300.0, 4.9, 0.0]])
    assert (floored.apply(dwarf, np.array([[900.0, 900.0, 900.0]]), floor=np.array([[900.0, 800.0, 700.0]]))
            >= [[900.0, 800.0, 700.0]]).all()


def test_a_floor_that_alone_overcovers_leaves_the_pixel_noise_as_sigma():
    rng = np.random.default_rng(6)
    sigma = rng.uniform(20.0, 40.0, 300)
    residual = rng.standard_normal(300) * 0.5 * sigma  # the pixel σ is twice the whole error
    a, b = fit_missing_error(residual, sigma, floor=sigma)
    assert (a, b) == (0.0, 0.0)
    np.testing.assert_array_equal(calibrated_sigma(sigma, a, b, sigma), sigma)
    assert fit_missing_error(np.zeros(50), np.ones(50), floor=np.ones(50)) == (0.0, 0.0)  # no error at all


def test_regions_follow_the_papers_cuts():
    prediction = np.array([[4500.0, 2.5, 0.0],   # Payne regime (Teff > 4000)
                           [3800.0, 3.2, 0.0],   # Payne regime (log g < 3.5)
                           [3300.0, 3.9, 0.0],   # inside the §4.1 triangle of young stars
                           [3300.0, 4.9, 0.0]])  # the low-mass main sequence
    assert prediction_regions(prediction).tolist() == ["payne", "payne", "young", "cool_dwarf"]


def _calibrated_dev(n=600, seed=2):
    """Dev-like predictions in two regions whose missing error differs: (prediction, σ, reference)."""
    rng = np.random.default_rng(seed)
    prediction = np.where(np.arange(n)[:, None] % 2 == 0, [[4800.0, 2.5, -0.1]], [[3300.0, 4.9, 0.0]])
    sigma = rng.uniform(0.5, 2.0, (n, 3)) * np.array([30.0, 0.04, 0.02])
    floor = np.where(np.arange(n)[:, None] % 2 == 0, [[50.0, 0.06, 0.02]], [[30.0, 0.05, 0.08]])
    error = rng.standard_normal((n, 3)) * np.sqrt(sigma ** 2 + floor ** 2)
    return prediction, sigma, prediction - error


def test_fit_per_region_applies_round_trips_through_model_pt_and_meets_the_bar(tmp_path):
    prediction, sigma, reference = _calibrated_dev()
    calibration = fit_calibration(prediction, sigma, reference, method="monte_carlo", reference_name="truth")
    assert set(calibration.terms) == {"all", "payne", "cool_dwarf"}
    assert calibration.terms["cool_dwarf"]["FE_H"][1] == pytest.approx(0.08, rel=0.15)
    assert calibration.terms["payne"]["FE_H"][1] == pytest.approx(0.02, rel=0.25)
    predictor = Predictor(ApogeeNet(3), TABLE1, None, {"monte_carlo": calibration})
    back = Predictor.load(predictor.save(tmp_path / "model.pt")).calibrations["monte_carlo"]
    assert back == calibration
    # a region without its own fit (young) takes the fit of all stars
    young = np.array([[3300.0, 3.9, 0.0]])
    a, b, _ = calibration.terms["all"]["TEFF"]
    assert back.apply(young, np.array([[30.0, 0.1, 0.1]]))[0, 0] == pytest.approx(np.hypot(a * 30, b))

    test_prediction, test_sigma, test_reference = _calibrated_dev(seed=3)
    ids = [f"2M{i}" for i in range(len(test_prediction))]
    frame = pd.DataFrame({"APOGEE_ID": ids, "SNR": 50.0, "DATA_TYPE": np.where(np.arange(len(ids)) % 2, "MSTAR", "PAYNE")})
    calibrated = back.apply(test_prediction, test_sigma)
    for k, name in enumerate(("TEFF", "LOGG", "FE_H")):
        frame[name], frame[f"{name}_ERR_MC"], frame[f"{name}_ERR"] = test_prediction[:, k], test_sigma[:, k], calibrated[:, k]
    truth = pd.DataFrame(test_reference, index=ids, columns=["TEFF", "LOGG", "FE_H"])
    report = calibration_report(frame, truth)
    bar = calibration_bar(report)
    assert len(bar) == 6 and bar.all(), report
    assert (report["z_robust_sigma_mc"] > 1.3).any()  # the method's σ alone was too small
    # σ half as large fails the bar
    frame[[f"{n}_ERR" for n in ("TEFF", "LOGG", "FE_H")]] /= 2
    assert not calibration_bar(calibration_report(frame, truth)).any()


def test_label_sources_get_their_own_fit_and_unlabelled_stars_their_regions():
    """MSTAR and YSO stars predicted in one region but erring differently (a YSO on the main
    sequence is not an M dwarf of the §2.3 box): each source is fitted apart; a star without a
    source takes its prediction region's fit, a source with too few dev stars too."""
    rng = np.random.default_rng(6)
    n = 1200
    prediction = np.tile([[3300.0, 4.9, 0.0]], (n, 1))  # all in cool_dwarf
    sources = np.where(np.arange(n) % 3 == 0, "YSO", "MSTAR")
    sigma = rng.uniform(0.5, 2.0, (n, 3)) * np.array([30.0, 0.04, 0.02])
    floor = np.where(sources[:, None] == "YSO", [[150.0, 0.15, 0.06]], [[30.0, 0.03, 0.06]])
    reference = prediction - rng.standard_normal((n, 3)) * np.sqrt(sigma ** 2 + floor ** 2)
    calibration = fit_calibration(prediction, sigma, reference, method="monte_carlo", reference_name="truth",
                                  sources=sources)
    assert set(calibration.terms) == {"all", "cool_dwarf", "MSTAR", "YSO"}  # PAYNE: no dev star
    assert calibration.terms["YSO"]["TEFF"][1] == pytest.approx(150.0, rel=0.15)
    assert calibration.terms["MSTAR"]["TEFF"][1] == pytest.approx(30.0, rel=0.25)
    one = np.array([[30.0, 0.04, 0.02]])
    star = prediction[:1]
    yso, mstar, unlabelled, payne = (calibration.apply(star, one, [s])[0] for s in ("YSO", "MSTAR", "none", "PAYNE"))
    assert yso[0] > 3 * mstar[0]
    a, b, _ = calibration.terms["cool_dwarf"]["TEFF"]
    assert unlabelled[0] == payne[0] == pytest.approx(np.hypot(a * 30, b))
    np.testing.assert_array_equal(calibration.apply(star, one), unlabelled[None])
    # z over each source meets the bar with its own fit; one fit for the region's mixture does not
    alone = fit_calibration(prediction, sigma, reference, method="monte_carlo", reference_name="truth")
    test_reference = prediction - rng.standard_normal((n, 3)) * np.sqrt(sigma ** 2 + floor ** 2)
    for fitted, passes in ((calibration, True), (alone, False)):
        z = (prediction - test_reference) / fitted.apply(prediction, sigma, sources)
        assert all(meets_bar(z[sources == s, 0]) for s in ("YSO", "MSTAR")) == passes


def test_a_bias_no_sigma_can_absorb_is_told_apart_from_a_wrong_sigma():
    rng = np.random.default_rng(5)
    z = rng.standard_normal(4000)
    assert rescaling_meets_bar(2.0 * z) and rescaling_meets_bar(0.5 * z)  # σ wrong by 2×: a scale mends it
    assert rescaling_meets_bar(z + 0.5)                                   # a small bias still passes
    assert not rescaling_meets_bar(z + 1.2)  # |z| < k for 60 % needs k > rσ/0.85 once the bias is 1.2 rσ
    assert not rescaling_meets_bar(np.array([]))

    ids = [f"2M{i}" for i in range(400)]
    error = rng.standard_normal((400, 3)) * [50.0, 0.05, 0.03] + [[0.0, 0.1, 0.0]]  # log g offset by 2σ
    frame = pd.DataFrame({"APOGEE_ID": ids, "SNR": 50.0, "DATA_TYPE": "PAYNE"})
    for k, (name, sigma) in enumerate(zip(("TEFF", "LOGG", "FE_H"), (50.0, 0.05, 0.03))):
        frame[name], frame[f"{name}_ERR_MC"], frame[f"{name}_ERR"] = error[:, k], sigma / 2, sigma
    report = calibration_report(frame, pd.DataFrame(0.0, index=ids, columns=["TEFF", "LOGG", "FE_H"]))
    assert report.loc[("PAYNE", "LOGG"), "z_median"] == pytest.approx(2.0, abs=0.15)
    assert report["rescalable"].tolist() == [True, False, True] * 2
    assert calibration_bar(report).tolist() == [True, False, True]
    metrics, text = calibration_markdown({"truth": report})
    assert "met in 2 of 3 cells; not met: PAYNE LOGG. No rescaling of sigma could meet it in PAYNE LOGG" in text
    assert metrics["calibration_truth/PAYNE/logg_rescalable"] == 0.0
    assert "A sigma exactly right (z from N(0, 1)) would meet a cell of 400 stars" in text
    assert 2.9 < metrics["calibration_truth/bar_cells_expected_of_exact_sigma"] <= 3.0  # 400 stars: ~99 % a cell


def test_the_bar_is_noisy_for_sixty_stars_and_firm_for_a_thousand():
    """A σ exactly right passes a 58-star cell only ~62 % of the time: the robust σ of z has a
    standard error of ≈ 1.17/√n ≈ 0.15 there, the bar's whole tolerance."""
    assert meets_bar(np.random.default_rng(3).standard_normal(20000))
    assert not meets_bar(1.3 * np.random.default_rng(3).standard_normal(20000))
    assert 0.52 < exact_sigma_pass_rate(58) < 0.72
    assert exact_sigma_pass_rate(1000, trials=300) > 0.98
    fitted = exact_sigma_pass_rate(348, fitted_on=348, trials=1000)  # the level's own error costs cells
    assert 0.85 < fitted < exact_sigma_pass_rate(348, trials=1000) - 0.04
    assert exact_sigma_pass_rate.__wrapped__(58) == exact_sigma_pass_rate(58)  # a fixed seed, not the cache:
    # the report is reproducible


def test_too_few_dev_stars_leave_the_method_uncalibrated():
    prediction, sigma, reference = _calibrated_dev(n=8)
    with pytest.raises(TooFewStars):
        fit_calibration(prediction, sigma, reference, method="delta", reference_name="labels", min_stars=20)


def test_domain_distance_flags_the_quantile_and_what_lies_outside(tmp_path):
    rng = np.random.default_rng(4)
    mixing = rng.standard_normal((512, 512)) / 20
    train, dev, fresh = (np.maximum(rng.standard_normal((n, 512)) @ mixing, 0) for n in (3000, 1000, 2000))
    reference = fit_domain(train, dev, quantile=0.99)
    flagged = np.mean(reference.distance(fresh) > reference.threshold)
    assert 0.0 <= flagged <= 0.03  # ~1 % of spectra like the training set's
    shifted = fresh + 0.5 * rng.standard_normal(fresh.shape)  # unlike the training set
    assert np.all(reference.distance(shifted) > reference.threshold)
    predictor = Predictor(ApogeeNet(3), TABLE1, None, domain=reference)
    back = Predictor.load(predictor.save(tmp_path / "model.pt")).domain
    np.testing.assert_allclose(back.distance(torch.from_numpy(fresh[:5].astype(np.float32))),
                               reference.distance(fresh[:5]), rtol=1e-4)
    assert back.threshold == reference.threshold and back.quantile == 0.99


def test_a_model_file_without_calibration_still_loads(tmp_path):
    from apogeenet.weights import save_weights

    plain = Predictor(ApogeeNet(3), TABLE1, None)
    saved = {"model": plain.first.state_dict(), "table1": TABLE1.to_dict(), "flux_scale": None}
    loaded = Predictor.load(save_weights(saved, tmp_path / "old.pt"))  # a model.pt of before the calibration
    assert loaded.calibrations == {} and loaded.domain is None
