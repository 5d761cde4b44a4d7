"""The train/adapt deployments served against a real local Prefect server: a run through the
server trains, calibrates, logs to MLflow and registers a new version."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited: {process.stdout.read()}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError("prefect server did not become healthy")


@pytest.mark.slow
def test_served_adapt_deployment_runs_and_logs_to_mlflow(trained, tmp_path):
    root, mlflow_env = trained
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **mlflow_env, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    prefect = [sys.executable, "-m", "prefect"]
    server = subprocess.Popen([*prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                               "--analytics-off", "--no-ui"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = None
    try:
        _wait_healthy(api, server)
        served = subprocess.Popen([sys.executable, "-m", "flows.serve", str(root / "params.yaml")], env=env,
                                  cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run = None
        for _ in range(120):  # the deployment exists once `serve` has registered it
            run = subprocess.run([*prefect, "deployment", "run", "train/adapt", "--watch",
                                  "--watch-timeout", "300"], env=env, cwd=tmp_path,
                                 capture_output=True, text=True)
            if "not found" not in run.stdout + run.stderr:
                break
            time.sleep(1)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Completed" in run.stdout
    finally:
        for process in (served, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    import mlflow

    mlflow.set_tracking_uri(mlflow_env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["train"], filter_string="attributes.run_name = 'adapt'")
    assert len(runs) == 1 and runs["status"][0] == "FINISHED"
    assert runs["tags.init_model"][0] == "models:/apogeenet@champion"
    versions = mlflow.MlflowClient().search_model_versions("name='apogeenet'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    # the champion is an ensemble of two: each member adapted on its own, one nested run per round
    assert {v.tags["members"] for v in versions} == {"2"}
    rounds = mlflow.search_runs(experiment_names=["train"], filter_string="attributes.run_name LIKE 'member %'")
    assert sorted(rounds["tags.mlflow.runName"]) == ["member 0 round 0", "member 1 round 0"]
    from apogeenet.registry import registered_versions

    os.environ["MLFLOW_TRACKING_URI"], saved = mlflow_env["MLFLOW_TRACKING_URI"], os.environ.get("MLFLOW_TRACKING_URI")
    try:
        listed = registered_versions()
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if saved is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", saved)
    assert [v["version"] for v in listed] == ["2", "1"] and "candidate" in listed[0]["aliases"]
    assert sum("champion" in v["aliases"] for v in listed) == 1 and listed[1]["run_name"] == "calibrate"
    from apogeenet.serving import Predictor

    assert len(Predictor.load(root / "adapted" / "model.pt").members) == 2
