"""The evaluation's table functions on frames built by hand: the quality bar (gain over the
training mean), the §3.4 adaptation check and Tables 2/3 — exact numbers, no trained model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apogeenet.evaluate import adaptation_effect, evaluation_tables, quality_bar
from factories import TABLE1

GAINS = {"teff": 5.0, "logg": 4.0, "fe_h": 3.0}


def _frame(offset: dict[str, float], *, n: int = 4) -> pd.DataFrame:
    """Stars of each source in each split: labels at ±spread around a centre, predictions the
    labels plus ``offset[source]`` standardised units (Table 1's σ) on every parameter."""
    rows = []
    for source, centre in (("PAYNE", (5000.0, 3.0, 0.0)), ("MSTAR", (3500.0, 4.8, -0.2)), ("YSO", (4000.0, 4.0, 0.0))):
        for split in ("train", "dev", "test"):
            for k in range(n):
                sign = 1 if k % 2 else -1
                label = {"TEFF": centre[0] + sign * 300, "LOGG": centre[1] + sign * 0.3, "FE_H": centre[2] + sign * 0.1}
                rows.append({"APOGEE_ID": f"{source}{split}{k}", "SOURCE": source, "SPLIT": split, **label,
                             "PRED_TEFF": label["TEFF"] + offset[source] * TABLE1.teff_std,
                             "PRED_LOGG": label["LOGG"] + offset[source] * TABLE1.logg_std,
                             "PRED_FE_H": label["FE_H"] + offset[source] * TABLE1.fe_h_std})
    return pd.DataFrame(rows)


def test_the_quality_bar_is_the_rms_of_the_training_mean_over_the_models():
    frame = _frame({"PAYNE": 0.01, "MSTAR": 0.01, "YSO": 0.5})
    bar = quality_bar(frame, GAINS)
    train_mean = frame.loc[frame["SPLIT"] == "train", "TEFF"].mean()
    yso = frame[(frame["SOURCE"] == "YSO") & (frame["SPLIT"] == "test")]
    expected = np.sqrt(np.mean((yso["TEFF"] - train_mean) ** 2)) / (0.5 * TABLE1.teff_std)
    assert bar.loc[("yso", "teff"), "gain"] == pytest.approx(expected)
    assert bar.loc[("yso", "teff"), "n"] == 4 and bar.loc[("full", "teff"), "n"] == 12
    assert not bar.loc[("yso", "teff"), "passed"] and bar.loc[("payne", "teff"), "passed"]
    assert bar.loc[("yso", "teff"), "paper_rms"] == 490.99  # the paper's Table 3, test column
    assert np.isnan(bar.loc[("payne", "teff"), "paper_rms"])  # it has no Payne group


def test_the_quality_bar_against_the_truth_says_what_is_reachable():
    frame = _frame({"PAYNE": 0.0, "MSTAR": 0.0, "YSO": 0.0})
    frame[["PRED_TEFF", "PRED_LOGG", "PRED_FE_H"]] += 1e-3  # a near-perfect model of the labels
    truth = frame.set_index("APOGEE_ID")[["TEFF", "LOGG", "FE_H"]].copy()
    truth["TEFF"] += 250.0  # labels 250 K off the truth everywhere
    bar = quality_bar(frame, GAINS, truth=truth)
    assert bar.loc[("payne", "teff"), "label_error"] == pytest.approx(250.0)
    assert not bar["reachable"].xs("teff", level="parameter").all()  # 250 K × 5 exceeds some groups' spread
    assert bar.loc[("payne", "logg"), "reachable"]  # log g labels are the truth


def test_the_adaptation_check_wants_lower_focus_loss_and_bounded_payne_scatter():
    before = _frame({"PAYNE": 0.10, "MSTAR": 0.40, "YSO": 0.40})
    better = _frame({"PAYNE": 0.105, "MSTAR": 0.20, "YSO": 0.20})
    effect = adaptation_effect(before, better, TABLE1, max_payne_increase=0.10)
    assert effect.loc["dev/mstar/mse", "after"] == pytest.approx(0.2 ** 2)  # every parameter off by 0.2 σ
    assert effect.loc["dev/mstar/mse", "change"] == pytest.approx(0.25 - 1)
    assert effect["passed"].all()
    worse_payne = _frame({"PAYNE": 0.12, "MSTAR": 0.20, "YSO": 0.20})  # +20 % Payne scatter
    effect = adaptation_effect(before, worse_payne, TABLE1, max_payne_increase=0.10)
    assert not effect.loc["test/payne/teff_scatter", "passed"] and effect.loc["dev/yso/mse", "passed"]


def test_table_2_is_the_mse_of_standardised_targets_per_group_and_split():
    frame = _frame({"PAYNE": 0.1, "MSTAR": 0.2, "YSO": 0.3})
    table2, table3 = evaluation_tables(frame, TABLE1)
    assert table2.loc["mstar", "test"] == pytest.approx(0.2 ** 2)
    assert table2.loc["full", "dev"] == pytest.approx(np.mean([0.1 ** 2, 0.2 ** 2, 0.3 ** 2]))
    assert table3.loc[("yso", "teff", "scatter"), "train"] == pytest.approx(0.3 * TABLE1.teff_std)


def test_a_group_without_test_stars_is_not_judged_and_breaks_nothing(tmp_path):
    """A small real sample: the YSO group has no test star (and no truth table exists)."""
    from apogeenet.evaluate import comparison_table, quality_markdown

    frame = _frame({"PAYNE": 0.01, "MSTAR": 0.01, "YSO": 0.01})
    frame = frame[~((frame["SOURCE"] == "YSO") & (frame["SPLIT"] == "test"))]
    bar = quality_bar(frame, GAINS)
    assert bar.loc[("yso", "teff"), "n"] == 0 and np.isnan(bar.loc[("yso", "teff"), "gain"])
    assert not bar.loc[("yso", "teff"), "passed"] and bar.loc[("payne", "teff"), "passed"]
    assert "No test stars in group(s) yso" in quality_markdown(bar, "m")
    comparison = comparison_table({"apogeenet": frame, "ridge": frame}, None)
    assert comparison.loc[("yso", "teff"), "best"] == "" and comparison.loc[("payne", "teff"), "best"] == "apogeenet"
    # only the sources present are groups: no "table" group without TABLE stars
    assert {g for g, _ in bar.index} == {"full", "payne", "mstar", "yso"}


def test_the_comparison_counts_each_cell_against_each_baseline_and_names_the_closest():
    """12 cells × 2 baselines: APOGEE Net 0.1 σ off in Payne and YSO, 0.3 σ in MSTAR; ridge 0.2 σ
    everywhere, The Cannon 0.4 σ: it loses the 3 MSTAR cells to ridge only (21 of 24)."""
    from apogeenet.evaluate import comparison_markdown, comparison_metrics, comparison_table

    frames = {"apogeenet": _frame({"PAYNE": 0.1, "MSTAR": 0.3, "YSO": 0.1}),
              "ridge": _frame({"PAYNE": 0.2, "MSTAR": 0.2, "YSO": 0.2}),
              "cannon": _frame({"PAYNE": 0.4, "MSTAR": 0.4, "YSO": 0.4})}
    found = comparison_metrics(comparison_table(frames, None))
    assert (found["comparison/wins"], found["comparison/pairs"]) == (21, 24)
    assert found["comparison/mstar/logg_ratio"] == pytest.approx(1.5)
    assert found["comparison/payne/teff_ratio"] == pytest.approx(0.5)
    assert found["comparison/full/fe_h_ratio"] == pytest.approx(np.sqrt((0.01 + 0.09 + 0.01) / 3) / 0.2)
    assert "ahead in 21 of 24 comparisons against the labels" in comparison_markdown(comparison_table(frames, None))
    assert "closest cell: mstar/teff at 1.50" in comparison_markdown(comparison_table(frames, None))
    assert comparison_metrics(comparison_table({"apogeenet": frames["apogeenet"]}, None)) == {}
