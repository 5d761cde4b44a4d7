"""The embedded demo tree is reproducible byte for byte and has the real apStar layout."""

from __future__ import annotations

import numpy as np
import pytest

from apogeenet.demo import make_demo_star, make_demo_tree
from apogeenet.io import good_pixels, read_apstar


def test_same_seed_same_bytes_and_growth_keeps_earlier_files(tmp_path):
    a = make_demo_tree(tmp_path / "a", 6, seed=3)
    b = make_demo_tree(tmp_path / "b", 9, seed=3)
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b[:6]]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    c = make_demo_tree(tmp_path / "c", 6, seed=4)
    assert {p.name for p in a}.isdisjoint({p.name for p in c})


def test_demo_files_read_back_with_consistent_shapes_and_snr(tmp_path):
    for path in make_demo_tree(tmp_path, 12, seed=1):
        star = read_apstar(path)
        expected = (8575,) if star.nvisits == 1 else (star.nvisits + 2, 8575)
        assert star.flux.shape == expected and 1 <= star.nvisits <= 3
        good = good_pixels(star.combined_flux, star.combined_error)
        measured = np.median(star.combined_flux[good] / star.combined_error[good])
        assert star.snr == pytest.approx(measured, abs=0.01)
        assert 5 <= star.snr <= 400
        assert np.all(star.combined_error[~good] == np.float32(1e10))


def test_noise_matches_the_stated_errors():
    star = make_demo_star(seed=0, number=1)
    clean = make_demo_star(seed=0, number=1)
    assert np.array_equal(star.flux, clean.flux)
    if star.nvisits > 1:  # visits scatter about the combination by their own errors
        good = good_pixels(star.flux[0], star.error[0])
        pulls = (star.flux[2:, good] - star.flux[0, good]) / star.error[2:, good]
        assert 0.5 < pulls.std() < 1.0
