"""Prefect flows: thin orchestration around ``apogeenet.stages`` (no arithmetic here)."""

from __future__ import annotations

import logging


def publish(text: str) -> None:
    """A stage's report into the flow run's log, or the ``apogeenet.flows`` logger when a task
    runs outside a flow (``task.fn()``)."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger("apogeenet.flows")
    logger.info(text)
