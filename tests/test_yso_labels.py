"""The YSO photometric network of §2.4: inputs, training, save/load, labels for members."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from apogeenet.isochrones import shipped_parsec
from apogeenet.labels.build import member_distances
from apogeenet.labels.yso import (FEATURES, LIMITS, YSOModel, YSOPhotometryNet, _features,
                                  synthetic_photometry, train_yso_net)


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


def test_network_shape_learns_and_round_trips(tmp_path):
    net = YSOPhotometryNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool1d)]
    assert (len(convs), len(pools), len(linears)) == (3, 3, 2)
    x, y = synthetic_photometry(shipped_parsec(), 4000, seed=1)
    model, history = train_yso_net(x, y, epochs=8, batch_size=256, learning_rate=3e-3, seed=0)
    assert history[-1]["dev_loss"] < 0.5 * history[0]["dev_loss"]
    torch.save(model.state(), tmp_path / "net.pt")
    again = YSOModel.from_state(torch.load(tmp_path / "net.pt", weights_only=False))
    pd.testing.assert_frame_equal(model.predict(x[:50]), again.predict(x[:50]))
    pred = model.predict(x[:500])
    assert np.sqrt(np.mean((pred["log_teff"] - y["log_teff"][:500]) ** 2)) < 0.5 * y["log_teff"].std()


def test_member_distance_falls_back_to_the_region():
    members = pd.DataFrame({"APOGEE_ID": ["a", "b", "c"], "REGION": ["Perseus"] * 3})
    allstar = pd.DataFrame({"APOGEE_ID": ["a", "b", "c"], "GAIA_PARALLAX": [3.0, 3.4, 1.0],
                            "GAIA_PARALLAX_ERROR": [0.05, 0.05, 0.9]})
    d = member_distances(members, allstar)
    assert d[0] == pytest.approx(1000 / 3.0) and d[2] == pytest.approx(np.median([1000 / 3.0, 1000 / 3.4]))
