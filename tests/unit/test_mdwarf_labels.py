"""M-dwarf labels (paper §2.3) against the paper's released catalog, and the selection edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from astropy.table import Table

from apogeenet.errors import InputError, UserFacingError
from apogeenet.io.tables import read_table
from apogeenet.labels.mdwarfs import (LabelFlag, absolute_k, find_columns, mdwarf_labels,
                                      select_mdwarfs)

YOUNG = {"ORIONA", "IC348"}


@pytest.fixture(scope="module")
def released(real_apstar_dir):
    path = real_apstar_dir.parent / "labels" / "astro_ml_MS_Labels_May_29_2019.fits"
    return read_table(path)


@pytest.mark.shared
def test_released_recipe_reproduces_the_released_catalog(released):
    assert len(released) == 4586
    m_k = absolute_k(released["K_app"], released["parallax"])
    np.testing.assert_allclose(m_k, released["K_abs"], atol=1e-4)
    labels = mdwarf_labels(released["g"], released["r"], released["J_app"], released["H_app"],
                           released["K_app"], m_k=m_k, recipe="released")
    diff = {c: np.abs(labels[c] - released[col]).max()
            for c, col in (("TEFF", "T_eff"), ("LOGG", "log_g"), ("FE_H", "Fe_H"))}
    assert diff["FE_H"] < 1e-5 and diff["TEFF"] < 0.05 and diff["LOGG"] < 0.013, diff
    # the catalog's first row is the paper's Table 4 first row (2M00003379+7940362)
    assert released["ap_id"][0] == "2M00003379+7940362"
    assert labels["TEFF"][0] == pytest.approx(3307.21, abs=0.01)
    assert labels["FE_H"][0] == pytest.approx(-0.0286, abs=1e-4)


@pytest.mark.shared
def test_paper_recipe_differs_from_the_released_one(released):
    args = [released[c] for c in ("g", "r", "J_app", "H_app", "K_app")]
    paper, rel = mdwarf_labels(*args, recipe="paper"), mdwarf_labels(*args, recipe="released")
    np.testing.assert_allclose(paper["FE_H"] - rel["FE_H"], 0.0369, atol=1e-9)
    typical = np.median(paper["TEFF"])
    assert 2800 < typical < 4000  # the factor 3500 is applied: Kelvin, not Teff/3500
    assert np.median(np.abs(paper["TEFF"] - rel["TEFF"])) > 10


def test_flags_mark_relations_outside_their_range():
    # inside every range / far too red in g−K / too hot for Veyette / no parallax
    g = np.array([16.5, 20.0, 13.2, 16.5])
    k = np.array([11.0, 11.0, 9.0, 11.0])
    j = k + np.array([0.85, 0.85, 0.80, 0.85])
    h = j - 0.6
    r = j + np.array([2.5, 2.5, 1.2, 2.5])
    labels = mdwarf_labels(g, r, j, h, k, m_k=np.array([7.0, 7.0, 5.0, np.nan]))
    flags = labels["LABEL_FLAGS"].to_numpy()
    assert flags[0] == 0, labels.iloc[0].to_dict()
    assert flags[1] & LabelFlag.FEH_RANGE
    assert flags[2] & LabelFlag.LOGG_RANGE and flags[2] & LabelFlag.TEFF_RANGE
    assert flags[3] & LabelFlag.NO_M_K
    assert np.all(np.isfinite(labels[["TEFF", "LOGG", "FE_H"]]))  # flagged, never dropped


@pytest.mark.parametrize("edge, inside, outside", [
    ("J-K", 0.701, 0.699), ("J-K", 1.049, 1.051),
    ("g-K", 3.371, 3.369), ("g-K", 8.459, 8.461),
    ("M_K", 5.001, 4.999), ("M_K", 9.999, 10.001),
    ("plx/sigma", 3.001, 2.999),
])
def test_selection_on_both_sides_of_each_cut(edge, inside, outside):
    def one(value):
        j_k, g_k, m_k, ratio = 0.85, 5.0, 7.0, 10.0
        if edge == "J-K":
            j_k = value
        elif edge == "g-K":
            g_k = value
        elif edge == "M_K":
            m_k = value
        else:
            ratio = value
        parallax = 20.0
        k = m_k - 5 * np.log10(parallax) + 10
        return select_mdwarfs([k + j_k], [k], [k + g_k], [parallax], [parallax / ratio], ["120-45"],
                              excluded_fields=YOUNG)["SELECTED"][0]
    assert one(inside) and not one(outside)


def test_young_fields_are_excluded_and_columns_are_found():
    table = pd.DataFrame({"PS1_G": [16.0], "PS1_R": [13.5], "J": [11.0], "H": [10.4], "K": [10.15],
                          "GAIA_PARALLAX": [30.0], "GAIA_PARALLAX_ERROR": [0.05], "FIELD": ["IC348"],
                          "GAIA_G": [14.0]})
    cols = find_columns(table, ("g", "r", "J", "H", "K", "parallax", "parallax_error", "field"))
    assert cols["g"] == "PS1_G" and cols["parallax"] == "GAIA_PARALLAX"
    sel = select_mdwarfs(table[cols["J"]], table[cols["K"]], table[cols["g"]], table[cols["parallax"]],
                         table[cols["parallax_error"]], table[cols["field"]], excluded_fields=YOUNG)
    assert sel["IN_BOX"][0] and sel["PARALLAX_OK"][0] and sel["YOUNG_FIELD"][0] and not sel["SELECTED"][0]
    with pytest.raises(InputError, match="missing column.*r \\(any of"):
        find_columns(table.drop(columns=["PS1_R"]), ("g", "r"))


def test_cli_writes_labels_and_selection_with_units(tmp_path):
    from typer.testing import CliRunner

    from apogeenet.cli import app

    table = pd.DataFrame({"g": [16.0, 15.0], "r": [13.5, 12.8], "J": [11.0, 10.9], "H": [10.4, 10.3],
                          "K": [10.15, 10.1], "parallax": [30.0, 0.5], "parallax_error": [0.05, 0.4],
                          "field": ["120-45", "120-45"]})
    table.to_csv(tmp_path / "in.csv", index=False)
    result = CliRunner().invoke(app, ["label-mdwarfs", str(tmp_path / "in.csv"), str(tmp_path / "out.fits"),
                                      "--select", "--recipe", "paper"])
    assert result.exit_code == 0, result.output
    out = Table.read(tmp_path / "out.fits")
    assert out["TEFF"].unit == "K" and list(out["SELECTED"]) == [True, False]
    expected = mdwarf_labels(table["g"], table["r"], table["J"], table["H"], table["K"], recipe="paper")
    np.testing.assert_allclose(out["TEFF"], expected["TEFF"])
    again = CliRunner().invoke(app, ["label-mdwarfs", str(tmp_path / "in.csv"), str(tmp_path / "out.fits")])
    assert isinstance(again.exception, UserFacingError) and "already exists" in str(again.exception)
