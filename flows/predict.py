"""Prefect flow ``predict``: batch inference from the registry (§3.5-3.6, §4) on Dask.

    python -m flows.predict [MODEL] [STORE] [params.yaml]

MODEL defaults to ``predict.model`` (``models:/apogeenet@champion``), STORE to ``paths.store``.
The flow plans the shards (:mod:`apogeenet.shards`), runs those without a part as tasks of a
subflow on prefect-dask's ``DaskTaskRunner`` — a LocalCluster of worker processes by default,
a running scheduler (``cluster: tcp://host:8786``) or Slurm jobs (``cluster: slurm``,
dask-jobqueue), as params.yaml ``dask`` says — and writes the Table 4 catalog, the §4 products
and plots under ``paths.catalog``, logged to MLflow (experiment ``predict``). A task carries a
plan file and a shard number, never a model or arrays; a killed worker's shard is run again by
Dask, and a rerun of the flow computes only the shards that have no part.
"""

from __future__ import annotations

import sys

from prefect import flow, task
from prefect_dask import DaskTaskRunner

from apogeenet.cluster import cluster_spec, preserved_environment
from apogeenet.config import DaskParams, Params, load_params
from apogeenet.pipeline import predict
from apogeenet.shards import ShardPlan, predict_shard
from apogeenet.tracking import StageResult
from flows import publish, publish_result


def dask_runner(cfg: DaskParams) -> DaskTaskRunner:
    """The task runner the params ask for (params.yaml ``dask``; :mod:`apogeenet.cluster`)."""
    spec = cluster_spec(cfg)
    if spec.address:
        return DaskTaskRunner(address=spec.address)
    return DaskTaskRunner(cluster_class=spec.cluster_class, cluster_kwargs=spec.kwargs, adapt_kwargs=spec.adapt)


def dask_params(params_path: str | None, cluster: str | None, workers: int | None) -> DaskParams:
    """params.yaml ``dask`` with a flow run's ``cluster``/``workers`` when given (validated)."""
    overrides = {k: v for k, v in {"dask.cluster": cluster, "dask.workers": workers}.items() if v is not None}
    return load_params(params_path).with_overrides(overrides).dask


def predict_params(params_path: str | None, model: str | None, store: str | None) -> Params:
    """params.yaml with a flow run's ``model`` and ``store`` when given (validated)."""
    overrides = {k: v for k, v in {"predict.model": model, "paths.store": store}.items() if v is not None}
    return load_params(params_path).with_overrides(overrides)


@task(name="plan")
def plan_task(params_path: str | None, model: str | None, store: str | None) -> str:
    return str(predict.plan(predict_params(params_path, model, store)).file)


@task(name="shard", retries=2, retry_delay_seconds=2)
def shard_task(plan_file: str, number: int, torch_threads: int) -> str:
    return str(predict_shard(plan_file, number, torch_threads=torch_threads))


@flow(name="predict-shards")
def shards_flow(plan_file: str, numbers: list[int], torch_threads: int) -> list[str]:
    """The shards of a plan, one task each, on the flow's task runner."""
    futures = shard_task.map(plan_file, numbers, torch_threads)
    return [f.result() for f in futures]


@task(name="catalog", retries=1, retry_delay_seconds=5)
def catalog_task(params_path: str | None, model: str | None, store: str | None) -> StageResult:
    """The stage itself: it finds the plan and its parts again and merges them into the catalog."""
    return predict.run(predict_params(params_path, model, store))


@flow(name="predict")
def predict_flow(model: str = "", store: str = "", params_path: str = "params.yaml",
                 cluster: str = "", workers: int = 0) -> dict:
    """Batch inference with σ and the Table 4 catalog, shards on Dask.

    Args:
        model: Registered alias or version (models:/apogeenet@champion, models:/apogeenet/3), a
            runs:/ URI or a model.pt; empty: params.yaml predict.model.
        store: Spectra store directory; empty: params.yaml paths.store.
        params_path: The params.yaml to use, relative to the project directory.
        cluster: local (worker processes here), slurm (dask-jobqueue) or a scheduler address
            tcp://host:8786; empty: params.yaml dask.cluster.
        workers: Local worker processes or the most Slurm jobs; 0: params.yaml dask.workers.
    """
    model, store, cluster, workers = model or None, store or None, cluster or None, workers or None
    dask = dask_params(params_path, cluster, workers)
    plan_file = plan_task(params_path, model, store)
    missing = ShardPlan.read(plan_file).missing()
    publish(f"{len(missing)} shards to run on Dask ({dask.cluster}, {dask.workers} workers, "
            f"{dask.threads()} torch threads each); plan {plan_file}")
    if missing:
        with preserved_environment():  # the Dask nannies' OMP_NUM_THREADS=1 stays in their workers
            shards_flow.with_options(task_runner=dask_runner(dask))(plan_file, missing, dask.threads())
    result = catalog_task(params_path, model, store)
    publish_result(result)
    return result.metrics


if __name__ == "__main__":
    predict_flow(*sys.argv[1:4])
