"""The train/adapt deployments served against a real local Prefect server: a run through the
server trains, calibrates, logs to MLflow and registers a new version."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

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


PREFECT = [sys.executable, "-m", "prefect"]


@contextmanager
def prefect_server(tmp_path, extra_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A real Prefect server on a free port of 127.0.0.1 for one test; yields the environment
    that points at it (with ``extra_env``)."""
    api = f"http://127.0.0.1:{_free_port()}/api"
    env = {**os.environ, **extra_env, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    port = api.split(":")[2].split("/")[0]
    server = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port,
                               "--analytics-off", "--no-ui"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_healthy(api, server)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_served_adapt_deployment_runs_and_logs_to_mlflow(trained, tmp_path):
    root, mlflow_env = trained
    with prefect_server(tmp_path, {**mlflow_env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}) as env:
        served = subprocess.Popen([sys.executable, "-m", "flows.serve", str(root / "params.yaml")], env=env,
                                  cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            run = None
            for _ in range(120):  # the deployment exists once `serve` has registered it
                run = subprocess.run([*PREFECT, "deployment", "run", "train/adapt", "--watch",
                                      "--watch-timeout", "300"], env=env, cwd=tmp_path,
                                     capture_output=True, text=True)
                if "not found" not in run.stdout + run.stderr:
                    break
                time.sleep(1)
        finally:
            served.terminate()
            served.wait(timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Completed" in run.stdout
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


@pytest.mark.slow
def test_prefect_yaml_deploys_to_a_process_work_pool_and_a_worker_runs_it(trained, tmp_path):
    """prefect.yaml: `prefect deploy --all` from the project directory registers the six
    deployments on the process pool `apogeenet` (typed parameters with descriptions and defaults),
    and a worker runs evaluate/evaluate there."""
    from pathlib import Path

    root, mlflow_env = trained
    recipe = Path(__file__).resolve().parents[2] / "prefect.yaml"
    with prefect_server(tmp_path, {**mlflow_env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PWD": str(root)}) as env:
        for command in (["work-pool", "create", "apogeenet", "--type", "process"],
                        ["--no-prompt", "deploy", "--all", "--prefect-file", str(recipe)]):
            done = subprocess.run([*PREFECT, *command], env=env, cwd=root, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
            deployments = {d.name: d for d in client.read_deployments()}
        assert set(deployments) == {"pretrain", "adapt", "evaluate", "predict", "label", "ingest"}
        evaluate = deployments["evaluate"]
        assert evaluate.work_pool_name == "apogeenet" and str(root) in str(evaluate.pull_steps)
        schema = evaluate.parameter_openapi_schema["properties"]
        assert schema["params_path"]["type"] == "string" and schema["params_path"]["default"] == "params.yaml"
        assert all(schema[name].get("description") for name in ("model", "baseline", "params_path", "baselines"))
        worker = subprocess.Popen([*PREFECT, "worker", "start", "--pool", "apogeenet"], env=env, cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            run = subprocess.run([*PREFECT, "deployment", "run", "evaluate/evaluate", "--param",
                                  f"model={root / 'calibrated' / 'model.pt'}", "--param", "baselines=false",
                                  "--watch", "--watch-timeout", "400"], env=env, cwd=tmp_path,
                                 capture_output=True, text=True)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a worker slow to shut down on a loaded machine: the run is what
                os.killpg(worker.pid, signal.SIGKILL)  # is tested (below), and nothing is left behind
                worker.wait(timeout=30)
    assert run.returncode == 0 and "Completed" in run.stdout, run.stdout + run.stderr
    import mlflow

    mlflow.set_tracking_uri(mlflow_env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["evaluate"])
    assert (runs["tags.mlflow.source.name"].str.startswith("prefect flow evaluate")).any()
