"""How far a catalog's numbers can be trusted: the calibration of a split's σ before and after,
as tables, the calibration bar and z histograms (``evaluate``, ``predict``).

The fit itself is :mod:`apogeenet.calibrate_model` (``apogeenet calibrate``); the models live in
:mod:`apogeenet.calibration` and :mod:`apogeenet.domain`; the predictions and σ come from
:mod:`apogeenet.uncertainty`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from apogeenet.calibration import PARAMETERS, sigma_floor
from apogeenet.evaluate import robust_sigma
from apogeenet.uncertainty import predict_store

__all__ = ["BAR_MIN_STARS", "BAR_ROBUST_SIGMA", "BAR_WITHIN_1SIGMA", "calibration_bar", "calibration_markdown",
           "calibration_report", "calibration_table", "exact_sigma_pass_rate", "inside_bar", "meets_bar",
           "judging_references", "rescaling_meets_bar", "split_uncertainties", "write_calibration", "z_histogram_plot"]


def split_uncertainties(predictor, data, predict, split: str = "test") -> pd.DataFrame:
    """Table 4 columns (predictions, the method's σ ``*_ERR_MC``, the ensemble's spread
    ``*_ERR_MODEL``, the calibrated total σ ``*_ERR``, labels, SNR, DATA_SET, DATA_TYPE) for the
    stars of one split of ``data`` (a :class:`apogeenet.dataset.LabelledSpectra`), σ by the
    ``predict`` settings."""
    positions = data.select(split=split)
    result = predict_store(predictor, data.store, predict, rows=data.rows[positions])
    calibration = predictor.calibrations.get(str(predict.uncertainty))
    catalog = data.catalog.iloc[positions].reset_index(drop=True)
    calibrated = (calibration.apply(result.prediction, result.total_sigma, catalog["SOURCE"].to_numpy(),
                                    floor=sigma_floor(result.sigma, result.model_sigma, len(predictor.members)))
                  if calibration else result.total_sigma)
    frame = pd.DataFrame({"APOGEE_ID": catalog["APOGEE_ID"],
                          "SNR": data.store.index["snr"].to_numpy(float)[data.rows[positions]],
                          "DATA_SET": catalog["SPLIT"], "DATA_TYPE": catalog["SOURCE"]})
    for k, name in enumerate(PARAMETERS):
        frame[name], frame[f"{name}_LABEL"] = result.prediction[:, k], catalog[name].to_numpy(float)
        frame[f"{name}_ERR"], frame[f"{name}_ERR_MC"] = calibrated[:, k], result.sigma[:, k]
        frame[f"{name}_ERR_MODEL"] = result.model_sigma[:, k]
    return frame


BAR_ROBUST_SIGMA = 0.15           # the calibration bar: the robust σ of z within 1 ± this, ...
BAR_WITHIN_1SIGMA = (0.60, 0.76)  # ... this fraction of stars with |z| < 1, ...
BAR_MIN_STARS = 50                # ... in every label group with at least this many stars


def meets_bar(z: np.ndarray) -> bool:
    """The bar on one cell's z: robust σ within 1 ± 0.15 and 60–76 % of |z| < 1."""
    z = np.asarray(z, float)
    return bool(z.size and inside_bar(robust_sigma(z), np.mean(np.abs(z) < 1)))


def inside_bar(robust, within, tolerance: float = BAR_ROBUST_SIGMA,
               within_1sigma: tuple[float, float] = BAR_WITHIN_1SIGMA):
    """The bar's two halves on a robust σ of z and a fraction with |z| < 1 (numbers or Series)."""
    lo, hi = within_1sigma
    return (abs(robust - 1) <= tolerance) & (within >= lo) & (within <= hi)


@cache  # a pure function of its arguments: evaluate and predict ask it for the same sizes per reference
def exact_sigma_pass_rate(n: int, *, fitted_on: int | None = None, trials: int = 2000, seed: int = 0) -> float:
    """How often a σ exactly right (z drawn from N(0, 1)) meets the bar on a cell of ``n`` stars:
    the bar's tolerance is about one standard error of the robust σ for 60 stars (a fixed seed,
    so the figure is reproducible; ±0.01 from the number of trials). ``fitted_on``: the σ right in
    shape but its level fitted, as the calibration's, by the median |z| of that many other stars."""
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((trials, n))
    if fitted_on:
        draws /= np.median(np.abs(rng.standard_normal((trials, fitted_on))), axis=1, keepdims=True) / norm.ppf(0.75)
    return float(np.mean([meets_bar(z) for z in draws]))


def rescaling_meets_bar(z: np.ndarray) -> bool:
    """Whether σ multiplied by some one factor k would meet the bar on these z. The robust σ of
    z/k (about its median) is the robust σ of z over k, so k must lie in [rσ/1.15, rσ/0.85]; there
    the fraction of |z| < k must reach 60–76 %. False when the median of z — a bias of the
    predictions, not of σ — is too large beside the scatter for any σ to pass both halves."""
    z = np.asarray(z, float)
    if z.size == 0:
        return False
    spread = robust_sigma(z)
    scales = np.linspace(spread / (1 + BAR_ROBUST_SIGMA), spread / (1 - BAR_ROBUST_SIGMA), 2001)
    inside = (np.abs(z)[:, None] < scales).mean(axis=0)
    lo, hi = BAR_WITHIN_1SIGMA
    return bool(((inside >= lo) & (inside <= hi)).any())


def _varies(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 2 and finite.min() < finite.max()


def calibration_table(catalog: pd.DataFrame, reference: pd.DataFrame, sigma_suffix: str = "_ERR") -> pd.DataFrame:
    """How honest the σ (columns ``<PARAM><sigma_suffix>``) are, per parameter, on the rows of
    ``catalog`` (Table 4 columns).

    ``reference``: the values the predictions are judged against (truth or labels), indexed by
    APOGEE_ID with TEFF, LOGG, FE_H. Columns: Spearman ρ of σ against SNR (negative: σ grows as
    SNR falls) and its p-value; for z = (prediction − reference)/σ its standard deviation, robust
    σ (1.4826 MAD), median (the bias in units of σ) and the fractions with |z| < 1 and < 2 (0.683
    and 0.954 if σ were right), whether some rescaling of σ would meet the bar
    (:func:`rescaling_meets_bar`); the RMS error and the median σ.
    """
    from scipy.stats import spearmanr

    rows = []
    for name in PARAMETERS:
        sigma = catalog[f"{name}{sigma_suffix}"].to_numpy(float)
        snr = catalog["SNR"].to_numpy(float)
        rho, p = (spearmanr(sigma, snr, nan_policy="omit") if _varies(sigma) and _varies(snr)
                  else (np.nan, np.nan))  # a constant σ (a = 0 in its region) has no rank correlation
        ref = reference[name].reindex(catalog["APOGEE_ID"]).to_numpy(float)
        error = catalog[name].to_numpy(float) - ref
        ok = np.isfinite(error) & (sigma > 0)
        z = error[ok] / sigma[ok]
        row = {"parameter": name, "n": int(ok.sum()), "spearman_sigma_snr": float(rho), "spearman_p": float(p),
               "z_std": np.nan, "z_robust_sigma": np.nan, "z_median": np.nan, "frac_within_1sigma": np.nan,
               "frac_within_2sigma": np.nan, "rescalable": False, "rms_error": np.nan, "median_sigma": np.nan}
        if z.size:
            row.update(z_std=float(np.std(z)), z_robust_sigma=robust_sigma(z), z_median=float(np.median(z)),
                       frac_within_1sigma=float(np.mean(np.abs(z) < 1)),
                       frac_within_2sigma=float(np.mean(np.abs(z) < 2)), rescalable=rescaling_meets_bar(z),
                       rms_error=float(np.sqrt(np.mean(error[ok] ** 2))), median_sigma=float(np.median(sigma[ok])))
        rows.append(row)
    return pd.DataFrame(rows).set_index("parameter")


def calibration_report(catalog: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Before (the method's σ, ``*_ERR_MC``) and after (``*_ERR``) per label group (all stars,
    then each DATA_TYPE) and parameter: n, robust σ of z, fractions within 1σ and 2σ; after also
    the median of z and whether a rescaling of σ could meet the bar (``rescalable``)."""
    columns = ["n", "z_robust_sigma", "frac_within_1sigma", "frac_within_2sigma"]
    parts = []
    groups = [("all", catalog)] + [(g, catalog[catalog["DATA_TYPE"] == g])
                                   for g in sorted(catalog["DATA_TYPE"].unique()) if g != "none"]
    for group, rows in groups:
        before = calibration_table(rows, reference, "_ERR_MC")[columns]
        after = calibration_table(rows, reference, "_ERR")[[*columns[1:], "z_median", "rescalable"]]
        table = before.rename(columns={c: f"{c}_mc" for c in columns[1:]}).join(after)
        parts.append(table.assign(group=group).reset_index())
    return pd.concat(parts, ignore_index=True).set_index(["group", "parameter"])


def calibration_bar(report: pd.DataFrame, *, min_cell_stars: int = BAR_MIN_STARS, robust_sigma: float = BAR_ROBUST_SIGMA,
                    within_1sigma: tuple[float, float] = BAR_WITHIN_1SIGMA) -> pd.Series:
    """Per label group with at least ``min_cell_stars`` stars and parameter: True when the calibrated
    σ gives a robust σ of z within 1 ± ``robust_sigma`` and a fraction within 1σ inside
    ``within_1sigma`` (the calibration bar; groups, not the pooled ``all`` row)."""
    groups = report[(report.index.get_level_values("group") != "all") & (report["n"] >= min_cell_stars)]
    return inside_bar(groups["z_robust_sigma"], groups["frac_within_1sigma"], robust_sigma,
                      within_1sigma).rename("met")


def judging_references(frame: pd.DataFrame, truth: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """What the test split's σ are judged against: the survey's truth (when there is one) and the
    labels, each indexed by APOGEE_ID with TEFF, LOGG, FE_H."""
    test = frame[frame["DATA_SET"] == "test"]
    references = {}
    if truth is not None and len(test):
        references["truth"] = truth
    if len(test):
        references["labels"] = test.set_index("APOGEE_ID")[["TEFF_LABEL", "LOGG_LABEL", "FE_H_LABEL"]].rename(
            columns=lambda c: c[:-6])
    return references


def calibration_markdown(reports: dict[str, pd.DataFrame]) -> tuple[dict[str, float], str]:
    """Metrics and Markdown of :func:`calibration_report` tables (test split),
    with the calibration bar (robust σ of z 1 ± 0.15, 60–76 % within 1σ in every group of ≥ 50)."""
    metrics, lines = {}, []
    for against, report in reports.items():
        bar = calibration_bar(report)
        lines += [f"\nUncertainty calibration on the test split against the {against}: z = (prediction - "
                  f"{'label' if against == 'labels' else against}) / sigma; *_mc: the method's sigma, "
                  "then the calibrated sigma\n\n", report.round(3).to_markdown(), "\n",
                  f"\nBar (groups of >= {BAR_MIN_STARS} stars: robust sigma of z within 1 +- {BAR_ROBUST_SIGMA} and "
                  f"{100 * BAR_WITHIN_1SIGMA[0]:.0f}-{100 * BAR_WITHIN_1SIGMA[1]:.0f} % within 1 sigma): "
                  f"met in {int(bar.sum())} of {len(bar)} cells"
                  + (f"; not met: {', '.join(f'{g} {p}' for g, p in bar.index[~bar])}" if (~bar).any() else "")
                  + _beyond_rescaling(report, bar) + "\n"]
        metrics[f"calibration_{against}/bar_cells_met"] = int(bar.sum())
        if len(bar):
            expected, sentence = _exact_sigma_expectation(report, bar)
            lines.append(sentence)
            metrics[f"calibration_{against}/bar_cells_expected_of_exact_sigma"] = expected
        metrics[f"calibration_{against}/bar_cells"] = len(bar)
        for (group, parameter), row in report.iterrows():
            for column, value in row.items():
                if column != "n":
                    metrics[f"calibration_{against}/{group}/{parameter.lower()}_{column}"] = float(value)
    return metrics, "".join(lines)


def _exact_sigma_expectation(report: pd.DataFrame, bar: pd.Series) -> tuple[float, str]:
    """How many of the bar's cells a σ exactly right would meet on average, and a line of
    Markdown with the chance per cell size and for all cells together."""
    sizes = [int(n) for n in report.loc[bar.index, "n"]]
    rates = {n: exact_sigma_pass_rate(n) for n in sorted(set(sizes))}
    expected = float(sum(rates[n] for n in sizes))
    return expected, ("\nA sigma exactly right (z from N(0, 1)) would meet a cell of "
                      + ", ".join(f"{n} stars {rate:.0%} of the time" for n, rate in rates.items())
                      + f": {expected:.1f} of {len(sizes)} cells expected, all {len(sizes)} together "
                      f"{np.prod([rates[n] for n in sizes]):.0%} (cells taken as independent)\n")


def _beyond_rescaling(report: pd.DataFrame, bar: pd.Series) -> str:
    """The cells of the bar that no rescaling of σ could meet, with their median z (a sentence)."""
    missed = [(g, p) for g, p in bar.index[~bar] if not report.loc[(g, p), "rescalable"]]
    if not missed:
        return ""
    cells = ", ".join(f"{g} {p} (median z {report.loc[(g, p), 'z_median']:+.2f})" for g, p in missed)
    return (f". No rescaling of sigma could meet it in {cells}: the predictions there are offset from the "
            "reference by a bias comparable to their scatter, which a sigma cannot absorb")


def write_calibration(frame: pd.DataFrame, truth: pd.DataFrame | None, out_dir: Path) -> tuple[dict[str, float], str]:
    """The calibration of σ on the test rows of ``frame`` (Table 4 columns; the method's and the
    calibrated σ) against the labels and (synthetic survey) the truth: calibration_<against>.csv
    and z_histograms.png in ``out_dir``; returns (metrics, Markdown). Nothing without test rows."""
    test = frame[frame["DATA_SET"] == "test"]
    references = judging_references(frame, truth)
    reports = {against: calibration_report(test, reference) for against, reference in references.items()}
    for against, table in reports.items():
        table.to_csv(out_dir / f"calibration_{against}.csv")
    if reports:
        z_histogram_plot(test, references, out_dir / "z_histograms.png")
    return calibration_markdown(reports)


def z_histogram_plot(catalog: pd.DataFrame, references: dict[str, pd.DataFrame], path: Path) -> Path:
    """z = (prediction − reference)/σ per parameter (columns) and reference (rows): the method's σ
    (grey) and the calibrated σ (colour) against N(0, 1)."""
    from apogeenet.plotting import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(len(references), 3, figsize=(13, 3.6 * len(references)), squeeze=False)
    bins = np.linspace(-6, 6, 49)
    grid = np.linspace(-6, 6, 400)
    for row, (against, reference) in zip(axes, references.items()):
        for ax, name in zip(row, PARAMETERS):
            error = catalog[name].to_numpy(float) - reference[name].reindex(catalog["APOGEE_ID"]).to_numpy(float)
            for suffix, colour, label in (("_ERR_MC", "0.6", "method sigma"), ("_ERR", "tab:blue", "calibrated")):
                z = error / catalog[f"{name}{suffix}"].to_numpy(float)
                z = np.clip(z[np.isfinite(z)], bins[0], bins[-1])
                ax.hist(z, bins=bins, density=True, histtype="step" if suffix == "_ERR" else "stepfilled",
                        color=colour, lw=1.5, label=f"{label} (within 1: {np.mean(np.abs(z) < 1):.2f})")
            ax.plot(grid, norm.pdf(grid), "k--", lw=1, label="N(0, 1)")
            ax.set_xlabel(f"z {name} vs {against}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)
