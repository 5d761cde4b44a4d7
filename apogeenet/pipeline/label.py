"""Stage ``label`` (§2): the label catalog, Table 1, the reject list and (with the ``yso``
source) the YSO network (MLflow experiment ``labels``) from the inputs of ``labels.sources``
(:mod:`apogeenet.labels.inputs`); labels are kept for stars with a spectrum in ``paths.store``
when it exists, and the splits of an earlier catalog in ``paths.labels`` are kept."""

from __future__ import annotations

from apogeenet.config import Params
from apogeenet.labels.files import LABELS_FILE, REJECTS_FILE
from apogeenet.locks import one_writer
from apogeenet.pipeline.common import stage_params
from apogeenet.tracking import StageResult, Tracker, tracked

__all__ = ["run"]


@tracked("labels", "label")
def run(cfg: Params, tracker: Tracker) -> StageResult:
    from apogeenet.isochrones import shipped_parsec
    from apogeenet.labels.build import build_labels, label_counts, read_splits, save_label_set
    from apogeenet.labels.inputs import read_inputs
    from apogeenet.store import INDEX_FILE, read_index

    inputs = read_inputs(cfg)  # every missing column of every input, before anything trains
    index_file = cfg.paths.store / INDEX_FILE
    store_ids = set(read_index(index_file)[0]["apogee_id"]) if index_file.exists() else None
    out_dir = cfg.paths.labels
    with one_writer(out_dir, "label"):
        label_set = build_labels(inputs, shipped_parsec(), labels=cfg.labels, yso=cfg.yso, store_ids=store_ids,
                                 previous_splits=read_splits(out_dir / LABELS_FILE),
                                 on_epoch=lambda epoch, train, dev: tracker.log_step(
                                     {"yso_train_loss": train, "yso_dev_loss": dev}, epoch))
        metrics = save_label_set(label_set, out_dir)
    report = [f"{metrics['n_labels']} labels {label_counts(metrics)}; {metrics['n_rejected']} input stars without "
              f"a label, each with its reason in {out_dir / REJECTS_FILE}"]
    if label_set.yso_model is not None:
        report.append(f"{metrics['yso_outside_grid']} YSO predictions outside the isochrone grid left out; YSO "
                      f"network held-out RMS: log Teff {metrics['yso_net_log_teff_rms']:.4f} dex, log g "
                      f"{metrics['yso_net_logg_rms']:.4f} dex")
    report.append(f"Table 1 {metrics['table1']} -> {out_dir}")
    return StageResult("label", metrics, stage_params(cfg, "labels", "yso"), "\n".join(report), {out_dir: "labels"})
