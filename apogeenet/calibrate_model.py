"""What ``apogeenet calibrate`` fits for a trained model on the dev split and stores with it: each
member's output map (:mod:`apogeenet.output_maps`), the σ calibration of each uncertainty
method (:mod:`apogeenet.calibration`) and the domain reference
(:mod:`apogeenet.domain`), both from the inference path (:func:`apogeenet.uncertainty.predict_store`)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from apogeenet.calibration import PARAMETERS, TooFewStars, fit_calibration, sigma_floor
from apogeenet.config import CalibrationParams, CalibrationReference, PredictParams, Uncertainty, per_parameter
from apogeenet.domain import fit_domain
from apogeenet.errors import InputError
from apogeenet.output_maps import fit_output_maps
from apogeenet.uncertainty import predict_store, seed_keys

__all__ = ["calibrate_predictor", "fit_member_maps", "label_systematics"]

MAP_BLOCK = 2048
"""Dev spectra read at a time to fit the output maps."""


def fit_member_maps(predictor, data, dev: np.ndarray, params: CalibrationParams) -> dict[str, float]:
    """Fit each member's output map on the dev stars ``dev`` (positions into ``data``, a
    :class:`apogeenet.dataset.LabelledSpectra`) against their labels, attach the maps to
    ``predictor`` and return the fit's metrics (:func:`apogeenet.output_maps.fit_output_maps`, for
    the parameters ``params.output_maps`` names, with its ``map_huber_delta``)."""
    outputs = np.concatenate([predictor.member_outputs(data.prepared(dev[start:start + MAP_BLOCK]))
                              for start in range(0, len(dev), MAP_BLOCK)], axis=1)
    half = seed_keys(data.catalog["APOGEE_ID"].to_numpy()[dev]) % 2 == 0
    predictor.output_maps, metrics = fit_output_maps(outputs, data.targets[dev], half, predictor.table1,
                                                     params.output_maps, None if params.map_huber_delta is None
                                                     else per_parameter(params.map_huber_delta))
    return metrics


def calibrate_predictor(predictor, data, predict: PredictParams, params: CalibrationParams,
                        truth: pd.DataFrame | None) -> dict[str, float]:
    """Fit each member's output map (:func:`fit_member_maps`), then the σ calibration of each
    method in ``params.methods`` (the ``predict`` settings, on the dev split of ``data``, a :class:`apogeenet.dataset.LabelledSpectra`) and the domain reference
    (training split's activations, dev split's threshold) and attach them to ``predictor``, and,
    given a ``truth``, the label scale's systematic terms (:func:`label_systematics`);
    returns the fitted terms as metrics (``…/fitted`` 0 where the dev split is too small: that
    method then stays uncalibrated).

    The σ calibrated is the total of pixel noise and, for an ensemble, the members' spread
    (:attr:`apogeenet.uncertainty.MCResult.total_sigma`); an ensemble's metrics also hold the
    terms fitted to its pixel-noise σ alone (``…_a_pixel_only``, ``…_b_pixel_only``): how much
    of the inflation its spread makes unnecessary."""
    dev, train = data.select(split="dev"), data.select(split="train")
    ids = data.catalog["APOGEE_ID"].to_numpy()[dev]
    use_truth = params.reference == CalibrationReference.TRUTH or (
        params.reference == CalibrationReference.AUTO and truth is not None)
    if use_truth and truth is None:
        raise InputError("calibration.reference is 'truth' but the survey has no truth table (paths.truth)")
    known = truth.reindex(ids) if use_truth else data.catalog.iloc[dev].set_index("APOGEE_ID")
    reference = known[list(PARAMETERS)].to_numpy(float)
    sources = data.catalog["SOURCE"].to_numpy()[dev]
    predictor.output_maps = None
    metrics = fit_member_maps(predictor, data, dev, params) if params.output_maps else {}
    for method in params.methods:
        result = predict_store(predictor, data.store, predict.model_copy(update={"uncertainty": method}),
                               rows=data.rows[dev])
        fit = functools.partial(fit_calibration, result.prediction, reference=reference, method=str(method),
                                reference_name="truth" if use_truth else "labels", sources=sources,
                                floor=sigma_floor(result.sigma, result.model_sigma, len(predictor.members)),
                                clip=params.clip, min_stars=params.min_stars)
        try:
            fitted = fit(result.total_sigma)
        except TooFewStars:  # a small project: the catalog's *_ERR is the uncalibrated σ
            metrics[f"sigma_calibration/{method}/fitted"] = 0
            continue
        predictor.calibrations[str(method)] = fitted
        metrics[f"sigma_calibration/{method}/fitted"] = 1
        fits = {"": fitted, "_pixel_only": fit(result.sigma, floor=result.sigma) if len(predictor.members) > 1 else None}
        for suffix, calibration in fits.items():
            for region, terms in (calibration.terms.items() if calibration else ()):
                for name, (a, b, _) in terms.items():
                    metrics[f"sigma_calibration/{method}/{region}/{name.lower()}_a{suffix}"] = a
                    metrics[f"sigma_calibration/{method}/{region}/{name.lower()}_b{suffix}"] = b
    if truth is not None:
        predictor.systematics = label_systematics(data.catalog, truth)
        for source, terms in predictor.systematics.items():
            for name, (bias, error, _) in terms.items():
                metrics[f"systematic/{source}/{name.lower()}"] = bias
                metrics[f"systematic/{source}/{name.lower()}_error"] = error
    single = predict.model_copy(update={"uncertainty": Uncertainty.NONE})  # both through the inference path
    dev_hidden = predict_store(predictor, data.store, single, rows=data.rows[dev]).hidden
    train_hidden = predict_store(predictor, data.store, single, rows=data.rows[train]).hidden
    predictor.domain = fit_domain(train_hidden, dev_hidden, quantile=params.domain_quantile)
    metrics["domain_threshold"] = predictor.domain.threshold
    return metrics


def label_systematics(catalog: pd.DataFrame, truth: pd.DataFrame) -> dict[str, dict[str, list[float]]]:
    """The bias of each label source's scale against the truth, per parameter: [mean of label −
    truth over its labelled stars (all splits), the mean's standard error, stars]. A network
    trained on those labels reproduces their scale, so this is a systematic term of its
    predictions that no σ of the Monte Carlo, the ensemble or the calibration contains (the
    released M-dwarf relations put log g ≈ 0.07 dex above the truth, README)."""
    known = truth.reindex(catalog["APOGEE_ID"].to_numpy())
    terms: dict[str, dict[str, list[float]]] = {}
    for source in sorted(set(catalog["SOURCE"])):
        rows = (catalog["SOURCE"] == source).to_numpy()
        for name in PARAMETERS:
            offset = catalog[name].to_numpy(float)[rows] - known[name].to_numpy(float)[rows]
            offset = offset[np.isfinite(offset)]
            if len(offset) >= 2:
                terms.setdefault(str(source), {})[name] = [float(offset.mean()),
                                                           float(offset.std(ddof=1) / np.sqrt(len(offset))),
                                                           float(len(offset))]
    return terms
