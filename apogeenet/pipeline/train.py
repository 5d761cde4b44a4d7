"""Stage ``train`` (§3.3): APOGEE Net on the label catalog with the active profile (or from
``train.init_model``); writes the model file, Tables 2/3 and plots (MLflow experiment ``train``).
Its σ calibration is the next stage's (:mod:`apogeenet.pipeline.calibrate`)."""

from __future__ import annotations

from apogeenet.config import FluxUnit, Params
from apogeenet.locks import one_writer
from apogeenet.pipeline.common import data_tags, provenance, stage_params, training_data
from apogeenet.tracking import StageResult, Tracker, tracked

__all__ = ["run", "write_model"]


@tracked("train", "pretrain")
def run(cfg: Params, tracker: Tracker) -> StageResult:
    from apogeenet.model_uri import open_model
    from apogeenet.serving import Predictor
    from apogeenet.train import train_model

    data, out_dir, profile = training_data(cfg), cfg.paths.model, cfg.train.active()
    train_pos, dev_pos = data.select(split="train"), data.select(split="dev")
    init_model = cfg.train.init_model
    if init_model:
        start = open_model(init_model)
        init_state, flux_scale = start.model.state_dict(), start.flux_scale
    else:
        init_state = None
        flux_scale = data.median_flux(train_pos) if profile.flux_unit is FluxUnit.CONSTANT else None
    data = data.with_flux_scale(flux_scale)
    params = {**stage_params(cfg, "train"), "flux_scale": flux_scale, "n_train": len(train_pos),
              "n_dev": len(dev_pos)}
    with one_writer(out_dir, "train"):
        result = train_model(data, train_pos, dev_pos, profile, out_dir / "checkpoints", init_state=init_state,
                             progress=tracker.progress, on_epoch=lambda r: tracker.log_step(
                                 {k: r[k] for k in ("train_loss", "dev_loss", "samples_per_s")}, r["epoch"]))
        headline = f"best dev loss {result.best_dev_loss:.4f} at epoch {result.best_epoch} (profile {cfg.train.profile})"
        return write_model(data, Predictor(result.model, data.table1, flux_scale,
                                                          provenance=provenance(cfg, data)), out_dir, stage="train",
                           params=params, tags=data_tags(cfg), headline=headline,
                           summary={"best_dev_loss": result.best_dev_loss, "best_epoch": result.best_epoch},
                           summary_in_file=False)


def write_model(data, predictor, out_dir, *, stage: str, params: dict, tags: dict, headline: str,
                summary: dict, summary_in_file: bool) -> StageResult:
    """The common end of ``train`` and ``adapt``: the model file, Tables 2/3, predictions, plots
    and metrics.json (with ``summary`` when ``summary_in_file``)."""
    from apogeenet.evaluate import EVALUATION_FILES, PREDICTIONS_FILE, predictions_frame, write_evaluation
    from apogeenet.weights import MODEL_FILE

    predictor.save(out_dir / MODEL_FILE)
    table_metrics, tables = write_evaluation(predictions_frame(data, predictor), data.table1, out_dir,
                                             extra_metrics=summary if summary_in_file else None)
    artifacts = {out_dir / name: "evaluation" for name in EVALUATION_FILES if name != PREDICTIONS_FILE}
    return StageResult(stage, {**summary, **table_metrics}, params, f"{headline}\n{tables}", artifacts, tags)
