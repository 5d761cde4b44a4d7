"""Prefect flows: thin orchestration around the stages of :mod:`apogeenet.pipeline` (no arithmetic here)."""

from __future__ import annotations

import logging
import re


def publish(text: str) -> None:
    """A line for the flow run's log, or the ``apogeenet.flows`` logger when a task runs outside a
    flow (``task.fn()``)."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger("apogeenet.flows")
    logger.info(text)


def artifact_key(stage: str) -> str:
    """The Prefect artifact key of a stage's report (lower-case letters, digits and dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{stage}-report".lower())


def publish_result(result) -> None:
    """A stage's report into the run's log and, inside a flow or task run, as the Markdown
    artifact ``<stage>-report`` (Tables 2/3, the quality bar, the baselines table, the catalog
    summary — whatever the stage reports), headed by the link to its MLflow run."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    publish(result.report)
    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    link = result.mlflow_link()
    head = (f"MLflow run [{result.run_id}]({link}) (experiment {result.experiment_id}; `mlflow ui` at "
            "http://127.0.0.1:5000)\n\n" if link else "")
    create_markdown_artifact(key=artifact_key(result.stage), markdown=f"{head}```text\n{result.report}\n```\n",
                             description=f"apogeenet {result.stage}: {'passed' if result.passed else 'FAILED'}")
