"""Training throughput of APOGEE Net (§3.3) as JSON: samples/s (forward + backward + step).

    python bench/train.py [--batch 128] [--epochs 2] [--n-stars 300] [--out bench/results/train.json]

Measured in one run on the same model and batch size:
* ``pipeline``: :func:`apogeenet.train.train_model` streaming batches from a spectra store
  (memory-mapped reads, bad pixels zeroed, flux unit) with its checkpointing;
* ``eager``: a plain float32 eager loop over the same batches already in memory — the
  compute-only reference; ``pipeline / eager`` is the cost of the data path and bookkeeping;
* ``eager_bf16``: the same loop under bfloat16 autocast, to show what it does on this device;
* on CUDA also ``pipeline_amp``: the training loop with ``amp`` (bfloat16 autocast) on.

The device is CUDA when present (as in training), else the CPU. Uses the project's store and
labels (params.yaml) when they exist, else a small synthetic survey.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from benchio import emit

from apogeenet.labels.catalog import Normalisation, combine_labels
from apogeenet.model import ApogeeNet
from apogeenet.store import SpectraStore
from apogeenet.ingest import ingest
from apogeenet.config import TrainProfile
from apogeenet.dataset import LabelledSpectra, best_device
from apogeenet.train import train_model


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


def eager(batches, device: torch.device, *, bf16: bool, repeats: int) -> float:
    torch.manual_seed(0)
    model = ApogeeNet(3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    batches = [(flux.to(device), target.to(device)) for flux, target in batches]
    seen, started = 0, time.perf_counter()
    for _ in range(repeats):
        for flux, target in batches:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.mse_loss(model(flux).float(), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            seen += len(flux)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def pipeline(data, positions, args, checkpoints: Path, *, amp: bool) -> float:
    """Mean samples/s of :func:`train_model` over its epochs (the first one includes warm-up)."""
    dev = positions[:8]  # a token dev set: the bench measures training steps
    cfg = TrainProfile(optimizer="adam", batch_size=args.batch, max_epochs=args.epochs, patience=args.epochs,
                      grad_clip=1.0, amp=amp)
    result = train_model(data, positions, dev, cfg, checkpoints)
    return float(np.mean([h["samples_per_s"] for h in result.history]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-stars", type=int, default=300)
    parser.add_argument("--max-samples", type=int, default=1024, help="training spectra used")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = best_device()
    with tempfile.TemporaryDirectory() as tmp:
        data, source = project_or_synthetic(args.n_stars, Path(tmp))
        positions = np.arange(len(data))[: args.max_samples]
        data.flux_scale = None  # the demo profile's per-spectrum flux unit
        rates = {"pipeline": pipeline(data, positions, args, Path(tmp) / "ck", amp=False)}
        if device.type == "cuda":
            rates["pipeline_amp"] = pipeline(data, positions, args, Path(tmp) / "ck_amp", amp=True)
        batches = [data.batch(positions[i:i + args.batch]) for i in range(0, len(positions), args.batch)]
        eager(batches[:1], device, bf16=False, repeats=1)  # warm-up (CUDA kernels, allocator)
        rates["eager"] = eager(batches, device, bf16=False, repeats=args.epochs)
        on_gpu = device.type == "cuda"  # on a CPU without bfloat16 units two batches show enough
        rates["eager_bf16"] = eager(batches if on_gpu else batches[:2], device, bf16=True,
                                    repeats=args.epochs if on_gpu else 1)
    result = {"bench": "train", "source": source, "n_samples": int(len(positions)), "batch": args.batch,
              "epochs": args.epochs, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              **{f"{k}_samples_per_s": round(v, 1) for k, v in rates.items()},
              "pipeline_over_eager": round(rates["pipeline"] / rates["eager"], 3),
              "bf16_over_fp32": round(rates["eager_bf16"] / rates["eager"], 3)}
    if "pipeline_amp" in rates:
        result["pipeline_amp_over_pipeline"] = round(rates["pipeline_amp"] / rates["pipeline"], 3)
    emit(result, args.out)


if __name__ == "__main__":
    main()
