"""Files a user receives are data: a FIFO, a device, a sparse giant, errors that cannot be true,
an absurd option each get one line or a flag, never a hang, a traceback or a huge allocation;
and a genuine bug is never disguised as one of those lines."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from commands import EXE, run
from factories import TABLE1

from apogeenet.model import ApogeeNet
from apogeenet.serving import Predictor


@pytest.fixture()
def odd_files(multi_visit_file, tmp_path):
    """A tree with one good apStar file, a FIFO, a link to /dev/zero and a sparse 6 GiB file, all
    named *.fits."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "good.fits").write_bytes(multi_visit_file.read_bytes())
    os.mkfifo(tree / "fifo.fits")
    (tree / "zero.fits").symlink_to("/dev/zero")
    with open(tree / "sparse.fits", "wb") as fh:
        fh.truncate(6 * 2**30)
    return tree


def test_a_fifo_a_device_and_a_sparse_giant_are_reject_rows_not_a_hang(odd_files, tmp_path):
    result = run("ingest", odd_files, tmp_path / "store", "--workers", 1, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 ingested" in result.stdout and "3 rejected" in result.stdout
    rejects = pd.read_parquet(tmp_path / "store" / "rejects.parquet").set_index("file")["reason"]
    assert "not a regular file" in rejects["fifo.fits"] and "not a regular file" in rejects["zero.fits"]
    assert "larger than" in rejects["sparse.fits"]


def test_inspect_and_predict_files_refuse_them_in_one_line_each(odd_files, tmp_path):
    result = run("inspect", *(odd_files / n for n in ("fifo.fits", "zero.fits", "sparse.fits", "good.fits")),
                 timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 3 and "2M00452143+1634446" in result.stdout
    torch.manual_seed(0)
    model = Predictor(ApogeeNet(3).eval(), TABLE1, None).save(tmp_path / "model.pt")
    result = run("predict", odd_files / "fifo.fits", odd_files / "zero.fits", odd_files / "sparse.fits",
                 "--model", model, "--no-track", "--out", tmp_path / "out", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert sum(line.startswith("unreadable:") for line in result.stderr.splitlines()) == 3


@pytest.mark.parametrize("draws", ["1000000000", "1e9", "20000000"])
def test_absurd_draws_are_one_line_before_any_work(draws, tmp_path):
    result = run("predict", "--draws", draws, "--no-track", "--model", tmp_path / "none.pt", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "draws" in result.stderr
    assert not (tmp_path / "mlruns").exists()


def test_errors_that_cannot_be_true_never_reach_the_clean_view(multi_visit_file, tmp_path):
    """Good-pixel errors of 1e-30 move no prediction: the method's σ is 0 and the row is flagged
    ZERO_SIGMA, never a clean row with TEFF_ERR_MC = 0."""
    from apogeenet.io.apstar import read_apstar, write_apstar

    star = read_apstar(multi_visit_file)
    error = star.error.copy()
    good = (error[0] > 0) & (error[0] < 1e10)
    error[0, good] = 1e-30
    write_apstar(dataclasses.replace(star, error=error), tmp_path / "tiny.fits")
    torch.manual_seed(0)
    model = Predictor(ApogeeNet(3).eval(), TABLE1, None).save(tmp_path / "model.pt")
    result = run("predict", tmp_path / "tiny.fits", multi_visit_file, "--model", model, "--draws", 4,
                 "--no-track", "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    catalog = pd.read_parquet(tmp_path / "out" / "catalog.parquet")
    assert (catalog["FLAGS"] & 64 > 0).tolist() == [True, False]  # only the file with impossible errors
    clean = pd.read_parquet(tmp_path / "out" / "catalog_clean.parquet")
    assert (clean[["TEFF_ERR_MC", "LOGG_ERR_MC", "FE_H_ERR_MC"]] > 0).all().all()


_BUGGY = """
import sys
import numpy as np
import apogeenet.labels.build as build
def broken(*args, **kwargs):
    return np.linalg.inv(np.zeros((2, 2)))  # a genuine bug deep in the code: LinAlgError, a ValueError
build.build_labels = broken
from apogeenet.cli import main
sys.argv = ["apogeenet", "label", "--no-track", "--params", sys.argv[1], "--out", sys.argv[2]]
main()
"""


def test_a_genuine_bug_keeps_its_traceback_and_exit_1(project, tmp_path):
    result = subprocess.run([sys.executable, "-c", _BUGGY, str(project / "params.yaml"), str(tmp_path / "labels")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-1000:]
    assert "Traceback" in result.stderr and "LinAlgError" in result.stderr


def test_a_user_mistake_stays_one_line(tmp_path):
    result = run("ingest", tmp_path / "missing", tmp_path / "store")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no such directory" in result.stderr
    result = run("validate", "--labels", tmp_path / "nothing", "--no-track")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "apogeenet label" in result.stderr


def test_damaged_label_tables_are_named_failing_expectations(project, tmp_path):
    """Labels with text in TEFF, without LOGG or SPLIT, or with an unknown SOURCE: each a named
    failing expectation of `validate` (exit 1), never a traceback; training stays refused."""
    import shutil

    import yaml

    labels = pd.read_parquet(project / "derived" / "labels" / "labels.parquet")
    damaged = {"text_teff": labels.assign(TEFF=labels["TEFF"].astype(str)),
               "no_logg": labels.drop(columns="LOGG"), "no_split": labels.drop(columns="SPLIT"),
               "unknown_source": labels.assign(SOURCE=np.where(np.arange(len(labels)) == 0, "GAIA", labels["SOURCE"]))}
    params = yaml.safe_load((project / "params.yaml").read_text())
    for name, frame in damaged.items():
        directory = tmp_path / name
        shutil.copytree(project / "derived" / "labels", directory)
        frame.to_parquet(directory / "labels.parquet", index=False)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**params, "paths": {
            **params["paths"], "labels": str(directory), "validation": str(tmp_path / f"{name}-validation")}}))
        result = run("validate", "--no-track", "--params", tmp_path / f"{name}.yaml")
        assert result.returncode == 1 and "Traceback" not in result.stderr, (name, result.stderr[-800:])
        result = run("train", "--no-track", "--params", tmp_path / f"{name}.yaml", "--out", tmp_path / f"{name}-model")
        assert result.returncode == 2 and "Traceback" not in result.stderr, (name, result.stderr[-800:])


def test_a_torn_table1_fails_validation(project, tmp_path):
    import shutil

    import yaml

    directory = tmp_path / "labels"
    shutil.copytree(project / "derived" / "labels", directory)
    text = (directory / "table1.json").read_text()
    (directory / "table1.json").write_text(text[: len(text) // 2])
    params = yaml.safe_load((project / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "paths": {
        **params["paths"], "labels": str(directory), "validation": str(tmp_path / "validation")}}))
    result = run("validate", "--no-track", "--params", tmp_path / "params.yaml")
    assert result.returncode == 1 and "table1" in result.stderr + result.stdout


def _saved(tmp_path: Path, name: str, **changes) -> Path:
    """A real model.pt with some of its contents replaced."""
    from apogeenet.domain import DomainReference
    from apogeenet.weights import load_weights, save_weights

    torch.manual_seed(0)
    predictor = Predictor(ApogeeNet(3).eval(), TABLE1, None)
    predictor.domain = DomainReference(np.zeros(512), np.eye(512), 3.0, 0.99)
    saved = load_weights(predictor.save(tmp_path / f"{name}.pt"))
    return save_weights({**saved, **changes}, tmp_path / f"{name}.pt")


@pytest.mark.parametrize("name, changes, reason", [
    ("domain_shape", {"domain": {"mean": [0.0] * 7, "whitening": [[0.0] * 7] * 7, "threshold": 3.0, "quantile": 0.99}},
     "domain reference"),
    ("string_flux_scale", {"flux_scale": "1.0"}, "flux_scale"),
    ("five_outputs", {"n_outputs": 5}, "5 outputs"),
    ("flat_table1", {"table1": {**TABLE1.to_dict(), "teff_std": 0.0}}, "Table 1"),
])
def test_inconsistent_model_files_are_refused_when_opened(tmp_path, name, changes, reason):
    from apogeenet.weights import ModelFileError

    path = _saved(tmp_path, name, **changes)
    with pytest.raises(ModelFileError, match=reason):
        Predictor.load(path)
    result = run("predict", "--no-track", "--model", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and reason in result.stderr


def test_a_damaged_champion_does_not_wedge_the_registry(tmp_path):
    import mlflow
    from factories import tracking_in

    from apogeenet.online import example_input
    from apogeenet.pyfunc import log_and_register
    from apogeenet.registry import load_predictor
    from apogeenet.weights import ModelFileError

    example = example_input(np.ones((1, 8575)), np.ones((1, 8575)), ["2M0"])
    with tracking_in(tmp_path) as uri:
        mlflow.set_tracking_uri(uri)  # not the store or experiment an earlier test in this worker chose
        mlflow.set_experiment("registry")
        torch.manual_seed(0)
        with mlflow.start_run():
            first = log_and_register(Predictor(ApogeeNet(3).eval(), TABLE1, None), example, dev_loss_of=lambda p: 1.0)
        for weights in (tmp_path / "mlruns").rglob("model.pt"):
            weights.write_bytes(b"PK\x03\x04 not a model")  # the champion's weights damaged (or crafted)
        with pytest.raises(ModelFileError, match="models:/apogeenet@champion") as caught:
            load_predictor("models:/apogeenet@champion")
        assert "/tmp" not in str(caught.value).split("models:/")[0]
        with mlflow.start_run():  # a worse model still takes the place of an unreadable champion
            second = log_and_register(Predictor(ApogeeNet(3).eval(), TABLE1, None), example, dev_loss_of=lambda p: 2.0)
    assert first["promoted"] and second["promoted"] and second["champion_version"] == second["version"] == "2"
    assert "version 1" in second["replaced_unusable_champion"]


def _damage(store: Path, how: str) -> None:
    import h5py

    segment = sorted((store / "segments").glob("*.h5"))[0]
    if how == "missing":
        segment.unlink()
    elif how == "truncated":
        segment.write_bytes(segment.read_bytes()[: segment.stat().st_size // 2])
    elif how == "garbage":
        segment.write_bytes(os.urandom(segment.stat().st_size))
    elif how in ("chunked", "wrong_shape"):
        with h5py.File(segment, "r") as h5:
            arrays = {name: h5[name][()] for name in ("flux", "error", "mask")}
        segment.unlink()
        with h5py.File(segment, "w") as h5:
            for name, values in arrays.items():
                if how == "chunked":
                    h5.create_dataset(name, data=values, chunks=True)
                else:
                    h5.create_dataset(name, data=values[:, :100])
    elif how == "offset":
        index = pd.read_parquet(store / "index.parquet")
        index.loc[0, "offset"] = 10_000
        index.to_parquet(store / "index.parquet", index=False)
    elif how == "stat_cache":
        (store / ".stat-cache.parquet").write_bytes(b"garbage")


@pytest.mark.parametrize("how", ["missing", "truncated", "garbage", "chunked", "wrong_shape", "offset", "stat_cache"])
def test_a_damaged_store_is_one_line_to_read_and_repaired_by_the_next_ingest(tree_of_three, tmp_path, how):
    from apogeenet.store import SpectraStore
    from apogeenet.ingest import ingest

    store = tmp_path / "store"
    ingest(tree_of_three, store, workers=1)
    reference = SpectraStore(store).read(np.arange(3))
    _damage(store, how)
    if how != "stat_cache":
        result = run("info", store)
        shown = run("predict", "--store", store, "--no-track", "--model", tmp_path / "m.pt", cwd=tmp_path)
        for outcome in (shown,):
            assert outcome.returncode == 2 and "Traceback" not in outcome.stderr
        with pytest.raises(Exception) as caught:
            SpectraStore(store).read(np.arange(3))
        assert "ingest" in str(caught.value)
        assert result.returncode in (0, 2) and "Traceback" not in result.stderr
    result = run("ingest", tree_of_three, store, "--workers", 1)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert how in ("stat_cache",) or "repaired" in result.stdout
    repaired = SpectraStore(store)
    order = np.argsort(repaired.index["file"].to_numpy())
    for got, expected in zip(repaired.read(order), reference):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ["index.parquet", "rejects.parquet"])
def test_a_garbage_index_or_rejects_table_is_one_line_or_rebuilt(tree_of_three, tmp_path, name):
    from apogeenet.ingest import ingest

    store = tmp_path / "store"
    ingest(tree_of_three, store, workers=1)
    (store / name).write_bytes(b"PAR1 garbage")
    result = run("ingest", tree_of_three, store, "--workers", 1)
    assert "Traceback" not in result.stderr
    if name == "index.parquet":
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
        assert run("info", store).returncode == 2
    else:
        assert result.returncode == 0


@pytest.fixture(scope="module")
def tree_of_three(tmp_path_factory):
    from apogeenet.synth.survey import make_survey

    root = tmp_path_factory.mktemp("three")
    make_survey(root, 3, seed=4, fractions={"giant": 1.0})
    return root / "apStar"


def test_a_trickling_server_cannot_hold_a_download_forever(fake_sas, multi_visit_file, tmp_path):
    import time as clock

    from sas_server import Faults

    from apogeenet.io.sas import DownloadJob, download_files

    path = "sas/dr17/apogee/spectro/redux/dr17/stars/apo25m/120-45/apStar-dr17-2M00452143+1634446.fits"
    fake_sas.files[path] = multi_visit_file.read_bytes()
    fake_sas.faults[path] = Faults(trickle_s=0.05)  # 20 bytes/s: never a 60 s silence
    started = clock.monotonic()
    [result] = download_files([DownloadJob(f"{fake_sas.url}/{path[4:]}", tmp_path / "a.fits")], backoff_s=0.01,
                              deadline_s=2.0)
    assert clock.monotonic() - started < 15
    assert result.status == "failed" and "deadline" in result.error and not (tmp_path / "a.fits").exists()


def test_download_catalog_has_a_size_cap(fake_sas, tmp_path):
    import yaml

    path = "sas/dr17/apogee/spectro/aspcap/dr17/synspec_rev1/allStar-dr17-synspec_rev1.fits"
    fake_sas.files[path] = b"SIMPLE  =" + b" " * (3 * 2**20)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"download": {"max_catalog_mb": 1, "retries": 0}}))
    result = run("download-catalog", "--out", tmp_path / "out", "--base-url", fake_sas.url,
                 "--params", tmp_path / "params.yaml")
    assert result.returncode == 1 and "cap" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


_REFUSED = """
import errno, sys
import {module} as target
def refused(*args, **kwargs):
    raise OSError(errno.{code}, {message!r}, {filename!r})
target.{name} = refused
from apogeenet.cli import main
sys.argv = ["apogeenet", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("module, name, code, message", [
    ("apogeenet.ingest", "write_segment", "ENOSPC", "No space left on device"),       # a full disk in ingest
    ("apogeenet.mlflow_store", "tracking_lock", "EROFS", "Read-only file system"),       # a read-only tracking store
])
def test_a_machine_that_refuses_to_write_gets_one_line_and_exit_3(multi_visit_file, tmp_path, module, name, code,
                                                                  message):
    script = _REFUSED.format(module=module, name=name, code=code, message=message, filename=str(tmp_path / "x"))
    args = (["ingest", str(multi_visit_file.parent), str(tmp_path / "store")] if name == "write_segment" else
            ["predict", str(multi_visit_file), "--model", str(_saved(tmp_path, "ok")), "--draws", "3",
             "--out", str(tmp_path / "out")])
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 3, result.stderr[-1500:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # besides progress bars
    assert "Traceback" not in result.stderr and len(errors) == 1 and message in errors[0]
