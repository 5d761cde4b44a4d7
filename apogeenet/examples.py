"""The real apStar files shipped with the package (see ``data/examples/PROVENANCE.md``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["example_files"]


def example_files() -> list[Path]:
    """Two real DR13 apStar files: one with three visits, one with a single visit (1-D arrays)."""
    root = files("apogeenet") / "data" / "examples"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".fits"))
