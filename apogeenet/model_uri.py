"""Open a model the way users name one: a ``model.pt`` path or an MLflow model URI."""

from __future__ import annotations

from pathlib import Path

from apogeenet.serving import Predictor
from apogeenet.weights import ModelFileError

__all__ = ["open_model"]


def open_model(spec: str) -> Predictor:
    """The :class:`~apogeenet.serving.Predictor` of a ``model.pt`` path or an MLflow model URI
    (``models:/apogeenet@champion``, ``runs:/…``; read through :mod:`apogeenet.registry`, which
    loads only the weights file). A bad name or file raises :class:`ModelFileError`."""
    if "://" in spec or spec.startswith(("models:/", "runs:/")):
        import mlflow

        from apogeenet.registry import load_predictor

        try:
            return load_predictor(spec)
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{spec}: cannot load this model ({reason}); `apogeenet models` lists "
                                 "the registered versions") from None
    if not Path(spec).exists():
        raise ModelFileError(f"{spec}: no such model file (give a model.pt or an MLflow URI such as "
                             "models:/apogeenet@champion)")
    return Predictor.load(spec)
