"""File names of a survey directory (see :mod:`apogeenet.synth.survey` for the layout): the
stages read a survey by these names without importing the machinery that makes one."""

from __future__ import annotations

__all__ = ["ALLSTAR_FILE", "MEMBERS_FILE", "PAYNE_FILE", "SPECTRA_DIR", "TRUTH_FILE"]

ALLSTAR_FILE = "allStar-synth.fits"
PAYNE_FILE = "payne-synth.fits"
MEMBERS_FILE = "members-kounkel2019-synth.fits"
TRUTH_FILE = "truth-synth.fits"
SPECTRA_DIR = "apStar"
