"""Bytes pinned in git must not depend on the CPU: the synthetic survey made under other SIMD
feature sets, BLAS kernels and thread counts is identical, array for array and file for file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# numpy's dispatch and OpenBLAS's kernel pick other code paths under these (see the issue:
# AVX-512 machines differ from AVX2 ones in the last bits of float64 results).
VARIANTS = {
    "default": {},
    "no-avx2, Sandybridge BLAS, 1 thread": {"NPY_DISABLE_CPU_FEATURES": "X86_V3", "OPENBLAS_CORETYPE": "Sandybridge",
                                           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    "no-avx2, Nehalem BLAS, 2 threads": {"NPY_DISABLE_CPU_FEATURES": "X86_V3", "OPENBLAS_CORETYPE": "Nehalem",
                                        "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"},
}

_SCRIPT = """
import hashlib, json, sys, pathlib
import numpy as np
from apogeenet.synth.populations import draw_survey
from apogeenet.synth.survey import SpectrumSynthesizer, make_survey
fractions = {"giant": 0.35, "dwarf": 0.25, "mdwarf": 0.2, "yso": 0.15, "field": 0.05}
stars = draw_survey(42, 2000, fractions)  # ~300 YSOs: isochrone masses with ties (sort order)
arrays = hashlib.sha256(stars.select_dtypes("float").to_numpy().tobytes())
arrays.update(SpectrumSynthesizer(42).noiseless(stars.iloc[:150]).tobytes())
out = pathlib.Path(sys.argv[1])
make_survey(out, 16, 42, fractions)
files = hashlib.sha256()
for path in sorted(out.rglob("*.fits")):
    files.update(path.relative_to(out).as_posix().encode())
    files.update(path.read_bytes())
print(json.dumps({"arrays": arrays.hexdigest(), "files": files.hexdigest()}))
"""


@pytest.mark.slow
def test_survey_bytes_do_not_depend_on_cpu_features_blas_or_threads(tmp_path):
    digests = {}
    for name, extra in VARIANTS.items():
        env = {k: v for k, v in os.environ.items()
               if k not in ("NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE")}
        result = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / name.split(",")[0])],
                                env={**env, **extra}, capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
        digests[name] = json.loads(result.stdout.strip().splitlines()[-1])
    reference = digests["default"]
    for name, digest in digests.items():
        assert digest["arrays"] == reference["arrays"], f"model spectra and star table differ under {name}"
        assert digest["files"] == reference["files"], f"survey files differ under {name}"


LABEL_VARIANTS = {
    **VARIANTS,
    "SSE4.1 oneDNN, generic ATen kernels, 1 thread": {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default",
                                                    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}


@pytest.mark.slow
def test_label_stage_bytes_do_not_depend_on_cpu_features_blas_or_threads(project, tmp_path):
    """The derived data DVC versions (the label catalog, Table 1, the YSO network and its labels,
    the M-dwarf selection) are the same bytes under other numpy SIMD kernels, BLAS kernels,
    oneDNN ISAs, ATen kernels and thread counts: the YSO network trains in CPU-independent
    arithmetic (apogeenet/labels/yso_net.py) and every stored value is quantised."""
    from commands import EXE

    survey = project / "data" / "synth"
    digests = {}
    for name, extra in LABEL_VARIANTS.items():
        out = tmp_path / name.split(",")[0].replace(" ", "_")
        env = {k: v for k, v in os.environ.items() if k not in ("NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE")}
        result = subprocess.run([EXE, "label", "--no-track", "--params", str(project / "params.yaml"),
                                 "--allstar", str(survey / "allStar-synth.fits"), "--payne", str(survey / "payne-synth.fits"),
                                 "--members", str(survey / "members-kounkel2019-synth.fits"), "--out", str(out)],
                                env={**env, **extra}, capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
        digests[name] = {path.name: path.read_bytes() for path in sorted(out.iterdir()) if path.is_file()}
    reference = digests["default"]
    assert {"labels.parquet", "labels.fits", "table1.json", "yso_net.pt", "metrics.json"} <= set(reference)
    for name, files in digests.items():
        assert set(files) == set(reference)
        differ = [file for file in files if files[file] != reference[file]]
        assert not differ, f"label outputs differ under {name}: {differ}"
