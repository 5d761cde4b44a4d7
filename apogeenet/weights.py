"""Files of plain weights (``.pt``): written atomically and byte-reproducibly, read without
running code. A model file a user receives is data: ``torch.load(weights_only=True)`` refuses
anything but tensors and plain Python values."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from apogeenet.atomic import atomic_path
from apogeenet.errors import UserFacingError

__all__ = ["MODEL_FILE", "ModelFileError", "load_weights", "save_weights"]

MODEL_FILE = "model.pt"
"""The name of a model file in a stage's output directory, a plan's parts and a registered model."""


class ModelFileError(UserFacingError):
    """A file that is not an apogeenet model (or checkpoint) of plain weights."""


def save_weights(obj: dict, path: str | Path) -> Path:
    """``torch.save`` atomically (a kill leaves the previous file) and byte-reproducibly: saved
    through a file object, so the archive's inner name is torch's fixed one, not the temporary
    file's (which holds a process id)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
    return path


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Load a ``.pt`` file that holds only tensors and plain Python values.

    ``torch.load(weights_only=True)`` unpickles no code: a crafted file that carries a payload
    (or any object other than tensors, numbers, strings, lists and dicts) is refused with
    :class:`ModelFileError`, never executed.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch comments on foreign pickle protocols: we refuse anyway
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location=device, weights_only=True)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip archive), ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a file of plain weights, refused without running it "
                             f"({first[:160]})") from None
    if not isinstance(saved, dict):
        raise ModelFileError(f"{path}: not an apogeenet model or checkpoint (a {type(saved).__name__})")
    return saved
