"""The APOGEE Net architecture of Appendix B and its bad-pixel handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apogeenet.model import ApogeeNet, parameter_count, prepare_flux


def test_parameter_count_matches_appendix_b():
    # convs 32 424 + FC (64·133·512 + 512) + (512·512 + 512) + (512·3 + 3)
    assert parameter_count(ApogeeNet(3)) == 4_655_275


def test_layers_and_shapes():
    model = ApogeeNet(3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 16, 16, 32, 32, 32, 32, 64, 64]
    assert all(c.kernel_size == (3,) and c.padding == (1,) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool1d) for m in model.modules()) == 6
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.1, 0.1]
    model.eval()
    assert model(torch.zeros(2, 8575)).shape == (2, 3)
    with pytest.raises(ValueError, match="8575"):
        model(torch.zeros(2, 8000))


def test_bad_pixels_become_zero():
    flux = np.array([[1.0, np.nan, 5.0, 7.0]], dtype=">f4")
    error = np.array([[0.1, 0.1, 1e10, 0.0]])
    out = prepare_flux(flux, error)
    assert out.dtype == np.float32 and out.dtype.isnative
    assert out.tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_the_cpu_inference_copy_follows_the_weights():
    """forward_chunked keeps a oneDNN copy of the convolutions; a change of the weights (an
    optimiser step, a load) must reach it."""
    import torch

    from apogeenet.model import ApogeeNet

    torch.manual_seed(0)
    model, flux = ApogeeNet(3).eval(), torch.rand(4, 8575) + 0.5
    with torch.inference_mode():
        before = model.forward_chunked(flux, 2)
    with torch.no_grad():
        for weight in model.features.parameters():
            weight.mul_(1.1)
    with torch.inference_mode():
        after, plain = model.forward_chunked(flux, 2), model(flux)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, plain)
    assert not any("blocked" in name for name in model.state_dict())


@pytest.mark.floats
def test_the_fused_stack_and_its_fallback_give_the_plain_convolutions(monkeypatch):
    """blocked_features: the fused oneDNN stack (TorchScript) and, where TorchScript is gone, the
    unfused blocked stack compute the plain Conv1d stack's activations (float32 tolerance)."""
    from tolerances import U32, accumulation_factor

    from apogeenet.kernels import blocked_features

    torch.manual_seed(2)
    model, flux = ApogeeNet(3).eval(), torch.rand(6, 8575) + 0.5
    with torch.inference_mode():
        plain = model.features(flux.unsqueeze(1)).flatten(1)
        fused = blocked_features(model)(flux).flatten(1)
        monkeypatch.setattr(torch.jit, "script", lambda module: (_ for _ in ()).throw(RuntimeError("no TorchScript")))
        fallback = blocked_features(model)(flux).flatten(1)
    atol = float(U32 * accumulation_factor(model.features) * plain.abs().max())  # float32 sums (tolerances.py)
    for other in (fused, fallback):
        torch.testing.assert_close(other, plain, rtol=0, atol=atol)


@pytest.mark.floats
def test_a_spectrums_outputs_are_the_same_bits_whatever_batch_it_came_in():
    """The catalog of a Dask shard must equal one process's byte for byte: the inference path's
    outputs, activations and input gradients (the delta method) of a spectrum may not depend on
    how many others share its batch or where it sits in it (on an Intel Sapphire Rapids a plain
    matrix product of fewer than 64 rows rounds differently)."""
    from apogeenet.kernels import HEAD_ROWS

    torch.manual_seed(3)
    net = ApogeeNet(3).eval()
    x = torch.from_numpy(np.random.default_rng(5).uniform(0.5, 1.5, (HEAD_ROWS + 40, 8575)).astype(np.float32))
    with torch.inference_mode():
        whole = net.forward_chunks(x.split(16))
        for start, stop in ((0, 1), (7, 8), (3, 40), (10, HEAD_ROWS + 20), (1, HEAD_ROWS + 1)):
            part = net.forward_chunks(x[start:stop].split(5))
            for got, expected in zip(part, whole):
                assert torch.equal(got, expected[start:stop]), (start, stop)


@pytest.mark.floats
@pytest.mark.parametrize("method", ["monte_carlo", "delta"])
def test_a_spectrums_catalog_numbers_are_the_same_bits_whatever_block_it_came_in(method):
    """Prediction and σ of the Monte Carlo and of the delta method (its input gradients included)
    for a spectrum alone or among others, on all threads or on one: bit for bit the same."""
    from factories import TABLE1

    from apogeenet.config import PredictParams
    from apogeenet.serving import Predictor
    from apogeenet.uncertainty import predict_arrays, seed_keys

    torch.manual_seed(4)
    predictor = Predictor(ApogeeNet(3).eval(), TABLE1, None)
    flux = np.random.default_rng(6).uniform(50, 150, (12, 8575)).astype(np.float32)
    error, keys = (0.02 * flux).astype(np.float32), seed_keys([f"2M{i}" for i in range(12)])
    cfg = PredictParams(uncertainty=method, draws=8, forward_batch=8)
    whole = predict_arrays(predictor, flux, error, keys, cfg)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as in a Dask worker
        parts = {(start, stop): predict_arrays(predictor, flux[start:stop], error[start:stop], keys[start:stop], cfg)
                 for start, stop in ((0, 1), (9, 10), (3, 12))}
    finally:
        torch.set_num_threads(threads)
    for (start, stop), part in parts.items():
        for name in ("prediction", "sigma", "hidden"):
            np.testing.assert_array_equal(getattr(part, name), getattr(whole, name)[start:stop], err_msg=name)
