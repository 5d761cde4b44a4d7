"""Prefect flow ``ingest``: a tree of apStar files into a spectra store, its shards on Dask.

    python -m flows.ingest SRC_DIR [STORE] [params.yaml]

STORE defaults to ``paths.store``. The coordinator (this flow's process) scans the tree, holds
the store's lock and writes the index after each shard, in shard order; each shard of
``ingest.segment_rows`` files is a task on prefect-dask's DaskTaskRunner (params.yaml ``dask``)
that reads its files and writes its own segment (:func:`apogeenet.ingest.ingest_shard`), so no
spectrum travels between processes. A worker killed mid-shard leaves at most a segment that no
index row points at; Dask runs the shard again, and a rerun of the flow reads only what the
index lacks.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, task

from apogeenet.cluster import preserved_environment
from apogeenet.config import load_params
from apogeenet.ingest import ingest, ingest_shard
from apogeenet.tracking import StageResult
from flows import publish_result
from flows.predict import dask_params, dask_runner


@task(name="ingest-shard", retries=2, retry_delay_seconds=2)
def shard_task(store_dir: str, segment: int, jobs: list) -> list:
    return ingest_shard(store_dir, segment, jobs)


@flow(name="ingest-shards")
def shards_flow(src_dir: str, store: str, segment_rows: int) -> dict:
    report = ingest(src_dir, store, segment_rows=segment_rows,
                    submit=lambda function, *args: shard_task.submit(*args))
    return {"scanned": report.scanned, "ingested": report.ingested, "updated": report.updated,
            "unchanged": report.unchanged, "removed": report.removed, "rejected": report.rejected,
            "seconds": round(report.seconds, 2)}


@flow(name="ingest")
def ingest_flow(src_dir: str, store: str = "", params_path: str = "params.yaml",
                cluster: str = "", workers: int = 0) -> dict:
    """Ingest a tree of apStar files into a spectra store, shards on Dask.

    Args:
        src_dir: Tree of apStar files (searched recursively); the deployment's default is
            params.yaml paths.spectra.
        store: Spectra store directory (created if missing); empty: params.yaml paths.store.
        params_path: The params.yaml to use, relative to the project directory.
        cluster: local, slurm or a scheduler address; empty: params.yaml dask.cluster.
        workers: Local worker processes or the most Slurm jobs; 0: params.yaml dask.workers.
    """
    cfg = load_params(params_path)
    dask = dask_params(params_path, cluster or None, workers or None)
    store = store or str(cfg.paths.store)
    with preserved_environment():  # the Dask nannies' OMP_NUM_THREADS=1 stays in their workers
        counts = shards_flow.with_options(task_runner=dask_runner(dask))(str(src_dir), store, cfg.ingest.segment_rows)
    publish_result(StageResult("ingest", counts, {}, (
        f"{counts['scanned']} files: {counts['ingested']} ingested, {counts['updated']} updated, "
        f"{counts['unchanged']} unchanged, {counts['removed']} removed, {counts['rejected']} rejected "
        f"in {counts['seconds']} s -> {Path(store)}")))
    return counts


if __name__ == "__main__":
    ingest_flow(*sys.argv[1:4])
