"""Pipeline stages: wiring only. Each reads the validated parameters, calls the library module
that owns the work, and returns a :class:`~apogeenet.tracking.StageResult` that one helper logs
to MLflow and that the CLI (and so DVC) and the Prefect flows print."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from apogeenet.config import FluxUnit, Params
from apogeenet.errors import InputError, UserFacingError
from apogeenet.locks import one_writer
from apogeenet.labels.files import LABELS_FILE, MSTAR_FILE, TABLE1_FILE
from apogeenet.io.tables import read_truth
from apogeenet.tracking import StageResult, data_version, flat_params, stage_run

__all__ = ["StageError", "adapt_stage", "baselines_stage", "evaluate_stage", "label_stage", "predict_finish", "predict_plan", "predict_stage",
           "training_data", "train_stage", "validate_stage"]


class StageError(UserFacingError):
    """A stage cannot run: a missing input or a failed gate; the message says which."""


def _params(cfg: Params, *sections: str) -> dict:
    """The resolved parameters a stage depends on, flattened (``paths`` always included)."""
    return flat_params({name: getattr(cfg, name).model_dump(mode="json") for name in ("paths", *sections)})


def label_stage(cfg: Params, *, track: bool = True) -> StageResult:
    """Paper §2: the label catalog, Table 1 and the YSO network (MLflow experiment ``labels``)
    from ``paths.allstar``, ``paths.payne`` and ``paths.members``; splits of an earlier catalog
    in ``paths.labels`` are kept."""
    from apogeenet.io.tables import read_table
    from apogeenet.isochrones import shipped_parsec
    from apogeenet.labels.build import build_labels, save_label_set

    tables = {name: read_table(getattr(cfg.paths, name)) for name in ("allstar", "payne", "members")}
    out_dir, previous = cfg.paths.labels, cfg.paths.labels / LABELS_FILE
    splits = (dict(zip(*read_table(previous)[["APOGEE_ID", "SPLIT"]].to_numpy().T))
              if previous.exists() else None)
    with one_writer(out_dir, "label"), stage_run(track, "labels", "label") as run:
        label_set = build_labels(tables["allstar"], tables["payne"], tables["members"], shipped_parsec(),
                                 recipe=cfg.labels.recipe, young_fields=set(cfg.labels.young_fields),
                                 yso=cfg.yso, previous_splits=splits,
                                 on_epoch=lambda epoch, train, dev: run.log_step(
                                     {"yso_train_loss": train, "yso_dev_loss": dev}, epoch))
        metrics = save_label_set(label_set, out_dir)
        counts = {k: v for k, v in metrics.items()
                  if k.split("_")[0] in ("payne", "mstar", "yso") and k.split("_")[-1] in ("train", "dev", "test")}
        report = (f"{metrics['n_labels']} labels {counts}; {metrics['yso_outside_grid']} YSO predictions "
                  f"outside the isochrone grid left out\nYSO network held-out RMS: log Teff "
                  f"{metrics['yso_net_log_teff_rms']:.4f} dex, log g {metrics['yso_net_logg_rms']:.4f} dex; "
                  f"Table 1 {metrics['table1']} -> {out_dir}")
        result = StageResult("label", metrics, _params(cfg, "labels", "yso"), report, {out_dir: "labels"})
        result = run.log(result)
    return result


def validate_stage(cfg: Params, *, track: bool = False) -> StageResult:
    """The Great Expectations suites on the labels, the M-dwarf selection and the store;
    ``passed`` is False when a suite fails."""
    from expectations.runner import validate_project

    from apogeenet.gate import validated_inputs
    from apogeenet.store import SpectraStore

    for needed in (cfg.paths.labels / LABELS_FILE, cfg.paths.labels / MSTAR_FILE):
        if not needed.exists():
            raise StageError(f"{needed} is missing: run `apogeenet label` first")
    with one_writer(cfg.paths.validation, "validate"), stage_run(track, "validate", "validate") as run:
        report = validate_project(cfg.paths.labels / LABELS_FILE, cfg.paths.labels / MSTAR_FILE, cfg.paths.allstar,
                                  SpectraStore(cfg.paths.store), cfg.validation, cfg.labels.young_fields,
                                  cfg.paths.validation,
                                  inputs=validated_inputs(cfg.paths.labels / LABELS_FILE, cfg.paths.store))
        metrics = {f"{name}/passed": int(s["success"]) for name, s in report.suites.items()}
        result = StageResult("validate", metrics, _params(cfg, "validation", "labels"),
                             "\n".join([*report.summary_lines(), f"Data Docs: {report.docs}"]),
                             {cfg.paths.validation / "summary.json": "validation"}, passed=report.success)
        result = run.log(result)
    return result


def training_data(cfg: Params):
    """The store joined to the label catalog (:class:`apogeenet.train.LabelledSpectra`), once
    the gate has passed on exactly these labels and this store."""
    from apogeenet.gate import require_validation
    from apogeenet.train import LabelledSpectra

    labels = cfg.paths.labels / LABELS_FILE
    if not labels.exists():
        raise StageError(f"{labels} is missing: run `apogeenet label` first")
    require_validation(cfg.paths.validation, labels, cfg.paths.store)
    return LabelledSpectra.from_files(cfg.paths.store, labels, cfg.paths.labels / TABLE1_FILE)


def _finish_model(cfg: Params, data, predictor, out_dir: Path, run, *, stage: str, params: dict, summary: dict,
                  summary_in_file: bool, headline: str, tags: dict) -> StageResult:
    """Fit the σ calibration and the domain reference on the dev split (:mod:`apogeenet.reliability`),
    save ``model.pt`` with them, write Tables 2/3, plots and metrics.json (with ``summary`` when
    ``summary_in_file``), log them and register the model (when tracking): the common end of
    ``train`` and ``adapt``."""
    from apogeenet.evaluate import EVALUATION_FILES, predictions_frame, write_evaluation
    from apogeenet.reliability import calibrate_predictor

    try:
        summary = {**summary, **calibrate_predictor(predictor, data, cfg.predict, cfg.calibration,
                                                     read_truth(cfg.paths.truth))}
    except InputError as exc:
        raise StageError(f"cannot calibrate the uncertainties: {exc}") from None
    predictor.save(out_dir / "model.pt")
    table_metrics, tables = write_evaluation(predictions_frame(data, predictor), data.table1, out_dir,
                                             extra_metrics=summary if summary_in_file else None)
    metrics = {**summary, **table_metrics}
    artifacts = {out_dir / name: "evaluation" for name in EVALUATION_FILES if name != "predictions.parquet"}
    report = f"{headline}\n{tables}"
    result = run.log(StageResult(stage, metrics, params, report, artifacts, tags))
    if not run.active:
        return result
    from apogeenet.registry import log_and_register

    dev = data.select(split="dev")
    registry = log_and_register(predictor, data.prepared(dev[:2]),
                                dev_loss_of=lambda p: data.predictor_loss(p, dev))
    import mlflow

    mlflow.set_tags({"registered_version": registry["version"], "champion": str(registry["promoted"])})
    replaced = registry.pop("replaced_unusable_champion", "")
    warning = f"the champion could not be read and was replaced ({replaced})\n" if replaced else ""
    return dataclasses.replace(result, metrics={**metrics, **registry},
                               report=f"{warning}registered apogeenet version {registry['version']} (candidate); champion "
                                      f"is version {registry['champion_version']}\n{report}")


def train_stage(cfg: Params, *, init_model: str | None = None, out_dir: Path | None = None,
                track: bool = True, run_name: str = "pretrain", progress: bool = False) -> StageResult:
    """§3.3: train the active profile (or continue from ``init_model``, a path or MLflow URI),
    save ``model.pt``, Tables 2/3 and plots; with ``track`` log to MLflow and register."""
    from apogeenet.model_uri import open_model
    from apogeenet.serving import Predictor
    from apogeenet.train import train_model

    data = training_data(cfg)
    out_dir = Path(out_dir or cfg.paths.model)
    profile = cfg.train.active()
    train_pos, dev_pos = data.select(split="train"), data.select(split="dev")
    if init_model:
        start = open_model(init_model)
        init_state, data.flux_scale = start.model.state_dict(), start.flux_scale
    else:
        init_state = None
        data.flux_scale = data.median_flux(train_pos) if profile.flux_unit is FluxUnit.CONSTANT else None
    params = {**_params(cfg, "train", "calibration"), "flux_scale": data.flux_scale, "n_train": len(train_pos),
              "n_dev": len(dev_pos), "init_model": init_model or ""}
    tags = {"data_version": data_version(cfg.paths.labels / LABELS_FILE)}
    with one_writer(out_dir, "train"), stage_run(track, "train", run_name, tags=tags) as run:
        result = train_model(data, train_pos, dev_pos, profile, out_dir / "checkpoints", init_state=init_state,
                             progress=progress, on_epoch=lambda r: run.log_step(
                                 {k: r[k] for k in ("train_loss", "dev_loss", "samples_per_s")}, r["epoch"]))
        predictor = Predictor(result.model, data.table1, data.flux_scale)
        headline = (f"best dev loss {result.best_dev_loss:.4f} at epoch {result.best_epoch} "
                    f"(profile {cfg.train.profile})")
        return _finish_model(cfg, data, predictor, out_dir, run, stage="train", params=params, tags=tags,
                             summary={"best_dev_loss": result.best_dev_loss, "best_epoch": result.best_epoch},
                             summary_in_file=False, headline=headline)


def adapt_stage(cfg: Params, *, init_model: str | None = None, out_dir: Path | None = None,
                track: bool = True) -> StageResult:
    """§3.4 from ``init_model`` (default: the registry's champion when tracking, else the trained
    ``model.pt``) with the rounds' recipe ``adapt.training``; one nested MLflow run per round;
    the adapted model is registered (champion only if it beats the champion's dev loss)."""
    from apogeenet.adapt import adapt_model
    from apogeenet.model_uri import open_model
    from apogeenet.serving import Predictor

    data = training_data(cfg)
    out_dir = Path(out_dir or cfg.paths.adapted)
    init_model = init_model or ("models:/apogeenet@champion" if track else str(cfg.paths.model / "model.pt"))
    start = open_model(init_model)
    data.flux_scale = start.flux_scale
    params = {**_params(cfg, "adapt", "calibration"), "flux_scale": data.flux_scale, "init_model": init_model}
    tags = {"data_version": data_version(cfg.paths.labels / LABELS_FILE), "init_model": init_model}

    with one_writer(out_dir, "adapt"), stage_run(track, "train", "adapt", tags=tags) as run:
        def on_round(record, history):
            with run.nested(f"round {record['round']}") as child:
                child.log(StageResult("adapt round", {"focus_dev_loss": record["focus_dev_loss"],
                                                      "best_dev_loss": record["dev_loss"]},
                                      {k: record[k] for k in ("round", "n_train", "n_payne")}, ""))
                for h in history:
                    child.log_step({"train_loss": h["train_loss"], "dev_loss": h["dev_loss"]}, h["epoch"])

        result = adapt_model(data, start.model.state_dict(), cfg.adapt, out_dir / "checkpoints",
                             on_round=on_round)
        summary = {"initial_focus_dev_loss": result.initial_focus_loss,
                   "adapted_focus_dev_loss": result.best_focus_loss, "best_round": result.best_round,
                   "rounds": len(result.rounds)}
        headline = (f"{len(result.rounds)} rounds; MSTAR+YSO dev loss {result.initial_focus_loss:.4f} -> "
                    f"{result.best_focus_loss:.4f} (best round {result.best_round})")
        return _finish_model(cfg, data, Predictor(result.model, data.table1, data.flux_scale), out_dir, run,
                             stage="adapt", params=params, summary=summary, summary_in_file=True,
                             headline=headline, tags=tags)


def baselines_stage(cfg: Params, *, track: bool = True, progress: bool = False) -> StageResult:
    """Ridge and The Cannon on the same splits as APOGEE Net: per model its predictions,
    Tables 2/3 and metrics (against the truth too, on a synthetic survey), each logged as its
    own run of the MLflow experiment ``evaluate`` beside APOGEE Net's."""
    from apogeenet.baselines import baseline_frames
    from apogeenet.evaluate import truth_metrics, write_evaluation

    data, truth = training_data(cfg), read_truth(cfg.paths.truth)
    tags = {"data_version": data_version(cfg.paths.labels / LABELS_FILE)}
    reports, metrics = [], {}
    with one_writer(cfg.paths.baselines, "baselines"):
        for name, (frame, fit) in baseline_frames(data, cfg.baselines, progress).items():
            out_dir = cfg.paths.baselines / name
            found, tables = write_evaluation(frame, data.table1, out_dir,
                                             extra_metrics=truth_metrics(frame, truth) if truth is not None else None)
            result = StageResult(name, found, {**_params(cfg, "baselines"), **{f"fit.{k}": v for k, v in fit.items()}},
                                 f"== {name}\n{tables}", {out_dir: "evaluation"}, {**tags, "model": name})
            with stage_run(track, "evaluate", name, tags=result.tags) as run:
                run.log(result)
            reports.append(result.report)
            metrics |= {f"{name}/{k}": v for k, v in found.items()}
    return StageResult("baselines", metrics, _params(cfg, "baselines"), "\n".join(reports))


def evaluate_stage(cfg: Params, *, model: str | None = None, baseline: str | None = None,
                   out_dir: Path | None = None, track: bool = True) -> StageResult:
    """Tables 2/3 and plots of ``model`` (default: the adapted ``model.pt``), the quality bar
    (test-split RMS gain over the training mean in every group) and, against ``baseline``
    (default: the trained ``model.pt`` when it exists), the §3.4 adaptation check, the calibration
    of its σ on the test split (before and after; z histograms); ``passed`` when every check
    passes (MLflow experiment ``evaluate``)."""
    out_dir = Path(out_dir or cfg.paths.evaluation)
    with one_writer(out_dir, "evaluate"):
        return _evaluate(cfg, model=model, baseline=baseline, out_dir=out_dir, track=track)


def _evaluate(cfg: Params, *, model: str | None, baseline: str | None, out_dir: Path, track: bool) -> StageResult:
    import pandas as pd

    from apogeenet.config import Uncertainty
    from apogeenet.evaluate import predictions_frame, write_assessment
    from apogeenet.model_uri import open_model
    from apogeenet.reliability import split_uncertainties, write_calibration

    data = training_data(cfg)
    model = model or str(cfg.paths.adapted / "model.pt")
    default_baseline = cfg.paths.model / "model.pt"
    baseline = baseline or (str(default_baseline) if default_baseline.exists() else None)
    before = (baseline, predictions_frame(data, open_model(baseline))) if baseline not in (None, model) else None
    others = {str(name): pd.read_parquet(path) for name in cfg.baselines.models
              if (path := cfg.paths.baselines / name / "predictions.parquet").exists()}
    predictor, truth = open_model(model), read_truth(cfg.paths.truth)
    found, calibration = {}, ""
    if cfg.predict.uncertainty is not Uncertainty.NONE:  # σ of the test split, before and after calibration
        found, calibration = write_calibration(split_uncertainties(predictor, data, cfg.predict), truth, out_dir)
        (out_dir / "calibration.md").write_text(calibration.lstrip() + "\n")
    metrics, report, passed = write_assessment(predictions_frame(data, predictor), data.table1, out_dir,
                                               cfg=cfg.evaluate, model=model, truth=truth,
                                               before=before, others=others, extra_metrics=found)
    report += calibration
    tags = {"model": model, "baseline": baseline or "", "data_version": data_version(cfg.paths.labels / LABELS_FILE)}
    with stage_run(track, "evaluate", "apogeenet", tags=tags) as run:
        result = StageResult("evaluate", metrics, {**_params(cfg, "evaluate"), "model": model,
                                                   "baseline": baseline or ""},
                             report, {out_dir: "evaluation"}, tags, passed=passed)
        result = run.log(result)
    return result


def predict_plan(cfg: Params, *, model: str | None = None, store: Path | None = None,
                 out_dir: Path | None = None, draws: int | None = None,
                 error_reference: str | None = None) -> tuple[Params, Path]:
    """The shard plan of a batch inference (:mod:`apogeenet.shards`): the model opened once
    (checked, its weights pinned beside the parts), the store's rows cut into shards; returns
    the parameters with the model resolved and the plan file."""
    from apogeenet.model_uri import open_model
    from apogeenet.shards import plan_predict
    from apogeenet.store import INDEX_FILE

    if error_reference is not None:
        cfg = cfg.with_overrides({"predict.error_reference": error_reference})
    spec = model or cfg.predict.model
    predictor = open_model(spec)
    store_dir = Path(store or cfg.paths.store)
    if not (store_dir / INDEX_FILE).exists():
        raise StageError(f"{store_dir} is not a spectra store: run `apogeenet ingest SRC {store_dir}` first")
    out_dir = Path(out_dir or cfg.paths.catalog)
    plan = plan_predict(predictor, store_dir, out_dir, cfg.predict, draws or cfg.predict.draws)
    return cfg.with_overrides({"predict.model": spec}), plan.file


def predict_finish(cfg: Params, plan_file: Path, *, out_dir: Path | None = None, track: bool = True,
                   catalog_name: str = "catalog") -> StageResult:
    """The Table 4 catalog (all rows and the clean view) as FITS, Parquet and CSV from the parts
    of the plan in ``plan_file``, the §4.1 YSO selection and age bins, plots and the uncertainty calibration
    against the labels (when present) and the survey's truth (MLflow experiment ``predict``)."""
    from apogeenet.catalog import build_catalog, write_products
    import numpy as np

    from apogeenet.io.tables import read_table
    from apogeenet.serving import Predictor
    from apogeenet.shards import ShardPlan, merge_parts

    p, spec = cfg.predict, cfg.predict.model
    plan = ShardPlan.read(plan_file)
    prediction, sigma, distance = merge_parts(plan)
    predictor = Predictor.load(plan.model)
    calibration = predictor.calibrations.get(str(p.uncertainty))
    labels_file = cfg.paths.labels / LABELS_FILE
    index = plan.index()
    frame = build_catalog(index, prediction, sigma, read_table(labels_file) if labels_file.exists() else None,
                          hot_teff=p.hot_teff, bounds={k: tuple(v) for k, v in p.bounds.items()},
                          n_good_pixels=index["n_good_pixels"].to_numpy(), min_good_pixels=p.min_good_pixels,
                          calibration=calibration,
                          domain_distance=distance,
                          domain_threshold=predictor.domain.threshold if predictor.domain else np.inf,
                          max_sigma=p.max_sigma)
    meta = {"model": spec, "draws": plan.draws, "seed": p.seed, "errcap": p.error_cap,
            "errref": str(p.error_reference), "sigma": str(p.uncertainty),
            "sigcal": f"{calibration.method} vs {calibration.reference}" if calibration else "none",
            "domthr": predictor.domain.threshold if predictor.domain else "none"}
    out_dir = Path(out_dir or plan.directory.parent.parent)
    store_dir = plan.store
    metrics, summary = write_products(frame, out_dir, meta, truth=read_truth(cfg.paths.truth), source=store_dir,
                                      name=catalog_name)
    report = (f"{summary}\ncatalog: {out_dir}/{catalog_name}.fits (.parquet, .csv), clean view {catalog_name}_clean.*, "
              f"plots kiel_by_type.png, sigma_vs_snr.png, yso_selection.png ({len(frame)} spectra)")
    with stage_run(track, "predict", "predict", tags={"model": spec, "store": store_dir}) as run:
        result = StageResult("predict", metrics, {**_params(cfg, "predict"), "draws_used": plan.draws,
                                                  "shards": plan.n_shards},
                             report, {out_dir: "catalog"}, {"model": spec, "store": store_dir})
        result = run.log(result)
    return result


def predict_stage(cfg: Params, *, model: str | None = None, store: Path | None = None,
                  out_dir: Path | None = None, draws: int | None = None, error_reference: str | None = None,
                  track: bool = True, progress: bool = False, catalog_name: str = "catalog") -> StageResult:
    """Batch inference (§3.5-3.6, §4) over a spectra store in this process: the plan, each shard
    that has no part yet (a rerun after a kill computes only those), the catalog
    (:func:`predict_finish`). The Prefect flow ``predict`` runs the same shards on Dask."""
    from apogeenet.locks import one_writer
    from apogeenet.progress import progress_bar
    from apogeenet.shards import ShardPlan, predict_shard
    from apogeenet.store import StoreChanged

    with one_writer(out_dir or cfg.paths.catalog, "predict"):
        for attempt in range(3):  # an ingest while predicting: plan again on the new store
            planned, plan_file = predict_plan(cfg, model=model, store=store, out_dir=out_dir, draws=draws,
                                              error_reference=error_reference)
            plan = ShardPlan.read(plan_file)
            missing = plan.missing()
            try:
                with progress_bar(sum(len(plan.rows(k)) for k in missing), f"predict ({plan.n_shards} shards, "
                                  f"{planned.predict.uncertainty})", enabled=progress) as bar:
                    for number in missing:
                        predict_shard(plan.file, number)
                        bar.advance(len(plan.rows(number)))
            except StoreChanged:
                if attempt == 2:
                    raise
                continue
            return predict_finish(planned, plan_file, out_dir=out_dir, track=track, catalog_name=catalog_name)
