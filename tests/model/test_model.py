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
