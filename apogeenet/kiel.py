"""Regions of the Kiel diagram the paper names: the §4.1 triangle of young stars."""

from __future__ import annotations

import numpy as np

__all__ = ["YSO_POLYGON", "in_yso_polygon"]

YSO_POLYGON = ((2200.0, 4.4), (4500.0, 3.9), (3200.0, 1.7))


def in_yso_polygon(teff: np.ndarray, logg: np.ndarray) -> np.ndarray:
    """True inside the §4.1 (Teff, log g) triangle of young stars."""
    from matplotlib.path import Path as Polygon

    points = np.column_stack([np.asarray(teff, float), np.asarray(logg, float)])
    return Polygon(YSO_POLYGON).contains_points(points)
