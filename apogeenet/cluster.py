"""Where shards run at survey scale: a Dask cluster as params.yaml ``dask`` describes it.

``local`` is a LocalCluster of worker processes on this machine (nothing to start), ``slurm`` a
dask-jobqueue SLURMCluster (one job per worker, scaled between 1 and ``workers`` jobs), anything
else the address of a running scheduler. The same description serves the Prefect flows
(prefect-dask's DaskTaskRunner, :func:`cluster_spec`) and the commands (:func:`dask_client`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from apogeenet.config import DaskParams
from apogeenet.errors import UserFacingError

__all__ = ["ClusterSpec", "cluster_spec", "dask_client", "preserved_environment"]

CONNECT_TIMEOUT_S = 20
"""How long to try a scheduler address before saying it cannot be reached."""


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster to start (``cluster_class`` with ``kwargs``, adapted by ``adapt``) or to join
    (``address``)."""

    cluster_class: str | None = None
    kwargs: dict = field(default_factory=dict)
    adapt: dict | None = None
    address: str | None = None


def cluster_spec(cfg: DaskParams) -> ClusterSpec:
    if cfg.cluster == "local":
        return ClusterSpec("distributed.LocalCluster", {"n_workers": cfg.workers, "threads_per_worker": 1,
                                                        "processes": True, "dashboard_address": None})
    if cfg.cluster == "slurm":
        s = cfg.slurm
        return ClusterSpec("dask_jobqueue.SLURMCluster",
                           {"queue": s.queue, "account": s.account, "cores": s.cores, "processes": 1,
                            "memory": s.memory, "walltime": s.walltime,
                            "job_extra_directives": s.job_extra_directives,
                            "job_script_prologue": s.job_script_prologue, "log_directory": s.log_directory},
                           adapt={"minimum": 1, "maximum": cfg.workers})
    return ClusterSpec(address=cfg.cluster)


@contextmanager
def preserved_environment() -> Iterator[None]:
    """This process's environment as it was before the block. A Dask nanny writes its
    ``pre-spawn-environ`` (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, …) into the environment of the
    process that starts a LocalCluster, which every later child process (a training run, a DVC
    stage) would inherit, one thread each."""
    import os

    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


@contextmanager
def dask_client(cfg: DaskParams) -> Iterator:
    """A ``distributed.Client`` on the cluster ``cfg`` describes (started here and closed after,
    unless it is a running scheduler's address)."""
    import importlib

    from distributed import Client

    spec = cluster_spec(cfg)
    if spec.address:
        try:
            client = Client(spec.address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise UserFacingError(f"dask.cluster: cannot reach the Dask scheduler at {spec.address} "
                                  f"({type(exc).__name__}); start it or set dask.cluster: local") from None
        with client:
            yield client
        return
    module, name = spec.cluster_class.rsplit(".", 1)
    with preserved_environment(), getattr(importlib.import_module(module), name)(**spec.kwargs) as cluster:
        if spec.adapt:
            cluster.adapt(**spec.adapt)
        with Client(cluster) as client:
            yield client
