"""The Table 4 catalog and the §4 science products (Olney et al. 2020, §3.6 and §4).

Columns follow Table 4 (label, prediction and σ for log g, Teff and [Fe/H], SNR, data set, data
type) with units; ``FLAGS`` marks rows the paper left out instead of dropping them:

* bit 0 ``HOT``: predicted Teff above ``predict.hot_teff`` (edge effects, §3.6);
* bit 1 ``UNPHYSICAL``: a prediction outside the physical bounds (params ``predict.bounds``),
  as happens at SNR ≈ 0 (§3.6);
* bit 2 ``FEW_PIXELS``: fewer good pixels than ``predict.min_good_pixels`` (a spectrum half of
  it NaN still gets a number from the network: it means nothing); a spectrum with no usable
  pixel at all gets no number (prediction and σ NaN);
* bit 3 ``DUPLICATE``: another file of the same APOGEE_ID has a higher SNR (that one is kept, as
  allStar's primary entry);
* bit 4 ``OUT_OF_DOMAIN``: the spectrum is unlike the training set's (``DOMAIN_DIST`` above the
  threshold stored with the model, :mod:`apogeenet.domain`): the network's number means nothing;
* bit 5 ``LARGE_SIGMA``: a calibrated σ above ``predict.max_sigma``;
* bit 6 ``ZERO_SIGMA``: the method's σ is 0 (pixel errors too small to move the prediction);
* bit 7 ``UNCALIBRATED``: the model carries no σ calibration for the method (its dev split was
  too small to fit one, ``calibration.min_stars``): ``*_ERR`` is the method's pixel-noise σ alone
  and says nothing of the network's own error, so the row is not clean.

``FLAG_NAMES`` spells each row's bits out (``OUT_OF_DOMAIN,LARGE_SIGMA``); the FITS header
lists the bits (``FLAGB0``…) and describes every column (``TCOMMn``, which TOPCAT shows), and
records the model (its registry version, the SHA-256 of its weights) and what it was trained on.

σ: ``*_ERR_MC`` is the method's (pixel noise: the §3.5 Monte Carlo, or the delta method; header
``SIGMA``), ``*_ERR_MODEL`` the spread of an ensemble's members (the model's own error; NaN for a
single network), ``*_ERR`` the calibrated total (:mod:`apogeenet.calibration`: the fit of the
error both miss, applied to √(ERR_MC² + ERR_MODEL²), never below √(ERR_MC² + ERR_MODEL²/K) for K
members); a model without a calibration for the method gives ``*_ERR`` = that total (header
``SIGCAL`` 'none'). The clean view keeps ``FLAGS == 0``. §4.1 products: ``YSO_CANDIDATE`` inside the (Teff, log g)
triangle (2200, 4.4), (4500, 3.9), (3200, 1.7), and ``AGE_BIN`` from log g for those
(< 3.6, 3.6–3.8, 3.8–4.0, 4.0–4.2, > 4.2 dex ↔ ≲ 1, 1–2, 2–3, 3–5, ≳ 5 Myr).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from apogeenet.atomic import atomic_path, atomic_paths
from apogeenet.calibration import SigmaCalibration, sigma_floor
from apogeenet.kiel import YSO_POLYGON, in_yso_polygon
from apogeenet.plotting import SOURCE_COLOURS, pyplot, save
from apogeenet.labels.catalog import LABEL_COLUMNS
from apogeenet.store import primary_rows
from apogeenet.uncertainty import total_sigma

__all__ = ["SUMMARY_FILE", "header_meta", "systematics_header", "AGE_BINS", "FLAG_BITS", "FLAG_MEANINGS", "flag_header", "flag_names", "YSO_POLYGON", "age_bins", "build_catalog", "catalog_summary", "catalog_table",
           "in_yso_polygon", "kiel_by_type_plot", "product_paths", "sigma_snr_plot", "write_catalog", "write_products",
           "yso_selection_plot"]

SUMMARY_FILE = "summary.md"
"""The catalog summary a person reads (``apogeenet report``)."""

AGE_BINS = ((-np.inf, 3.6, "<~1 Myr"), (3.6, 3.8, "1-2 Myr"), (3.8, 4.0, "2-3 Myr"),
            (4.0, 4.2, "3-5 Myr"), (4.2, np.inf, ">~5 Myr"))
FLAG_BITS = {"HOT": 1, "UNPHYSICAL": 2, "FEW_PIXELS": 4, "DUPLICATE": 8, "OUT_OF_DOMAIN": 16, "LARGE_SIGMA": 32,
             "ZERO_SIGMA": 64, "UNCALIBRATED": 128}
FLAG_MEANINGS = {
    "HOT": "predicted Teff above predict.hot_teff (Sect. 3.6)",
    "UNPHYSICAL": "a prediction outside predict.bounds (SNR ~ 0, Sect. 3.6)",
    "FEW_PIXELS": "fewer good pixels than predict.min_good_pixels",
    "DUPLICATE": "a higher-SNR file of the same star exists",
    "OUT_OF_DOMAIN": "spectrum unlike the training set (DOMAIN_DIST above the model's threshold)",
    "LARGE_SIGMA": "calibrated sigma above predict.max_sigma",
    "ZERO_SIGMA": "the method's sigma is 0 (pixel errors too small to move the prediction)",
    "UNCALIBRATED": "no sigma calibration in the model: *_ERR is pixel noise only, not the model's error",
}
"""What each FLAGS bit means (header FLAGBn, the FLAGS column's description, README)."""
_UNITS = {"RA": u.deg, "DEC": u.deg, **{f"{name}{suffix}": unit for name, unit in
                                        (("TEFF", u.K), ("LOGG", u.dex), ("FE_H", u.dex))
                                        for suffix in ("", "_LABEL", "_ERR", "_ERR_MC", "_ERR_MODEL")}}
_DESCRIPTIONS = {
    "TEFF": "APOGEE Net prediction of Teff", "TEFF_LABEL": "training label of Teff (NaN: none)",
    "TEFF_ERR": "calibrated total sigma: pixel noise, model spread, missing error",
    "TEFF_ERR_MC": "pixel-noise sigma (Monte Carlo, Sect. 3.5, or delta: header SIGMA)",
    "TEFF_ERR_MODEL": "ensemble members' spread: the model's own error (NaN: one network)",
    "SNR": "apStar SNR",
    "DATA_SET": "train/dev/test/none", "DATA_TYPE": "label source: PAYNE/MSTAR/YSO/TABLE/none",
    "FLAGS": "bitmask, 0 = clean; bits: header FLAGB0-FLAGB7, names: FLAG_NAMES",
    "FLAG_NAMES": "the names of the FLAGS bits set, comma-separated (empty: clean)",
    "DOMAIN_DIST": "Mahalanobis distance of the activations from the training set",
    "N_GOOD_PIXELS": "pixels with data (finite flux, 0 < error < 1e10)",
    "YSO_CANDIDATE": "inside the Sect. 4.1 (Teff, log g) triangle", "AGE_BIN": "from log g (Sect. 4.1)",
    "APOGEE_ID": "2MASS-style APOGEE identifier", "RA": "right ascension (J2000) of the apStar header",
    "DEC": "declination (J2000) of the apStar header",
}
for _name, _what in (("LOGG", "log g"), ("FE_H", "[Fe/H]")):
    _DESCRIPTIONS.update({_name: f"APOGEE Net prediction of {_what}", f"{_name}_LABEL": f"training label of {_what} (NaN: none)",
                          **{f"{_name}{suffix}": _DESCRIPTIONS[f"TEFF{suffix}"]
                             for suffix in ("_ERR", "_ERR_MC", "_ERR_MODEL")}})
COLUMNS = ["APOGEE_ID", "RA", "DEC", "LOGG_LABEL", "LOGG", "LOGG_ERR", "LOGG_ERR_MC", "LOGG_ERR_MODEL", "TEFF_LABEL",
           "TEFF", "TEFF_ERR", "TEFF_ERR_MC", "TEFF_ERR_MODEL", "FE_H_LABEL", "FE_H", "FE_H_ERR", "FE_H_ERR_MC",
           "FE_H_ERR_MODEL", "SNR", "N_GOOD_PIXELS",
           "DOMAIN_DIST", "DATA_SET", "DATA_TYPE", "FLAGS", "FLAG_NAMES", "YSO_CANDIDATE", "AGE_BIN"]


def age_bins(logg: np.ndarray) -> np.ndarray:
    """§4.1 age bin label for each log g ('' for NaN)."""
    logg = np.asarray(logg, float)
    out = np.full(logg.shape, "", dtype=object)
    for lo, hi, name in AGE_BINS:
        out[(logg >= lo) & (logg < hi)] = name
    return out


def build_catalog(index: pd.DataFrame, prediction: np.ndarray, sigma: np.ndarray,
                  labels: pd.DataFrame | None, *, hot_teff: float,
                  bounds: dict[str, tuple[float, float]], n_good_pixels: np.ndarray,
                  min_good_pixels: int, calibration: SigmaCalibration | None = None,
                  domain_distance: np.ndarray | None = None, domain_threshold: float = np.inf,
                  max_sigma: dict[str, float] | None = None, model_sigma: np.ndarray | None = None,
                  members: int = 1) -> pd.DataFrame:
    """Table 4 rows for the store ``index`` (apogee_id, ra, dec, snr) with predictions, the
    method's σ and the spread ``model_sigma`` of an ensemble of ``members`` (each (n, 3): TEFF,
    LOGG, FE_H; None or NaN: one network), the σ of ``calibration`` on their total (by each star's
    label source, never below :func:`apogeenet.calibration.sigma_floor`; without one the total
    itself), each spectrum's count of good pixels and out-of-domain distance, labels joined by
    APOGEE_ID, flags and the §4.1 columns."""
    index = index.reset_index(drop=True)
    frame = pd.DataFrame({"APOGEE_ID": index["apogee_id"].to_numpy(), "RA": index["ra"].to_numpy(float),
                          "DEC": index["dec"].to_numpy(float), "SNR": index["snr"].to_numpy(float),
                          "N_GOOD_PIXELS": np.asarray(n_good_pixels, np.int32)})
    if labels is not None and len(labels):
        known = labels.drop_duplicates("APOGEE_ID").set_index("APOGEE_ID")
        for name in LABEL_COLUMNS:
            frame[f"{name}_LABEL"] = known[name].reindex(frame["APOGEE_ID"]).to_numpy(float)
        frame["DATA_SET"] = known["SPLIT"].reindex(frame["APOGEE_ID"]).fillna("none").to_numpy(str)
        frame["DATA_TYPE"] = known["SOURCE"].reindex(frame["APOGEE_ID"]).fillna("none").to_numpy(str)
    else:
        for name in LABEL_COLUMNS:
            frame[f"{name}_LABEL"] = np.nan
        frame["DATA_SET"], frame["DATA_TYPE"] = "none", "none"
    model_sigma = np.full(sigma.shape, np.nan) if model_sigma is None else model_sigma
    empty = np.asarray(n_good_pixels) == 0  # no usable pixel: the network's number means nothing
    prediction, sigma, model_sigma = (np.where(empty[:, None], np.nan, a) for a in (prediction, sigma, model_sigma))
    total = total_sigma(sigma, model_sigma)
    calibrated = (total if calibration is None
                  else calibration.apply(prediction, total, frame["DATA_TYPE"].to_numpy(),
                                                  floor=sigma_floor(sigma, model_sigma, members)))
    for k, name in enumerate(LABEL_COLUMNS):
        frame[name] = prediction[:, k]
        frame[f"{name}_ERR"] = calibrated[:, k]
        frame[f"{name}_ERR_MC"] = sigma[:, k]
        frame[f"{name}_ERR_MODEL"] = model_sigma[:, k]
    frame["DOMAIN_DIST"] = np.full(len(frame), np.nan) if domain_distance is None else domain_distance
    flags = np.where(frame["TEFF"] > hot_teff, FLAG_BITS["HOT"], 0)
    outside = np.zeros(len(frame), bool)
    for name, (lo, hi) in bounds.items():
        value = frame[name.upper()].to_numpy(float)
        outside |= ~((value >= lo) & (value <= hi)) & ~empty
    flags |= np.where(outside, FLAG_BITS["UNPHYSICAL"], 0)
    flags |= np.where(frame["N_GOOD_PIXELS"] < min_good_pixels, FLAG_BITS["FEW_PIXELS"], 0)
    flags |= np.where(primary_rows(index), 0, FLAG_BITS["DUPLICATE"])
    flags |= np.where(frame["DOMAIN_DIST"].to_numpy() > domain_threshold, FLAG_BITS["OUT_OF_DOMAIN"], 0)
    large = np.zeros(len(frame), bool)
    for name, bound in (max_sigma or {}).items():
        large |= frame[f"{name.upper()}_ERR"].to_numpy(float) > bound
    flags |= np.where(large, FLAG_BITS["LARGE_SIGMA"], 0)
    method_sigma = frame[[f"{name}_ERR_MC" for name in LABEL_COLUMNS]].to_numpy(float)
    flags |= np.where((method_sigma <= 0).any(axis=1), FLAG_BITS["ZERO_SIGMA"], 0)
    if calibration is None:  # a σ of pixel noise alone is not an uncertainty of the network's number
        flags |= np.where(np.isfinite(method_sigma).any(axis=1), FLAG_BITS["UNCALIBRATED"], 0)
    frame["FLAGS"] = flags.astype(np.int16)
    frame["FLAG_NAMES"] = flag_names(frame["FLAGS"].to_numpy())
    frame["YSO_CANDIDATE"] = in_yso_polygon(frame["TEFF"], frame["LOGG"]) & (frame["FLAGS"] == 0)
    frame["AGE_BIN"] = np.where(frame["YSO_CANDIDATE"], age_bins(frame["LOGG"]), "")
    return frame[COLUMNS]


def flag_names(flags: np.ndarray) -> np.ndarray:
    """Each FLAGS value spelled out: the names of its bits, comma-separated ('' when clean)."""
    names = np.full(len(flags), "", dtype=object)
    for name, bit in FLAG_BITS.items():
        names = np.where(flags & bit, np.where(names == "", name, names + "," + name), names)
    return names.astype(str)


def flag_header(hot_teff: float) -> dict[str, str]:
    """FLAGB0…FLAGB7: each bit's name and meaning, for the catalog header."""
    return {f"FLAGB{bit.bit_length() - 1}": f"{name}: " + FLAG_MEANINGS[name].replace(
        "predict.hot_teff", f"{hot_teff:g} K") for name, bit in FLAG_BITS.items()}


def catalog_table(frame: pd.DataFrame, meta: dict | None = None) -> Table:
    """An astropy Table with units and column descriptions (NaN stays NaN, no masks)."""
    table = Table({c: frame[c].to_numpy(dtype=str) if pd.api.types.is_string_dtype(frame[c])
                   else frame[c].to_numpy() for c in frame.columns})
    for name, unit in _UNITS.items():
        table[name].unit = unit
    for name, text in _DESCRIPTIONS.items():
        table[name].description = text
    table.meta.update({k.upper()[:8]: v for k, v in (meta or {}).items()})
    return table


def _write_units_and_comments(path: Path, table: Table) -> None:
    """TUNITn for every column whose unit astropy would not write (dex, as APOGEE's allStar says)
    and TCOMMn with each column's description (what TOPCAT and fv show). Added after
    ``Table.write`` rather than building the HDU by hand, which would lose the column metadata
    astropy serialises into the header."""
    from astropy.io import fits

    with fits.open(path, mode="update") as hdul:
        header = hdul[1].header
        for number, column in enumerate(table.columns.values(), start=1):
            if column.unit is not None and f"TUNIT{number}" not in header:
                header.insert(f"TFORM{number}", (f"TUNIT{number}", column.unit.to_string()), after=True)
            if column.description:
                header.insert(f"TFORM{number}", (f"TCOMM{number}", column.description), after=True)


CATALOG_KINDS = ("fits", "parquet", "csv")


def header_meta(model: str, predict, predictor, *, version: str = "", weights_sha256: str = "") -> dict:
    """The catalog header's record of how it was made (FITS keywords, Parquet metadata): the model
    as the user named it, its registry ``version`` and the SHA-256 of its weights file, what it
    was trained on (the model's provenance), its ensemble's size, the σ settings (``predict``, a
    :class:`~apogeenet.config.PredictParams`), the calibration and domain threshold the model
    carries, the label scale's systematic terms and the meaning of each FLAGS bit."""
    calibration = predictor.calibrations.get(str(predict.uncertainty))
    trained = predictor.provenance
    return {"model": model, "modelver": version or "none (a model file)", "weights": weights_sha256,
            "trained": trained.get("trained_on", "unknown"), "labsrc": trained.get("label_sources", "unknown"),
            **({"labtable": trained["label_table"]} if "label_table" in trained else {}),
            "dataver": trained.get("data_version", "unknown"), "labsha": trained.get("labels_sha256", "unknown"),
            "members": len(predictor.members), "draws": predict.draws, "seed": predict.seed, "errcap": predict.error_cap,
            "errref": str(predict.error_reference), "sigma": str(predict.uncertainty),
            "sigcal": f"{calibration.method} vs {calibration.reference}" if calibration else "none",
            "domthr": predictor.domain.threshold if predictor.domain else "none", **flag_header(predict.hot_teff),
            **systematics_header(predictor.systematics)}


def systematics_header(systematics: dict[str, dict[str, list[float]]]) -> dict[str, object]:
    """The label scale's systematic terms (:attr:`apogeenet.serving.Predictor.systematics`) as
    header keywords ``SYS`` + the source's initial + the parameter (``SYSMLOGG``: the MStar labels'
    log g minus the truth, dex), with ``SYSREF`` saying what they are; not part of any σ."""
    if not systematics:
        return {"sysref": "none: no truth measured the label scale (add the terms you know to your error budget)"}
    header: dict[str, object] = {"sysref": "label scale - truth per source, mean (SYS<source><param>), not in *_ERR"}
    for source, terms in systematics.items():
        for name, (bias, _, _) in terms.items():
            header[f"sys{source[0]}{name[:4]}"] = round(bias, 6)
    return header


def product_paths(out_dir: Path, name: str = "catalog") -> list[Path]:
    """The catalog files of a run named ``name``: all rows and the clean view, each as FITS,
    Parquet and CSV."""
    return [Path(out_dir) / f"{stem}.{kind}" for stem in (name, f"{name}_clean") for kind in CATALOG_KINDS]


def write_catalog(frames: dict[str, pd.DataFrame], out_dir: Path, meta: dict | None = None) -> list[Path]:
    """Each frame (by file stem) as FITS, Parquet and CSV (units in the FITS/Parquet metadata and
    the CSV header names). All files are written under temporary names first and then moved into
    place together (:func:`apogeenet.atomic.atomic_paths`): a kill leaves the previous catalog
    whole, never files of two runs or half a file."""
    paths = [out_dir / f"{stem}.{kind}" for stem in frames for kind in CATALOG_KINDS]
    with atomic_paths(paths) as temps:
        for (stem, frame), (fits_tmp, parquet_tmp, csv_tmp) in zip(frames.items(), zip(*[iter(temps)] * 3)):
            table = catalog_table(frame, meta)
            with warnings.catch_warnings():  # 'dex' is not a FITS-standard unit: astropy leaves TUNIT out
                warnings.filterwarnings("ignore", message=".*dex.*", category=AstropyUserWarning)
                table.write(fits_tmp, format="fits")
            _write_units_and_comments(fits_tmp, table)
            table.write(parquet_tmp, format="parquet")
            csv = frame.rename(columns={c: f"{c} [{unit}]" for c, unit in _UNITS.items()})
            csv.to_csv(csv_tmp, index=False, float_format="%.6g")
    return paths


def catalog_summary(frame: pd.DataFrame, truth: pd.DataFrame | None, source: str, model: str,
                    out_dir: Path) -> tuple[dict[str, float], str]:
    """Counts per flag, median σ of the clean view and the calibration of σ on the test split
    (:func:`write_calibration`, its files in ``out_dir``): (metrics, summary.md text)."""
    from apogeenet.reliability import write_calibration

    clean = frame[frame["FLAGS"] == 0]
    metrics = {"n_spectra": len(frame), "n_clean": len(clean),
               **{f"n_{flag.lower()}": int((frame["FLAGS"] & bit > 0).sum()) for flag, bit in FLAG_BITS.items()},
               "n_yso_candidates": int(frame["YSO_CANDIDATE"].sum())}
    lines = [f"Catalog of {len(frame)} spectra from {source} by {model}: {len(clean)} clean, "
             + ", ".join(f"{metrics[f'n_{flag.lower()}']} {flag}" for flag in FLAG_BITS)
             + f", {metrics['n_yso_candidates']} YSO candidates\n"]
    for name in LABEL_COLUMNS:
        for suffix in ("_ERR", "_ERR_MC", "_ERR_MODEL"):
            metrics[f"median_sigma{suffix.lower()[4:]}/{name.lower()}"] = (
                float(np.median(clean[f"{name}{suffix}"])) if len(clean) else np.nan)
    found, text = write_calibration(frame, truth, out_dir)
    metrics |= found
    return metrics, "".join(lines) + text


def write_products(frame: pd.DataFrame, out_dir: Path, meta: dict, *, truth: pd.DataFrame | None,
                   source: str, name: str = "catalog") -> tuple[dict, str]:
    """The catalog ``<name>.*`` and its clean view ``<name>_clean.*`` (:func:`write_catalog`), the
    §4 plots, the calibration reports and z histograms (test split), summary.md and metrics.json;
    returns (metrics, summary)."""
    import json

    clean = frame[frame["FLAGS"] == 0]
    write_catalog({name: frame, f"{name}_clean": clean}, out_dir, meta)
    kiel_by_type_plot(clean, out_dir / "kiel_by_type.png")
    sigma_snr_plot(clean, out_dir / "sigma_vs_snr.png")
    yso_selection_plot(frame, out_dir / "yso_selection.png")
    metrics, summary = catalog_summary(frame, truth, source, str(meta.get("model", "")), out_dir)
    for file, text in ((SUMMARY_FILE, summary), ("metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")):
        with atomic_path(out_dir / file) as tmp:
            tmp.write_text(text)
    return metrics, summary


_COLOURS = {**SOURCE_COLOURS, "none": "0.6"}


def kiel_by_type_plot(frame: pd.DataFrame, path: Path) -> Path:
    """Fig. 3 (bottom): Kiel diagram of the predictions coloured by data type."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for kind in _COLOURS:
        part = frame[frame["DATA_TYPE"] == kind]
        if len(part):
            ax.scatter(part["TEFF"], part["LOGG"], s=4, alpha=0.6, c=_COLOURS[kind], label=f"{kind} ({len(part)})")
    ax.invert_xaxis()
    ax.invert_yaxis()
    ax.set_xlabel("predicted Teff (K)")
    ax.set_ylabel("predicted log g (dex)")
    if len(frame):
        ax.legend(markerscale=3)
    return save(fig, path)


def sigma_snr_plot(frame: pd.DataFrame, path: Path) -> Path:
    """Fig. 4 (right): the method's (Monte-Carlo) σ against SNR for each parameter, and the calibrated σ."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (name, unit) in zip(axes, (("TEFF", "K"), ("LOGG", "dex"), ("FE_H", "dex"))):
        points = ax.scatter(frame["SNR"], frame[f"{name}_ERR_MC"], s=4, alpha=0.5, c=frame["TEFF"], cmap="coolwarm_r")
        ax.scatter(frame["SNR"], frame[f"{name}_ERR"], s=2, c="0.4", marker="_", label="calibrated")
        if len(frame):  # an empty clean view (every row flagged) has nothing to scale
            ax.set_xscale("log")
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no rows", transform=ax.transAxes, ha="center")
        ax.set_xlabel("SNR")
        ax.set_ylabel(f"sigma {name} ({unit}): method (colour), calibrated (grey)")
    fig.colorbar(points, ax=axes[-1], label="predicted Teff (K)")
    return save(fig, path)


def yso_selection_plot(frame: pd.DataFrame, path: Path) -> Path:
    """Fig. 7 (top): the §4.1 selection in the Kiel diagram and the candidates on the sky
    (Galactic coordinates), coloured by age bin."""
    from astropy.coordinates import SkyCoord

    plt = pyplot()
    fig, (kiel, sky) = plt.subplots(1, 2, figsize=(13, 5))
    clean = frame[frame["FLAGS"] == 0]
    kiel.scatter(clean["TEFF"], clean["LOGG"], s=3, c="0.75", label="all (clean)")
    polygon = np.array([*YSO_POLYGON, YSO_POLYGON[0]])
    kiel.plot(polygon[:, 0], polygon[:, 1], "k-", lw=1)
    candidates = clean[clean["YSO_CANDIDATE"]]
    for (_, _, name), colour in zip(AGE_BINS, plt.cm.viridis(np.linspace(0, 0.9, len(AGE_BINS)))):
        part = candidates[candidates["AGE_BIN"] == name]
        kiel.scatter(part["TEFF"], part["LOGG"], s=6, color=colour, label=f"{name} ({len(part)})")
        if len(part):
            gal = SkyCoord(ra=part["RA"].to_numpy() * u.deg, dec=part["DEC"].to_numpy() * u.deg).galactic
            sky.scatter(gal.l.wrap_at(180 * u.deg).deg, gal.b.deg, s=6, color=colour, label=name)
    kiel.invert_xaxis()
    kiel.invert_yaxis()
    kiel.set_xlabel("predicted Teff (K)")
    kiel.set_ylabel("predicted log g (dex)")
    kiel.legend(markerscale=3, fontsize=8)
    sky.invert_xaxis()
    sky.set_xlabel("Galactic l (deg)")
    sky.set_ylabel("Galactic b (deg)")
    sky.set_title(f"{len(candidates)} YSO candidates")
    return save(fig, path)
