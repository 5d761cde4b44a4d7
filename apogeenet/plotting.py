"""Shared matplotlib plumbing for the paper's figures (headless backend, one way to save)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SOURCE_COLOURS", "pyplot", "save"]

SOURCE_COLOURS = {"PAYNE": "tab:blue", "MSTAR": "tab:red", "YSO": "tab:green", "TABLE": "tab:purple"}
"""One colour per label source, in every figure."""


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write and close ``fig``; returns the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return Path(path)
