"""Where a synthetic survey's files go (see :mod:`apogeenet.synth.survey` for what they hold):
``params.yaml`` names each one (``paths``); a bare directory gets the default names below."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = ["ALLSTAR_FILE", "MEMBERS_FILE", "PAYNE_FILE", "SPECTRA_DIR", "TRUTH_FILE", "SurveyFiles"]

ALLSTAR_FILE = "allStar-synth.fits"
PAYNE_FILE = "payne-synth.fits"
MEMBERS_FILE = "members-kounkel2019-synth.fits"
TRUTH_FILE = "truth-synth.fits"
SPECTRA_DIR = "apStar"


@dataclass(frozen=True)
class SurveyFiles:
    """The four catalogs and the apStar tree of one survey."""

    allstar: Path
    payne: Path
    members: Path
    truth: Path
    spectra: Path

    @classmethod
    def of(cls, paths) -> SurveyFiles:
        """The files a project's ``paths`` (:class:`~apogeenet.config.PathsParams`) name; its
        truth table must be named (a synthetic survey always has one)."""
        return cls(*(getattr(paths, field.name) for field in fields(cls)))

    @classmethod
    def under(cls, root: str | os.PathLike) -> SurveyFiles:
        """The default layout inside one directory."""
        root = Path(root)
        return cls(root / ALLSTAR_FILE, root / PAYNE_FILE, root / MEMBERS_FILE, root / TRUTH_FILE,
                   root / SPECTRA_DIR)
