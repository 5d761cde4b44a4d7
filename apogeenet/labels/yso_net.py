"""The YSO photometric network of §2.4, trained with arithmetic whose bits do not depend on the CPU.

Three convolutions (kernel 3, padding 1) over the 12 inputs, each followed by a ReLU and max
pooling (2, 2, 3: 12 → 6 → 3 → 1 positions of 32, 64, 128 channels), then two fully connected
layers (128 → 256 → outputs), as in the paper. The labels it produces are data that DVC versions,
so training must give the same weights on every machine: it runs in float64 numpy with every
matrix product in fixed point (:func:`apogeenet.portable.exact_matmul`), every other operation
elementwise IEEE arithmetic, the losses as correctly rounded sums, Adam written out, the
learning rate a piecewise-linear one cycle (no cosine from a maths library), the initial weights
uniform from numpy's bit generator. Under other SIMD kernels, BLAS kernels or thread counts the
weights are identical bit for bit (tests/data/test_label_portability.py).

Activations are kept channels-last, (stars, positions, channels); a convolution is one product
of the (stars × positions, 3 × channels) window matrix with the kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from apogeenet.portable import exact_matmul, exact_sum

__all__ = ["LAYERS", "YSONet", "AdamState", "one_cycle_rate", "train_network"]

#: (name, inputs, outputs): the three convolutions take 3 × channels window values.
LAYERS = (("conv1", 3 * 1, 32), ("conv2", 3 * 32, 64), ("conv3", 3 * 64, 128), ("fc1", 128, 256))
_POOLS = (2, 2, 3)


def _windows(x: np.ndarray) -> np.ndarray:
    """(n, L, C) → (n, L, 3C): each position's left, own and right values (zero padding)."""
    padded = np.zeros((x.shape[0], x.shape[1] + 2, x.shape[2]))
    padded[:, 1:-1] = x
    return np.concatenate([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], axis=2)


def _unwindow(grad: np.ndarray, channels: int) -> np.ndarray:
    """Gradient of :func:`_windows`: (n, L, 3C) → (n, L, C), the three terms added in a fixed order."""
    g = grad.reshape(grad.shape[0], grad.shape[1], 3, channels)
    out = g[:, :, 1].copy()
    out[:, :-1] += g[:, 1:, 0]
    out[:, 1:] += g[:, :-1, 2]
    return out


def _pool(x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling over positions: (n, L, C) → (n, L/size, C) and which of the ``size`` values was
    the maximum (the first of equals)."""
    best, where = x[:, 0::size].copy(), np.zeros((x.shape[0], x.shape[1] // size, x.shape[2]), np.int8)
    for j in range(1, size):
        candidate = x[:, j::size]
        better = candidate > best
        np.copyto(best, candidate, where=better)
        where[better] = j
    return best, where


def _unpool(grad: np.ndarray, where: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((grad.shape[0], grad.shape[1] * size, grad.shape[2]))
    for j in range(size):
        out[:, j::size] = np.where(where == j, grad, 0.0)
    return out


def _column_sum(grad: np.ndarray) -> np.ndarray:
    """Σ over rows, exactly (a fixed-point product with a row of ones)."""
    return exact_matmul(np.ones((1, grad.shape[0])), grad)[0]


@dataclass
class YSONet:
    """Weights of the network as float64 arrays: ``<layer>.weight`` (inputs, outputs) and
    ``<layer>.bias`` for the layers of :data:`LAYERS` and ``fc2``."""

    params: dict[str, np.ndarray]

    @classmethod
    def initial(cls, n_outputs: int, rng: np.random.Generator) -> YSONet:
        """Weights and biases U(−1/√fan_in, 1/√fan_in), as PyTorch initialises these layers."""
        params = {}
        for name, fan_in, fan_out in (*LAYERS, ("fc2", 256, n_outputs)):
            bound = 1.0 / math.sqrt(fan_in)
            params[f"{name}.weight"] = rng.uniform(-bound, bound, (fan_in, fan_out))
            params[f"{name}.bias"] = rng.uniform(-bound, bound, fan_out)
        return cls(params)

    def copy(self) -> YSONet:
        return YSONet({k: v.copy() for k, v in self.params.items()})

    def forward(self, x: np.ndarray, keep: bool = False) -> tuple[np.ndarray, list]:
        """Outputs (n, outputs) for standardised inputs (n, 12); with ``keep`` what the backward
        pass needs."""
        p, cache = self.params, []
        h = np.asarray(x, np.float64)[:, :, None]
        for k, size in enumerate(_POOLS, start=1):
            cols = _windows(h)
            n, length, width = cols.shape
            z = exact_matmul(cols.reshape(n * length, width), p[f"conv{k}.weight"]).reshape(n, length, -1)
            z = z + p[f"conv{k}.bias"]
            h, where = _pool(np.maximum(z, 0.0), size)
            if keep:
                cache.append((cols, z, where))
        flat = h[:, 0, :]
        z = exact_matmul(flat, p["fc1.weight"]) + p["fc1.bias"]
        hidden = np.maximum(z, 0.0)
        y = exact_matmul(hidden, p["fc2.weight"]) + p["fc2.bias"]
        if keep:
            cache.append((flat, z, hidden))
        return y, cache

    def gradients(self, cache: list, grad_y: np.ndarray) -> dict[str, np.ndarray]:
        """d loss / d params from the forward pass's ``cache`` and d loss / d outputs."""
        p, grads = self.params, {}
        flat, z_fc, hidden = cache[-1]
        grads["fc2.weight"] = exact_matmul(hidden.T, grad_y)
        grads["fc2.bias"] = _column_sum(grad_y)
        g = exact_matmul(grad_y, p["fc2.weight"].T) * (z_fc > 0)
        grads["fc1.weight"] = exact_matmul(flat.T, g)
        grads["fc1.bias"] = _column_sum(g)
        g = exact_matmul(g, p["fc1.weight"].T)[:, None, :]
        for k in range(len(_POOLS), 0, -1):
            cols, z, where = cache[k - 1]
            n, length, width = cols.shape
            g = _unpool(g, where, _POOLS[k - 1]) * (z > 0)
            g2 = g.reshape(n * length, -1)
            grads[f"conv{k}.weight"] = exact_matmul(cols.reshape(n * length, width).T, g2)
            grads[f"conv{k}.bias"] = _column_sum(g2)
            if k > 1:
                g = _unwindow(exact_matmul(g2, p[f"conv{k}.weight"].T).reshape(n, length, width), width // 3)
        return grads


@dataclass
class AdamState:
    """Adam (Kingma & Ba 2015) written out in elementwise float64 (β₁ᵗ and β₂ᵗ kept as running
    products: no ``pow`` from a maths library)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    m: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    beta1_t: float = 1.0
    beta2_t: float = 1.0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], rate: float) -> None:
        self.beta1_t *= self.beta1
        self.beta2_t *= self.beta2
        for name, grad in grads.items():
            m = self.m.get(name, np.zeros_like(grad)) * self.beta1 + grad * (1.0 - self.beta1)
            v = self.v.get(name, np.zeros_like(grad)) * self.beta2 + (grad * grad) * (1.0 - self.beta2)
            self.m[name], self.v[name] = m, v
            m_hat, v_hat = m / (1.0 - self.beta1_t), v / (1.0 - self.beta2_t)
            params[name] -= (m_hat / (np.sqrt(v_hat) + self.eps)) * rate


def one_cycle_rate(step: int, total: int, peak: float, warmup: float = 0.3, start_div: float = 25.0,
                   final_div: float = 1e4) -> float:
    """A one-cycle learning rate (Smith & Topin 2019) with linear phases: peak/25 rising to the
    peak over the first 30 % of steps, then falling to peak/25/10⁴."""
    rise = max(1, int(warmup * total))
    start, end = peak / start_div, peak / start_div / final_div
    if step < rise:
        return start + (peak - start) * (step / rise)
    return peak + (end - peak) * ((step - rise) / max(1, total - 1 - rise))


def mse(prediction: np.ndarray, target: np.ndarray) -> float:
    diff = prediction - target
    return exact_sum(diff * diff) / diff.size


def train_network(x: np.ndarray, y: np.ndarray, train: np.ndarray, dev: np.ndarray, *, epochs: int,
                  batch_size: int, learning_rate: float, rng: np.random.Generator,
                  on_epoch: Callable[[int, float, float], None] | None = None) -> tuple[YSONet, list[dict]]:
    """Adam on the MSE of standardised targets ``y`` from standardised inputs ``x`` over the rows
    ``train``; returns the weights of the epoch with the lowest dev MSE and the history."""
    net = YSONet.initial(y.shape[1], rng)
    adam = AdamState()
    steps = epochs * -(-len(train) // batch_size)
    step, best, best_net, history = 0, math.inf, net, []
    for epoch in range(epochs):
        order = train[rng.permutation(len(train))]
        squared = []
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            out, cache = net.forward(x[rows], keep=True)
            diff = out - y[rows]
            squared.append(exact_sum(diff * diff))
            adam.step(net.params, net.gradients(cache, diff * (2.0 / diff.size)),
                      one_cycle_rate(step, steps, learning_rate))
            step += 1
        train_loss = math.fsum(squared) / (len(train) * y.shape[1])
        dev_loss = mse(net.forward(x[dev])[0], y[dev])
        history.append({"epoch": epoch, "train_loss": train_loss, "dev_loss": dev_loss})
        if on_epoch:
            on_epoch(epoch, train_loss, dev_loss)
        if dev_loss < best:
            best, best_net = dev_loss, net.copy()
    return best_net, history
