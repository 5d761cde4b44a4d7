"""Counter-based Gaussian noise for the Monte-Carlo draws (§3.5), made on the network's device.

Every number is a pure function of (seed, star key, draw, pixel), so a star's draws do not
depend on the batch it is in, its position or the number of workers, and no generator state is
carried from one star to the next: the draws of a whole chunk of (star, draw) pairs come from one
vectorised expression, on the CPU or on the GPU, with no per-star loop.

The generator is SplitMix64 (Steele, Lea & Flood 2014) read at random positions: a star's stream
starts at ``mix64(key ⊕ mix64(seed))`` and its i-th 64-bit word is ``mix64(start + (i+1)·γ)``
(γ the golden-ratio increment); the word of draw d and pixel pair j is i = d·⌈8575/2⌉ + j. Each
word gives two 24-bit uniforms and, by the Box–Muller transform, the N(0, 1) values of pixels 2j
and 2j+1 (tails end at 5.9σ; one in 10⁸ draws lies beyond). Integer arithmetic is done in int64
tensors with wrap-around multiplication and masked shifts, which is exact on every device (a test
compares it with numpy's uint64); the float32 Box–Muller step may differ in the last bit between
device types, so a catalog is reproducible for a given device type.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["mix64", "normal_noise", "star_streams"]

_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors holding uint64 bits."""
    return _mix64_(x.clone())


def _mix64_(x: torch.Tensor) -> torch.Tensor:
    """:func:`mix64` in place (the noise's hot path: no temporaries beyond the shifts)."""
    x ^= _shr(x, 30)
    x *= _signed(_M1)
    x ^= _shr(x, 27)
    x *= _signed(_M2)
    x ^= _shr(x, 31)
    return x


def star_streams(seed: int, keys: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """The start of each star's stream from the run's ``seed`` and the stars' uint64 ``keys``."""
    keys = torch.from_numpy(np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64)).to(device)
    seed_word = mix64(torch.tensor([_signed(int(seed) % (1 << 64))], dtype=torch.int64, device=device))
    return mix64(keys ^ seed_word)


def normal_noise(streams: torch.Tensor, draws: torch.Tensor, n_pixels: int) -> torch.Tensor:
    """N(0, 1) float32 of shape (len(draws), n_pixels): row r is draw ``draws[r]`` of the star whose
    stream is ``streams[r]`` (both int64, on the device where the noise is wanted). Computed in
    place where it can be (2 % of the Monte Carlo's time on a CPU; the same bits)."""
    pairs = math.ceil(n_pixels / 2)
    words = torch.arange(1, pairs + 1, device=streams.device, dtype=torch.int64).add(draws[:, None] * pairs)
    _mix64_(words.mul_(_signed(_GAMMA)).add_(streams[:, None]))
    scale = 1.0 / (1 << 24)
    u1 = _shr(words, 40).float().add_(0.5).mul_(scale)    # (0, 1): the logarithm stays finite
    radius = u1.log_().mul_(-2.0).sqrt_()
    angle = (_shr(words, 16) & 0xFFFFFF).float().mul_(scale * (2.0 * math.pi))
    out = torch.empty(len(draws), pairs, 2, device=streams.device)
    torch.mul(radius, torch.cos(angle), out=out[:, :, 0])
    torch.mul(radius, angle.sin_(), out=out[:, :, 1])
    return out.view(len(draws), 2 * pairs)[:, :n_pixels]
