"""Prefect flow ``label``: build the labels (§2.2-2.4), then the Great Expectations gates.

    python -m flows.label [params.yaml]

A failing gate fails the flow run with the summary of the failing expectations.
"""

from __future__ import annotations

import sys

from prefect import flow, task

from apogeenet.config import load_params
from apogeenet.pipeline import label, validate
from apogeenet.tracking import StageResult
from flows import publish_result


class ValidationFailed(RuntimeError):
    """A Great Expectations suite failed; the message lists the failing expectations."""


@task(name="build-labels")
def build_labels_task(params_path: str | None, track: bool) -> StageResult:
    result = label.run(load_params(params_path).with_overrides({"tracking.enabled": track}))
    publish_result(result)
    return result


@task(name="validate")
def validate_task(params_path: str | None, track: bool) -> StageResult:
    result = validate.run(load_params(params_path).with_overrides({"tracking.enabled": track}))
    publish_result(result)
    if not result.passed:
        raise ValidationFailed("\n".join(line for line in result.report.splitlines() if "FAILED" in line))
    return result


@flow(name="label")
def label_flow(params_path: str = "params.yaml", track: bool = True, gates: bool = True) -> dict:
    """Labels, Table 1 and the YSO network (logged to MLflow), then the data gates.

    Args:
        params_path: The params.yaml to use, relative to the project directory.
        track: Log to MLflow (default true).
        gates: Run the Great Expectations gates after labelling (default true).
    """
    metrics = dict(build_labels_task(params_path, track).metrics)
    if gates:
        metrics["validation"] = validate_task(params_path, track).metrics
    return metrics


if __name__ == "__main__":
    label_flow(*sys.argv[1:2])
