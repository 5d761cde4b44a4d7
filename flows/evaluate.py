"""Prefect flow ``evaluate``: Tables 2/3, the quality bar and the adaptation check of a model.

    python -m flows.evaluate [MODEL] [params.yaml]

MODEL defaults to the registry's champion (``models:/apogeenet@champion``); the baseline of the
adaptation check is the trained ``model.pt`` when present. Results go to MLflow (experiment
``evaluate``) and to ``<paths.evaluation>/flow`` (the DVC stage's own files stay untouched).
"""

from __future__ import annotations

import sys

from prefect import flow, task

from apogeenet.config import load_params
from flows import publish
from apogeenet.stages import evaluate_stage
from apogeenet.tracking import StageResult


@task(name="evaluate")
def evaluate_task(params_path: str | None, model: str, baseline: str | None) -> StageResult:
    cfg = load_params(params_path)
    return evaluate_stage(cfg, model=model, baseline=baseline, out_dir=cfg.paths.evaluation / "flow")


@flow(name="evaluate")
def evaluate_flow(model: str = "models:/apogeenet@champion", baseline: str | None = None,
                  params_path: str | None = None) -> dict:
    result = evaluate_task(params_path, model, baseline)
    publish(result.report)
    return result.metrics


if __name__ == "__main__":
    evaluate_flow(*(sys.argv[1:2] or ["models:/apogeenet@champion"]), params_path=(sys.argv[2:3] or [None])[0])
