"""Each member's output map (apogeenet/output_maps.py, issue [5 of 6]): a straight line per member
and parameter fitted on the dev split, kept only where it helps the ensemble on the other half,
applied to the prediction and to both kinds of σ, saved with the model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import TABLE1

from apogeenet.config import PredictParams, Uncertainty
from apogeenet.model import ApogeeNet
from apogeenet.output_maps import MIN_STARS_PER_HALF, fit_output_maps, identity_maps
from apogeenet.serving import Predictor
from apogeenet.uncertainty import delta_predict, mc_predict, seed_keys
from apogeenet.weights import ModelFileError, load_weights


def _dev(n: int = 600, seed: int = 3):
    """Standardised dev labels and two members' outputs. Teff: one member on the labels' scale,
    one that compresses it to 70 % with an offset, each with the same small scatter. log g and
    [Fe/H]: both members give the same numbers, and the labels scatter about them (label noise):
    the outputs are already the labels' expectation, which no line improves."""
    rng = np.random.default_rng(seed)
    scatter = 0.05
    targets, outputs = rng.normal(size=(n, 3)), np.empty((2, n, 3))
    outputs[0, :, 0] = targets[:, 0] + rng.normal(scale=scatter, size=n)
    outputs[1, :, 0] = 0.7 * targets[:, 0] + 0.2 + rng.normal(scale=scatter, size=n)
    outputs[:, :, 1:] = targets[:, 1:]
    targets[:, 1:] += rng.normal(scale=0.3, size=(n, 2))
    return outputs, targets, rng.random(n) < 0.5, scatter


def test_a_compressed_member_is_stretched_back_and_the_ensemble_improves():
    outputs, targets, half, scatter = _dev()
    maps, metrics = fit_output_maps(outputs, targets, half)
    assert metrics["output_map/teff/kept"] == 1
    # the least-squares line of t on 0.7 t + 0.2 + e: slope 0.7 var t / (0.49 var t + σ²), |error| ~ σ/√n
    var_t = targets[:, 0].var()
    expected = 0.7 * var_t / (0.49 * var_t + scatter ** 2)
    assert maps[1, 0, 0] == pytest.approx(expected, abs=5 * scatter / np.sqrt(len(targets)))
    assert maps[1, 0, 1] == pytest.approx(-0.2 * expected, abs=5 * scatter / np.sqrt(len(targets)))
    # the cross-fitted dev RMS falls from the compression's to about the scatter's
    assert metrics["output_map/teff/rms_before"] > 0.1 and metrics["output_map/teff/rms_after"] < 1.5 * scatter


def test_a_map_that_cannot_help_is_not_kept():
    """log g and [Fe/H] already the labels' expectation: a line fitted to one half only adds its
    own noise to the other, so those parameters keep slope 1 and intercept 0."""
    outputs, targets, half, _ = _dev()
    maps, metrics = fit_output_maps(outputs, targets, half)
    for k, name in ((1, "logg"), (2, "fe_h")):
        assert metrics[f"output_map/{name}/kept"] == 0
        assert metrics[f"output_map/{name}/rms_after"] >= metrics[f"output_map/{name}/rms_before"]
        np.testing.assert_array_equal(maps[:, k], identity_maps(2)[:, k])


def test_too_few_labelled_stars_or_missing_labels_leave_a_parameter_unmapped():
    outputs, targets, half, _ = _dev(n=2 * MIN_STARS_PER_HALF + 10)
    targets[:30, 0] = np.nan  # fewer than MIN_STARS_PER_HALF labelled Teff in a half
    maps, metrics = fit_output_maps(outputs, targets, half)
    assert metrics["output_map/teff/kept"] == 0
    np.testing.assert_array_equal(maps[:, 0], identity_maps(2)[:, 0])
    assert np.all(np.isfinite(maps))


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(4)
    return ApogeeNet(3).eval()


@pytest.fixture(scope="module")
def spectrum():
    rng = np.random.default_rng(9)
    flux = rng.uniform(50, 150, (2, 8575)).astype(np.float32)
    return flux, (0.02 * flux).astype(np.float32)


MAP = np.array([[[1.3, 0.1], [0.8, -0.05], [1.1, 0.02]]])  # (1 member, 3, [slope, intercept])


@pytest.mark.floats
@pytest.mark.parametrize("uncertainty", [Uncertainty.MONTE_CARLO, Uncertainty.DELTA])
def test_a_map_moves_the_prediction_by_its_line_and_scales_sigma_by_its_slope(network, spectrum, uncertainty):
    """The same network and draws with and without a map: the mapped physical prediction is the
    line applied in standardised units, σ is the slope times σ (float64 arithmetic on the same
    float32 outputs: equal to rounding)."""
    flux, error = spectrum
    keys, cfg = seed_keys(["2M1", "2M2"]), PredictParams(uncertainty=uncertainty, draws=8)
    method = delta_predict if uncertainty is Uncertainty.DELTA else mc_predict
    plain = method(Predictor(network, TABLE1, None), flux, error, keys, cfg)
    mapped = method(Predictor(network, TABLE1, None, output_maps=MAP), flux, error, keys, cfg)
    std, mean = np.asarray(TABLE1.std), np.asarray(TABLE1.mean)
    slope, intercept = MAP[0, :, 0], MAP[0, :, 1]
    expected = ((plain.prediction - mean) / std * slope + intercept) * std + mean
    np.testing.assert_allclose(mapped.prediction, expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(mapped.sigma, plain.sigma * slope, rtol=1e-9)
    np.testing.assert_array_equal(mapped.hidden, plain.hidden)  # the domain distance is not mapped


def test_the_maps_travel_with_the_model_file_and_a_bad_map_is_refused(network, spectrum, tmp_path):
    flux, _ = spectrum
    predictor = Predictor(network, TABLE1, None, output_maps=MAP)
    back = Predictor.load(predictor.save(tmp_path / "model.pt"))
    np.testing.assert_array_equal(back.output_maps, MAP)
    np.testing.assert_array_equal(back.predict(flux).to_numpy(), predictor.predict(flux).to_numpy())
    assert "output_maps" not in load_weights(Predictor(network, TABLE1, None).save(tmp_path / "plain.pt"))
    saved = load_weights(tmp_path / "model.pt")
    negative = MAP.copy()
    negative[0, 0, 0] = -1.0
    for maps, name in ((negative.tolist(), "negative.pt"), ([[[1.0, 0.0]] * 3] * 2, "two.pt"),
                       ([[[float("nan"), 0.0]] * 3], "nan.pt"), ("stretch", "text.pt"), ([[["a", "b"]] * 3], "words.pt")):
        torch.save({**saved, "output_maps": maps}, tmp_path / name)
        with pytest.raises(ModelFileError, match="not an apogeenet model.pt.*(output maps|output_maps|could not convert)"):
            Predictor.load(tmp_path / name)


def test_only_the_parameters_named_are_mapped():
    """calibration.output_maps names the parameters (Teff alone by default): the others keep their
    raw outputs even where a line would have helped."""
    outputs, targets, half, _ = _dev()
    outputs[1, :, 1] = 0.7 * targets[:, 1]  # a shrunken log g that a line would stretch back
    maps, metrics = fit_output_maps(outputs, targets, half, ("teff",))
    assert metrics["output_map/teff/kept"] == 1 and not any(k.startswith(("output_map/logg", "output_map/fe_h"))
                                                            for k in metrics)
    np.testing.assert_array_equal(maps[:, 1:], identity_maps(2)[:, 1:])
    assert fit_output_maps(outputs, targets, half, ("teff", "logg"))[1]["output_map/logg/kept"] == 1
