"""APOGEE Net (Olney et al. 2020): stellar parameters from APOGEE spectra."""

__version__ = "0.1.0"
