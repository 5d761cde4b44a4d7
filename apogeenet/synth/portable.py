"""Values whose stored bytes do not depend on the CPU (issue: data.dvc must hold on any machine).

numpy's SIMD transcendental functions (exp, log, power on AVX-512 differ from AVX2/SSE by an
ulp or so) and BLAS kernels (summation order) change the last bits of float64 results between
CPUs. The synthetic survey is pinned byte for byte in git (``data.dvc``), so every value that
reaches a file is first rounded to a coarser grid: :func:`quantise` keeps ``bits`` significant
bits of the mantissa, using only exact operations (``frexp``, ``ldexp``, rounding of scaled
values), so equal inputs give equal outputs on every CPU and a last-bit difference changes the
stored value only if it straddles a grid boundary (probability ≈ difference / step).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["SPECTRUM_BITS", "TABLE_BITS", "quantise", "quantise_frame"]

SPECTRUM_BITS = 14
"""Noise-free model spectra: a step of 2⁻¹⁴–2⁻¹³ relative, well below the noise at any survey
S/N and far above the last-bit differences between CPUs (README, "The synthetic survey")."""
TABLE_BITS = 26
"""Catalog quantities (positions, magnitudes, labels): 1.5e-8 relative (0.01" in RA)."""


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
