"""Input and output: apStar files (§2.1), catalog tables and the SDSS Science Archive Server."""

from apogeenet.io import apstar
from apogeenet.io.apstar import *  # noqa: F403  (the apStar API is the package's I/O surface)

__all__ = list(apstar.__all__)
