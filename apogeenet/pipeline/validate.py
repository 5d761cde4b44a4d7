"""Stage ``validate``: the Great Expectations suites on the labels, the M-dwarf selection, Table 1
and the store (:mod:`expectations.runner`); ``passed`` is False when a suite fails."""

from __future__ import annotations

from apogeenet.config import LabelSource, Params
from apogeenet.gate import SUMMARY_FILE
from apogeenet.labels.files import LABELS_FILE, MSTAR_FILE
from apogeenet.locks import one_writer
from apogeenet.pipeline.common import StageError, stage_params
from apogeenet.tracking import StageResult, Tracker, tracked

__all__ = ["run"]


@tracked("validate", "validate")
def run(cfg: Params, tracker: Tracker) -> StageResult:
    from expectations.runner import validate_project

    from apogeenet.gate import validated_inputs
    from apogeenet.store import SpectraStore

    labels, mstars = cfg.paths.labels / LABELS_FILE, cfg.paths.labels / MSTAR_FILE
    for needed in (labels, mstars):
        if not needed.exists():
            raise StageError(f"{needed} is missing: run `apogeenet label` first")
    with one_writer(cfg.paths.validation, "validate"):
        allstar = cfg.paths.allstar if {LabelSource.MSTAR, LabelSource.YSO} & set(cfg.labels.sources) else None
        report = validate_project(labels, mstars, allstar, SpectraStore(cfg.paths.store), cfg.validation,
                                  cfg.labels, cfg.paths.validation,
                                  inputs=validated_inputs(labels, cfg.paths.store))
    metrics = {f"{name}/passed": int(s["success"]) for name, s in report.suites.items()}
    return StageResult("validate", metrics, stage_params(cfg, "validation", "labels"),
                       "\n".join([*report.summary_lines(), f"Data Docs: {report.docs}"]),
                       {cfg.paths.validation / SUMMARY_FILE: "validation"}, passed=report.success)
