"""Stage ``evaluate``: Tables 2/3 and plots of ``evaluate.model`` (default: the calibrated model),
the quality bar (test-split RMS gain over the training mean in every group), the §3.4 adaptation
check against ``evaluate.baseline`` (default: the trained model, when it exists), the models side
by side with the baselines, and the calibration of σ on the test split (before and after; z
histograms); ``passed`` when every check passes (MLflow experiment ``evaluate``)."""

from __future__ import annotations

from apogeenet.config import Params, Uncertainty
from apogeenet.locks import one_writer
from apogeenet.pipeline.common import data_tags, stage_params, training_data
from apogeenet.tracking import StageResult, Tracker, tracked
from apogeenet.weights import MODEL_FILE

__all__ = ["run"]


@tracked("evaluate", "apogeenet")
def run(cfg: Params, tracker: Tracker) -> StageResult:
    import pandas as pd

    from apogeenet.evaluate import PREDICTIONS_FILE, headline_metrics, predictions_frame, write_assessment
    from apogeenet.io.tables import read_truth
    from apogeenet.model_uri import open_model
    from apogeenet.reliability import split_uncertainties, write_calibration

    out_dir, data = cfg.paths.evaluation, training_data(cfg)
    model = cfg.evaluate.model or str(cfg.paths.calibrated / MODEL_FILE)
    trained = cfg.paths.model / MODEL_FILE
    baseline = cfg.evaluate.baseline or (str(trained) if trained.exists() else None)
    with one_writer(out_dir, "evaluate"):
        adapted = bool({"MSTAR", "YSO"} & set(data.catalog["SOURCE"]))  # §3.4 adapts to these sources only
        before = (baseline, predictions_frame(data, open_model(baseline))) \
            if adapted and baseline not in (None, model) else None
        others = {str(name): pd.read_parquet(path) for name in cfg.baselines.models
                  if (path := cfg.paths.baselines / name / PREDICTIONS_FILE).exists()}
        predictor, truth = open_model(model), read_truth(cfg.paths.truth)
        found, calibration = {}, ""
        if cfg.predict.uncertainty is not Uncertainty.NONE:  # σ of the test split, before and after calibration
            found, calibration = write_calibration(split_uncertainties(predictor, data, cfg.predict), truth, out_dir)
            (out_dir / "calibration.md").write_text(calibration.lstrip() + "\n")
        metrics, report, passed = write_assessment(predictions_frame(data, predictor), data.table1, out_dir,
                                                   cfg=cfg.evaluate, model=model, truth=truth,
                                                   before=before, others=others, extra_metrics=found)
    metrics = {**headline_metrics(metrics), **metrics}  # the 24 numbers a comparison of models reads first
    tags = {"model": model, "baseline": baseline or "", **data_tags(cfg)}
    return StageResult("evaluate", metrics, {**stage_params(cfg, "evaluate"), "model": model, "baseline": baseline or ""},
                       report + calibration, {out_dir: "evaluation"}, tags, passed=passed)
