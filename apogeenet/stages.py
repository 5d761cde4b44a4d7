"""Pipeline stages as functions of the validated parameters: the one implementation that the CLI
(and so DVC) and the Prefect flows both call. MLflow and Great Expectations enter here, at the
edge, never in the library modules below."""

from __future__ import annotations

from pathlib import Path

from apogeenet.config import Params

__all__ = ["StageError", "label_stage", "validate_stage"]


class StageError(ValueError):
    """A stage cannot run: a missing input or a failed gate; the message says which."""


def label_stage(cfg: Params, *, allstar: Path | None = None, payne: Path | None = None,
                members: Path | None = None, out_dir: Path | None = None, track: bool = True) -> dict:
    """Paper §2: build the label catalog, Table 1 and the YSO network; returns the metrics.

    Inputs default to the survey's catalogs under ``paths.raw``. Splits of an earlier catalog in
    ``out_dir`` are kept. With ``track`` the run, its parameters, the YSO network's training curve
    and every output are logged to MLflow (experiment ``labels``).
    """
    from apogeenet.io.tables import read_table
    from apogeenet.isochrones import shipped_parsec
    from apogeenet.labels.build import LABELS_FILE, YSOTraining, build_labels, save_label_set
    from apogeenet.synth.survey import ALLSTAR_FILE, MEMBERS_FILE, PAYNE_FILE

    survey = cfg.paths.raw
    tables = {name: read_table(path or survey / default) for name, path, default in
              (("allstar", allstar, ALLSTAR_FILE), ("payne", payne, PAYNE_FILE),
               ("members", members, MEMBERS_FILE))}
    out_dir = Path(out_dir or cfg.paths.labels)
    previous = out_dir / LABELS_FILE
    splits = (dict(zip(*read_table(previous)[["APOGEE_ID", "SPLIT"]].to_numpy().T))
              if previous.exists() else None)

    def run(on_epoch=None):
        try:
            return build_labels(tables["allstar"], tables["payne"], tables["members"], shipped_parsec(),
                                recipe=cfg.labels.recipe, young_fields=set(cfg.labels.young_fields),
                                yso=YSOTraining(**cfg.yso.model_dump()), previous_splits=splits,
                                on_epoch=on_epoch)
        except ValueError as exc:
            raise StageError(str(exc)) from None

    if not track:
        return save_label_set(run(), out_dir)
    import mlflow

    from apogeenet.tracking import mlflow_run

    with mlflow_run("labels", "label"):
        mlflow.log_params({"recipe": cfg.labels.recipe, "young_fields": ",".join(cfg.labels.young_fields),
                           **{f"yso.{k}": v for k, v in cfg.yso.model_dump().items()}})
        label_set = run(lambda epoch, train, dev: mlflow.log_metrics(
            {"yso_train_loss": train, "yso_dev_loss": dev}, step=epoch))
        metrics = save_label_set(label_set, out_dir)
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_artifacts(str(out_dir), artifact_path="labels")
    return metrics


def validate_stage(cfg: Params, *, allstar: Path | None = None):
    """Run the Great Expectations suites on the labels, the M-dwarf selection and the store."""
    from expectations.frames import build_frames
    from expectations.runner import run_suites
    from expectations.suites import build_suites

    from apogeenet.io.tables import read_table
    from apogeenet.labels.build import LABELS_FILE, MSTAR_FILE
    from apogeenet.store import SpectraStore
    from apogeenet.synth.survey import ALLSTAR_FILE

    labels_dir = cfg.paths.labels
    for needed in (labels_dir / LABELS_FILE, labels_dir / MSTAR_FILE):
        if not needed.exists():
            raise StageError(f"{needed} is missing: run `apogeenet label` first")
    catalog = read_table(labels_dir / LABELS_FILE)
    store = SpectraStore(cfg.paths.store)
    frames = build_frames(catalog, read_table(labels_dir / MSTAR_FILE),
                          read_table(allstar or cfg.paths.raw / ALLSTAR_FILE), store)
    suites = build_suites(young_fields=list(cfg.labels.young_fields),
                          store_ids=store.index["apogee_id"].tolist(),
                          split_tolerance=cfg.validation.split_tolerance,
                          min_finite_fraction=cfg.validation.min_finite_fraction)
    return run_suites(frames, suites, cfg.paths.validation)
