"""Survey-scale inference as JSON: spectra/s and peak memory per worker of the shard path.

    python bench/scale.py [--sizes 10000 100000] [--workers 1 2] [--mc-subset 2000]
                          [--delta-subset 0] [--model derived/model/model.pt] [--work /tmp/apogeenet-scale]
                          [--out bench/results/scale.json]

For each size a store is written straight from the synthetic survey's physics (no FITS files: a
bench helper, not a user path; made once under ``--work`` and reused): the emulator's noiseless
spectrum of each star, its noise at its SNR, bad pixels where the emulator has none. Then, for
each worker count, the shards of ``apogeenet predict`` (:func:`apogeenet.shards.predict_shard`)
run on a fresh Dask LocalCluster of that many worker processes (torch threads = cores /
workers): the single pass (``uncertainty: none``) and the delta method over all of the store
(or ``--delta-subset`` spectra of it), the 100-draw Monte Carlo over ``--mc-subset`` spectra.
Reported: spectra/s, the wall time, the peak RSS of each worker process (sampled every 0.1 s) and,
from the rates, the projected time for DR17 (657 000 spectra) on this machine. Memory is flat
when the peak RSS per worker is the same at every size. Per-GPU projections come from
``bench/results/infer_gpu.json`` when a GPU run left one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from benchio import bench_model, emit

from apogeenet.cluster import preserved_environment
from apogeenet.config import load_params
from apogeenet.io.apstar import APSTAR_NPIX
from apogeenet.serving import Predictor
from apogeenet.shards import ShardPlan, plan_predict, predict_shard
from apogeenet.store import INDEX_COLUMNS, INDEX_FILE
from apogeenet.ingest import write_segment

DR17_SPECTRA = 657_000
SEGMENT_ROWS = 4096
BAD_ERROR = 1e10


def make_store(path: Path, n: int, seed: int = 11) -> Path:
    """A store of ``n`` synthetic spectra written segment by segment (memory: one segment)."""
    from apogeenet.synth.populations import draw_survey
    from apogeenet.synth.survey import SpectrumSynthesizer

    if (path / INDEX_FILE).exists() and len(pd.read_parquet(path / INDEX_FILE)) == n:
        return path
    cfg = load_params()
    synth = SpectrumSynthesizer(seed)
    pix = synth.emulator.pixel_index
    rows = []
    for segment, start in enumerate(range(0, n, SEGMENT_ROWS)):
        stars = draw_survey(seed * 1000 + segment, min(SEGMENT_ROWS, n - start), cfg.synth.fractions).reset_index(drop=True)
        truth = synth.noiseless(stars)
        rng = np.random.default_rng([seed, segment])
        typical = np.median(truth, axis=1, keepdims=True)
        sigma = typical / stars["snr_target"].to_numpy()[:, None] * np.sqrt(np.clip(truth / typical, 1e-4, None))
        flux = np.zeros((len(stars), APSTAR_NPIX), np.float32)
        error = np.full((len(stars), APSTAR_NPIX), BAD_ERROR, np.float32)
        flux[:, pix] = truth + rng.standard_normal(truth.shape) * sigma
        error[:, pix] = sigma
        mask = np.where(error < BAD_ERROR, 0, 1).astype(np.int32)
        write_segment(path, segment, (flux, error, mask))
        for offset in range(len(stars)):
            number = start + offset
            rows.append({"apogee_id": f"2M{number:08d}+SCALE", "telescope": "apo25m", "field": "scale",
                         "location_id": 0, "nvisits": 1, "snr": float(stars["snr_target"][offset]),
                         "ra": float(stars["ra"][offset]), "dec": float(stars["dec"][offset]),
                         "n_good_pixels": int(pix.size), "file": f"scale/{number}.fits", "sha256": "",
                         "segment": segment, "offset": offset})
    pd.DataFrame(rows, columns=INDEX_COLUMNS).to_parquet(path / INDEX_FILE, index=False)
    return path


class RssSampler:
    """The peak resident memory of each of some processes, sampled every 0.1 s from outside."""

    def __init__(self, pids: list[int]) -> None:
        import threading

        import psutil

        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak = [0] * len(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for k, process in enumerate(self.processes):
                try:
                    self.peak[k] = max(self.peak[k], process.memory_info().rss)
                except Exception:  # a worker that ended
                    pass

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join()
        return [round(v / 2**20) for v in self.peak]


def run_shards(predictor: Predictor, store: Path, out: Path, mode: str, draws: int, workers: int) -> dict:
    """One plan over the whole store, its shards on a fresh LocalCluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    cfg = load_params().with_overrides({"predict.uncertainty": mode})
    plan = plan_predict(predictor, store, out, cfg.predict, draws)
    for k in range(plan.n_shards):
        plan.part(k).unlink(missing_ok=True)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with preserved_environment(), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        sampler = RssSampler(list(client.run(os.getpid).values()))
        started = time.perf_counter()
        futures = client.map(predict_shard, [str(plan.file)] * plan.n_shards, range(plan.n_shards),
                             torch_threads=threads, pure=False)
        client.gather(futures)
        seconds = time.perf_counter() - started
        rss = sampler.stop()
    ShardPlan.read(plan.file)  # still readable: nothing was torn
    return {"spectra": plan.n_rows, "shards": plan.n_shards, "seconds": round(seconds, 1),
            "spectra_per_s": round(plan.n_rows / seconds, 2), "torch_threads": threads,
            "peak_rss_mb_per_worker": [round(v) for v in rss],
            "dr17_hours": round(DR17_SPECTRA / (plan.n_rows / seconds) / 3600, 2)}


def subset_store(store: Path, n: int) -> Path:
    """The first ``n`` rows of a store as a store of their own (same segment files, linked)."""
    sub = store.parent / f"{store.name}-first{n}"
    index = pd.read_parquet(store / INDEX_FILE).iloc[:n]
    (sub / "segments").mkdir(parents=True, exist_ok=True)
    for segment in index["segment"].unique():
        link = sub / "segments" / f"{int(segment):06d}.h5"
        if not link.exists():
            link.symlink_to((store / "segments" / link.name).resolve())
    index.to_parquet(sub / INDEX_FILE, index=False)
    return sub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--mc-subset", type=int, default=2000)
    parser.add_argument("--delta-subset", type=int, default=0, help="spectra for the delta method (0: all)")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/apogeenet-scale"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = load_params()
    predictor, model_name = bench_model(args.model)
    results: dict = {"bench": "scale", "model": model_name, "cpus": os.cpu_count(), "draws": cfg.predict.draws,
                     "delta_points": cfg.predict.delta_points, "sizes": {}}
    for n in args.sizes:
        started = time.perf_counter()
        store = make_store(args.work / f"store-{n}", n)
        size: dict = {"store_seconds": round(time.perf_counter() - started, 1),
                      "store_gb": round(sum(f.stat().st_size for f in store.rglob("*.h5")) / 1e9, 2)}
        delta_store = subset_store(store, args.delta_subset) if 0 < args.delta_subset < n else store
        mc_store = subset_store(store, min(args.mc_subset, n))
        for workers in args.workers:
            out = args.work / f"out-{n}-{workers}"
            size[f"workers_{workers}"] = {
                "single_pass": run_shards(predictor, store, out, "none", cfg.predict.draws, workers),
                "delta": run_shards(predictor, delta_store, out, "delta", cfg.predict.draws, workers),
                "monte_carlo": run_shards(predictor, mc_store, out, "monte_carlo", cfg.predict.draws, workers)}
            print(json.dumps({n: size}), flush=True)
        results["sizes"][n] = size
    gpu = Path("bench/results/infer_gpu.json")
    if gpu.exists():
        g = json.loads(gpu.read_text())
        results["dr17_hours_per_gpu"] = {
            "device": g.get("device"),
            "single_pass": round(DR17_SPECTRA / g["single_pass_spectra_per_s"]["fast"] / 3600, 3),
            "monte_carlo": round(DR17_SPECTRA / g["mc_spectra_per_s"]["fast"] / 3600, 3),
            "delta": round(DR17_SPECTRA / g["delta_spectra_per_s"] / 3600, 3) if "delta_spectra_per_s" in g else None}
    emit(results, args.out)


if __name__ == "__main__":
    main()
