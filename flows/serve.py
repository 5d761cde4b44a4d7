"""Serve the deployments against a Prefect server (README, "Prefect deployments").

    prefect server start --host 127.0.0.1 --port 4200 --analytics-off   # terminal 1; UI at http://127.0.0.1:4200
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve [params.yaml]  # terminal 2
    PREFECT_API_URL=http://127.0.0.1:4200/api prefect deployment run train/adapt --watch

Deployments: ``train/pretrain``, ``train/adapt``, ``evaluate/evaluate``, ``predict/predict``,
``ingest/ingest`` (the tree of ``paths.spectra`` into ``paths.store``, shards on Dask) and
``label/label``;
runs execute in this process, in its working directory (the project root), until SIGTERM/Ctrl-C.
"""

from __future__ import annotations

import sys

from prefect import serve

from apogeenet.config import load_params
from flows.evaluate import evaluate_flow
from flows.ingest import ingest_flow
from flows.label import label_flow
from flows.predict import predict_flow
from flows.train import train_flow


def deployments(params_path: str | None = None) -> list:
    common = {"params_path": params_path} if params_path else {}
    return [
        train_flow.to_deployment("pretrain", parameters={"mode": "pretrain", **common}),
        train_flow.to_deployment("adapt", parameters={"mode": "adapt", **common}),
        evaluate_flow.to_deployment("evaluate", parameters=common),
        label_flow.to_deployment("label", parameters=common),
        predict_flow.to_deployment("predict", parameters=common),
        ingest_flow.to_deployment("ingest", parameters={"src_dir": str(load_params(params_path).paths.spectra),
                                                        **common}),
    ]


if __name__ == "__main__":
    serve(*deployments(sys.argv[1] if len(sys.argv) > 1 else None))
