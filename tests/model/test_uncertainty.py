"""§3.5 Monte-Carlo uncertainties and the Table 4 catalog / §4.1 products."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from astropy.table import Table
from factories import TABLE1
from tolerances import output_atol, sigma_atol

from apogeenet.config import PredictParams
from apogeenet.calibration import PARAMETERS, SigmaCalibration
from apogeenet.catalog import age_bins, build_catalog, in_yso_polygon, write_catalog
from apogeenet.model import ApogeeNet, flux_divisor, prepare_flux, scale_flux
from apogeenet.serving import Predictor
from apogeenet.noise import normal_noise, star_streams
from apogeenet.reliability import calibration_table
from apogeenet.uncertainty import delta_predict, mc_predict, mean_good_error, perturbation_sigma, seed_keys


@pytest.fixture(scope="module")
def spectra():
    rng = np.random.default_rng(5)
    flux = rng.uniform(50, 150, (5, 8575)).astype(np.float32)
    error = (0.01 * flux).astype(np.float32)
    flux[:, :300], error[:, :300] = 0, 1e10  # no data: APOGEE's sentinel
    error[:, 500] = 1000.0  # one wild pixel per spectrum
    return flux, error


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(1)
    return Predictor(ApogeeNet(3).eval(), TABLE1, flux_scale=None)


def _output_bound(predictor: Predictor, flux: np.ndarray) -> np.ndarray:
    """float32 error bound of each prediction in physical units (tests/tolerances.py)."""
    inputs = torch.from_numpy(scale_flux(flux.astype(np.float32), predictor.flux_scale))
    return output_atol(predictor.first, inputs) * np.asarray(predictor.table1.std)


def _assert_within(actual: np.ndarray, expected: np.ndarray, atol: np.ndarray) -> None:
    off = np.abs(actual - expected)
    assert np.all(off <= atol), f"differences {off.max(axis=0)} exceed the float32 bound {np.max(atol, axis=0)}"


def test_mean_error_is_over_good_pixels_and_the_cap_is_5x(spectra):
    flux, error = spectra
    good = error < 1e9
    expected = np.array([e[g].mean() for e, g in zip(error, good)])
    np.testing.assert_allclose(mean_good_error(flux, error), expected, rtol=1e-6)
    sigma = perturbation_sigma(flux, error, 5.0)
    assert np.all(sigma[:, :300] == 0)  # bad pixels get no noise and stay 0
    np.testing.assert_allclose(sigma[:, 500], 5 * expected, rtol=1e-6)  # the wild pixel is capped
    np.testing.assert_array_equal(sigma[:, 1000], error[:, 1000])  # ordinary pixels keep their error


@pytest.mark.floats
def test_draws_are_reproducible_and_independent_of_blocking(spectra, predictor):
    flux, error = spectra
    keys = seed_keys([f"2M{i:08d}" for i in range(len(flux))])
    a = mc_predict(predictor, flux, error, keys, PredictParams(draws=20, seed=3, max_batch=1000))
    b = mc_predict(predictor, flux, error, keys, PredictParams(draws=20, seed=3, max_batch=20))  # one star per block
    single = np.where(error < 1e9, flux, 0)
    bound = _output_bound(predictor, single)  # other blocks sum in other orders (tests/tolerances.py)
    _assert_within(a.sigma, b.sigma, sigma_atol(bound, 20))
    _assert_within(a.prediction, predictor.predict(single).to_numpy(), bound)
    c = mc_predict(predictor, flux, error, keys, PredictParams(draws=20, seed=4))
    assert not np.allclose(a.sigma, c.sigma)


@pytest.mark.floats
def test_sigma_is_the_spread_of_single_noisy_passes(spectra, predictor):
    """Each draw is the spectrum plus N(0,1)·σ, divided by the spectrum's own flux unit."""
    flux, error = spectra
    keys = seed_keys(["2M00000001+0000001"])
    result = mc_predict(predictor, flux[:1], error[:1], keys, PredictParams(draws=8, seed=0))
    noise = normal_noise(star_streams(0, keys).repeat(8), torch.arange(8), 8575).numpy()
    s = perturbation_sigma(flux[:1], error[:1], 5.0)
    prepared = np.where(error[:1] < 1e9, flux[:1], 0).astype(np.float32)
    unit = float(flux_divisor(torch.from_numpy(prepared), None))
    fixed_unit = Predictor(predictor.first, predictor.table1, flux_scale=unit)
    one_by_one = np.vstack([fixed_unit.predict(prepared + n * s).to_numpy() for n in noise])
    bound = _output_bound(fixed_unit, prepared + noise * s)
    _assert_within(result.sigma[0], one_by_one.std(axis=0, ddof=1), sigma_atol(bound, 8))
    _assert_within(result.mean[0], one_by_one.mean(axis=0), bound.max(axis=0))
    assert np.all(sigma_atol(bound, 8) < 0.1 * result.sigma[0])  # the bound is well below what is tested


def test_sigma_grows_with_the_noise(spectra, predictor):
    flux, error = spectra
    keys = seed_keys(range(len(flux)))
    low = mc_predict(predictor, flux, error, keys, PredictParams(draws=30)).sigma
    high = mc_predict(predictor, flux, np.where(error < 1e9, 4 * error, error), keys, PredictParams(draws=30)).sigma
    assert np.all(high > low)


@pytest.mark.floats
def test_delta_method_is_the_first_order_propagation(spectra, predictor):
    """points=1: σ_k² = Σ_i (∂y_k/∂x_i)² σ_i² with the Jacobian from torch.autograd.functional."""
    flux, error = spectra
    keys = seed_keys(range(2))
    result = delta_predict(predictor, flux[:2], error[:2], keys, PredictParams(uncertainty="delta", delta_points=1))
    for row in range(2):
        x = torch.from_numpy(np.where(error[row] < 1e9, flux[row], 0).astype(np.float32))
        divisor = scale_flux(x[None].numpy(), None)[0]  # the scaled spectrum, to read the median off
        median = float(x[1000] / divisor[1000])
        jacobian = torch.autograd.functional.jacobian(lambda v: predictor.first(v[None] / median)[0], x)
        s = perturbation_sigma(flux[row:row + 1], error[row:row + 1], 5.0)[0]
        expected = np.sqrt(((jacobian.double().numpy() * s) ** 2).sum(axis=1)) * np.asarray(predictor.table1.std)
        np.testing.assert_allclose(result.sigma[row], expected, rtol=1e-4)
    _assert_within(result.prediction, predictor.predict(np.where(error[:2] < 1e9, flux[:2], 0)).to_numpy(),
                   _output_bound(predictor, np.where(error[:2] < 1e9, flux[:2], 0)))


@pytest.mark.floats
def test_the_delta_methods_forward_difference_is_the_cross_product_of_the_gradients(spectra, predictor):
    """points=2: σ_k² = Σ_i g₀ᵢ g₁ᵢ σ_i², g₀ at the spectrum and g₁ at its first Monte-Carlo draw
    (torch.autograd through the plain network). The forward difference over DELTA_STEP carries
    the float32 rounding of two outputs (a few 1e-6, under 1 % of the step) and whatever ReLU the
    step switches: 5 % on σ²."""
    flux, error = spectra
    keys = seed_keys(range(3))
    result = delta_predict(predictor, flux[:3], error[:3], keys, PredictParams(uncertainty="delta", delta_points=2))
    prepared = torch.from_numpy(prepare_flux(flux[:3], error[:3]))
    unit = flux_divisor(prepared, None)
    sigma = torch.from_numpy(perturbation_sigma(flux[:3], error[:3], 5.0)) / unit
    spectrum = prepared / unit
    draw = spectrum + normal_noise(star_streams(0, keys), torch.zeros(3, dtype=torch.long), 8575) * sigma

    def gradients(x):
        x = x.clone().requires_grad_(True)
        out = predictor.first(x)
        return torch.stack([torch.autograd.grad(out[:, k].sum(), x, retain_graph=True)[0] for k in range(3)]).double()

    cross = (gradients(spectrum) * gradients(draw) * sigma.double() ** 2).sum(dim=-1).T.numpy()
    assert np.all(cross > 0)
    np.testing.assert_allclose(result.sigma ** 2, cross * np.asarray(predictor.table1.std) ** 2, rtol=0.05)


def test_delta_method_agrees_with_the_monte_carlo_for_small_noise(spectra, predictor):
    """For noise that moves no ReLU or max-pool decision the network is linear: σ_delta = σ_MC up
    to the Monte Carlo's own sampling error (≈ 1/√(2·199) = 5 % for 200 draws). A constant flux
    unit: with a per-spectrum median, noise this small moves the median with one pixel."""
    flux, error = spectra
    predictor = Predictor(predictor.first, TABLE1, flux_scale=100.0)
    keys = seed_keys(range(len(flux)))
    small = np.where(error < 1e9, 1e-4 * flux, error).astype(np.float32)
    mc = mc_predict(predictor, flux, small, keys, PredictParams(draws=200))
    for points in (1, 2):
        delta = PredictParams(uncertainty="delta", delta_points=points)
        ratio = delta_predict(predictor, flux, small, keys, delta).sigma / mc.sigma
        assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio
    textbook = PredictParams(uncertainty="delta", delta_points=1)
    large = (delta_predict(predictor, flux, 40 * small, keys, textbook).sigma
             / delta_predict(predictor, flux, small, keys, textbook).sigma)
    np.testing.assert_allclose(large, 40, rtol=1e-3)  # first order: σ scales with the pixel σ


def test_yso_polygon_and_age_bins_of_section_4():
    assert in_yso_polygon([3300, 5000, 3200, 2300], [3.3, 4.5, 4.5, 4.35]).tolist() == [True, False, False, True]
    assert age_bins([3.5, 3.7, 3.9, 4.1, 4.3, np.nan]).tolist() == [
        "<~1 Myr", "1-2 Myr", "2-3 Myr", "3-5 Myr", ">~5 Myr", ""]


@pytest.fixture()
def catalog_rows():
    """Eight Table 4 rows that set every flag once; returns (frame, sigma)."""
    index = pd.DataFrame({"apogee_id": ["2MA", "2MB", "2MC", "2MD", "2ME", "2MA", "2MF", "2MG"],
                          "ra": [1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 6.0, 7.0], "dec": [-1.0, 0.0, 1.0, 2.0, 3.0, -1.0, 4.0, 5.0],
                          "snr": [100.0, 50.0, 0.5, 30.0, 80.0, 40.0, 90.0, 10.0]})
    prediction = np.array([[4800, 2.5, -0.2], [7200, 4.1, 0.0], [2500, 9.0, -5.0], [3300, 3.7, 0.0],
                           [5000, 3.0, 0.0], [4810, 2.6, -0.2], [3000, 5.0, 0.1], [4500, 2.0, -0.5]])
    sigma = np.array([[20, 0.03, 0.01], [80, 0.1, 0.05], [300, 0.5, 0.2], [40, 0.05, 0.02], [0, 0, 0],
                      [25, 0.04, 0.01], [30, 0.05, 0.02], [400, 0.2, 0.1]])
    labels = pd.DataFrame({"APOGEE_ID": ["2MA", "2MD"], "TEFF": [4750.0, 3350.0], "LOGG": [2.4, 3.8],
                           "FE_H": [-0.25, 0.01], "SOURCE": ["PAYNE", "YSO"], "SPLIT": ["test", "train"]})
    calibration = SigmaCalibration("monte_carlo", "truth", {"all": dict.fromkeys(PARAMETERS, [2.0, 0.0, 8.0]),
                                                           "YSO": dict.fromkeys(PARAMETERS, [3.0, 0.0, 1.0])})
    # 2σ; 3σ for the YSO by its source
    frame = build_catalog(index, prediction, sigma, labels, hot_teff=6700,
                          bounds={"teff": (2000, 12000), "logg": (-1, 6), "fe_h": (-3, 1.5)},
                          n_good_pixels=np.array([7700, 7700, 7700, 7700, 0, 7700, 7700, 7700]), min_good_pixels=5000,
                          calibration=calibration, domain_distance=np.array([10.0, 20, 30, 10, 10, 10, 80, 10]),
                          domain_threshold=50.0, max_sigma={"teff": 500.0, "logg": 0.5, "fe_h": 0.25})
    return frame, sigma


def test_catalog_flags_units_and_round_trips(catalog_rows, tmp_path):
    frame, sigma = catalog_rows
    # HOT, UNPHYSICAL (and its σ), FEW_PIXELS (no usable pixel: no number, no σ), DUPLICATE (the
    # lower-SNR file of 2MA), OUT_OF_DOMAIN (distance 80 > 50), LARGE_SIGMA (calibrated σ 800 K > 500 K)
    assert frame["FLAGS"].tolist() == [0, 1, 2 | 32, 0, 4, 8, 16, 32]
    assert frame.loc[4, ["TEFF", "TEFF_ERR", "TEFF_ERR_MC"]].isna().all()
    assert frame["DATA_SET"].tolist() == ["test", "none", "none", "train", "none", "test", "none", "none"]
    assert frame["DATA_TYPE"].tolist() == ["PAYNE", "none", "none", "YSO", "none", "PAYNE", "none", "none"]
    assert frame["YSO_CANDIDATE"].tolist() == [False, False, False, True, False, False, False, False]
    assert frame["AGE_BIN"][3] == "1-2 Myr"
    assert frame["TEFF_LABEL"][0] == 4750.0 and np.isnan(frame["TEFF_LABEL"][1])
    fits, parquet, csv = write_catalog({"catalog": frame}, tmp_path, {"model": "models:/apogeenet@champion"})
    table = Table.read(fits)
    assert str(table["TEFF"].unit) == "K" and str(table["RA"].unit) == "deg" and table.meta["MODEL"].startswith("models:/")
    usable = frame["N_GOOD_PIXELS"] > 0
    np.testing.assert_allclose(table["TEFF_ERR"], np.where(usable, np.where(frame["DATA_TYPE"] == "YSO", 3, 2) * sigma[:, 0], np.nan))
    np.testing.assert_allclose(table["TEFF_ERR_MC"], np.where(usable, sigma[:, 0], np.nan))
    back = pd.read_parquet(parquet)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert "TEFF [K]" in pd.read_csv(csv).columns


#: Table 4 as users receive it: column, FITS format, unit. Changing it breaks their scripts.
TABLE4_SCHEMA = [
    ("APOGEE_ID", "{A}", ""), ("RA", "D", "deg"), ("DEC", "D", "deg"), ("LOGG_LABEL", "D", "dex"),
    ("LOGG", "D", "dex"), ("LOGG_ERR", "D", "dex"), ("LOGG_ERR_MC", "D", "dex"), ("LOGG_ERR_MODEL", "D", "dex"),
    ("TEFF_LABEL", "D", "K"), ("TEFF", "D", "K"), ("TEFF_ERR", "D", "K"), ("TEFF_ERR_MC", "D", "K"),
    ("TEFF_ERR_MODEL", "D", "K"), ("FE_H_LABEL", "D", "dex"), ("FE_H", "D", "dex"), ("FE_H_ERR", "D", "dex"),
    ("FE_H_ERR_MC", "D", "dex"), ("FE_H_ERR_MODEL", "D", "dex"), ("SNR", "D", ""),
    ("N_GOOD_PIXELS", "J", ""), ("DOMAIN_DIST", "D", ""), ("DATA_SET", "{A}", ""), ("DATA_TYPE", "{A}", ""),
    ("FLAGS", "I", ""), ("FLAG_NAMES", "{A}", ""), ("YSO_CANDIDATE", "L", ""), ("AGE_BIN", "{A}", "")]


def test_table4_column_schema_is_pinned(catalog_rows, tmp_path):
    from astropy.io import fits

    frame, _ = catalog_rows
    written, _, _ = write_catalog({"catalog": frame}, tmp_path, {})
    with fits.open(written) as hdul:
        columns = hdul[1].columns
        schema = [(c.name, "{A}" if c.format.endswith("A") else str(c.format), c.unit or "") for c in columns]
        header = hdul[1].header
    assert schema == TABLE4_SCHEMA
    # every column described where TOPCAT looks (TCOMMn, one card each), the flag bits spelled out
    assert all(header.get(f"TCOMM{n}") and len(header[f"TCOMM{n}"]) <= 68 for n in range(1, len(schema) + 1))


def test_calibration_reports_sigma_against_snr_and_z():
    rng = np.random.default_rng(0)
    n = 400
    snr = rng.uniform(5, 200, n)
    sigma = 1000 / snr
    truth = pd.DataFrame({"TEFF": np.full(n, 5000.0), "LOGG": 3.0, "FE_H": 0.0}, index=[f"s{i}" for i in range(n)])
    catalog = pd.DataFrame({"APOGEE_ID": truth.index, "SNR": snr, "TEFF": 5000 + 2 * sigma * rng.standard_normal(n),
                            "TEFF_ERR": sigma, "LOGG": 3.0 + 0.01 * rng.standard_normal(n), "LOGG_ERR": 0.01,
                            "FE_H": 0.0 + 0.01 * rng.standard_normal(n), "FE_H_ERR": 0.01})
    table = calibration_table(catalog, truth)
    assert table.loc["TEFF", "spearman_sigma_snr"] == pytest.approx(-1.0)
    assert table.loc["TEFF", "z_std"] == pytest.approx(2.0, rel=0.15)  # σ half the true error
    assert table.loc["LOGG", "z_std"] == pytest.approx(1.0, rel=0.15)
    assert 0.6 < table.loc["LOGG", "frac_within_1sigma"] < 0.76
    assert 0.92 < table.loc["LOGG", "frac_within_2sigma"] < 0.98


def test_median_reference_caps_inflated_errors_that_the_mean_lets_through(spectra):
    flux, error = spectra
    inflated = error.copy()
    inflated[:, 1000:1100] = 1e6 * error[:, 1000:1100]  # real apStar: huge errors without the 1e10 sentinel
    by_mean = perturbation_sigma(flux, inflated, 5.0, error_reference="mean")
    by_median = perturbation_sigma(flux, inflated, 5.0, error_reference="median")
    assert np.all(by_mean[:, 1050] > 100 * error[:, 1050])  # the mean is dragged up: hardly a cap
    median = np.median(error[:, 300:], axis=1)
    np.testing.assert_allclose(by_median[:, 1050], 5 * median, rtol=1e-2)
