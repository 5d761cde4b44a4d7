"""MLflow model logging and the registry (edge module: imported only by :mod:`apogeenet.tracking`
and the CLI).

The logged model is a pyfunc whose input is raw apStar flux (n, 8575) float32 — the combined
spectrum, bad pixels 0 — and whose output is a table of TEFF [K], LOGG and FE_H in physical
units. It is logged as a model from code (:mod:`apogeenet.mlflow_model`) with the weights and
Table 1 as the artifact ``model.pt``, so ``mlflow.pyfunc.load_model("models:/apogeenet@champion")``
unpickles nothing; :func:`load_predictor` reads only that weights file. Versions are registered
under ``apogeenet`` with their dev loss as a tag from the moment they exist; alias ``candidate``
always points at the newest, ``champion`` moves only when the new model's dev loss beats the
current champion's, both measured on the same (current) dev set, and that comparison and the move
happen under a lock beside the tracking store, so two registrations at once cannot both win.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from apogeenet.labels.catalog import LABEL_COLUMNS
from apogeenet.serving import Predictor
from apogeenet.mlflow_store import MODEL_NAME, tracking_lock
from apogeenet.weights import MODEL_FILE, ModelFileError

__all__ = ["MODEL_NAME", "ApogeeNetPyfunc", "load_predictor", "log_and_register", "registered_versions",
           "resolve_version", "version_tags"]



class ApogeeNetPyfunc(mlflow.pyfunc.PythonModel):
    """Raw flux (n, 8575) -> DataFrame TEFF, LOGG, FE_H in physical units."""

    def load_context(self, context) -> None:
        self.predictor = Predictor.load(context.artifacts["model"])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        if isinstance(model_input, dict):  # a named tensor input arrives as {"flux": array}
            model_input = model_input["flux"]
        flux = model_input.to_numpy() if isinstance(model_input, pd.DataFrame) else np.asarray(model_input)
        flux = np.nan_to_num(np.atleast_2d(flux).astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        return self.predictor.predict(flux)


def _signature() -> ModelSignature:
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 8575), "flux")]),
                          outputs=Schema([ColSpec("double", c) for c in LABEL_COLUMNS]))


def load_predictor(uri: str) -> Predictor:
    """The :class:`Predictor` behind a registered or logged model URI (e.g.
    ``models:/apogeenet@champion``): only its weights file is read (no code from the store runs)."""
    from apogeenet.mlflow_store import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri.rstrip("/"), dst_path=tmp))
        weights = local / "artifacts" / MODEL_FILE
        if not weights.is_file():
            raise mlflow.exceptions.MlflowException(f"{uri} has no {MODEL_FILE}: not an apogeenet model")
        try:
            return Predictor.load(weights)
        except ModelFileError as exc:  # name the model the user knows, not a temporary download
            raise ModelFileError(str(exc).replace(str(weights), uri)) from None


def log_and_register(predictor: Predictor, example_flux: np.ndarray, *, dev_loss_of) -> dict:
    """Log the model in the active run, register a new version, set ``candidate`` and maybe
    ``champion``. ``dev_loss_of(predictor)`` measures a model on the current dev set.

    Returns {"version", "champion_version", "promoted", "dev_loss", "champion_dev_loss"}.
    """
    from importlib.resources import files

    client = mlflow.MlflowClient()
    dev_loss = float(dev_loss_of(predictor))
    with tempfile.TemporaryDirectory() as tmp:
        weights = predictor.save(Path(tmp) / MODEL_FILE)
        info = mlflow.pyfunc.log_model(name="model", python_model=str(files("apogeenet") / "mlflow_model.py"),
                                       artifacts={"model": str(weights)}, signature=_signature(),
                                       input_example=example_flux[:2].astype(np.float32))
    # the version is born with its tag: a kill can leave an untagged log, never an untagged version
    version = str(mlflow.register_model(info.model_uri, MODEL_NAME, tags=version_tags(predictor, dev_loss)).version)
    with tracking_lock("registry"):  # compare and move the champion one process at a time
        client.set_registered_model_alias(MODEL_NAME, "candidate", version)
        unusable = ""
        try:
            champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
            champion_loss = float(dev_loss_of(load_predictor(f"models:/{MODEL_NAME}@champion")))
        except mlflow.exceptions.MlflowException:
            champion, champion_loss = None, float("inf")
        except ModelFileError as exc:  # a damaged or crafted champion must not wedge the registry
            champion_loss, unusable = float("inf"), str(exc)
        promoted = dev_loss < champion_loss
        if promoted:
            client.set_registered_model_alias(MODEL_NAME, "champion", version)
    return {"version": version, "promoted": promoted, "dev_loss": dev_loss,
            "champion_version": version if promoted else str(champion.version),
            "champion_dev_loss": dev_loss if promoted else champion_loss,
            **({"replaced_unusable_champion": f"version {champion.version}: {unusable}"} if unusable else {})}


def version_tags(predictor: Predictor, dev_loss: float) -> dict[str, str]:
    """A registered version's tags: its dev loss, its ensemble's size and the systematic terms of
    its label scale (``systematic.MSTAR.LOGG``: mean label − truth; none without a truth)."""
    tags = {"dev_loss": f"{dev_loss:.6g}", "members": str(len(predictor.members))}
    for source, terms in predictor.systematics.items():
        for name, (bias, error, _) in terms.items():
            tags[f"systematic.{source}.{name}"] = f"{bias:+.4g} ± {error:.2g}"
    return tags


def resolve_version(uri: str) -> str:
    """The version number behind ``models:/NAME@alias`` or ``models:/NAME/N`` ('' when unknown)."""
    from apogeenet.mlflow_store import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    name, _, which = uri.removeprefix("models:/").partition("@")
    try:
        if which:
            return str(mlflow.MlflowClient().get_model_version_by_alias(name, which).version)
        return name.split("/")[1] if "/" in name else ""
    except mlflow.exceptions.MlflowException:
        return ""


def registered_versions() -> list[dict]:
    """Every version of ``apogeenet`` (newest first): version, aliases, run name, dev loss."""
    from apogeenet.mlflow_store import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    except mlflow.exceptions.MlflowException:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(MODEL_NAME).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        run_name = client.get_run(v.run_id).info.run_name if v.run_id else ""
        rows.append({"version": str(v.version), "aliases": sorted(aliases.get(str(v.version), [])),
                     "run_name": run_name,
                     "dev_loss": float(v.tags.get("dev_loss", "nan"))})
    return rows
