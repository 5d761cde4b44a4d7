"""The APOGEE Net network (Olney et al. 2020, §3.2 and Appendix B), written from the description.

Input: one channel of 8575 raw apStar flux values (the combined spectrum, row 0). Twelve Conv1d
layers (kernel 3, padding 1) with channels 8, 8, 16, 16, 16, 16, 32, 32, 32, 32, 64, 64, each
followed by ReLU, and a max-pool of 2 after every second one (8575 → 4287 → … → 133 positions);
then fully connected 64·133 → 512 → 512 → 3 with ReLU and dropout 0.1 after the first two. The
outputs are the standardised targets (eq. 4); :class:`apogeenet.serving.Predictor` converts them
back. How the same layers run fast for inference is :mod:`apogeenet.kernels`.

Initialisation (the paper does not give one): He (Kaiming) normal weights for every Conv1d and
Linear layer and zero biases. PyTorch's default shrinks activations by a constant factor per
ReLU layer, so after twelve convolutions the signal has all but vanished and training stays at
the mean prediction; He initialisation keeps the activations' scale (README, "Training").

Input scale (:func:`scale_flux`), a flux unit stored with the model, one of two:
* ``flux_scale`` a number: raw flux divided by that constant (the median good pixel of the
  training spectra) — every spectrum's shape and the flux ratios between stars kept; closest to
  the paper's raw flux (profile ``paper``).
* ``flux_scale`` None ("per_spectrum"): each spectrum divided by its own median good pixel — the
  shape (continuum slope, line depths) kept, the overall level, which is set by distance and
  extinction and says nothing about Teff, log g or [Fe/H] without a distance, removed (profile
  ``demo``; README, "Training", compares the two).

Bad pixels: APOGEE writes flux 0 and error 1e10 where there is no data, so the raw flux the
network sees already carries 0 there — the convention the paper's model was trained with. The
one documented handling here is :func:`prepare_flux`: every pixel that is not good (non-finite
flux, or error outside (0, 1e10)) is set to 0, so NaNs and sentinel values never reach the
network and real and synthetic files look alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from apogeenet.io.apstar import APSTAR_NPIX, good_pixels
from apogeenet.kernels import blocked_features, in_fixed_rows

__all__ = ["APOGEE_NET_CHANNELS", "HIDDEN_SIZE", "ApogeeNet", "flux_divisor", "parameter_count", "prepare_flux", "scale_flux"]

APOGEE_NET_CHANNELS = (8, 8, 16, 16, 16, 16, 32, 32, 32, 32, 64, 64)
HIDDEN_SIZE = 512  # width of the two fully connected hidden layers


def _pooled_length(n_pixels: int, n_pools: int) -> int:
    for _ in range(n_pools):
        n_pixels //= 2
    return n_pixels


class ApogeeNet(nn.Module):
    """Appendix B of the paper; ``forward`` maps (batch, 8575) flux to (batch, n_outputs)."""

    def __init__(self, n_outputs: int = 3, *, n_pixels: int = APSTAR_NPIX, dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for i, channels in enumerate(APOGEE_NET_CHANNELS):
            layers += [nn.Conv1d(in_channels, channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            if i % 2 == 1:
                layers.append(nn.MaxPool1d(2))
            in_channels = channels
        self.features = nn.Sequential(*layers)
        flat = APOGEE_NET_CHANNELS[-1] * _pooled_length(n_pixels, len(APOGEE_NET_CHANNELS) // 2)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, HIDDEN_SIZE), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(HIDDEN_SIZE, HIDDEN_SIZE), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(HIDDEN_SIZE, n_outputs),
        )
        self.n_pixels = n_pixels
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        return self.forward_hidden(flux)[0]

    def forward_hidden(self, flux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, the 512 penultimate activations — what :mod:`apogeenet.domain` measures)."""
        if flux.ndim != 2 or flux.shape[1] != self.n_pixels:
            raise ValueError(f"expected flux of shape (batch, {self.n_pixels}), got {tuple(flux.shape)}")
        return self._head(self.features(flux.unsqueeze(1)))

    def _head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.head[:-1](features)
        return self.head[-1](hidden), hidden

    def forward_chunked(self, flux: torch.Tensor, chunk: int) -> torch.Tensor:
        """The same outputs for inference on many spectra: on a CPU the convolutions run ``chunk``
        spectra at a time (their activations stay in the cache), the fully connected head once over
        all of them (its first weight matrix is read once, not once per chunk); on a GPU the whole
        batch goes through in one call."""
        if flux.ndim != 2 or flux.shape[1] != self.n_pixels:
            raise ValueError(f"expected flux of shape (batch, {self.n_pixels}), got {tuple(flux.shape)}")
        return self.forward_chunks([flux] if flux.device.type != "cpu" else flux.split(chunk))[0]

    def forward_chunks(self, chunks: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and penultimate activations (:meth:`forward_hidden`) for the inputs of all
        ``chunks`` (each (n, 8575), made as they are consumed): the convolutions chunk by chunk,
        the fully connected head over all of them in blocks of a fixed size
        (:func:`apogeenet.kernels.in_fixed_rows`: a spectrum's outputs do not depend on the batch
        it came in). On a CPU the convolutions run on
        :func:`apogeenet.kernels.blocked_features`; on a GPU in full float32 (no TF32): the same numbers as on the CPU."""
        features = []
        for flux in chunks:
            if flux.device.type != "cpu":
                with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                    features.append(self.features(flux.unsqueeze(1)))
                continue
            features.append(self._blocked()(flux))
        return in_fixed_rows(self._head, torch.cat(features))

    def _blocked(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """:func:`apogeenet.kernels.blocked_features` of the current weights (:meth:`snapshot`)."""
        return self.snapshot(blocked_features)

    def snapshot(self, make: Callable[[nn.Module], Callable]) -> Callable:
        """``make(self)``, made again only when the weights change (an optimiser step, a load or a
        move to another device bumps the tensors' version counters or addresses)."""
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        cache = self.__dict__.setdefault("_snapshots", {})  # a plain attribute: not a submodule, not saved
        if make.__name__ not in cache or cache[make.__name__][0] != key:
            cache[make.__name__] = (key, make(self))
        return cache[make.__name__][1]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prepare_flux(flux: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Raw flux with every pixel that is not good set to 0, float32, shape kept."""
    flux = np.asarray(flux, dtype=np.float32)
    return np.where(good_pixels(flux, np.asarray(error)), flux, np.float32(0)).astype(np.float32, copy=False)


def scale_flux(flux: np.ndarray | torch.Tensor, flux_scale: float | None) -> np.ndarray | torch.Tensor:
    """The network's input from prepared flux: divided by ``flux_scale``, or, when it is None,
    each spectrum by its own median positive pixel (the lower middle value for an even count;
    rows with none are left as they are). A tensor is scaled on its own device (the GPU when the
    batch is there) and a tensor returned; an array gives an array."""
    if isinstance(flux, torch.Tensor):
        return _scale_tensor(flux.float(), flux_scale)
    values = torch.from_numpy(np.ascontiguousarray(flux, dtype=np.float32))
    return _scale_tensor(values, flux_scale).numpy()


def _scale_tensor(values: torch.Tensor, flux_scale: float | None) -> torch.Tensor:
    return values / flux_divisor(values, flux_scale)


def flux_divisor(values: torch.Tensor, flux_scale: float | None) -> torch.Tensor:
    """What :func:`scale_flux` divides float32 ``values`` (n, 8575) by: ``flux_scale``, or each
    row's median positive pixel (1 for rows with none), shape (n, 1)."""
    if flux_scale is not None:
        return torch.tensor(flux_scale, dtype=torch.float32, device=values.device)
    median = torch.nanmedian(torch.where(values > 0, values, torch.nan), dim=-1, keepdim=True).values
    return torch.where(torch.isfinite(median) & (median > 0), median, torch.ones_like(median))
