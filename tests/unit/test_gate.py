"""The data gate and the choice of a star's file, called directly: pure functions of small files
and tables built here."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from apogeenet.gate import SUMMARY_FILE, GateError, require_validation, validated_inputs
from apogeenet.store import INDEX_FILE, primary_rows


@pytest.fixture()
def inputs(tmp_path):
    labels, store = tmp_path / "labels.parquet", tmp_path / "store"
    store.mkdir()
    labels.write_bytes(b"labels v1")
    (store / INDEX_FILE).write_bytes(b"index v1")
    return tmp_path / "validation", labels, store


def _summary(validation, **report) -> None:
    validation.mkdir(exist_ok=True)
    (validation / SUMMARY_FILE).write_text(json.dumps(report))


def test_the_gate_opens_only_for_a_passed_run_on_these_very_inputs(inputs):
    validation, labels, store = inputs
    with pytest.raises(GateError, match="have not been validated"):
        require_validation(validation, labels, store)
    _summary(validation, success=False, failures=[{"suite": "labels"}, {"suite": "spectra_store"}])
    with pytest.raises(GateError, match=r"failed validation \(labels, spectra_store\)"):
        require_validation(validation, labels, store)
    _summary(validation, success=True, inputs=validated_inputs(labels, store))
    require_validation(validation, labels, store)  # passes
    labels.write_bytes(b"labels v2")
    with pytest.raises(GateError, match="changed since they were validated"):
        require_validation(validation, labels, store)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]"])
def test_a_garbage_summary_closes_the_gate_in_one_line(inputs, content):
    validation, labels, store = inputs
    validation.mkdir()
    (validation / SUMMARY_FILE).write_bytes(content)
    with pytest.raises(GateError, match="not a validation summary"):
        require_validation(validation, labels, store)


def test_each_star_trains_on_its_highest_snr_file_the_first_of_equals():
    index = pd.DataFrame({"apogee_id": ["A", "B", "A", "C", "B", "A"], "snr": [50.0, 80.0, 120.0, 10.0, 80.0, 120.0]})
    np.testing.assert_array_equal(primary_rows(index), [False, True, True, True, False, False])
