"""apStar reading and writing (paper §2.1) on real DR13 files and on files broken on purpose."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from astropy.io import fits
from badfiles import BAD_KINDS, make_bad

from apogeenet.io import (APSTAR_NPIX, ApStarError, read_apstar, twomass_id, wavelength_grid,
                          write_apstar)


def test_multi_visit_file_has_visit_rows_and_row0_is_combined(multi_visit_file):
    star = read_apstar(multi_visit_file)
    assert (star.apogee_id, star.telescope, star.field, star.nvisits) == \
        ("2M00452143+1634446", "apo25m", "120-45", 3)
    assert star.flux.shape == star.error.shape == star.mask.shape == (5, APSTAR_NPIX)
    with fits.open(multi_visit_file) as hdul:
        np.testing.assert_array_equal(star.combined_flux, hdul[1].data[0])
        np.testing.assert_array_equal(star.combined_error, hdul[2].data[0])
    assert star.snr == pytest.approx(79.0154)
    assert (star.ra, star.dec) == pytest.approx((11.339304, 16.579082))


def test_single_visit_file_is_one_dimensional(single_visit_file):
    star = read_apstar(single_visit_file)
    assert star.nvisits == 1
    assert star.flux.shape == (APSTAR_NPIX,)
    assert star.combined_flux is star.flux
    assert star.field == "N1333"


def test_arrays_are_native_endian_and_bad_pixels_follow_the_convention(multi_visit_file):
    star = read_apstar(multi_visit_file)
    for array in (star.flux, star.error, star.mask):
        assert array.dtype.isnative
    assert star.flux.dtype == np.float32
    bad = star.combined_flux == 0
    assert 500 < bad.sum() < 1500  # chip gaps and ends
    assert np.all(star.combined_error[bad] == pytest.approx(1e10))
    assert star.n_good_pixels == APSTAR_NPIX - bad.sum()


def test_wavelength_grid_spans_the_apogee_h_band(single_visit_file):
    wave = read_apstar(single_visit_file).wavelength
    assert wave.size == APSTAR_NPIX
    assert wave[0] == pytest.approx(10**4.179)
    assert wave[-1] == pytest.approx(10 ** (4.179 + 6e-6 * 8574))
    assert 15100 < wave[0] < 15101 and 16999 < wave[-1] < 17000
    np.testing.assert_allclose(np.diff(np.log10(wave)), 6e-6, rtol=1e-6)
    np.testing.assert_array_equal(wave, wavelength_grid())


@pytest.mark.parametrize("which", ["multi_visit_file", "single_visit_file"])
def test_write_read_round_trip_is_exact(which, request, tmp_path):
    star = read_apstar(request.getfixturevalue(which))
    out = write_apstar(star, tmp_path / "copy.fits")
    back = read_apstar(out)
    for name in ("flux", "error", "mask"):
        np.testing.assert_array_equal(getattr(back, name), getattr(star, name))
        assert getattr(back, name).dtype == getattr(star, name).dtype
    assert back.facts() == star.facts()
    assert back.location_id == star.location_id
    # every primary keyword survives, and astropy sees the same arrays
    for key in star.header:
        if key not in ("COMMENT", "HISTORY", "", "BITPIX"):  # BITPIX of an empty HDU0
            assert back.header[key] == star.header[key], key
    with fits.open(out) as hdul:
        np.testing.assert_array_equal(hdul[1].data, star.flux)
        np.testing.assert_array_equal(hdul[3].data, star.mask)
        assert hdul[1].header["BUNIT"].startswith("Flux (10^-17")
        assert hdul[1].header["CRVAL1"] == 4.179


def test_writer_is_deterministic_and_refuses_to_overwrite(multi_visit_file, tmp_path):
    star = read_apstar(multi_visit_file)
    a = write_apstar(star, tmp_path / "a.fits")
    b = write_apstar(star, tmp_path / "b.fits")
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(FileExistsError):
        write_apstar(star, a)


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_each_bad_file_kind_raises_a_named_error(kind, multi_visit_file, tmp_path):
    bad = make_bad(kind, multi_visit_file, tmp_path / f"{kind}.fits")
    with pytest.raises(ApStarError) as info:
        read_apstar(bad)
    assert BAD_KINDS[kind] in info.value.reason
    assert str(bad) in str(info.value)


def test_missing_file_is_an_apstar_error(tmp_path):
    with pytest.raises(ApStarError, match="cannot read"):
        read_apstar(tmp_path / "nope.fits")


def test_twomass_id_truncates_like_2mass():
    assert twomass_id(11.339304, 16.579082) == "2M00452143+1634446"
    assert twomass_id(93.955603, -1.01155) == "2M06154934-0100415"
    assert twomass_id(0.0, -0.00001) == "2M00000000-0000000"


@pytest.mark.shared
def test_every_real_apstar_file_matches_its_catalog_row(real_apstar_dir):
    rows = list(csv.DictReader(open(real_apstar_dir.parent / "labels" / "apstar_dr13_labels.csv")))
    assert len(rows) == 19
    for row in rows:
        star = read_apstar(real_apstar_dir / row["APSTAR_FILE"])
        shape = "x".join(map(str, star.flux.shape))
        assert (star.apogee_id, star.telescope, star.field, star.location_id, star.nvisits, shape) \
            == (row["APOGEE_ID"], row["TELESCOPE"], row["FIELD"], int(row["LOCATION_ID"]),
                int(row["NVISITS"]), row["FLUX_SHAPE"])
        assert star.snr == pytest.approx(float(row["SNR"]), abs=0.006)
        assert star.header["J"] == pytest.approx(float(row["J"]))
        assert twomass_id(star.ra, star.dec) == star.apogee_id
        assert 7000 < star.n_good_pixels < APSTAR_NPIX
