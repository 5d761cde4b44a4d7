"""The expectation suites, built from ``params.yaml`` values so the cuts live in one place.

* ``mdwarf_cuts``: every selected M dwarf satisfies the §2.3 photometric and parallax cuts and
  is outside the young fields;
* ``labels_payne``, ``labels_mstar``, ``labels_yso``, ``labels_table``: the label ranges of
  ``labels.ranges`` per source (and the §2.2 cut);
* ``catalog_integrity``: unique IDs, no missing values, known sources and splits, every star with
  a spectrum, split fractions within the tolerance of 80/10/10 and 60/20/20 beyond binomial noise;
* ``catalog_schema``: the label catalog has APOGEE_ID, TEFF, LOGG, FE_H, SOURCE and SPLIT, the
  labels numeric (a missing or text column is a failing expectation, not a crash);
* ``table1``: ``table1.json`` parses and equals Table 1 of the catalog's training split;
* ``spectra_store``: 8575 pixels, enough pixels with data, S/N > 0, one file per star (unless
  ``validation.allow_duplicate_stars``: real releases hold some stars from two fields or
  telescopes; training and the clean catalog then take each star's highest-S/N file).
"""

from __future__ import annotations

import great_expectations as gx
from great_expectations import expectations as gxe

from apogeenet.config import LabelRange, LabelSource
from apogeenet.labels.catalog import SOURCES
from apogeenet.labels.mdwarfs import MIN_PARALLAX_OVER_ERROR, SELECTION_BOX

__all__ = ["build_suites"]


def _between(column, lo, hi, *, strict=False, mostly=1.0):
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi,
                                             strict_min=strict, strict_max=strict, mostly=mostly)


def build_suites(*, young_fields: list[str], store_ids: list[str], split_tolerance: float,
                 min_finite_fraction: float, ranges: dict[LabelSource, LabelRange],
                 allow_duplicate_stars: bool = False) -> dict[str, gx.ExpectationSuite]:
    cuts = [_between(column, *SELECTION_BOX[key], strict=True)
            for column, key in (("J_K", "J-K"), ("G_K", "g-K"), ("M_K", "M_K"))]
    cuts += [gxe.ExpectColumnValuesToBeBetween(column="PARALLAX_OVER_ERROR",
                                               min_value=MIN_PARALLAX_OVER_ERROR, strict_min=True),
             gxe.ExpectColumnValuesToNotBeInSet(column="FIELD", value_set=list(young_fields))]
    expectations = {"catalog_schema": [gxe.ExpectColumnValuesToBeInSet(column="PRESENT", value_set=[True]),
                                       gxe.ExpectColumnValuesToBeInSet(column="NUMERIC", value_set=[True])],
                    "mdwarf_cuts": cuts}
    for source, limits in ranges.items():
        checks = [_between(column, *getattr(limits, column.lower())) for column in ("TEFF", "LOGG", "FE_H")]
        if source is LabelSource.PAYNE:
            checks.append(gxe.ExpectColumnValuesToBeInSet(column="PASSES_PAYNE_CUT", value_set=[True]))
        expectations[f"labels_{source.value}"] = checks
    expectations["catalog_integrity"] = [
        gxe.ExpectColumnValuesToBeUnique(column="APOGEE_ID"),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("APOGEE_ID", "TEFF", "LOGG", "FE_H", "SOURCE", "SPLIT")),
        gxe.ExpectColumnValuesToBeInSet(column="SOURCE", value_set=list(SOURCES)),
        gxe.ExpectColumnValuesToBeInSet(column="SPLIT", value_set=["train", "dev", "test"]),
        gxe.ExpectColumnValuesToBeInSet(column="APOGEE_ID", value_set=list(store_ids)),
    ]
    expectations["split_fractions"] = [_between("BEYOND_NOISE", 0.0, split_tolerance)]
    expectations["table1"] = [gxe.ExpectColumnValuesToBeInSet(column="AGREES", value_set=[True])]
    expectations["spectra_store"] = [
        _between("N_PIXELS", 8575, 8575),
        _between("FINITE_FRACTION", min_finite_fraction, 1.0),
        gxe.ExpectColumnValuesToBeBetween(column="SNR", min_value=0, strict_min=True),
        *([] if allow_duplicate_stars else [gxe.ExpectColumnValuesToBeUnique(column="APOGEE_ID")]),
    ]
    return {name: gx.ExpectationSuite(name=name, expectations=list(items))
            for name, items in expectations.items()}
