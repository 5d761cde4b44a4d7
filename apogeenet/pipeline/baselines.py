"""Stage ``baselines``: ridge regression and The Cannon on the same splits as APOGEE Net — per
model its predictions, Tables 2/3 and metrics (against the truth too, on a synthetic survey),
each logged as a run of its own in the MLflow experiment ``evaluate`` beside APOGEE Net's."""

from __future__ import annotations

import time

from apogeenet.config import Params
from apogeenet.locks import one_writer
from apogeenet.pipeline.common import data_tags, stage_params, training_data
from apogeenet.tracking import StageResult, Tracker, tracked

__all__ = ["run"]


@tracked("evaluate", None)
def run(cfg: Params, tracker: Tracker) -> StageResult:
    from apogeenet.baselines import baseline_frames
    from apogeenet.evaluate import headline_metrics, truth_metrics, write_evaluation
    from apogeenet.io.tables import read_truth

    data, truth = training_data(cfg), read_truth(cfg.paths.truth)
    params, tags = stage_params(cfg, "baselines"), data_tags(cfg)
    runs, metrics = [], {}
    with one_writer(cfg.paths.baselines, "baselines"):
        started = time.time()
        for name, frame, fit in baseline_frames(data, cfg.baselines, tracker.progress):
            out_dir = cfg.paths.baselines / name
            found, tables = write_evaluation(frame, data.table1, out_dir,
                                             extra_metrics=truth_metrics(frame, truth) if truth is not None else None)
            found = {**headline_metrics(found), **found}
            runs.append(StageResult(name, found, {**params, **{f"fit.{k}": v for k, v in fit.items()}},
                                    f"== {name}\n{tables}", {out_dir: "evaluation"}, {**tags, "model": name},
                                    started=started))
            started = time.time()
            metrics |= {f"{name}/{k}": v for k, v in found.items()}
    return StageResult("baselines", metrics, params, "\n".join(r.report for r in runs), runs=tuple(runs))
