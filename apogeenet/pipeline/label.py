"""Stage ``label`` (§2): the label catalog, Table 1 and the YSO network (MLflow experiment
``labels``) from ``paths.allstar``, ``paths.payne`` and ``paths.members``; the splits of an
earlier catalog in ``paths.labels`` are kept."""

from __future__ import annotations

from apogeenet.config import Params
from apogeenet.labels.files import LABELS_FILE
from apogeenet.locks import one_writer
from apogeenet.pipeline.common import stage_params
from apogeenet.tracking import StageResult, Tracker, tracked

__all__ = ["run"]


@tracked("labels", "label")
def run(cfg: Params, tracker: Tracker) -> StageResult:
    from apogeenet.io.tables import read_table
    from apogeenet.isochrones import shipped_parsec
    from apogeenet.labels.build import build_labels, label_counts, read_splits, save_label_set

    tables = {name: read_table(getattr(cfg.paths, name)) for name in ("allstar", "payne", "members")}
    out_dir = cfg.paths.labels
    with one_writer(out_dir, "label"):
        label_set = build_labels(tables["allstar"], tables["payne"], tables["members"], shipped_parsec(),
                                 recipe=cfg.labels.recipe, young_fields=set(cfg.labels.young_fields),
                                 yso=cfg.yso, previous_splits=read_splits(out_dir / LABELS_FILE),
                                 on_epoch=lambda epoch, train, dev: tracker.log_step(
                                     {"yso_train_loss": train, "yso_dev_loss": dev}, epoch))
        metrics = save_label_set(label_set, out_dir)
    report = (f"{metrics['n_labels']} labels {label_counts(metrics)}; {metrics['yso_outside_grid']} YSO "
              f"predictions outside the isochrone grid left out\nYSO network held-out RMS: log Teff "
              f"{metrics['yso_net_log_teff_rms']:.4f} dex, log g {metrics['yso_net_logg_rms']:.4f} dex; "
              f"Table 1 {metrics['table1']} -> {out_dir}")
    return StageResult("label", metrics, stage_params(cfg, "labels", "yso"), report, {out_dir: "labels"})
