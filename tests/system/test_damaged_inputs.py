"""Damaged inputs give reasons, never tracebacks: fuzzed headers, unreadable files beside readable
ones, spectra without usable pixels (flagged and kept out of the clean view)."""

from __future__ import annotations

import json

import numpy as np
from commands import run
from kills import prediction_setup


def test_damaged_headers_never_escape_as_anything_but_a_reason(multi_visit_file):
    """400 copies of a real apStar file with random bytes changed in the first headers: each one
    parses or is rejected with ApStarError (astropy's VerifyError used to escape and crash)."""
    from apogeenet.io.apstar import ApStarError, read_apstar_bytes

    raw = multi_visit_file.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"parsed": 0, "rejected": 0}
    for _ in range(400):
        damaged = bytearray(raw)
        for position in rng.integers(0, 4 * 2880, rng.integers(1, 20)):
            damaged[position] = rng.integers(0, 256)
        try:
            read_apstar_bytes(bytes(damaged))
            outcomes["parsed"] += 1
        except ApStarError as exc:
            assert exc.reason
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 50  # the corpus does damage what matters


def test_inspect_prints_every_readable_file_around_unreadable_ones(multi_visit_file, tmp_path):
    from apogeenet.io.apstar import ApStarError, read_apstar_bytes

    raw = multi_visit_file.read_bytes()
    rng = np.random.default_rng(0)
    while True:  # a header damage astropy's verifier raises on
        damaged = bytearray(raw)
        for position in rng.integers(0, 4 * 2880, 10):
            damaged[position] = rng.integers(0, 256)
        try:
            read_apstar_bytes(bytes(damaged))
        except ApStarError as exc:
            if "VerifyError" in exc.reason:
                break
    (tmp_path / "verify.fits").write_bytes(bytes(damaged))
    (tmp_path / "dangling.fits").symlink_to(tmp_path / "nowhere.fits")
    result = run("inspect", "--json", tmp_path / "verify.fits", multi_visit_file, tmp_path / "dangling.fits", tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [json.loads(line)["APOGEE_ID"] for line in result.stdout.splitlines()] == ["2M00452143+1634446"]
    assert len(result.stderr.strip().splitlines()) == 3


def test_spectra_without_usable_pixels_are_flagged_and_kept_out_of_the_clean_view(small_tree, tmp_path):
    import dataclasses

    import pandas as pd

    from apogeenet.config import load_params
    from apogeenet.io.apstar import read_apstar, write_apstar
    from apogeenet.pipeline import predict
    from factories import settings

    source = tmp_path / "src"
    good = sorted(small_tree.rglob("*.fits"))[:4]
    for number, path in enumerate(good):
        star = read_apstar(path)
        flux, error = star.flux.copy(), star.error.copy()
        combined_flux, combined_error = (flux, error) if flux.ndim == 1 else (flux[0], error[0])
        if number == 1:  # the sentinel everywhere: no usable pixel
            combined_error[:] = 1e10
        elif number == 2:  # one good pixel
            keep = np.flatnonzero(combined_error < 1e10)[100]
            combined_error[np.arange(combined_error.size) != keep] = 1e10
        elif number == 3:  # half the flux NaN
            combined_flux[: combined_flux.size // 2] = np.nan
        write_apstar(dataclasses.replace(star, flux=flux, error=error), source / path.name)
    params, model = prediction_setup(source, tmp_path)
    predict.run(settings(load_params(params), model=str(model), draws=3, track=False))
    catalog = pd.read_parquet(tmp_path / "catalog" / "catalog.parquet").set_index("APOGEE_ID")
    ids = [read_apstar(source / p.name).apogee_id for p in good]
    flags = catalog.loc[ids, "FLAGS"].to_numpy()
    assert flags[0] & 4 == 0 and all(f & 4 for f in flags[1:])  # FEW_PIXELS
    assert catalog.loc[ids, "N_GOOD_PIXELS"].tolist()[1:3] == [0, 1]
    clean = pd.read_parquet(tmp_path / "catalog" / "catalog_clean.parquet")
    assert not set(ids[1:]) & set(clean["APOGEE_ID"])
