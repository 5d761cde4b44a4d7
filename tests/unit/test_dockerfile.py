"""The Dockerfile builds the same pinned stack (no engine here to build it): every path it copies
exists, torch is the pinned version, and the project installs under the constraints file."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_every_copied_path_exists():
    copies = [shlex.split(args)[:-1] for op, args in _instructions() if op == "COPY"]
    assert copies, "the Dockerfile copies nothing"
    missing = [source for sources in copies for source in sources if not (REPO / source).exists()]
    assert not missing, f"COPY of paths that do not exist: {missing}"
    copied = {Path(s).parts[0] for sources in copies for s in sources}
    packages = {"apogeenet", "expectations", "flows"}  # pyproject's packages.find
    assert packages <= copied and "pyproject.toml" in copied and "requirements" in copied


def test_pip_installs_the_pinned_stack():
    constraints = (REPO / "requirements" / "constraints.txt").read_text()
    pinned_torch = re.search(r"^torch==(\S+)$", constraints, re.M).group(1)
    runs = [args for op, args in _instructions() if op == "RUN" and "pip install" in args]
    torch_lines = [r for r in runs if re.search(r"\btorch==", r)]
    assert len(torch_lines) == 1 and f"torch=={pinned_torch}" in torch_lines[0]
    project = [r for r in runs if r.rstrip().endswith(" .")]
    assert len(project) == 1 and "-c requirements/constraints.txt" in project[0]
