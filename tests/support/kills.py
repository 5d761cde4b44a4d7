"""Helpers of the kill and damage tests: a child process that kill -9s itself at a chosen call,
the comparison of two stores, a store and an untrained model to predict with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from factories import TABLE1

from apogeenet.model import ApogeeNet
from apogeenet.serving import Predictor

__all__ = ["killed_at", "prediction_setup", "same_store"]


def killed_at(target: str, nth: int, call: str, *, half_write: bool = False) -> None:
    """Run ``call`` (Python) in a child process that kill -9s itself on the ``nth`` call of
    ``target`` (``module:Attribute.path``): before the call, or with ``half_write`` (a
    ``target(obj, file)`` such as torch.save) after writing half of what it would write to the
    file: a kill in the middle of saving it."""
    script = f"""
import importlib, io, os, signal
module, name = {target!r}.split(":")
owner = importlib.import_module(module)
*path, attr = name.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, attr)
calls = [0]
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == {nth}:
        if {half_write!r}:
            buffer = io.BytesIO()
            original(args[0], buffer, *args[2:], **kwargs)
            half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
            if hasattr(args[1], "write"):
                args[1].write(half)
                args[1].flush()
            else:
                with open(args[1], "wb") as fh:
                    fh.write(half)
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(owner, attr, dying)
{call}
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            cwd=Path(__file__).parent)
    assert result.returncode == -9, f"the child was not killed: {result.returncode} {result.stderr[-1500:]}"


def same_store(a: Path, b: Path) -> None:
    from apogeenet.store import SpectraStore

    one, two = SpectraStore(a), SpectraStore(b)
    assert (a / "index.parquet").read_bytes() == (b / "index.parquet").read_bytes()
    assert (a / "rejects.parquet").read_bytes() == (b / "rejects.parquet").read_bytes()
    rows = np.arange(len(one))
    for x, y in zip(one.read(rows), two.read(rows)):
        np.testing.assert_array_equal(x, y)
    assert sorted(p.name for p in (a / "segments").iterdir()) == sorted(p.name for p in (b / "segments").iterdir())


def prediction_setup(source: Path, root: Path) -> tuple[Path, Path]:
    """A store of ``source``, a params.yaml whose catalog goes to ``root/catalog``, an untrained model."""
    import yaml

    from apogeenet.ingest import ingest

    ingest(source, root / "store", workers=1)
    (root / "params.yaml").write_text(yaml.safe_dump({"paths": {
        "store": str(root / "store"), "labels": str(root / "none"), "truth": None,
        "catalog": str(root / "catalog")}}))
    torch.manual_seed(0)
    return root / "params.yaml", Predictor(ApogeeNet(3), TABLE1, flux_scale=None).save(root / "model.pt")
