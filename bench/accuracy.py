"""Learning curve as JSON (and a plot): test RMS against the truth of APOGEE Net (the first
member alone and the ensemble of the training profile), ridge and The Cannon at growing training
sizes, on two (or more) training seeds, per group and parameter, on one larger synthetic survey.

    python bench/accuracy.py [--n-stars 10000] [--sizes 1000 3000 0] [--seeds 0 10] [--members K]
                             [--work DIR] [--device cpu|cuda] [--out bench/results/accuracy.json]
                             [--plot docs/learning_curve.png]

The survey (``--n-stars``, seed 42: its first 2 000 stars are the default survey's), its store and
its labels are made once under ``--work`` and reused. For each size N (0: the whole training
split) the same N training stars — a fixed random order of the training split, every source in
proportion — train all models; the dev split picks ridge's penalty and stops APOGEE Net (the
``train.profile`` of params.yaml, its ``members`` unless ``--members``); the test split is scored
against the truth. Seed s trains members s, s + 1, …; ``single`` is member s alone, ``ensemble``
their mean, each with the output maps ``apogeenet calibrate`` fits on the dev split
(:mod:`apogeenet.output_maps`; their fit is in ``output_maps``), and both also without them
(``*_unmapped``, the paper's raw outputs). ``--from-checkpoints`` scores the members an earlier
run left under ``--work`` instead of training them again. Ridge and The Cannon do not depend on the seed. Each fit's scores are kept in
``--work/accuracy-partial.json`` as it ends, so an interrupted run continues where it stopped.

The JSON holds each cell's RMS per model, size and seed, their mean and spread (half the range
over the seeds), and the issue's checks: per seed and size, the cells where the ensemble is ahead
of both baselines (``ensemble_ahead``), and the cells worse at the largest size than at the one
before beyond the seeds' spread (``worse_at_largest``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml
from benchio import emit

from apogeenet.baselines import fit_cannon, fit_ridge, normalised_spectra
from apogeenet.calibrate_model import fit_member_maps
from apogeenet.config import load_params
from apogeenet.evaluate import GROUPS, PARAMETERS
from apogeenet.io.tables import read_truth
from apogeenet.labels.catalog import LABEL_COLUMNS
from apogeenet.serving import Predictor

MODELS = ("single", "ensemble", "ridge", "cannon")
UNMAPPED = ("single_unmapped", "ensemble_unmapped")
"""The same networks without their output maps (the paper's raw outputs)."""


def trained_members(directory: Path, members: int) -> list:
    """The best weights of an earlier run's members under ``directory`` (``--from-checkpoints``)."""
    from apogeenet.model import ApogeeNet
    from apogeenet.train import member_directory
    from apogeenet.weights import load_weights

    nets = []
    for k in range(members):
        nets.append(ApogeeNet(len(LABEL_COLUMNS)))
        nets[-1].load_state_dict(load_weights(member_directory(directory, k, members) / "best.pt")["model"])
    return [net.eval() for net in nets]


def project(work: Path, n_stars: int):
    """The bench's survey, store and validated labels (made once); returns (params, data)."""
    from apogeenet.pipeline import label, validate
    from apogeenet.pipeline.common import training_data
    from apogeenet.ingest import ingest
    from apogeenet.synth.files import SurveyFiles
    from apogeenet.synth.survey import make_survey

    files = SurveyFiles.under(work / "survey")
    if not files.truth.exists():
        make_survey(files, n_stars, seed=42, fractions=load_params().synth.fractions, progress=True)
    ingest(files.spectra, work / "store", workers=2, progress=True)
    params = load_params().model_dump(mode="json")
    params["paths"] |= {"allstar": str(files.allstar), "payne": str(files.payne), "members": str(files.members),
                        "truth": str(files.truth), "spectra": str(files.spectra), "store": str(work / "store"),
                        "labels": str(work / "labels"), "validation": str(work / "validation")}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_params(work / "params.yaml").with_overrides({"tracking.enabled": False})
    if not (work / "labels" / "labels.parquet").exists():
        label.run(cfg)
    if not validate.run(cfg).passed:
        raise SystemExit("the bench survey's labels failed validation")
    return cfg, training_data(cfg)


def subset(data, n: int, seed: int = 0) -> np.ndarray:
    """N training positions: a fixed random order of each source's training stars, in proportion."""
    train = data.select(split="train")
    if n <= 0 or n >= len(train):
        return train
    order = np.random.default_rng(seed).permutation(train)
    sources = data.catalog["SOURCE"].to_numpy()
    picked = [order[sources[order] == s][: max(1, round(n * np.mean(sources[train] == s)))]
              for s in np.unique(sources[train])]
    return np.sort(np.concatenate(picked))


def scores(data, truth, positions: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """RMS against the truth per group and parameter over ``positions``."""
    true = truth.reindex(data.catalog["APOGEE_ID"].to_numpy()[positions])[list(LABEL_COLUMNS)].to_numpy()
    sources = data.catalog["SOURCE"].to_numpy()[positions]
    out = {}
    for group, members in GROUPS.items():
        pick = np.ones(len(positions), bool) if members is None else np.isin(sources, members)
        for k, (column, parameter) in enumerate(PARAMETERS.items()):
            out[f"{group}/{parameter}"] = float(np.sqrt(np.nanmean((prediction[pick, k] - true[pick, k]) ** 2)))
    return out


def main() -> None:
    import json

    import torch

    from apogeenet.config import FluxUnit, Loss, per_parameter
    from apogeenet.train import train_ensemble

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-stars", type=int, default=10_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 10])
    parser.add_argument("--members", type=int)
    parser.add_argument("--work", type=Path, default=Path("/tmp/apogeenet-accuracy"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--from-checkpoints", action="store_true",
                        help="score the members an earlier run left under --work instead of training them")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.cuda.is_available = lambda: False  # train_model picks the device itself
    cfg, data = project(args.work, args.n_stars)
    truth = read_truth(cfg.paths.truth)
    dev, test = data.select(split="dev"), data.select(split="test")
    labels = data.catalog[list(LABEL_COLUMNS)].to_numpy(np.float64)
    profile = cfg.train.active()
    if args.members:
        profile = profile.model_copy(update={"members": args.members})
    deltas = per_parameter(profile.huber_delta)
    recipe = f"{profile.members}x{profile.max_epochs}" + (  # names fits and checkpoints
        "" if profile.loss is Loss.MSE else
        f"-{profile.loss}" + ("-".join(f"{d:g}" for d in deltas) if len(set(deltas)) > 1 else f"{deltas[0]:g}"))
    partial_file = args.work / "accuracy-partial.json"
    partial = json.loads(partial_file.read_text()) if partial_file.exists() else {}

    def kept(key: str, compute) -> dict:
        """A fit's scores from an earlier run, or computed now and kept."""
        if key not in partial:
            started = time.perf_counter()
            partial[key] = {"rms": compute(), "seconds": time.perf_counter() - started}
            partial_file.write_text(json.dumps(partial, indent=1))
        return partial[key]

    baseline_inputs = None
    results: dict[str, dict] = {m: {} for m in MODELS + UNMAPPED}
    seconds: dict[str, dict] = {m: {} for m in MODELS + UNMAPPED}
    output_maps: dict[int, dict] = {}
    sizes = []
    for n in args.sizes:
        train = subset(data, n)
        size = len(train)
        sizes.append(size)
        data.flux_scale = data.median_flux(train) if profile.flux_unit is FluxUnit.CONSTANT else None
        for seed in args.seeds:
            def networks(seed=seed):
                directory = args.work / f"ck-{size}-{recipe}-s{seed}"
                if args.from_checkpoints:
                    nets = trained_members(directory, profile.members)
                else:
                    nets = [f.model for f in train_ensemble(data, train, dev, profile.model_copy(update={"seed": seed}),
                                                            directory, progress=True)]
                found, test_flux = {}, data.prepared(test)
                for name, members in {"single": nets[:1], "ensemble": nets}.items():
                    predictor = Predictor(members, data.table1, data.flux_scale)
                    found[name + "_unmapped"] = scores(data, truth, test, predictor.predict(test_flux).to_numpy())
                    found["maps/" + name] = fit_member_maps(predictor, data, dev,  # as `apogeenet calibrate` does
                                                            cfg.calibration)
                    found[name] = scores(data, truth, test, predictor.predict(test_flux).to_numpy())
                return found
            maps = "-".join(cfg.calibration.output_maps) + f"-regions-huber{cfg.calibration.map_huber_delta}" \
                if cfg.calibration.output_maps else "none"
            found = kept(f"networks/{size}/{recipe}-maps-{maps}/{seed}", networks)
            for name in ("single", "ensemble", "single_unmapped", "ensemble_unmapped"):
                results[name].setdefault(size, {})[seed] = found["rms"][name]
                seconds[name].setdefault(size, {})[seed] = found["seconds"]
            output_maps.setdefault(size, {})[seed] = found["rms"]["maps/ensemble"]
        if baseline_inputs is None and any(f"{m}/{size}" not in partial for m in ("ridge", "cannon")):
            baseline_inputs = normalised_spectra(data, cfg.baselines.continuum_length, progress=True)

        def ridge():
            x, ivar = baseline_inputs
            fit = fit_ridge(x[train], data.targets[train], x[dev], data.targets[dev], data.table1,
                            cfg.baselines.ridge_alphas)
            return scores(data, truth, test, fit.predict(x[test], ivar[test]))

        def cannon():
            x, ivar = baseline_inputs
            fit = fit_cannon(data.store.wavelength, x[train], ivar[train], labels[train])
            return scores(data, truth, test, fit.predict(x[test], ivar[test]))

        for name, compute in (("ridge", ridge), ("cannon", cannon)):
            found = kept(f"{name}/{size}", compute)
            results[name][size] = {seed: found["rms"] for seed in args.seeds}
            seconds[name][size] = found["seconds"]
        print({m: round(float(np.mean([results[m][size][s]["full/teff"] for s in args.seeds])), 1)
               for m in MODELS}, flush=True)
    report = {"n_stars": args.n_stars, "n_test": int(len(test)), "profile": cfg.train.profile,
              "members": profile.members, "max_epochs": profile.max_epochs, "loss": str(profile.loss), "seeds": args.seeds,
              "device": "cuda" if torch.cuda.is_available() else "cpu", "training_sizes": sizes,
              "rms_vs_truth": results, "summary": summarise(results, sizes, args.seeds), "seconds": seconds,
              "output_maps": output_maps, "from_checkpoints": args.from_checkpoints,
              **checks(results, sizes, args.seeds)}
    if args.plot:
        plot(report, args.plot)
    emit(report, args.out)


def summarise(results: dict, sizes: list[int], seeds: list[int]) -> dict:
    """Per model, size and cell: the mean over the seeds and the spread (half their range)."""
    out: dict = {}
    for model, by_size in results.items():
        for size in sizes:
            cells = by_size[size][seeds[0]]
            out.setdefault(model, {})[size] = {
                cell: {"mean": float(np.mean([by_size[size][s][cell] for s in seeds])),
                       "spread": float(np.ptp([by_size[size][s][cell] for s in seeds]) / 2)} for cell in cells}
    return out


def checks(results: dict, sizes: list[int], seeds: list[int]) -> dict:
    """The bars of the issue: where the ensemble is ahead of both baselines (per size and seed),
    and which cells are worse at the largest size than at the one before beyond the seed spread."""
    cells = [c for c, v in results["ensemble"][sizes[0]][seeds[0]].items() if np.isfinite(v)]  # 4 groups × 3

    def ahead_of_baselines(model: str) -> dict:
        return {size: {seed: [c for c in cells if results[model][size][seed][c]
                              < min(results[b][size][seed][c] for b in ("ridge", "cannon"))] for seed in seeds}
                for size in sizes}
    ahead = ahead_of_baselines("ensemble")
    unmapped = ahead_of_baselines("ensemble_unmapped") if results.get("ensemble_unmapped") else {}
    summary = summarise(results, sizes, seeds)["ensemble"]
    worse = []
    if len(sizes) > 1:
        last, before = summary[sizes[-1]], summary[sizes[-2]]
        worse = [c for c in cells if last[c]["mean"] - before[c]["mean"] > last[c]["spread"] + before[c]["spread"]]
    return {"ensemble_ahead": ahead, "ensemble_ahead_counts": {size: {seed: len(v) for seed, v in by_seed.items()}
                                                               for size, by_seed in ahead.items()},
            "unmapped_ahead_counts": {size: {seed: len(v) for seed, v in by_seed.items()}
                                      for size, by_seed in unmapped.items()},
            "cells": len(cells), "worse_at_largest": worse}


def plot(report: dict, path: Path) -> None:
    from matplotlib.ticker import NullLocator

    from apogeenet.plotting import pyplot, save

    plt = pyplot()
    sizes = report["training_sizes"]
    groups = [g for g in GROUPS if np.isfinite(report["summary"]["ensemble"][sizes[0]][f"{g}/teff"]["mean"])]
    fig, axes = plt.subplots(3, len(groups), figsize=(3.3 * len(groups), 8), sharex=True, squeeze=False)
    for col, group in enumerate(groups):
        for row, parameter in enumerate(PARAMETERS.values()):
            ax = axes[row, col]
            cells = {model: [report["summary"][model][n][f"{group}/{parameter}"] for n in sizes] for model in MODELS}
            for model, style in zip(MODELS, ("o:", "o-", "s--", "^:")):
                ax.errorbar(sizes, [c["mean"] for c in cells[model]], yerr=[c["spread"] for c in cells[model]],
                            fmt=style, capsize=2, label=model)
            top = max(c["mean"] + c["spread"] for model in MODELS if model != "cannon" for c in cells[model])
            far = [c["mean"] for c in cells["cannon"] if c["mean"] > 1.5 * top]
            if far:  # The Cannon off the scale (its YSOs): say where, keep the others readable
                ax.set_ylim(0, 1.5 * top)
                values = "–".join(dict.fromkeys(f"{v:.0f}" if v >= 100 else f"{v:.3g}" for v in (min(far), max(far))))
                ax.text(0.98, 0.97, f"cannon {values} ↑", transform=ax.transAxes, ha="right", va="top", fontsize=7,
                        color="C3")
            ax.set_xscale("log")
            ax.set_xlim(min(sizes) / 1.5, max(sizes) * 1.5)
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.set_title(f"{group} {parameter}", fontsize=9)
            if col == 0:
                ax.set_ylabel("test RMS vs truth")
            if row == 2:
                ax.set_xlabel("training spectra")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Learning curve on a {report['n_stars']}-star synthetic survey ({report['device']}; mean and "
                 f"half-range over seeds {report['seeds']}; ensemble of {report['members']})")
    save(fig, path)


if __name__ == "__main__":
    main()
