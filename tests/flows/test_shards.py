"""Batch inference in shards (apogeenet.shards): reruns compute only what is missing, a killed
Dask worker loses nothing, and a Slurm array task needs only the plan and its number."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from commands import run
from factories import tracking_in

from apogeenet.cluster import preserved_environment
from apogeenet.config import load_params
from apogeenet.shards import ShardPlan, ShardsMissing, merge_parts
from apogeenet.pipeline import predict
from factories import settings


def _catalog_bytes(out_dir):
    return {name: (out_dir / name).read_bytes() for name in ("catalog.parquet", "catalog.csv")}


@pytest.fixture(scope="module")
def one_process(trained, tmp_path_factory):
    """The catalog of one uninterrupted run in one process."""
    root, _ = trained
    out = tmp_path_factory.mktemp("one-process")
    predict.run(settings(load_params(root / "params.yaml"), model=str(root / "calibrated" / "model.pt"), out_dir=out, track=False))
    return _catalog_bytes(out)


def test_a_rerun_computes_only_the_missing_shards(trained, one_process, tmp_path):
    root, _ = trained
    cfg, model = load_params(root / "params.yaml"), str(root / "calibrated" / "model.pt")
    plan = predict.plan(settings(cfg, model=model, out_dir=tmp_path))
    assert plan.n_shards > 2 and plan.missing() == list(range(plan.n_shards))
    with pytest.raises(ShardsMissing, match=f"{plan.n_shards} of {plan.n_shards} shards have no part"):
        merge_parts(plan)
    result = run("predict-shard", plan.file, 1, "--threads", "1", cwd=root)  # as a Slurm array task runs it
    assert result.returncode == 0 and "shard 1:" in result.stdout, result.stderr
    assert run("predict-shard", plan.file, plan.n_shards, cwd=root).stderr.count("\n") == 1  # one line
    kept = plan.part(1).stat().st_mtime_ns
    predict.run(settings(cfg, model=model, out_dir=tmp_path, track=False))  # the rest, then the merge
    assert plan.part(1).stat().st_mtime_ns == kept and plan.missing() == []
    assert _catalog_bytes(tmp_path) == one_process
    other = cfg.with_overrides({"predict.draws": 6})  # another setting is another run
    assert predict.plan(settings(other, model=model, out_dir=tmp_path)).file != plan.file


@contextmanager
def killing_a_worker_when(pattern: str, where: Path):
    """A LocalCluster of 2 worker processes; one is SIGKILLed as soon as ``where`` holds a file
    matching ``pattern``. Yields (cluster, killed pids)."""
    from distributed import Client, LocalCluster

    killed: list[int] = []
    with preserved_environment(), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())

        def watch():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not killed:
                if list(where.glob(pattern)):
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        yield cluster, killed
        watcher.join(timeout=1)
    assert killed, f"no {pattern} appeared: the worker was never killed"


@pytest.mark.slow
def test_a_killed_dask_worker_loses_nothing(trained, one_process, prefect_harness, tmp_path):
    """SIGKILL one of two worker processes as soon as the first part exists: Dask reruns its
    shard elsewhere and the catalog is the one-process catalog, byte for byte."""
    import yaml

    from flows.predict import predict_flow

    root, _ = trained
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["paths"]["catalog"] = str(tmp_path / "catalog")
    params["predict"] |= {"shard_size": 16}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with killing_a_worker_when(".parts/*/part-*.parquet", tmp_path / "catalog") as (cluster, _), tracking_in(root):
        predict_flow(str(root / "calibrated" / "model.pt"), params_path=str(tmp_path / "params.yaml"),
                     cluster=cluster.scheduler_address)
    plan = ShardPlan.read(next((tmp_path / "catalog" / ".parts").glob("*/plan.json")))
    assert plan.missing() == [] and plan.n_shards > 4
    assert _catalog_bytes(tmp_path / "catalog") == one_process


def _store_bytes(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from apogeenet.synth.survey import make_survey

    root = tmp_path_factory.mktemp("tree")
    make_survey(root, 60, seed=3, fractions={"giant": 0.5, "dwarf": 0.2, "mdwarf": 0.2, "yso": 0.1})
    (root / "apStar" / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    return root / "apStar"


def test_ingest_on_dask_is_the_one_process_store(tree, prefect_harness, tmp_path):
    """The ingest flow's shards on a LocalCluster of 2: the same index, rejects and segments,
    byte for byte, as the ingest of one process."""
    import yaml

    from apogeenet.ingest import ingest
    from flows.ingest import ingest_flow

    ingest(tree, tmp_path / "one", workers=1, segment_rows=8)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {"segment_rows": 8}}))
    counts = ingest_flow(str(tree), str(tmp_path / "dask"), params_path=str(tmp_path / "params.yaml"), workers=2)
    assert counts["ingested"] == 60 and counts["rejected"] == 1
    assert _store_bytes(tmp_path / "dask") == _store_bytes(tmp_path / "one")


@pytest.mark.slow
def test_a_worker_killed_during_ingest_leaves_a_consistent_store(tree, tmp_path):
    """SIGKILL a worker as soon as the first segment exists: Dask reads the lost shard again and
    the store is the one-process store, byte for byte, and reads back whole."""
    from distributed import Client

    from apogeenet.store import SpectraStore
    from apogeenet.ingest import ingest

    ingest(tree, tmp_path / "one", workers=1, segment_rows=4)
    with killing_a_worker_when("segments/*.h5", tmp_path / "dask") as (cluster, _), Client(cluster) as client:
        report = ingest(tree, tmp_path / "dask", segment_rows=4,
                        submit=lambda function, *args: client.submit(function, *args, pure=False))
    assert report.ingested == 60
    assert _store_bytes(tmp_path / "dask") == _store_bytes(tmp_path / "one")
    assert len(SpectraStore(tmp_path / "dask").read(range(60)).flux) == 60
