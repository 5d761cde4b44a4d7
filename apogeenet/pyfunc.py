"""Logging and registering a model (the write side of the registry; edge module: imported by the
``calibrate`` stage, which hands :func:`log_and_register` to :mod:`apogeenet.tracking`, and by
:mod:`apogeenet.mlflow_model`).

The logged model is a pyfunc whose input is a table of apStar spectra (``flux`` and ``error``,
8 575 values each, optional ``apogee_id`` and ``snr``) and whose output is the catalog's columns
for them — TEFF [K], LOGG, FE_H, their σ, FLAGS — (:mod:`apogeenet.online`; request ``params``
uncertainty, draws, seed). It is logged as a model from code (:mod:`apogeenet.mlflow_model`) with
the weights and Table 1 as the artifact ``model.pt``, the ``apogeenet`` package as its code path
and pip requirements that an index serves (:func:`scoring_requirements`), so
``mlflow.pyfunc.load_model("models:/apogeenet@champion")`` unpickles nothing. Versions are
registered under ``apogeenet`` with their tags from the moment they exist; alias ``candidate``
always points at the newest, ``champion`` moves only when the new model's dev loss beats the
current champion's, both measured on the same (current) dev set, and that comparison and the move
happen under a lock beside the tracking store, so two registrations at once cannot both win.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from apogeenet.config import PredictParams
from apogeenet.mlflow_store import MODEL_NAME, tracking_lock
from apogeenet.registry import MODEL_DESCRIPTION, load_predictor, version_description, version_tags
from apogeenet.serving import Predictor
from apogeenet.weights import MODEL_FILE, ModelFileError

__all__ = ["SCORING_PACKAGES", "ApogeeNetPyfunc", "RequestError", "log_and_register", "scoring_requirements"]


class ApogeeNetPyfunc(mlflow.pyfunc.PythonModel):
    """apStar spectra (``flux``, ``error``, optional ``apogee_id``, ``snr``) -> the catalog's
    columns with σ and FLAGS (:func:`apogeenet.online.score`); bad input is one line (HTTP 400)."""

    def load_context(self, context) -> None:
        from apogeenet.dataset import best_device

        self.predictor = Predictor.load(context.artifacts["model"], best_device())

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from apogeenet.errors import UserFacingError
        from apogeenet.online import score

        try:
            return score(self.predictor, model_input, params)
        except UserFacingError as exc:
            raise RequestError(str(exc)) from None


class RequestError(mlflow.exceptions.MlflowException):
    """A request the model refuses (HTTP 400) with one line: MLflow's scoring server puts the
    request's repr and a line break before a model's message (``Failed to predict data …``), so
    this message keeps only its own line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=mlflow.protos.databricks_pb2.INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        self._line = str(value).rsplit("\nError: ", 1)[-1]


_OUTPUT_TYPES = {"APOGEE_ID": "string", "FLAG_NAMES": "string", "AGE_BIN": "string", "FLAGS": "long",
                 "N_GOOD_PIXELS": "long", "YSO_CANDIDATE": "boolean"}


def _signature() -> ModelSignature:
    """The online schema (:mod:`apogeenet.online`): arrays in, the catalog's columns out."""
    from apogeenet.online import OUTPUT_COLUMNS

    predict = PredictParams()
    inputs = [ColSpec(Array(DataType.double), "flux"), ColSpec(Array(DataType.double), "error"),
              ColSpec(DataType.string, "apogee_id", required=False), ColSpec(DataType.double, "snr", required=False)]
    return ModelSignature(
        inputs=Schema(inputs), outputs=Schema([ColSpec(_OUTPUT_TYPES.get(c, "double"), c) for c in OUTPUT_COLUMNS]),
        params=ParamSchema([ParamSpec("uncertainty", DataType.string, str(predict.uncertainty)),
                            ParamSpec("draws", DataType.long, predict.draws),
                            ParamSpec("seed", DataType.long, predict.seed)]))


SCORING_PACKAGES = ("torch", "numpy", "pandas", "pyarrow", "astropy", "h5py", "scipy", "pydantic", "pyyaml")
"""What scoring imports besides MLflow (tests/model/test_online.py checks the list in a fresh process)."""


def scoring_requirements() -> list[str]:
    """The logged model's pip requirements: :data:`SCORING_PACKAGES` at the versions installed
    here (MLflow adds itself); ``apogeenet`` is not one: its code is logged with the model."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in SCORING_PACKAGES]


def log_and_register(predictor: Predictor, example: pd.DataFrame, *, dev_loss_of) -> dict:
    """Log the model in the active run, register a new version, set ``candidate`` and maybe
    ``champion``. ``example`` is an input example (:func:`apogeenet.online.example_input`);
    ``dev_loss_of(predictor)`` measures a model on the current dev set.

    Returns {"version", "champion_version", "promoted", "dev_loss", "champion_dev_loss"}.
    """
    from importlib.resources import files

    client = mlflow.MlflowClient()
    dev_loss = float(dev_loss_of(predictor))
    with tempfile.TemporaryDirectory() as tmp:
        weights = predictor.save(Path(tmp) / MODEL_FILE)
        code = Path(tmp) / "code" / "apogeenet"  # the package travels with the model: no index serves it
        shutil.copytree(Path(str(files("apogeenet"))), code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        info = mlflow.pyfunc.log_model(name="model", python_model=str(files("apogeenet") / "mlflow_model.py"),
                                       artifacts={"model": str(weights)}, signature=_signature(),
                                       input_example=example, code_paths=[str(code)],
                                       pip_requirements=scoring_requirements())
    # the version is born with its tag: a kill can leave an untagged log, never an untagged version
    version = str(mlflow.register_model(info.model_uri, MODEL_NAME, tags=version_tags(predictor, dev_loss)).version)
    client.update_model_version(MODEL_NAME, version, description=version_description(predictor, dev_loss))
    if client.get_registered_model(MODEL_NAME).description != MODEL_DESCRIPTION:
        client.update_registered_model(MODEL_NAME, description=MODEL_DESCRIPTION)
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
