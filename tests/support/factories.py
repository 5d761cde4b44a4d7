"""The test data every kind of test builds from, written once: a fixed Table 1, a labelled store
of true parameters, and a small validated project."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import yaml

from apogeenet.labels.catalog import Normalisation

TABLE1 = Normalisation(4700.0, 900.0, 3.5, 1.2, -0.1, 0.25)
"""A fixed Table 1 (eq. 4) for tests that do not build labels."""

SETTINGS = {"model": "predict.model", "out_dir": "paths.catalog", "store": "paths.store", "draws": "predict.draws",
            "track": "tracking.enabled", "evaluation": "paths.evaluation", "baseline": "evaluate.baseline",
            "judged": "evaluate.model"}
"""Short names the tests give the settings they vary most (:func:`settings`)."""


def settings(cfg, **given):
    """``cfg`` with the settings of :data:`SETTINGS` given by their short names (paths as strings)."""
    return cfg.with_overrides({SETTINGS[k]: str(v) if isinstance(v, Path) else v for k, v in given.items()})


GIANTS_AND_DWARFS = {"giant": 0.5, "dwarf": 0.5}
SMALL_YSO = {"n_train": 600, "n_test": 200, "epochs": 2, "batch_size": 128, "learning_rate": 0.003, "seed": 1}
"""A YSO network that trains in seconds (its labels are not the point of the tests using it)."""


def labelled_store(root: Path, n_stars: int, seed: int, *, fractions: dict[str, float] = GIANTS_AND_DWARFS,
                   workers: int = 1, flux_scale: float | None = 1.0):
    """A synthetic survey of ``n_stars`` under ``root``, ingested, labelled with its true
    parameters as PAYNE labels (splits by the catalog's rule): a
    :class:`~apogeenet.dataset.LabelledSpectra` with :data:`TABLE1`."""
    from apogeenet.labels.catalog import combine_labels
    from apogeenet.store import SpectraStore
    from apogeenet.ingest import ingest
    from apogeenet.synth.survey import make_survey
    from apogeenet.dataset import LabelledSpectra

    stars, _ = make_survey(root / "survey", n_stars, seed=seed, fractions=fractions)
    ingest(root / "survey" / "apStar", root / "store", workers=workers)
    part = pd.DataFrame({"APOGEE_ID": stars["apogee_id"], "TEFF": stars["teff"],
                         "LOGG": stars["logg"], "FE_H": stars["fe_h"]})
    return LabelledSpectra(SpectraStore(root / "store"), combine_labels({"PAYNE": part}), TABLE1,
                           flux_scale=flux_scale)


def project(root: Path, n_stars: int = 120, seed: int = 9, extra_params: dict | None = None) -> Path:
    """A small project in ``root``: a survey of every population, its store, labels that passed
    validation and the ``params.yaml`` pointing at them; returns ``root``."""
    from apogeenet.config import load_params
    from apogeenet.pipeline import label, validate
    from apogeenet.ingest import ingest
    from apogeenet.synth.survey import make_survey

    survey = root / "data" / "synth"
    make_survey(survey, n_stars, seed=seed, fractions={"giant": 0.4, "dwarf": 0.1, "mdwarf": 0.3, "yso": 0.2})
    ingest(survey / "apStar", root / "derived" / "store", workers=1)
    paths = {"allstar": survey / "allStar-synth.fits", "payne": survey / "payne-synth.fits",
             "members": survey / "members-kounkel2019-synth.fits", "truth": survey / "truth-synth.fits",
             "spectra": survey / "apStar"}
    paths |= {name: root / "derived" / name for name in ("store", "labels", "validation", "model", "adapted", "baselines",
                                                          "evaluation", "catalog")}
    params = {"paths": {k: str(v) for k, v in paths.items()}, "yso": SMALL_YSO,
              "validation": {"split_tolerance": 0.2}, "calibration": {"min_stars": 5}, **(extra_params or {})}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_params(root / "params.yaml")
    label.run(settings(cfg, track=False))
    assert validate.run(settings(cfg, track=False)).passed
    return root


@contextmanager
def tracking_in(root: Path) -> Iterator[str]:
    """Run with ``root`` as the working directory and its own MLflow store (``root/mlruns``);
    yields the tracking URI."""
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir(exist_ok=True)
    saved, cwd = os.environ.get("MLFLOW_TRACKING_URI"), os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(root)  # MLflow artifacts go under ./mlruns
    try:
        yield uri
    finally:
        os.chdir(cwd)
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
