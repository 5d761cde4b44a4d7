"""Prefect flow ``evaluate``: the baselines (ridge, The Cannon), then Tables 2/3, the quality bar,
the adaptation check and the models side by side.

    python -m flows.evaluate [MODEL] [params.yaml]

MODEL defaults to the registry's champion (``models:/apogeenet@champion``); the baseline of the
adaptation check is the trained ``model.pt`` when present. Results go to MLflow (experiment
``evaluate``: one run per model) and to ``<paths.baselines>/flow`` and ``<paths.evaluation>/flow``
(the DVC stages' own files stay untouched).
"""

from __future__ import annotations

import sys

from prefect import flow, task

from apogeenet.config import Params, load_params
from apogeenet.mlflow_store import CHAMPION_URI
from apogeenet.pipeline import baselines, evaluate
from apogeenet.tracking import StageResult
from flows import publish_result


def _flow_paths(params_path: str | None) -> Params:
    cfg = load_params(params_path)
    return cfg.with_overrides({"paths.baselines": str(cfg.paths.baselines / "flow"),
                               "paths.evaluation": str(cfg.paths.evaluation / "flow")})


@task(name="baselines")
def baselines_task(params_path: str | None) -> StageResult:
    result = baselines.run(_flow_paths(params_path))
    publish_result(result)
    return result


@task(name="evaluate")
def evaluate_task(params_path: str | None, model: str, baseline: str | None) -> StageResult:
    return evaluate.run(_flow_paths(params_path).with_overrides({"evaluate.model": model, "evaluate.baseline": baseline}))


@flow(name="evaluate")
def evaluate_flow(model: str = CHAMPION_URI, baseline: str = "",
                  params_path: str = "params.yaml", baselines: bool = True) -> dict:
    """Fit the baselines, then evaluate the model beside them (Tables 2/3, quality bar).

    Args:
        model: The model to evaluate; default models:/apogeenet@champion.
        baseline: The model of the adaptation check; empty: the trained model.pt.
        params_path: The params.yaml to use, relative to the project directory.
        baselines: Fit ridge and The Cannon first (default true).
    """
    if baselines:
        baselines_task(params_path)
    result = evaluate_task(params_path, model, baseline or None)
    publish_result(result)
    return result.metrics


if __name__ == "__main__":
    evaluate_flow(*(sys.argv[1:2] or [CHAMPION_URI]), **({"params_path": sys.argv[2]} if len(sys.argv) > 2 else {}))
