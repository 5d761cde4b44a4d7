"""Cost of the label stage's heavy part, the YSO photometric network (§2.4), as JSON.

    python bench/labels.py [--n-train 42000] [--epochs 5] [--out bench/results/labels.json]

Prints isochrone stars/s generated, training samples/s (forward + backward + step, batch of the
default params), and the held-out log Teff and log g RMS after those epochs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from benchio import emit

from apogeenet.config import YSOParams
from apogeenet.isochrones import shipped_parsec
from apogeenet.labels.yso import synthetic_photometry, train_yso_net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=42000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = YSOParams()
    iso = shipped_parsec()
    t0 = time.perf_counter()
    x, y = synthetic_photometry(iso, args.n_train, seed=0)
    photometry_s = time.perf_counter() - t0
    x_test, y_test = synthetic_photometry(iso, 5000, seed=1)
    t0 = time.perf_counter()
    model, _ = train_yso_net(x, y, epochs=args.epochs, batch_size=cfg.batch_size,
                             learning_rate=cfg.learning_rate, seed=0)
    train_s = time.perf_counter() - t0
    pred = model.predict(x_test)
    emit({
        "n_train": args.n_train, "epochs": args.epochs, "batch_size": cfg.batch_size,
        "torch_threads": torch.get_num_threads(),
        "isochrone_stars_per_s": round(args.n_train / photometry_s),
        "train_samples_per_s": round(0.9 * args.n_train * args.epochs / train_s),
        "heldout_log_teff_rms": round(float(np.sqrt(np.mean((pred["log_teff"] - y_test["log_teff"]) ** 2))), 4),
        "heldout_logg_rms": round(float(np.sqrt(np.mean((pred["logg"] - y_test["logg"]) ** 2))), 4),
    }, args.out)


if __name__ == "__main__":
    main()
