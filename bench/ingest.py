"""Ingest and batch-read throughput of the spectra store.

Prints JSON: files/s ingested with 1 and 2 processes and with the shards on a Dask LocalCluster of
2 worker processes (each writes its own segments; the cluster's start not counted) for N
synthetic-survey files (2000 by default), and
spectra/s reading random batches of 128 rows from the store versus opening the same spectra
from their FITS files, all measured in the same run on this machine.

    python bench/ingest.py [--n-files 2000] [--out bench/results/ingest.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from benchio import emit

from apogeenet.io import read_apstar
from apogeenet.cluster import dask_client
from apogeenet.config import DaskParams, SynthParams
from apogeenet.store import SpectraStore
from apogeenet.ingest import ingest
from apogeenet.synth.survey import make_survey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-files", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--store-batches", type=int, default=200)
    parser.add_argument("--fits-batches", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="apogeenet-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_survey(tmp / "survey", args.n_files, seed=0, fractions=SynthParams().fractions)
        (tmp / "survey" / "apStar").rename(tmp / "tree")
        made = time.perf_counter() - t0
        result: dict[str, object] = {
            "n_files": args.n_files,
            "tree_bytes": sum(p.stat().st_size for p in (tmp / "tree").rglob("*.fits")),
            "make_tree_s": round(made, 2),
            "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
        }
        for workers in (1, 2):
            report = ingest(tmp / "tree", tmp / f"store{workers}", workers=workers)
            assert report.ingested == args.n_files, report
            result[f"ingest_files_per_s_{workers}proc"] = round(args.n_files / report.seconds, 1)
        with dask_client(DaskParams(cluster="local", workers=2)) as client:
            report = ingest(tmp / "tree", tmp / "store_dask",
                            submit=lambda function, *a: client.submit(function, *a, pure=False))
        assert report.ingested == args.n_files, report
        result["ingest_files_per_s_dask_2workers"] = round(args.n_files / report.seconds, 1)
        result["dask_over_1proc"] = round(result["ingest_files_per_s_dask_2workers"]
                                          / result["ingest_files_per_s_1proc"], 2)
        again = ingest(tmp / "tree", tmp / "store2", workers=2)
        result["reingest_unchanged_s"] = round(again.seconds, 3)

        store = SpectraStore(tmp / "store2")
        rng = np.random.default_rng(1)
        store.read(rng.choice(len(store), args.batch))  # open the memory maps
        t0 = time.perf_counter()
        for _ in range(args.store_batches):
            batch = store.read(rng.choice(len(store), args.batch, replace=False))
        store_rate = args.store_batches * args.batch / (time.perf_counter() - t0)

        files = [tmp / "tree" / f for f in store.index["file"]]
        t0 = time.perf_counter()
        for _ in range(args.fits_batches):
            rows = rng.choice(len(store), args.batch, replace=False)
            stars = [read_apstar(files[r]) for r in rows]
            fits_batch = np.stack([s.combined_flux for s in stars])
        fits_rate = args.fits_batches * args.batch / (time.perf_counter() - t0)
        np.testing.assert_array_equal(fits_batch, store.read(rows).flux)
        assert batch.flux.shape == (args.batch, 8575)

        result.update({
            "batch_size": args.batch,
            "store_read_spectra_per_s": round(store_rate),
            "fits_read_spectra_per_s": round(fits_rate),
            "store_over_fits_speedup": round(store_rate / fits_rate, 1),
        })
    emit(result, args.out)


if __name__ == "__main__":
    main()
