"""Fixtures of the system tests: a small apStar tree, its labelled store, a copy of the project."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    from apogeenet.synth.survey import make_survey

    root = tmp_path_factory.mktemp("tree")
    make_survey(root, 12, seed=3, fractions={"giant": 0.5, "mdwarf": 0.5})
    return root / "apStar"


@pytest.fixture(scope="module")
def labelled(small_tree, tmp_path_factory):
    """A store of the small tree and a label catalog with train and dev splits."""
    from apogeenet.io.tables import read_table
    from apogeenet.labels.catalog import combine_labels
    from apogeenet.ingest import ingest

    root = tmp_path_factory.mktemp("labelled")
    ingest(small_tree, root / "store", workers=1)
    truth = read_table(small_tree.parent / "truth-synth.fits")
    catalog = combine_labels({"PAYNE": truth[["APOGEE_ID", "TEFF", "LOGG", "FE_H"]]})
    catalog["SPLIT"] = np.where(np.arange(len(catalog)) % 4 == 0, "dev", "train")
    catalog.to_parquet(root / "labels.parquet")
    return root / "store", root / "labels.parquet"


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
