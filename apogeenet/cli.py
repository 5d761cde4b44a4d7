"""The ``apogeenet`` command: its entry (:func:`main`, the exit codes) and one command per pipeline
stage, each turning its options into parameters (:func:`apogeenet.commands.configured`) and
calling the stage's ``run`` (:mod:`apogeenet.pipeline`); the other commands are
:mod:`apogeenet.commands`. Heavy packages are imported inside commands so that ``--help`` stays
fast."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from apogeenet.commands import COMMANDS, ParamsOption, configured, err, out
from apogeenet.config import ErrorReference, Uncertainty
from apogeenet.errors import UserFacingError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="APOGEE Net (Olney et al. 2020): stellar parameters from APOGEE spectra.",
                  context_settings={"max_content_width": 200})  # as wide as the terminal, not 80 columns
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)

SHORT_HELP = {
    "init": "Make a workspace for your own data.", "inspect": "Header facts of apStar files.",
    "download": "Download apStar files from the SAS.", "download-catalog": "Download a release's allStar.",
    "synth": "Make the synthetic survey.", "label-mdwarfs": "Photometric M-dwarf labels (§2.3).",
    "predict-shard": "Predict one shard of a plan.", "models": "List the registered versions.",
    "report": "Print the last run's reports.", "info": "Summarise a spectra store.",
    "ui": "Open the MLflow UI at the runs.", "serve-model": "Serve a model for online scoring.",
    "ingest": "Ingest apStar files into a store.", "label": "Build the training labels (§2).",
    "validate": "Run the data gates.", "train": "Train APOGEE Net (§3.3).", "adapt": "Adapt to M dwarfs and YSOs (§3.4).",
    "calibrate": "Fit σ calibration; register.", "baselines": "Fit ridge and The Cannon.",
    "evaluate": "Tables 2/3 and the quality bar.", "predict": "The catalog with σ and flags.",
}
"""Each command's line in `apogeenet --help`: whole at any terminal width (click cuts a longer
first sentence to fit)."""

ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
"""A full disk or quota, a read-only file system, no permission: the machine refused, not a bug."""


def _short_help() -> None:
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        info.short_help = info.short_help or SHORT_HELP.get(name)


def main() -> None:
    """Console-script entry. Exit codes: 0 done; 1 a check failed (a gate, ``--strict``, files that
    could not be read or downloaded) or a bug (with its traceback); 2 a mistake in the input
    (a bad option, file or setting: one line on stderr); 3 the machine refused to write (a full
    disk, a directory or tracking store without write permission: one line); 130 interrupted."""
    from typer._click import exceptions as click_errors  # typer's own copy of click

    _short_help()
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
def ingest(
    src_dir: Annotated[Path, typer.Argument(help="Tree of apStar files (searched recursively).")],
    store: Annotated[Path, typer.Argument(help="Store directory (created if missing).")],
    workers: Annotated[Optional[int], typer.Option(min=1, help="Processes [params: ingest.workers]")] = None,
    dask: Annotated[bool, typer.Option(help="Read the shards on the Dask cluster of params.yaml `dask` "
                                            "(local processes, a scheduler address or Slurm jobs).")] = False,
    params: ParamsOption = None,
) -> None:
    """Ingest a tree of apStar files into a spectra store (incremental)."""
    from apogeenet.ingest import ingest as run_ingest

    cfg = configured(params, {"ingest.workers": workers})
    if not dask:
        report = run_ingest(src_dir, store, workers=cfg.ingest.workers,
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


def _print(result, *, strict: bool = False) -> None:
    """A stage's report (stdout; stderr when its check failed); exit 1 when it failed and ``strict``."""
    (out if result.passed else err).print(result.report, soft_wrap=True, highlight=False)
    if strict and not result.passed:
        raise typer.Exit(1)


def _path(*names: str, help: str):
    return Annotated[Optional[Path], typer.Option(*names, help=help)]


AllstarFile = _path(help="allStar-like catalog [params: paths.allstar]")
LabelsDir = _path(help="Labels directory [params: paths.labels]")
StoreDir = _path(help="Spectra store [params: paths.store]")
ValidationDir = _path(help="Validation results that must have passed [params: paths.validation]")
TruthFile = _path(help="True parameters of a synthetic survey, when it has them [params: paths.truth]")
PayneFile = _path(help="Payne-format labels [params: paths.payne]")
MembersFile = _path(help="Kounkel-format membership or an ID list (.txt) [params: paths.members]")
LabelsOut = _path("--out", help="Output directory [params: paths.labels]")
ValidationOut = _path("--out", help="Results and Data Docs [params: paths.validation]")
ModelOut = _path("--out", help="Output directory [params: paths.model]")
AdaptedOut = _path("--out", help="Output directory [params: paths.adapted]")
CalibratedOut = _path("--out", help="Output directory [params: paths.calibrated]")
BaselinesOut = _path("--out", help="Output directory [params: paths.baselines]")
BaselinesInput = _path("--baselines", help="Baselines' predictions to compare with [params: paths.baselines]")
EvaluationOut = _path("--out", help="Output directory [params: paths.evaluation]")
CatalogLabels = _path(help="Labels directory joined to the catalog when it exists [params: paths.labels]")
CatalogOut = _path("--out", help="Output directory [params: paths.catalog]")
TrackOption = Annotated[Optional[bool], typer.Option("--track/--no-track", show_default=False,
                                                     help="Log to MLflow (mlruns/) [params: tracking.enabled]")]


@app.command()
def label(
    allstar: AllstarFile = None,
    payne: PayneFile = None,
    members: MembersFile = None,
    label_table: _path(help="Your own labels [params: paths.label_table]") = None,
    store: _path(help="Spectra store: labels are kept for its stars [params: paths.store]") = None,
    out_dir: LabelsOut = None,
    track: TrackOption = None,
    params: ParamsOption = None,
) -> None:
    """Build the training labels of labels.sources (paper §2.2-2.4 and your own table): labels,
    splits, Table 1, and rejects.parquet with the reason of every input star left out."""
    from apogeenet.pipeline import label as stage

    _print(stage.run(configured(params, {"paths.allstar": allstar, "paths.payne": payne, "paths.members": members,
                                          "paths.label_table": label_table, "paths.store": store,
                                          "paths.labels": out_dir, "tracking.enabled": track})))


@app.command()
def validate(
    allstar: AllstarFile = None,
    labels: LabelsDir = None,
    store: StoreDir = None,
    out_dir: ValidationOut = None,
    track: TrackOption = None,
    params: ParamsOption = None,
) -> None:
    """Great Expectations gates: M-dwarf cuts, label ranges, catalog integrity and splits, spectra
    store. Writes Data Docs and summary.json; exits 1 with the failing expectations if any fail."""
    from apogeenet.pipeline import validate as stage

    _print(stage.run(configured(params, {"paths.allstar": allstar, "paths.labels": labels, "paths.store": store,
                                          "paths.validation": out_dir, "tracking.enabled": track})), strict=True)


def _training_set(labels, store, validation) -> dict:
    return {"paths.labels": labels, "paths.store": store, "paths.validation": validation}


@app.command()
def train(
    init: Annotated[Optional[str], typer.Option(help="Start from a model.pt or an MLflow model URI "
                                                     "[params: train.init_model]")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Training profile [params: train.profile]")] = None,
    labels: LabelsDir = None,
    store: StoreDir = None,
    validation: ValidationDir = None,
    out_dir: ModelOut = None,
    track: TrackOption = None,
    params: ParamsOption = None,
) -> None:
    """Train APOGEE Net (paper §3.3) on the label catalog; writes model.pt, Tables 2/3 and plots.
    An interrupted run resumes from its last checkpoint. Calibrate it with `apogeenet calibrate`."""
    from apogeenet.pipeline import train as stage

    _print(stage.run(configured(params, {"train.init_model": init, "train.profile": profile, "paths.model": out_dir,
                                          "tracking.enabled": track, **_training_set(labels, store, validation)}),
                     progress=True))


@app.command()
def adapt(
    init: Annotated[Optional[str], typer.Option(help="Model to adapt: model.pt or MLflow URI [params: "
                                                     "adapt.init_model; null: the champion, or paths.model "
                                                     "with --no-track]")] = None,
    labels: LabelsDir = None,
    store: StoreDir = None,
    validation: ValidationDir = None,
    out_dir: AdaptedOut = None,
    track: TrackOption = None,
    params: ParamsOption = None,
) -> None:
    """Adapt a trained model to M dwarfs and YSOs (paper §3.4): rounds on MSTAR + YSO + 5 % Payne."""
    from apogeenet.pipeline import adapt as stage

    _print(stage.run(configured(params, {"adapt.init_model": init, "paths.adapted": out_dir,
                                          "tracking.enabled": track, **_training_set(labels, store, validation)})))


@app.command()
def calibrate(
    model: Annotated[Optional[str], typer.Option(help="Model to calibrate: model.pt or MLflow URI "
                                                      "[params: calibration.model; null: paths.adapted]")] = None,
    labels: LabelsDir = None,
    store: StoreDir = None,
    validation: ValidationDir = None,
    truth: TruthFile = None,
    out_dir: CalibratedOut = None,
    track: TrackOption = None,
    params: ParamsOption = None,
) -> None:
    """Fit the σ calibration of each uncertainty method and the out-of-domain reference on the dev
    split (params: calibration, predict), store them with the model and register it."""
    from apogeenet.pipeline import calibrate as stage

    _print(stage.run(configured(params, {"calibration.model": model, "paths.truth": truth, "paths.calibrated": out_dir,
                                          "tracking.enabled": track, **_training_set(labels, store, validation)})))


@app.command()
def baselines(
    labels: LabelsDir = None,
    store: StoreDir = None,
    validation: ValidationDir = None,
    truth: TruthFile = None,
    out_dir: BaselinesOut = None,
    track: TrackOption = None,
    params: ParamsOption = None,
) -> None:
    """Ridge regression and The Cannon on the same splits as APOGEE Net (models in
    params: baselines.models); Tables 2/3 and predictions per model, for `apogeenet evaluate`."""
    from apogeenet.pipeline import baselines as stage

    _print(stage.run(configured(params, {"paths.truth": truth, "paths.baselines": out_dir, "tracking.enabled": track,
                                          **_training_set(labels, store, validation)}), progress=True))


@app.command()
def evaluate(
    model: Annotated[Optional[str], typer.Option(help="model.pt or MLflow URI [params: evaluate.model; "
                                                      "null: paths.calibrated]")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Model before adaptation, for the §3.4 check "
                                                         "[params: evaluate.baseline; null: paths.model]")] = None,
    labels: LabelsDir = None,
    store: StoreDir = None,
    validation: ValidationDir = None,
    truth: TruthFile = None,
    baselines_dir: BaselinesInput = None,
    out_dir: EvaluationOut = None,
    track: TrackOption = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when a check fails.")] = False,
    params: ParamsOption = None,
) -> None:
    """Tables 2/3, the quality bar (gain over the training mean per group) and the adaptation
    check of a model; writes quality.md, CSVs, plots and metrics.json."""
    from apogeenet.pipeline import evaluate as stage

    _print(stage.run(configured(params, {
        "evaluate.model": model, "evaluate.baseline": baseline, "paths.truth": truth, "paths.baselines": baselines_dir,
        "paths.evaluation": out_dir, "tracking.enabled": track, **_training_set(labels, store, validation)})),
        strict=strict)


@app.command()
def predict(
    files: Annotated[Optional[list[Path]], typer.Argument(
        help="apStar files to predict directly, no store to build (a .txt argument lists paths, one per "
             "line); without files: every spectrum of --store", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="Registered alias/version (models:/apogeenet@champion, "
                                                      "models:/apogeenet/3), runs:/ URI or model.pt [params: predict.model]")] = None,
    store: StoreDir = None,
    labels: CatalogLabels = None,
    truth: TruthFile = None,
    out_dir: CatalogOut = None,
    draws: Annotated[Optional[int], typer.Option(min=2, help="Monte-Carlo draws per spectrum [params: predict.draws]")] = None,
    uncertainty: Annotated[Optional[Uncertainty], typer.Option(help="σ from the paper's Monte-Carlo draws, the "
                                                                    "first-order delta method, or none (single pass) "
                                                                    "[params: predict.uncertainty]")] = None,
    error_reference: Annotated[Optional[ErrorReference], typer.Option(
        help="What the pixel-error cap multiplies: the mean (paper) or median good-pixel error "
             "[params: predict.error_reference, the cap predict.error_cap]")] = None,
    plan_only: Annotated[bool, typer.Option(help="Only write the shard plan and print how to run its shards "
                                                 "(a Slurm job array: `apogeenet predict-shard PLAN K`).")] = False,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Processes reading FILES [params: ingest.workers]")] = None,
    track: TrackOption = None,
    params: ParamsOption = None,
) -> None:
    """Predict Teff, log g, [Fe/H] with Monte-Carlo σ (§3.5) for the apStar FILES given, or for every
    spectrum of a store; writes the Table 4 catalog (FITS, Parquet, CSV; all rows and the clean
    view), the §4 YSO selection, plots and the uncertainty calibration. With FILES, --out is a
    directory (default ./apogeenet-catalog) or NAME.fits (the catalog's name, beside the rest).
    Work is done in shards (params: predict.shard_size); a rerun after an interruption computes
    only the shards that have no part yet."""
    from apogeenet.pipeline import predict as stage

    cfg = configured(params, {
        "predict.model": model, "paths.store": store, "paths.labels": labels, "paths.truth": truth,
        "paths.catalog": None if files else out_dir, "predict.draws": draws, "predict.uncertainty": uncertainty,
        "predict.error_reference": error_reference, "ingest.workers": workers, "tracking.enabled": track})
    if files:
        paths = stage.listed(files)
        problems = []

        def unreadable(given, reason) -> None:
            problems.append(given)
            err.print(f"[yellow]unreadable:[/yellow] {given}: {reason}", highlight=False, soft_wrap=True)

        result = stage.run_files(cfg, paths, out_dir or Path("apogeenet-catalog"), progress=True,
                                 on_unreadable=unreadable)
        _print(result)
        out.print(f"{result.metrics['n_spectra']} of {len(paths)} files predicted"
                  + (f"; {len(problems)} unreadable (listed above)" if problems else ""), highlight=False)
    elif plan_only:
        from apogeenet.locks import one_writer

        with one_writer(cfg.paths.catalog, "predict"):
            plan = stage.plan(cfg)
        out.print(f"{plan.file}: {plan.n_rows} spectra in {plan.n_shards} shards of {plan.shard_rows}, "
                  f"{len(plan.missing())} without a part.\nRun each shard K (0 to {plan.n_shards - 1}) as "
                  f"`apogeenet predict-shard {plan.file} K`, e.g. `sbatch --array=0-{plan.n_shards - 1} "
                  "predict-shards.sbatch` (README, \"Survey scale\"), then `apogeenet predict` again "
                  "with the same options to merge.", soft_wrap=True, highlight=False)
    else:
        _print(stage.run(cfg, progress=True))


