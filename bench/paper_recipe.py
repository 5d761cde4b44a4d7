"""The paper's training recipe run once to convergence (§3.3), beside the profile the project
trains by default, as JSON.

    python bench/paper_recipe.py [--out bench/results/paper_recipe.json] [--work DIR] [--threads N]

Profile ``paper`` of params.yaml: SGD at a learning rate of 1e-3 without momentum, batch 128,
early stopping after 5 epochs without a better dev loss (at most 1 000 epochs), raw flux over one
constant unit (the training spectra's median good pixel). It trains on the project's labels and
store (run ``dvc repro train`` first), without MLflow, into ``--work`` (a temporary directory by
default), and reports: the epochs run and the best one, the dev-loss curve, the wall time, and
Tables 2/3 (test split) of the paper recipe and of the project's trained model
(``paths.model``) — against the labels and, on a synthetic survey, against the truth. The
recipe as printed diverges in its first epoch here (He initialisation, README "Training"), so
the bench also runs it with the one change that keeps it finite, gradient clipping at norm 1.
CPU hours are fine; on a GPU it runs there.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from benchio import emit

from apogeenet.config import load_params


def tables(predictions: Path, cfg) -> dict:
    """Test-split RMS per group and parameter against the labels, and against the truth when
    the survey has one."""
    from apogeenet.evaluate import robust_sigma
    from apogeenet.io.tables import read_truth

    frame = pd.read_parquet(predictions)
    test = frame[frame["SPLIT"] == "test"]
    truth = read_truth(cfg.paths.truth)
    out: dict = {}
    for group in ("PAYNE", "MSTAR", "YSO"):
        part = test[test["SOURCE"] == group]
        for name in ("TEFF", "LOGG", "FE_H"):
            vs_labels = part[f"PRED_{name}"] - part[name]
            out[f"{group}/{name}/rms_vs_labels"] = float((vs_labels ** 2).mean() ** 0.5)
            out[f"{group}/{name}/robust_sigma_vs_labels"] = robust_sigma(vs_labels.to_numpy())
            if truth is not None:
                vs_truth = part[f"PRED_{name}"].to_numpy() - truth[name].reindex(part["APOGEE_ID"]).to_numpy()
                out[f"{group}/{name}/rms_vs_truth"] = float((vs_truth ** 2).mean() ** 0.5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/paper_recipe.json"))
    parser.add_argument("--work", type=Path, default=None, help="where the paper model is written")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from apogeenet.pipeline import train
    from apogeenet.dataset import best_device
    from apogeenet.train import TrainingDiverged

    base = load_params()
    work = args.work or Path(tempfile.mkdtemp(prefix="paper-recipe-"))
    runs = {}
    for name, overrides in (("paper", {}), ("paper_grad_clip_1", {"grad_clip": 1.0})):
        profile = {**base.train.profiles["paper"].model_dump(mode="json"), **overrides}
        out_dir = work / name
        cfg = base.with_overrides({"train.profile": "paper",
                                   "train.profiles": {**base.model_dump(mode="json")["train"]["profiles"],
                                                      "paper": profile},
                                   "paths.model": str(out_dir), "tracking.enabled": False})
        start = time.perf_counter()
        try:
            result = train.run(cfg, progress=True)
        except TrainingDiverged as exc:
            runs[name] = {"profile": profile, "diverged": str(exc), "seconds": time.perf_counter() - start}
            continue
        history = torch.load(out_dir / "checkpoints" / "last.pt", weights_only=True)["state"]["history"]
        runs[name] = {"profile": profile, "seconds": time.perf_counter() - start, "epochs_run": len(history),
                      "best_epoch": result.metrics["best_epoch"], "best_dev_loss": result.metrics["best_dev_loss"],
                      "dev_loss_curve": [round(h["dev_loss"], 5) for h in history],
                      "train_loss_curve": [round(h["train_loss"], 5) for h in history],
                      "test": tables(out_dir / "predictions.parquet", cfg)}
    default = base.paths.model / "predictions.parquet"
    emit({"device": str(best_device()), "torch_threads": torch.get_num_threads(), "runs": runs,
          f"default_profile_{base.train.profile}": {"test": tables(default, base)} if default.exists() else None,
          "work": str(work)}, args.out)


if __name__ == "__main__":
    main()
