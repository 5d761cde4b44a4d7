"""The Appendix-B network's layers as the fast CPU kernels run them, for inference: oneDNN
convolutions of height 1, frozen by TorchScript (:func:`blocked_features`), and a frozen copy
for input gradients (:func:`gradient_network`, the delta method). Each takes the network
(:class:`apogeenet.model.ApogeeNet`: ``features`` and ``head``) and gives the same numbers to
float32 rounding."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["HEAD_ROWS", "blocked_features", "gradient_network", "in_fixed_rows", "one_thread"]

HEAD_ROWS = 64
"""Rows the fully connected head takes at a time for inference (:func:`in_fixed_rows`)."""


@contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """Matrix products on one CPU thread inside the block (the previous count restored after it;
    nothing changes on a GPU). MKL may split a product's sum over threads, so with more than one
    its rounding depends on how many a process has (1 in a Dask worker, all cores in one process)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def in_fixed_rows(head: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], features: torch.Tensor
                  ) -> tuple[torch.Tensor, ...]:
    """``head`` applied to ``features`` (n, …) in blocks of exactly :data:`HEAD_ROWS` rows, the
    last padded with zeros, its outputs cut back to n rows, on one thread (:func:`one_thread`).
    A matrix product's kernel, and with it the rounding of every row, may depend on how many rows
    it has and on the threads it runs on (MKL on an Intel Sapphire Rapids takes another kernel
    below 64 rows, and splits a 64-row product's sums over two threads); with one shape for every
    block and one thread a spectrum's outputs are the same bits whatever batch and process it came
    in — a Dask worker's shard or one process's whole survey. (The head is about a sixth of the
    network's arithmetic.)"""
    n = len(features)
    flat = features.flatten(1)
    if n % HEAD_ROWS:
        flat = torch.cat([flat, flat.new_zeros(HEAD_ROWS - n % HEAD_ROWS, flat.shape[1])])
    with one_thread(flat.device):
        blocks = [head(block) for block in flat.split(HEAD_ROWS)]
    return tuple(torch.cat(parts)[:n] for parts in zip(*blocks))


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


def gradient_network(model: nn.Module) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:meth:`apogeenet.model.ApogeeNet.forward_hidden`, and the convolutions' output, for gradients with respect to the input
    only (the delta method, :func:`apogeenet.uncertainty.delta_predict`): a frozen copy of the
    network in eval mode (no weight gradients kept or computed) with the convolutions as height-1
    2-D layers in the channels-last layout, where oneDNN's forward and backward passes are faster
    than the Conv1d stack's (bench/infer.py), the head in fixed blocks (:func:`in_fixed_rows`).
    Same numbers to float32 rounding."""
    stack = _height_one_stack(model).requires_grad_(False).to(memory_format=torch.channels_last)
    head = copy.deepcopy(model.head).eval().requires_grad_(False)

    def outputs(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = head[:-1](features)
        return head[-1](hidden), hidden

    def forward_hidden(flux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = stack(flux[:, None, None, :].contiguous(memory_format=torch.channels_last))
        return *in_fixed_rows(outputs, features), features
    return forward_hidden
