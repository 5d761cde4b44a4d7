"""The spectra store: ingest (parallel, incremental, with rejects) and fast random reads."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from badfiles import make_bad

from apogeenet.io import read_apstar
from apogeenet.store import SpectraStore, StoreError
from apogeenet.ingest import ingest
from apogeenet.synth.survey import make_survey

CORRUPT = ["not_fits", "truncated", "missing_hdu", "wrong_grid", "zero_flux"]


@pytest.fixture(scope="module")
def survey_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("survey")
    make_survey(root, 24, seed=7, fractions={"giant": 0.5, "mdwarf": 0.25, "yso": 0.25})
    return root / "apStar"


@pytest.fixture()
def tree(survey_tree, tmp_path, multi_visit_file):
    """24 good synthetic apStar files plus the 5 corrupt kinds, in nested folders."""
    root = tmp_path / "src"
    shutil.copytree(survey_tree, root)
    (root / "bad").mkdir()
    for kind in CORRUPT:
        make_bad(kind, multi_visit_file, root / "bad" / f"{kind}.fits")
    return root


def _by_file(store, tree):
    return {f: read_apstar(tree / f) for f in store.index["file"]}


def test_good_files_are_ingested_and_exactly_the_corrupt_ones_rejected(tree, tmp_path):
    report = ingest(tree, tmp_path / "store", workers=2)
    assert (report.scanned, report.ingested, report.rejected) == (29, 24, 5)
    rejects = pd.read_parquet(tmp_path / "store" / "rejects.parquet")
    assert sorted(rejects["file"]) == sorted(f"bad/{k}.fits" for k in CORRUPT)
    reasons = dict(zip(rejects["file"], rejects["reason"]))
    assert "truncated" in reasons["bad/truncated.fits"]
    assert "missing HDU" in reasons["bad/missing_hdu.fits"]
    store = SpectraStore(tmp_path / "store")
    assert len(store) == 24 and store.index["sha256"].str.len().eq(64).all()


def test_rows_read_back_exactly_in_any_order(tree, tmp_path):
    ingest(tree, tmp_path / "store", workers=2)
    store = SpectraStore(tmp_path / "store")
    stars = _by_file(store, tree)
    rows = np.array([5, 0, 23, 5, 11])
    batch = store.read(rows)
    assert batch.flux.shape == (5, 8575) and batch.flux.dtype == np.float32
    for i, row in enumerate(rows):
        star = stars[store.index["file"][row]]
        np.testing.assert_array_equal(batch.flux[i], star.combined_flux)
        np.testing.assert_array_equal(batch.error[i], star.combined_error)
        np.testing.assert_array_equal(batch.mask[i], star.combined_mask)
        assert store.index["apogee_id"][row] == star.apogee_id
        assert store.index["nvisits"][row] == star.nvisits


def test_a_second_ingest_does_no_work(tree, tmp_path):
    ingest(tree, tmp_path / "store", workers=2)
    spectra = tmp_path / "store" / "segments" / "000000.h5"
    before = spectra.stat().st_mtime_ns, (tmp_path / "store" / "index.parquet").stat().st_mtime_ns
    report = ingest(tree, tmp_path / "store", workers=2)
    assert not report.did_work
    assert (report.unchanged, report.ingested, report.rejected) == (29, 0, 5)
    after = spectra.stat().st_mtime_ns, (tmp_path / "store" / "index.parquet").stat().st_mtime_ns
    assert after == before


def test_touched_files_are_hashed_not_parsed_and_changed_files_rewritten(tree, tmp_path):
    ingest(tree, tmp_path / "store", workers=1)
    store = SpectraStore(tmp_path / "store")
    first, second = store.index["file"][0], store.index["file"][1]
    os.utime(tree / first, ns=(1, 1))  # same bytes, new mtime
    replacement = read_apstar(tree / second)
    shutil.copy(tree / store.index["file"][2], tree / second)  # new content, same name
    report = ingest(tree, tmp_path / "store", workers=1)
    assert (report.updated, report.ingested, report.unchanged) == (1, 0, 28)
    store = SpectraStore(tmp_path / "store")
    assert store.index["file"][1] == second
    np.testing.assert_array_equal(store.read([1]).flux[0], read_apstar(tree / second).combined_flux)
    assert not np.array_equal(store.read([1]).flux[0], replacement.combined_flux)


def test_removed_files_leave_and_fixed_files_join(tree, tmp_path, multi_visit_file):
    ingest(tree, tmp_path / "store", workers=1)
    gone = SpectraStore(tmp_path / "store").index["file"][3]
    (tree / gone).unlink()
    shutil.copy(multi_visit_file, tree / "bad" / "zero_flux.fits")
    report = ingest(tree, tmp_path / "store", workers=1)
    assert (report.removed, report.ingested, report.rejected) == (1, 1, 4)
    store = SpectraStore(tmp_path / "store")
    assert gone not in set(store.index["file"]) and "bad/zero_flux.fits" in set(store.index["file"])


def test_small_segments_and_parallel_ingest_give_the_same_store(tree, tmp_path):
    ingest(tree, tmp_path / "one", workers=1)
    ingest(tree, tmp_path / "seg", workers=2, segment_rows=5)
    one, seg = SpectraStore(tmp_path / "one"), SpectraStore(tmp_path / "seg")
    assert seg.index["segment"].nunique() == 5
    pd.testing.assert_frame_equal(one.index.drop(columns=["segment", "offset"]),
                                  seg.index.drop(columns=["segment", "offset"]))
    rows = np.random.default_rng(0).permutation(len(one))
    for a, b in zip(one.read(rows), seg.read(rows)):
        np.testing.assert_array_equal(a, b)
    batches = list(seg.iter_batches(10))
    assert [len(r) for r, _ in batches] == [10, 10, 4]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(StoreError, match="no such directory"):
        ingest(tmp_path / "missing", tmp_path / "store")
    with pytest.raises(StoreError, match="not a spectra store"):
        SpectraStore(tmp_path)


def test_out_of_range_rows_raise(tree, tmp_path):
    ingest(tree, tmp_path / "store", workers=1)
    with pytest.raises(IndexError):
        SpectraStore(tmp_path / "store").read([24])


def test_store_depends_only_on_file_contents(tree, tmp_path):
    """Same bytes, different mtimes and worker counts -> byte-identical store (stable dvc.lock)."""
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy, copy_function=shutil.copy)  # fresh mtimes
    ingest(tree, tmp_path / "a", workers=1)
    ingest(copy, tmp_path / "b", workers=2)
    for name in ("segments/000000.h5", "index.parquet", "rejects.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
