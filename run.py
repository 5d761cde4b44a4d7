#!/usr/bin/env python3
"""The README's two commands, with nothing but Python 3.11 installed.

    python3 run.py demo   # install into .venv when missing, then run the main job
    python3 run.py test   # install into .venv when missing, then run the test suite (and the
                          # float-comparing tests again under oneDNN's SSE4.1 and AVX2 kernels)
    python3 run.py test --fast  # only the tests not marked slow (under 2 minutes on 2 cores)
    python3 run.py server # a local Prefect server on 127.0.0.1:4200 (for the deployments)
    python3 run.py serve  # serve train/pretrain, train/adapt, evaluate, label against it

The virtual environment is (re)installed when pyproject.toml or requirements/constraints.txt
change. torch is installed first and pinned so pip takes the local CPU wheel (STACK.md); a GPU
user may install their own CUDA torch 2.13 into .venv beforehand.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
QUIET_ENV = {  # STACK.md: keep MLflow, Prefect and DVC offline and quiet
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_HOME": str(ROOT / ".prefect"),
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}
PREFECT_API_URL = "http://127.0.0.1:4200/api"
ONEDNN_ISAS = ("SSE41", "AVX2")  # float-comparing tests (marker `floats`) rerun under each


def sh(*args: str | Path, **kw) -> None:
    print("+", " ".join(map(str, args)), flush=True)
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT, **kw)


def ensure_venv() -> None:
    stamp_text = (ROOT / "pyproject.toml").read_bytes() + CONSTRAINTS.read_bytes()
    stamp = VENV / f".installed-{hashlib.sha256(stamp_text).hexdigest()[:16]}"
    if stamp.exists():
        return
    if not (BIN / "python").exists():
        sh(sys.executable, "-m", "venv", VENV)
    pip = [BIN / "python", "-m", "pip", "--disable-pip-version-check", "-q"]
    torch = next(line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("torch=="))
    sh(*pip, "install", torch)
    sh(*pip, "install", "-c", CONSTRAINTS, "-e", ".[test]")
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in ("demo", "test", "server", "serve"):
        print(__doc__)
        return 2
    ensure_venv()
    env = {**os.environ, **QUIET_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        if argv[0] == "test" and argv[1:] == ["--fast"]:  # the tests not marked slow: under 2 minutes
            sh(BIN / "python", "-m", "pytest", "-n", "2", "-m", "not slow", env=env)
        elif argv[0] == "test":
            sh(BIN / "python", "-m", "pytest", "-n", "2", *argv[1:], env=env)
            if len(argv) == 1:  # tolerances must hold on other CPUs: oneDNN picks kernels by ISA
                for isa in ONEDNN_ISAS:
                    sh(BIN / "python", "-m", "pytest", "-q", "-m", "floats", "-p", "no:cacheprovider",
                       env={**env, "ONEDNN_MAX_CPU_ISA": isa})
        elif argv[0] == "server":
            print("Prefect UI: http://127.0.0.1:4200", flush=True)
            sh(BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", "4200",
               "--analytics-off", env=env)
        elif argv[0] == "serve":
            print(f"then: PREFECT_API_URL={PREFECT_API_URL} {BIN / 'prefect'} deployment run train/adapt --watch")
            sh(BIN / "python", "-m", "flows.serve", *argv[1:],
               env={**env, "PREFECT_API_URL": PREFECT_API_URL, "PREFECT_RUNNER_POLL_FREQUENCY": "2"})
        else:
            sh(BIN / "apogeenet", "synth", env=env)
            sh(BIN / "dvc", "repro", env=env)
            sh(BIN / "apogeenet", "info", env=env)
            sh(BIN / "apogeenet", "report", env=env)
            sh(BIN / "apogeenet", "models", env=env)
            print(f"MLflow: mlflow ui --backend-store-uri sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}")
    except subprocess.CalledProcessError as exc:
        return exc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
