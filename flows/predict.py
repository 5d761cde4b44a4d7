"""Prefect flow ``predict``: batch inference from the registry (§3.5-3.6, §4).

    python -m flows.predict [MODEL] [STORE] [params.yaml]

MODEL defaults to ``predict.model`` (``models:/apogeenet@champion``), STORE to ``paths.store``.
Writes the Table 4 catalog, the §4 products and plots under ``paths.catalog`` and logs them to
MLflow (experiment ``predict``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, task

from apogeenet.config import load_params
from flows import publish
from apogeenet.stages import predict_stage
from apogeenet.tracking import StageResult


@task(name="predict", retries=1, retry_delay_seconds=5)
def predict_task(params_path: str | None, model: str | None, store: str | None) -> StageResult:
    return predict_stage(load_params(params_path), model=model, store=Path(store) if store else None)


@flow(name="predict")
def predict_flow(model: str | None = None, store: str | None = None, params_path: str | None = None) -> dict:
    result = predict_task(params_path, model, store)
    publish(result.report)
    return result.metrics


if __name__ == "__main__":
    args = sys.argv[1:] + [None] * 3
    predict_flow(args[0], args[1], args[2])
