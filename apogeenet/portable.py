"""Values whose stored bytes do not depend on the CPU: the survey and the label catalogs that DVC
versions must be the same bytes on every machine.

numpy's SIMD transcendental functions (exp, log, power on AVX-512 differ from AVX2/SSE by an
ulp or so) and BLAS kernels (summation order) change the last bits of float64 results between
CPUs. The synthetic survey is pinned byte for byte in git (``data.dvc``), so every value that
reaches a file is first rounded to a coarser grid: :func:`quantise` keeps ``bits`` significant
bits of the mantissa, using only exact operations (``frexp``, ``ldexp``, rounding of scaled
values), so equal inputs give equal outputs on every CPU and a last-bit difference changes the
stored value only if it straddles a grid boundary (probability ≈ difference / step).

Training a network is chaotic: a last-bit difference in one sum grows until the weights differ.
:func:`exact_matmul` makes a product's bits independent of the BLAS kernel, its blocking and its
thread count: both operands are rounded to integers on a power-of-two scale of their own largest
value (fixed point, :func:`fixed_point`), few enough bits that every product and every partial sum
of the inner dimension is an integer below 2⁵³, so float64 adds them exactly in any order.
:func:`exact_sum` is ``math.fsum`` (correctly rounded). Elementwise +, −, ×, ÷ and √ are exact
IEEE operations on every CPU, so a computation built from these alone gives the same bits
everywhere (:mod:`apogeenet.labels.yso_net`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["FEATURE_BITS", "SPECTRUM_BITS", "TABLE_BITS", "exact_matmul", "exact_mean_std", "exact_sum",
           "fixed_point", "quantise", "quantise_frame"]

SPECTRUM_BITS = 14
"""Noise-free model spectra: a step of 2⁻¹⁴–2⁻¹³ relative, well below the noise at any survey
S/N and far above the last-bit differences between CPUs (README, "The synthetic survey")."""
TABLE_BITS = 26
"""Catalog quantities (positions, magnitudes, labels): 1.5e-8 relative (0.01" in RA)."""
FEATURE_BITS = 20
"""A network's training inputs and targets: 1e-6 relative (1.5e-5 mag at 16 mag), far below any
photometric error; coarse enough that a last-bit difference changes one of the ~10⁶ values of a
training set with probability ~10⁻⁴ (a changed input would change every trained weight)."""
_MANTISSA = 53


def quantise(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` (float) rounded to ``bits`` significant bits; NaN and ±inf pass unchanged."""
    values = np.asarray(values, dtype=np.float64)
    mantissa, exponent = np.frexp(values)
    scale = float(2**bits)
    with np.errstate(invalid="ignore"):
        rounded = np.round(mantissa * scale) / scale
    return np.where(np.isfinite(values), np.ldexp(rounded, exponent), values)


def quantise_frame(frame: pd.DataFrame, bits: int = TABLE_BITS) -> pd.DataFrame:
    """A copy of ``frame`` with every float column quantised (other columns unchanged)."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = quantise(out[column].to_numpy(), bits)
    return out


def fixed_point(values: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """``values`` as integers (stored as float64) of at most ``bits`` bits times 2**scale:
    returns (integers, scale). The scale comes from the largest magnitude (exact: a maximum does
    not depend on order); scaling by a power of two is exact."""
    values = np.asarray(values, dtype=np.float64)
    peak = max(float(values.max()), -float(values.min())) if values.size else 0.0
    if not math.isfinite(peak):
        raise FloatingPointError("non-finite value in an exact product")
    if peak == 0.0:
        return np.zeros_like(values), 0
    exponent = math.frexp(peak)[1]  # peak < 2**exponent
    scaled = values * math.ldexp(1.0, bits - exponent)
    return np.rint(scaled, out=scaled), exponent - bits


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with both operands in fixed point (relative step 2**-(bits) of each operand's
    largest value, bits ≈ (52 − log2 K) / 2 for an inner dimension K): the same bits from every
    BLAS kernel, CPU and thread count."""
    inner = a.shape[-1]
    total = _MANTISSA - 1 - max(1, math.ceil(math.log2(max(inner, 2))))
    qa, sa = fixed_point(a, total // 2)
    qb, sb = fixed_point(b, total - total // 2)
    product = qa @ qb
    return np.ldexp(product, sa + sb) if sa + sb < -1000 else np.multiply(product, math.ldexp(1.0, sa + sb),
                                                                          out=product)


def exact_sum(values: np.ndarray) -> float:
    """The correctly rounded sum of all ``values`` (``math.fsum``): independent of order."""
    return math.fsum(np.asarray(values, dtype=np.float64).ravel().tolist())


def exact_mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and population σ of a 2-D array from correctly rounded sums."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    mean = np.array([exact_sum(column) / n for column in values.T])
    std = np.array([math.sqrt(exact_sum((column - m) * (column - m)) / n) for column, m in zip(values.T, mean)])
    return mean, std
