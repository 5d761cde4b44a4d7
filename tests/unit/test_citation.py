"""CITATION.cff: the software's version is the package's, and the preferred citation is the
paper the project implements (its arXiv number and its authors in the paper's order)."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PAPER = Path(os.environ.get("APOGEENET_SHARED", REPO.parent / "shared")) / "paper" / "apogee_net_olney2020.md"


def test_citation_names_this_version_and_the_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == project["version"]
    assert cff["license"] == project["license"]
    paper = cff["preferred-citation"]
    assert paper["type"] == "article" and paper["year"] == 2020
    assert re.fullmatch(r"10\.3847/1538-3881/\w+", paper["doi"])
    assert any(i["value"] == "arXiv:2002.08390" for i in paper["identifiers"])
    assert [a["family-names"] for a in paper["authors"]][:2] == ["Olney", "Kounkel"]


@pytest.mark.shared
def test_citation_authors_are_the_papers():
    if not PAPER.exists():
        pytest.skip(f"the paper is not at {PAPER} (../shared is absent)")
    text = PAPER.read_text()
    byline = text[text.index("RICHARD OLNEY"):].split("\n\n")[0].replace("\n", " ")  # the author lines
    family = [re.sub(r"[^A-Z ]", "", name.split(",")[0]).split()[-1]
              for name in re.split(r",|\bAND\b", re.sub(r"[¹²³⁴^{}\d]", "", byline)) if name.strip()]
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert [a["family-names"].upper() for a in cff["preferred-citation"]["authors"]] == family
