"""Online scoring: the Table 4 columns (§3.5-3.6) for spectra posted as arrays.

What the registered model's pyfunc (:mod:`apogeenet.pyfunc`) answers under ``mlflow models
serve``: each input row is one apStar combined spectrum — ``flux`` and ``error``, 8 575 values
each (bad pixels as in the file: error 1e10, or null/NaN/0 flux) — with an optional
``apogee_id`` (it keys the Monte-Carlo noise as in a catalog, so a star posted under its
APOGEE_ID gets the catalog's σ; default ``row-<k>``) and an optional ``snr`` (default the median
flux/error of the good pixels). Each output row carries the prediction, ``*_ERR`` (the calibrated
total σ), ``*_ERR_MC``, ``*_ERR_MODEL``, ``FLAGS`` and ``FLAG_NAMES`` by the catalog's own rules
(:func:`apogeenet.catalog.build_catalog`): a spectrum without a usable pixel gets no number and
the FEW_PIXELS flag, never a confident value.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from apogeenet.catalog import FLAG_BITS, build_catalog, flag_names
from apogeenet.config import PredictParams, validated
from apogeenet.errors import InputError
from apogeenet.io.apstar import APSTAR_NPIX, good_pixels
from apogeenet.labels.catalog import LABEL_COLUMNS
from apogeenet.serving import Predictor
from apogeenet.uncertainty import predict_arrays, seed_keys

__all__ = ["INPUT_COLUMNS", "MAX_SPECTRA", "OUTPUT_COLUMNS", "SCORING_PARAMS", "example_input", "score"]

INPUT_COLUMNS = {"flux": "8575 floats: the combined spectrum (bad pixels null, NaN or 0)",
                 "error": "8575 floats: its 1-sigma errors (bad pixels 1e10 or null)",
                 "apogee_id": "optional: keys the Monte-Carlo noise (the catalog's sigma for that star)",
                 "snr": "optional: the spectrum's S/N (default: median flux/error of the good pixels)"}
OUTPUT_COLUMNS = ["APOGEE_ID", *(f"{name}{suffix}" for name in LABEL_COLUMNS
                                 for suffix in ("", "_ERR", "_ERR_MC", "_ERR_MODEL")),
                  "SNR", "N_GOOD_PIXELS", "DOMAIN_DIST", "FLAGS", "FLAG_NAMES", "YSO_CANDIDATE", "AGE_BIN"]
SCORING_PARAMS = ("uncertainty", "draws", "seed")
"""The settings a request may change (MLflow ``params``); the rest are ``predict``'s defaults."""
MAX_SPECTRA = 1000
"""The most spectra one request may hold: a survey goes through ``apogeenet predict``."""


def score(predictor: Predictor, spectra: pd.DataFrame, settings: dict | None = None) -> pd.DataFrame:
    """The catalog columns :data:`OUTPUT_COLUMNS` for the rows of ``spectra`` (:data:`INPUT_COLUMNS`);
    ``settings`` may set :data:`SCORING_PARAMS` (``predict``'s defaults otherwise). Bad input
    raises one :class:`InputError` line."""
    unknown = sorted(set(settings or {}) - set(SCORING_PARAMS))
    if unknown:
        raise InputError(f"unknown setting {', '.join(unknown)}: a request may set {', '.join(SCORING_PARAMS)}")
    predict = validated(PredictParams, {k: v for k, v in (settings or {}).items() if v is not None}, "the request")
    if predict.draws > predict.max_draws:
        raise InputError(f"draws {predict.draws}: at most {predict.max_draws}")
    ids, flux, error, snr = _spectra(spectra)
    result = predict_arrays(predictor, flux, error, seed_keys(ids), predict)
    n_good = good_pixels(flux, error).sum(axis=1)
    index = pd.DataFrame({"apogee_id": ids, "ra": np.nan, "dec": np.nan, "snr": snr})
    frame = build_catalog(index, result.prediction, result.sigma, None, hot_teff=predict.hot_teff,
                          bounds={k: tuple(v) for k, v in predict.bounds.items()}, n_good_pixels=n_good,
                          min_good_pixels=predict.min_good_pixels,
                          calibration=predictor.calibrations.get(str(predict.uncertainty)),
                          domain_distance=(predictor.domain.distance(result.hidden) if predictor.domain else None),
                          domain_threshold=predictor.domain.threshold if predictor.domain else np.inf,
                          max_sigma=predict.max_sigma, model_sigma=result.model_sigma,
                          members=len(predictor.members))
    frame["FLAGS"] = (frame["FLAGS"] & ~FLAG_BITS["DUPLICATE"]).astype(np.int64)  # a request is not a survey
    frame["FLAG_NAMES"] = flag_names(frame["FLAGS"].to_numpy())
    frame["N_GOOD_PIXELS"] = frame["N_GOOD_PIXELS"].astype(np.int64)
    return frame[OUTPUT_COLUMNS]


def example_input(flux: np.ndarray, error: np.ndarray, apogee_ids) -> pd.DataFrame:
    """A request of these raw spectra (one row each, non-finite values as null): the model's
    input example."""
    def listed(rows: np.ndarray) -> list[list[float | None]]:
        return [[float(v) if np.isfinite(v) else None for v in row] for row in np.atleast_2d(rows)]

    return pd.DataFrame({"flux": listed(flux), "error": listed(error), "apogee_id": [str(i) for i in apogee_ids]})


def _spectra(spectra: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, flux, error, snr) of the posted rows, each checked (one InputError line)."""
    if not isinstance(spectra, pd.DataFrame):
        raise InputError(f"the input is a {type(spectra).__name__}: post a table with columns flux and error")
    missing = [name for name in ("flux", "error") if name not in spectra.columns]
    if missing:
        raise InputError(f"the input has no column {' or '.join(missing)} (it has {', '.join(map(str, spectra.columns))}); "
                         f"each row needs flux and error, {APSTAR_NPIX} values each")
    if not 1 <= len(spectra) <= MAX_SPECTRA:
        raise InputError(f"{len(spectra)} spectra: post 1 to {MAX_SPECTRA} at a time (`apogeenet predict` for more)")
    flux, error = (_pixels(spectra[name], name) for name in ("flux", "error"))
    n = len(spectra)
    ids = (spectra["apogee_id"].astype(object).where(spectra["apogee_id"].notna(), None).to_numpy()
           if "apogee_id" in spectra.columns else np.full(n, None, object))
    ids = np.array([str(i) if i is not None else f"row-{k}" for k, i in enumerate(ids)], dtype=object)
    if any(len(i) > 64 for i in ids):
        raise InputError("an apogee_id longer than 64 characters: not an APOGEE identifier")
    good = good_pixels(flux, error)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row without a good pixel: NaN
        estimated = np.nanmedian(np.where(good, flux / error, np.nan), axis=1)
    given = (pd.to_numeric(spectra["snr"], errors="coerce").to_numpy(float) if "snr" in spectra.columns
             else np.full(n, np.nan))
    return ids, flux, error, np.where(np.isfinite(given), given, estimated)


def _pixels(column: pd.Series, name: str) -> np.ndarray:
    """The column's rows as an (n, 8575) float32 array; a row of another length is one InputError."""
    rows = []
    for k, value in enumerate(column):
        try:
            row = np.asarray(value if value is not None else [], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"row {k}: {name} is not a list of numbers") from None
        if row.shape != (APSTAR_NPIX,):
            raise InputError(f"row {k}: {name} has {row.size} value{'s' * (row.size != 1)}, an apStar spectrum "
                             f"{APSTAR_NPIX} (the combined spectrum on the apStar wavelength grid)")
        rows.append(row)
    with np.errstate(over="ignore"):
        return np.stack(rows).astype(np.float32)
