"""Learning curve as JSON (and a plot): test RMS against the truth of APOGEE Net, ridge and The
Cannon at growing training sizes, per group and parameter, on one larger synthetic survey.

    python bench/accuracy.py [--n-stars 10000] [--sizes 300 1000 3000 0] [--work DIR]
                             [--device cpu|cuda] [--out bench/results/accuracy.json]
                             [--plot docs/learning_curve.png]

The survey (``--n-stars``, seed 42: its first 2 000 stars are the default survey's), its store and
its labels are made once under ``--work`` and reused. For each size N (0: the whole training
split) the same N training stars — a fixed random order of the training split, every source in
proportion — train all three models; the dev split picks ridge's penalty and stops APOGEE Net
(the ``train.profile`` of params.yaml); the test split is scored against the truth. The JSON
names, per group and parameter, the smallest N at which the network beats both baselines
(``overtakes``; null where it never does in the sizes tried).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml
from benchio import emit

from apogeenet.baselines import fit_cannon, fit_ridge, normalised_spectra
from apogeenet.config import load_params
from apogeenet.evaluate import GROUPS, PARAMETERS
from apogeenet.io.tables import read_truth
from apogeenet.labels.catalog import LABEL_COLUMNS
from apogeenet.serving import Predictor

MODELS = ("apogeenet", "ridge", "cannon")


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
    import torch

    from apogeenet.config import FluxUnit
    from apogeenet.train import train_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-stars", type=int, default=10_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 3000, 0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/apogeenet-accuracy"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.cuda.is_available = lambda: False  # train_model picks the device itself
    cfg, data = project(args.work, args.n_stars)
    truth = read_truth(cfg.paths.truth)
    dev, test = data.select(split="dev"), data.select(split="test")
    x, ivar = normalised_spectra(data, cfg.baselines.continuum_length, progress=True)
    labels = data.catalog[list(LABEL_COLUMNS)].to_numpy(np.float64)
    profile = cfg.train.active()
    results: dict[str, dict[int, dict]] = {m: {} for m in MODELS}
    seconds: dict[str, dict[int, float]] = {m: {} for m in MODELS}
    sizes = []
    for n in args.sizes:
        train = subset(data, n)
        sizes.append(len(train))
        started = time.perf_counter()
        data.flux_scale = data.median_flux(train) if profile.flux_unit is FluxUnit.CONSTANT else None
        fit = train_model(data, train, dev, profile, args.work / f"ck-{len(train)}", progress=True)
        net = Predictor(fit.model, data.table1, data.flux_scale).predict(data.prepared(test)).to_numpy()
        results["apogeenet"][len(train)] = scores(data, truth, test, net)
        seconds["apogeenet"][len(train)] = time.perf_counter() - started
        started = time.perf_counter()
        ridge = fit_ridge(x[train], data.targets[train], x[dev], data.targets[dev], data.table1,
                          cfg.baselines.ridge_alphas)
        results["ridge"][len(train)] = scores(data, truth, test, ridge.predict(x[test], ivar[test]))
        seconds["ridge"][len(train)] = time.perf_counter() - started
        started = time.perf_counter()
        cannon = fit_cannon(data.store.wavelength, x[train], ivar[train], labels[train])
        results["cannon"][len(train)] = scores(data, truth, test, cannon.predict(x[test], ivar[test]))
        seconds["cannon"][len(train)] = time.perf_counter() - started
        print({m: results[m][len(train)]["full/teff"] for m in MODELS}, flush=True)
    overtakes = {}
    for cell in results["apogeenet"][sizes[0]]:
        wins = [n for n in sizes if results["apogeenet"][n][cell] < min(results[b][n][cell] for b in ("ridge", "cannon"))]
        overtakes[cell] = min(wins) if wins else None
    report = {"n_stars": args.n_stars, "n_test": int(len(test)), "profile": cfg.train.profile,
              "device": "cuda" if torch.cuda.is_available() else "cpu", "training_sizes": sizes,
              "rms_vs_truth": results, "seconds": seconds, "overtakes": overtakes}
    if args.plot:
        plot(report, args.plot)
    emit(report, args.out)


def plot(report: dict, path: Path) -> None:
    from apogeenet.plotting import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(3, 4, figsize=(13, 8), sharex=True)
    sizes = report["training_sizes"]
    for col, group in enumerate(GROUPS):
        for row, parameter in enumerate(PARAMETERS.values()):
            ax = axes[row, col]
            for model, style in zip(MODELS, ("o-", "s--", "^:")):
                ax.plot(sizes, [report["rms_vs_truth"][model][n][f"{group}/{parameter}"] for n in sizes], style,
                        label=model)
            ax.set_xscale("log")
            ax.set_title(f"{group} {parameter}", fontsize=9)
            if col == 0:
                ax.set_ylabel("test RMS vs truth")
            if row == 2:
                ax.set_xlabel("training spectra")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Learning curve on a {report['n_stars']}-star synthetic survey ({report['device']})")
    save(fig, path)


if __name__ == "__main__":
    main()
