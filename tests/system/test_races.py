"""Commands that meet: predict while ingest changes the store, two writers of one output, a second
predict beside a running one, kills between the catalog's moves. Nothing attaches a prediction to
another star, nothing of one run mixes into another's output, the loser says so in one line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from commands import run
from factories import TABLE1

from apogeenet.model import ApogeeNet
from apogeenet.serving import Predictor


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from apogeenet.synth.survey import make_survey

    root = tmp_path_factory.mktemp("races")
    make_survey(root, 10, seed=5, fractions={"giant": 0.5, "dwarf": 0.5})
    return root / "apStar"


def _setup(tree: Path, root: Path) -> tuple[Path, Path, Path]:
    """A copy of ``tree``, its store, a params.yaml (tiny shards) and an untrained model."""
    from apogeenet.ingest import ingest

    source = root / "src"
    shutil.copytree(tree, source)
    ingest(source, root / "store", workers=1)
    (root / "params.yaml").write_text(yaml.safe_dump({
        "paths": {"store": str(root / "store"), "labels": str(root / "none"), "truth": None,
                  "catalog": str(root / "catalog")},
        "predict": {"draws": 3, "shard_size": 4, "spectra_per_block": 2}}))
    torch.manual_seed(0)
    return source, root / "params.yaml", Predictor(ApogeeNet(3).eval(), TABLE1, None).save(root / "model.pt")


def _renamed_to_sort_last(source: Path) -> None:
    """The first file renamed so that it sorts last: the same spectra, every row number moved."""
    first = sorted(source.rglob("*.fits"))[0]
    first.rename(first.with_name("zz-" + first.name))


def _by_star(catalog: Path) -> pd.DataFrame:
    return pd.read_parquet(catalog / "catalog.parquet").set_index("APOGEE_ID").sort_index()


def test_predict_never_attaches_a_prediction_to_another_star_when_ingest_changes_the_store(tree, tmp_path,
                                                                                          monkeypatch):
    """An ingest that renumbers the rows lands while a shard reads: the shard refuses, predict
    plans again on the new store, and every star gets its own prediction."""
    from apogeenet import shards
    from apogeenet.config import load_params
    from apogeenet.pipeline import predict
    from factories import settings
    from apogeenet.ingest import ingest

    source, params, model = _setup(tree, tmp_path)
    cfg = load_params(params)
    reference = tmp_path / "reference"
    predict.run(settings(cfg, model=str(model), out_dir=reference, track=False))
    original, fired = shards.predict_store, []

    def ingest_meanwhile(*args, **kwargs):
        if not fired:
            fired.append(True)
            _renamed_to_sort_last(source)
            ingest(source, tmp_path / "store", workers=1)
        return original(*args, **kwargs)

    monkeypatch.setattr(shards, "predict_store", ingest_meanwhile)
    predict.run(settings(cfg, model=str(model), track=False))
    assert fired
    got, expected = _by_star(tmp_path / "catalog"), _by_star(reference)
    assert list(got.index) == list(expected.index)
    np.testing.assert_array_equal(got[["TEFF", "LOGG", "FE_H"]].to_numpy(), expected[["TEFF", "LOGG", "FE_H"]].to_numpy())


def test_a_shard_of_a_plan_made_on_another_index_refuses_in_one_line(tree, tmp_path):
    from apogeenet.ingest import ingest

    source, params, model = _setup(tree, tmp_path)
    result = run("predict", "--plan-only", "--model", model, "--params", params, "--no-track")
    assert result.returncode == 0, result.stderr
    plan = next((tmp_path / "catalog" / ".parts").glob("*/plan.json"))
    _renamed_to_sort_last(source)
    ingest(source, tmp_path / "store", workers=1)
    result = run("predict-shard", plan, 0)
    assert result.returncode == 2 and "the store changed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not list(plan.parent.glob("part-*"))


def test_the_same_predict_files_twice_succeeds_and_never_overwrites_the_input(multi_visit_file, tmp_path):
    torch.manual_seed(0)
    model = Predictor(ApogeeNet(3).eval(), TABLE1, None).save(tmp_path / "model.pt")
    star = tmp_path / "star.fits"
    shutil.copy(multi_visit_file, star)
    for _ in range(2):
        result = run("predict", star, "--model", model, "--draws", 3, "--out", tmp_path / "out", "--no-track",
                     cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    result = run("predict", star, "--model", model, "--draws", 3, "--out", star, "--no-track", cwd=tmp_path)
    assert result.returncode == 2 and "would overwrite the input" in result.stderr
    assert star.read_bytes() == multi_visit_file.read_bytes()


def _holding(directory: Path, mode: str) -> subprocess.Popen:
    """A process that holds ``directory`` (one_writer or shared) until killed."""
    call = {"one_writer": f"one_writer({str(directory)!r}, 'train')", "shared": f"shared({str(directory)!r})"}[mode]
    child = subprocess.Popen([sys.executable, "-c", f"import sys, time\nfrom apogeenet.locks import one_writer, shared\n"
                              f"with {call}:\n    print('held', flush=True)\n    time.sleep(600)\n"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_two_writers_of_one_output_directory_the_loser_says_so(project, tmp_path):
    out = tmp_path / "model"
    holder = _holding(out, "one_writer")
    try:
        result = run("train", "--no-track", "--params", project / "params.yaml", "--out", out)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2 and "another `apogeenet train` is writing there" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (out / "model.pt").exists()


def test_a_second_predict_leaves_the_parts_of_a_running_one_alone(tree, tmp_path):
    from apogeenet.config import load_params
    from apogeenet.pipeline import predict
    from factories import settings

    _, params, model = _setup(tree, tmp_path)
    cfg = load_params(params)
    first = predict.plan(settings(cfg, model=str(model))).file
    holder = _holding(first.parent, "shared")  # a shard of the first plan at work (a Slurm task)
    try:
        predict.run(settings(cfg.with_overrides({"predict.seed": 1}), model=str(model), track=False))
        assert first.exists(), "the running plan's parts were removed"
    finally:
        holder.kill()
        holder.wait()
    predict.run(settings(cfg.with_overrides({"predict.seed": 2}), model=str(model), track=False))
    assert not first.parent.exists()  # nobody holds it now: removed


_KILL_AFTER_MOVES = """
import os, signal, sys
import apogeenet.atomic as atomic
original, moved = os.replace, []
def replace(src, dst):
    result = original(src, dst)
    if ".journal-" in str(dst):
        moved.append("journal")
    elif moved:
        moved.append(dst)
        if len(moved) == 3:  # the journal and two of the six catalog files moved
            os.kill(os.getpid(), signal.SIGKILL)
    return result
os.replace = replace
from apogeenet.config import load_params
from apogeenet.pipeline import predict
predict.run(load_params(sys.argv[1]).with_overrides({"predict.seed": 1, "predict.model": sys.argv[2], "tracking.enabled": False}))
"""


def test_a_kill_between_the_catalogs_moves_is_finished_by_the_next_writer(tree, tmp_path):
    from apogeenet.atomic import recover
    from apogeenet.config import load_params
    from apogeenet.pipeline import predict
    from factories import settings

    _, params, model = _setup(tree, tmp_path)
    cfg = load_params(params)
    predict.run(settings(cfg, model=str(model), track=False))  # run A
    catalog = tmp_path / "catalog"
    child = subprocess.run([sys.executable, "-c", _KILL_AFTER_MOVES, str(params), str(model)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-1500:]
    assert list(catalog.glob(".journal-*.json")), "the kill should have left the journal"
    recover(catalog)  # what the next writer does first
    predict.run(settings(cfg.with_overrides({"predict.seed": 1}), model=str(model), out_dir=tmp_path / "B", track=False))
    for name in ("catalog.fits", "catalog.parquet", "catalog.csv", "catalog_clean.fits", "catalog_clean.parquet",
                 "catalog_clean.csv"):
        assert (catalog / name).read_bytes() == (tmp_path / "B" / name).read_bytes(), name
    assert not [p.name for p in catalog.iterdir() if ".tmp-" in p.name or p.name.startswith(".journal-")]


def test_temporary_files_of_dead_processes_are_removed_by_the_next_writer(tmp_path):
    from apogeenet.atomic import atomic_paths

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = tmp_path / f".catalog.tmp-{pid}.fits"
    left.write_bytes(b"half")
    alive = tmp_path / f".catalog.tmp-{os.getpid()}.csv"  # this process: not dead, kept
    alive.write_bytes(b"mine")
    with atomic_paths([tmp_path / "a.txt", tmp_path / "b.txt"]) as (a, b):
        a.write_text("a")
        b.write_text("b")
    assert not left.exists() and alive.exists() and (tmp_path / "a.txt").read_text() == "a"


_TORN_WRITE = """
import os, pathlib, signal, sys
def torn(self, data, *args, **kwargs):  # half of the text reaches the file, then kill -9
    with open(self, "w") as fh:
        fh.write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
pathlib.Path.write_text = torn
from apogeenet.config import load_params
from apogeenet.pipeline import label
label.run(load_params(sys.argv[1]).with_overrides({"tracking.enabled": False}))
"""


def test_a_kill_while_writing_table1_leaves_the_previous_file_whole(project, tmp_path):
    labels = tmp_path / "labels"
    shutil.copytree(project / "derived" / "labels", labels)
    before = (labels / "table1.json").read_bytes()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["paths"]["labels"] = str(labels)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    child = subprocess.run([sys.executable, "-c", _TORN_WRITE, str(tmp_path / "params.yaml")],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-1500:]
    assert (labels / "table1.json").read_bytes() == before
