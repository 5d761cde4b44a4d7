"""The ``apogeenet`` command. Each command parses its options, reads ``params.yaml`` once for
defaults, and calls library functions; heavy packages are imported inside commands so that
``--help`` stays fast."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from apogeenet.config import load_params
from apogeenet.errors import InputError, UserFacingError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="APOGEE Net (Olney et al. 2020): stellar parameters from APOGEE spectra.")
out = Console()
err = Console(stderr=True)

ParamsOption = Annotated[Optional[Path], typer.Option(
    "--params", help="params.yaml to read defaults from (default: ./params.yaml or $APOGEENET_PARAMS).")]


class UserError(UserFacingError):
    """Raised by commands for a mistake in the user's input; printed as one line."""


ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
"""A full disk or quota, a read-only file system, no permission: the machine refused, not a bug."""


def main() -> None:
    """Console-script entry. Exit codes: 0 done; 1 a check failed (a gate, ``--strict``, files that
    could not be read or downloaded) or a bug (with its traceback); 2 a mistake in the input
    (a bad option, file or setting: one line on stderr); 3 the machine refused to write (a full
    disk, a directory or tracking store without write permission: one line); 130 interrupted."""
    from typer._click import exceptions as click_errors  # typer's own copy of click

    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        err.print(exc.ctx.get_help() if exc.ctx else str(exc), highlight=False, markup=False)
        sys.exit(2)
    except click_errors.UsageError as exc:  # an unknown option, a value of the wrong type
        command = f"{exc.ctx.command_path}: " if exc.ctx else ""
        err.print(f"[red]error:[/red] {command}{exc.format_message()}", highlight=False, soft_wrap=True, markup=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted", highlight=False)
        sys.exit(130)
    except UserFacingError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        err.print(f"[red]error:[/red] cannot write{where}: {exc.strerror or exc} (free space or fix the "
                  "permissions, then run the command again: finished work is kept)", highlight=False, soft_wrap=True)
        sys.exit(3)
    sys.exit(code or 0)


@app.command()
def inspect(
    files: Annotated[list[Path], typer.Argument(help="apStar files to read.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print the header facts of apStar files; a bad file gets one error line and exit code 1."""
    from apogeenet.io.apstar import ApStarError, read_apstar

    records, failed = [], 0
    for path in files:
        try:
            records.append({"file": str(path), **read_apstar(path).facts()})
        except ApStarError as exc:
            failed += 1
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    if as_json:
        for record in records:
            typer.echo(json.dumps(record))
    elif records:
        table = Table(box=None)
        for key in records[0]:
            table.add_column(key, no_wrap=True)
        for record in records:
            table.add_row(*(f"{v:.6g}" if isinstance(v, float) else str(v) for v in record.values()))
        (out if out.is_terminal else Console(width=400)).print(table)  # no truncation in pipes
    if failed:
        raise typer.Exit(1)


@app.command()
def download(
    catalog: Annotated[Path, typer.Option(help="allStar-like table (FITS/CSV/Parquet) with "
                                               "APOGEE_ID, TELESCOPE, FIELD (LOCATION_ID for dr14).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to mirror the files into.")],
    release: Annotated[Optional[str], typer.Option(help="dr14, dr16 or dr17 [params: download.release]")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="SAS root URL [params: download.base_url]")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Concurrent downloads.")] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option(
        help="Host that redirects may lead to besides the SAS URL's own [params: download.allowed_hosts]")] = None,
    params: ParamsOption = None,
) -> None:
    """Download the apStar files of a catalog from the SDSS Science Archive Server (files stay
    inside --out; unsafe catalog rows, cross-host redirects and oversized bodies are refused)."""
    from apogeenet.io.sas import apstar_jobs, download_files
    from apogeenet.io.tables import read_table

    cfg = load_params(params).download
    release = release or cfg.release
    try:
        jobs = apstar_jobs(read_table(catalog), release, out_dir,
                           base_url=base_url or str(cfg.base_url))
    except InputError as exc:
        raise UserError(f"{catalog}: {exc}") from None
    results = download_files(jobs, workers=workers or cfg.workers, retries=cfg.retries,
                             backoff_s=cfg.backoff_s, timeout_s=cfg.timeout_s, deadline_s=cfg.deadline_s,
                             max_bytes=int(cfg.max_file_mb * 2**20),
                             allowed_hosts=(*cfg.allowed_hosts, *(allow_host or ())), progress=True)
    _report_downloads(results)


@app.command("download-catalog")
def download_catalog(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the allStar file into.")],
    release: Annotated[Optional[str], typer.Option(help="dr14, dr16 or dr17 [params: download.release]")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="SAS root URL [params: download.base_url]")] = None,
    params: ParamsOption = None,
) -> None:
    """Download a release's allStar catalog."""
    from astropy.io import fits

    from apogeenet.io.sas import DownloadJob, allstar_url, download_files

    cfg = load_params(params).download
    url = allstar_url(release or cfg.release, base_url=base_url or str(cfg.base_url))

    def validate(path: Path) -> None:
        with fits.open(path) as hdul:
            hdul.verify("exception")
            if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                raise ValueError(f"{path}: no table in HDU1")

    job = DownloadJob(url, out_dir / url.rsplit("/", 1)[-1])
    _report_downloads(download_files([job], workers=1, retries=cfg.retries, backoff_s=cfg.backoff_s,
                                     timeout_s=cfg.timeout_s, deadline_s=cfg.deadline_s, validate=validate,
                                     max_bytes=int(cfg.max_catalog_mb * 2**20),
                                     allowed_hosts=cfg.allowed_hosts, progress=True))


def _report_downloads(results) -> None:
    counts = {s: sum(r.status == s for r in results) for s in ("downloaded", "skipped", "failed")}
    for r in results:
        if r.status == "failed":
            err.print(f"[red]failed:[/red] {r.job.url}: {r.error}", highlight=False, soft_wrap=True)
    out.print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if counts["failed"]:
        raise typer.Exit(1)


@app.command()
def ingest(
    src_dir: Annotated[Path, typer.Argument(help="Tree of apStar files (searched recursively).")],
    store: Annotated[Path, typer.Argument(help="Store directory (created if missing).")],
    workers: Annotated[Optional[int], typer.Option(min=1, help="Processes [params: ingest.workers]")] = None,
    dask: Annotated[bool, typer.Option(help="Read the shards on the Dask cluster of params.yaml `dask` "
                                            "(local processes, a scheduler address or Slurm jobs).")] = False,
    params: ParamsOption = None,
) -> None:
    """Ingest a tree of apStar files into a spectra store (incremental)."""
    from apogeenet.store import ingest as run_ingest

    cfg = load_params(params)
    if not dask:
        report = run_ingest(src_dir, store, workers=workers or cfg.ingest.workers,
                            segment_rows=cfg.ingest.segment_rows, progress=True,
                            max_bytes=int(cfg.ingest.max_file_mb * 2**20))
    else:
        from apogeenet.cluster import dask_client

        with dask_client(cfg.dask) as client:
            report = run_ingest(src_dir, store, segment_rows=cfg.ingest.segment_rows, progress=True,
                                max_bytes=int(cfg.ingest.max_file_mb * 2**20),
                                submit=lambda function, *args: client.submit(function, *args, pure=False))
    _print_ingest(report, store)


def _print_ingest(report, store: Path) -> None:
    repaired = f" ({report.repaired} of them repaired: their segment was damaged)" if report.repaired else ""
    out.print(f"{report.scanned} files: {report.ingested} ingested{repaired}, {report.updated} updated, "
              f"{report.unchanged} unchanged, {report.removed} removed, {report.rejected} rejected "
              f"in {report.seconds:.1f} s -> {store}", soft_wrap=True)
    for file, reason in report.rejects:
        err.print(f"[yellow]rejected:[/yellow] {file}: {reason}", highlight=False, soft_wrap=True)


@app.command()
def synth(
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Survey directory, default file names "
                                                                "[params: paths.allstar, payne, members, truth, spectra]")] = None,
    n_stars: Annotated[Optional[int], typer.Option(min=1, help="Stars [params: synth.n_stars]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed [params: synth.seed]")] = None,
    params: ParamsOption = None,
) -> None:
    """Make the synthetic survey: apStar files, allStar, Payne, membership and truth tables
    (deterministic: same seed and size give byte-identical files)."""
    from apogeenet.synth.files import SurveyFiles
    from apogeenet.synth.survey import make_survey

    cfg = load_params(params)
    if out_dir is None and cfg.paths.truth is None:
        raise UserError("paths.truth is null: a synthetic survey writes its truth table there (or give --out)")
    files = SurveyFiles.under(out_dir) if out_dir else SurveyFiles(
        cfg.paths.allstar, cfg.paths.payne, cfg.paths.members, cfg.paths.truth, cfg.paths.spectra)
    _, report = make_survey(files, n_stars or cfg.synth.n_stars, cfg.synth.seed if seed is None else seed,
                            cfg.synth.fractions, chunk=cfg.synth.chunk, progress=True)
    out.print(f"{report.n_stars} stars {report.counts} in {report.seconds:.0f} s -> {files.allstar.parent}",
              soft_wrap=True)


@app.command("label-mdwarfs")
def label_mdwarfs(
    input_table: Annotated[Path, typer.Argument(metavar="INPUT", help="FITS, CSV or Parquet table with g, r, J, H, K.")],
    output_table: Annotated[Path, typer.Argument(metavar="OUTPUT", help="Where to write it (format from the suffix).")],
    recipe: Annotated[Optional[str], typer.Option(help="released | paper [params: labels.recipe]")] = None,
    select: Annotated[bool, typer.Option(help="Also apply the §2.3 selection (needs parallax, "
                                              "parallax_error, field).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
    params: ParamsOption = None,
) -> None:
    """Photometric M-dwarf labels (paper §2.3): adds TEFF, LOGG, FE_H and LABEL_FLAGS columns."""
    from apogeenet.io.tables import read_table, write_table
    from apogeenet.labels.mdwarfs import absolute_k, find_columns, mdwarf_labels, select_mdwarfs

    cfg = load_params(params).labels
    recipe = recipe or cfg.recipe
    if recipe not in ("released", "paper"):
        raise UserError(f"--recipe must be 'released' or 'paper', not {recipe!r}")
    table = read_table(input_table)
    needed = ("g", "r", "J", "H", "K") + (("parallax", "parallax_error", "field") if select else ())
    try:
        cols = find_columns(table, needed)
    except InputError as exc:
        raise UserError(f"{input_table}: {exc}") from None
    try:
        plx = find_columns(table, ("parallax",))["parallax"]
    except InputError:
        m_k = None
    else:
        m_k = absolute_k(table[cols["K"]], table[plx])
    labels = mdwarf_labels(*(table[cols[b]] for b in ("g", "r", "J", "H", "K")), m_k=m_k, recipe=recipe)
    result = table.drop(columns=[c for c in labels.columns if c in table.columns]).join(labels)
    if select:
        selection = select_mdwarfs(table[cols["J"]], table[cols["K"]], table[cols["g"]],
                                   table[cols["parallax"]], table[cols["parallax_error"]],
                                   table[cols["field"]], excluded_fields=set(cfg.young_fields))
        result = result.drop(columns=[c for c in selection.columns if c in result.columns]).join(selection)
    write_table(result, output_table, units={"TEFF": "K", "M_K": "mag"}, overwrite=overwrite)
    flagged = int((labels["LABEL_FLAGS"] != 0).sum())
    summary = f"{len(result)} stars labelled ({recipe} recipe), {flagged} flagged outside a relation's range"
    if select:
        summary += f", {int(result['SELECTED'].sum())} selected"
    out.print(f"{summary} -> {output_table}", soft_wrap=True)


def _with_paths(cfg, **paths: Path | None):
    """``cfg`` with the paths given on the command line (dvc.yaml passes them from params.yaml)."""
    given = {f"paths.{name}": str(path) for name, path in paths.items() if path is not None}
    return cfg.with_overrides(given) if given else cfg


LabelsOption = Annotated[Optional[Path], typer.Option(help="Labels directory [params: paths.labels]")]
StoreOption = Annotated[Optional[Path], typer.Option(help="Spectra store [params: paths.store]")]
ValidationOption = Annotated[Optional[Path], typer.Option(
    help="Validation results that must have passed [params: paths.validation]")]
TruthOption = Annotated[Optional[Path], typer.Option(
    help="True parameters of a synthetic survey, when it has them [params: paths.truth]")]


@app.command()
def label(
    allstar: Annotated[Optional[Path], typer.Option(help="allStar-like catalog [params: paths.allstar]")] = None,
    payne: Annotated[Optional[Path], typer.Option(help="Payne-format labels [params: paths.payne]")] = None,
    members: Annotated[Optional[Path], typer.Option(help="Kounkel-format membership [params: paths.members]")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output directory [params: paths.labels]")] = None,
    track: Annotated[bool, typer.Option(help="Log the run and the YSO network to MLflow (mlruns/).")] = True,
    params: ParamsOption = None,
) -> None:
    """Build the training labels (paper §2.2-2.4): Payne, M-dwarf and YSO labels, splits, Table 1."""
    from apogeenet.stages import label_stage

    cfg = _with_paths(load_params(params), allstar=allstar, payne=payne, members=members, labels=out_dir)
    out.print(label_stage(cfg, track=track).report, soft_wrap=True)


@app.command()
def validate(
    allstar: Annotated[Optional[Path], typer.Option(help="allStar-like catalog [params: paths.allstar]")] = None,
    labels: LabelsOption = None,
    store: StoreOption = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Results and Data Docs [params: paths.validation]")] = None,
    track: Annotated[bool, typer.Option(help="Log the results to MLflow (experiment validate).")] = True,
    params: ParamsOption = None,
) -> None:
    """Great Expectations gates: M-dwarf cuts, label ranges, catalog integrity and splits, spectra
    store. Writes Data Docs and summary.json; exits 1 with the failing expectations if any fail."""
    from apogeenet.stages import validate_stage

    cfg = _with_paths(load_params(params), allstar=allstar, labels=labels, store=store, validation=out_dir)
    result = validate_stage(cfg, track=track)
    (out if result.passed else err).print(result.report, highlight=False, soft_wrap=True)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def train(
    init: Annotated[Optional[str], typer.Option(help="Start from a model.pt or an MLflow model URI "
                                                     "(e.g. models:/apogeenet@champion).")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Training profile [params: train.profile]")] = None,
    labels: LabelsOption = None,
    store: StoreOption = None,
    validation: ValidationOption = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output directory [params: paths.model]")] = None,
    track: Annotated[bool, typer.Option(help="Log to MLflow and register the model.")] = True,
    params: ParamsOption = None,
) -> None:
    """Train APOGEE Net (paper §3.3) on the label catalog; writes model.pt, Tables 2/3 and plots.
    An interrupted run resumes from its last checkpoint."""
    from apogeenet.stages import train_stage

    cfg = _with_paths(load_params(params), labels=labels, store=store, validation=validation, model=out_dir)
    if profile:
        cfg = cfg.with_overrides({"train.profile": profile})
    out.print(train_stage(cfg, init_model=init, track=track, progress=True).report, soft_wrap=True)


@app.command()
def adapt(
    init: Annotated[Optional[str], typer.Option(help="Model to adapt: model.pt or MLflow URI "
                                                     "[models:/apogeenet@champion; derived/model/model.pt with --no-track]")] = None,
    labels: LabelsOption = None,
    store: StoreOption = None,
    validation: ValidationOption = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output directory [params: paths.adapted]")] = None,
    track: Annotated[bool, typer.Option(help="Log to MLflow (nested run per round) and register.")] = True,
    params: ParamsOption = None,
) -> None:
    """Adapt a trained model to M dwarfs and YSOs (paper §3.4): rounds on MSTAR + YSO + 5 % Payne."""
    from apogeenet.stages import adapt_stage

    cfg = _with_paths(load_params(params), labels=labels, store=store, validation=validation, adapted=out_dir)
    out.print(adapt_stage(cfg, init_model=init, track=track).report, soft_wrap=True)


@app.command()
def baselines(
    labels: LabelsOption = None,
    store: StoreOption = None,
    validation: ValidationOption = None,
    truth: TruthOption = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output directory [params: paths.baselines]")] = None,
    track: Annotated[bool, typer.Option(help="Log each model as a run of the MLflow experiment evaluate.")] = True,
    params: ParamsOption = None,
) -> None:
    """Ridge regression and The Cannon on the same splits as APOGEE Net (models in
    params: baselines.models); Tables 2/3 and predictions per model, for `apogeenet evaluate`."""
    from apogeenet.stages import baselines_stage

    cfg = _with_paths(load_params(params), labels=labels, store=store, validation=validation, truth=truth,
                      baselines=out_dir)
    out.print(baselines_stage(cfg, track=track, progress=True).report, soft_wrap=True)


@app.command()
def evaluate(
    model: Annotated[Optional[str], typer.Option(help="model.pt or MLflow URI [paths.adapted/model.pt]")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Model before adaptation, for the §3.4 check "
                                                         "[paths.model/model.pt when present]")] = None,
    labels: LabelsOption = None,
    store: StoreOption = None,
    validation: ValidationOption = None,
    truth: TruthOption = None,
    baselines_dir: Annotated[Optional[Path], typer.Option(
        "--baselines", help="Baselines' predictions to compare with [params: paths.baselines]")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output directory [params: paths.evaluation]")] = None,
    track: Annotated[bool, typer.Option(help="Log to MLflow (experiment evaluate).")] = True,
    strict: Annotated[bool, typer.Option(help="Exit 1 when a check fails.")] = False,
    params: ParamsOption = None,
) -> None:
    """Tables 2/3, the quality bar (gain over the training mean per group) and the adaptation
    check of a model; writes quality.md, CSVs, plots and metrics.json."""
    from apogeenet.stages import evaluate_stage

    cfg = _with_paths(load_params(params), labels=labels, store=store, validation=validation, truth=truth,
                      baselines=baselines_dir, evaluation=out_dir)
    result = evaluate_stage(cfg, model=model, baseline=baseline, track=track)
    out.print(result.report, soft_wrap=True)
    if strict and not result.passed:
        raise typer.Exit(1)


@app.command()
def predict(
    files: Annotated[Optional[list[Path]], typer.Argument(
        help="apStar files to predict directly, no store to build (a .txt argument lists paths, one per "
             "line); without files: every spectrum of --store", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="Registered alias/version (models:/apogeenet@champion, "
                                                      "models:/apogeenet/3), runs:/ URI or model.pt [params: predict.model]")] = None,
    store: StoreOption = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="Labels directory joined to the catalog when it exists [params: paths.labels]")] = None,
    truth: TruthOption = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output directory [params: paths.catalog]")] = None,
    draws: Annotated[Optional[int], typer.Option(min=2, help="Monte-Carlo draws per spectrum [params: predict.draws]")] = None,
    uncertainty: Annotated[Optional[str], typer.Option(help="σ from the paper's 'monte_carlo' draws, the first-order 'delta' "
                                                            "method, or 'none' (single pass) [params: predict.uncertainty]")] = None,
    error_reference: Annotated[Optional[str], typer.Option(help="Cap pixel errors at 5x the 'mean' (paper) or "
                                                                "'median' good-pixel error [params: predict.error_reference]")] = None,
    plan_only: Annotated[bool, typer.Option(help="Only write the shard plan and print how to run its shards "
                                                 "(a Slurm job array: `apogeenet predict-shard PLAN K`).")] = False,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Processes reading FILES [params: ingest.workers]")] = None,
    track: Annotated[bool, typer.Option(help="Log the catalog and plots to MLflow (experiment predict).")] = True,
    params: ParamsOption = None,
) -> None:
    """Predict Teff, log g, [Fe/H] with Monte-Carlo σ (§3.5) for the apStar FILES given, or for every
    spectrum of a store; writes the Table 4 catalog (FITS, Parquet, CSV; all rows and the clean
    view), the §4 YSO selection, plots and the uncertainty calibration. With FILES, --out is a
    directory (default ./apogeenet-catalog) or NAME.fits (the catalog's name, beside the rest).
    Work is done in shards (params: predict.shard_size); a rerun after an interruption computes
    only the shards that have no part yet."""
    from apogeenet.shards import ShardPlan
    from apogeenet.stages import predict_plan, predict_stage

    cfg = _with_paths(load_params(params), store=store, labels=labels, truth=truth,
                      catalog=None if files else out_dir)
    options = {"predict.uncertainty": uncertainty, "predict.draws": draws, "predict.error_reference": error_reference}
    cfg = cfg.with_overrides({k: v for k, v in options.items() if v is not None})
    if files:
        _predict_files(cfg, files, model=model, destination=out_dir, workers=workers, track=track)
        return
    if plan_only:
        from apogeenet.locks import one_writer

        with one_writer(cfg.paths.catalog, "predict"):
            plan = ShardPlan.read(predict_plan(cfg, model=model)[1])
        missing = plan.missing()
        out.print(f"{plan.file}: {plan.n_rows} spectra in {plan.n_shards} shards of {plan.shard_rows}, "
                  f"{len(missing)} without a part.\nRun each shard K (0 to {plan.n_shards - 1}) as "
                  f"`apogeenet predict-shard {plan.file} K`, e.g. `sbatch --array=0-{plan.n_shards - 1} "
                  "predict-shards.sbatch` (README, \"Survey scale\"), then `apogeenet predict` again "
                  "with the same options to merge.", soft_wrap=True, highlight=False)
        return
    result = predict_stage(cfg, model=model, track=track, progress=True)
    out.print(result.report, soft_wrap=True, highlight=False)


def _listed(files: list[Path]) -> list[Path]:
    """FILES with each .txt argument replaced by the paths it lists (one per line; # comments)."""
    paths: list[Path] = []
    for name in files:
        if name.suffix == ".txt":
            try:
                lines = name.read_text().splitlines()
            except OSError as exc:
                raise UserError(f"{name}: cannot read the list of files ({exc.strerror or exc})") from None
            paths += [Path(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
        else:
            paths.append(name)
    return paths


def _predict_files(cfg, files: list[Path], *, model, destination, workers, track) -> None:
    """`apogeenet predict FILE...`: the files read into a temporary store, one line for each that
    cannot be read, the rest predicted like any store. No output may be one of the inputs."""
    import tempfile

    from apogeenet.catalog import product_paths
    from apogeenet.stages import predict_stage
    from apogeenet.store import ingest_files

    paths = _listed(files)
    destination = Path(destination) if destination else Path("apogeenet-catalog")
    out_dir, name = ((destination.parent, destination.stem) if destination.suffix == ".fits"
                     else (destination, "catalog"))
    inputs = {p.resolve() for p in paths if p.exists()}
    clash = sorted(str(p) for p in product_paths(out_dir, name) if p.resolve() in inputs)
    if destination.resolve() in inputs or clash:
        raise UserError(f"--out {destination} would overwrite the input file {clash[0] if clash else destination}; "
                        "give another name or a directory")
    with tempfile.TemporaryDirectory(prefix="apogeenet-files-") as tmp:
        store, problems = ingest_files(paths, Path(tmp), workers=workers or cfg.ingest.workers, progress=True,
                                       max_bytes=int(cfg.ingest.max_file_mb * 2**20))
        for given, reason in problems:
            err.print(f"[yellow]unreadable:[/yellow] {given}: {reason}", highlight=False, soft_wrap=True)
        if store is None:
            raise UserError(f"none of the {len(paths)} files could be read")
        result = predict_stage(cfg, model=model, store=store.path, out_dir=out_dir, track=track, progress=True,
                               catalog_name=name)
    out.print(result.report, soft_wrap=True, highlight=False)
    out.print(f"{result.metrics['n_spectra']} of {len(paths)} files predicted"
              + (f"; {len(problems)} unreadable (listed above)" if problems else ""), highlight=False)


@app.command("predict-shard")
def predict_shard_command(
    plan: Annotated[Path, typer.Argument(help="plan.json written by `apogeenet predict --plan-only`")],
    shard: Annotated[int, typer.Argument(min=0, help="Shard number, 0 to the plan's count − 1 "
                                                     "(a Slurm array task: $SLURM_ARRAY_TASK_ID)")],
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch threads (default: torch's own choice)")] = None,
) -> None:
    """Predict one shard of a plan and write its part (kept if it exists): the unit of work of a
    Slurm job array, with no Prefect and no Dask."""
    from apogeenet.shards import ShardPlan, predict_shard

    loaded = ShardPlan.read(plan)
    if shard >= loaded.n_shards:
        raise UserError(f"shard {shard} is not in {plan} (it has shards 0 to {loaded.n_shards - 1})")
    part = predict_shard(loaded.file, shard, torch_threads=threads)
    out.print(f"shard {shard}: {len(loaded.rows(shard))} spectra -> {part}", soft_wrap=True, highlight=False)


@app.command()
def models(params: ParamsOption = None) -> None:
    """List the registered versions of `apogeenet` with their aliases and dev losses."""
    from apogeenet.registry import registered_versions

    load_params(params)
    versions = registered_versions()
    if not versions:
        raise UserError("no registered model yet: run `apogeenet train` (or `dvc repro`) first")
    for v in versions:
        out.print(f"version {v['version']:>3}  {v['run_name']:<9} dev loss {v['dev_loss']:.4f}  "
                  f"{' '.join(v['aliases'])}", soft_wrap=True, highlight=False)
    champion = next((v["version"] for v in versions if "champion" in v["aliases"]), None)
    out.print(f"champion: models:/apogeenet@champion = version {champion}", soft_wrap=True, highlight=False)


@app.command()
def report(params: ParamsOption = None) -> None:
    """Print the reports of the last run of each stage: Tables 2/3 of the trained and the adapted
    model, the quality bar, the catalog summary (from the directories in params.yaml `paths`)."""
    cfg = load_params(params).paths
    shown = 0
    for title, path in (("trained model", cfg.model / "tables.md"), ("adapted model", cfg.adapted / "tables.md"),
                        ("evaluation", cfg.evaluation / "quality.md"),
                        ("models side by side", cfg.evaluation / "comparison.md"), ("catalog", cfg.catalog / "summary.md")):
        if path.exists():
            out.print(f"== {title}: {path}\n{path.read_text()}", soft_wrap=True, highlight=False)
            shown += 1
    if not shown:
        raise UserError("no stage has run yet: run `dvc repro` (or `python3 run.py demo`) first")
    plots = sorted(cfg.catalog.glob("*.png"))
    if plots:
        out.print(f"Table 4 catalog: {cfg.catalog / 'catalog.fits'} (.parquet, .csv; clean view catalog_clean.*)\n"
                  f"plots: {', '.join(map(str, plots))}", soft_wrap=True, highlight=False)


@app.command()
def info(
    store: Annotated[Optional[Path], typer.Argument(help="Store directory [params: paths.store]")] = None,
    params: ParamsOption = None,
) -> None:
    """Summarise a spectra store: size, wavelength range, S/N and visits, rejects."""
    import pandas as pd

    from apogeenet.store import REJECTS_FILE, SpectraStore

    store = store or load_params(params).paths.store
    spectra = SpectraStore(store)
    index = spectra.index
    rejects = store / REJECTS_FILE
    n_rejects = len(pd.read_parquet(rejects)) if rejects.exists() else 0
    wave = spectra.wavelength
    out.print(f"store {store}: {len(spectra)} spectra x {wave.size} pixels "
              f"({wave[0]:.1f}-{wave[-1]:.1f} A, vacuum), {n_rejects} rejected files", soft_wrap=True)
    if len(spectra):
        snr = index["snr"].quantile([0.05, 0.5, 0.95]).round(1).tolist()
        visits = {int(k): int(v) for k, v in sorted(index["nvisits"].value_counts().items())}
        telescopes = {str(k): int(v) for k, v in index["telescope"].value_counts().items()}
        out.print(f"SNR 5/50/95 %: {snr}; NVISITS: {visits}; telescopes: {telescopes}",
                  soft_wrap=True)
