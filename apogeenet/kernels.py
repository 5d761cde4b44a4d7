"""The Appendix-B network's layers as the fast CPU kernels run them, for inference: oneDNN
convolutions of height 1, frozen by TorchScript (:func:`blocked_features`), and a frozen copy
for input gradients (:func:`gradient_network`, the delta method). Each takes the network
(:class:`apogeenet.model.ApogeeNet`: ``features`` and ``head``) and gives the same numbers to
float32 rounding."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["blocked_features", "gradient_network"]


def _height_one_stack(model: nn.Module) -> nn.Sequential:
    """The convolutional stack as 2-D layers of height 1 (the layouts oneDNN runs fastest), a copy
    of the current weights: (n, 1, 1, 8575) → (n, 64, 1, 133). Where a max-pool follows a ReLU the
    two swap places: max(relu(a), relu(b)) = relu(max(a, b)) exactly (values and gradients), and
    the ReLU then runs over half as many values. The ReLUs work in place (the layer before never
    needs its output again)."""
    layers: list[nn.Module] = []
    for layer in model.features:
        if isinstance(layer, nn.Conv1d):
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, (1, 3), padding=(0, 1)).to(layer.weight.device)
            with torch.no_grad():
                conv.weight.copy_(layer.weight.unsqueeze(2))
                conv.bias.copy_(layer.bias)
            layers.append(conv)
        elif isinstance(layer, nn.MaxPool1d):
            pool = nn.MaxPool2d((1, 2))
            layers[-1:] = [pool, layers[-1]] if isinstance(layers[-1], nn.ReLU) else [layers[-1], pool]
        else:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers).eval()


def blocked_features(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The convolutional stack for inference on a CPU, (n, 8575) → (n, 64, 1, 133) (the head
    flattens both shapes alike): the same layers as 2-D convolutions of height 1 run by oneDNN,
    frozen by TorchScript's ``optimize_for_inference`` — the weights prepacked as oneDNN constants,
    the activations kept in oneDNN's blocked layout between layers, the ReLUs applied in place —
    faster than the blocked stack of :mod:`torch.utils.mkldnn` run layer by layer and than the
    plain Conv1d stack, with the same numbers (bench/infer.py measures all three). A snapshot of
    the current weights (:meth:`apogeenet.model.ApogeeNet.forward_chunks` keeps one per weights
    version). Falls back to the layer-by-layer blocked stack where TorchScript cannot (it is
    deprecated in favour of ``torch.compile``, which needs a C++ compiler at run time), and to the
    plain stack where torch has no oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return lambda flux: model.features(flux.unsqueeze(1))
    stack = _height_one_stack(model)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            fused = torch.jit.optimize_for_inference(torch.jit.script(stack))
        return lambda flux: fused(flux.float().contiguous()[:, None, None, :])
    except (AttributeError, RuntimeError):
        from torch.utils import mkldnn

        blocked = mkldnn.to_mkldnn(stack)
        return lambda flux: blocked(flux.float().contiguous()[:, None, None, :].to_mkldnn()).to_dense()


def gradient_network(model: nn.Module) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """:meth:`apogeenet.model.ApogeeNet.forward_hidden` for gradients with respect to the input
    only (the delta method, :func:`apogeenet.uncertainty.delta_predict`): a frozen copy of the
    network in eval mode (no weight gradients kept or computed) with the convolutions as height-1
    2-D layers in the channels-last layout, where oneDNN's forward and backward passes are faster
    than the Conv1d stack's (bench/infer.py). Same numbers to float32 rounding."""
    stack = _height_one_stack(model).requires_grad_(False).to(memory_format=torch.channels_last)
    head = copy.deepcopy(model.head).eval().requires_grad_(False)

    def forward_hidden(flux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = stack(flux[:, None, None, :].contiguous(memory_format=torch.channels_last))
        hidden = head[:-1](features)
        return head[-1](hidden), hidden
    return forward_hidden
