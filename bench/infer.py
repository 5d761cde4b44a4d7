"""Inference speed (§3.5) as JSON: single-pass, 100-draw Monte-Carlo and delta-method spectra/s.

    python bench/infer.py [--model derived/model/model.pt] [--n-mc 32] [--n-delta 256] [--draws 100]
                          [--repeats 3] [--n-agree 0] [--out bench/results/infer.json]

Measured in one run after one untimed pass of each path, interleaved (baseline, fast, baseline,
...) and reported as medians, since CPU timings on a shared machine drift:
* baseline: a plain float32 eager loop at batch 128 — single pass over the spectra, and for the
  Monte-Carlo the draws one after another (draw k of every spectrum, 128 at a time);
* fast path: what ``apogeenet predict`` runs — :func:`apogeenet.uncertainty.mc_predict` (the
  draws made on the device, chunk by chunk, network calls of ``predict.forward_batch``) and
  :meth:`Predictor.predict`; plus bfloat16 autocast on one chunk for reference;
* delta method: :func:`apogeenet.uncertainty.delta_predict` with ``predict.delta_points``, over
  ``--n-delta`` spectra (it runs ~10× faster than the Monte Carlo: over the Monte Carlo's 32 it
  would be timed over a fifth of a second, where one hiccup of the machine moves it by 30 %).
``mc_speedup`` is the fast Monte Carlo over the eager draw loop, ``delta_speedup`` the delta method
over the fast Monte Carlo. Their σ are compared star by star over the test split (``--n-agree``
stars of it; 0: all): the ratio's median and 5-95 % range and ``delta_sigma_within_1.25_fraction``
(stars whose three σ are all within a factor 1.25), for the configured points and for one point.
Agreement: the largest difference between the fast path's and the float32 baseline's single-pass
predictions over the test split (all spectra of the store when there are no labels), and between
their Monte-Carlo σ on the same draws.
On CUDA (used when present) also the largest difference to float32 on the CPU. Uses the
project's model and store (params.yaml) when present, else a random network and/or a small
synthetic survey.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchio import bench_model, emit

from apogeenet.config import load_params
from apogeenet.model import prepare_flux, scale_flux
from apogeenet.serving import Predictor
from apogeenet.store import SpectraStore
from apogeenet.ingest import ingest
from apogeenet.dataset import best_device
from apogeenet.noise import normal_noise, star_streams
from apogeenet.uncertainty import delta_predict, mc_predict, perturbation_sigma, seed_keys


def project_inputs(model: Path | None, n_synthetic: int, tmp: Path) -> tuple[Predictor, SpectraStore, np.ndarray, str]:
    """The model (``--model``, else the project's adapted or trained one, else a random network)
    and spectra (the project's store, its test split when labelled, else a synthetic survey)."""
    cfg = load_params()
    predictor, model_name = bench_model(model)
    store_dir = cfg.paths.store
    if (store_dir / "index.parquet").exists():
        store = SpectraStore(store_dir)
        labels = cfg.paths.labels / "labels.parquet"
        rows = np.arange(len(store))
        if labels.exists():
            import pandas as pd

            test = set(pd.read_parquet(labels).query("SPLIT == 'test'")["APOGEE_ID"])
            rows = np.flatnonzero(store.index["apogee_id"].isin(test).to_numpy())
        return predictor, store, rows, f"{model_name} on {store_dir}"
    from apogeenet.synth.survey import make_survey

    make_survey(tmp / "survey", n_synthetic, seed=5, fractions=cfg.synth.fractions)
    ingest(tmp / "survey" / "apStar", tmp / "store", workers=os.cpu_count() or 1)
    store = SpectraStore(tmp / "store")
    return predictor, store, np.arange(len(store)), f"{model_name} on a {n_synthetic}-star synthetic survey"


def _synchronised(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def eager_single(predictor: Predictor, flux: np.ndarray, batch: int = 128) -> np.ndarray:
    model = predictor.first.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(flux), batch):
            x = torch.from_numpy(scale_flux(flux[start:start + batch], predictor.flux_scale)).to(device)
            out.append(model(x).double().cpu().numpy())
    return np.vstack(out) * predictor.table1.std + predictor.table1.mean


def eager_mc(predictor: Predictor, flux: np.ndarray, error: np.ndarray, keys: np.ndarray, draws: int,
             seed: int, batch: int = 128) -> np.ndarray:
    """σ from draws run one after another (the same noise as mc_predict, made star by star on the
    CPU), float32 eager, batch 128."""
    prepared, sigma = prepare_flux(flux, error), perturbation_sigma(flux, error, load_params().predict.error_cap)
    streams = star_streams(seed, keys)
    noise = np.stack([normal_noise(streams[i:i + 1].repeat(draws), torch.arange(draws), flux.shape[1]).numpy()
                      for i in range(len(keys))])
    preds = np.stack([eager_single(predictor, prepared + noise[:, k] * sigma, batch) for k in range(draws)], 1)
    return preds.std(axis=1, ddof=1)


def delta_agreement(predictor: Predictor, flux: np.ndarray, error: np.ndarray, keys: np.ndarray, draws: int,
                    p) -> dict:
    """σ_delta / σ_MC star by star: per parameter the median and 5-95 % range, and the fraction of
    stars whose three ratios all lie within a factor 1.25; for the configured points and for one."""
    mc = mc_predict(predictor, flux, error, keys, p.model_copy(update={"draws": draws}))
    out = {"n_stars": int(len(keys))}
    for points in sorted({1, p.delta_points}):
        delta = p.model_copy(update={"uncertainty": "delta", "delta_points": points})
        ratio = delta_predict(predictor, flux, error, keys, delta).sigma / mc.sigma
        inside = (ratio >= 1 / 1.25) & (ratio <= 1.25)
        out[points] = {"median": np.round(np.median(ratio, axis=0), 3).tolist(),
                       "p5": np.round(np.percentile(ratio, 5, axis=0), 3).tolist(),
                       "p95": np.round(np.percentile(ratio, 95, axis=0), 3).tolist(),
                       "within_1.25_per_parameter": np.round(inside.mean(axis=0), 3).tolist(),
                       "within_1.25_fraction": round(float(inside.all(axis=1).mean()), 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--n-mc", type=int, default=32, help="spectra in the Monte-Carlo timing")
    parser.add_argument("--n-delta", type=int, default=256, help="spectra in the delta-method timing")
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-synthetic", type=int, default=64, help="survey size when the project has no store")
    parser.add_argument("--n-agree", type=int, default=0, help="test stars for the delta/MC agreement (0: all)")
    parser.add_argument("--max-batch", type=int, help="network inputs per Monte-Carlo block [params: predict.max_batch]")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = load_params()
    overrides = {"predict.draws": args.draws, "predict.max_draws": max(args.draws, cfg.predict.max_draws),
                 **({"predict.max_batch": args.max_batch} if args.max_batch else {})}
    p = cfg.with_overrides(overrides).predict
    delta = p.model_copy(update={"uncertainty": "delta"})
    with tempfile.TemporaryDirectory() as tmp:
        predictor, store, rows, source = project_inputs(args.model, args.n_synthetic, Path(tmp))
        batch = store.read(rows)
        flux, error = batch.flux, batch.error
        prepared = prepare_flux(flux, error)
        cpu_reference = eager_single(predictor, prepared)  # float32 on the CPU, before moving
        device = best_device()
        predictor.to(device)
        keys = seed_keys(store.index["apogee_id"].to_numpy()[rows])
        mc_rows = slice(0, min(args.n_mc, len(rows)))
        delta_rows = slice(0, min(args.n_delta, len(rows)))
        few, two = slice(0, min(128, len(rows))), slice(0, min(2, len(rows)))  # an untimed pass of each path
        eager_single(predictor, prepared[few])                            # first: its oneDNN primitives made
        predictor.predict(prepared[few], batch_size=p.forward_batch)
        mc_predict(predictor, flux[two], error[two], keys[two], p)
        delta_predict(predictor, flux[few], error[few], keys[few], delta)
        timings: dict[str, list[float]] = {k: [] for k in ("single_eager", "single_fast", "mc_eager", "mc_fast",
                                                             "delta")}
        for _ in range(args.repeats):
            t = _synchronised(device)
            reference = eager_single(predictor, prepared)
            timings["single_eager"].append(len(rows) / (time.perf_counter() - t))
            t = _synchronised(device)
            fast = predictor.predict(prepared, batch_size=p.forward_batch).to_numpy()
            timings["single_fast"].append(len(rows) / (time.perf_counter() - t))
            t = _synchronised(device)
            sigma_eager = eager_mc(predictor, flux[mc_rows], error[mc_rows], keys[mc_rows], args.draws, p.seed)
            timings["mc_eager"].append(len(keys[mc_rows]) / (time.perf_counter() - t))
            t = _synchronised(device)
            mc = mc_predict(predictor, flux[mc_rows], error[mc_rows], keys[mc_rows], p)
            timings["mc_fast"].append(len(keys[mc_rows]) / (time.perf_counter() - t))
            t = _synchronised(device)
            delta_predict(predictor, flux[delta_rows], error[delta_rows], keys[delta_rows], delta)
            timings["delta"].append(len(keys[delta_rows]) / (time.perf_counter() - t))
        agree = slice(0, args.n_agree or len(rows))
        agreement = delta_agreement(predictor, flux[agree], error[agree], keys[agree], args.draws, p)
        chunk = p.forward_batch if device.type == "cpu" else min(len(prepared), 256)
        x = torch.from_numpy(scale_flux(prepared[:chunk], predictor.flux_scale)).to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            predictor.first(x)
            t = _synchronised(device)
            bf16 = predictor.first(x).float().cpu().numpy()
            bf16_rate = len(x) / (time.perf_counter() - t)
        bf16_phys = bf16 * predictor.table1.std + predictor.table1.mean
    med = {k: float(np.median(v)) for k, v in timings.items()}
    diff = np.abs(fast - reference).max(axis=0)
    emit({"bench": "infer", "source": source, "n_single": int(len(rows)), "n_mc": int(len(keys[mc_rows])),
          "n_delta": int(len(keys[delta_rows])),
          "draws": args.draws, "repeats": args.repeats, "threads": torch.get_num_threads(),
          "cpus": os.cpu_count(), "forward_batch": p.forward_batch, "max_batch": p.max_batch,
          "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
          "single_pass_spectra_per_s": {"eager_fp32_batch128": round(med["single_eager"], 1),
                                        "fast": round(med["single_fast"], 1),
                                        "speedup": round(med["single_fast"] / med["single_eager"], 2)},
          "mc_spectra_per_s": {"eager_fp32_draws_one_after_another": round(med["mc_eager"], 2),
                               "fast": round(med["mc_fast"], 2),
                               "speedup": round(med["mc_fast"] / med["mc_eager"], 2)},
          "mc_speedup": round(med["mc_fast"] / med["mc_eager"], 2),
          "delta_spectra_per_s": round(med["delta"], 2), "delta_points": p.delta_points,
          "delta_speedup": round(med["delta"] / med["mc_fast"], 2),
          "delta_sigma_within_1.25_fraction": agreement[p.delta_points]["within_1.25_fraction"],
          "delta_vs_mc_sigma": agreement,
          "all_timings": {k: [round(v, 2) for v in vals] for k, vals in timings.items()},
          "max_abs_diff_fast_vs_fp32": {"teff_K": float(diff[0]), "logg_dex": float(diff[1]),
                                        "fe_h_dex": float(diff[2])},
          "max_abs_diff_device_vs_cpu_fp32": [float(v) for v in np.abs(fast - cpu_reference).max(axis=0)],
          "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None,
          "max_abs_diff_mc_sigma": [float(v) for v in np.abs(mc.sigma - sigma_eager).max(axis=0)],
          "bf16_autocast_chunk_spectra_per_s": round(bf16_rate, 1),
          "bf16_max_abs_diff_vs_fp32": [float(v) for v in np.abs(bf16_phys - reference[:len(x)]).max(axis=0)]},
         args.out)


if __name__ == "__main__":
    main()
