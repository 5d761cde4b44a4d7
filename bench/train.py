"""Training throughput of APOGEE Net (§3.3) as JSON: samples/s (forward + backward + step).

    python bench/train.py [--batch 128] [--epochs 2] [--max-samples 1024] [--layers] [--out FILE]

Measured in one run, on the same model, batch size and batches:
* ``eager``: today's reference loop — the Conv1d stack, Adam, gradient clipping — over batches
  already in memory (compute only);
* ``fast``: the same steps with the fast engine's kernels (:mod:`apogeenet.train_kernels` on a CPU)
  and a fused optimiser; ``cpu_fast_over_eager`` = fast / eager (on CUDA ``gpu_fast_over_eager``);
* ``pipeline``: :func:`apogeenet.train.train_model` (the fast engine, the default) from the
  spectra store, with staging, dev loss and checkpointing; ``pipeline_over_eager`` = pipeline /
  eager (on CUDA also ``gpu_pipeline_over_eager``); ``pipeline_eager_engine``: the same with
  ``engine: eager`` (batches streamed from the store);
* ``loss_agreement``: the training loss over the first ``--steps`` steps of the eager and the fast
  loop (float32) against the same loop in float64, largest relative difference: float32 training
  itself drifts from float64 step by step; the fast engine must not drift further than the eager;
* ``eager_bf16``: the eager loop under bfloat16 autocast (two batches on a CPU);
* with ``--layers``: per convolution block, forward and backward ms and GFLOP/s of the eager
  Conv1d(+ReLU+pool) and of the fast block (the table in the README).

Eager and fast alternate in rounds and each rate is the batch over the median step time, so a
noisy machine slows both alike. The device is CUDA when present (as in training), else the CPU.
Uses the project's store and labels (params.yaml) when they exist, else a small synthetic survey.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from benchio import emit

from apogeenet.config import TrainProfile
from apogeenet.dataset import LabelledSpectra, best_device
from apogeenet.ingest import ingest
from apogeenet.labels.catalog import Normalisation, combine_labels
from apogeenet.model import APOGEE_NET_CHANNELS, ApogeeNet
from apogeenet.store import SpectraStore
from apogeenet.train import train_model
from apogeenet.train_kernels import fast_forward, fast_supported

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def project_or_synthetic(n_stars: int, tmp: Path) -> tuple[LabelledSpectra, str]:
    from apogeenet.config import load_params
    from apogeenet.errors import UserFacingError
    from apogeenet.pipeline.common import training_data

    try:
        return training_data(load_params()), "project store"
    except (UserFacingError, FileNotFoundError, OSError):
        from apogeenet.synth.survey import make_survey

        stars, _ = make_survey(tmp / "survey", n_stars, seed=3, fractions={"giant": 0.5, "dwarf": 0.5})
        ingest(tmp / "survey" / "apStar", tmp / "store", workers=1)
        part = pd.DataFrame({"APOGEE_ID": stars["apogee_id"], "TEFF": stars["teff"],
                             "LOGG": stars["logg"], "FE_H": stars["fe_h"]})
        table1 = Normalisation(4700.0, 900.0, 3.5, 1.2, -0.1, 0.25)
        return LabelledSpectra(SpectraStore(tmp / "store"), combine_labels({"PAYNE": part}), table1), \
            f"synthetic survey of {n_stars}"


def trainer(device: torch.device, *, fast: bool, dtype: torch.dtype = torch.float32, bf16: bool = False
            ) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """One training step (returns the loss) of a fresh seed-0 network: the eager reference loop or
    the fast engine's (kernels and fused Adam)."""
    torch.manual_seed(0)
    model = ApogeeNet(3).to(device=device, dtype=dtype).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **({"fused": True} if fast else {}))

    def forward(flux: torch.Tensor) -> torch.Tensor:
        return fast_forward(model, flux) if fast and fast_supported(flux) else model(flux)

    def step(flux: torch.Tensor, target: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.mse_loss(forward(flux.to(dtype)).to(dtype), target.to(dtype))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.detach()
    return step


def alternating_rates(batches: Batches, device: torch.device, rounds: int) -> dict[str, float]:
    """Samples/s of the eager and the fast loop: ``rounds`` epochs each, alternating, rate = batch
    size over the median step time."""
    steps = {"eager": trainer(device, fast=False), "fast": trainer(device, fast=True)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up (kernels, allocator, CUDA context)
        step(*batches[0])
    for _ in range(rounds):
        for name, step in steps.items():
            for flux, target in batches:
                started = time.perf_counter()
                float(step(flux, target))  # waits for the device
                times[name].append(time.perf_counter() - started)
    size = len(batches[0][0])
    return {name: size / statistics.median(spent) for name, spent in times.items()}


def bf16_rate(batches: Batches, device: torch.device) -> float:
    step = trainer(device, fast=False, bf16=True)
    step(*batches[0])
    started = time.perf_counter()
    for flux, target in batches:
        float(step(flux, target))
    return sum(len(b[0]) for b in batches) / (time.perf_counter() - started)


def loss_agreement(batches: Batches, device: torch.device, steps: int) -> dict:
    """Largest relative difference of the per-step training losses over ``steps`` steps: eager and
    fast float32 against the eager loop in float64, and fast against eager."""
    chosen = (batches * (steps // len(batches) + 1))[:steps]

    def losses(step) -> np.ndarray:
        torch.manual_seed(1)  # the same dropout draws in every run
        return np.array([float(step(flux, target)) for flux, target in chosen])
    reference = losses(trainer(device, fast=False, dtype=torch.float64))
    eager, fast = losses(trainer(device, fast=False)), losses(trainer(device, fast=True))

    def worst(a, b) -> float:
        return float(np.max(np.abs(a - b) / np.abs(b)))
    return {"steps": steps, "eager_vs_float64": worst(eager, reference), "fast_vs_float64": worst(fast, reference),
            "fast_vs_eager": worst(fast, eager),
            "fast_within_float32_drift": bool(worst(fast, reference) <= 4 * worst(eager, reference))}


def pipeline(data, positions, args, checkpoints: Path, **profile) -> float:
    """Samples/s of :func:`train_model` over its epochs after the first (warm-up, staging)."""
    dev = positions[:8]  # a token dev set: the bench measures training steps
    cfg = TrainProfile(optimizer="adam", batch_size=args.batch, max_epochs=args.epochs + 1,
                       patience=args.epochs + 1, grad_clip=1.0, **profile)
    history = train_model(data, positions, dev, cfg, checkpoints).history
    return float(np.mean([h["samples_per_s"] for h in history[1:]]))


def layer_table(batch: int, repeats: int = 10) -> list[dict]:
    """Forward and backward time and GFLOP/s of each convolution block, eager and fast, on CPU."""
    from apogeenet.train_kernels import _ConvBlock

    def median_ms(run: Callable[[], None]) -> float:
        run()
        spent = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            spent.append(time.perf_counter() - started)
        return 1e3 * statistics.median(spent)
    rows, pixels, c_in = [], 8575, 1
    for i, c_out in enumerate(APOGEE_NET_CHANNELS):
        pool = i % 2 == 1
        conv = torch.nn.Conv1d(c_in, c_out, 3, padding=1)
        flops = 2 * batch * pixels * c_in * c_out * 3
        x_eager = torch.randn(batch, c_in, pixels, requires_grad=i > 0)
        # the plain strides training gives it (.contiguous() would keep a size-1 dimension's odd stride)
        x_fast = torch.empty(batch, pixels, c_in).copy_(x_eager.detach().transpose(1, 2)).requires_grad_(i > 0)

        def eager_forward():
            y = torch.relu(conv(x_eager))
            return F.max_pool1d(y, 2) if pool else y

        def fast_forward_block():
            return _ConvBlock.apply(x_fast, conv.weight, conv.bias, pool)
        row = {"layer": i, "in": c_in, "out": c_out, "pixels": pixels, "mflop_forward": round(flops / 1e6, 1)}
        for name, forward in (("eager", eager_forward), ("fast", fast_forward_block)):
            with torch.no_grad():
                forward_ms = median_ms(forward)
            grad = torch.randn_like(forward())
            total_ms = median_ms(lambda: forward().backward(grad))
            backward_ms = max(total_ms - forward_ms, 1e-6)
            backward_flops = flops * (2 if i > 0 else 1)  # input and weight gradients
            row |= {f"{name}_forward_ms": round(forward_ms, 2), f"{name}_backward_ms": round(backward_ms, 2),
                    f"{name}_forward_gflops": round(flops / forward_ms / 1e6, 1),
                    f"{name}_backward_gflops": round(backward_flops / backward_ms / 1e6, 1)}
        rows.append(row)
        c_in, pixels = c_out, pixels // 2 if pool else pixels
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="pipeline epochs after a warm-up epoch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating epochs of eager and fast")
    parser.add_argument("--steps", type=int, default=16, help="steps of the loss agreement")
    parser.add_argument("--n-stars", type=int, default=300)
    parser.add_argument("--max-samples", type=int, default=1024, help="training spectra used")
    parser.add_argument("--layers", action="store_true", help="add the per-layer table (CPU)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = best_device()
    on_gpu = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        data, source = project_or_synthetic(args.n_stars, Path(tmp))
        positions = np.arange(len(data))[: args.max_samples]
        data.flux_scale = None  # the demo profile's per-spectrum flux unit
        rates = {"pipeline": pipeline(data, positions, args, Path(tmp) / "ck"),
                 "pipeline_eager_engine": pipeline(data, positions, args, Path(tmp) / "ck_eager", engine="eager")}
        if on_gpu:
            rates["pipeline_amp"] = pipeline(data, positions, args, Path(tmp) / "ck_amp", amp=True)
        batches = [tuple(t.to(device) for t in data.batch(positions[i:i + args.batch]))
                   for i in range(0, len(positions) - args.batch + 1, args.batch)]
        rates |= alternating_rates(batches, device, args.rounds)
        agreement = loss_agreement(batches, device, args.steps)
        rates["eager_bf16"] = bf16_rate(batches if on_gpu else batches[:2], device)
    prefix = "gpu" if on_gpu else "cpu"
    result = {"bench": "train", "source": source, "n_samples": int(len(positions)), "batch": args.batch,
              "epochs": args.epochs, "rounds": args.rounds, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "device": torch.cuda.get_device_name() if on_gpu else "cpu",
              **{f"{k}_samples_per_s": round(v, 1) for k, v in rates.items()},
              f"{prefix}_fast_over_eager": round(rates["fast"] / rates["eager"], 3),
              "pipeline_over_eager": round(rates["pipeline"] / rates["eager"], 3),
              "pipeline_eager_engine_over_eager": round(rates["pipeline_eager_engine"] / rates["eager"], 3),
              "bf16_over_fp32": round(rates["eager_bf16"] / rates["eager"], 3),
              "loss_agreement": agreement}
    if on_gpu:
        result["gpu_pipeline_over_eager"] = result["pipeline_over_eager"]
        result["pipeline_amp_over_pipeline"] = round(rates["pipeline_amp"] / rates["pipeline"], 3)
    if args.layers and not on_gpu:
        result["layers"] = layer_table(args.batch)
    emit(result, args.out)


if __name__ == "__main__":
    main()
