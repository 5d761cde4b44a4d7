"""Stage ``train`` (§3.3): APOGEE Net on the label catalog with the active profile (or from
``train.init_model``); writes the model file, Tables 2/3 and plots (MLflow experiment ``train``).
Its σ calibration is the next stage's (:mod:`apogeenet.pipeline.calibrate`)."""

from __future__ import annotations

from apogeenet.config import FluxUnit, Params
from apogeenet.locks import one_writer
from apogeenet.pipeline.common import data_tags, provenance, stage_params, training_data
from apogeenet.tracking import StageResult, Tracker, tracked

__all__ = ["ensemble_summary", "run", "write_model"]


@tracked("train", "pretrain")
def run(cfg: Params, tracker: Tracker) -> StageResult:
    from apogeenet.model_uri import open_model
    from apogeenet.serving import Predictor
    from apogeenet.train import train_ensemble

    data, out_dir, profile = training_data(cfg), cfg.paths.model, cfg.train.active()
    train_pos, dev_pos = data.select(split="train"), data.select(split="dev")
    init_model = cfg.train.init_model
    if init_model:
        start = open_model(init_model)
        init_states, flux_scale = [net.state_dict() for net in start.members], start.flux_scale
    else:
        init_states = None
        flux_scale = data.median_flux(train_pos) if profile.flux_unit is FluxUnit.CONSTANT else None
    data = data.with_flux_scale(flux_scale)
    params = {**stage_params(cfg, "train"), "flux_scale": flux_scale, "n_train": len(train_pos),
              "n_dev": len(dev_pos)}
    members = profile.members

    def on_epoch(member: int, record: dict) -> None:
        prefix = f"member{member}/" if members > 1 else ""
        tracker.log_step({prefix + k: record[k] for k in ("train_loss", "dev_loss", "samples_per_s")}, record["epoch"])

    with one_writer(out_dir, "train"):
        results = train_ensemble(data, train_pos, dev_pos, profile, out_dir / "checkpoints", init_states=init_states,
                                 progress=tracker.progress, on_epoch=on_epoch)
        predictor = Predictor([r.model for r in results], data.table1, flux_scale, provenance=provenance(cfg, data))
        summary = ensemble_summary(data, predictor, dev_pos, results)
        headline = (f"best dev loss {summary['best_dev_loss']:.4f} (profile {cfg.train.profile}; "
                    + (f"epoch {results[0].best_epoch})" if members == 1 else
                       f"an ensemble of {members}, its members' {summary['members_mean_dev_loss']:.4f} on average)"))
        return write_model(data, predictor, out_dir, stage="train", params=params, tags=data_tags(cfg),
                           headline=headline, summary=summary, summary_in_file=False)


def ensemble_summary(data, predictor, dev_pos, results) -> dict[str, float]:
    """The dev loss of the model (an ensemble: of its mean) and of each member, with its best epoch."""
    if len(results) == 1:
        return {"best_dev_loss": results[0].best_dev_loss, "best_epoch": results[0].best_epoch}
    summary = {"best_dev_loss": data.predictor_loss(predictor, dev_pos),
               "members_mean_dev_loss": sum(r.best_dev_loss for r in results) / len(results)}
    for k, result in enumerate(results):
        summary |= {f"member{k}/best_dev_loss": result.best_dev_loss, f"member{k}/best_epoch": result.best_epoch}
    return summary


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
