"""The one base of the errors a user can cause (bad input, a stage that cannot run yet).

Each module keeps its own error class (``ApStarError``, ``StoreError``, ``StageError`` …) derived
from :class:`UserFacingError`, so the command line turns every one of them into one line and exit
code 2 by catching this class alone, without importing the modules that define them.
"""

from __future__ import annotations

__all__ = ["UserFacingError"]


class UserFacingError(ValueError):
    """A mistake in the input or a missing prerequisite; the message says what to do."""
