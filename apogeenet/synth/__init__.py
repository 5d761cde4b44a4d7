"""The synthetic APOGEE survey: the embedded default that a fresh clone runs on."""
