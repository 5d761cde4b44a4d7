"""The one place that reads ``params.yaml``: typed, validated, frozen parameters.

The defaults here are exactly ``params.yaml``'s (tests/unit/test_defaults.py), and a library
function that needs a setting takes its section (``PredictParams``, ``TrainProfile``, ...), never a
default of its own. The CLI and the flows change a setting only through
:meth:`Params.with_overrides`, validated like the file (STYLE §2).
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator, model_validator

from apogeenet.errors import UserFacingError

_Model = TypeVar("_Model", bound=BaseModel)

__all__ = ["AdaptParams", "AdaptTraining", "Augment", "Baseline", "BaselinesParams", "ConfigError", "DaskParams", "ErrorReference", "FluxUnit", "LabelRange", "LabelSource", "LabelTable", "LabelsParams", "Loss", "Optimizer", "Params", "PredictParams", "Recipe", "Release", "validated",
           "Schedule", "SlurmParams", "StopOn", "TrainProfile", "Uncertainty", "YSONoise", "YSOParams", "load_params"]

DEFAULT_PARAMS_FILE = Path("params.yaml")


class ConfigError(UserFacingError):
    """``params.yaml`` is missing a key, has a wrong type or an out-of-range value."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


Seed = Annotated[int, Field(ge=0, lt=2**32)]
"""A random seed: numpy and torch take any integer in [0, 2³²)."""
MAX_PARAMS_BYTES = 1 << 20
"""A params.yaml is a few kB; a larger file is refused before it is parsed."""
MAX_PATH_CHARS = 4096
"""PATH_MAX on Linux: a longer path cannot be opened anyway."""
DASK_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")
Positive = Annotated[float, Field(gt=0)]
HuberDelta = Positive | tuple[Positive, Positive, Positive]
"""Where a Huber loss turns linear, in Table 1 standard deviations: one for all three parameters,
or [Teff, log g, [Fe/H]]."""


def per_parameter(delta: HuberDelta) -> tuple[float, float, float]:
    """A :data:`HuberDelta` as (Teff, log g, [Fe/H])."""
    return tuple(delta) if isinstance(delta, tuple) else (float(delta),) * 3


class Optimizer(StrEnum):
    SGD = "sgd"    # the paper
    ADAM = "adam"


class Schedule(StrEnum):
    CONSTANT = "constant"  # the paper
    ONECYCLE = "onecycle"  # one cycle over max_epochs peaking at the learning rate


class FluxUnit(StrEnum):
    CONSTANT = "constant"          # raw flux over one constant, the training median (the paper)
    PER_SPECTRUM = "per_spectrum"  # each spectrum over its own median good pixel


class Augment(StrEnum):
    NONE = "none"    # the observed spectra as they are (the paper)
    NOISE = "noise"  # each epoch a fresh draw of noise from each spectrum's own (capped) errors


class Loss(StrEnum):
    MSE = "mse"      # eq. 4: the mean squared error of the standardised labels (the paper)
    HUBER = "huber"  # quadratic within huber_delta, linear beyond: label outliers pull less


class Engine(StrEnum):
    FAST = "fast"    # the training kernels of apogeenet.train_kernels, the split held in memory
    EAGER = "eager"  # the Conv1d stack, batches read from the store: the reference


class Recipe(StrEnum):
    RELEASED = "released"  # the M-dwarf relations as the paper's released catalog applied them
    PAPER = "paper"        # eqs. 1-3 as printed (§2.3)


class YSONoise(StrEnum):
    CATALOG = "catalog"  # the allStar's own errors on the training photometry
    NONE = "none"        # no scatter (the paper)


class StopOn(StrEnum):
    GROUPS = "groups"  # both the MSTAR and the YSO dev MSE must fall (apogeenet.adapt)
    FOCUS = "focus"    # MSTAR + YSO pooled
    ALL = "all"        # every dev star


class ErrorReference(StrEnum):
    MEAN = "mean"      # the paper
    MEDIAN = "median"  # robust on real apStar files


class Uncertainty(StrEnum):
    MONTE_CARLO = "monte_carlo"  # the paper's draws (§3.5)
    DELTA = "delta"              # first-order propagation of the same pixel σ
    NONE = "none"                # the single pass only: σ columns NaN


class Release(StrEnum):
    DR14 = "dr14"
    DR16 = "dr16"
    DR17 = "dr17"


class PathsParams(_Section):
    """Every file and directory a stage reads or writes; dvc.yaml templates the same keys."""

    allstar: Path | None = Path("data/synth/allStar-synth.fits")
    """allStar (DR16 or DR17 column names) with the cross-matched photometry the M-dwarf and YSO
    recipes need (README, "Inputs of each label source"); under ``data/``, as every raw input, it
    is versioned by ``data.dvc``. Null: no M-dwarf or YSO labels."""
    payne: Path | None = Path("data/synth/payne-synth.fits")
    """Payne-format labels (§2.2); null: no Payne labels."""
    members: Path | None = Path("data/synth/members-kounkel2019-synth.fits")
    """Membership of young regions (§2.4): a Kounkel-format table or an ID list (one APOGEE_ID a
    line); null: no YSO labels."""
    label_table: Path | None = None
    """Your own labels (labels source ``table``): any FITS/CSV/Parquet table with an ID column and
    Teff, log g, [Fe/H] (names in ``labels.table``); null: none."""
    truth: Path | None = Path("data/synth/truth-synth.fits")
    """True parameters of a synthetic survey (null for real data): evaluate and predict compare
    against it when the file exists."""
    spectra: Path = Path("data/synth/apStar")
    """The apStar tree that ``ingest`` reads."""
    store: Path = Path("derived/store")
    """Spectra store written by ``apogeenet ingest`` (outside ``data/``)."""
    labels: Path = Path("derived/labels")
    """Label catalog, Table 1 and the YSO network (``apogeenet label``)."""
    validation: Path = Path("derived/validation")
    """Great Expectations results and Data Docs (``apogeenet validate``)."""
    model: Path = Path("derived/model")
    """Trained network, checkpoints, Tables 2/3 and plots (``apogeenet train``)."""
    adapted: Path = Path("derived/adapted")
    """The adapted network (§3.4) and its Tables 2/3 (``apogeenet adapt``)."""
    calibrated: Path = Path("derived/calibrated")
    """The model with its σ calibration and domain reference (``apogeenet calibrate``): what
    evaluate judges, the registry holds and predict uses."""
    evaluation: Path = Path("derived/evaluation")
    """Quality bar and adaptation check of the calibrated model against the trained one."""
    baselines: Path = Path("derived/baselines")
    """Ridge and The Cannon: predictions, Tables 2/3 and metrics per model (``apogeenet baselines``)."""
    catalog: Path = Path("derived/catalog")
    """The Table 4 catalog (FITS, Parquet, CSV), §4 products and plots (``apogeenet predict``)."""

    @field_validator("*")
    @classmethod
    def _length(cls, value: Path | None) -> Path | None:
        if value is not None and (len(str(value)) > MAX_PATH_CHARS or "\0" in str(value)):
            raise ValueError(f"not a usable path (longer than {MAX_PATH_CHARS} characters or with a NUL byte)")
        return value


POPULATIONS = ("giant", "dwarf", "mdwarf", "yso", "field")


class SynthParams(_Section):
    n_stars: int = Field(2000, ge=1, le=1_000_000)
    seed: Seed = 42
    chunk: int = Field(256, ge=1)
    """Stars whose spectra are computed together (bounds memory)."""
    fractions: dict[str, float] = {"giant": 0.35, "dwarf": 0.25, "mdwarf": 0.2, "yso": 0.15,
                                   "field": 0.05}

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(POPULATIONS)
        if unknown:
            raise ValueError(f"unknown population(s) {sorted(unknown)}; use {list(POPULATIONS)}")
        if any(v < 0 for v in value.values()) or abs(sum(value.values()) - 1) > 1e-6:
            raise ValueError(f"fractions must be >= 0 and sum to 1, got {sum(value.values()):.4f}")
        return value


class IngestParams(_Section):
    workers: int = Field(2, ge=1)
    max_file_mb: float = Field(256.0, gt=0, le=65536)
    """Largest apStar file read (ingest, inspect, predict FILE): a larger one is a reject row,
    never read into memory (apStar files are a few MB; a star with hundreds of visits tens)."""
    segment_rows: int = Field(256, ge=1)
    """Files per ingest shard: read by one worker, their spectra written as one contiguous segment."""


class DownloadParams(_Section):
    release: Release = Release.DR17
    base_url: HttpUrl = HttpUrl("https://data.sdss.org/sas")
    workers: int = Field(4, ge=1, le=32)
    retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    deadline_s: float = Field(3600.0, gt=0)
    """Longest time for one file, retries included (a server sending a byte now and then never
    times out)."""
    max_file_mb: float = Field(256.0, gt=0)
    """Largest apStar file accepted; a larger body is discarded (apStar files are a few MB)."""
    max_catalog_mb: float = Field(16384.0, gt=0)
    """Largest allStar file accepted by ``download-catalog`` (DR17's is a few GB)."""
    allowed_hosts: tuple[str, ...] = ()
    """Hosts besides the SAS URL's own that redirects may lead to (a mirror)."""
    ids: Path | None = None
    """Only the stars of this file of APOGEE IDs (one a line); null: every row of the catalog."""
    limit: int | None = Field(None, ge=1)
    """At most this many catalog rows (after ``ids``); null: all."""


class LabelSource(StrEnum):
    PAYNE = "payne"
    MSTAR = "mstar"
    YSO = "yso"
    TABLE = "table"


Interval = Annotated[tuple[float, float], Field(description="[low, high]")]


class LabelRange(_Section):
    """The labels a source may hold (the validation gate's ranges: K, dex, dex)."""

    teff: Interval
    logg: Interval
    fe_h: Interval

    @model_validator(mode="after")
    def _ordered(self) -> LabelRange:
        for name in ("teff", "logg", "fe_h"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"{name}: [low, high] with low < high, got [{low}, {high}]")
        return self


class LabelTable(_Section):
    """How ``paths.label_table`` is read: the column of each quantity (any case)."""

    description: str = Field("your labels", min_length=1, max_length=80)
    """What the labels are (Birky et al. 2020, ASPCAP DR17, ...): written with every model trained
    on them and in the catalog's header."""
    id: str = Field("APOGEE_ID", min_length=1)
    teff: str = Field("TEFF", min_length=1)
    logg: str | None = "LOGG"
    """Null: log g from Teff and [Fe/H] by eq. 3 (Veyette et al. 2017; M dwarfs only)."""
    fe_h: str = Field("FE_H", min_length=1)
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    """Train, dev and test fractions (by a hash of each APOGEE_ID, §3)."""

    @field_validator("split")
    @classmethod
    def _fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) < 0 or abs(sum(value) - 1) > 1e-9 or value[0] == 0:
            raise ValueError(f"train, dev, test fractions that sum to 1 with train > 0, got {list(value)}")
        return value


class LabelsParams(_Section):
    sources: tuple[LabelSource, ...] = (LabelSource.PAYNE, LabelSource.MSTAR, LabelSource.YSO)
    """The label sources in use: the paper's three (§2.2-2.4) and ``table`` (``paths.label_table``)."""
    recipe: Recipe = Recipe.RELEASED
    """M-dwarf relations: as the released catalog did them, or eqs. 1-3 as printed (§2.3)."""
    young_fields: tuple[str, ...] = ("ORIONA", "ORIONB", "IC348", "N1333", "N2264", "PLEIADES")
    """APOGEE fields of star-forming regions and young clusters, left out of the M-dwarf sample."""
    table: LabelTable = LabelTable()
    ranges: dict[LabelSource, LabelRange] = {
        LabelSource.PAYNE: LabelRange(teff=(3000, 8000), logg=(-0.5, 5.5), fe_h=(-2.5, 1.0)),
        LabelSource.MSTAR: LabelRange(teff=(2300, 4600), logg=(4.0, 5.8), fe_h=(-1.5, 0.8)),
        LabelSource.YSO: LabelRange(teff=(2300, 11000), logg=(2.0, 5.2), fe_h=(-0.01, 0.01)),
        LabelSource.TABLE: LabelRange(teff=(2000, 12000), logg=(-1.0, 6.0), fe_h=(-3.0, 1.5)),
    }
    """Physically plausible labels per source: the gate fails on any label outside them; rows of
    ``table`` outside them are rejected by the label stage, each with its reason."""

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: tuple) -> tuple:
        if not value or len(set(value)) != len(value):
            raise ValueError("one or more distinct sources (payne, mstar, yso, table)")
        return value

    @field_validator("ranges")
    @classmethod
    def _every_source(cls, value: dict) -> dict:
        missing = [s.value for s in LabelSource if s not in value]
        if missing:
            raise ValueError(f"a range for every source; missing {', '.join(missing)}")
        return value


class YSOParams(_Section):
    """The photometric network of §2.4 (trained on isochrone photometry)."""

    n_train: int = Field(42000, ge=100)
    n_test: int = Field(5000, ge=100)
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(512, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    seed: Seed = 7
    noise: YSONoise = YSONoise.CATALOG
    """Errors on the training photometry: the allStar's own per band ("catalog") or none (the paper)."""
    noise_radius_lum: float = Field(0.05, ge=0, le=1)
    noise_distance: float = Field(0.05, ge=0, le=1)


class ValidateParams(_Section):
    split_tolerance: float = Field(0.02, gt=0, lt=1)
    """Largest allowed difference between a source's split fraction and its target (§3), beyond
    the binomial noise of splits drawn star by star (``split_sigmas``)."""
    split_sigmas: float = Field(4.0, ge=0, le=10)
    """How many binomial σ = √(p(1 − p)/n) of a source's n stars a split fraction may differ from
    its target before the tolerance applies (a hash split of 50 stars is rarely within 2 %)."""
    min_finite_fraction: float = Field(0.8, gt=0, le=1)
    """Smallest fraction of pixels with data in a spectrum."""
    allow_duplicate_stars: bool = False
    """Accept several files of one APOGEE_ID in the store (real releases: a star in two fields);
    each star then trains on, and enters the clean catalog with, its highest-S/N file."""


class TrainProfile(_Section):
    """One complete training recipe of APOGEE Net (§3.3)."""

    optimizer: Optimizer = Optimizer.ADAM
    learning_rate: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(128, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(5, ge=1)
    grad_clip: float = Field(0.0, ge=0)
    """Largest gradient norm (0: no clipping)."""
    schedule: Schedule = Schedule.CONSTANT
    """Constant learning rate (the paper) or one cycle over max_epochs peaking at learning_rate."""
    flux_unit: FluxUnit | None = FluxUnit.CONSTANT
    """Raw flux over one constant (the training median), or each spectrum over its own median; a
    model that starts from another keeps that model's unit (null, the only value ``adapt.training``
    takes)."""
    dropout: float = Field(0.1, ge=0, lt=1)
    seed: Seed = 0
    amp: bool = False
    """bfloat16 autocast on CUDA."""
    augment: Augment = Augment.NONE
    """Training-set augmentation: ``noise`` adds N(0, 1)·σ (σ the pixel error capped as in §3.5)
    to every training spectrum, drawn afresh each epoch, so a small survey shows many spectra."""
    augment_error_cap: float = Field(5.0, gt=0)
    """The augmentation's pixel σ is capped at this many times the spectrum's mean good-pixel
    error (the §3.5 cap; training's own key, so the predict settings never touch training)."""
    weight_decay: float = Field(0.0, ge=0)
    """L2 penalty of the optimiser (Adam: decoupled, AdamW)."""
    loss: Loss = Loss.MSE
    """The training loss on the standardised labels: ``mse`` (eq. 4) or ``huber`` (quadratic
    within ``huber_delta``, linear beyond, so a skewed tail of label errors — the photometric YSO
    Teff — moves the prediction less). The dev loss (early stopping, model choice) stays eq. 4."""
    huber_delta: HuberDelta = 1.0
    """Where ``huber`` turns linear, in Table 1 standard deviations: one number, or [Teff, log g,
    [Fe/H]] (each parameter's label noise differs: a δ far below it makes the loss a median's)."""
    engine: Engine = Engine.FAST
    """How the steps run: ``fast`` (on a CPU the kernels of apogeenet/train_kernels.py, fused
    optimiser steps, the training split read once into memory) or ``eager`` (the Conv1d stack with
    batches read from the store, the reference); the same numbers to float32 rounding."""
    members: int = Field(1, ge=1, le=32)
    """Networks of the deep ensemble, member k trained with seed + k (1: the paper's single
    network); the model predicts their mean, their spread is its own error (*_ERR_MODEL)."""


class AdaptTraining(TrainProfile):
    """A training profile for the rounds of §3.4: its flux unit is the starting model's."""

    flux_unit: FluxUnit | None = None


class TrainParams(_Section):
    """APOGEE Net training (§3.3): the paper's profile and a demo profile that converges on CPU."""

    init_model: str | None = None
    """Weights to start from (model.pt or an MLflow URI); null: a fresh network."""
    profile: str = "demo"
    profiles: dict[str, TrainProfile] = {
        "paper": TrainProfile(optimizer=Optimizer.SGD, learning_rate=1e-3, max_epochs=1000),
        "demo": TrainProfile(optimizer=Optimizer.ADAM, learning_rate=1e-3, batch_size=32, max_epochs=30,
                             patience=8, grad_clip=1.0, schedule=Schedule.ONECYCLE,
                             flux_unit=FluxUnit.PER_SPECTRUM, augment=Augment.NOISE, members=2,
                             loss=Loss.HUBER, huber_delta=(0.25, 0.25, 1.0)),
    }

    @model_validator(mode="after")
    def _known(self) -> TrainParams:
        if self.profile not in self.profiles:
            raise ValueError(f"unknown profile {self.profile!r}; train.profiles defines {sorted(self.profiles)}")
        unitless = sorted(name for name, profile in self.profiles.items() if profile.flux_unit is None)
        if unitless:
            raise ValueError(f"profiles {unitless} need a flux_unit (constant or per_spectrum)")
        return self

    def active(self) -> TrainProfile:
        return self.profiles[self.profile]


class AdaptParams(_Section):
    """Model adaptation (§3.4)."""

    init_model: str | None = None
    """The model to adapt (model.pt or an MLflow URI); null: the registry's champion when tracking,
    else the trained ``paths.model``."""
    payne_fraction: float = Field(0.05, gt=0, le=1)
    patience_rounds: int = Field(2, ge=1)
    """Stop after this many rounds without a better MSTAR + YSO dev loss."""
    max_rounds: int = Field(6, ge=1)
    seed: Seed = 1
    training: AdaptTraining = AdaptTraining(learning_rate=2e-5, batch_size=32, max_epochs=20, patience=5,
                                            grad_clip=1.0, loss=Loss.HUBER, huber_delta=(0.25, 0.25, 1.0))
    """How each round trains (its ``patience`` is the early stopping inside a round); the flux unit
    is the starting model's (``flux_unit`` stays null)."""
    stop_on: StopOn = StopOn.GROUPS
    """What an epoch must lower (apogeenet.adapt): both the MSTAR and the YSO dev MSE ("groups"),
    the two pooled ("focus") or the whole dev set ("all")."""
    max_payne_increase: float | None = Field(0.05, ge=0)
    """An epoch counts as better only while the Payne dev RMS of every parameter stays within this
    fraction of the starting model's (None: no guard)."""

    @model_validator(mode="after")
    def _flux_unit_is_the_models(self) -> AdaptParams:
        if self.training.flux_unit is not None:
            raise ValueError("training.flux_unit: the adapted model keeps its starting model's flux unit; "
                             "remove the key")
        if self.training.members != 1:
            raise ValueError("training.members: each member of the starting model is adapted on its own; "
                             "remove the key")
        return self


class Baseline(StrEnum):
    RIDGE = "ridge"    # ridge regression on the normalised flux
    CANNON = "cannon"  # The Cannon, quadratic in the three labels


class BaselinesParams(_Section):
    """The baselines APOGEE Net is compared with (apogeenet.baselines)."""

    models: tuple[Baseline, ...] = (Baseline.RIDGE, Baseline.CANNON)
    continuum_length: float = Field(50.0, gt=0)
    """Width (Å) of the Gaussian-weighted running mean that is the pseudo-continuum."""
    ridge_alphas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
    """Penalties tried; each label takes the one with the lowest dev MSE."""


class EvaluateParams(_Section):
    """What `apogeenet evaluate` checks: the quality bar and the adaptation check (§3.4)."""

    model: str | None = None
    """The model judged (model.pt or an MLflow URI); null: the calibrated ``paths.calibrated``."""
    baseline: str | None = None
    """The model before adaptation; null: the trained ``paths.model`` when it exists."""

    min_gain: dict[str, float] = {"teff": 5.0, "logg": 4.0, "fe_h": 3.0}
    """Least RMS gain over predicting the training mean, per parameter, in every group (test)."""
    max_payne_scatter_increase: float = Field(0.10, ge=0)
    """Largest allowed rise of the Payne group's test scatter through adaptation."""

    @field_validator("min_gain")
    @classmethod
    def _parameters(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) != {"teff", "logg", "fe_h"}:
            raise ValueError("min_gain needs exactly teff, logg and fe_h")
        return value


class PredictParams(_Section):
    """Batch inference with Monte-Carlo uncertainties (§3.5) and the Table 4 catalog (§3.6)."""

    model: str = "models:/apogeenet@champion"
    """Registered model (alias or version), logged model URI or model.pt path."""
    catalog_name: str = Field("catalog", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    """The catalog's file name without suffix (``catalog.fits``, ``catalog_clean.fits``, ...)."""
    uncertainty: Uncertainty = Uncertainty.MONTE_CARLO
    """How σ is made: the paper's Monte Carlo, the delta method (one forward and three backward
    passes at the spectrum, four inference passes per draw), or none (the single pass: a quick
    look, σ NaN)."""
    draws: int = Field(100, ge=2)
    """Monte-Carlo draws per spectrum (at most ``max_draws``)."""
    max_draws: int = Field(10000, ge=2, le=1_000_000)
    """The most draws a run may ask for (``--draws`` too): each draw is a network input of
    8 575 floats, so this bounds the memory a mistyped number can ask for."""
    delta_points: int = Field(2, ge=1)
    """The delta method's points: 1, the spectrum's gradient squared (textbook); n > 1, its cross
    product with the mean gradient at n − 1 Monte-Carlo draws (:func:`apogeenet.uncertainty.delta_predict`)."""
    seed: Seed = 0
    error_cap: float = Field(5.0, gt=0)
    """Each pixel's σ is capped at this many times the spectrum's mean good-pixel error."""
    error_reference: ErrorReference = ErrorReference.MEAN
    """What the cap multiplies: the mean good-pixel error (the paper) or the median (real files)."""
    max_batch: int = Field(1600, ge=1)
    """Network inputs (spectra × draws) made together."""
    forward_batch: int = Field(32, ge=1)
    """Inputs per network call (small chunks stay in the CPU cache; see bench/infer.py)."""
    spectra_per_block: int = Field(64, ge=1)
    """Spectra read from the store at a time."""
    shard_size: int = Field(1024, ge=1)
    """Spectra per shard (rounded up to whole blocks): the unit of work of a Dask worker or a Slurm
    array task, and of a rerun after a kill (apogeenet.shards)."""
    min_good_pixels: int = Field(5000, ge=0)
    """Fewer good pixels than this flag a row FEW_PIXELS: well below a normal combined spectrum's
    count and above half the 8 575 (README, "Inference, uncertainties and the catalog")."""
    hot_teff: float = 6700.0
    """Flag HOT above this predicted Teff (K): the paper leaves these out of Table 4."""
    bounds: dict[str, tuple[float, float]] = {"teff": (2000.0, 12000.0), "logg": (-1.0, 6.0),
                                              "fe_h": (-3.0, 1.5)}
    """Physical range of each prediction; outside it a row is flagged UNPHYSICAL."""
    max_sigma: dict[str, float] = {"teff": 500.0, "logg": 0.5, "fe_h": 0.25}
    """Largest calibrated σ a row of the clean view may have; above it the row is flagged LARGE_SIGMA."""

    @field_validator("bounds", "max_sigma")
    @classmethod
    def _parameters(cls, value: dict) -> dict:
        if set(value) != {"teff", "logg", "fe_h"}:
            raise ValueError("needs exactly teff, logg and fe_h")
        return value

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, value: dict) -> dict:
        reversed_ = [k for k, (lo, hi) in value.items() if not lo < hi]
        if reversed_:
            raise ValueError(f"each range must be [low, high] with low < high ({', '.join(reversed_)})")
        return value

    @field_validator("max_sigma")
    @classmethod
    def _positive(cls, value: dict) -> dict:
        if any(not v > 0 for v in value.values()):
            raise ValueError("each largest σ must be > 0")
        return value

    @model_validator(mode="after")
    def _draws_bounded(self) -> PredictParams:
        if self.draws > self.max_draws:
            raise ValueError(f"draws {self.draws} is above max_draws {self.max_draws} (raise predict.max_draws "
                             "in params.yaml if you mean it)")
        return self


class CalibrationReference(StrEnum):
    AUTO = "auto"      # the truth when the survey has one (paths.truth), else the labels
    TRUTH = "truth"
    LABELS = "labels"


class CalibrationParams(_Section):
    """What ``apogeenet calibrate`` fits on the dev split and stores with the model: each
    member's output map (apogeenet.output_maps), the σ calibration (apogeenet.calibration; σ from
    the ``predict`` settings) and the domain reference (apogeenet.domain)."""

    model: str | None = None
    """The model to calibrate (model.pt or an MLflow URI); null: the adapted ``paths.adapted``."""
    output_maps: tuple[Literal["teff", "logg", "fe_h"], ...] = ("teff",)
    """The parameters whose outputs may pass through a straight line per member fitted on the dev
    labels (kept where it helps held-out dev stars); []: the networks' outputs as they are (the
    paper). Teff alone by default: log g lines follow the M dwarfs' biased label scale (docs).
    Each member has one line per region of its output (Payne regime, young stars, cool main sequence)."""
    map_huber_delta: HuberDelta | None = (0.25, 0.25, 1.0)
    """The lines minimise a Huber loss linear beyond this many Table 1 σ, as the demo profile
    trains (the skewed YSO label tail pulls them no more than it pulled the network); null: least squares."""

    reference: CalibrationReference = CalibrationReference.AUTO
    """What the residuals are measured against."""
    methods: tuple[Uncertainty, ...] = (Uncertainty.MONTE_CARLO, Uncertainty.DELTA)
    """Uncertainty methods calibrated (a catalog made with another has ``*_ERR`` = ``*_ERR_MC``)."""
    clip: float = Field(2.5, gt=1)
    """Residuals beyond this many calibrated σ leave the fit (iteratively; the clipped variance restored)."""
    min_stars: int = Field(20, ge=5)
    """Dev stars a region needs for its own fit; fewer: the fit of all dev stars."""
    domain_quantile: float = Field(0.99, gt=0.5, lt=1)
    """The out-of-domain threshold: this quantile of the dev split's distances."""

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple) -> tuple:
        if Uncertainty.NONE in value:
            raise ValueError("'none' has no sigma to calibrate")
        return value


class SlurmParams(_Section):
    """One Slurm job per Dask worker (dask_jobqueue.SLURMCluster; README, "Survey scale")."""

    queue: str | None = None
    account: str | None = None
    cores: int = Field(8, ge=1)
    """Cores of one job; its worker gives them all to torch."""
    memory: str = "16GB"
    walltime: str = "02:00:00"
    job_extra_directives: list[str] = []
    """Further ``#SBATCH`` lines, e.g. ``["--gres=gpu:1"]``."""
    job_script_prologue: list[str] = []
    """Shell lines before the worker starts, e.g. ``["source .venv/bin/activate"]``."""
    log_directory: str = "slurm-logs"


class DaskParams(_Section):
    """Where the predict flow's shards run (prefect-dask's DaskTaskRunner)."""

    cluster: str = "local"
    """``local`` (a LocalCluster of processes on this machine), ``slurm`` (dask-jobqueue), or the
    address of a running scheduler (``tcp://host:8786``)."""

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if value in ("local", "slurm") or (sep and scheme in DASK_SCHEMES and rest and len(value) < 1024):
            return value
        raise ValueError(f"{value[:80]!r} is not local, slurm or a scheduler address "
                         f"({'|'.join(DASK_SCHEMES)}://host:port)")
    workers: int = Field(2, ge=1)
    """Worker processes (local) or Slurm jobs (the most the cluster scales to)."""
    torch_threads: int | None = Field(None, ge=1)
    """torch threads per worker; default: local, this machine's cores / workers; Slurm, its cores."""
    slurm: SlurmParams = SlurmParams()

    def threads(self) -> int:
        if self.torch_threads:
            return self.torch_threads
        if self.cluster == "slurm":
            return self.slurm.cores
        return max(1, (os.cpu_count() or 1) // self.workers)


class TrackingParams(_Section):
    """MLflow (apogeenet.tracking): whether stages log their runs and register models."""

    enabled: bool = True


class Params(_Section):
    paths: PathsParams = PathsParams()
    synth: SynthParams = SynthParams()
    labels: LabelsParams = LabelsParams()
    yso: YSOParams = YSOParams()
    validation: ValidateParams = ValidateParams()
    train: TrainParams = TrainParams()
    adapt: AdaptParams = AdaptParams()
    evaluate: EvaluateParams = EvaluateParams()
    baselines: BaselinesParams = BaselinesParams()
    predict: PredictParams = PredictParams()
    calibration: CalibrationParams = CalibrationParams()
    dask: DaskParams = DaskParams()
    ingest: IngestParams = IngestParams()
    download: DownloadParams = DownloadParams()
    tracking: TrackingParams = TrackingParams()

    @model_validator(mode="after")
    def _inputs_of_sources(self) -> Params:
        needs = {LabelSource.PAYNE: ("payne",), LabelSource.MSTAR: ("allstar",), LabelSource.YSO: ("allstar", "members"),
                 LabelSource.TABLE: ("label_table",)}
        missing = sorted({f"paths.{path} (for labels.sources {source.value})" for source in self.labels.sources
                          for path in needs[source] if getattr(self.paths, path) is None})
        if missing:
            raise ValueError(f"null but needed: {'; '.join(missing)}")
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> Params:
        """A copy with dotted keys of any depth replaced (``{"train.profile": "paper"}``,
        ``{"labels.table.teff": "TEFF_BIRKY"}``), validated like the file."""
        raw = self.model_dump(mode="json")
        for key, value in overrides.items():
            *path, name = key.split(".")
            target = raw
            for part in path:
                target = target[part]
            target[name] = value
        return _validated(raw, "the given settings")


def _validated(raw: dict, source: object) -> Params:
    return validated(Params, raw, source)


def validated(model: type[_Model], raw: dict, source: object) -> _Model:
    """``model`` from ``raw``, or one :class:`ConfigError` line naming ``source`` and each problem."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


class _StrictLoader(yaml.SafeLoader):
    """YAML without aliases (a few hundred bytes of nested aliases expand to gigabytes) and
    without duplicate keys (the last one would silently win)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in params.yaml", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_params(path: str | os.PathLike | None = None) -> Params:
    """Read and validate ``params.yaml``; without a file the defaults above apply.

    ``path`` defaults to ``$APOGEENET_PARAMS`` or ``params.yaml`` in the working directory; only
    that default may be absent (then the defaults apply): a file the user names must exist.
    """
    named = path or os.environ.get("APOGEENET_PARAMS")
    path = Path(named or DEFAULT_PARAMS_FILE)
    if not path.exists():
        if named:
            raise ConfigError(f"{path}: no such parameters file")
        return Params()
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (give a params.yaml)")
    try:
        if path.stat().st_size > MAX_PARAMS_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_PARAMS_BYTES // 1024} kB; not a params.yaml")
        raw = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (paths:, train:, ...), got {type(raw).__name__}")
    return _validated(raw, path)
