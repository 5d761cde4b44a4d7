"""Pipeline stages as functions of the validated parameters: the one implementation that the CLI
(and so DVC) and the Prefect flows both call. MLflow and Great Expectations enter here, at the
edge, never in the library modules below."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from apogeenet.config import Params
from apogeenet.errors import UserFacingError

__all__ = ["StageError", "adapt_stage", "evaluate_stage", "label_stage", "load_model", "predict_stage",
           "require_validation", "train_stage", "validate_stage"]


class StageError(UserFacingError):
    """A stage cannot run: a missing input or a failed gate; the message says which."""


def label_stage(cfg: Params, *, allstar: Path | None = None, payne: Path | None = None,
                members: Path | None = None, out_dir: Path | None = None, track: bool = True) -> dict:
    """Paper §2: build the label catalog, Table 1 and the YSO network; returns the metrics.

    Inputs default to the survey's catalogs under ``paths.raw``. Splits of an earlier catalog in
    ``out_dir`` are kept. With ``track`` the run, its parameters, the YSO network's training curve
    and every output are logged to MLflow (experiment ``labels``).
    """
    from apogeenet.io.tables import read_table
    from apogeenet.isochrones import shipped_parsec
    from apogeenet.labels.build import LABELS_FILE, YSOTraining, build_labels, save_label_set
    from apogeenet.synth.files import ALLSTAR_FILE, MEMBERS_FILE, PAYNE_FILE

    survey = cfg.paths.raw
    tables = {name: read_table(path or survey / default) for name, path, default in
              (("allstar", allstar, ALLSTAR_FILE), ("payne", payne, PAYNE_FILE),
               ("members", members, MEMBERS_FILE))}
    out_dir = Path(out_dir or cfg.paths.labels)
    previous = out_dir / LABELS_FILE
    splits = (dict(zip(*read_table(previous)[["APOGEE_ID", "SPLIT"]].to_numpy().T))
              if previous.exists() else None)

    def run(on_epoch=None):
        try:
            return build_labels(tables["allstar"], tables["payne"], tables["members"], shipped_parsec(),
                                recipe=cfg.labels.recipe, young_fields=set(cfg.labels.young_fields),
                                yso=YSOTraining(**cfg.yso.model_dump()), previous_splits=splits,
                                on_epoch=on_epoch)
        except ValueError as exc:
            raise StageError(str(exc)) from None

    if not track:
        return save_label_set(run(), out_dir)
    import mlflow

    from apogeenet.tracking import mlflow_run

    with mlflow_run("labels", "label"):
        mlflow.log_params({"recipe": cfg.labels.recipe, "young_fields": ",".join(cfg.labels.young_fields),
                           **{f"yso.{k}": v for k, v in cfg.yso.model_dump().items()}})
        label_set = run(lambda epoch, train, dev: mlflow.log_metrics(
            {"yso_train_loss": train, "yso_dev_loss": dev}, step=epoch))
        metrics = save_label_set(label_set, out_dir)
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_artifacts(str(out_dir), artifact_path="labels")
    return metrics


def validate_stage(cfg: Params, *, allstar: Path | None = None):
    """Run the Great Expectations suites on the labels, the M-dwarf selection and the store."""
    from expectations.frames import build_frames
    from expectations.runner import run_suites
    from expectations.suites import build_suites

    from apogeenet.io.tables import read_table
    from apogeenet.labels.build import LABELS_FILE, MSTAR_FILE
    from apogeenet.store import SpectraStore
    from apogeenet.synth.files import ALLSTAR_FILE

    labels_dir = cfg.paths.labels
    for needed in (labels_dir / LABELS_FILE, labels_dir / MSTAR_FILE):
        if not needed.exists():
            raise StageError(f"{needed} is missing: run `apogeenet label` first")
    catalog = read_table(labels_dir / LABELS_FILE)
    store = SpectraStore(cfg.paths.store)
    frames = build_frames(catalog, read_table(labels_dir / MSTAR_FILE),
                          read_table(allstar or cfg.paths.raw / ALLSTAR_FILE), store)
    suites = build_suites(young_fields=list(cfg.labels.young_fields),
                          store_ids=store.index["apogee_id"].tolist(),
                          split_tolerance=cfg.validation.split_tolerance,
                          min_finite_fraction=cfg.validation.min_finite_fraction,
                          allow_duplicate_stars=cfg.validation.allow_duplicate_stars)
    return run_suites(frames, suites, cfg.paths.validation, inputs=_validated_inputs(cfg))


def _validated_inputs(cfg: Params) -> dict[str, str]:
    """SHA-256 of the label catalog and of the store's index: what a validation run vouches for."""
    import hashlib

    from apogeenet.labels.build import LABELS_FILE
    from apogeenet.store import INDEX_FILE

    return {name: hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"
            for name, path in (("labels", cfg.paths.labels / LABELS_FILE), ("store_index", cfg.paths.store / INDEX_FILE))}


def require_validation(cfg: Params) -> None:
    """The gate: nothing trains on labels (or a store) that the Great Expectations suites have not
    passed as they are now."""
    import json

    summary = cfg.paths.validation / "summary.json"
    if not summary.exists():
        raise StageError(f"the labels have not been validated ({summary} is missing): run `apogeenet validate` first")
    report = json.loads(summary.read_text())
    if not report.get("success"):
        failed = ", ".join(sorted({f["suite"] for f in report.get("failures", [])})) or "see the summary"
        raise StageError(f"the labels failed validation ({failed}): fix them and run `apogeenet validate` again")
    if report.get("inputs") != _validated_inputs(cfg):
        raise StageError("the labels or the spectra store changed since they were validated: run "
                         "`apogeenet validate` again")


def _training_data(cfg: Params):
    """The store joined to the label catalog, and Table 1 (once the gate has passed)."""
    import json

    from apogeenet.io.tables import read_table
    from apogeenet.labels.build import LABELS_FILE, TABLE1_FILE
    from apogeenet.labels.catalog import Normalisation
    from apogeenet.store import SpectraStore
    from apogeenet.train import LabelledSpectra

    labels_dir = cfg.paths.labels
    for needed in (labels_dir / LABELS_FILE, labels_dir / TABLE1_FILE):
        if not needed.exists():
            raise StageError(f"{needed} is missing: run `apogeenet label` first")
    require_validation(cfg)
    table1 = Normalisation(**json.loads((labels_dir / TABLE1_FILE).read_text()))
    return LabelledSpectra(SpectraStore(cfg.paths.store), read_table(labels_dir / LABELS_FILE), table1)


def predictions_frame(data, predictor) -> pd.DataFrame:
    """The label catalog (stars with a spectrum) with PRED_TEFF, PRED_LOGG, PRED_FE_H."""
    from apogeenet.model import prepare_flux

    preds = []
    for start in range(0, len(data), 256):
        positions = np.arange(start, min(start + 256, len(data)))
        spectra = data.store.read(data.rows[positions])
        preds.append(predictor.predict(prepare_flux(spectra.flux, spectra.error)))
    pred = pd.concat(preds, ignore_index=True).add_prefix("PRED_")
    return pd.concat([data.catalog.reset_index(drop=True), pred], axis=1)


def evaluate_predictor(data, predictor, out_dir: Path) -> dict:
    """Tables 2 and 3 (Markdown and CSV), plots and metrics.json for one model."""
    return write_evaluation(predictions_frame(data, predictor), data.table1, out_dir)


def write_evaluation(frame: pd.DataFrame, table1, out_dir: Path) -> dict:
    """Tables 2 and 3, predictions.parquet, plots and metrics.json from a predictions frame."""
    import json

    from apogeenet.evaluate import (evaluation_tables, kiel_plot, label_vs_prediction_plot,
                                    metrics_from_tables, tables_markdown)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table2, table3 = evaluation_tables(frame, table1)
    table2.to_csv(out_dir / "table2.csv")
    table3.to_csv(out_dir / "table3.csv")
    (out_dir / "tables.md").write_text(tables_markdown(table2, table3))
    frame.to_parquet(out_dir / "predictions.parquet", index=False)
    label_vs_prediction_plot(frame, out_dir / "label_vs_prediction.png")
    kiel_plot(frame, out_dir / "kiel.png")
    metrics = metrics_from_tables(table2, table3)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def data_version(cfg: Params) -> str:
    """The DVC hash of the raw inputs (data.dvc) and a hash of the label catalog, for MLflow tags."""
    import hashlib

    import yaml

    from apogeenet.labels.build import LABELS_FILE

    dvc_file = Path("data.dvc")
    raw = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"] if dvc_file.exists() else "untracked"
    labels = cfg.paths.labels / LABELS_FILE
    label_hash = hashlib.sha256(labels.read_bytes()).hexdigest()[:12] if labels.exists() else "none"
    return f"data={raw};labels={label_hash}"


def train_stage(cfg: Params, *, init_model: str | None = None, out_dir: Path | None = None,
                track: bool = True, run_name: str = "pretrain", progress: bool = False) -> dict:
    """§3.3: train (or continue from ``init_model``, a path or MLflow model URI), evaluate
    Tables 2/3, save ``model.pt``; with ``track``, log everything to MLflow and register."""
    import dataclasses

    from apogeenet.serving import Predictor
    from apogeenet.train import TrainConfig, train_model

    data = _training_data(cfg)
    out_dir = Path(out_dir or cfg.paths.model)
    profile = cfg.train.active()
    train_cfg = TrainConfig(**profile.model_dump(exclude={"flux_unit"}), dropout=cfg.train.dropout,
                            seed=cfg.train.seed, amp=cfg.train.amp)
    train_pos, dev_pos = data.select(split="train"), data.select(split="dev")
    fresh_unit = data.median_flux(train_pos) if profile.flux_unit == "constant" else None
    init_state, data.flux_scale = _initial_state(init_model) if init_model else (None, fresh_unit)

    def dev_loss_of(predictor: Predictor) -> float:
        return _standardised_dev_loss(data, predictor)

    def fit(on_epoch=None):
        result = train_model(data, train_pos, dev_pos, train_cfg, out_dir / "checkpoints",
                             init_state=init_state, on_epoch=on_epoch, progress=progress)
        predictor = Predictor(result.model, data.table1, data.flux_scale)
        predictor.save(out_dir / "model.pt")
        metrics = evaluate_predictor(data, predictor, out_dir)
        return result, predictor, metrics

    if not track:
        result, _, metrics = fit()
        return {"best_dev_loss": result.best_dev_loss, "best_epoch": result.best_epoch, **metrics}
    import mlflow

    from apogeenet.registry import log_and_register
    from apogeenet.tracking import mlflow_run

    with mlflow_run("train", run_name, tags={"data_version": data_version(cfg)}):
        mlflow.log_params({"profile": cfg.train.profile, **dataclasses.asdict(train_cfg),
                           "flux_unit": profile.flux_unit, "flux_scale": data.flux_scale,
                           "n_train": len(train_pos), "n_dev": len(dev_pos),
                           "init_model": init_model or "", **{f"table1.{k}": v for k, v in data.table1.to_dict().items()}})
        result, predictor, metrics = fit(lambda r: mlflow.log_metrics(
            {"train_loss": r["train_loss"], "dev_loss": r["dev_loss"], "samples_per_s": r["samples_per_s"]},
            step=r["epoch"]))
        mlflow.log_metrics({k: v for k, v in metrics.items()})
        mlflow.log_metric("best_dev_loss", result.best_dev_loss)
        for name in ("tables.md", "table2.csv", "table3.csv", "label_vs_prediction.png", "kiel.png", "metrics.json"):
            mlflow.log_artifact(str(out_dir / name), artifact_path="evaluation")
        example = _raw_example(data, dev_pos)
        registry = log_and_register(predictor, example, dev_loss_of=dev_loss_of)
        mlflow.set_tags({"registered_version": registry["version"], "champion": str(registry["promoted"])})
    return {"best_dev_loss": result.best_dev_loss, "best_epoch": result.best_epoch, **registry, **metrics}


def load_model(spec: str):
    """The :class:`Predictor` of a ``model.pt`` path or an MLflow model URI
    (``models:/apogeenet@champion``, ``runs:/…``)."""
    from apogeenet.serving import Predictor

    if "://" in spec or spec.startswith(("models:/", "runs:/")):
        import mlflow

        from apogeenet.registry import load_predictor

        try:
            return load_predictor(spec)
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StageError(f"{spec}: cannot load this model ({reason}); `apogeenet models` lists "
                             "the registered versions") from None
    if not Path(spec).exists():
        raise StageError(f"{spec}: no such model file (give a model.pt or an MLflow URI such as "
                         "models:/apogeenet@champion)")
    return Predictor.load(spec)


def _raw_example(data, positions: np.ndarray) -> np.ndarray:
    """Two prepared raw spectra (bad pixels 0): the pyfunc's input example, as users pass it."""
    from apogeenet.model import prepare_flux

    spectra = data.store.read(data.rows[np.sort(positions[:2])])
    return prepare_flux(spectra.flux, spectra.error)


def _initial_state(init_model: str) -> tuple[dict, float]:
    """Weights and flux unit of the model to start from."""
    predictor = load_model(init_model)
    return predictor.model.state_dict(), predictor.flux_scale


def adapt_stage(cfg: Params, *, init_model: str | None = None, out_dir: Path | None = None,
                track: bool = True) -> dict:
    """§3.4 from ``init_model`` (default: the registry's champion when tracking, else the trained
    ``model.pt``); evaluates Tables 2/3 and, with ``track``, logs a parent run with one nested run
    per round and registers the adapted model (champion only if it beats the champion's dev loss)."""
    import dataclasses
    import json

    from apogeenet.adapt import AdaptConfig, adapt_model
    from apogeenet.serving import Predictor
    from apogeenet.train import TrainConfig

    data = _training_data(cfg)
    out_dir = Path(out_dir or cfg.paths.adapted)
    init_model = init_model or ("models:/apogeenet@champion" if track else str(cfg.paths.model / "model.pt"))
    init_state, data.flux_scale = _initial_state(init_model)
    profile = cfg.train.active().model_dump(exclude={"flux_unit"})
    profile.update(learning_rate=cfg.adapt.learning_rate or profile["learning_rate"],
                   schedule="constant", patience=cfg.adapt.patience)
    train_cfg = TrainConfig(**profile, dropout=cfg.train.dropout, seed=cfg.train.seed, amp=cfg.train.amp)
    adapt_cfg = AdaptConfig(**cfg.adapt.model_dump(exclude={"learning_rate", "patience"}))

    def finish(result) -> dict:
        predictor = Predictor(result.model, data.table1, data.flux_scale)
        predictor.save(out_dir / "model.pt")
        metrics = evaluate_predictor(data, predictor, out_dir)
        summary = {"initial_focus_dev_loss": result.initial_focus_loss,
                   "adapted_focus_dev_loss": result.best_focus_loss, "best_round": result.best_round,
                   "rounds": len(result.rounds)}
        (out_dir / "metrics.json").write_text(json.dumps({**summary, **metrics}, indent=2, sort_keys=True) + "\n")
        return predictor, {**summary, **metrics}

    if not track:
        result = adapt_model(data, init_state, train_cfg, adapt_cfg, out_dir / "checkpoints")
        return finish(result)[1]
    import mlflow

    from apogeenet.registry import log_and_register
    from apogeenet.tracking import mlflow_run

    def on_round(record, history):
        with mlflow.start_run(run_name=f"round {record['round']}", nested=True):
            mlflow.log_params({"round": record["round"], "n_train": record["n_train"],
                               "n_payne": record["n_payne"]})
            for h in history:
                mlflow.log_metrics({"train_loss": h["train_loss"], "dev_loss": h["dev_loss"]}, step=h["epoch"])
            mlflow.log_metrics({"focus_dev_loss": record["focus_dev_loss"], "best_dev_loss": record["dev_loss"]})

    with mlflow_run("train", "adapt", tags={"data_version": data_version(cfg), "init_model": init_model}):
        mlflow.log_params({**{f"adapt.{k}": v for k, v in dataclasses.asdict(adapt_cfg).items()},
                           **dataclasses.asdict(train_cfg), "flux_scale": data.flux_scale})
        result = adapt_model(data, init_state, train_cfg, adapt_cfg, out_dir / "checkpoints",
                             on_round=on_round)
        predictor, metrics = finish(result)
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        for name in ("tables.md", "table2.csv", "table3.csv", "label_vs_prediction.png", "kiel.png", "metrics.json"):
            mlflow.log_artifact(str(out_dir / name), artifact_path="evaluation")

        def dev_loss_of(p):
            return _standardised_dev_loss(data, p)

        registry = log_and_register(predictor, _raw_example(data, data.select(split="dev")),
                                    dev_loss_of=dev_loss_of)
    return {**registry, **metrics}


def _survey_truth(cfg: Params) -> pd.DataFrame | None:
    """True parameters of a synthetic survey (indexed by APOGEE_ID), None for real data."""
    from apogeenet.io.tables import read_table
    from apogeenet.synth.files import TRUTH_FILE

    path = cfg.paths.raw / TRUTH_FILE
    return read_table(path).set_index("APOGEE_ID") if path.exists() else None


def _standardised_dev_loss(data, predictor) -> float:
    """Standardised MSE on the dev set through the predictor's own flux unit."""
    from apogeenet.model import prepare_flux

    dev = data.select(split="dev")
    spectra = data.store.read(data.rows[dev])
    physical = predictor.predict(prepare_flux(spectra.flux, spectra.error)).to_numpy()
    z = (physical - data.table1.mean) / data.table1.std
    return float(np.mean((z - data.targets[dev]) ** 2))


def evaluate_stage(cfg: Params, *, model: str | None = None, baseline: str | None = None,
                   out_dir: Path | None = None, track: bool = True) -> dict:
    """Tables 2/3 and plots of ``model`` (default: the adapted ``model.pt``), the quality bar
    (test-split RMS gain over the training mean in every group) and, against ``baseline``
    (default: the trained ``model.pt`` when it exists), the §3.4 adaptation check.

    Writes quality.md/.csv, adaptation.csv and metrics.json (Table metrics, ``quality/…`` gains,
    ``quality/passed`` and ``adaptation/passed`` as 0/1); with ``track`` an MLflow run in the
    ``evaluate`` experiment logs them.
    """
    import json

    from apogeenet.evaluate import adaptation_effect, quality_bar

    data = _training_data(cfg)
    out_dir = Path(out_dir or cfg.paths.evaluation)
    model = model or str(cfg.paths.adapted / "model.pt")
    default_baseline = cfg.paths.model / "model.pt"
    baseline = baseline or (str(default_baseline) if default_baseline.exists() else None)
    predictor = load_model(model)
    frame = predictions_frame(data, predictor)
    metrics = write_evaluation(frame, data.table1, out_dir)
    quality = quality_bar(frame, cfg.evaluate.min_gain, truth=_survey_truth(cfg))
    quality.to_csv(out_dir / "quality.csv")
    metrics |= {f"quality/{g}/{p}_gain": float(v) for (g, p), v in quality["gain"].items()}
    metrics["quality/passed"] = int(quality["passed"].all())
    if "reachable" in quality:  # the criteria a perfect model could meet, given the labels' errors
        metrics["quality/passed_reachable"] = int(quality.loc[quality["reachable"], "passed"].all())
    sections = [f"Quality bar of {model} (test split): gain = RMS of predicting the training mean / RMS "
                "of prediction − label"
                + ("; label_error = RMS of label − truth (synthetic survey), reachable = a model that "
                   "predicts the truth would pass" if "label_error" in quality else "")
                + "\n\n", quality.reset_index().round(3).to_markdown(index=False)]
    if "reachable" in quality:
        against_truth = quality["gain_truth"] >= quality["required"]
        metrics["quality/n_passed_truth"] = int(against_truth.sum())
        sections.append(f"\n\nPassed {int(quality['passed'].sum())} of {len(quality)} criteria; of the "
                        f"{int(quality['reachable'].sum())} reachable ones "
                        f"{int(quality.loc[quality['reachable'], 'passed'].sum())} passed. Against the truth "
                        f"(gain_truth) {int(against_truth.sum())} of {len(quality)} pass.")
    compared = quality["vs_paper"].dropna()
    metrics |= {f"quality/{g}/{p}_vs_paper": float(v) for (g, p), v in compared.items()}
    sections.append(f"\n\nTest scatter (RMS of prediction − label) at or below the paper's Table 3 in "
                    f"{int((compared <= 1).sum())} of {len(compared)} cells (paper_rms, vs_paper).")
    if baseline is not None and baseline != model:
        before = predictions_frame(data, load_model(baseline))
        effect = adaptation_effect(before, frame, data.table1, cfg.evaluate.max_payne_scatter_increase)
        effect.to_csv(out_dir / "adaptation.csv")
        metrics |= {f"adaptation/{check}_change": float(v) for check, v in effect["change"].items()}
        metrics["adaptation/passed"] = int(effect["passed"].all())
        sections += [f"\n\nAdaptation check (§3.4) of {model} against {baseline}: MStar and YSO dev MSE must "
                     f"fall; Payne test scatter may rise by at most "
                     f"{cfg.evaluate.max_payne_scatter_increase:.0%}\n\n", effect.round(4).to_markdown()]
    (out_dir / "quality.md").write_text("".join(sections) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if track:
        import mlflow

        from apogeenet.tracking import mlflow_run

        with mlflow_run("evaluate", "evaluate", tags={"model": model, "baseline": baseline or "",
                                                      "data_version": data_version(cfg)}):
            mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(out_dir), artifact_path="evaluation")
    return metrics


def predict_stage(cfg: Params, *, model: str | None = None, store: Path | None = None,
                  out_dir: Path | None = None, draws: int | None = None, error_reference: str | None = None,
                  track: bool = True, progress: bool = False) -> dict:
    """Batch inference (§3.5-3.6, §4) over a spectra store: single-pass predictions and
    Monte-Carlo σ, the Table 4 catalog (all rows and the clean view) as FITS, Parquet and CSV,
    the §4.1 YSO selection and age bins, plots and the uncertainty calibration. Labels from
    ``paths.labels`` are joined when present; the synthetic survey's truth adds a calibration
    against the truth. With ``track`` everything is logged to MLflow (experiment ``predict``)."""
    import json

    from apogeenet.catalog import (FLAG_BITS, build_catalog, kiel_by_type_plot, sigma_snr_plot,
                                   write_catalog, yso_selection_plot)
    from apogeenet.io.tables import read_table
    from apogeenet.labels.build import LABELS_FILE
    from apogeenet.progress import progress_bar
    from apogeenet.store import SpectraStore
    from apogeenet.train import best_device
    from apogeenet.uncertainty import calibration, mc_predict, seed_keys

    spec = model or cfg.predict.model
    predictor = load_model(spec).to(best_device())
    store_dir = Path(store or cfg.paths.store)
    if not (store_dir / "index.parquet").exists():
        raise StageError(f"{store_dir} is not a spectra store: run `apogeenet ingest SRC {store_dir}` first")
    spectra = SpectraStore(store_dir)
    out_dir = Path(out_dir or cfg.paths.catalog)
    p = cfg.predict.model_copy(update={"error_reference": error_reference or cfg.predict.error_reference})
    n_draws = draws or p.draws
    index = spectra.index.reset_index(drop=True)
    keys = seed_keys(index["apogee_id"])
    n = len(index)
    prediction, sigma = np.empty((n, 3)), np.empty((n, 3))
    with progress_bar(n, f"predict ({n_draws} draws)", enabled=progress) as bar:
        for rows, batch in spectra.iter_batches(p.spectra_per_block):
            result = mc_predict(predictor, batch.flux, batch.error, keys[rows], n_draws=n_draws,
                                seed=p.seed, cap=p.error_cap, max_batch=p.max_batch,
                                forward_batch=p.forward_batch, reference=p.error_reference)
            prediction[rows], sigma[rows] = result.prediction, result.sigma
            bar.advance(len(rows))
    labels_file = cfg.paths.labels / LABELS_FILE
    labels = read_table(labels_file) if labels_file.exists() else None
    frame = build_catalog(index, prediction, sigma, labels, hot_teff=p.hot_teff,
                          bounds={k: tuple(v) for k, v in p.bounds.items()}, n_good_pixels=index["n_good_pixels"].to_numpy(),
                          min_good_pixels=p.min_good_pixels)
    meta = {"model": spec, "draws": n_draws, "seed": p.seed, "errcap": p.error_cap, "errref": p.error_reference}
    clean = frame[frame["FLAGS"] == 0]
    files = write_catalog({"catalog": frame, "catalog_clean": clean}, out_dir, meta)
    files += [kiel_by_type_plot(clean, out_dir / "kiel_by_type.png"),
              sigma_snr_plot(clean, out_dir / "sigma_vs_snr.png"),
              yso_selection_plot(frame, out_dir / "yso_selection.png")]
    reports = {}
    truth = _survey_truth(cfg)
    test = frame[frame["DATA_SET"] == "test"]
    if truth is not None and len(test):
        reports["truth"] = calibration(test, truth)
    if len(test):
        reports["labels"] = calibration(test, test.set_index("APOGEE_ID")[
            ["TEFF_LABEL", "LOGG_LABEL", "FE_H_LABEL"]].rename(columns=lambda c: c[:-6]))
    metrics = {"n_spectra": n, "n_clean": len(clean),
               **{f"n_{flag.lower()}": int((frame["FLAGS"] & bit > 0).sum()) for flag, bit in FLAG_BITS.items()},
               "n_yso_candidates": int(frame["YSO_CANDIDATE"].sum())}
    lines = [f"Catalog of {n} spectra from {store_dir} by {spec}: {len(clean)} clean, "
             + ", ".join(f"{metrics[f'n_{flag.lower()}']} {flag}" for flag in FLAG_BITS)
             + f", {metrics['n_yso_candidates']} YSO candidates\n"]
    for name in ("TEFF", "LOGG", "FE_H"):
        metrics[f"median_sigma/{name.lower()}"] = float(np.median(clean[f"{name}_ERR"])) if len(clean) else np.nan
    for against, table in reports.items():
        table.to_csv(out_dir / f"calibration_{against}.csv")
        lines += [f"\nUncertainty calibration on the test split against the {against}: z = (prediction - "
                  f"{'label' if against == 'labels' else against}) / sigma\n\n", table.round(4).to_markdown(), "\n"]
        for parameter, row in table.iterrows():
            for column in ("spearman_sigma_snr", "z_std", "z_robust_sigma", "frac_within_1sigma"):
                metrics[f"calibration_{against}/{parameter.lower()}_{column}"] = float(row[column])
    (out_dir / "summary.md").write_text("".join(lines))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if track:
        import mlflow

        from apogeenet.tracking import mlflow_run

        with mlflow_run("predict", "predict", tags={"model": spec, "store": str(store_dir)}):
            mlflow.log_params({"draws": n_draws, "seed": p.seed, "error_cap": p.error_cap,
                               "error_reference": p.error_reference,
                               "hot_teff": p.hot_teff, "flux_scale": predictor.flux_scale})
            mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
            mlflow.log_artifacts(str(out_dir), artifact_path="catalog")
    return metrics
