"""File names inside the labels directory (``paths.labels``) that ``apogeenet label`` writes and
later stages read, without importing the machinery that makes them."""

from __future__ import annotations

__all__ = ["LABELS_FILE", "LABELS_FITS_FILE", "METRICS_FILE", "MSTAR_FILE", "REJECTS_FILE", "TABLE1_FILE", "YSO_FILE",
           "YSO_NET_FILE"]

LABELS_FILE = "labels.parquet"
LABELS_FITS_FILE = "labels.fits"
TABLE1_FILE = "table1.json"
YSO_NET_FILE = "yso_net.pt"
METRICS_FILE = "metrics.json"
MSTAR_FILE = "mstar_selection.parquet"
YSO_FILE = "yso_members.parquet"
REJECTS_FILE = "rejects.parquet"
"""APOGEE_ID and REASON of every input star that got no label."""
