"""Online scoring (apogeenet.online, the registered pyfunc, `apogeenet serve-model`): a posted
spectrum gets the catalog's own row — value, σ, FLAGS —, an unusable one a flag and no number,
a wrong request one line, and the real MLflow scoring server answers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from commands import EXE
from factories import TABLE1, settings
from kills import prediction_setup
from tolerances import output_atol, sigma_atol

from apogeenet.calibration import SigmaCalibration
from apogeenet.errors import InputError, UserFacingError
from apogeenet.io.apstar import read_apstar
from apogeenet.model import ApogeeNet, prepare_flux, scale_flux
from apogeenet.online import MAX_SPECTRA, OUTPUT_COLUMNS, example_input, score
from apogeenet.serving import Predictor

PARAMETERS = ("TEFF", "LOGG", "FE_H")
CALIBRATION = SigmaCalibration("monte_carlo", "truth", {"all": dict.fromkeys(PARAMETERS, [2.0, 0.0, 8.0])})


def calibrated_model() -> Predictor:
    torch.manual_seed(0)
    return Predictor(ApogeeNet(3).eval(), TABLE1, None, calibrations={"monte_carlo": CALIBRATION})


def request_of(paths: list[Path]) -> pd.DataFrame:
    stars = [read_apstar(p) for p in paths]
    frame = example_input(np.stack([s.combined_flux for s in stars]), np.stack([s.combined_error for s in stars]),
                          [s.apogee_id for s in stars])
    frame["snr"] = [s.snr for s in stars]
    return frame


@pytest.mark.floats
def test_a_posted_spectrum_gets_its_catalog_row(multi_visit_file, single_visit_file, tmp_path):
    """The same files through `predict` (store, shards, catalog) and posted under their
    APOGEE_IDs: the same values, σ (same noise keys) and flags, within float32 rounding."""
    from apogeenet.config import load_params
    from apogeenet.pipeline import predict

    source = tmp_path / "src"
    source.mkdir()
    files = [multi_visit_file, single_visit_file]
    for path in files:
        (source / path.name).write_bytes(path.read_bytes())
    params, _ = prediction_setup(source, tmp_path)
    predictor = calibrated_model()
    model = predictor.save(tmp_path / "calibrated.pt")
    predict.run(settings(load_params(params), model=str(model), draws=4, track=False))
    catalog = pd.read_parquet(tmp_path / "catalog" / "catalog.parquet").set_index("APOGEE_ID")
    request = request_of(files)
    online = score(predictor, request, {"draws": 4}).set_index("APOGEE_ID")
    assert list(online.reset_index().columns) == OUTPUT_COLUMNS
    rows = catalog.loc[online.index]
    flux = np.stack(request["flux"].map(lambda v: np.asarray(v, float)))
    error = np.stack(request["error"].map(lambda v: np.asarray(v, float)))
    bound = output_atol(predictor.first, scale_flux(torch.from_numpy(prepare_flux(flux, error)), None)) * TABLE1.std
    for k, name in enumerate(PARAMETERS):
        np.testing.assert_allclose(online[name], rows[name], rtol=0, atol=2 * bound[:, k].max())
        sigma_bound = 2 * sigma_atol(bound, 4)[k]
        np.testing.assert_allclose(online[f"{name}_ERR_MC"], rows[f"{name}_ERR_MC"], rtol=0, atol=sigma_bound)
        np.testing.assert_allclose(online[f"{name}_ERR"], 2 * online[f"{name}_ERR_MC"], rtol=1e-12)
    assert online["FLAGS"].tolist() == rows["FLAGS"].tolist()
    assert online["N_GOOD_PIXELS"].tolist() == rows["N_GOOD_PIXELS"].tolist()
    np.testing.assert_allclose(online["SNR"], rows["SNR"], rtol=1e-6)


def test_a_spectrum_without_usable_pixels_is_flagged_with_no_number(multi_visit_file):
    request = request_of([multi_visit_file, multi_visit_file, multi_visit_file])
    request.at[1, "flux"] = [None] * 8575                     # all NaN (null in JSON)
    request.at[2, "error"] = [1e10] * 8575                    # the bad-pixel sentinel everywhere
    request["apogee_id"] = ["good", "nan", "sentinel"]
    out = score(calibrated_model(), request, {"draws": 4})
    assert out["FLAGS"].tolist()[0] & 4 == 0 and all(f & 4 for f in out["FLAGS"].tolist()[1:])
    assert out.loc[1:, ["TEFF", "LOGG", "FE_H", "TEFF_ERR", "TEFF_ERR_MC"]].isna().all().all()
    assert out.loc[0, ["TEFF", "TEFF_ERR"]].notna().all() and out["N_GOOD_PIXELS"].tolist()[1:] == [0, 0]
    assert out.loc[1:, "FLAG_NAMES"].str.contains("FEW_PIXELS").all()


@pytest.mark.parametrize(("change", "words"), [
    (lambda r: r.assign(flux=[[1.0] * 100]), "row 0: flux has 100 values"),
    (lambda r: r.drop(columns="error"), "no column error"),
    (lambda r: r.assign(flux=["abc"]), "row 0: flux"),
    (lambda r: pd.concat([r] * (MAX_SPECTRA + 1), ignore_index=True), f"post 1 to {MAX_SPECTRA}"),
])
def test_a_wrong_request_is_one_line(change, words, multi_visit_file):
    with pytest.raises(InputError) as caught:
        score(calibrated_model(), change(request_of([multi_visit_file])))
    assert words in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("settings_", "words"), [({"uncertainty": "magic"}, "uncertainty"),
                                                  ({"draws": 10**9}, "draws"), ({"workers": 3}, "unknown setting")])
def test_wrong_settings_are_one_line(settings_, words, multi_visit_file):
    with pytest.raises(UserFacingError) as caught:
        score(calibrated_model(), request_of([multi_visit_file]), settings_)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_scoring_needs_only_the_logged_requirements():
    """In a fresh process, the pyfunc's code imports no distribution beyond the logged
    requirements, MLflow and what those import: an environment built from them can score."""
    from apogeenet.pyfunc import SCORING_PACKAGES

    modules = {"pyyaml": "yaml", "astropy": "astropy.table"}  # astropy.table imports its optional helpers
    probe = ("import importlib, importlib.metadata as md, re, sys, json\n"
             "owners = md.packages_distributions()\n"
             "def loaded(): return {re.sub(r'[-_.]+', '-', d).lower() for m in list(sys.modules)"
             " for d in owners.get(m.split('.')[0], [])}\n"
             f"for name in {[modules.get(p, p) for p in SCORING_PACKAGES] + ['mlflow.pyfunc', 'astropy.io.fits', 'astropy.units']!r}:\n"
             "    importlib.import_module(name)\n"  # they and whatever they import where it is installed
             "before = loaded()\n"
             "import apogeenet.mlflow_model, apogeenet.online\n"
             "print(json.dumps(sorted(loaded() - before - {'apogeenet'})))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                           env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}).stdout.strip().splitlines()[-1]
    assert json.loads(found) == [], f"scoring imports {found}: not installed by the model's requirements"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_the_served_champion_answers_with_sigma_and_flags(multi_visit_file, tmp_path):
    """`apogeenet serve-model` (mlflow models serve of models:/apogeenet@champion) on 127.0.0.1:
    a posted spectrum gets σ and FLAGS, an all-NaN one a flag and no number, a wrong shape one
    line with status 400."""
    from apogeenet.pyfunc import log_and_register
    from apogeenet.tracking import mlflow_run

    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "MLFLOW_DISABLE_TELEMETRY": "true"}
    request = request_of([multi_visit_file])
    os.environ["MLFLOW_TRACKING_URI"] = store
    try:
        with mlflow_run("train", "calibrate", root=tmp_path / "mlruns"):
            log_and_register(calibrated_model(), request, dev_loss_of=lambda predictor: 1.0)
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    port = _free_port()
    server = subprocess.Popen([EXE, "serve-model", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the scoring server did not start:\n{server.stdout.read() if server.poll() is not None else ''}")
                time.sleep(1)
        spectrum = request.iloc[0]
        body = {"dataframe_split": {"columns": ["flux", "error", "apogee_id"],
                                    "data": [[spectrum["flux"], spectrum["error"], spectrum["apogee_id"]],
                                             [[None] * 8575, spectrum["error"], "2M-no-data"]]},
                "params": {"draws": 4}}
        status, answer = _post(f"http://127.0.0.1:{port}/invocations", body)
        assert status == 200, answer
        rows = pd.DataFrame(answer["predictions"])
        assert list(rows.columns) == OUTPUT_COLUMNS
        good, empty = rows.iloc[0], rows.iloc[1]
        assert np.isfinite([good["TEFF"], good["TEFF_ERR"], good["LOGG_ERR"], good["FE_H_ERR"]]).all()
        assert good["FLAGS"] & 4 == 0 and empty["FLAGS"] & 4 and "FEW_PIXELS" in empty["FLAG_NAMES"]
        assert empty["TEFF"] is None or not np.isfinite(empty["TEFF"])
        expected = score(calibrated_model(), request, {"draws": 4})
        assert good["TEFF"] == pytest.approx(expected.loc[0, "TEFF"], abs=1e-3)
        status, answer = _post(f"http://127.0.0.1:{port}/invocations",
                               {"dataframe_records": [{"flux": [1.0] * 10, "error": [1.0] * 10}]})
        assert status == 400 and "row 0: flux has 10 values" in answer["message"]
        assert "\n" not in answer["message"].strip()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
