"""What several stages share: the error a stage raises, its flattened parameters, the data-version
tag and the gated training set."""

from __future__ import annotations

from apogeenet.config import Params
from apogeenet.dataset import LabelledSpectra
from apogeenet.errors import UserFacingError
from apogeenet.labels.files import LABELS_FILE, TABLE1_FILE
from apogeenet.tracking import data_version, flat_params

__all__ = ["StageError", "data_tags", "provenance", "stage_params", "training_data"]


class StageError(UserFacingError):
    """A stage cannot run: a missing input or a failed gate; the message says which."""


def stage_params(cfg: Params, *sections: str) -> dict:
    """The resolved parameters a stage depends on, flattened (``paths`` always included)."""
    return flat_params({name: getattr(cfg, name).model_dump(mode="json") for name in ("paths", *sections)})


def data_tags(cfg: Params) -> dict[str, str]:
    """The ``data_version`` tag of the runs that read the label catalog."""
    return {"data_version": data_version(cfg.paths.labels / LABELS_FILE)}


def provenance(cfg: Params, data: LabelledSpectra) -> dict[str, str]:
    """What a model trained (or adapted) on ``data`` was trained on, stored in its file and
    written in every catalog's header: the label catalog's SHA-256 (predict joins only those
    labels), the data version, a synthetic survey or real spectra, the label sources."""
    from apogeenet.gate import file_sha256
    from apogeenet.labels.catalog import SOURCES

    labels_file = cfg.paths.labels / LABELS_FILE
    present = set(data.catalog["SOURCE"])
    out = {"labels_sha256": file_sha256(labels_file), "data_version": data_version(labels_file),
           "trained_on": "synthetic survey" if cfg.paths.truth is not None and cfg.paths.truth.exists() else "real spectra",
           "label_sources": ",".join(s for s in SOURCES if s in present)}
    if "TABLE" in present:
        out["label_table"] = cfg.labels.table.description
    return out


def training_data(cfg: Params) -> LabelledSpectra:
    """The store joined to the label catalog, once the gate has passed on exactly these labels
    and this store (:func:`apogeenet.gate.require_validation`)."""
    from apogeenet.gate import require_validation

    labels = cfg.paths.labels / LABELS_FILE
    if not labels.exists():
        raise StageError(f"{labels} is missing: run `apogeenet label` first")
    require_validation(cfg.paths.validation, labels, cfg.paths.store)
    return LabelledSpectra.from_files(cfg.paths.store, labels, cfg.paths.labels / TABLE1_FILE)
