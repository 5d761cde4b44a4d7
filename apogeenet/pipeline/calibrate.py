"""Stage ``calibrate``: fit the σ calibration of each uncertainty method and the domain reference
on the dev split for a model file (``calibration.model``, default the adapted model), store them
with the model in ``paths.calibrated`` and offer that model to the registry (MLflow experiment
``train``). It reads the ``predict`` settings the σ are made with; training reads none of them,
so changing one reruns this stage, not training."""

from __future__ import annotations

import json

from apogeenet.config import Params
from apogeenet.evaluate import METRICS_FILE
from apogeenet.locks import one_writer
from apogeenet.pipeline.common import StageError, data_tags, stage_params, training_data
from apogeenet.tracking import Registration, StageResult, Tracker, tracked
from apogeenet.weights import MODEL_FILE

__all__ = ["run"]


@tracked("train", "calibrate")
def run(cfg: Params, tracker: Tracker) -> StageResult:
    from apogeenet.atomic import atomic_path
    from apogeenet.calibrate_model import calibrate_predictor
    from apogeenet.errors import InputError
    from apogeenet.io.tables import read_truth
    from apogeenet.model_uri import open_model
    from apogeenet.online import example_input
    from apogeenet.pyfunc import log_and_register

    data, out_dir = training_data(cfg), cfg.paths.calibrated
    source = cfg.calibration.model or str(cfg.paths.adapted / MODEL_FILE)
    predictor = open_model(source)
    with one_writer(out_dir, "calibrate"):
        try:
            metrics = calibrate_predictor(predictor, data, cfg.predict, cfg.calibration, read_truth(cfg.paths.truth))
        except InputError as exc:
            raise StageError(f"cannot calibrate the uncertainties: {exc}") from None
        predictor.save(out_dir / MODEL_FILE)
        with atomic_path(out_dir / METRICS_FILE) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    fitted = [str(m) for m in cfg.calibration.methods if metrics.get(f"sigma_calibration/{m}/fitted")]
    report = (f"{source}: sigma calibration of {', '.join(fitted) or 'no method (too few dev stars)'} against the "
              f"{cfg.calibration.reference} reference, domain threshold {metrics['domain_threshold']:.3g} "
              f"-> {out_dir / MODEL_FILE}")
    if not fitted:
        report += (f"\nwarning: {len(data.select(split='dev'))} dev stars, fewer than calibration.min_stars "
                   f"({cfg.calibration.min_stars}): no sigma calibration, so every catalog row of this model will be "
                   "flagged UNCALIBRATED (its sigma is pixel noise only)")
    dev = data.select(split="dev")
    first = data.store.read(data.rows[dev[:1]])
    example = example_input(first.flux, first.error, data.catalog["APOGEE_ID"].to_numpy()[dev[:1]])
    offer = Registration(predictor, example, lambda candidate: data.predictor_loss(candidate, dev), log_and_register)
    return StageResult("calibrate", metrics, {**stage_params(cfg, "calibration", "predict"), "model": source},
                       report, {out_dir / METRICS_FILE: "calibration"}, {**data_tags(cfg), "model": source},
                       register=offer)
