"""The physical limit: the Cramér–Rao bound on Teff, log g and [Fe/H] of each test star of the
synthetic survey, and how far every model is from it, as JSON.

    python bench/limit.py [--params params.yaml] [--model derived/calibrated/model.pt]
                          [--out bench/results/limit.json]

For each test star the bound comes from the survey's own forward model at the star's true
parameters and the pixel errors its file was given (pixels with the 1e10 sentinel carry no
information), with α/Fe, the dilution (R/d)² and the extinction marginalised as nuisance
parameters (:mod:`apogeenet.synth.limit`).

Reported per label group (payne, mstar, yso, full) and parameter: the median bound and its RMS
over the stars (the RMS an efficient estimator would reach), the bound with the nuisance
parameters known (what marginalising costs), the label error (RMS of label − truth), and the RMS
against the truth of the model (``ensemble``: the model file's members' mean; ``single``: its
first member), ridge and The Cannon (the project's baselines stage), each also as ``crlb_ratio``
= RMS / RMS of the bound. Sandford et al. (2020) found literature abundances within about 2× of
their bounds; no published bound exists for APOGEE.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from benchio import emit

from apogeenet.config import load_params
from apogeenet.evaluate import GROUPS
from apogeenet.io.tables import read_truth
from apogeenet.labels.catalog import LABEL_COLUMNS
from apogeenet.synth.limit import PARAMETERS, bounds, fisher_matrices


def pixel_sigma(store, rows: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Each spectrum's σ on the emulator's pixels (inf where the file has no data)."""
    spectra = store.read(rows)
    error = np.asarray(spectra.error, np.float64)[:, pixels]
    flux = np.asarray(spectra.flux, np.float64)[:, pixels]
    good = np.isfinite(flux) & np.isfinite(error) & (error > 0) & (error < 1e10)
    return np.where(good, error, np.inf)


def main() -> None:
    from apogeenet.pipeline.common import training_data
    from apogeenet.serving import Predictor
    from apogeenet.synth.emulator import PayneEmulator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = load_params(args.params).with_overrides({"tracking.enabled": False})
    truth = read_truth(cfg.paths.truth)
    if truth is None:
        raise SystemExit("bench/limit.py needs a synthetic survey with its truth (paths.truth)")
    data = training_data(cfg)
    test = data.select(split="test")
    ids = data.catalog["APOGEE_ID"].to_numpy()[test]
    sources = data.catalog["SOURCE"].to_numpy()[test]
    stars = truth.loc[ids].rename(columns={"TEFF": "teff", "LOGG": "logg", "FE_H": "fe_h", "ALPHA_FE": "alpha_fe",
                                           "RADIUS": "radius", "DISTANCE": "distance_pc", "AV": "av"})
    sigma = pixel_sigma(data.store, data.rows[test], PayneEmulator().pixel_index)
    marginal, known = bounds(fisher_matrices(stars, sigma))
    true = stars[["teff", "logg", "fe_h"]].to_numpy(float)
    model_path = args.model or cfg.paths.calibrated / "model.pt"
    predictor = Predictor.load(model_path)
    flux = data.prepared(test)
    estimates = {"ensemble": predictor.predict(flux).to_numpy(),
                 "single": Predictor(predictor.first, predictor.table1, predictor.flux_scale).predict(flux).to_numpy(),
                 "labels": data.catalog[list(LABEL_COLUMNS)].to_numpy(float)[test]}
    for name in cfg.baselines.models:
        frame = pd.read_parquet(cfg.paths.baselines / str(name) / "predictions.parquet").set_index("APOGEE_ID")
        estimates[str(name)] = frame.loc[ids, [f"PRED_{c}" for c in LABEL_COLUMNS]].to_numpy(float)
    report: dict = {"model": str(model_path), "members": len(predictor.members), "n_test": int(len(test)),
                    "nuisance": list(PARAMETERS[3:]), "groups": {}, "crlb_ratio": {}}
    for group, members in GROUPS.items():
        pick = np.ones(len(test), bool) if members is None else np.isin(sources, members)
        if not pick.any():
            continue
        cells = {}
        for k, column in enumerate(LABEL_COLUMNS):
            rms_bound = float(np.sqrt(np.mean(marginal[pick, k] ** 2)))
            cell = {"n": int(pick.sum()), "median_bound": float(np.median(marginal[pick, k])), "rms_bound": rms_bound,
                    "median_bound_nuisance_known": float(np.median(known[pick, k]))}
            for name, estimate in estimates.items():
                rms = float(np.sqrt(np.nanmean((estimate[pick, k] - true[pick, k]) ** 2)))
                key = "label_error" if name == "labels" else f"rms_{name}"
                cell[key] = rms
                report["crlb_ratio"].setdefault(name, {}).setdefault(group, {})[column.lower()] = rms / rms_bound
            cells[column.lower()] = cell
        report["groups"][group] = cells
    emit(report, args.out)


if __name__ == "__main__":
    main()
