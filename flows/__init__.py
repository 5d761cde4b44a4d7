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


def verdict(result) -> str:
    """One line in words: the stage ran and passed its checks, or ran and did not (which ones,
    when the report names them) — a completed flow run whose quality bar is not met is not a crash."""
    if result.passed:
        return f"{result.stage}: done, every check passed"
    failed = next((line.strip() for line in result.report.splitlines() if line.startswith("checks failed")), "")
    return (f"{result.stage}: done, but not every check passed{f' ({failed})' if failed else ''} — "
            "the results are logged; read the tables below before using this model")


def report_markdown(report: str) -> str:
    """A stage's text report as Markdown that renders: its tables as tables (a blank line around
    each), every other line a paragraph of its own."""
    lines: list[str] = []
    previous = ""
    for line in report.splitlines():
        table = line.lstrip().startswith("|")
        if lines and (not table or not previous.lstrip().startswith("|")):
            lines.append("")
        lines.append(line)
        previous = line
    return "\n".join(lines)


def publish_result(result) -> None:
    """A stage's report into the run's log and, inside a flow or task run, as the Markdown
    artifact ``<stage>-report`` (Tables 2/3, the quality bar, the baselines table, the catalog
    summary — whatever the stage reports, as tables), led by a verdict in words and the link to
    its MLflow run (each model's run for the baselines), opened in MLflow's model-training view."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    publish(result.report)
    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    runs = [r for r in (result, *result.runs) if r.run_id]
    links = " · ".join(f"[{r.stage}]({r.mlflow_link()})" for r in runs)
    head = f"**{verdict(result)}**\n\nMLflow run{'s' * (len(runs) > 1)}: {links} (`apogeenet ui` serves them)\n\n" \
        if runs else f"**{verdict(result)}**\n\n"
    create_markdown_artifact(key=artifact_key(result.stage), markdown=head + report_markdown(result.report) + "\n",
                             description=f"apogeenet {result.stage}: "
                                         f"{'passed' if result.passed else 'completed, checks not met'}")
