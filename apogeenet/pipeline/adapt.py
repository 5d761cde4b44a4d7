"""Stage ``adapt`` (§3.4): rounds on MSTAR + YSO + a fresh 5 % of Payne from ``adapt.init_model``
(default: the registry's champion when tracking, else the trained model file), one nested MLflow
run per round; writes the adapted model, Tables 2/3 and plots."""

from __future__ import annotations

from apogeenet.config import Params
from apogeenet.locks import one_writer
from apogeenet.pipeline.common import data_tags, provenance, stage_params, training_data
from apogeenet.pipeline.train import write_model
from apogeenet.tracking import StageResult, Tracker, tracked
from apogeenet.weights import MODEL_FILE

__all__ = ["run"]


@tracked("train", "adapt")
def run(cfg: Params, tracker: Tracker) -> StageResult:
    from apogeenet.adapt import adapt_model
    from apogeenet.model_uri import open_model
    from apogeenet.mlflow_store import CHAMPION_URI
    from apogeenet.serving import Predictor

    data, out_dir = training_data(cfg), cfg.paths.adapted
    init_model = cfg.adapt.init_model or (CHAMPION_URI if cfg.tracking.enabled else str(cfg.paths.model / MODEL_FILE))
    start = open_model(init_model)
    data = data.with_flux_scale(start.flux_scale)
    params = {**stage_params(cfg, "adapt"), "flux_scale": start.flux_scale, "init_model": init_model}

    def on_round(record, history):
        with tracker.nested(f"round {record['round']}") as child:
            child.log(StageResult("adapt round", {"focus_dev_loss": record["focus_dev_loss"],
                                                  "best_dev_loss": record["dev_loss"]},
                                  {k: record[k] for k in ("round", "n_train", "n_payne")}, ""))
            for h in history:
                child.log_step({"train_loss": h["train_loss"], "dev_loss": h["dev_loss"]}, h["epoch"])

    with one_writer(out_dir, "adapt"):
        result = adapt_model(data, start.model.state_dict(), cfg.adapt, out_dir / "checkpoints", on_round=on_round)
        summary = {"initial_focus_dev_loss": result.initial_focus_loss,
                   "adapted_focus_dev_loss": result.best_focus_loss, "best_round": result.best_round,
                   "rounds": len(result.rounds)}
        headline = (f"{len(result.rounds)} rounds; MSTAR+YSO dev loss {result.initial_focus_loss:.4f} -> "
                    f"{result.best_focus_loss:.4f} (best round {result.best_round})")
        return write_model(data, Predictor(result.model, data.table1, start.flux_scale,
                                                          provenance=provenance(cfg, data)), out_dir, stage="adapt",
                           params=params, tags={**data_tags(cfg), "init_model": init_model}, headline=headline,
                           summary=summary, summary_in_file=True)
