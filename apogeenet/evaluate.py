"""Evaluation as in the paper's Tables 2 and 3 and Figures 3–4 (Olney et al. 2020, §3.5–4).

* Table 2: mean squared error of the standardised targets (eq. 4) per group and split.
* Table 3: scatter of prediction − label in physical units per parameter, group and split. The
  paper's "scatter" is reported here two ways: the RMS (``*_scatter``) and a robust σ,
  1.4826 × the median absolute deviation (``*_robust_sigma``), which outliers do not dominate.

Groups: ``full`` (every source), ``payne``, ``mstar`` and ``yso``. Metric names are stable:
``{split}/{group}/mse`` and ``{split}/{group}/{teff|logg|fe_h}_{scatter|robust_sigma}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from apogeenet.labels.catalog import LABEL_COLUMNS, SPLITS, Normalisation
from apogeenet.plotting import SOURCE_COLOURS, pyplot, save

__all__ = ["COMPARISON_FILE", "EVALUATION_FILES", "METRICS_FILE", "PREDICTIONS_FILE", "QUALITY_FILE", "TABLES_FILE", "GROUPS", "PAPER_TABLE3", "PARAMETERS", "adaptation_effect",
           "adaptation_markdown", "comparison_markdown", "comparison_metrics", "comparison_table", "evaluation_tables", "headline_metrics", "kiel_plot", "label_vs_prediction_plot",
           "metrics_from_tables", "predictions_frame", "quality_bar", "quality_markdown", "quality_metrics",
           "robust_sigma", "tables_markdown", "truth_metrics", "write_assessment", "write_evaluation"]

GROUPS = {"full": None, "payne": ("PAYNE",), "mstar": ("MSTAR",), "yso": ("YSO",), "table": ("TABLE",)}
"""The groups of Tables 2/3: all stars and each label source (a table holds the groups whose
source has stars in the catalog judged, :func:`groups_of`)."""
PARAMETERS = {column: column.lower() for column in LABEL_COLUMNS}
#: The paper's Table 3 (train, dev, test scatter of prediction − label; it has no Payne group).
PAPER_TABLE3 = {
    ("full", "teff"): (144.82, 158.72, 183.74), ("full", "logg"): (0.189, 0.203, 0.216),
    ("full", "fe_h"): (0.0769, 0.0792, 0.0914),
    ("mstar", "teff"): (129.69, 167.15, 273.7), ("mstar", "logg"): (0.186, 0.216, 0.346),
    ("mstar", "fe_h"): (0.129, 0.137, 0.18),
    ("yso", "teff"): (413.92, 436.87, 490.99), ("yso", "logg"): (0.366, 0.364, 0.4),
    ("yso", "fe_h"): (0.0616, 0.0669, 0.0879),
}
_UNITS = {"teff": "K", "logg": "dex", "fe_h": "dex"}


def _rms(values: np.ndarray) -> float:
    """Root mean square; NaN for no values."""
    return float(np.sqrt(np.mean(values**2))) if len(values) else float("nan")


def robust_sigma(residuals: np.ndarray) -> float:
    """1.4826 × median |r − median r| (σ for Gaussian residuals)."""
    residuals = np.asarray(residuals, float)
    if residuals.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(residuals - np.median(residuals))))


def evaluation_tables(frame: pd.DataFrame, table1: Normalisation) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 2 and Table 3 from a frame with SOURCE, SPLIT, the labels and ``PRED_<label>``.

    Returns (table2 indexed by group with one column per split; table3 indexed by
    (group, parameter, statistic) with one column per split).
    """
    labels = frame[list(LABEL_COLUMNS)].to_numpy(float)
    preds = frame[[f"PRED_{c}" for c in LABEL_COLUMNS]].to_numpy(float)
    z_err = (preds - labels) / table1.std
    rows2, rows3 = {}, []
    for group in groups_of(frame):
        in_group = _in_group(frame, group)
        rows2[group] = {}
        stats = {}
        for split in SPLITS:
            pick = in_group & (frame["SPLIT"] == split).to_numpy()
            rows2[group][split] = float(np.mean(z_err[pick] ** 2)) if pick.any() else np.nan
            for k, column in enumerate(LABEL_COLUMNS):
                residual = preds[pick, k] - labels[pick, k]
                rms = float(np.sqrt(np.mean(residual**2))) if pick.any() else np.nan
                stats.setdefault((PARAMETERS[column], "scatter"), {})[split] = rms
                stats.setdefault((PARAMETERS[column], "robust_sigma"), {})[split] = robust_sigma(residual)
            rows2[group][f"n_{split}"] = int(pick.sum())
        for (parameter, statistic), values in stats.items():
            rows3.append({"group": group, "parameter": parameter, "statistic": statistic, **values})
    table2 = pd.DataFrame.from_dict(rows2, orient="index")
    table3 = pd.DataFrame(rows3).set_index(["group", "parameter", "statistic"])
    return table2, table3


def metrics_from_tables(table2: pd.DataFrame, table3: pd.DataFrame) -> dict[str, float]:
    """Flat metric names for MLflow and DVC (see the module docstring)."""
    metrics = {}
    for group, row in table2.iterrows():
        for split in SPLITS:
            if np.isfinite(row[split]):
                metrics[f"{split}/{group}/mse"] = float(row[split])
    for (group, parameter, statistic), row in table3.iterrows():
        for split in SPLITS:
            if np.isfinite(row[split]):
                metrics[f"{split}/{group}/{parameter}_{statistic}"] = float(row[split])
    return metrics


def groups_of(frame: pd.DataFrame) -> list[str]:
    """The groups with stars in ``frame``: "full" and each source present."""
    present = set(frame["SOURCE"])
    return [group for group, sources in GROUPS.items() if sources is None or present & set(sources)]


def _in_group(frame: pd.DataFrame, group: str) -> np.ndarray:
    sources = GROUPS[group]
    return np.ones(len(frame), bool) if sources is None else frame["SOURCE"].isin(sources).to_numpy()


def quality_bar(frame: pd.DataFrame, min_gain: dict[str, float], split: str = "test",
                truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """Gain over predicting the training mean: RMS(label − training mean) / RMS(prediction − label)
    per group and parameter on ``split``; ``passed`` where the gain reaches ``min_gain[parameter]``.

    The baseline is the mean label of the whole training split (Table 1's μ), the prediction a
    network that learned nothing would make. With ``truth`` (true parameters indexed by
    APOGEE_ID, known for a synthetic survey) the table adds the labels' own error, RMS(label −
    truth), ``reachable``: whether a model predicting the truth exactly would pass, and the same
    gain measured against the truth (``rms_truth``, ``gain_truth``).
    ``paper_rms`` is the paper's Table 3 scatter for the same group, parameter and split, and
    ``vs_paper`` = rms / paper_rms (below 1: closer to the labels than the paper's model was).
    """
    train = (frame["SPLIT"] == "train").to_numpy()
    rows = []
    for group in groups_of(frame):
        pick = _in_group(frame, group) & (frame["SPLIT"] == split).to_numpy()
        for column, parameter in PARAMETERS.items():
            label = frame.loc[pick, column].to_numpy(float)
            train_mean = frame.loc[train, column].mean()
            baseline = _rms(label - train_mean)
            rms = _rms(frame.loc[pick, f"PRED_{column}"].to_numpy(float) - label)
            gain = baseline / rms if rms > 0 else np.inf if rms == 0 else np.nan
            row = {"group": group, "parameter": parameter, "n": int(pick.sum()), "mean_rms": baseline,
                   "rms": rms, "gain": gain, "required": min_gain[parameter],
                   "passed": bool(gain >= min_gain[parameter])}  # no test star: NaN, not passed
            paper = PAPER_TABLE3.get((group, parameter))
            row["paper_rms"] = paper[list(SPLITS).index(split)] if paper else np.nan
            row["vs_paper"] = rms / row["paper_rms"] if paper else np.nan
            if truth is not None:
                true = truth[column].reindex(frame.loc[pick, "APOGEE_ID"]).to_numpy(float)
                row["label_error"] = float(np.sqrt(np.nanmean((label - true) ** 2)))
                row["reachable"] = bool(row["label_error"] * min_gain[parameter] <= baseline)
                pred_error = frame.loc[pick, f"PRED_{column}"].to_numpy(float) - true
                row["rms_truth"] = float(np.sqrt(np.nanmean(pred_error**2)))
                row["gain_truth"] = float(np.sqrt(np.nanmean((true - train_mean) ** 2)) / row["rms_truth"])
            rows.append(row)
    return pd.DataFrame(rows).set_index(["group", "parameter"])


def adaptation_effect(before: pd.DataFrame, after: pd.DataFrame, table1: Normalisation,
                      max_payne_increase: float) -> pd.DataFrame:
    """§3.4 check: dev MSE of MStar and YSO before and after adaptation (must fall) and the Payne
    group's test scatter (RMS) per parameter (may rise by at most ``max_payne_increase``)."""
    t2_before, t3_before = evaluation_tables(before, table1)
    t2_after, t3_after = evaluation_tables(after, table1)
    rows = [{"check": f"dev/{group}/mse", "before": t2_before.loc[group, "dev"],
             "after": t2_after.loc[group, "dev"], "limit": t2_before.loc[group, "dev"]}
            for group in ("mstar", "yso")]
    for parameter in PARAMETERS.values():
        key = ("payne", parameter, "scatter")
        rows.append({"check": f"test/payne/{parameter}_scatter", "before": t3_before.loc[key, "test"],
                     "after": t3_after.loc[key, "test"],
                     "limit": (1 + max_payne_increase) * t3_before.loc[key, "test"]})
    table = pd.DataFrame(rows).set_index("check")
    table["change"] = table["after"] / table["before"] - 1
    table["passed"] = [bool(a < lim) if c.startswith("dev/") else bool(a <= lim)
                       for c, a, lim in zip(table.index, table["after"], table["limit"])]
    return table


def tables_markdown(table2: pd.DataFrame, table3: pd.DataFrame) -> str:
    """Both tables laid out like the paper's (groups as rows, splits as columns)."""
    lines = ["Table 2. MSE of the standardised targets", "",
             "| group | train | dev | test | n train | n dev | n test |", "|---|---|---|---|---|---|---|"]
    for group, row in table2.iterrows():
        lines.append(f"| {group} | " + " | ".join(f"{row[s]:.4f}" for s in SPLITS) + " | "
                     + " | ".join(str(int(row[f'n_{s}'])) for s in SPLITS) + " |")
    lines += ["", "Table 3. Scatter of prediction − label (RMS; robust σ = 1.4826 MAD)", "",
              "| group | parameter | train | dev | test | robust σ train | robust σ dev | robust σ test |",
              "|---|---|---|---|---|---|---|---|"]
    for group in table2.index:
        for parameter in PARAMETERS.values():
            rms, rob = table3.loc[(group, parameter, "scatter")], table3.loc[(group, parameter, "robust_sigma")]
            fmt = "{:.0f}" if parameter == "teff" else "{:.3f}"
            cells = [fmt.format(rms[s]) if np.isfinite(rms[s]) else "–" for s in SPLITS]
            cells += [fmt.format(rob[s]) if np.isfinite(rob[s]) else "–" for s in SPLITS]
            lines.append(f"| {group} | {parameter} ({_UNITS[parameter]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def label_vs_prediction_plot(frame: pd.DataFrame, path: str | Path, split: str = "test") -> Path:
    """Fig. 4 (left): label against prediction per parameter, one row per group."""
    plt = pyplot()
    data = frame[frame["SPLIT"] == split]
    groups = [g for g in groups_of(data) if g != "full"]
    fig, axes = plt.subplots(max(len(groups), 1), 3, figsize=(12, 3.6 * max(len(groups), 1)), squeeze=False)
    if not groups:
        axes[0, 1].text(0.5, 0.5, f"no stars in the {split} split", transform=axes[0, 1].transAxes, ha="center")
    for i, group in enumerate(groups):
        part = data[_in_group(data, group)]
        for j, column in enumerate(LABEL_COLUMNS):
            ax = axes[i, j]
            ax.scatter(part[column], part[f"PRED_{column}"], s=6, alpha=0.6)
            lo = np.nanmin([part[column].min(), part[f"PRED_{column}"].min()])
            hi = np.nanmax([part[column].max(), part[f"PRED_{column}"].max()])
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xlabel(f"label {column}")
            ax.set_ylabel(f"predicted {column}")
            ax.set_title(f"{group} ({split}, n={len(part)})")
    return save(fig, path)


def kiel_plot(frame: pd.DataFrame, path: str | Path) -> Path:
    """Fig. 3: Kiel diagrams (Teff, log g) of the labels and of the predictions, by source."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharex=True, sharey=True)
    for ax, prefix, title in ((axes[0], "", "labels"), (axes[1], "PRED_", "APOGEE Net predictions")):
        for source, colour in SOURCE_COLOURS.items():
            part = frame[frame["SOURCE"] == source]
            if part.empty:  # no legend entry for a source without stars
                continue
            ax.scatter(part[f"{prefix}TEFF"], part[f"{prefix}LOGG"], s=4, alpha=0.6, c=colour, label=source)
        ax.set_title(title)
        ax.set_xlabel("Teff (K)")
    axes[0].invert_xaxis()  # shared axes: invert once
    axes[0].invert_yaxis()
    axes[0].set_ylabel("log g (dex)")
    axes[0].legend(markerscale=3)
    return save(fig, path)


TABLES_FILE, PREDICTIONS_FILE, METRICS_FILE = "tables.md", "predictions.parquet", "metrics.json"
QUALITY_FILE, COMPARISON_FILE = "quality.md", "comparison.md"
"""The reports a person reads (``apogeenet report``): Tables 2/3, the quality bar, the models side by side."""
#: Files :func:`write_evaluation` writes into a model's directory (dvc.yaml lists the same).
EVALUATION_FILES = (TABLES_FILE, "table2.csv", "table3.csv", PREDICTIONS_FILE, "label_vs_prediction.png",
                    "kiel.png", METRICS_FILE)


def predictions_frame(data, predictor, block: int = 256) -> pd.DataFrame:
    """The label catalog (stars with a spectrum, :class:`apogeenet.dataset.LabelledSpectra`) with
    PRED_TEFF, PRED_LOGG, PRED_FE_H from ``predictor`` (a :class:`apogeenet.serving.Predictor`)."""
    preds = [predictor.predict(data.prepared(np.arange(start, min(start + block, len(data)))))
             for start in range(0, len(data), block)]
    pred = pd.concat(preds, ignore_index=True).add_prefix("PRED_")
    return pd.concat([data.catalog.reset_index(drop=True), pred], axis=1)


def write_evaluation(frame: pd.DataFrame, table1: Normalisation, out_dir: Path,
                     extra_metrics: dict | None = None) -> tuple[dict, str]:
    """Tables 2 and 3 (Markdown and CSV), predictions.parquet, the Fig. 3/4 plots and
    metrics.json (Table metrics and ``extra_metrics``) from a predictions frame; returns the
    metrics and the tables as Markdown."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table2, table3 = evaluation_tables(frame, table1)
    table2.to_csv(out_dir / "table2.csv")
    table3.to_csv(out_dir / "table3.csv")
    markdown = tables_markdown(table2, table3)
    (out_dir / TABLES_FILE).write_text(markdown)
    frame.to_parquet(out_dir / PREDICTIONS_FILE, index=False)
    label_vs_prediction_plot(frame, out_dir / "label_vs_prediction.png")
    kiel_plot(frame, out_dir / "kiel.png")
    metrics = {**(extra_metrics or {}), **metrics_from_tables(table2, table3)}
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics, markdown


def quality_metrics(quality: pd.DataFrame) -> dict[str, float]:
    """The quality bar's numbers under ``quality/…`` (gains, passed as 0/1, Table 3 ratios)."""
    metrics = {f"quality/{g}/{p}_gain": float(v) for (g, p), v in quality["gain"].items() if np.isfinite(v)}
    metrics["quality/passed"] = int(quality["passed"].all())
    if "reachable" in quality:  # the criteria a perfect model could meet, given the labels' errors
        metrics["quality/passed_reachable"] = int(quality.loc[quality["reachable"], "passed"].all())
        metrics["quality/n_passed_truth"] = int((quality["gain_truth"] >= quality["required"]).sum())
    compared = quality["vs_paper"].dropna()
    return metrics | {f"quality/{g}/{p}_vs_paper": float(v) for (g, p), v in compared.items()}


def quality_markdown(quality: pd.DataFrame, model: str) -> str:
    """The quality bar as a person reads it (quality.md)."""
    truth = "reachable" in quality
    sections = [f"Quality bar of {model} (test split): gain = RMS of predicting the training mean / RMS "
                "of prediction − label"
                + ("; label_error = RMS of label − truth (synthetic survey), reachable = a model that "
                   "predicts the truth would pass" if truth else "")
                + "\n\n", quality.reset_index().round(3).to_markdown(index=False)]
    if truth:
        against_truth = quality["gain_truth"] >= quality["required"]
        sections.append(f"\n\nPassed {int(quality['passed'].sum())} of {len(quality)} criteria; of the "
                        f"{int(quality['reachable'].sum())} reachable ones "
                        f"{int(quality.loc[quality['reachable'], 'passed'].sum())} passed. Against the truth "
                        f"(gain_truth) {int(against_truth.sum())} of {len(quality)} pass.")
    unjudged = sorted({group for (group, _), n in quality["n"].items() if n == 0})
    if unjudged:
        sections.append(f"\n\nNo test stars in group(s) {', '.join(unjudged)}: their criteria cannot pass "
                        "(too few labelled stars to judge them).")
    compared = quality["vs_paper"].dropna()
    sections.append(f"\n\nTest scatter (RMS of prediction − label) at or below the paper's Table 3 in "
                    f"{int((compared <= 1).sum())} of {len(compared)} cells (paper_rms, vs_paper).")
    return "".join(sections)


def adaptation_markdown(effect: pd.DataFrame, model: str, baseline: str, max_payne_increase: float) -> str:
    """The §3.4 check as a person reads it (appended to quality.md)."""
    return (f"\n\nAdaptation check (§3.4) of {model} against {baseline}: MStar and YSO dev MSE must "
            f"fall; Payne test scatter may rise by at most {max_payne_increase:.0%}\n\n"
            + effect.round(4).to_markdown())


def truth_metrics(frame: pd.DataFrame, truth: pd.DataFrame, split: str = "test") -> dict[str, float]:
    """RMS of prediction − truth per group and parameter on ``split``
    (``{split}/{group}/{parameter}_scatter_truth``): what a synthetic survey can say and real
    data cannot."""
    metrics = {}
    for group in groups_of(frame):
        pick = _in_group(frame, group) & (frame["SPLIT"] == split).to_numpy()
        for column, parameter in PARAMETERS.items():
            true = truth[column].reindex(frame.loc[pick, "APOGEE_ID"]).to_numpy(float)
            error = frame.loc[pick, f"PRED_{column}"].to_numpy(float) - true
            if np.isfinite(error).any():
                metrics[f"{split}/{group}/{parameter}_scatter_truth"] = float(np.sqrt(np.nanmean(error**2)))
    return metrics


HEADLINE = "accuracy"
"""The prefix of the metrics a comparison of models reads first (MLflow lists metrics by name)."""


def headline_metrics(metrics: dict[str, float], split: str = "test") -> dict[str, float]:
    """The 24 numbers models are compared by, under one prefix that sorts first: the ``split``
    RMS against the labels and against the truth per group and parameter
    (``accuracy/vs_truth/payne/teff``), copied from ``metrics``."""
    out = {}
    for group in GROUPS:
        for parameter in PARAMETERS.values():
            for reference, suffix in (("vs_labels", "_scatter"), ("vs_truth", "_scatter_truth")):
                value = metrics.get(f"{split}/{group}/{parameter}{suffix}")
                if value is not None:
                    out[f"{HEADLINE}/{reference}/{group}/{parameter}"] = value
    return out


def _reference(table: pd.DataFrame) -> str:
    """What a comparison table judges against: the truth when it has it, else the labels."""
    return "truth" if any(column.endswith(" vs truth") for column in table.columns) else "labels"


def comparison_table(frames: dict[str, pd.DataFrame], truth: pd.DataFrame | None, split: str = "test") -> pd.DataFrame:
    """Test RMS of each model (APOGEE Net and the baselines, by name) per group and parameter,
    against the labels and, with ``truth``, against the truth; ``best`` names the model closest
    to the truth (to the labels without it)."""
    columns = {}
    for name, frame in frames.items():
        _, table3 = evaluation_tables(frame, Normalisation(0, 1, 0, 1, 0, 1))
        scatter = table3.xs("scatter", level="statistic")[split]
        columns[f"{name} vs labels"] = scatter
        if truth is not None:
            true = truth_metrics(frame, truth, split)
            columns[f"{name} vs truth"] = pd.Series({(g, p): true.get(f"{split}/{g}/{p}_scatter_truth", np.nan)
                                                     for g, p in scatter.index})
    table = pd.DataFrame(columns)
    against = _reference(table)
    judged = table[[f"{name} vs {against}" for name in frames]]
    measured = judged.notna().any(axis=1)  # a group without test stars has no best model
    table["best"] = ""
    table.loc[measured, "best"] = judged[measured].idxmin(axis=1).str.removesuffix(f" vs {against}")
    return table


def comparison_metrics(table: pd.DataFrame, ours: str = "apogeenet") -> dict[str, float]:
    """How model ``ours`` fares against every other model of a :func:`comparison_table`, against
    the truth when the table has it (else the labels): ``comparison/wins`` of ``comparison/pairs``
    (cell × baseline; the demo's 24), and per cell ``comparison/<group>/<parameter>_ratio``, its
    RMS over the best other model's (below 1: ahead). Empty without another model."""
    against = _reference(table)
    judged = table[[c for c in table.columns if c.endswith(f" vs {against}")]]
    rms, others = judged[f"{ours} vs {against}"], judged.drop(columns=f"{ours} vs {against}")
    measured = rms.notna() & others.notna().all(axis=1)
    if others.empty or not measured.any():
        return {}
    rms, others = rms[measured], others[measured]
    metrics = {f"comparison/{group}/{parameter}_ratio": float(rms[(group, parameter)] / others.loc[(group, parameter)].min())
               for group, parameter in rms.index}
    return metrics | {"comparison/wins": int(others.gt(rms, axis=0).to_numpy().sum()), "comparison/pairs": int(others.size)}


def comparison_markdown(table: pd.DataFrame, split: str = "test", ours: str = "apogeenet",
                        found: dict[str, float] | None = None) -> str:
    """The model × group × parameter table as a person reads it, under how many comparisons
    model ``ours`` wins and its closest cell (``found``: its :func:`comparison_metrics`, when
    already computed)."""
    shown = table.copy()
    for column in shown.columns.drop("best"):
        shown[column] = [f"{v:.0f}" if p == "teff" else f"{v:.3f}" for (_, p), v in shown[column].items()]
    text = f"Models side by side ({split} split, RMS; Teff in K, log g and [Fe/H] in dex)\n\n"
    found = comparison_metrics(table, ours) if found is None else found
    if found:
        ratios = {key: value for key, value in found.items() if key.endswith("_ratio")}
        closest = max(ratios, key=ratios.get)
        text += (f"{ours} is ahead in {found['comparison/wins']} of {found['comparison/pairs']} comparisons "
                 f"against the {_reference(table)} (cell × other model); its closest cell: "
                 f"{closest.removeprefix('comparison/').removesuffix('_ratio')} at {ratios[closest]:.2f} "
                 "of the best other model's RMS\n\n")
    return text + shown.reset_index(names=["group", "parameter"]).to_markdown(index=False) + "\n"


def write_assessment(frame: pd.DataFrame, table1: Normalisation, out_dir: Path, *, cfg, model: str,
                     truth: pd.DataFrame | None = None, before: tuple[str, pd.DataFrame] | None = None,
                     others: dict[str, pd.DataFrame] | None = None,
                     extra_metrics: dict[str, float] | None = None) -> tuple[dict, str, bool]:
    """Everything `apogeenet evaluate` judges a model's predictions ``frame`` by: the quality bar
    (``cfg``: the ``evaluate`` section), the §3.4 check against ``before`` (name, predictions of
    the model before adaptation), the models side by side with ``others`` (the baselines'
    predictions), and Tables 2/3 with plots (:func:`write_evaluation`). Writes quality.md/.csv,
    adaptation.csv, comparison.md/.csv and metrics.json (with ``extra_metrics``); returns
    (metrics, report, passed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    quality = quality_bar(frame, cfg.min_gain, truth=truth)
    quality.to_csv(out_dir / "quality.csv")
    metrics, report = {**(extra_metrics or {}), **quality_metrics(quality)}, quality_markdown(quality, model)
    metrics |= truth_metrics(frame, truth) if truth is not None else {}
    if before is not None:
        effect = adaptation_effect(before[1], frame, table1, cfg.max_payne_scatter_increase)
        effect.to_csv(out_dir / "adaptation.csv")
        metrics |= {f"adaptation/{check}_change": float(v) for check, v in effect["change"].items()}
        metrics["adaptation/passed"] = int(effect["passed"].all())
        report += adaptation_markdown(effect, model, before[0], cfg.max_payne_scatter_increase)
    (out_dir / QUALITY_FILE).write_text(report + "\n")
    comparison = comparison_table({"apogeenet": frame, **(others or {})}, truth)
    comparison.to_csv(out_dir / "comparison.csv")
    found = comparison_metrics(comparison)
    side_by_side = comparison_markdown(comparison, found=found)
    (out_dir / COMPARISON_FILE).write_text(side_by_side)
    metrics |= found
    metrics, _ = write_evaluation(frame, table1, out_dir, extra_metrics=metrics)
    failed = [k for k in ("quality/passed", "adaptation/passed") if metrics.get(k) == 0]
    report += "\n" + (f"checks failed: {', '.join(failed)}" if failed else "all checks passed")
    return metrics, report + "\n\n" + side_by_side, not failed
