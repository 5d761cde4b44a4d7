"""Prefect flow ``train`` (§3.3-3.4) with the deployments ``pretrain`` and ``adapt``.

    python -m flows.train [pretrain|adapt] [params.yaml]     # one local run, no server needed
    prefect deployment run train/adapt                       # through a served deployment (README)

``pretrain`` trains APOGEE Net on the label catalog; ``adapt`` adapts the registry's champion
(or the model named by ``init_model``: a model.pt or an MLflow URI). Both then calibrate the new
model (stage ``calibrate``) and register it, and log everything to MLflow. Training tasks retry
once: a retry resumes from the last checkpoint.
"""

from __future__ import annotations

import sys
from typing import Literal

from prefect import flow, task

from apogeenet.config import load_params
from apogeenet.pipeline import adapt, calibrate, train
from apogeenet.tracking import StageResult
from apogeenet.weights import MODEL_FILE
from flows import publish_result


@task(name="pretrain", retries=1, retry_delay_seconds=5)
def pretrain_task(params_path: str | None, init_model: str | None) -> StageResult:
    return train.run(load_params(params_path).with_overrides({"train.init_model": init_model}))


@task(name="adapt", retries=1, retry_delay_seconds=5)
def adapt_task(params_path: str | None, init_model: str | None) -> StageResult:
    return adapt.run(load_params(params_path).with_overrides({"adapt.init_model": init_model}))


@task(name="calibrate", retries=1, retry_delay_seconds=5)
def calibrate_task(params_path: str | None, mode: str) -> StageResult:
    cfg = load_params(params_path)
    trained = cfg.paths.model if mode == "pretrain" else cfg.paths.adapted
    return calibrate.run(cfg.with_overrides({"calibration.model": str(trained / MODEL_FILE)}))


@flow(name="train")
def train_flow(mode: Literal["pretrain", "adapt"] = "pretrain", params_path: str = "params.yaml",
               init_model: str = "") -> dict:
    """Pretrain (§3.3) or adapt (§3.4) APOGEE Net, calibrate it, log to MLflow and register it.

    Args:
        mode: pretrain (train on the label catalog) or adapt (the 5 %-Payne adaptation).
        params_path: The params.yaml to use, relative to the project directory.
        init_model: Starting weights (model.pt or MLflow URI); empty: none for pretrain,
            params.yaml adapt.init_model (the registry's champion) for adapt.
    """
    trained = (pretrain_task if mode == "pretrain" else adapt_task)(params_path, init_model or None)
    publish_result(trained)
    calibrated = calibrate_task(params_path, mode)
    publish_result(calibrated)
    return {**trained.metrics, **calibrated.metrics}


if __name__ == "__main__":
    train_flow(*sys.argv[1:3])
