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
    from apogeenet.adapt import FOCUS_SOURCES, adapt_ensemble
    from apogeenet.model_uri import open_model
    from apogeenet.mlflow_store import CHAMPION_URI
    from apogeenet.serving import Predictor

    data, out_dir = training_data(cfg), cfg.paths.adapted
    init_model = cfg.adapt.init_model or (CHAMPION_URI if cfg.tracking.enabled else str(cfg.paths.model / MODEL_FILE))
    start = open_model(init_model)
    data = data.with_flux_scale(start.flux_scale)
    params = {**stage_params(cfg, "adapt"), "flux_scale": start.flux_scale, "init_model": init_model}

    members = len(start.members)

    def on_round(member: int, record: dict, history: list[dict]) -> None:
        name = f"round {record['round']}" if members == 1 else f"member {member} round {record['round']}"
        with tracker.nested(name) as child:
            child.log(StageResult("adapt round", {"focus_dev_loss": record["focus_dev_loss"],
                                                  "best_dev_loss": record["dev_loss"]},
                                  {"member": member, **{k: record[k] for k in ("round", "n_train", "n_payne")}}, ""))
            for h in history:
                child.log_step({"train_loss": h["train_loss"], "dev_loss": h["dev_loss"]}, h["epoch"])

    with one_writer(out_dir, "adapt"):
        results = adapt_ensemble(data, [net.state_dict() for net in start.members], cfg.adapt,
                                 out_dir / "checkpoints", on_round=on_round)
        adapted = Predictor([r.model for r in results], data.table1, start.flux_scale, provenance=provenance(cfg, data))
        focus_dev = data.select(split="dev", sources=FOCUS_SOURCES)
        summary = {"initial_focus_dev_loss": data.predictor_loss(start, focus_dev),
                   "adapted_focus_dev_loss": data.predictor_loss(adapted, focus_dev),
                   "rounds": sum(len(r.rounds) for r in results)}
        rounds = ", ".join(str(r.best_round) for r in results)
        if members == 1:
            summary["best_round"] = results[0].best_round
        else:
            summary |= {f"member{k}/best_round": r.best_round for k, r in enumerate(results)}
        adapted_members = sum(r.best_round >= 0 for r in results)
        headline = (f"{summary['rounds']} rounds; MSTAR+YSO dev loss {summary['initial_focus_dev_loss']:.4f} -> "
                    f"{summary['adapted_focus_dev_loss']:.4f} ("
                    + (f"best round {rounds}" if members == 1 else
                       f"{adapted_members} of {members} members adapted; best round per member {rounds}")
                    + "; -1: as it started)")
        return write_model(data, adapted, out_dir, stage="adapt", params=params,
                           tags={**data_tags(cfg), "init_model": init_model}, headline=headline,
                           summary=summary, summary_in_file=True)
