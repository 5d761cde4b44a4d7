"""The fast training engine (apogeenet/train_kernels.py, StagedSplit, engine: fast) computes what
the eager reference loop computes: gradients and a loss trajectory no further from float64 than
the eager loop's own float32 results, batches identical to the store's, histories identical
whether the split is staged or streamed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from factories import labelled_store
from tolerances import U32, accumulation_factor, output_atol

from apogeenet import train as train_module
from apogeenet.config import TrainProfile
from apogeenet.dataset import StagedSplit
from apogeenet.model import ApogeeNet
from apogeenet.train import train_model
from apogeenet.train_kernels import fast_features, fast_forward


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    data = labelled_store(tmp_path_factory.mktemp("kernels"), 24, seed=4)
    data.flux_scale = None  # each spectrum over its own median: losses of order one
    return data


def _inputs(data, n: int = 6) -> torch.Tensor:
    """Network inputs with a stretch of bad pixels (flux 0): there the convolutions give equal
    values, so max-pool ties occur and the gradient must go to the first pixel of each pair."""
    flux, _ = data.batch(np.arange(n))
    flux[:, 1000:1400] = 0
    return flux


def _gradients(model: torch.nn.Module, forward, flux: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    loss = F.mse_loss(forward(flux), target)
    return [g.double() for g in torch.autograd.grad(loss, list(model.parameters()))]


@pytest.mark.floats
def test_fast_features_give_the_eager_values(small):
    torch.manual_seed(0)
    model = ApogeeNet(3, dropout=0.0).eval()
    flux = _inputs(small)
    with torch.no_grad():
        eager = model(flux)
        fast = model.head(fast_features(model, flux))
        chunked = fast_forward(model, flux)
    bound = torch.from_numpy(output_atol(model, flux))
    assert torch.all((fast - eager).abs() <= bound) and torch.all((chunked - eager).abs() <= bound)


@pytest.mark.floats
def test_fast_gradients_are_as_exact_as_the_eager_ones(small):
    """Each parameter's gradient is within 4× the eager float32 error of the float64 gradient
    (plus one float32 rounding of its size): no CPU's kernels make the fast path the worse one."""
    torch.manual_seed(0)
    model = ApogeeNet(3, dropout=0.0)
    flux, target = _inputs(small), torch.randn(6, 3)
    eager = _gradients(model, model, flux, target)
    fast = _gradients(model, lambda x: fast_forward(model, x), flux, target)
    double = model.double()
    reference = _gradients(double, double, flux.double(), target.double())
    for name, e, f, r in zip([n for n, _ in model.named_parameters()], eager, fast, reference):
        eager_error, fast_error = (e - r).norm(), (f - r).norm()
        assert fast_error <= 4 * eager_error + U32 * r.norm(), (name, float(fast_error), float(eager_error))


@pytest.mark.floats
def test_fast_training_drifts_from_float64_no_more_than_eager(small):
    """Float32 training itself leaves the float64 trajectory step by step (sums in other orders,
    amplified by each step, Adam's first steps most); over the run the fast engine's largest
    drift stays within 4× the eager loop's largest (plus the forward pass's rounding bound). Step
    by step the two drifts are independent draws of that amplification, so only the run's
    largest are compared."""
    batches = [small.batch(np.arange(i, i + 8)) for i in (0, 8, 16)] * 2

    def losses(fast: bool, dtype=torch.float32) -> np.ndarray:
        torch.manual_seed(0)
        model = ApogeeNet(3).to(dtype).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **({"fused": True} if fast else {}))
        torch.manual_seed(1)
        out = []
        for flux, target in batches:
            optimizer.zero_grad()
            prediction = fast_forward(model, flux) if fast else model(flux.to(dtype))
            loss = F.mse_loss(prediction, target.to(dtype))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            out.append(float(loss.detach()))
        return np.array(out)
    reference = losses(False, torch.float64)
    eager, fast = losses(False), losses(True)
    eager_drift, fast_drift = (np.max(np.abs(run - reference) / reference) for run in (eager, fast))
    assert fast_drift <= 4 * eager_drift + U32 * accumulation_factor(ApogeeNet(3)), (fast_drift, eager_drift)


def test_a_staged_split_gives_the_stores_batches(small):
    positions = np.array([5, 2, 9, 14, 0])
    staged = StagedSplit(small, positions, noise_cap=5.0)
    batch = np.array([9, 0, 2])
    for noise in (None, 3):
        ours = staged.batch(batch, None if noise is None else np.random.default_rng([noise]))
        store = small.batch(batch, "cpu", None if noise is None else np.random.default_rng([noise]), noise_cap=5.0)
        assert all(torch.equal(a, b) for a, b in zip(ours, store))
    with pytest.raises(ValueError, match="not staged"):
        staged.batch(np.array([1]))


def test_fast_engine_staged_or_streamed_trains_alike(small, tmp_path, monkeypatch):
    """The staged split and the streamed one feed the same numbers: the same history exactly."""
    train, dev = np.arange(16), np.arange(16, 24)
    cfg = TrainProfile(max_epochs=2, patience=5, batch_size=8, augment="noise", grad_clip=1.0)
    staged = train_model(small, train, dev, cfg, tmp_path / "staged").history
    monkeypatch.setattr(train_module, "_staging_budget", lambda device: 0)
    streamed = train_model(small, train, dev, cfg, tmp_path / "streamed").history
    assert [(h["train_loss"], h["dev_loss"]) for h in staged] == [(h["train_loss"], h["dev_loss"]) for h in streamed]
