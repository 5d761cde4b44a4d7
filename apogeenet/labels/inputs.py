"""The label stage's inputs as users have them: the allStar of DR16 or DR17 (its own column
names), a membership table or an ID list, one's own label table, and one check of every column
every enabled source needs, naming each file, before anything trains.

Which source needs what (README, "Inputs of each label source"):

* ``payne`` (§2.2): the Payne table's APOGEE_ID, TEFF, LOGG, FE_H.
* ``mstar`` (§2.3): from the allStar APOGEE_ID, J, H, K (2MASS), the Gaia parallax and its error,
  FIELD; PS1 g and r from a cross-match.
* ``yso`` (§2.4): from the allStar J, H, K, Gaia G, BP, RP, parallax and its error; WISE W1-W3
  and the Gaia DR2 FLAME radius and luminosity from a cross-match (with ``yso.noise: catalog``
  also each band's ``_ERR``); the membership table's APOGEE_ID and REGION, or an ID list.
* ``table``: the columns ``labels.table`` names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from apogeenet.config import LabelSource, LabelTable, Params, YSONoise
from apogeenet.errors import InputError
from apogeenet.labels.mdwarfs import COLUMN_ALIASES, veyette_logg
from apogeenet.labels.yso import CATALOG_COLUMNS

__all__ = ["ALLSTAR_NAMES", "ID_LIST_SUFFIXES", "LabelInputs", "read_id_list", "read_inputs", "read_members", "table_labels"]

#: DR16 (Gaia DR2) and DR17 (Gaia EDR3) allStar names -> the names the recipes use.
ALLSTAR_NAMES = {
    "GAIAEDR3_PARALLAX": "GAIA_PARALLAX", "GAIAEDR3_PARALLAX_ERROR": "GAIA_PARALLAX_ERROR",
    "GAIAEDR3_PHOT_G_MEAN_MAG": "GAIA_G", "GAIAEDR3_PHOT_BP_MEAN_MAG": "GAIA_BP",
    "GAIAEDR3_PHOT_RP_MEAN_MAG": "GAIA_RP",
    "GAIA_PHOT_G_MEAN_MAG": "GAIA_G", "GAIA_PHOT_BP_MEAN_MAG": "GAIA_BP", "GAIA_PHOT_RP_MEAN_MAG": "GAIA_RP",
    "RADIUS_VAL": "GAIA_RADIUS", "LUM_VAL": "GAIA_LUM",
}
ID_LIST_SUFFIXES = (".txt", ".lst", ".list", ".dat")
"""A membership file with one of these suffixes is a list of APOGEE IDs, one a line (as the
paper's group released its YSO candidates)."""
MAX_ID_LIST_BYTES = 64 << 20


def _allstar_columns(cfg: Params) -> dict[LabelSource, list[tuple[str, ...]]]:
    """Per source, the allStar quantities it needs: each a tuple of accepted names."""
    mdwarf = [COLUMN_ALIASES[name] for name in ("g", "r", "J", "H", "K", "parallax", "parallax_error", "field")]
    yso = [(column,) for column in CATALOG_COLUMNS.values()] + [("GAIA_RADIUS",), ("GAIA_LUM",)]
    yso += [COLUMN_ALIASES["parallax"], COLUMN_ALIASES["parallax_error"]]
    if cfg.yso.noise is YSONoise.CATALOG:
        yso += [(f"{column}_ERR",) for column in CATALOG_COLUMNS.values()]
    return {LabelSource.MSTAR: mdwarf, LabelSource.YSO: yso}


def normalise_allstar(frame: pd.DataFrame) -> pd.DataFrame:
    """APOGEE_ID upper-cased and the DR16/DR17 Gaia names renamed (:data:`ALLSTAR_NAMES`) where
    the recipes' own name is absent."""
    renames = {c: "APOGEE_ID" for c in frame.columns if c.lower() == "apogee_id"}
    upper = {c.upper(): c for c in frame.columns}
    for release_name, name in ALLSTAR_NAMES.items():
        if release_name in upper and name not in upper:
            renames[upper[release_name]] = name
    return frame.rename(columns=renames)


def read_members(path: str | os.PathLike) -> pd.DataFrame:
    """APOGEE_ID and REGION of young-region members: a table (Kounkel et al. 2018 format) or an ID
    list (REGION empty: the allStar's FIELD stands in)."""
    from apogeenet.io.tables import read_table

    path = Path(path)
    if path.suffix.lower() not in ID_LIST_SUFFIXES:
        return read_table(path).rename(columns=str.upper)
    return pd.DataFrame({"APOGEE_ID": read_id_list(path), "REGION": ""})


def read_id_list(path: str | os.PathLike) -> list[str]:
    """The APOGEE IDs of a text file, one a line (the first word; blank and # lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size > MAX_ID_LIST_BYTES:
        raise InputError(f"{path}: larger than {MAX_ID_LIST_BYTES >> 20} MB; not an ID list")
    return [line.split()[0] for line in path.read_text(errors="replace").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def table_labels(table: pd.DataFrame, spec: LabelTable) -> pd.DataFrame:
    """APOGEE_ID, TEFF, LOGG, FE_H and LABEL_FLAGS (0) from one's own label table; log g by eq. 3
    (Veyette et al. 2017) when ``spec.logg`` is null."""
    lower = {c.lower(): c for c in table.columns}
    column = {name: lower[given.lower()] for name, given in
              (("APOGEE_ID", spec.id), ("TEFF", spec.teff), ("FE_H", spec.fe_h), ("LOGG", spec.logg)) if given}
    out = pd.DataFrame({"APOGEE_ID": table[column["APOGEE_ID"]].astype(str).str.strip()})
    for name in ("TEFF", "FE_H", "LOGG"):
        if name in column:
            out[name] = pd.to_numeric(table[column[name]], errors="coerce").to_numpy(float)
    if "LOGG" not in column:
        out["LOGG"] = veyette_logg(out["TEFF"].to_numpy(), out["FE_H"].to_numpy())
    out["LABEL_FLAGS"] = np.int32(0)
    return out[["APOGEE_ID", "TEFF", "LOGG", "FE_H", "LABEL_FLAGS"]]


@dataclass
class LabelInputs:
    """The tables the enabled sources read (None where no source reads one)."""

    allstar: pd.DataFrame | None = None
    payne: pd.DataFrame | None = None
    members: pd.DataFrame | None = None
    table: pd.DataFrame | None = None


def read_inputs(cfg: Params) -> LabelInputs:
    """Read what ``labels.sources`` needs and check every column of every input at once: one
    error names each file and all it lacks."""
    from apogeenet.io.tables import read_table

    sources, paths = set(cfg.labels.sources), cfg.paths
    inputs = LabelInputs()
    if sources & {LabelSource.MSTAR, LabelSource.YSO}:
        inputs.allstar = normalise_allstar(read_table(paths.allstar))
    if LabelSource.PAYNE in sources:
        inputs.payne = read_table(paths.payne)
    if LabelSource.YSO in sources:
        inputs.members = read_members(paths.members)
    if LabelSource.TABLE in sources:
        inputs.table = read_table(paths.label_table)
    problems = []

    def lacks(path, frame, needed: list[tuple[str, ...]], why: str) -> None:
        present = set(frame.columns) | {c.upper() for c in frame.columns}
        missing = [names[0] if len(names) == 1 else f"{names[0]} (or {', '.join(names[1:])})"
                   for names in needed if not any(n in present or n.upper() in present for n in names)]
        if missing:
            problems.append(f"{path} lacks {', '.join(dict.fromkeys(missing))} ({why})")

    needs = _allstar_columns(cfg)
    for source in (LabelSource.MSTAR, LabelSource.YSO):
        if source in sources:
            lacks(paths.allstar, inputs.allstar, [("APOGEE_ID",)] + needs[source], f"labels source {source.value}")
    if inputs.payne is not None:
        lacks(paths.payne, inputs.payne, [(c,) for c in ("APOGEE_ID", "TEFF", "LOGG", "FE_H")], "labels source payne")
    if inputs.members is not None:
        lacks(paths.members, inputs.members, [("APOGEE_ID",), ("REGION",)], "labels source yso")
    if inputs.table is not None:
        spec = cfg.labels.table
        lacks(paths.label_table, inputs.table, [(c,) for c in (spec.id, spec.teff, spec.logg, spec.fe_h) if c],
              "labels source table: the names in labels.table")
    if problems:
        raise InputError("; ".join(problems) + " (README, \"Inputs of each label source\")")
    return inputs
