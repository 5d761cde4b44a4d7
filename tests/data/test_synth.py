"""The synthetic survey: real apStar layout, honest catalogs, physical and learnable spectra."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from astropy.table import Table

from apogeenet.config import SynthParams
from apogeenet.io import BAD_PIXEL_ERROR, read_apstar, twomass_id
from apogeenet.synth.emulator import PayneEmulator
from apogeenet.synth.learnability import ridge_learnability
from apogeenet.synth.populations import draw_population, draw_survey
from apogeenet.synth.files import ALLSTAR_FILE, MEMBERS_FILE, PAYNE_FILE, SPECTRA_DIR, TRUTH_FILE
from apogeenet.synth.survey import SpectrumSynthesizer, make_survey, spectrum_path

FRACTIONS = SynthParams().fractions
H_ZERO_POINT = 1.133e-10  # 2MASS H, erg/s/cm²/Å for mag 0 (Cohen et al. 2003)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("survey")
    stars, report = make_survey(root, 40, seed=3, fractions=FRACTIONS)
    return stars, root


@pytest.fixture(scope="module")
def emulator():
    return PayneEmulator()


def test_every_file_passes_the_reader_with_the_real_layout(survey, emulator):
    stars, root = survey
    allstar = Table.read(root / ALLSTAR_FILE)
    for i, star in stars.iterrows():
        record = read_apstar(spectrum_path(root / SPECTRA_DIR, star))
        assert record.apogee_id == star["apogee_id"] == allstar["APOGEE_ID"][i]
        rows = 1 if star["nvisits"] == 1 else star["nvisits"] + 2
        assert record.flux.shape == ((8575,) if rows == 1 else (rows, 8575))
        assert record.n_good_pixels == 7214
        gap = np.ones(8575, bool)
        gap[emulator.pixel_index] = False
        assert np.all(record.combined_flux[gap] == 0)
        assert np.all(record.combined_error[gap] == np.float32(BAD_PIXEL_ERROR))
        assert np.all(record.combined_mask[gap] & 1)
        flagged = emulator.pixel_index[emulator.flagged]
        assert np.all(record.combined_mask[flagged] & (1 << 12))
        assert record.snr == pytest.approx(allstar["SNR"][i])


def test_catalog_columns_units_and_missing_values(survey):
    stars, root = survey
    allstar = Table.read(root / ALLSTAR_FILE)
    for column in ("APOGEE_ID", "RA", "DEC", "TELESCOPE", "FIELD", "SNR", "NVISITS", "J", "J_ERR",
                   "H", "K", "GAIA_G", "GAIA_BP", "GAIA_RP", "GAIA_PARALLAX", "GAIA_PARALLAX_ERROR",
                   "PS1_G", "PS1_R", "W1", "W2", "W3"):
        assert column in allstar.colnames, column
    assert allstar["RA"].unit == "deg" and allstar["J"].unit == "mag" and allstar["GAIA_PARALLAX"].unit == "mas"
    assert len(set(allstar["APOGEE_ID"])) == len(allstar) == 40
    assert all(twomass_id(r, d) == i for r, d, i in zip(allstar["RA"], allstar["DEC"], allstar["APOGEE_ID"]))
    for band in ("J", "H", "K"):  # APOGEE targets always have 2MASS
        assert np.all(np.isfinite(allstar[band]))
    for band in ("PS1_G", "PS1_R", "W3", "GAIA_PARALLAX"):  # missing is NaN with a NaN error, never a sentinel
        values, errors = np.asarray(allstar[band]), np.asarray(allstar[f"{band}_ERR" if "PARALLAX" not in band else "GAIA_PARALLAX_ERROR"])
        assert np.array_equal(np.isnan(values), np.isnan(errors))
        assert not np.any(values < -99)
    assert np.isnan(np.asarray(allstar["PS1_R"])).any()  # bright stars saturate PS1


def test_label_tables_cover_their_populations(survey):
    stars, root = survey
    payne, members, truth = (Table.read(root / f) for f in (PAYNE_FILE, MEMBERS_FILE, TRUTH_FILE))
    payne_pops = set(stars.set_index("apogee_id").loc[list(payne["APOGEE_ID"]), "population"])
    assert payne_pops <= {"giant", "dwarf", "field"}
    assert set(members["APOGEE_ID"]) == set(stars.loc[stars["population"] == "yso", "apogee_id"])
    assert set(members["REGION"]) <= {"Orion", "Perseus", "NGC2264", "Pleiades"}
    assert len(truth) == 40 and truth["TEFF"].unit == "K"
    for name in ("TEFF", "LOGG", "FE_H"):
        assert np.all(np.isfinite(payne[name])) and np.all(payne[f"{name}_ERR"] > 0)


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.fits"))}


def test_same_seed_and_size_give_byte_identical_files(tmp_path):
    make_survey(tmp_path / "a", 12, seed=5, fractions=FRACTIONS)
    make_survey(tmp_path / "b", 12, seed=5, fractions=FRACTIONS)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.fits")}
    make_survey(tmp_path / "a", 12, seed=5, fractions=FRACTIONS)  # regenerating rewrites nothing
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.fits")}
    make_survey(tmp_path / "c", 12, seed=6, fractions=FRACTIONS)
    assert set(_digest(tmp_path / "a")).isdisjoint(k for k in _digest(tmp_path / "c") if "apStar-" in k)


def test_mdwarf_photometry_falls_in_the_selection_box():
    stars = draw_population(np.random.default_rng(0), "mdwarf", 300)
    j_k, g_k = stars["J"] - stars["K"], stars["g"] - stars["K"]
    assert ((j_k > 0.7) & (j_k < 1.05)).all() and ((g_k > 3.37) & (g_k < 8.46)).all()
    assert ((stars["K"] > 5) & (stars["K"] < 10)).all()  # absolute K
    assert stars["teff"].between(2600, 4100).all() and stars["logg"].between(4.5, 5.3).all()
    # the released catalog's Teff relation (Mann et al. 2015, r−J and [Fe/H]) holds by
    # construction where it can (its polynomial turns over at r−J ≈ 5.6, about 2800 K)
    x = stars["r"] - stars["J"]
    mann = 3500 * (2.532 - 1.319 * x + 0.4449 * x**2 - 0.07151 * x**3 + 0.004333 * x**4
                   + 0.05629 * stars["fe_h"])
    clipped = np.isclose(x, 5.5)
    assert np.abs(mann - stars["teff"])[~clipped].max() < 2.0
    assert (stars["teff"][clipped] < 2900).all() and clipped.mean() < 0.2


def test_survey_noise_and_astrometry_are_survey_like():
    stars = draw_survey(11, 3000, FRACTIONS)
    assert (stars["snr_target"] < 10).mean() > 0.003 and stars["snr_target"].min() < 6
    mdwarfs = stars[stars["population"] == "mdwarf"]
    failing = (mdwarfs["parallax"] / mdwarfs["parallax_error"] <= 3) | mdwarfs["parallax"].isna()
    assert 0.02 < failing.mean() < 0.2
    assert stars["h_true"].between(7, 13.5).all()


@pytest.mark.parametrize("point", [(5000, 2.5, -0.3, 0.1), (5800, 4.4, 0.0, 0.0),
                                   (3200, 4.9, -0.2, 0.0), (2700, 5.25, 0.2, 0.0)])
def test_each_label_changes_the_spectrum(emulator, point):
    base = np.array(point, float)
    flux = emulator.surface_flux(base)[0]
    for k, step in enumerate((50.0, 0.1, 0.1)):
        shifted = base.copy()
        shifted[k] += step
        change = np.abs(emulator.surface_flux(shifted)[0] / flux - 1)
        assert np.median(change) > 1e-4 and change.max() > 2e-3, (point, k)


def test_continuum_rises_with_teff_across_the_emulator_edge(emulator):
    teff = np.arange(2600, 6901, 100.0)
    labels = np.column_stack([teff, np.full_like(teff, 4.6), np.zeros_like(teff), np.zeros_like(teff)])
    flux = emulator.surface_flux(labels)
    continuum = np.median(emulator.continuum(flux), axis=1)
    assert np.all(np.diff(continuum) > 0)
    edge = emulator.x_min[0]
    below, above = emulator.surface_flux(np.array([[edge - 0.5, 4.6, 0, 0], [edge + 0.5, 4.6, 0, 0]]))
    assert np.median(np.abs(below / above - 1)) < 2e-3  # continuous at the edge


def test_observed_flux_matches_the_h_magnitude():
    """Units end to end: the spectrum's H-band level agrees with the star's 2MASS H."""
    stars = draw_survey(2, 300, FRACTIONS)
    synth = SpectrumSynthesizer(2)
    flux = synth.noiseless(stars)
    band = (synth.emulator.wavelength > 15500) & (synth.emulator.wavelength < 17000)
    h_from_spectrum = -2.5 * np.log10(np.median(flux[:, band], axis=1) * 1e-17 / H_ZERO_POINT)
    offset = h_from_spectrum - stars["h_true"].to_numpy()
    assert abs(np.median(offset)) < 0.25 and np.std(offset) < 0.25


def test_stated_errors_are_the_noise_added():
    stars = draw_survey(4, 50, FRACTIONS)
    synth = SpectrumSynthesizer(4)
    truth = synth.noiseless(stars)
    pix = synth.emulator.pixel_index
    pulls = []
    for i in range(len(stars)):
        flux, error, _ = synth.observe(i, truth[i], stars["snr_target"][i], int(stars["nvisits"][i]))
        row_f, row_e = (flux, error) if flux.ndim == 1 else (flux[0], error[0])
        pulls.append((row_f[pix] - truth[i]) / row_e[pix])
    assert np.std(np.concatenate(pulls)) == pytest.approx(1.0, abs=0.03)


@pytest.mark.slow
def test_labels_are_learnable_by_a_linear_model():
    """Ridge regression on 2 000 synthetic spectra beats the training mean by far (issue 3 §6)."""
    stars = draw_survey(1, 2000, FRACTIONS)
    result = ridge_learnability(SpectrumSynthesizer(1).combined(stars), stars)
    assert (result.loc["all", "gain"] > 3).all()
    for population in ("giant", "dwarf", "mdwarf", "yso"):
        assert result.loc[(population, "teff"), "gain"] > 4
        assert result.loc[(population, "logg"), "gain"] > 2.5
