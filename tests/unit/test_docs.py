"""The README stays a short front page and the documentation site builds cleanly, with the
benchmark page generated from the committed bench JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_is_a_short_front_page_whose_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "python3 run.py demo" in text and "python3 run.py test" in text  # the two commands (.ci/run: the second)
    targets = re.findall(r"\]\(([^)#]+)\)", text)
    assert targets and all((REPO / t).exists() for t in targets if "://" not in t), targets


def test_the_documentation_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: every page in the nav, no broken link or anchor, the hook's page made."""
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                           cwd=REPO, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})
    assert built.returncode == 0, built.stdout + built.stderr
    page = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    results = sorted((REPO / "docs" / "benchmarks").glob("*.json"))
    assert results, "no benchmark results committed"
    for path in results:
        recorded = json.loads(path.read_text())["recorded"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", recorded["date"]) and recorded["cpu"] and recorded["command"]
        assert path.stem in page and recorded["date"] in page  # each result on the generated page, dated
        assert all(f"{name}={value}" in page for name, value in recorded.get("kernels", {}).items())  # kernels held back
