"""Stage ``predict`` (§3.5-3.6, §4): batch inference of ``predict.model`` over ``paths.store`` in
shards (:mod:`apogeenet.shards`) and the Table 4 catalog ``predict.catalog_name`` in
``paths.catalog`` — all rows and the clean view as FITS, Parquet and CSV, the §4 YSO selection,
plots and the σ calibration against the labels and the survey's truth (MLflow experiment
``predict``). A rerun after a kill computes only the shards without a part; the Prefect flow
``predict`` runs the same shards on Dask first, then this stage merges them."""

from __future__ import annotations

from pathlib import Path

from apogeenet.config import Params, Uncertainty
from apogeenet.locks import one_writer
from apogeenet.gate import file_sha256
from apogeenet.pipeline.common import StageError, stage_params
from apogeenet.shards import ShardPlan
from apogeenet.tracking import StageResult, Tracker, tracked

__all__ = ["listed", "plan", "run", "run_files"]

PLAN_ATTEMPTS = 3
"""Plans made in one run when an ingest replaces the store under it (each then plans again)."""


def plan(cfg: Params) -> ShardPlan:
    """The shard plan of a run: the model opened once (checked, its weights pinned beside the
    parts), the store's rows cut into shards (an interrupted run's plan is found again)."""
    from apogeenet.model_uri import open_model
    from apogeenet.shards import plan_predict
    from apogeenet.store import INDEX_FILE

    predictor = open_model(cfg.predict.model)
    if not (cfg.paths.store / INDEX_FILE).exists():
        raise StageError(f"{cfg.paths.store} is not a spectra store: run `apogeenet ingest SRC {cfg.paths.store}` first")
    return plan_predict(predictor, cfg.paths.store, cfg.paths.catalog, cfg.predict)


@tracked("predict", "predict")
def run(cfg: Params, tracker: Tracker) -> StageResult:
    from apogeenet.progress import progress_bar
    from apogeenet.shards import predict_shard
    from apogeenet.store import StoreChanged

    with one_writer(cfg.paths.catalog, "predict"):
        for attempt in range(PLAN_ATTEMPTS):  # an ingest while predicting: plan again on the new store
            planned = plan(cfg)
            missing = planned.missing()
            try:
                with progress_bar(sum(len(planned.rows(k)) for k in missing), f"predict ({planned.n_shards} shards, "
                                  f"{cfg.predict.uncertainty})", enabled=tracker.progress) as bar:
                    for number in missing:
                        predict_shard(planned.file, number)
                        bar.advance(len(planned.rows(number)))
            except StoreChanged:
                if attempt == PLAN_ATTEMPTS - 1:
                    raise
                continue
            return _catalog(cfg, planned)


def _catalog(cfg: Params, planned: ShardPlan) -> StageResult:
    """The catalog products from the parts of ``planned``."""
    import numpy as np

    from apogeenet.catalog import build_catalog, header_meta, write_products
    from apogeenet.io.tables import read_table, read_truth
    from apogeenet.labels.files import LABELS_FILE
    from apogeenet.serving import Predictor
    from apogeenet.shards import merge_parts

    p, out_dir, name = planned.predict, cfg.paths.catalog, cfg.predict.catalog_name
    prediction, sigma, model_sigma, distance = merge_parts(planned)
    predictor = Predictor.load(planned.model)
    labels_file = cfg.paths.labels / LABELS_FILE
    trained_on = predictor.provenance.get("labels_sha256")
    given = file_sha256(labels_file) if labels_file.exists() and trained_on else trained_on
    if given != trained_on:
        raise StageError(f"{labels_file} holds other labels than {cfg.predict.model} was trained on (SHA-256 "
                         f"{given[:12]}… vs {trained_on[:12]}…): its LABEL columns and splits would "
                         "be wrong; train on these labels (`dvc repro`) or give --labels the model's own")
    index = planned.index()
    calibration = predictor.calibrations.get(str(p.uncertainty))
    frame = build_catalog(index, prediction, sigma, read_table(labels_file) if labels_file.exists() else None,
                          hot_teff=p.hot_teff, bounds={k: tuple(v) for k, v in p.bounds.items()},
                          n_good_pixels=index["n_good_pixels"].to_numpy(), min_good_pixels=p.min_good_pixels,
                          calibration=calibration, domain_distance=distance, model_sigma=model_sigma,
                          domain_threshold=predictor.domain.threshold if predictor.domain else np.inf,
                          max_sigma=p.max_sigma, members=len(predictor.members))
    meta = header_meta(cfg.predict.model, p, predictor, version=registry_version(cfg.predict.model),
                       weights_sha256=file_sha256(planned.model))
    metrics, summary = write_products(frame, out_dir, meta, truth=read_truth(cfg.paths.truth), source=planned.store,
                                      name=name)
    if calibration is None and p.uncertainty is not Uncertainty.NONE:
        summary += (f"\nwarning: {cfg.predict.model} has no sigma calibration for {p.uncertainty} (its dev split was "
                    "too small, calibration.min_stars): *_ERR is pixel noise only and every row is flagged "
                    "UNCALIBRATED, so the clean view is empty\n")
    report = (f"{summary}\ncatalog: {out_dir}/{name}.fits (.parquet, .csv), clean view {name}_clean.*, "
              f"plots kiel_by_type.png, sigma_vs_snr.png, yso_selection.png ({len(frame)} spectra)")
    tags = {"model": cfg.predict.model, "store": planned.store}
    return StageResult("predict", metrics, {**stage_params(cfg, "predict"), "shards": planned.n_shards},
                       report, {out_dir: "catalog"}, tags)


def registry_version(spec: str) -> str:
    """The registry version a ``models:/`` name stands for ('' for a file or a run URI)."""
    if not spec.startswith("models:/"):
        return ""
    from apogeenet.registry import resolve_version

    return resolve_version(spec)


def listed(files: list[Path]) -> list[Path]:
    """FILES with each .txt argument replaced by the paths it lists (one per line; # comments)."""
    paths: list[Path] = []
    for name in files:
        if name.suffix == ".txt":
            try:
                lines = name.read_text().splitlines()
            except OSError as exc:
                raise StageError(f"{name}: cannot read the list of files ({exc.strerror or exc})") from None
            paths += [Path(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
        else:
            paths.append(name)
    return paths


def run_files(cfg: Params, paths: list[Path], destination: Path, *, progress: bool = False,
              on_unreadable=lambda path, reason: None) -> StageResult:
    """``apogeenet predict FILE...``: the files read into a temporary store (``on_unreadable`` hears
    of each that cannot be read), then :func:`run` on it; ``destination`` a directory or NAME.fits
    (the catalog's name, beside the rest). No output may be one of the inputs."""
    import tempfile

    from apogeenet.catalog import product_paths
    from apogeenet.ingest import ingest_files
    from apogeenet.model_uri import require_registry

    require_registry(cfg.predict.model)  # before any file is read or any run logged
    out_dir, name = ((destination.parent, destination.stem) if destination.suffix == ".fits"
                     else (destination, cfg.predict.catalog_name))
    inputs = {p.resolve() for p in paths if p.exists()}
    clash = sorted(str(p) for p in product_paths(out_dir, name) if p.resolve() in inputs)
    if destination.resolve() in inputs or clash:
        raise StageError(f"--out {destination} would overwrite the input file {clash[0] if clash else destination}; "
                         "give another name or a directory")
    with tempfile.TemporaryDirectory(prefix="apogeenet-files-") as tmp:
        store, problems = ingest_files(paths, Path(tmp), workers=cfg.ingest.workers, progress=progress,
                                       max_bytes=int(cfg.ingest.max_file_mb * 2**20))
        for given, reason in problems:
            on_unreadable(given, reason)
        if store is None:
            raise StageError(f"none of the {len(paths)} files could be read")
        return run(cfg.with_overrides({"paths.store": str(store.path), "paths.catalog": str(out_dir),
                                       "predict.catalog_name": name}), progress=progress)
