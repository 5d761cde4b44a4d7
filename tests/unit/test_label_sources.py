"""One's own labels beside the paper's three sources, and the inputs as users have them: the
allStar of DR16/DR17, an ID list, every missing column named at once (apogeenet.labels.inputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from apogeenet.config import ConfigError, Params
from apogeenet.errors import InputError
from apogeenet.isochrones import shipped_parsec
from apogeenet.labels.build import build_labels
from apogeenet.labels.inputs import LabelInputs, normalise_allstar, read_inputs, read_members, table_labels
from apogeenet.labels.mdwarfs import veyette_logg

TABLE_ONLY = {"labels.sources": ["table"], "paths.label_table": "mine.csv"}


def _table_cfg(**more) -> Params:
    return Params().with_overrides({**TABLE_ONLY, **more})


def test_a_table_source_keeps_rows_in_range_and_gives_every_other_row_its_reason():
    cfg = _table_cfg(**{"labels.table.teff": "t_eff", "labels.table.logg": None, "labels.table.fe_h": "feh",
                        "labels.table.id": "ID"})
    table = pd.DataFrame({"ID": ["A", "B", "C", "D", "E"], "t_eff": [3200.0, 1500.0, np.nan, 3500.0, 3300.0],
                          "feh": [0.0, 0.1, 0.0, -0.2, 0.1]})
    label_set = build_labels(LabelInputs(table=table), shipped_parsec(), labels=cfg.labels, yso=cfg.yso,
                             store_ids={"A", "B", "C", "D"})
    catalog = label_set.catalog.set_index("APOGEE_ID")
    assert sorted(catalog.index) == ["A", "D"] and set(catalog["SOURCE"]) == {"TABLE"}
    # log g from eq. 3 (Veyette et al. 2017), as asked by labels.table.logg: null
    assert catalog.loc["A", "LOGG"] == pytest.approx(veyette_logg(np.array([3200.0]), np.array([0.0]))[0], abs=1e-6)
    reasons = dict(zip(label_set.rejects["APOGEE_ID"], label_set.rejects["REASON"]))
    assert reasons == {"B": "TABLE: TEFF 1500 outside labels.ranges.table [2000, 12000]", "C": "TABLE: no TEFF",
                       "E": "TABLE: no spectrum in the store"}
    assert label_set.yso_model is None and label_set.mstar.empty


def test_the_table_outranks_the_paper_sources_for_a_star_in_both():
    cfg = Params().with_overrides({"labels.sources": ["payne", "table"], "paths.label_table": "mine.csv"})
    payne = pd.DataFrame({"APOGEE_ID": ["A", "B"], "TEFF": [5000.0, 5100.0], "LOGG": [2.5, 2.4], "FE_H": [0.0, 0.1]})
    mine = pd.DataFrame({"APOGEE_ID": ["A"], "TEFF": [4900.0], "LOGG": [2.6], "FE_H": [-0.1]})
    label_set = build_labels(LabelInputs(payne=payne, table=mine), shipped_parsec(), labels=cfg.labels, yso=cfg.yso)
    catalog = label_set.catalog.set_index("APOGEE_ID")
    assert catalog.loc["A", "SOURCE"] == "TABLE" and catalog.loc["A", "TEFF"] == pytest.approx(4900.0)
    assert catalog.loc["B", "SOURCE"] == "PAYNE"


def test_a_source_without_its_input_is_a_config_error():
    with pytest.raises(ConfigError, match=r"paths.label_table \(for labels.sources table\)"):
        Params().with_overrides({"labels.sources": ["table"]})
    with pytest.raises(ConfigError, match=r"paths.members \(for labels.sources yso\)"):
        Params().with_overrides({"paths.members": None})


def test_every_missing_column_of_every_input_is_named_at_once_before_training(tmp_path):
    allstar, members, mine = tmp_path / "allStar.fits", tmp_path / "members.csv", tmp_path / "mine.csv"
    Table({"APOGEE_ID": ["A"], "J": [10.0], "H": [9.5], "K": [9.3], "FIELD": ["X"]}).write(allstar)
    pd.DataFrame({"APOGEE_ID": ["A"]}).to_csv(members, index=False)
    pd.DataFrame({"APOGEE_ID": ["A"], "TEFF": [3000.0]}).to_csv(mine, index=False)
    cfg = Params().with_overrides({"labels.sources": ["mstar", "yso", "table"], "paths.allstar": str(allstar),
                                   "paths.members": str(members), "paths.label_table": str(mine)})
    with pytest.raises(InputError) as caught:
        read_inputs(cfg)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{allstar} lacks g (or PS1_G" in message and "GAIA_PARALLAX" in message  # the M-dwarf source
    assert "W1" in message and "GAIA_RADIUS" in message and "W1_ERR" in message      # the YSO source
    assert f"{members} lacks REGION" in message and f"{mine} lacks LOGG, FE_H" in message


def test_the_allstar_of_dr16_and_dr17_is_read_as_it_is():
    dr17 = pd.DataFrame({"apogee_id": ["A"], "GAIAEDR3_PARALLAX": [2.0], "GAIAEDR3_PARALLAX_ERROR": [0.1],
                         "GAIAEDR3_PHOT_G_MEAN_MAG": [12.0]})
    dr16 = pd.DataFrame({"APOGEE_ID": ["A"], "GAIA_PARALLAX": [2.0], "GAIA_PHOT_BP_MEAN_MAG": [13.0]})
    assert {"APOGEE_ID", "GAIA_PARALLAX", "GAIA_PARALLAX_ERROR", "GAIA_G"} <= set(normalise_allstar(dr17).columns)
    assert {"GAIA_PARALLAX", "GAIA_BP"} <= set(normalise_allstar(dr16).columns)


def test_a_membership_file_may_be_a_list_of_ids(tmp_path):
    listed = tmp_path / "astro_ml_ysos.txt"
    listed.write_text("# YSO candidates\n2M03290406+3117075\n\n2M03441583+3159367 extra words\n")
    members = read_members(listed)
    assert members["APOGEE_ID"].tolist() == ["2M03290406+3117075", "2M03441583+3159367"]
    assert (members["REGION"] == "").all()  # the allStar's FIELD stands in (build_labels)


def test_table_columns_are_found_in_any_case():
    cfg = _table_cfg(**{"labels.table.teff": "Teff", "labels.table.fe_h": "FeH"})
    frame = table_labels(pd.DataFrame({"apogee_id": [" A "], "TEFF": ["3100"], "logg": [5.0], "feh": [0.1]}),
                         cfg.labels.table)
    assert frame.iloc[0].to_dict() == {"APOGEE_ID": "A", "TEFF": 3100.0, "LOGG": 5.0, "FE_H": 0.1, "LABEL_FLAGS": 0}


def test_a_star_rejected_by_two_sources_has_both_reasons():
    cfg = Params().with_overrides({"labels.sources": ["payne", "table"], "paths.label_table": "mine.csv"})
    payne = pd.DataFrame({"APOGEE_ID": ["Z", "B"], "TEFF": [3500.0, 5000.0], "LOGG": [4.8, 2.5], "FE_H": [0.0, 0.0]})
    mine = pd.DataFrame({"APOGEE_ID": ["Z", "A"], "TEFF": [1000.0, 3000.0], "LOGG": [4.8, 5.0], "FE_H": [0.0, 0.0]})
    label_set = build_labels(LabelInputs(payne=payne, table=mine), shipped_parsec(), labels=cfg.labels, yso=cfg.yso)
    assert sorted(label_set.catalog["APOGEE_ID"]) == ["A", "B"]
    [reason] = label_set.rejects.loc[label_set.rejects["APOGEE_ID"] == "Z", "REASON"]
    assert reason.startswith("PAYNE: Teff <= 4000 K") and reason.endswith("TABLE: TEFF 1000 outside labels.ranges.table [2000, 12000]")
