"""The one base of the errors a user can cause (bad input, a stage that cannot run yet).

Each module keeps its own error class (``ApStarError``, ``StoreError``, ``StageError`` …) derived
from :class:`UserFacingError`, so the command line turns every one of them into one line and exit
code 2 by catching this class alone, without importing the modules that define them. Only errors
raised on purpose about the user's input derive from it: it is not a ``ValueError``, and no layer
turns other exceptions into it, so a genuine bug (a numpy error, a ``KeyError`` deep in the code)
keeps its traceback and exit code 1.
"""

from __future__ import annotations

__all__ = ["InputError", "UserFacingError"]


class UserFacingError(Exception):
    """A mistake in the input or a missing prerequisite; the message says what to do."""


class InputError(UserFacingError):
    """A table, file or setting the user gave lacks what the work needs (a column, a label
    source, a truth table); the message names it."""
