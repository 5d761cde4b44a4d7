"""Shared parts of the bench scripts: JSON on stdout (and to a file when asked), the model to time."""

from __future__ import annotations

import json
from pathlib import Path

KERNEL_SETTINGS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "NPY_DISABLE_CPU_FEATURES")
"""Environment variables that make oneDNN, MKL, PyTorch and NumPy pick other kernels than the CPU
offers (how a figure is measured as on another CPU): recorded when set."""


def machine() -> dict:
    """When, where and how a figure was measured: the ``recorded`` block of every bench JSON
    (docs/benchmarks.md is generated from them)."""
    import datetime
    import os
    import platform
    import subprocess
    import sys

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        cpu += " (AVX-512)" if " avx512f" in info else " (AVX2)" if " avx2" in info else ""
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    recorded = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), "cpu": cpu,
                "cores": os.cpu_count(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "",
                "torch": torch.__version__, "commit": commit,
                "command": " ".join(["python", "/".join(Path(sys.argv[0]).parts[-2:]), *sys.argv[1:]])}
    if kernels := {name: os.environ[name] for name in KERNEL_SETTINGS if name in os.environ}:
        recorded["kernels"] = kernels
    return recorded


def emit(result: dict, out: Path | None) -> None:
    result = {**result, "recorded": machine()}
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def bench_model(model: Path | None):
    """(Predictor, name): ``model``, else the project's adapted or trained model.pt, else a
    random network (the same cost as a trained one)."""
    import torch

    from apogeenet.config import load_params
    from apogeenet.labels.catalog import Normalisation
    from apogeenet.model import ApogeeNet
    from apogeenet.serving import Predictor

    cfg = load_params()
    model = model or next((p for p in (cfg.paths.adapted / "model.pt", cfg.paths.model / "model.pt")
                           if p.exists()), None)
    if model is not None:
        return Predictor.load(model), str(model)
    torch.manual_seed(0)
    return Predictor(ApogeeNet(3).eval(), Normalisation(4700, 900, 3.5, 1.2, -0.1, 0.25), None), "random network"
