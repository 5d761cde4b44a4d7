"""The read side of the registry (edge module: imported by the CLI and :mod:`apogeenet.model_uri`):
the :class:`Predictor` behind a registered or logged model — its weights file only, so no code
from the store runs —, the version an alias stands for, the versions with their aliases, and the
tags a version is born with. Logging and registering: :mod:`apogeenet.pyfunc`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np

from apogeenet.serving import REGIONS, Predictor
from apogeenet.mlflow_store import MODEL_NAME
from apogeenet.weights import MODEL_FILE, ModelFileError

__all__ = ["MODEL_DESCRIPTION", "MODEL_NAME", "load_predictor", "registered_versions", "resolve_version",
           "version_description", "version_tags"]



def load_predictor(uri: str) -> Predictor:
    """The :class:`Predictor` behind a registered or logged model URI (e.g.
    ``models:/apogeenet@champion``): only its weights file is read (no code from the store runs)."""
    from apogeenet.mlflow_store import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    with tempfile.TemporaryDirectory() as tmp:
        try:  # the weights alone: not the code and environment logged beside them
            weights = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{uri.rstrip('/')}/artifacts/{MODEL_FILE}",
                                                               dst_path=tmp))
        except mlflow.exceptions.MlflowException:
            mlflow.artifacts.list_artifacts(artifact_uri=uri.rstrip("/"))  # the store's own error for no such model
            raise mlflow.exceptions.MlflowException(f"{uri} has no {MODEL_FILE}: not an apogeenet model") from None
        if not weights.is_file():
            raise mlflow.exceptions.MlflowException(f"{uri} has no {MODEL_FILE}: not an apogeenet model")
        try:
            return Predictor.load(weights)
        except ModelFileError as exc:  # name the model the user knows, not a temporary download
            raise ModelFileError(str(exc).replace(str(weights), uri)) from None


def version_tags(predictor: Predictor, dev_loss: float) -> dict[str, str]:
    """A registered version's tags: its dev loss, its ensemble's size and the systematic terms of
    its label scale (``systematic.MSTAR.LOGG``: mean label − truth; none without a truth)."""
    tags = {"dev_loss": f"{dev_loss:.6g}", "members": str(len(predictor.members))}
    for source, terms in predictor.systematics.items():
        for name, (bias, error, _) in terms.items():
            tags[f"systematic.{source}.{name}"] = f"{bias:+.4g} ± {error:.2g}"
    return tags


MODEL_DESCRIPTION = (
    "APOGEE Net (Olney et al. 2020, AJ 159, 182): Teff, log g and [Fe/H] with calibrated sigma and flags from "
    "SDSS APOGEE apStar spectra. Each version is a deep ensemble of networks trained by `apogeenet` on the labels "
    "its description names. Input: a table of flux and error arrays (8575 pixels, the combined spectrum); "
    "output: the Table 4 catalog's columns. Aliases: candidate (newest), champion (lowest dev loss).")
"""The registered model's description (the MLflow UI shows it on the model's page)."""


def version_description(predictor: Predictor, dev_loss: float) -> str:
    """What a registered version is: its networks, what it was trained on, its dev loss, its σ."""
    p = predictor.provenance
    trained = (f"trained on {p.get('trained_on', 'unrecorded data')} with {p.get('label_sources', '?')} labels"
               + (f" ({p['label_table']})" if p.get("label_table") else "")
               + (f", label catalog SHA-256 {p['labels_sha256'][:12]}, {p.get('data_version', '')}"
                  if p.get("labels_sha256") else ""))
    calibrated = ", ".join(sorted(predictor.calibrations)) or "none (every catalog row UNCALIBRATED)"
    maps = predictor.output_maps
    mapped = [f"{name} ({region.replace('_', ' ')})" for k, name in enumerate(("Teff", "log g", "[Fe/H]"))
              for r, region in enumerate(REGIONS)
              if maps is not None and not (np.all(maps[:, r, k, 0] == 1) and np.all(maps[:, r, k, 1] == 0))]
    return (f"An ensemble of {len(predictor.members)} APOGEE Net network(s), {trained}. Dev loss {dev_loss:.4g} "
            f"(standardised MSE). Output maps fitted on dev: {', '.join(mapped) or 'none'}. "
            f"Sigma calibration: {calibrated}. Systematic terms of the label scale are "
            "in the tags `systematic.*`.")


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
