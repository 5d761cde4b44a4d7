"""Run the suites with Great Expectations 1.x, build Data Docs, and summarise for people.

The GE project lives in ``<out_dir>/gx`` (file mode): suites, validation results and the HTML
Data Docs (``gx/uncommitted/data_docs/local_site/index.html``). ``summary.json`` beside it holds
one entry per suite and per failing expectation with its counts; DVC tracks it as a metric.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from apogeenet.atomic import atomic_path
from apogeenet.gate import SUMMARY_FILE

__all__ = ["ValidationReport", "run_suites", "validate_project"]


@dataclass
class ValidationReport:
    success: bool
    suites: dict[str, dict] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    docs: str = ""

    def summary_lines(self) -> list[str]:
        lines = [f"{name}: {'passed' if s['success'] else 'FAILED'} "
                 f"({s['passed']}/{s['evaluated']} expectations, {s['rows']} rows)"
                 for name, s in self.suites.items()]
        for f in self.failures:
            limits = f" [{f['min_value']}, {f['max_value']}]" if f.get("min_value") is not None else ""
            what = f"{f['expectation']}({f['column'] or ''}){limits}"
            counts = f"{f['unexpected_count']} of {f['element_count']} rows unexpected" \
                if f["unexpected_count"] is not None else "failed"
            examples = f"; e.g. {f['examples']}" if f["examples"] else ""
            lines.append(f"  FAILED {f['suite']}: {what}: {counts}{examples}")
        return lines


def run_suites(frames: dict[str, pd.DataFrame], suites: dict, out_dir: str | os.PathLike, *,
               inputs: dict[str, str] | None = None) -> ValidationReport:
    """Validate each frame against the suite of the same name; write Data Docs and summary.json
    (with ``inputs``, the hashes of what was validated, that later stages check)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(out_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_or_update_pandas("apogeenet")
    report = ValidationReport(success=True)
    definitions, batches = [], {}
    for name, suite in suites.items():
        suite = context.suites.add_or_update(suite)
        asset = source.get_asset(name) if name in [a.name for a in source.assets] else source.add_dataframe_asset(name)
        batch = next((b for b in asset.batch_definitions if b.name == "whole"), None) or \
            asset.add_batch_definition_whole_dataframe("whole")
        definitions.append(context.validation_definitions.add_or_update(
            gx.ValidationDefinition(data=batch, suite=suite, name=name)))
        batches[name] = frames[name]
    for definition in definitions:
        name = definition.name
        result = definition.run(batch_parameters={"dataframe": batches[name]},
                                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 3})
        evaluated = len(result.results)
        passed = sum(r.success for r in result.results)
        report.suites[name] = {"success": bool(result.success), "evaluated": evaluated,
                               "passed": passed, "rows": len(batches[name])}
        report.success &= bool(result.success)
        for r in result.results:
            if not r.success:
                info = r.result or {}
                report.failures.append({
                    "suite": name, "expectation": r.expectation_config.type,
                    "column": r.expectation_config.kwargs.get("column"),
                    "min_value": r.expectation_config.kwargs.get("min_value"),
                    "max_value": r.expectation_config.kwargs.get("max_value"),
                    "unexpected_count": info.get("unexpected_count"),
                    "element_count": info.get("element_count"),
                    "examples": [str(v) for v in (info.get("partial_unexpected_list") or [])[:3]],
                })
    context.build_data_docs()
    report.docs = str(out_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html")
    with atomic_path(out_dir / SUMMARY_FILE) as tmp:
        tmp.write_text(json.dumps({"success": report.success, "inputs": inputs or {}, "suites": report.suites,
                                   "failures": report.failures, "data_docs": report.docs}, indent=2) + "\n")
    return report


def validate_project(labels_file: Path, mstar_file: Path, allstar_file: Path | None, store, cfg, labels,
                     out_dir: str | os.PathLike, *, inputs: dict[str, str] | None = None) -> ValidationReport:
    """Build the frames (:mod:`expectations.frames`) and the suites (:mod:`expectations.suites`,
    from the ``validation`` section ``cfg`` and the ``labels`` section) of a project's files and
    run them (``allstar_file`` None: no source reads an allStar)."""
    from apogeenet.io.tables import read_table
    from apogeenet.labels.catalog import label_fractions
    from apogeenet.labels.files import TABLE1_FILE
    from apogeenet.labels.inputs import normalise_allstar
    from expectations.frames import build_frames
    from expectations.suites import build_suites

    allstar = normalise_allstar(read_table(allstar_file)) if allstar_file is not None else None
    frames = build_frames(read_table(labels_file), read_table(mstar_file), allstar, store,
                          split_sigmas=cfg.split_sigmas, fractions=label_fractions(labels),
                          table1_file=Path(labels_file).parent / TABLE1_FILE)
    suites = build_suites(young_fields=list(labels.young_fields), store_ids=store.index["apogee_id"].tolist(),
                          split_tolerance=cfg.split_tolerance, min_finite_fraction=cfg.min_finite_fraction,
                          ranges=labels.ranges, allow_duplicate_stars=cfg.allow_duplicate_stars)
    return run_suites(frames, suites, out_dir, inputs=inputs)
