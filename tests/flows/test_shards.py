"""Batch inference in shards (apogeenet.shards): reruns compute only what is missing, a killed
Dask worker loses nothing, and a Slurm array task needs only the plan and its number."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from commands import run
from factories import tracking_in

from apogeenet.config import load_params
from apogeenet.shards import ShardPlan, ShardsMissing, merge_parts
from apogeenet.stages import predict_plan, predict_stage


def _catalog_bytes(out_dir):
    return {name: (out_dir / name).read_bytes() for name in ("catalog.parquet", "catalog.csv")}


@pytest.fixture(scope="module")
def one_process(trained, tmp_path_factory):
    """The catalog of one uninterrupted run in one process."""
    root, _ = trained
    out = tmp_path_factory.mktemp("one-process")
    predict_stage(load_params(root / "params.yaml"), model=str(root / "model" / "model.pt"), out_dir=out, track=False)
    return _catalog_bytes(out)


def test_a_rerun_computes_only_the_missing_shards(trained, one_process, tmp_path):
    root, _ = trained
    cfg, model = load_params(root / "params.yaml"), str(root / "model" / "model.pt")
    plan = ShardPlan.read(predict_plan(cfg, model=model, out_dir=tmp_path)[1])
    assert plan.n_shards > 2 and plan.missing() == list(range(plan.n_shards))
    with pytest.raises(ShardsMissing, match=f"{plan.n_shards} of {plan.n_shards} shards have no part"):
        merge_parts(plan)
    result = run("predict-shard", plan.file, 1, "--threads", "1", cwd=root)  # as a Slurm array task runs it
    assert result.returncode == 0 and "shard 1:" in result.stdout, result.stderr
    assert run("predict-shard", plan.file, plan.n_shards, cwd=root).stderr.count("\n") == 1  # one line
    kept = plan.part(1).stat().st_mtime_ns
    predict_stage(cfg, model=model, out_dir=tmp_path, track=False)  # the rest, then the merge
    assert plan.part(1).stat().st_mtime_ns == kept and plan.missing() == []
    assert _catalog_bytes(tmp_path) == one_process
    other = cfg.with_overrides({"predict.draws": 6})  # another setting is another run
    assert predict_plan(other, model=model, out_dir=tmp_path)[1] != plan.file


@pytest.mark.slow
def test_a_killed_dask_worker_loses_nothing(trained, one_process, prefect_harness, tmp_path):
    """SIGKILL one of two worker processes as soon as the first part exists: Dask reruns its
    shard elsewhere and the catalog is the one-process catalog, byte for byte."""
    import yaml
    from distributed import Client, LocalCluster

    from flows.predict import predict_flow

    root, _ = trained
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["paths"]["catalog"] = str(tmp_path / "catalog")
    params["predict"] |= {"shard_size": 16}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    killed = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())

        def kill_when_a_part_exists():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not killed:
                if list((tmp_path / "catalog").glob(".parts/*/part-*.parquet")):
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                time.sleep(0.05)

        watcher = threading.Thread(target=kill_when_a_part_exists, daemon=True)
        watcher.start()
        with tracking_in(root):
            predict_flow(str(root / "model" / "model.pt"), params_path=str(tmp_path / "params.yaml"),
                         cluster=cluster.scheduler_address)
        watcher.join(timeout=1)
    assert killed, "no part appeared: the worker was never killed"
    plan = ShardPlan.read(next((tmp_path / "catalog" / ".parts").glob("*/plan.json")))
    assert plan.missing() == [] and plan.n_shards > 4
    assert _catalog_bytes(tmp_path / "catalog") == one_process
