"""Each member's output map (apogeenet/output_maps.py, issue [5 of 6]): a straight line per member,
parameter and region of the output fitted on the dev split, kept only where it helps the ensemble on the other half,
applied to the prediction and to both kinds of σ, saved with the model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import TABLE1

from apogeenet.config import PredictParams, Uncertainty
from apogeenet.model import ApogeeNet
from apogeenet.calibration import REGIONS
from apogeenet.output_maps import MIN_STARS_PER_HALF, fit_output_maps, identity_maps
from apogeenet.serving import Predictor
from apogeenet.uncertainty import delta_predict, mc_predict, seed_keys
from apogeenet.weights import ModelFileError, load_weights


MEAN, STD = np.asarray(TABLE1.mean), np.asarray(TABLE1.std)


def _dev(n: int = 1200, seed: int = 3):
    """Standardised dev labels and two members' outputs (members, n, 3) for giants (the Payne
    region: Teff 4 300-5 300 K, log g 2.5) and M dwarfs (the cool main sequence: 3 000-3 900 K,
    log g 4.8), and the halves. Teff: member 0 on the labels' scale everywhere; member 1 too among
    the giants, but it compresses the M dwarfs to 70 % about 3 450 K and puts them 60 K warm, as
    the 10 000-star survey's ensemble does. log g and [Fe/H]: both members give the same numbers,
    and the labels scatter about them (label noise): the outputs are already the labels'
    expectation, which no line improves."""
    rng = np.random.default_rng(seed)
    dwarf = np.arange(n) % 2 == 1
    labels = np.column_stack([np.where(dwarf, rng.uniform(3000, 3900, n), rng.uniform(4300, 5300, n)),
                              np.where(dwarf, 4.8, 2.5), rng.normal(-0.1, 0.25, n)])
    outputs = np.repeat(labels[None], 2, axis=0)
    outputs[:, :, 0] += rng.normal(scale=SCATTER, size=(2, n))
    outputs[1, dwarf, 0] = 3450 + 0.7 * (labels[dwarf, 0] - 3450) + 60 + rng.normal(scale=SCATTER, size=dwarf.sum())
    labels[:, 1:] += rng.normal(scale=[0.3, 0.1], size=(n, 2))
    return (outputs - MEAN) / STD, (labels - MEAN) / STD, rng.random(n) < 0.5, dwarf


SCATTER = 20.0
"""K: each member's Teff scatter about the labels."""
PAYNE, COOL = REGIONS.index("payne"), REGIONS.index("cool_dwarf")


def test_a_member_compressed_among_the_m_dwarfs_is_stretched_back_there_alone():
    outputs, targets, half, dwarf = _dev()
    maps, metrics = fit_output_maps(outputs, targets, half, TABLE1, ("teff",))
    assert metrics["output_map/teff/cool_dwarf/kept"] == 1 and metrics["output_map/teff/payne/kept"] == 0
    np.testing.assert_array_equal(maps[:, PAYNE], identity_maps(2)[:, PAYNE])  # the giants were right
    # member 1 among the M dwarfs: labels on 0.7 t + c + e, the least-squares slope is
    # 0.7 var t / (0.49 var t + σ²) back, to a few times its standard error σ / (0.7 sd t √n)
    var_t = (targets[dwarf, 0] * STD[0]).var()
    expected = 0.7 * var_t / (0.49 * var_t + SCATTER ** 2)
    tolerance = 5 * SCATTER / (0.7 * np.sqrt(var_t * dwarf.sum()))
    assert maps[1, COOL, 0, 0] == pytest.approx(expected, abs=tolerance)
    assert maps[0, COOL, 0, 0] == pytest.approx(1.0, abs=tolerance)
    # the ensemble's M dwarfs: from half of member 1's error, sqrt(60² + 0.3² var t) / 2 ≈ 49 K,
    # to about the scatter's
    before = metrics["output_map/teff/cool_dwarf/rms_before"] * STD[0]
    after = metrics["output_map/teff/cool_dwarf/rms_after"] * STD[0]
    assert before == pytest.approx(np.hypot(np.hypot(60, 0.3 * np.sqrt(var_t)) / 2, SCATTER / np.sqrt(2)), rel=0.1)
    assert after < 1.5 * SCATTER


def test_a_huber_line_is_pulled_less_by_a_skewed_tail_of_labels():
    """A fifth of the M dwarfs' labels 1 200 K too warm (as the photometric YSO labels' skewed
    tail): the least-squares line moves the core by the tail's mean, ε · 1 200 = 240 K; the Huber
    line of the training loss (δ = 0.25 Table 1 σ = 225 K here) by at most about ε δ / (1 − ε) = 56 K,
    each tail label pulling with δ only."""
    outputs, targets, half, dwarf = _dev()
    tail = dwarf & (np.arange(len(dwarf)) % 10 == 1)
    share, jump, delta = tail.sum() / dwarf.sum(), 1200.0, 0.25
    targets[tail, 0] += jump / STD[0]
    offsets = {}
    for fitted_with in (None, delta):
        maps = fit_output_maps(outputs, targets, half, TABLE1, ("teff",), fitted_with and (fitted_with, 1.0, 1.0))[0]
        mapped = Predictor(ApogeeNet(3), TABLE1, None, output_maps=maps[:1]).mapped(0, outputs[0, dwarf])
        offsets[fitted_with] = np.median(mapped[:, 0] - outputs[0, dwarf, 0]) * STD[0]
    assert offsets[None] == pytest.approx(share * jump, rel=0.15)
    assert 0 < offsets[delta] < 1.15 * share * delta * STD[0] / (1 - share)


def test_a_map_that_cannot_help_is_not_kept():
    """log g and [Fe/H] already the labels' expectation: a line fitted to one half only adds its
    own noise to the other, so those parameters keep slope 1 and intercept 0 in every region."""
    outputs, targets, half, _ = _dev()
    maps, metrics = fit_output_maps(outputs, targets, half, TABLE1)
    for k, name in ((1, "logg"), (2, "fe_h")):
        for region in ("payne", "cool_dwarf"):
            assert metrics[f"output_map/{name}/{region}/kept"] == 0
            assert metrics[f"output_map/{name}/{region}/rms_after"] >= metrics[f"output_map/{name}/{region}/rms_before"]
        np.testing.assert_array_equal(maps[:, :, k], identity_maps(2)[:, :, k])
    assert metrics["output_map/teff/young/kept"] == 0  # no output lies in the young-star triangle


def test_too_few_labelled_stars_or_missing_labels_leave_a_region_unmapped():
    outputs, targets, half, dwarf = _dev(n=4 * MIN_STARS_PER_HALF + 20)
    targets[np.flatnonzero(dwarf)[:30], 0] = np.nan  # fewer than MIN_STARS_PER_HALF labelled M dwarfs in a half
    maps, metrics = fit_output_maps(outputs, targets, half, TABLE1)
    assert metrics["output_map/teff/cool_dwarf/kept"] == 0
    np.testing.assert_array_equal(maps[:, :, 0], identity_maps(2)[:, :, 0])
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


MAP = np.array([[[1.3, 0.1], [0.8, -0.05], [1.1, 0.02]]])  # (1 member, 3, [slope, intercept]): every region
REGIONAL = np.repeat(MAP[:, None], len(REGIONS), axis=1)
REGIONAL[0, [r for r, name in enumerate(REGIONS) if name != "payne"]] = [[3.0, 1.0], [2.0, 0.5], [0.5, -1.0]]


@pytest.mark.floats
@pytest.mark.parametrize("maps", [MAP, REGIONAL], ids=["one-line", "by-region"])
@pytest.mark.parametrize("uncertainty", [Uncertainty.MONTE_CARLO, Uncertainty.DELTA])
def test_a_map_moves_the_prediction_by_its_line_and_scales_sigma_by_its_slope(network, spectrum, uncertainty, maps):
    """The same network and draws with and without a map: the mapped physical prediction is the
    line applied in standardised units, σ is the slope times σ (float64 arithmetic on the same
    float32 outputs: equal to rounding). This network's outputs (and draws) lie in the Payne
    region, so a map whose other regions have other lines gives the same numbers: a line acts
    only on outputs in its own region. A map of the file format before regions (one line per
    member and parameter) holds for every region."""
    flux, error = spectrum
    keys, cfg = seed_keys(["2M1", "2M2"]), PredictParams(uncertainty=uncertainty, draws=8)
    method = delta_predict if uncertainty is Uncertainty.DELTA else mc_predict
    plain = method(Predictor(network, TABLE1, None), flux, error, keys, cfg)
    assert np.all(plain.prediction[:, 0] > 4000)  # the Payne regime: the lines of MAP
    mapped = method(Predictor(network, TABLE1, None, output_maps=maps), flux, error, keys, cfg)
    slope, intercept = MAP[0, :, 0], MAP[0, :, 1]
    expected = ((plain.prediction - MEAN) / STD * slope + intercept) * STD + MEAN
    np.testing.assert_allclose(mapped.prediction, expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(mapped.sigma, plain.sigma * slope, rtol=1e-9)
    np.testing.assert_array_equal(mapped.hidden, plain.hidden)  # the domain distance is not mapped


def test_each_output_takes_the_line_of_its_own_region(network):
    """Outputs of one member in the three regions (a giant, a young star, an M dwarf) through
    REGIONAL: the giant by the Payne line, the other two by theirs; the slopes follow."""
    physical = np.array([[4800.0, 2.5, 0.0], [3300.0, 4.0, 0.0], [3300.0, 4.9, 0.0]])
    standardised = (physical - MEAN) / STD
    lines = REGIONAL[0, [REGIONS.index(name) for name in ("payne", "young", "cool_dwarf")]]  # (3 stars, 3, 2)
    predictor = Predictor(network, TABLE1, None, output_maps=REGIONAL)
    np.testing.assert_allclose(predictor.mapped(0, standardised), standardised * lines[..., 0] + lines[..., 1],
                               rtol=1e-15)
    np.testing.assert_array_equal(predictor.slopes(0, standardised), lines[..., 0])


def test_the_maps_travel_with_the_model_file_and_a_bad_map_is_refused(network, spectrum, tmp_path):
    flux, _ = spectrum
    predictor = Predictor(network, TABLE1, None, output_maps=MAP)
    back = Predictor.load(predictor.save(tmp_path / "model.pt"))
    np.testing.assert_array_equal(back.output_maps, np.repeat(MAP[:, None], len(REGIONS), axis=1))
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
    outputs, targets, half, dwarf = _dev()
    outputs[1, dwarf, 2] = 0.7 * targets[dwarf, 2]  # a shrunken [Fe/H] of the M dwarfs that a line would stretch back
    maps, metrics = fit_output_maps(outputs, targets, half, TABLE1, ("teff",))
    assert metrics["output_map/teff/cool_dwarf/kept"] == 1
    assert not any(k.startswith(("output_map/logg", "output_map/fe_h")) for k in metrics)
    np.testing.assert_array_equal(maps[:, :, 1:], identity_maps(2)[:, :, 1:])
    assert fit_output_maps(outputs, targets, half, TABLE1, ("teff", "fe_h"))[1]["output_map/fe_h/cool_dwarf/kept"] == 1
