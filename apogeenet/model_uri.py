"""Open a model the way users name one: a ``model.pt`` path or an MLflow model URI."""

from __future__ import annotations

from pathlib import Path

from apogeenet.serving import Predictor
from apogeenet.weights import ModelFileError

__all__ = ["is_uri", "open_model", "require_registry"]


def is_uri(spec: str) -> bool:
    """Whether ``spec`` names an MLflow model (``models:/…``, ``runs:/…``) rather than a file."""
    return "://" in spec or spec.startswith(("models:/", "runs:/"))


def require_registry(spec: str) -> None:
    """A model URI needs a tracking store: without ``$MLFLOW_TRACKING_URI`` and without the local
    one, say what to do instead (:class:`ModelFileError`), before anything is made here."""
    import os

    from apogeenet.mlflow_store import LOCAL_STORE

    if is_uri(spec) and not os.environ.get("MLFLOW_TRACKING_URI") and not Path(LOCAL_STORE).exists():
        raise ModelFileError(f"{spec}: no model registry here ({LOCAL_STORE} does not exist in {Path.cwd()}); "
                             "give a model file (--model path/to/model.pt), or run where `dvc repro` trained "
                             "one (a workspace from `apogeenet init`)")


def open_model(spec: str) -> Predictor:
    """The :class:`~apogeenet.serving.Predictor` of a ``model.pt`` path or an MLflow model URI
    (``models:/apogeenet@champion``, ``runs:/…``; read through :mod:`apogeenet.registry`, which
    loads only the weights file). A bad name or file raises :class:`ModelFileError`."""
    if is_uri(spec):
        import mlflow

        from apogeenet.registry import load_predictor

        require_registry(spec)
        try:
            return load_predictor(spec)
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{spec}: cannot load this model ({reason}); `apogeenet models` lists "
                                 "the registered versions, or give a model file (--model path/to/model.pt)") from None
    if not Path(spec).exists():
        raise ModelFileError(f"{spec}: no such model file (give a model.pt or an MLflow URI such as "
                             "models:/apogeenet@champion)")
    return Predictor.load(spec)
