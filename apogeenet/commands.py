"""The ``apogeenet`` commands that are not pipeline stages (reading, downloading, making and
summarising data; the registry; one shard), and what every command shares: the consoles, the
one-line user error and :func:`configured`, the one route from options to parameters.
:mod:`apogeenet.cli` registers them beside the stage commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from apogeenet.config import Params, Recipe, load_params
from apogeenet.errors import InputError, UserFacingError

__all__ = ["COMMANDS", "ParamsOption", "UserError", "configured", "err", "out"]

out = Console()
err = Console(stderr=True)

ParamsOption = Annotated[Optional[Path], typer.Option(
    "--params", help="params.yaml to read defaults from (default: ./params.yaml or $APOGEENET_PARAMS).")]


class UserError(UserFacingError):
    """Raised by commands for a mistake in the user's input; printed as one line."""


def configured(params: Path | None, overrides: dict) -> Params:
    """params.yaml with a command's options (dotted keys; None: not given): the one route by which
    an option reaches a stage, validated like the file."""
    given = {key: str(value) if isinstance(value, Path) else value for key, value in overrides.items()
             if value is not None}
    cfg = load_params(params)
    return cfg.with_overrides(given) if given else cfg


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


def download(
    catalog: Annotated[Path, typer.Option(help="allStar-like table (FITS/CSV/Parquet) with "
                                               "APOGEE_ID, TELESCOPE, FIELD (LOCATION_ID for dr14).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to mirror the files into.")],
    release: Annotated[Optional[str], typer.Option(help="dr14, dr16 or dr17 [params: download.release]")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="SAS root URL [params: download.base_url]")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Concurrent downloads.")] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option(
        help="Host that redirects may lead to besides the SAS URL's own [params: download.allowed_hosts]")] = None,
    ids: Annotated[Optional[Path], typer.Option(
        help="Only these stars: a file of APOGEE IDs, one a line [params: download.ids]")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many rows, after --ids "
                                                             "[params: download.limit]")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the URLs and the expected total size; fetch nothing.")] = False,
    params: ParamsOption = None,
) -> None:
    """Download the apStar files of a catalog from the SDSS Science Archive Server (files stay
    inside --out; unsafe catalog rows, cross-host redirects and oversized bodies are refused)."""
    from apogeenet.io.sas import apstar_jobs, download_files, estimated_bytes, select_rows
    from apogeenet.io.tables import read_table
    from apogeenet.labels.inputs import read_id_list

    cfg = configured(params, {"download.release": release, "download.base_url": base_url,
                              "download.workers": workers, "download.ids": ids, "download.limit": limit}).download
    try:
        rows = select_rows(read_table(catalog), read_id_list(cfg.ids) if cfg.ids else None, cfg.limit)
        jobs = apstar_jobs(rows, cfg.release, out_dir, base_url=str(cfg.base_url))
    except InputError as exc:
        raise UserError(f"{catalog}: {exc}") from None
    if dry_run:
        for job in jobs:
            out.print(job.refused and f"refused: {job.url}: {job.refused}" or job.url, soft_wrap=True, highlight=False)
        out.print(f"{sum(not j.refused for j in jobs)} files, about {estimated_bytes(rows) / 1e9:.2f} GB "
                  "(from NVISITS and real apStar sizes); nothing fetched (--dry-run)", soft_wrap=True)
        return
    out.print(f"{len(jobs)} files, about {estimated_bytes(rows) / 1e9:.2f} GB -> {out_dir}", soft_wrap=True)
    results = download_files(jobs, workers=cfg.workers, retries=cfg.retries,
                             backoff_s=cfg.backoff_s, timeout_s=cfg.timeout_s, deadline_s=cfg.deadline_s,
                             max_bytes=int(cfg.max_file_mb * 2**20),
                             allowed_hosts=(*cfg.allowed_hosts, *(allow_host or ())), progress=True)
    _report_downloads(results)


def download_catalog(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the allStar file into.")],
    release: Annotated[Optional[str], typer.Option(help="dr14, dr16 or dr17 [params: download.release]")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="SAS root URL [params: download.base_url]")] = None,
    params: ParamsOption = None,
) -> None:
    """Download a release's allStar catalog."""
    from apogeenet.io.sas import DownloadJob, allstar_url, download_files, validate_allstar

    cfg = configured(params, {"download.release": release, "download.base_url": base_url}).download
    url = allstar_url(cfg.release, base_url=str(cfg.base_url))
    job = DownloadJob(url, out_dir / url.rsplit("/", 1)[-1])
    _report_downloads(download_files([job], workers=1, retries=cfg.retries, backoff_s=cfg.backoff_s,
                                     timeout_s=cfg.timeout_s, deadline_s=cfg.deadline_s, validate=validate_allstar,
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

    cfg = configured(params, {"synth.n_stars": n_stars, "synth.seed": seed})
    if out_dir is None and cfg.paths.truth is None:
        raise UserError("paths.truth is null: a synthetic survey writes its truth table there (or give --out)")
    files = SurveyFiles.under(out_dir) if out_dir else SurveyFiles.of(cfg.paths)
    _, report = make_survey(files, cfg.synth.n_stars, cfg.synth.seed, cfg.synth.fractions, chunk=cfg.synth.chunk,
                            progress=True)
    out.print(f"{report.n_stars} stars {report.counts} in {report.seconds:.0f} s -> {files.allstar.parent}",
              soft_wrap=True)


def label_mdwarfs(
    input_table: Annotated[Path, typer.Argument(metavar="INPUT", help="FITS, CSV or Parquet table with g, r, J, H, K.")],
    output_table: Annotated[Path, typer.Argument(metavar="OUTPUT", help="Where to write it (format from the suffix).")],
    recipe: Annotated[Optional[Recipe], typer.Option(help="M-dwarf relations [params: labels.recipe]")] = None,
    select: Annotated[bool, typer.Option(help="Also apply the §2.3 selection (needs parallax, "
                                              "parallax_error, field).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
    params: ParamsOption = None,
) -> None:
    """Photometric M-dwarf labels (paper §2.3): adds TEFF, LOGG, FE_H and LABEL_FLAGS columns."""
    from apogeenet.io.tables import read_table, write_table
    from apogeenet.labels.mdwarfs import label_table

    cfg = configured(params, {"labels.recipe": recipe}).labels
    try:
        result = label_table(read_table(input_table), recipe=cfg.recipe, select=select,
                             young_fields=set(cfg.young_fields))
    except InputError as exc:
        raise UserError(f"{input_table}: {exc}") from None
    write_table(result, output_table, units={"TEFF": "K", "M_K": "mag"}, overwrite=overwrite)
    summary = (f"{len(result)} stars labelled ({cfg.recipe} recipe), {int((result['LABEL_FLAGS'] != 0).sum())} "
               "flagged outside a relation's range")
    if select:
        summary += f", {int(result['SELECTED'].sum())} selected"
    out.print(f"{summary} -> {output_table}", soft_wrap=True)


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


def models(params: ParamsOption = None) -> None:
    """List the registered versions of `apogeenet` with their aliases and dev losses."""
    from apogeenet.mlflow_store import CHAMPION_URI
    from apogeenet.registry import registered_versions

    load_params(params)
    versions = registered_versions()
    if not versions:
        raise UserError("no registered model yet: run `apogeenet calibrate` (or `dvc repro`) first")
    for v in versions:
        out.print(f"version {v['version']:>3}  {v['run_name']:<9} dev loss {v['dev_loss']:.4f}  "
                  f"{' '.join(v['aliases'])}", soft_wrap=True, highlight=False)
    champion = next((v["version"] for v in versions if "champion" in v["aliases"]), None)
    out.print(f"champion: {CHAMPION_URI} = version {champion}", soft_wrap=True, highlight=False)


def report(params: ParamsOption = None) -> None:
    """Print the reports of the last run of each stage: Tables 2/3 of the trained and the adapted
    model, the quality bar, the catalog summary (from the directories in params.yaml `paths`)."""
    from apogeenet.catalog import SUMMARY_FILE
    from apogeenet.evaluate import COMPARISON_FILE, QUALITY_FILE, TABLES_FILE

    cfg = load_params(params)
    paths, shown = cfg.paths, 0
    for title, path in (("trained model", paths.model / TABLES_FILE), ("adapted model", paths.adapted / TABLES_FILE),
                        ("evaluation", paths.evaluation / QUALITY_FILE),
                        ("models side by side", paths.evaluation / COMPARISON_FILE),
                        ("catalog", paths.catalog / SUMMARY_FILE)):
        if path.exists():
            out.print(f"== {title}: {path}\n{path.read_text()}", soft_wrap=True, highlight=False)
            shown += 1
    if not shown:
        raise UserError("no stage has run yet: run `dvc repro` (or `python3 run.py demo`) first")
    plots = sorted(paths.catalog.glob("*.png"))
    if plots:
        name = cfg.predict.catalog_name
        out.print(f"Table 4 catalog: {paths.catalog / name}.fits (.parquet, .csv; clean view {name}_clean.*)\n"
                  f"plots: {', '.join(map(str, plots))}", soft_wrap=True, highlight=False)


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


def init(
    directory: Annotated[Path, typer.Argument(help="The new workspace (a new or empty folder).")],
    spectra: Annotated[Optional[Path], typer.Option(help="Tree of your apStar files (read where it is).")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="Your label table (FITS/CSV/Parquet): an ID column and Teff, log g, [Fe/H] (copied into data/).")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Its APOGEE ID column [default APOGEE_ID]")] = None,
    teff_column: Annotated[Optional[str], typer.Option(help="Its Teff column [default TEFF]")] = None,
    logg_column: Annotated[Optional[str], typer.Option(
        help="Its log g column [default LOGG]; 'none': log g from Teff and [Fe/H] by eq. 3 (M dwarfs)")] = None,
    feh_column: Annotated[Optional[str], typer.Option(help="Its [Fe/H] column [default FE_H]")] = None,
    description: Annotated[Optional[str], typer.Option(
        help="What the labels are (e.g. 'Birky et al. 2020'): kept with the model and in the catalog header.")] = None,
    allstar: Annotated[Optional[Path], typer.Option(
        help="allStar (DR16/DR17): without --spectra its spectra are downloaded; without other labels its "
             "cross-matched photometry gives the paper's M-dwarf labels (with --members also YSO).")] = None,
    payne: Annotated[Optional[Path], typer.Option(help="Payne-format labels: the paper's §2.2 source.")] = None,
    members: Annotated[Optional[Path], typer.Option(help="Young-region members: a table or an ID list (.txt).")] = None,
    sources: Annotated[Optional[str], typer.Option(
        help="Label sources, comma-separated (payne, mstar, yso, table) [default: from the files given]")] = None,
    ids: Annotated[Optional[Path], typer.Option(help="With --allstar and no --spectra: download only these "
                                                     "stars (a file of APOGEE IDs) [params: download.ids]")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="... and at most this many [params: download.limit]")] = None,
    release: Annotated[Optional[str], typer.Option(help="dr14, dr16 or dr17 [params: download.release]")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="SAS root URL [params: download.base_url]")] = None,
    synthetic: Annotated[bool, typer.Option(help="The demo instead: a workspace that makes the synthetic survey.")] = False,
    profile: Annotated[Optional[str], typer.Option(help="Training profile [params: train.profile]")] = None,
    init_model: Annotated[Optional[str], typer.Option(
        "--init-model", help="Fine-tune this model (model.pt or MLflow URI) instead of training from scratch "
                             "[params: train.init_model]")] = None,
) -> None:
    """Make a workspace for your own apStar files (--spectra, or --allstar to download them) and
    labels (or --synthetic, the demo): params.yaml, dvc.yaml, .dvcignore, README.md and a DVC
    repository; then `cd DIR && dvc repro`."""
    from apogeenet.model_uri import is_uri
    from apogeenet.workspace import init_workspace

    if init_model and not is_uri(init_model):  # the workspace runs in its own folder: name the file absolutely
        init_model = str(Path(init_model).resolve())
    columns = {"id": id_column, "teff": teff_column, "fe_h": feh_column, "description": description,
               "logg": None if logg_column and logg_column.lower() == "none" else logg_column}
    columns = {k: v for k, v in columns.items() if v is not None or (k == "logg" and logg_column)}
    if labels is None and any(v is not None for k, v in columns.items()):
        raise UserError("the column options describe --labels TABLE: give it too")
    cfg = init_workspace(directory, synthetic=synthetic, spectra=spectra, label_table=labels, table_columns=columns,
                         allstar=allstar, payne=payne, members=members, ids=ids,
                         sources=[x.strip() for x in sources.split(",")] if sources else None,
                         overrides={k: v for k, v in {"train.profile": profile, "train.init_model": init_model,
                                                      "download.limit": limit, "download.release": release,
                                                      "download.base_url": base_url}.items() if v is not None})
    out.print(f"workspace {directory}: label sources {', '.join(cfg.labels.sources)}; next: cd {directory} && dvc repro",
              soft_wrap=True)


def _mlflow(*args: str, tracking: str) -> int:
    """Run the MLflow command line of this environment (its uvicorn and gunicorn on PATH, so
    nothing needs activating) against ``tracking``; returns its exit code."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        return subprocess.run([sys.executable, "-m", "mlflow", *args], env=env, check=False).returncode
    except KeyboardInterrupt:
        return 0


def ui(port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the UI.")] = 5000,
       params: ParamsOption = None) -> None:
    """Open this workspace's MLflow tracking store in the MLflow UI (127.0.0.1), at its
    experiments in the model-training view."""
    from apogeenet.mlflow_store import tracking_uri, ui_link

    load_params(params)
    address = f"http://127.0.0.1:{port}"
    out.print(f"MLflow UI: {ui_link(ui=address)}\nregistered model: {ui_link(registered='apogeenet', ui=address)}"
              "\n(Ctrl-C stops it)", soft_wrap=True, highlight=False)
    raise typer.Exit(_mlflow("server", "--backend-store-uri", tracking_uri(), "--host", "127.0.0.1",
                             "--port", str(port), tracking=tracking_uri()))


def serve_model(
    model: Annotated[str, typer.Option(help="A registered model or a run's model (models:/NAME@alias, "
                                            "models:/NAME/N, runs:/ID/model).")] = "models:/apogeenet@champion",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the scoring server.")] = 5001,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    params: ParamsOption = None,
) -> None:
    """Serve a registered model for online scoring (`mlflow models serve` in this environment):
    POST spectra (flux, error) to /invocations, get the catalog's columns with sigma and FLAGS."""
    from apogeenet.mlflow_store import tracking_uri

    load_params(params)
    if not model.startswith(("models:/", "runs:/")):
        raise UserError(f"--model {model}: serve a registered or logged model (models:/…, runs:/…), not a file")
    out.print(f"serving {model} at http://{host}:{port}/invocations (README, \"Online scoring\"; Ctrl-C stops it)",
              soft_wrap=True, highlight=False)
    raise typer.Exit(_mlflow("models", "serve", "-m", model, "--env-manager", "local", "-h", host, "-p", str(port),
                             tracking=tracking_uri()))


COMMANDS = {
    "init": init,
    "inspect": inspect,
    "download": download,
    "download-catalog": download_catalog,
    "synth": synth,
    "label-mdwarfs": label_mdwarfs,
    "predict-shard": predict_shard_command,
    "models": models,
    "report": report,
    "info": info,
    "ui": ui,
    "serve-model": serve_model,
}
"""Command name -> function, registered by :mod:`apogeenet.cli`."""
