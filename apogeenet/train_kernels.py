"""The Appendix-B convolutional stack for training on a CPU (§3.3), faster than the Conv1d stack
with the same numbers to float32 rounding (bench/train.py measures both and their losses).

Each convolution + ReLU (+ max-pool) pair is one autograd step on activations kept as
(spectra, pixels, channels) — the channels-last layout in which oneDNN's convolutions run
fastest — with the network's own Conv1d parameters (nothing is copied into another module, so
checkpoints, optimisers and saved models are the same as the eager loop's):

* forward: oneDNN's 2-D convolution of height 1; where a max-pool follows, the pool runs before
  the ReLU (max(relu(a), relu(b)) = relu(max(a, b)), values and gradients) over pixel pairs, the
  first pixel of a tied pair taking the gradient as in ``nn.MaxPool1d``;
* backward: the input gradient from oneDNN; the weight gradient as three matrix products, one per
  kernel tap, over all spectra and pixels at once (pixels·spectra × channels), with the products
  that cross from one spectrum into the next taken off again — oneDNN's weight gradient is the
  slowest part of the eager backward pass for these narrow layers.

Only float32 on a CPU; on a GPU training runs the Conv1d stack (cuDNN is fast there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CHUNK", "fast_features", "fast_forward", "fast_supported"]

_CL = torch.channels_last
CHUNK = 32
"""Spectra that go through the convolutions together: the activations of a few layers stay in
the cache (on 2 cores 32 beat 8, 16 and 64 at batch 128, and 8 and 16 at batch 32)."""


def fast_supported(flux: torch.Tensor) -> bool:
    """Whether :func:`fast_features` runs for this input: float32 on a CPU with oneDNN."""
    return flux.device.type == "cpu" and flux.dtype == torch.float32 and torch.backends.mkldnn.is_available()


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """(n, pixels, channels) memory as the (n, channels, 1, pixels) channels-last view oneDNN takes."""
    n, t, c = x.shape
    return x.view(n, 1, t, c).permute(0, 3, 1, 2)


def _as_rows(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_as_image` (a view when ``y`` is channels-last, else a copy)."""
    n, c, _, t = y.shape
    return y.permute(0, 2, 3, 1).reshape(n, t, c)


def _image_weight(weight: torch.Tensor) -> torch.Tensor:
    """A Conv1d weight (out, in, 3) as the height-1 2-D weight; channels-last except for one
    input channel, where oneDNN's plain-layout kernel is the fast one."""
    weight = weight.unsqueeze(2)
    return weight.contiguous() if weight.shape[1] == 1 else weight.contiguous(memory_format=_CL)


def _weight_grad(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """∂L/∂W (out, in, 3) of a kernel-3, padding-1 convolution from the output gradient ``g``
    (n, t, out) and the input ``x`` (n, t, in): tap k pairs output pixel p with input pixel
    p + k − 1 of the same spectrum."""
    n, t, c_out = g.shape
    rows_g, rows_x = g.reshape(n * t, c_out), x.reshape(n * t, x.shape[2])
    centre = rows_g.T @ rows_x
    # over all rows at once the shifted products also pair the first pixel of one spectrum with
    # the last of the one before (and back); those n − 1 pairs are taken off again
    left = rows_g[1:].T @ rows_x[:-1] - g[1:, 0].T @ x[:-1, -1]
    right = rows_g[:-1].T @ rows_x[1:] - g[:-1, -1].T @ x[1:, 0]
    return torch.stack((left, centre, right), dim=2)


# weight gradients of layers with at most this many input × output channels come from oneDNN,
# of wider ones from the tap products (faster there: bench/train.py --layers)
_ONEDNN_WEIGHT_GRAD_MAX = 128


class _ConvBlock(torch.autograd.Function):
    """relu(conv(x)) or relu(maxpool2(conv(x))) on (n, pixels, channels) activations."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pool: bool) -> torch.Tensor:
        image_weight = _image_weight(weight)
        y = F.conv2d(_as_image(x), image_weight, bias, padding=(0, 1)).contiguous(memory_format=_CL)
        indices = None
        if pool:
            y, indices = F.max_pool2d(y, (1, 2), return_indices=True)
        out = _as_rows(y).clamp_min_(0)
        ctx.pixels = x.shape[1]
        ctx.save_for_backward(x, image_weight, out, indices)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, image_weight, out, indices = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad.contiguous(), out, 0)
        if indices is not None:
            n, _, c = grad.shape
            image = torch.empty((n, c, 1, ctx.pixels), dtype=grad.dtype, memory_format=_CL)  # shape only
            grad = _as_rows(torch.ops.aten.max_pool2d_with_indices_backward(
                _as_image(grad), image, [1, 2], [1, 2], [0, 0], [1, 1], False, indices))
        c_out, c_in = image_weight.shape[:2]
        onednn_weight = c_out * c_in <= _ONEDNN_WEIGHT_GRAD_MAX
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(  # its bias gradient is slower than a sum
            _as_image(grad), _as_image(x), image_weight, [c_out], [1, 1], [0, 1], [1, 1], False, [0, 0], 1,
            [need_x, need_w and onednn_weight, False])
        if grad_x is not None:
            grad_x = _as_rows(grad_x)
        if grad_w is not None:
            grad_w = grad_w.squeeze(2)
        elif need_w:
            grad_w = _weight_grad(grad, x)
        grad_b = grad.sum(dim=(0, 1)) if need_b else None
        return grad_x, grad_w, grad_b, None


def fast_forward(model: nn.Module, flux: torch.Tensor) -> torch.Tensor:
    """``model(flux)`` with the convolutions on :func:`fast_features`, :data:`CHUNK` spectra at a
    time (their gradients add up over the chunks), the fully connected head (and its dropout
    draws) once over the batch as in the eager loop."""
    return model.head(torch.cat([fast_features(model, part) for part in flux.split(CHUNK)]))


def fast_features(model: nn.Module, flux: torch.Tensor) -> torch.Tensor:
    """``model.features(flux.unsqueeze(1))`` flattened, (n, 64·133), for training on a CPU: the
    same values and gradients (to float32 rounding) with the fast kernels above."""
    layers = list(model.features)  # Conv1d, ReLU[, MaxPool1d], Conv1d, ...
    x = flux.unsqueeze(-1)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv1d):
            pooled = isinstance(layers[i + 2] if i + 2 < len(layers) else None, nn.MaxPool1d)
            x = _ConvBlock.apply(x, layer.weight, layer.bias, pooled)
    return x.transpose(1, 2).reshape(len(flux), -1)
