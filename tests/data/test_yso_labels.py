"""The YSO photometric network of §2.4: inputs, training, save/load, labels for members."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from apogeenet.errors import InputError
from apogeenet.isochrones import shipped_parsec
from apogeenet.labels.build import member_distances
from apogeenet.labels.yso import (CATALOG_COLUMNS, FEATURES, LIMITS, PhotometricNoise, YSOModel, _features,
                                  synthetic_photometry, train_yso_net)
from apogeenet.labels.yso_net import LAYERS, YSONet


def test_inputs_follow_the_limits_of_the_paper():
    mags = {band: np.array([limit + 1.0, limit - 1.0, np.nan]) for band, limit in LIMITS.items()}
    x = _features(mags, radius=np.array([2.0, 2.0, 0.3]), log_l=np.array([0.5, 0.5, 0.5]),
                  distance=np.array([100.0, 100.0, 100.0]))
    assert x.shape == (3, len(FEATURES)) == (3, 12)
    np.testing.assert_array_equal(x[0, :9], list(LIMITS.values()))       # too faint -> limit
    np.testing.assert_array_equal(x[1, :9], np.array(list(LIMITS.values())) - 1)
    np.testing.assert_array_equal(x[2, :9], list(LIMITS.values()))       # missing -> limit
    # radius and log L reported only for R > 0.5, log L > -1.54 and M_G < 10 (M_G = G - 5 here)
    assert list(x[0, 9:11]) == [0.5, -1.54]            # G = 20 -> M_G = 15: not reported
    assert list(x[1, 9:11]) == [0.5, -1.54]            # G = 18 -> M_G = 13: not reported either
    x2 = _features({**mags, "G": np.array([12.0, 12.0, 12.0])}, np.array([2.0, 0.4, 2.0]),
                   np.array([0.5, 0.5, -2.0]), np.array([100.0] * 3))
    assert list(x2[0, 9:11]) == [2.0, 0.5] and list(x2[1, 9:11]) == [0.5, -1.54] and list(x2[2, 9:11]) == [0.5, -1.54]


def test_training_sample_draws_the_paper_ranges():
    x, y = synthetic_photometry(shipped_parsec(), 2000, seed=3)
    assert len(x) == 2000 and np.all(x[:, 0] < 19.0)   # G required
    assert y["av"].between(0, 20).all() and (10 ** y["log_age"]).between(1, 100).all()
    assert (10 ** y["log_mass"]).between(0.09 - 1e-9, 2.45).all()  # U(0.08, 3) clipped to the grid
    assert x[:, 11].min() >= 50 and x[:, 11].max() <= 1000


def _torch_forward(params: dict, x: np.ndarray) -> torch.Tensor:
    """The same network from torch's own layers (Conv1d, MaxPool1d, Linear), for reference."""
    h = torch.as_tensor(x)[:, None, :]
    for k, size in enumerate((2, 2, 3), start=1):
        weight = params[f"conv{k}.weight"]
        kernel = weight.reshape(3, h.shape[1], -1).permute(2, 1, 0)  # (out, in, 3)
        h = torch.nn.functional.max_pool1d(torch.relu(torch.nn.functional.conv1d(
            h, kernel, params[f"conv{k}.bias"], padding=1)), size)
    hidden = torch.relu(h[:, :, 0] @ params["fc1.weight"] + params["fc1.bias"])
    return hidden @ params["fc2.weight"] + params["fc2.bias"]


def test_network_and_its_gradients_are_the_papers_layers_to_fixed_point_precision():
    """Three convolutions with max pooling and two fully connected layers; the written-out
    backward pass agrees with torch's autograd to the fixed-point step (≈ 2⁻²⁰ relative)."""
    rng = np.random.default_rng(0)
    net = YSONet.initial(5, rng)
    assert [name for name, *_ in LAYERS] == ["conv1", "conv2", "conv3", "fc1"] and net.params["fc2.weight"].shape == (256, 5)
    x, target = rng.normal(size=(64, 12)), rng.normal(size=(64, 5))
    out, cache = net.forward(x, keep=True)
    grads = net.gradients(cache, (out - target) * (2.0 / out.size))
    params = {k: torch.tensor(v, requires_grad=True) for k, v in net.params.items()}
    reference = _torch_forward(params, x)
    torch.nn.functional.mse_loss(reference, torch.as_tensor(target)).backward()
    np.testing.assert_allclose(out, reference.detach().numpy(), rtol=0, atol=1e-5 * np.abs(out).max())
    for name, tensor in params.items():
        expected = tensor.grad.numpy()
        np.testing.assert_allclose(grads[name], expected, rtol=0, atol=1e-5 * np.abs(expected).max(), err_msg=name)


@pytest.mark.slow
def test_network_learns_and_round_trips_as_plain_tensors(tmp_path):
    x, y = synthetic_photometry(shipped_parsec(), 4000, seed=1)
    model, history = train_yso_net(x, y, epochs=8, batch_size=256, learning_rate=3e-3, seed=0)
    assert history[-1]["dev_loss"] < 0.5 * history[0]["dev_loss"]
    torch.save(model.state(), tmp_path / "net.pt")
    again = YSOModel.from_state(torch.load(tmp_path / "net.pt", weights_only=True))
    pd.testing.assert_frame_equal(model.predict(x[:50]), again.predict(x[:50]))
    pred = model.predict(x[:500])
    assert np.sqrt(np.mean((pred["log_teff"] - y["log_teff"][:500]) ** 2)) < 0.5 * y["log_teff"].std()
    old = {**model.state(), "arithmetic": None}  # a network saved by the float32 torch version
    with pytest.raises(InputError, match="label` again"):
        YSOModel.from_state(old)


def test_member_distance_falls_back_to_the_region():
    members = pd.DataFrame({"APOGEE_ID": ["a", "b", "c"], "REGION": ["Perseus"] * 3})
    allstar = pd.DataFrame({"APOGEE_ID": ["a", "b", "c"], "GAIA_PARALLAX": [3.0, 3.4, 1.0],
                            "GAIA_PARALLAX_ERROR": [0.05, 0.05, 0.9]})
    d = member_distances(members, allstar)
    assert d[0] == pytest.approx(1000 / 3.0) and d[2] == pytest.approx(np.median([1000 / 3.0, 1000 / 3.4]))


def _error_model(mag):
    return 0.02 + 0.1 * 10 ** (0.4 * (mag - 16.0))


def test_noise_curves_come_from_the_catalogs_own_errors():
    rng = np.random.default_rng(0)
    mag = rng.uniform(8, 18, 5000)
    catalog = pd.DataFrame({c: mag for c in CATALOG_COLUMNS.values()}
                           | {f"{c}_ERR": _error_model(mag) * rng.lognormal(0, 0.1, mag.size)
                              for c in CATALOG_COLUMNS.values()})
    noise = PhotometricNoise.from_catalog(catalog)
    probe = np.array([9.0, 12.0, 15.0, 17.0])
    np.testing.assert_allclose(noise.sigma("J", probe), _error_model(probe), rtol=0.1)
    # applied: the scatter of many draws is the curve's σ; radius and distance scatter 5 %
    n = 20000
    mags, radius, log_l, distance = noise.apply(rng, {"J": np.full(n, 16.0)}, np.full(n, 2.0), np.zeros(n),
                                                np.full(n, 400.0))
    assert np.std(mags["J"]) == pytest.approx(_error_model(16.0), rel=0.05)
    assert np.std(np.log(radius)) == pytest.approx(0.05, rel=0.05)
    assert np.std(log_l * np.log(10)) == pytest.approx(0.05, rel=0.05)
    assert np.std(np.log(distance)) == pytest.approx(0.05, rel=0.05)
    with pytest.raises(InputError, match="W3_ERR"):
        PhotometricNoise.from_catalog(catalog.drop(columns="W3_ERR"))


@pytest.mark.slow
def test_training_with_catalog_noise_makes_the_labels_robust_to_it():
    """§2.4's network trained on exact photometry is misled by catalogue-sized errors; trained
    with them it is not (the reason for yso.noise: catalog)."""
    iso = shipped_parsec()
    mag = np.linspace(5, 20, 200)
    catalog = pd.DataFrame({c: mag for c in CATALOG_COLUMNS.values()}
                           | {f"{c}_ERR": _error_model(mag) for c in CATALOG_COLUMNS.values()})
    noise = PhotometricNoise.from_catalog(catalog)
    x_test, y_test = synthetic_photometry(iso, 2000, seed=11, noise=noise)
    cool = (10 ** y_test["log_teff"] < 4500).to_numpy()  # the YSOs' range, where colours are degenerate
    rms = {}
    for name, train_noise in (("exact", None), ("noisy", noise)):
        x, y = synthetic_photometry(iso, 12000, seed=1, noise=train_noise)
        model, _ = train_yso_net(x, y, epochs=10, batch_size=256, learning_rate=3e-3, seed=0)
        error = model.predict(x_test)["teff"].to_numpy() - 10 ** y_test["log_teff"].to_numpy()
        rms[name] = float(np.sqrt(np.mean(error[cool] ** 2)))
    assert rms["noisy"] < 0.8 * rms["exact"], rms  # measured: 318 K vs 546 K
