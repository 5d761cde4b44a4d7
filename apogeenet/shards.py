"""Batch inference in shards (§3.5-3.6 at survey scale): a plan, parts, and the merge.

A run is planned once: its store rows cut into shards (consecutive rows, a whole number of
``predict.spectra_per_block`` each, so every spectrum meets the same blocks and chunks in any
shard layout), the model's weights copied beside the parts (every shard reads the same weights
even if the registry alias moves mid-run), the store's index copied and its SHA-256 kept (rows
are numbers in that index), and ``plan.json`` written. All of it lives in
``<out>/.parts/<key>/``, ``key`` a digest of the weights, the store's location and index and the
predict settings: another model, store or setting is another run, an interrupted run the same one.
A shard reads the store only while its index is the plan's (checked before and after reading):
an ingest in between makes the shard refuse (:class:`~apogeenet.store.StoreChanged`), never
attach a spectrum to another star; each part also names its rows' stars, and the merge checks them.
Shards hold the plan directory shared (:mod:`apogeenet.locks`); a new plan in the same output
removes the parts of other plans only when no shard holds them.

A shard (:func:`predict_shard`) needs only the plan file and its number — the unit of work for a
Dask worker, a Slurm array task or a loop in one process. It loads the model once per process,
sets its torch threads, predicts its rows and writes ``part-<number>.parquet`` atomically; a part
that exists is complete and is not computed again. :func:`merge_parts` reads all parts in row
order; a missing part is named, never guessed. The numbers of a star depend only on the star
(its noise is keyed by its APOGEE_ID), so any order, worker count or retry gives the same parts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from apogeenet.atomic import atomic_path
from apogeenet.config import PredictParams
from apogeenet.errors import InputError, UserFacingError
from apogeenet.locks import remove_unless_used, shared
from apogeenet.serving import Predictor
from apogeenet.store import SpectraStore
from apogeenet.uncertainty import predict_store
from apogeenet.weights import MODEL_FILE

__all__ = ["PARTS_DIR", "PLAN_FILE", "ShardPlan", "ShardsMissing", "merge_parts", "plan_predict", "predict_shard"]

PARTS_DIR = ".parts"
PLAN_FILE = "plan.json"
INDEX_COPY = "index.parquet"
_COLUMNS = ["row", "TEFF", "LOGG", "FE_H", "TEFF_ERR", "LOGG_ERR", "FE_H_ERR", "TEFF_ERR_MODEL", "LOGG_ERR_MODEL",
            "FE_H_ERR_MODEL", "DOMAIN_DIST"]
PARTS_FORMAT = 2
"""The layout of a part's columns (a plan key holds it: parts of another layout are never merged)."""
_FIELDS = ("store", "index_sha256", "n_rows", "shard_rows", "predict")


class ShardsMissing(UserFacingError):
    """A merge asked for before every shard of the plan has its part."""


@dataclass(frozen=True)
class ShardPlan:
    """What every shard of one run reads: ``plan.json`` in the run's parts directory."""

    directory: Path
    store: str
    index_sha256: str
    n_rows: int
    shard_rows: int
    predict: PredictParams
    """The settings every shard predicts with (the model's source left out: the plan holds its weights)."""

    @property
    def n_shards(self) -> int:
        return -(-self.n_rows // self.shard_rows)

    @property
    def model(self) -> Path:
        return self.directory / MODEL_FILE

    @property
    def file(self) -> Path:
        return self.directory / PLAN_FILE

    def index(self) -> pd.DataFrame:
        """The store's index as it was when the plan was made (the rows the parts predict)."""
        return pd.read_parquet(self.directory / INDEX_COPY)

    def rows(self, number: int) -> np.ndarray:
        if not 0 <= number < self.n_shards:
            raise InputError(f"shard {number} is not in this plan (0 to {self.n_shards - 1})")
        return np.arange(number * self.shard_rows, min((number + 1) * self.shard_rows, self.n_rows))

    def part(self, number: int) -> Path:
        return self.directory / f"part-{number:05d}.parquet"

    def missing(self) -> list[int]:
        return [k for k in range(self.n_shards) if not self.part(k).exists()]

    @classmethod
    def read(cls, path: str | os.PathLike) -> ShardPlan:
        path = Path(path)
        if path.is_dir():
            path = path / PLAN_FILE
        try:
            fields = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserFacingError(f"{path}: not a predict plan ({exc})") from None
        if not isinstance(fields, dict) or set(fields) != set(_FIELDS):
            raise UserFacingError(f"{path}: not a predict plan of this version; run `apogeenet predict` again")
        try:
            fields["predict"] = PredictParams(**fields["predict"])
        except (TypeError, ValueError) as exc:
            raise UserFacingError(f"{path}: not a predict plan ({str(exc).splitlines()[0]})") from None
        return cls(directory=path.parent, **fields)

    def to_json(self) -> str:
        fields = {name: getattr(self, name) for name in _FIELDS}
        return json.dumps({**fields, "predict": self.predict.model_dump(mode="json")}, indent=1)


def _weights_digest(predictor: Predictor) -> str:
    digest = hashlib.sha256(json.dumps([predictor.table1.to_dict(), predictor.flux_scale]).encode())
    for net in predictor.members:
        for name, tensor in sorted(net.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    if predictor.domain is not None:  # the parts hold its distances
        for value in (predictor.domain.mean, predictor.domain.whitening, predictor.domain.threshold):
            digest.update(np.asarray(value, np.float64).tobytes())
    return digest.hexdigest()


def plan_predict(predictor: Predictor, store_dir: Path, out_dir: Path, cfg: PredictParams) -> ShardPlan:
    """The plan of a run (made, or found from an interrupted run with the same key); the parts
    of other plans in ``out_dir`` are removed unless a shard is working on them."""
    store = SpectraStore(store_dir)
    location = str(Path(store_dir).resolve())
    per_block = cfg.spectra_per_block
    shard_rows = max(per_block, -(-cfg.shard_size // per_block) * per_block)
    settings = cfg.model_copy(update={"model": ""})
    key = hashlib.sha256(json.dumps([PARTS_FORMAT, _weights_digest(predictor), location, store.index_sha256,
                                     settings.model_dump(mode="json"), shard_rows], sort_keys=True).encode()).hexdigest()[:16]
    root = Path(out_dir) / PARTS_DIR
    plan = ShardPlan(root / key, location, store.index_sha256, len(store), shard_rows, settings)
    if not plan.file.exists():
        plan.directory.mkdir(parents=True, exist_ok=True)
        predictor.save(plan.model)
        with atomic_path(plan.directory / INDEX_COPY) as tmp:
            store.index.to_parquet(tmp, index=False)
        with atomic_path(plan.file) as tmp:
            tmp.write_text(plan.to_json())
    for other in root.iterdir():  # parts of runs with other settings, models or stores
        if other.is_dir() and other.name != key:
            remove_unless_used(other)
    return plan


@functools.lru_cache(maxsize=2)
def _predictor(model: str, device: str) -> Predictor:
    """One model per worker process (a shard after the first finds it loaded)."""
    return Predictor.load(model, device=device)


def predict_shard(plan_file: str | os.PathLike, number: int, *, torch_threads: int | None = None) -> Path:
    """Predict shard ``number`` of a plan and write its part; an existing part is kept.

    ``torch_threads``: the intra-op threads of this process (Dask sets OMP/MKL threads to 1 in
    its workers; give the cores each worker owns). The device is the GPU when there is one.
    """
    from apogeenet.dataset import best_device

    plan = ShardPlan.read(plan_file)
    part = plan.part(number)
    rows = plan.rows(number)
    if part.exists():
        return part
    if torch_threads:
        torch.set_num_threads(torch_threads)
    with shared(plan.directory):
        predictor = _predictor(str(plan.model), str(best_device()))
        store = SpectraStore(plan.store, index_sha256=plan.index_sha256)
        result = predict_store(predictor, store, plan.predict, rows=rows)
        store.check_unchanged()  # an ingest while reading may have replaced segments
        distance = (predictor.domain.distance(result.hidden) if predictor.domain is not None
                    else np.full(len(rows), np.nan))
        frame = pd.DataFrame(np.column_stack([result.prediction, result.sigma, result.model_sigma, distance]), columns=_COLUMNS[1:])
        frame.insert(0, "row", rows)
        frame.insert(1, "apogee_id", store.index["apogee_id"].to_numpy()[rows])
        with atomic_path(part) as tmp:
            frame.to_parquet(tmp, index=False)
    return part


def merge_parts(plan: ShardPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Predictions, the method's σ and the members' spread (each (n, 3)) and the out-of-domain
    distance (n,; NaN for a model without a domain reference) of every row of the plan's store,
    from its parts, in row order."""
    missing = plan.missing()
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
        raise ShardsMissing(f"{len(missing)} of {plan.n_shards} shards have no part yet ({shown}): run "
                            f"`apogeenet predict-shard {plan.file} K` for them, or `apogeenet predict` again")
    frame = pd.concat([pd.read_parquet(plan.part(k)) for k in range(plan.n_shards)], ignore_index=True)
    if not np.array_equal(frame["row"].to_numpy(), np.arange(plan.n_rows)):
        raise ShardsMissing(f"{plan.directory}: the parts do not cover rows 0 to {plan.n_rows - 1} once each; "
                            "remove the directory and predict again")
    if not np.array_equal(frame["apogee_id"].to_numpy(), plan.index()["apogee_id"].to_numpy()):
        raise ShardsMissing(f"{plan.directory}: the parts name other stars than the plan's index; "
                            "remove the directory and predict again")
    return (frame[_COLUMNS[1:4]].to_numpy(float), frame[_COLUMNS[4:7]].to_numpy(float),
            frame[_COLUMNS[7:10]].to_numpy(float), frame[_COLUMNS[10]].to_numpy(float))
