"""The data gate: nothing trains on (or predicts from) labels and a spectra store that the Great
Expectations suites have not passed exactly as they are now (README, "Data gates")."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from apogeenet.errors import UserFacingError

__all__ = ["GateError", "SUMMARY_FILE", "file_sha256", "require_validation", "validated_inputs"]

SUMMARY_FILE = "summary.json"


class GateError(UserFacingError):
    """The labels or the store have not passed validation as they are now."""


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validated_inputs(labels_file: Path, store_dir: Path) -> dict[str, str]:
    """SHA-256 of the label catalog and of the store's index: what a validation run vouches for."""
    from apogeenet.store import INDEX_FILE

    return {name: file_sha256(path) if path.exists() else "missing"
            for name, path in (("labels", Path(labels_file)), ("store_index", Path(store_dir) / INDEX_FILE))}


def require_validation(validation_dir: Path, labels_file: Path, store_dir: Path) -> None:
    """Raise :class:`GateError` unless ``validation_dir/summary.json`` records a passed run on
    these very labels and this store."""
    summary = Path(validation_dir) / SUMMARY_FILE
    if not summary.exists():
        raise GateError(f"the labels have not been validated ({summary} is missing): run `apogeenet validate` first")
    try:
        report = json.loads(summary.read_text())
    except (ValueError, UnicodeDecodeError):
        report = None
    if not isinstance(report, dict):
        raise GateError(f"{summary} is not a validation summary: run `apogeenet validate` again")
    if not report.get("success"):
        failed = ", ".join(sorted({f["suite"] for f in report.get("failures", [])})) or "see the summary"
        raise GateError(f"the labels failed validation ({failed}): fix them and run `apogeenet validate` again")
    if report.get("inputs") != validated_inputs(labels_file, store_dir):
        raise GateError("the labels or the spectra store changed since they were validated: run "
                        "`apogeenet validate` again")
