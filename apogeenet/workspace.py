"""``apogeenet init``: a workspace for one's own spectra and labels, or for the synthetic demo.

A workspace is a folder with ``params.yaml`` (the user's paths and label sources, everything
else the defaults), ``dvc.yaml`` (the stages those sources need, no truth table unless the
survey is synthetic), ``.dvcignore``, a README stub and a DVC repository, so that ``dvc repro``
runs ingest → label → validate → train (→ adapt) → calibrate → evaluate → predict with no edit.
The label table is copied into ``data/`` (small; versioned with the workspace); the apStar tree
stays where it is and is named by its absolute path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from apogeenet.config import LabelSource, Params
from apogeenet.errors import UserFacingError

__all__ = ["WorkspaceError", "dvc_stages", "init_workspace"]


class WorkspaceError(UserFacingError):
    """A workspace that cannot be made as asked (the message says why)."""


def _stage(cmd: str, deps: list[str], params: list[str], outs: list[str], metrics: list[str] = (),
           plots: list[str] = (), persist: tuple[str, ...] = (), uncached: tuple[str, ...] = ()) -> dict:
    """One dvc.yaml stage; ``persist`` outs survive a rerun, ``uncached`` outs stay out of the cache."""
    def entry(path: str):
        options = {**({"persist": True} if path in persist else {}), **({"cache": False} if path in uncached else {})}
        return {path: options} if options else path

    stage = {"cmd": cmd, "deps": deps, "params": params, "outs": [entry(o) for o in outs]}
    if metrics:
        stage["metrics"] = [{m: {"cache": False}} for m in metrics]
    if plots:
        stage["plots"] = [{p: {"cache": False}} for p in plots]
    return stage


_TABLES = ("tables.md", "table2.csv", "table3.csv")
_PLOTS = ("label_vs_prediction.png", "kiel.png")


def dvc_stages(cfg: Params, *, synthetic: bool, download: bool = False) -> dict[str, dict]:
    """The stages of a workspace with ``cfg``'s label sources (``synthetic``: a ``synth`` stage
    makes the survey and its truth table judges the models; ``download``: a stage fetches the
    spectra of ``paths.allstar``, the selection ``download.ids``/``download.limit``)."""
    sources = set(cfg.labels.sources)
    adapt = bool(sources & {LabelSource.MSTAR, LabelSource.YSO})
    truth = " --truth ${paths.truth}" if synthetic else ""
    truth_dep = ["${paths.truth}"] if synthetic else []
    label_inputs = {"allstar": bool(sources & {LabelSource.MSTAR, LabelSource.YSO}),
                    "payne": LabelSource.PAYNE in sources, "members": LabelSource.YSO in sources,
                    "label_table": LabelSource.TABLE in sources}
    used = [name for name, on in label_inputs.items() if on]
    gate = ["${paths.validation}/summary.json"]
    labels, store = "${paths.labels}", "${paths.store}"
    stages: dict[str, dict] = {}
    if synthetic:
        stages["synth"] = _stage("apogeenet synth", [], ["synth"],
                                 ["${paths.spectra}", "${paths.allstar}", "${paths.payne}", "${paths.members}", "${paths.truth}"])
    if download:
        spectra = "${paths.spectra}"
        stages["download"] = _stage("apogeenet download --catalog ${paths.allstar} --out " + spectra,
                                    ["${paths.allstar}"] + (["${download.ids}"] if cfg.download.ids else []),
                                    [f"download.{k}" for k in ("release", "base_url", "ids", "limit")], [spectra],
                                    persist=(spectra,), uncached=(spectra,))  # a rerun fetches only what is missing
    stages["ingest"] = _stage("apogeenet ingest ${paths.spectra} ${paths.store}", ["${paths.spectra}"],
                              ["ingest.workers", "ingest.segment_rows"], [store], persist=(store,))
    label_outs = [f"{labels}/{name}" for name in ("labels.parquet", "labels.fits", "table1.json", "mstar_selection.parquet",
                                                  "yso_members.parquet", "rejects.parquet")]
    label_outs += [f"{labels}/yso_net.pt"] if LabelSource.YSO in sources else []
    stages["label"] = _stage(
        "apogeenet label " + " ".join(f"--{n.replace('_', '-')} ${{paths.{n}}}" for n in used)
        + f" --store {store} --out {labels}", [f"${{paths.{n}}}" for n in used] + [store], ["labels", "yso"],
        label_outs, metrics=[f"{labels}/metrics.json"], persist=(f"{labels}/labels.parquet",))
    allstar = " --allstar ${paths.allstar}" if label_inputs["allstar"] else ""
    stages["validate"] = _stage(
        f"apogeenet validate{allstar} --labels {labels} --store {store} --out ${{paths.validation}}",
        (["${paths.allstar}"] if allstar else []) + [f"{labels}/labels.parquet", f"{labels}/table1.json",
                                                     f"{labels}/mstar_selection.parquet", store],
        ["validation", "labels"], [], metrics=["${paths.validation}/summary.json"])
    stages["validate"].pop("outs")
    common = [f"{labels}/labels.parquet", f"{labels}/table1.json", store]

    def trained(directory: str) -> tuple[list[str], list[str], list[str]]:
        outs = [f"{directory}/model.pt", f"{directory}/predictions.parquet"] + [f"{directory}/{t}" for t in _TABLES]
        return outs, [f"{directory}/metrics.json"], [f"{directory}/{p}" for p in _PLOTS]

    outs, metrics, plots = trained("${paths.model}")
    stages["train"] = _stage(f"apogeenet train --labels {labels} --store {store} --validation ${{paths.validation}} "
                             "--out ${paths.model}", gate + common, ["train"], outs, metrics, plots,
                             uncached=tuple(outs[2:]))
    calibrated_from = "${paths.model}/model.pt"
    if adapt:
        outs, metrics, plots = trained("${paths.adapted}")
        stages["adapt"] = _stage(f"apogeenet adapt --init ${{paths.model}}/model.pt --labels {labels} --store {store} "
                                 "--validation ${paths.validation} --out ${paths.adapted}",
                                 gate + ["${paths.model}/model.pt"] + common, ["adapt"], outs, metrics, plots,
                                 uncached=tuple(outs[2:]))
        calibrated_from = "${paths.adapted}/model.pt"
    sigma = [f"predict.{k}" for k in ("uncertainty", "draws", "delta_points", "seed", "error_cap", "error_reference",
                                      "max_batch", "forward_batch", "spectra_per_block")]
    stages["calibrate"] = _stage(f"apogeenet calibrate --model {calibrated_from} --labels {labels} --store {store} "
                                 f"--validation ${{paths.validation}}{truth} --out ${{paths.calibrated}}",
                                 gate + truth_dep + [calibrated_from] + common, ["calibration", *sigma],
                                 ["${paths.calibrated}/model.pt"], ["${paths.calibrated}/metrics.json"])
    evaluation = "${paths.evaluation}"
    baselines = ""
    if synthetic:
        names = ("ridge", "cannon")
        per_model = lambda files: [f"${{paths.baselines}}/{m}/{f}" for f in files for m in names]  # noqa: E731
        stages["baselines"] = _stage(f"apogeenet baselines --labels {labels} --store {store} --validation "
                                     f"${{paths.validation}}{truth} --out ${{paths.baselines}}", gate + truth_dep + common,
                                     ["baselines"], per_model(("predictions.parquet", *_TABLES)),
                                     per_model(("metrics.json",)), per_model(_PLOTS),
                                     uncached=tuple(per_model(_TABLES)))
        baselines = " --baselines ${paths.baselines}"
    evaluated = [f"{evaluation}/{f}" for f in ("predictions.parquet", "quality.md", "quality.csv",
                                               *(["adaptation.csv"] if adapt else []), "comparison.csv", "comparison.md", "tables.md", "calibration.md",
                                               *(["calibration_truth.csv"] if synthetic else []), "calibration_labels.csv", "table2.csv",
                                               "table3.csv")]
    stages["evaluate"] = _stage(
        f"apogeenet evaluate --model ${{paths.calibrated}}/model.pt --baseline ${{paths.model}}/model.pt --labels {labels} "
        f"--store {store} --validation ${{paths.validation}}{truth}{baselines} --out {evaluation}",
        ([f"${{paths.baselines}}/{m}/predictions.parquet" for m in ("ridge", "cannon")] if synthetic else [])
        + gate + truth_dep + ["${paths.model}/model.pt", "${paths.calibrated}/model.pt", f"{labels}/labels.parquet", store],
        ["evaluate", "baselines.models", *sigma[:6]], evaluated, [f"{evaluation}/metrics.json"],
        [f"{evaluation}/{p}" for p in (*_PLOTS, "z_histograms.png")], uncached=tuple(evaluated[1:]))
    catalog = "${paths.catalog}"
    products = [f"{catalog}/{stem}.{kind}" for stem in ("catalog", "catalog_clean") for kind in ("fits", "parquet", "csv")]
    reports = [f"{catalog}/{f}" for f in ("summary.md", *(["calibration_truth.csv"] if synthetic else []),
                                          "calibration_labels.csv")]
    stages["predict"] = _stage(
        f"apogeenet predict --model ${{paths.calibrated}}/model.pt --store {store} --labels {labels}{truth} --out {catalog}",
        gate + truth_dep + ["${paths.calibrated}/model.pt", f"{labels}/labels.parquet", store], ["predict"],
        products + reports, [f"{catalog}/metrics.json"],
        [f"{catalog}/{p}" for p in ("kiel_by_type.png", "sigma_vs_snr.png", "yso_selection.png", "z_histograms.png")],
        uncached=tuple(reports))
    return stages


_README = """# {name}: an apogeenet workspace

Made by `apogeenet init` ({what}). Everything that runs is in `dvc.yaml`; every setting is in
`params.yaml` (its keys are described in apogeenet's README and `apogeenet info`).

    dvc repro                 # {download}ingest -> label -> validate -> train{adapt} -> calibrate -> evaluate -> predict
    apogeenet report          # the reports: labels, gates, Tables 2/3, quality bar, catalog
    mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db

Outputs: `derived/labels/rejects.parquet` (every input star without a label, with its reason),
`derived/evaluation/quality.md`, `derived/catalog/catalog.fits` (Table 4; FLAGS bits in its header,
FLAG_NAMES spelled out; the clean view `catalog_clean.*` keeps FLAGS == 0).
"""


def init_workspace(directory: Path, *, synthetic: bool = False, spectra: Path | None = None,
                   label_table: Path | None = None, table_columns: dict[str, str | None] | None = None,
                   allstar: Path | None = None, payne: Path | None = None, members: Path | None = None,
                   sources: list[str] | None = None, ids: Path | None = None,
                   overrides: dict | None = None) -> Params:
    """Make the workspace ``directory`` (new or empty) and return its parameters; see the module
    docstring. Without ``spectra`` the workspace downloads those of ``allstar`` (the rows of
    ``ids`` when given). ``sources`` default: ``table`` with a label table, ``payne`` with a Payne
    table, ``yso`` with members, ``mstar`` with an allStar and no other labels.
    ``table_columns`` maps labels.table keys (id, teff, logg, fe_h, description) to the user's
    names; ``overrides`` are further dotted settings (``train.profile``, ``download.limit``)."""
    from dvc.repo import Repo

    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise WorkspaceError(f"{directory} is not empty: give a new or empty folder")
    if synthetic and any(p is not None for p in (spectra, label_table, allstar, payne, members, ids)):
        raise WorkspaceError("--synthetic makes its own survey: give it no --spectra, --labels or catalogs")
    if not synthetic and spectra is None and allstar is None:
        raise WorkspaceError("give --spectra DIR (a tree of apStar files) or --allstar FILE (to download its "
                             "spectra), or --synthetic for the demo survey")
    download = not synthetic and spectra is None
    for given in (spectra, label_table, allstar, payne, members, ids):
        if given is not None and not Path(given).exists():
            raise WorkspaceError(f"{given}: no such file or folder")
    settings = dict(overrides or {})
    if not synthetic:
        if sources is None:
            sources = ([LabelSource.TABLE.value] if label_table else []) + ([LabelSource.PAYNE.value] if payne else [])
            sources += [LabelSource.MSTAR.value] if allstar and not (label_table or payne) else []
            sources += [LabelSource.YSO.value] if members else []
        if not sources:
            raise WorkspaceError("no labels to train on: give --labels TABLE (your own), or --payne and/or "
                                 "--allstar (with --members) for the paper's recipes")
        settings |= {"paths.truth": None, "labels.sources": sources,
                     "paths.spectra": str(Path(spectra).resolve()) if spectra else "data/apStar",
                     "paths.allstar": None, "paths.payne": None, "paths.members": None,
                     "calibration.model": None if {"mstar", "yso"} & set(sources) else str(Params().paths.model / "model.pt")}
        data = directory / "data"
        for key, given in (("paths.allstar", allstar), ("paths.payne", payne), ("paths.members", members),
                           ("paths.label_table", label_table), ("download.ids", ids)):
            if given is not None:  # catalogs are small: the workspace keeps (and versions) its own copy
                data.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(given, data / Path(given).name)
                settings[key] = f"data/{Path(given).name}"
        for key, value in (table_columns or {}).items():
            settings[f"labels.table.{key}"] = value
    cfg = Params().with_overrides(settings)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "params.yaml").write_text(
        "# apogeenet workspace settings (apogeenet init); see apogeenet's README for every key\n"
        + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    stages = dvc_stages(cfg, synthetic=synthetic, download=download)
    (directory / "dvc.yaml").write_text("# made by apogeenet init: the stages of this workspace's label sources\n"
                                        + yaml.safe_dump({"stages": stages}, sort_keys=False))
    (directory / ".dvcignore").write_text("mlruns/\n")
    what = "the synthetic demo survey" if synthetic else \
        f"spectra {spectra or f'of {allstar}, downloaded'}, labels {', '.join(cfg.labels.sources)}"
    (directory / "README.md").write_text(_README.format(name=directory.name, what=what,
                                                        download="download -> " if download else "",
                                                        adapt=" -> adapt" if "adapt" in stages else ""))
    Repo.init(str(directory), no_scm=True)
    return cfg

