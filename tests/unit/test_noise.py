"""The counter-based Monte-Carlo noise (apogeenet.noise): exact integer bits, Gaussian values,
and numbers that depend only on (seed, star, draw, pixel)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from apogeenet.noise import mix64, normal_noise, star_streams


def _mix64_reference(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser in numpy's uint64, whose wrap-around is defined."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def test_int64_arithmetic_gives_the_uint64_bits():
    words = np.random.default_rng(0).integers(0, 2**64, 10_000, dtype=np.uint64, endpoint=False)
    words[:3] = [0, 2**63, 2**64 - 1]  # the sign bit is where an arithmetic shift would go wrong
    got = mix64(torch.from_numpy(words.view(np.int64))).numpy().view(np.uint64)
    np.testing.assert_array_equal(got, _mix64_reference(words))


def test_a_stars_draws_do_not_depend_on_what_is_drawn_beside_it():
    streams = star_streams(7, np.array([11, 12, 13], dtype=np.uint64))
    together = normal_noise(streams.repeat_interleave(4), torch.arange(4).repeat(3), 8575)
    alone = normal_noise(streams[1:2].repeat(2), torch.tensor([3, 1]), 8575)
    assert torch.equal(alone, together[[7, 5]])  # star 12, draws 3 and 1
    other_seed = normal_noise(star_streams(8, np.array([12], dtype=np.uint64)), torch.tensor([3]), 8575)
    assert not torch.equal(other_seed[0], alone[0])


def test_values_are_standard_normal_and_uncorrelated():
    streams = star_streams(0, np.arange(20, dtype=np.uint64))
    values = normal_noise(streams.repeat_interleave(10), torch.arange(10).repeat(20), 8575).double().numpy()
    n = values.size  # 1.7 M: the mean is within 5/√n of 0, the variance within 5·√(2/n) of 1
    assert abs(values.mean()) < 5 / np.sqrt(n) and abs(values.var() - 1) < 5 * np.sqrt(2 / n)
    assert stats.kstest(values[::7].ravel(), "norm").pvalue > 1e-3
    for a, b in ((values[0, :-1], values[0, 1:]), (values[0], values[1]), (values[0], values[10])):
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)  # neighbouring pixels, draws, stars
