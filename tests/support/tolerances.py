"""Tolerances for comparing float32 network outputs, derived from float32 accumulation error.

Results of the same network differ between CPUs (oneDNN and numpy pick kernels by instruction
set: SSE4.1, AVX2, AVX-512) and between batch sizes, because sums are taken in other orders.
A dot product of length K in float32 carries a relative error of about √K·u (u = 2⁻²⁴, the
probabilistic bound of Higham & Mary 2019) of the sum of the absolute values of its terms; through
the layers of a network those add up. So an output k of the network is known to

    Δy_k ≈ u · Σ_layers √(fan-in) · Σ_j |W_kj h_j|       (h: the input of the last layer)

and a standard deviation over n draws, each off by at most Δy, to √(n/(n−1)) · max Δy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

U32 = 2.0**-24


def accumulation_factor(model: nn.Module) -> float:
    """Σ over the Conv1d and Linear layers of √(fan-in)."""
    total = 0.0
    for module in model.modules():
        if isinstance(module, nn.Conv1d):
            total += math.sqrt(module.in_channels * module.kernel_size[0])
        elif isinstance(module, nn.Linear):
            total += math.sqrt(module.in_features)
    return total


def output_atol(model: nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """Bound on the float32 error of each output, (n, n_outputs), in the network's own units."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    captured = {}
    handle = last.register_forward_hook(lambda module, args, output: captured.setdefault("h", args[0]))
    try:
        with torch.inference_mode():
            model.eval()(inputs)
    finally:
        handle.remove()
    with torch.no_grad():
        h = captured["h"].double()
        magnitude = h.abs() @ last.weight.double().abs().T + last.bias.double().abs()
    return (U32 * accumulation_factor(model) * magnitude).numpy()


def sigma_atol(output_bound: np.ndarray, n_draws: int) -> np.ndarray:
    """Bound on the error of a standard deviation (ddof 1) over draws each off by ``output_bound``."""
    return math.sqrt(n_draws / (n_draws - 1)) * np.max(output_bound, axis=0)
