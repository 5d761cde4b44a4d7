"""Prefect flow ``label``: build the labels (§2.2-2.4), then the Great Expectations gates.

    python -m flows.label [params.yaml]

A failing gate fails the flow run with the summary of the failing expectations.
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger, task

from apogeenet.config import load_params
from apogeenet.stages import label_stage, validate_stage


class ValidationFailed(RuntimeError):
    """A Great Expectations suite failed; the message lists the failing expectations."""


@task(name="build-labels")
def build_labels_task(params_path: str | None, track: bool) -> dict:
    return label_stage(load_params(params_path), track=track)


@task(name="validate")
def validate_task(params_path: str | None) -> dict:
    report = validate_stage(load_params(params_path))
    logger = get_run_logger()
    for line in report.summary_lines():
        logger.info(line)
    if not report.success:
        raise ValidationFailed("\n".join(line for line in report.summary_lines() if "FAILED" in line))
    return report.suites


@flow(name="label")
def label_flow(params_path: str | None = None, track: bool = True, gates: bool = True) -> dict:
    """Labels, Table 1 and the YSO network (logged to MLflow), then the data gates."""
    metrics = build_labels_task(params_path, track)
    if gates:
        metrics["validation"] = validate_task(params_path)
    return metrics


if __name__ == "__main__":
    label_flow(sys.argv[1] if len(sys.argv) > 1 else None)
