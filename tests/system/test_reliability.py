"""Hostile input, kills and races (issue [1 of 5]): a file is data, never code, never a path
outside the output; a kill at a dangerous moment loses nothing; bad input gets one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import TABLE1
from commands import run

from apogeenet.model import ApogeeNet
from apogeenet.serving import Predictor
from apogeenet.weights import ModelFileError
from apogeenet.train import load_checkpoint


class _Payload:
    """Unpickling this runs a shell command: what a crafted model.pt would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_model(path: Path, marker: Path) -> Path:
    """A model.pt that looks real (weights, Table 1) but carries a payload."""
    weights = {k: v for k, v in ApogeeNet(3).state_dict().items()}
    torch.save({"model": weights, "table1": TABLE1.to_dict(), "flux_scale": 1.0, "hook": _Payload(marker)},
               path)
    return path


# ------------------------------------------------------------------------------ no code from files


def test_a_crafted_model_file_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = _crafted_model(tmp_path / "model.pt", marker)
    with pytest.raises(ModelFileError, match="refused without running it"):
        Predictor.load(evil)
    assert load_checkpoint(evil) is None  # a planted checkpoints/last.pt: training starts afresh
    assert not marker.exists()


@pytest.mark.parametrize("command", [["predict", "--no-track", "--model"], ["evaluate", "--no-track", "--model"],
                                     ["train", "--no-track", "--init"]])
def test_a_crafted_model_file_gets_one_line_and_exit_2(command, project, tmp_path):
    marker = tmp_path / "pwned"
    evil = _crafted_model(tmp_path / "evil.pt", marker)
    result = run(*command, evil, "--out", tmp_path / "out", "--params", project / "params.yaml", cwd=tmp_path)
    assert not marker.exists(), "the payload ran"
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_real_model_and_checkpoints_load_as_plain_weights(tmp_path):
    predictor = Predictor(ApogeeNet(3), TABLE1, flux_scale=None)
    back = Predictor.load(predictor.save(tmp_path / "model.pt"))
    # reproducible bytes (dvc.lock): the temporary name of the atomic write leaves no trace
    assert predictor.save(tmp_path / "other.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()
    assert all(torch.equal(v, back.model.state_dict()[k]) for k, v in predictor.model.state_dict().items())
    torch.save({"model": predictor.model.state_dict(), "rng": {"cpu": torch.get_rng_state()}}, tmp_path / "last.pt")
    assert set(load_checkpoint(tmp_path / "last.pt")) == {"model", "rng"}


# ------------------------------------------------------------------------- downloads stay inside


def _sas_file(fake_sas, source: Path, field: str = "120-45", apogee_id: str = "2M00452143+1634446") -> str:
    path = f"sas/dr17/apogee/spectro/redux/dr17/stars/apo25m/{field}/apStar-dr17-{apogee_id}.fits"
    fake_sas.files[path] = source.read_bytes()
    return path


@pytest.mark.parametrize("column, value", [("APOGEE_ID", "../../../escaped"), ("FIELD", "../.."),
                                           ("TELESCOPE", ".."), ("FIELD", "/etc"), ("APOGEE_ID", "a/b")])
def test_catalog_rows_with_path_parts_are_refused_and_the_rest_downloaded(
        fake_sas, multi_visit_file, tmp_path, column, value):
    import pandas as pd

    from apogeenet.io.sas import apstar_jobs, download_files

    _sas_file(fake_sas, multi_visit_file)
    catalog = pd.DataFrame({"APOGEE_ID": ["2M00452143+1634446", "2MX"], "TELESCOPE": "apo25m", "FIELD": "120-45"})
    catalog.loc[1, column] = value
    out = tmp_path / "deep" / "out"
    results = download_files(apstar_jobs(catalog, "dr17", out, base_url=fake_sas.url), backoff_s=0.01)
    assert [r.status for r in results] == ["downloaded", "failed"]
    assert "unsafe" in results[1].error
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert written and all(p.is_relative_to(out) for p in written)
    assert len(fake_sas.requests) == 1  # the refused row never reached the server


def test_a_link_inside_the_output_cannot_lead_outside(fake_sas, multi_visit_file, tmp_path):
    from apogeenet.io.sas import DownloadJob, download_files

    path = _sas_file(fake_sas, multi_visit_file)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "apo25m").mkdir(parents=True)
    elsewhere.mkdir()
    (out / "apo25m" / "120-45").symlink_to(elsewhere)
    dest = out / "apo25m" / "120-45" / "apStar.fits"
    [result] = download_files([DownloadJob(f"{fake_sas.url}/{path[4:]}", dest, out)], backoff_s=0.01)
    assert result.status == "failed" and "outside the output directory" in result.error
    assert not list(elsewhere.iterdir())


def test_redirects_to_another_host_are_refused_unless_allowed(fake_sas, multi_visit_file, tmp_path):
    from sas_server import Faults

    from apogeenet.io.sas import DownloadJob, download_files

    real = _sas_file(fake_sas, multi_visit_file)
    port = fake_sas.url.split(":")[2].split("/")[0]
    fake_sas.faults["sas/moved.fits"] = Faults(redirect=f"/{real}")  # same host: followed
    fake_sas.faults["sas/away.fits"] = Faults(redirect=f"http://localhost:{port}/{real}")  # another host name
    jobs = [DownloadJob(f"{fake_sas.url}/{name}", tmp_path / name, tmp_path) for name in ("moved.fits", "away.fits")]
    same, away = download_files(jobs, backoff_s=0.01)
    assert same.status == "downloaded"
    assert away.status == "failed" and "another host 'localhost'" in away.error
    assert not (tmp_path / "away.fits").exists() and not (tmp_path / "away.fits.part").exists()
    [allowed] = download_files(jobs[1:], backoff_s=0.01, allowed_hosts=["localhost"])
    assert allowed.status == "downloaded"


@pytest.mark.parametrize("chunked", [False, True])
def test_bodies_over_the_size_cap_are_discarded(fake_sas, multi_visit_file, tmp_path, chunked):
    from sas_server import Faults

    from apogeenet.io.sas import DownloadJob, download_files

    path = _sas_file(fake_sas, multi_visit_file)
    fake_sas.faults[path] = Faults(chunked=chunked)  # chunked: no Content-Length to check first
    job = DownloadJob(f"{fake_sas.url}/{path[4:]}", tmp_path / "a.fits", tmp_path)
    [result] = download_files([job], backoff_s=0.01, max_bytes=100_000)
    assert result.status == "failed" and "cap" in result.error
    assert not list(tmp_path.iterdir())
    [result] = download_files([job], backoff_s=0.01, max_bytes=10_000_000)
    assert result.status == "downloaded"


# ------------------------------------------------------------------------------ kills lose nothing


def _killed_at(target: str, nth: int, call: str, *, half_write: bool = False) -> None:
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
                            cwd=Path(__file__).parents[1] / "support")
    assert result.returncode == -9, f"the child was not killed: {result.returncode} {result.stderr[-1500:]}"


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    from apogeenet.synth.survey import make_survey

    root = tmp_path_factory.mktemp("tree")
    make_survey(root, 12, seed=3, fractions={"giant": 0.5, "mdwarf": 0.5})
    return root / "apStar"


def _same_store(a: Path, b: Path) -> None:
    from apogeenet.store import SpectraStore

    one, two = SpectraStore(a), SpectraStore(b)
    assert (a / "index.parquet").read_bytes() == (b / "index.parquet").read_bytes()
    assert (a / "rejects.parquet").read_bytes() == (b / "rejects.parquet").read_bytes()
    rows = np.arange(len(one))
    for x, y in zip(one.read(rows), two.read(rows)):
        np.testing.assert_array_equal(x, y)
    assert sorted(p.name for p in (a / "segments").iterdir()) == sorted(p.name for p in (b / "segments").iterdir())


@pytest.mark.parametrize("target, nth", [
    ("h5py:Group.create_dataset", 2),             # inside the first segment's write
    ("apogeenet.store:_write_atomic", 1),         # segment written, index not yet: an orphan segment
    ("h5py:Group.create_dataset", 5),             # inside the second segment's write
])
def test_ingest_killed_at_a_dangerous_moment_then_rerun_equals_an_uninterrupted_one(small_tree, tmp_path, target, nth):
    from apogeenet.store import ingest

    ingest(small_tree, tmp_path / "clean", workers=1, segment_rows=5)
    _killed_at(target, nth, f"from apogeenet.store import ingest\n"
                            f"ingest({str(small_tree)!r}, {str(tmp_path / 'killed')!r}, workers=1, segment_rows=5)")
    report = ingest(small_tree, tmp_path / "killed", workers=1, segment_rows=5)
    assert report.rejected == 0
    _same_store(tmp_path / "clean", tmp_path / "killed")
    assert not [p for p in (tmp_path / "killed" / "segments").iterdir() if p.name.startswith(".")]


def test_a_second_ingest_at_the_same_time_gets_one_line(small_tree, tmp_path):
    from filelock import FileLock

    store = tmp_path / "store"
    store.mkdir()
    with FileLock(str(store / ".ingest.lock")):  # an ingest in progress
        result = run("ingest", small_tree, store, cwd=tmp_path)
    assert result.returncode == 2 and "another ingest is writing to this store" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert run("ingest", small_tree, store, cwd=tmp_path).returncode == 0  # and afterwards it runs


# ------------------------------------------------------------------------ bad input: a reject row


@pytest.fixture()
def odd_tree(small_tree, tmp_path):
    """The small tree plus an odd name, a dangling link, a link loop and a linked directory loop."""
    root = tmp_path / "src"
    import shutil

    shutil.copytree(small_tree, root, symlinks=True)
    good = sorted(root.rglob("*.fits"))[0]
    odd = os.fsencode(root / "odd") + b"/caf\xe9.fits"
    os.makedirs(os.fsencode(root / "odd"))
    with open(odd, "wb") as fh:
        fh.write(good.read_bytes())
    (root / "links").mkdir()
    (root / "links" / "dangling.fits").symlink_to(root / "nowhere.fits")
    (root / "links" / "loop.fits").symlink_to(root / "links" / "loop.fits")
    (root / "links" / "up").symlink_to(root)
    return root


def test_odd_names_and_links_become_reject_rows_and_reruns_do_not_grow_the_store(odd_tree, tmp_path):
    from apogeenet.store import SpectraStore, ingest

    first = ingest(odd_tree, tmp_path / "store", workers=1)
    reasons = dict(first.rejects)
    assert reasons == {"links/dangling.fits": "dangling symbolic link", "links/loop.fits": "symbolic link loop",
                       "links/up": "symbolic link loop: a directory already scanned",
                       "odd/caf\\xe9.fits": "file name is not valid UTF-8: rename the file"}
    assert len(SpectraStore(tmp_path / "store")) == 12
    segments = sorted((tmp_path / "store" / "segments").iterdir())
    again = ingest(odd_tree, tmp_path / "store", workers=1)
    assert not again.did_work and sorted((tmp_path / "store" / "segments").iterdir()) == segments


def test_an_unreadable_directory_is_a_reject_row(small_tree, tmp_path, monkeypatch):
    from apogeenet import store as store_module

    blocked = sorted(p for p in small_tree.rglob("*") if p.is_dir())[0]
    real_scandir = os.scandir

    def scandir(path):  # chmod 000 does not stop root, so the refusal is simulated
        if Path(path) == blocked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(store_module.os, "scandir", scandir)
    report = store_module.ingest(small_tree, tmp_path / "store", workers=1)
    name = blocked.relative_to(small_tree).as_posix() + "/"
    assert dict(report.rejects) == {name: "cannot read directory: Permission denied"}


@pytest.fixture(scope="module")
def labelled(small_tree, tmp_path_factory):
    """A store of the small tree and a label catalog with train and dev splits."""
    from apogeenet.io.tables import read_table
    from apogeenet.labels.catalog import combine_labels
    from apogeenet.store import ingest

    root = tmp_path_factory.mktemp("labelled")
    ingest(small_tree, root / "store", workers=1)
    truth = read_table(small_tree.parent / "truth-synth.fits")
    catalog = combine_labels({"PAYNE": truth[["APOGEE_ID", "TEFF", "LOGG", "FE_H"]]})
    catalog["SPLIT"] = np.where(np.arange(len(catalog)) % 4 == 0, "dev", "train")
    catalog.to_parquet(root / "labels.parquet")
    return root / "store", root / "labels.parquet"


@pytest.mark.slow
@pytest.mark.parametrize("nth", [2, 3])  # 2: last.pt of epoch 0 … 3: best.pt of epoch 1
def test_training_killed_while_saving_resumes_to_the_uninterrupted_result(labelled, tmp_path, nth):
    from training_worker import train

    store, catalog = labelled
    clean = train(store, catalog, tmp_path / "clean")
    _killed_at("torch:save", nth, f"from training_worker import train\n"
                                  f"train({str(store)!r}, {str(catalog)!r}, {str(tmp_path / 'killed')!r})",
               half_write=True)
    from apogeenet.weights import load_weights

    for checkpoint in (tmp_path / "killed").glob("[!.]*.pt"):  # none is torn: old or new, never half
        load_weights(checkpoint)
    resumed = train(store, catalog, tmp_path / "killed")
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["best.pt", "last.pt"]
    assert [h["dev_loss"] for h in resumed.history] == [h["dev_loss"] for h in clean.history]
    assert (resumed.best_dev_loss, resumed.best_epoch) == (clean.best_dev_loss, clean.best_epoch)
    for name, weights in clean.model.state_dict().items():
        assert torch.equal(weights, resumed.model.state_dict()[name]), name


@pytest.mark.slow
def test_a_killed_mlflow_run_is_marked_killed_by_the_next(tmp_path, monkeypatch):
    import mlflow

    from apogeenet.tracking import mlflow_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    child = ("import os, signal\nfrom apogeenet.tracking import mlflow_run\n"
             f"with mlflow_run('stage', 'doomed', root={str(tmp_path)!r}):\n"
             "    os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert result.returncode == -9
    with mlflow_run("stage", "next", root=tmp_path):
        pass
    runs = mlflow.search_runs(experiment_names=["stage"], output_format="list")
    assert {r.info.run_name: r.info.status for r in runs} == {"doomed": "KILLED", "next": "FINISHED"}


# --------------------------------------------------------------------- gates that cannot be skipped


@pytest.fixture()
def project_copy(project, tmp_path):
    import shutil

    import yaml

    root = tmp_path / "project"
    shutil.copytree(project, root, symlinks=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["paths"] = {k: v.replace(str(project), str(root)) for k, v in params["paths"].items()}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_the_same_star_in_two_files_fails_validation_and_trains_once(project_copy):
    import json
    import shutil

    from apogeenet.config import load_params
    from apogeenet.pipeline import validate
    from apogeenet.pipeline.common import training_data
    from factories import settings
    from apogeenet.store import ingest

    cfg = load_params(project_copy / "params.yaml")
    first = sorted(cfg.paths.spectra.rglob("*.fits"))[0]
    shutil.copy(first, first.with_name("copy-" + first.name))
    ingest(cfg.paths.spectra, cfg.paths.store, workers=1)
    report = validate.run(settings(cfg, track=False))
    assert not report.passed and report.metrics["spectra_store/passed"] == 0
    failures = json.loads((cfg.paths.validation / "summary.json").read_text())["failures"]
    assert [(f["suite"], f["expectation"]) for f in failures] == [("spectra_store", "expect_column_values_to_be_unique")]
    allowed = cfg.with_overrides({"validation.allow_duplicate_stars": True})
    assert validate.run(settings(allowed, track=False)).passed
    data = training_data(allowed)
    assert data.catalog["APOGEE_ID"].is_unique and len(set(data.rows)) == len(data.rows)


def test_labels_changed_after_validation_do_not_train(project_copy):
    import pandas as pd

    labels = project_copy / "derived" / "labels" / "labels.parquet"
    frame = pd.read_parquet(labels)
    frame.loc[0, "TEFF"] = np.nan  # a NaN label slipped in after the gates ran
    frame.to_parquet(labels)
    result = run("train", "--no-track", "--params", project_copy / "params.yaml", cwd=project_copy)
    assert result.returncode == 2 and "changed since they were validated" in result.stderr


# -------------------------------------------------------------- a corpus of damaged and odd spectra


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


def _prediction_setup(source: Path, root: Path) -> tuple[Path, Path]:
    """A store of ``source``, a params.yaml whose catalog goes to ``root/catalog``, an untrained model."""
    import yaml

    from apogeenet.store import ingest

    ingest(source, root / "store", workers=1)
    (root / "params.yaml").write_text(yaml.safe_dump({"paths": {
        "store": str(root / "store"), "labels": str(root / "none"), "truth": None,
        "catalog": str(root / "catalog")}}))
    torch.manual_seed(0)
    return root / "params.yaml", Predictor(ApogeeNet(3), TABLE1, flux_scale=None).save(root / "model.pt")


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
    params, model = _prediction_setup(source, tmp_path)
    predict.run(settings(load_params(params), model=str(model), draws=3, track=False))
    catalog = pd.read_parquet(tmp_path / "catalog" / "catalog.parquet").set_index("APOGEE_ID")
    ids = [read_apstar(source / p.name).apogee_id for p in good]
    flags = catalog.loc[ids, "FLAGS"].to_numpy()
    assert flags[0] & 4 == 0 and all(f & 4 for f in flags[1:])  # FEW_PIXELS
    assert catalog.loc[ids, "N_GOOD_PIXELS"].tolist()[1:3] == [0, 1]
    clean = pd.read_parquet(tmp_path / "catalog" / "catalog_clean.parquet")
    assert not set(ids[1:]) & set(clean["APOGEE_ID"])


@pytest.mark.slow
@pytest.mark.parametrize("nth", [1, 2])  # after the catalog's FITS and Parquet, in the clean view's files
def test_a_kill_while_writing_the_catalog_leaves_the_previous_one_whole(small_tree, tmp_path, nth):
    import pandas as pd

    from apogeenet.config import load_params
    from apogeenet.pipeline import predict
    from factories import settings

    params, model = _prediction_setup(small_tree, tmp_path)
    cfg = load_params(params)
    predict.run(settings(cfg, model=str(model), draws=3, track=False))  # run A
    catalog = tmp_path / "catalog"
    before = {p.name: p.read_bytes() for p in catalog.glob("catalog*")}
    _killed_at("pandas:DataFrame.to_csv", nth,  # run B, another seed, killed while writing
               f"from apogeenet.config import load_params\nfrom apogeenet.pipeline import predict\n"
               f"predict.run(load_params({str(params)!r}).with_overrides({{'predict.seed': 1, 'predict.model': "
               f"{str(model)!r}, 'predict.draws': 3, 'tracking.enabled': False}}))")
    assert {p.name: p.read_bytes() for p in catalog.glob("catalog*")} == before  # A, whole, nothing of B
    seeded = cfg.with_overrides({"predict.seed": 1})
    predict.run(settings(seeded, model=str(model), draws=3, track=False))  # rerun B
    predict.run(settings(seeded, model=str(model), out_dir=tmp_path / "uninterrupted", draws=3, track=False))
    for name in ("catalog.parquet", "catalog_clean.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(catalog / name), pd.read_parquet(tmp_path / "uninterrupted" / name))


# ------------------------------------------------------------------------------------------ races


@pytest.mark.slow
def test_two_registrations_at_once_leave_the_better_model_champion(tmp_path):
    """A champion exists; two better models register 0.3 s apart, and measuring a model takes 1 s.
    Both used to measure the old champion at the same time and both promote themselves: the one
    that finished last (the worse) ended as champion."""
    import mlflow

    from apogeenet.registry import MODEL_NAME

    worker = Path(__file__).parents[1] / "support" / "registration_worker.py"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(worker.parent)}
    first = subprocess.run([sys.executable, str(worker), str(tmp_path), "0.95"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    better = subprocess.Popen([sys.executable, str(worker), str(tmp_path), "0.5"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time

    time.sleep(0.3)
    worse = subprocess.Popen([sys.executable, str(worker), str(tmp_path), "0.9"], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for process in (better, worse):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.tags["dev_loss"] == "0.25"
    assert {v.tags["dev_loss"] for v in client.search_model_versions(f"name='{MODEL_NAME}'")} == {
        "0.9025", "0.25", "0.81"}


@pytest.mark.slow
def test_a_registration_killed_after_the_version_is_created_leaves_it_tagged(tmp_path):
    import mlflow

    from apogeenet.registry import MODEL_NAME

    worker = Path(__file__).parents[1] / "support" / "registration_worker.py"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(worker.parent)}
    script = ("import os, runpy, signal, sys\nimport mlflow\nregister = mlflow.register_model\n"
              "def register_then_die(*args, **kwargs):\n    version = register(*args, **kwargs)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "mlflow.register_model = register_then_die\n"
              f"sys.argv = [{str(worker)!r}, {str(tmp_path)!r}, '0.5']\n"
              f"runpy.run_path({str(worker)!r}, run_name='__main__')\n")
    killed = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    again = subprocess.run([sys.executable, str(worker), str(tmp_path), "0.7"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert sorted(v.tags.get("dev_loss") for v in versions) == ["0.25", "0.49"]  # no version without its tag
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").tags["dev_loss"] == "0.49"
    runs = mlflow.search_runs(experiment_names=["race"], output_format="list")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
