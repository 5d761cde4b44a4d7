"""Payne cut (§2.2), the combined catalog, its splits (§3) and Table 1 (eq. 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apogeenet.labels.catalog import assign_splits, combine_labels, normalisation, stable_unit
from apogeenet.labels.payne import payne_labels


@pytest.mark.parametrize("teff, logg, kept", [
    (4001, 4.5, True), (3999, 4.5, False), (3999, 3.49, True), (3999, 3.51, False), (3500, 1.0, True),
])
def test_payne_cut_on_both_sides(teff, logg, kept):
    table = pd.DataFrame({"apogee_id": ["a"], "teff": [teff], "logg": [logg], "fe_h": [0.0]})
    assert (len(payne_labels(table)) == 1) is kept


def _parts():
    payne = pd.DataFrame({"APOGEE_ID": ["A", "B", "C"], "TEFF": [5000.0, 4800, 4500],
                          "LOGG": [2.5, 2.4, 4.5], "FE_H": [0.0, -0.2, 0.1]})
    mstar = pd.DataFrame({"APOGEE_ID": ["C", "D"], "TEFF": [3900.0, 3300], "LOGG": [4.7, 4.9],
                          "FE_H": [0.05, np.nan], "LABEL_FLAGS": [2, 0]})
    yso = pd.DataFrame({"APOGEE_ID": ["B", "E"], "TEFF": [4100.0, 3500], "LOGG": [3.9, 3.8], "FE_H": [0.0, 0.0]})
    return {"PAYNE": payne, "MSTAR": mstar, "YSO": yso}


def test_yso_over_mstar_over_payne_and_no_missing_labels():
    catalog = combine_labels(_parts())
    sources = dict(zip(catalog["APOGEE_ID"], catalog["SOURCE"]))
    assert sources == {"A": "PAYNE", "B": "YSO", "C": "MSTAR", "E": "YSO"}  # D has no [Fe/H]
    assert catalog.loc[catalog["APOGEE_ID"] == "C", "LABEL_FLAGS"].item() == 2
    assert catalog["APOGEE_ID"].is_unique and not catalog.isna().any().any()


def test_splits_hit_the_paper_fractions_and_never_move_existing_stars():
    ids = [f"2M{i:08d}+0000000" for i in range(3000)]
    first = assign_splits(ids, ["YSO"] * 3000)
    for name, target in zip(("train", "dev", "test"), (0.6, 0.2, 0.2)):
        assert abs((first == name).mean() - target) < 4 * np.sqrt(target * (1 - target) / 3000)
    grown = ids + [f"2M9{i:07d}+0000000" for i in range(77)]
    second = assign_splits(grown, ["YSO"] * len(grown), previous=dict(zip(ids, first)))
    assert list(second[:3000]) == list(first)
    payne = assign_splits(ids, ["PAYNE"] * 3000)
    assert abs((payne == "train").mean() - 0.8) < 4 * np.sqrt(0.16 / 3000)
    assert list(assign_splits(ids[::-1], ["YSO"] * 3000)) == list(first[::-1])  # order-free
    assert 0 <= stable_unit("2M00000000+0000000") < 1


def test_a_stars_split_depends_on_its_own_id_and_source_alone():
    """Three stars changing source once moved 139 others' splits; now none moves."""
    ids = [f"2M{i:08d}+0000000" for i in range(400)]
    sources = ["PAYNE"] * 200 + ["MSTAR"] * 100 + ["YSO"] * 100
    before = assign_splits(ids, sources)
    changed = list(sources)
    changed[0], changed[1], changed[250] = "YSO", "MSTAR", "PAYNE"
    after = assign_splits(ids[:150] + ids[151:], changed[:150] + changed[151:])  # and one star dropped
    kept = [i for i in range(400) if i not in (0, 1, 150, 250)]
    assert list(after[[i - (i > 150) for i in kept]]) == list(before[kept])
    alone = [assign_splits([ids[i]], [sources[i]])[0] for i in range(0, 400, 37)]
    assert alone == list(before[::37])


def test_table1_is_the_training_mean_and_sigma():
    catalog = pd.DataFrame({"APOGEE_ID": list("abcd"), "TEFF": [4000.0, 5000, 9999, 9999],
                            "LOGG": [1.0, 3.0, 0, 0], "FE_H": [-0.5, 0.5, 9, 9],
                            "SOURCE": "PAYNE", "LABEL_FLAGS": 0, "SPLIT": ["train", "train", "dev", "test"]})
    table1 = normalisation(catalog)
    assert (table1.teff_mean, table1.teff_std) == (4500.0, 500.0)
    assert (table1.logg_mean, table1.logg_std, table1.fe_h_mean, table1.fe_h_std) == (2.0, 1.0, 0.0, 0.5)
