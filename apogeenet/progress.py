"""One progress bar for long work (downloads, ingest), drawn on stderr with rich."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """Advance-only handle; a disabled bar accepts the same calls and draws nothing."""

    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)


@contextmanager
def progress_bar(total: int, description: str, *, enabled: bool = True) -> Iterator[ProgressBar]:
    if not enabled or total == 0:
        yield ProgressBar(None, None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield ProgressBar(progress, progress.add_task(description, total=total))
