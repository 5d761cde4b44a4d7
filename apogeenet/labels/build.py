"""Build the training labels of a survey: Payne (§2.2), M dwarfs (§2.3), YSOs (§2.4), combined.

Inputs are the survey's catalogs (allStar-like table, Payne-format table, Kounkel-format
membership table); outputs are the label catalog with splits, Table 1, the trained YSO network
and its held-out precision. YSO [Fe/H] labels are 0 (the isochrones are solar, as the paper
assumes for nearby star-forming regions). A member's distance is 1/ϖ where ϖ/σ > 5, else the
median of its region's members that have one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from apogeenet.config import LabelRange, LabelSource, LabelsParams, Recipe, YSONoise, YSOParams
from apogeenet.isochrones import Isochrones
from apogeenet.labels.files import (LABELS_FILE, LABELS_FITS_FILE, METRICS_FILE, MSTAR_FILE, REJECTS_FILE,
                                    TABLE1_FILE, YSO_FILE, YSO_NET_FILE)
from apogeenet.labels.catalog import (LABEL_COLUMNS, SOURCES, SPLITS, Normalisation, combine_labels, label_fractions,
                                      normalisation)
from apogeenet.labels.inputs import LabelInputs, table_labels
from apogeenet.labels.mdwarfs import find_columns, mdwarf_labels, select_mdwarfs
from apogeenet.labels.payne import payne_labels
from apogeenet.labels.yso import (PhotometricNoise, YSOModel, features_from_catalog, synthetic_photometry,
                                  train_yso_net)
from apogeenet.portable import TABLE_BITS, exact_sum, quantise_frame

__all__ = ["LabelSet", "build_labels", "member_distances", "mstar_labels", "train_yso",
           "yso_labels", "yso_noise"]


@dataclass
class LabelSet:
    catalog: pd.DataFrame
    table1: Normalisation
    mstar: pd.DataFrame          # every allStar row with its selection columns and labels
    yso: pd.DataFrame            # members with network predictions
    yso_model: YSOModel | None   # None: no YSO source
    yso_precision: dict[str, float]
    yso_history: list[dict]
    rejects: pd.DataFrame        # APOGEE_ID, REASON of every input star without a label


def mstar_labels(allstar: pd.DataFrame, *, recipe: Recipe, young_fields: set[str]) -> pd.DataFrame:
    """Selection and labels of §2.3 for every row of an allStar-like table."""
    cols = find_columns(allstar, ("g", "r", "J", "H", "K", "parallax", "parallax_error", "field"))
    selection = select_mdwarfs(allstar[cols["J"]], allstar[cols["K"]], allstar[cols["g"]],
                               allstar[cols["parallax"]], allstar[cols["parallax_error"]],
                               allstar[cols["field"]], excluded_fields=young_fields)
    labels = mdwarf_labels(*(allstar[cols[b]] for b in ("g", "r", "J", "H", "K")),
                           m_k=selection["M_K"], recipe=recipe)
    table = pd.concat([allstar[["APOGEE_ID"]].reset_index(drop=True), selection, labels], axis=1)
    return quantise_frame(table, TABLE_BITS)


def yso_noise(cfg: YSOParams, allstar: pd.DataFrame) -> PhotometricNoise | None:
    """The training photometry's noise (see :mod:`apogeenet.labels.yso`): None for ``none``."""
    if cfg.noise is YSONoise.NONE:
        return None
    return PhotometricNoise.from_catalog(allstar, radius_lum=cfg.noise_radius_lum, distance=cfg.noise_distance)


def train_yso(isochrones: Isochrones, cfg: YSOParams, noise: PhotometricNoise | None = None,
              on_epoch=None) -> tuple[YSOModel, dict, list]:
    """Train the photometric network and measure it on a separate synthetic sample made the same
    way (with the same ``noise``)."""
    x, y = synthetic_photometry(isochrones, cfg.n_train, cfg.seed, noise)
    model, history = train_yso_net(x, y, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                   learning_rate=cfg.learning_rate, seed=cfg.seed, on_epoch=on_epoch)
    x_test, y_test = synthetic_photometry(isochrones, cfg.n_test, cfg.seed + 1, noise)
    pred = model.predict(x_test)
    precision = {}
    for name in ("log_age", "log_mass", "av", "log_teff", "logg"):
        diff = pred[name].to_numpy() - y_test[name].to_numpy()
        precision[f"{name}_rms"] = float(np.sqrt(exact_sum(diff * diff) / diff.size))
    return model, precision, history


def member_distances(members: pd.DataFrame, allstar: pd.DataFrame) -> np.ndarray:
    """Distance (pc) per member: 1/ϖ where ϖ/σ > 5, else the region's median of those."""
    cols = find_columns(allstar, ("parallax", "parallax_error"))
    joined = members.merge(allstar, on="APOGEE_ID", how="left", suffixes=("", "_ALLSTAR"))
    plx, err = joined[cols["parallax"]].to_numpy(float), joined[cols["parallax_error"]].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        good = plx / err > 5
        distance = np.where(good, 1000.0 / plx, np.nan)
    region = joined["REGION"].to_numpy(str)
    for name in np.unique(region):
        pick = region == name
        fallback = np.nanmedian(distance[pick & good]) if (pick & good).any() else np.nanmedian(distance[good])
        distance[pick & ~good] = fallback
    return distance


def yso_labels(members: pd.DataFrame, allstar: pd.DataFrame, model: YSOModel,
               isochrones: Isochrones) -> pd.DataFrame:
    """Network predictions for the members found in the allStar table (G required).

    ``IN_GRID`` is False where the prediction leaves the (Teff, log g) range of the isochrones
    the network was trained on (1-100 Myr): an extrapolation, kept in this table, not trained on.
    """
    members = members.rename(columns=str.upper)
    members = members[members["APOGEE_ID"].isin(allstar["APOGEE_ID"])].reset_index(drop=True)
    distance = member_distances(members[["APOGEE_ID", "REGION"]], allstar)
    joined = members[["APOGEE_ID", "REGION"]].merge(allstar, on="APOGEE_ID", how="left")
    x = features_from_catalog(joined, distance)
    pred = model.predict(x)
    has_g = np.isfinite(joined["GAIA_G"].to_numpy(float)) & np.isfinite(distance)
    out = pd.DataFrame({"APOGEE_ID": joined["APOGEE_ID"], "REGION": joined["REGION"],
                        "DISTANCE": distance, "TEFF": pred["teff"], "LOGG": pred["logg"], "FE_H": 0.0,
                        "AGE": pred["age"], "MASS": pred["mass"], "AV": pred["av"]})
    young = isochrones.table[isochrones.table["age"] <= 100]
    out["IN_GRID"] = (out["TEFF"].between(young["Teff"].min(), young["Teff"].max())
                      & out["LOGG"].between(young["logg"].min(), young["logg"].max()))
    return quantise_frame(out[has_g].reset_index(drop=True), TABLE_BITS)


def _reasons(ids, reason) -> pd.DataFrame:
    """One reject row per ID (``reason``: one text or one per ID)."""
    ids = pd.Series(ids, dtype=object).astype(str).to_numpy()
    return pd.DataFrame({"APOGEE_ID": ids, "REASON": np.broadcast_to(np.asarray(reason, dtype=object), ids.shape)})


def _range_reasons(part: pd.DataFrame, source: str, limits: LabelRange) -> tuple[pd.DataFrame, np.ndarray]:
    """The reasons rows of ``part`` cannot be labels (a label missing or outside ``limits``) and
    the mask of those that can."""
    reason = np.full(len(part), "", dtype=object)
    for column in LABEL_COLUMNS:
        values = part[column].to_numpy(float)
        low, high = getattr(limits, column.lower())
        reason = np.where(~np.isfinite(values) & (reason == ""), f"{source}: no {column}", reason)
        outside = np.isfinite(values) & ((values < low) | (values > high)) & (reason == "")
        reason[outside] = [f"{source}: {column} {v:.6g} outside labels.ranges.{source.lower()} [{low:g}, {high:g}]"
                           for v in values[outside]]
    ok = reason == ""
    return _reasons(part["APOGEE_ID"][~ok], reason[~ok]), ok


def _mstar_reasons(mstar: pd.DataFrame) -> pd.DataFrame:
    """Why each allStar row is not a §2.3 M dwarf."""
    out = mstar[~mstar["SELECTED"]]
    reason = np.where(out["YOUNG_FIELD"], "MSTAR: in a young field (labels.young_fields)",
                      np.where(~out["IN_BOX"], "MSTAR: outside the §2.3 colour and M_K box",
                               "MSTAR: parallax/error <= 3 (§2.3)"))
    return _reasons(out["APOGEE_ID"], reason)


def build_labels(inputs: LabelInputs, isochrones: Isochrones, *, labels: LabelsParams, yso: YSOParams,
                 store_ids: set[str] | None = None, previous_splits: dict[str, str] | None = None,
                 on_epoch=None) -> LabelSet:
    """Everything of §2 for the sources ``labels.sources``: their labels, the combined catalog with
    splits (of the stars with a spectrum in the store, when ``store_ids`` are given), Table 1, and
    a reject row with its reason for every input star that got no label."""
    sources, parts, rejects = set(labels.sources), {}, []
    allstar = inputs.allstar
    mstar = pd.DataFrame({"APOGEE_ID": pd.Series(dtype=str), "SELECTED": pd.Series(dtype=bool)})
    ysos = pd.DataFrame({"APOGEE_ID": pd.Series(dtype=str), "IN_GRID": pd.Series(dtype=bool)})
    model, precision, history = None, {}, []
    if LabelSource.PAYNE in sources:
        kept = payne_labels(inputs.payne)
        payne = inputs.payne.rename(columns=str.upper)
        rejects.append(_reasons(payne.loc[~payne["APOGEE_ID"].isin(kept["APOGEE_ID"]), "APOGEE_ID"],
                                "PAYNE: Teff <= 4000 K and log g >= 3.5, or a label missing (§2.2)"))
        parts["PAYNE"] = kept
    if LabelSource.MSTAR in sources:
        mstar = mstar_labels(allstar, recipe=labels.recipe, young_fields=set(labels.young_fields))
        parts["MSTAR"] = mstar[mstar["SELECTED"]]
        rejects.append(_mstar_reasons(mstar))
    if LabelSource.YSO in sources:
        members = inputs.members.rename(columns=str.upper)
        fields = allstar.set_index("APOGEE_ID")[find_columns(allstar, ("field",))["field"]]
        fields = fields[~fields.index.duplicated()]
        region = members["REGION"].astype(str).replace("", np.nan)
        members = members.assign(REGION=region.fillna(members["APOGEE_ID"].map(fields)).fillna("").astype(str))
        model, precision, history = train_yso(isochrones, yso, yso_noise(yso, allstar), on_epoch=on_epoch)
        ysos = yso_labels(members, allstar, model, isochrones)
        parts["YSO"] = ysos[ysos["IN_GRID"]]
        rejects.append(_reasons(members.loc[~members["APOGEE_ID"].isin(ysos["APOGEE_ID"]), "APOGEE_ID"],
                                "YSO: not in the allStar, or no Gaia G or distance (§2.4)"))
        rejects.append(_reasons(ysos.loc[~ysos["IN_GRID"], "APOGEE_ID"], "YSO: prediction outside the isochrone grid"))
    if LabelSource.TABLE in sources:
        table = table_labels(inputs.table, labels.table)
        reasons, ok = _range_reasons(table, "TABLE", labels.ranges[LabelSource.TABLE])
        parts["TABLE"] = table[ok]
        rejects.append(reasons)
    if store_ids is not None:
        for source, part in parts.items():
            has_spectrum = part["APOGEE_ID"].isin(store_ids).to_numpy()
            rejects.append(_reasons(part.loc[~has_spectrum, "APOGEE_ID"], f"{source}: no spectrum in the store"))
            parts[source] = part[has_spectrum]
    catalog = combine_labels(parts, label_fractions(labels), previous_splits)
    rejected = pd.concat(rejects, ignore_index=True) if rejects else _reasons([], "")
    rejected = rejected[~rejected["APOGEE_ID"].isin(catalog["APOGEE_ID"])].drop_duplicates()
    several = rejected["APOGEE_ID"].duplicated(keep=False)  # joined only where a star has several reasons
    joined = rejected[several].groupby("APOGEE_ID", sort=False)["REASON"].agg("; ".join).reset_index()
    rejected = pd.concat([rejected[~several], joined]).sort_values("APOGEE_ID", kind="stable").reset_index(drop=True)
    return LabelSet(catalog, normalisation(catalog), mstar, ysos, model, precision, history, rejected)


def label_metrics(label_set: LabelSet) -> dict:
    """Counts per source and split, flagged M dwarfs and the YSO network's held-out precision."""
    catalog = label_set.catalog
    counts = catalog.groupby(["SOURCE", "SPLIT"]).size()
    metrics: dict = {"n_labels": int(len(catalog))}
    for (source, split), n in counts.items():
        metrics[f"{source.lower()}_{split}"] = int(n)
    mstar = catalog[catalog["SOURCE"] == "MSTAR"]
    metrics["mstar_flagged"] = int((mstar["LABEL_FLAGS"] != 0).sum())
    metrics["yso_outside_grid"] = int((~label_set.yso["IN_GRID"].astype(bool)).sum())
    metrics["n_rejected"] = int(len(label_set.rejects))
    metrics.update({f"yso_net_{k}": round(v, 5) for k, v in label_set.yso_precision.items()})
    metrics["table1"] = {k: round(v, 4) for k, v in label_set.table1.to_dict().items()}
    return metrics


def save_label_set(label_set: LabelSet, out_dir) -> dict:
    """Write the catalog (Parquet and FITS with units), Table 1, the YSO network, the M-dwarf
    selection, the YSO predictions and ``metrics.json``, each atomically (a kill leaves each file
    old or new, never torn); returns the metrics."""
    import json

    from apogeenet.atomic import atomic_path
    from apogeenet.io.tables import write_table
    from apogeenet.weights import save_weights

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    units = {"TEFF": "K"}
    tables = ((label_set.catalog, LABELS_FILE, units), (label_set.catalog, LABELS_FITS_FILE, units),
              (label_set.mstar, MSTAR_FILE, {"TEFF": "K", "M_K": "mag"}),
              (label_set.yso, YSO_FILE, {"TEFF": "K", "DISTANCE": "pc", "AGE": "Myr", "MASS": "solMass", "AV": "mag"}),
              (label_set.rejects, REJECTS_FILE, {}))
    for frame, name, table_units in tables:
        write_table(frame, out_dir / name, units=table_units, overwrite=True)
    metrics = label_metrics(label_set)
    if label_set.yso_model is not None:
        save_weights(label_set.yso_model.state(), out_dir / YSO_NET_FILE)
    for name, content in ((TABLE1_FILE, label_set.table1.to_dict()), (METRICS_FILE, metrics)):
        with atomic_path(out_dir / name) as tmp:
            tmp.write_text(json.dumps(content, indent=2) + "\n")
    return metrics


def read_splits(labels_file: Path) -> dict[str, str] | None:
    """APOGEE_ID -> SPLIT of an earlier label catalog (None when there is none): kept, so that
    adding stars never moves one from a split to another."""
    from apogeenet.io.tables import read_table

    if not Path(labels_file).exists():
        return None
    earlier = read_table(labels_file)
    return dict(zip(earlier["APOGEE_ID"], earlier["SPLIT"]))


def label_counts(metrics: dict) -> dict[str, int]:
    """The per-source, per-split counts among :func:`label_metrics` (``payne_train``, ...)."""
    return {k: v for k, v in metrics.items()
            if k.split("_")[0] in {source.lower() for source in SOURCES} and k.split("_")[-1] in SPLITS}
