"""A small training run that a test can start in a child process and kill (test_reliability.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from factories import TABLE1

from apogeenet.config import TrainProfile
from apogeenet.store import SpectraStore
from apogeenet.dataset import LabelledSpectra
from apogeenet.train import TrainResult, train_model

CONFIG = TrainProfile(max_epochs=4, patience=10, batch_size=4, dropout=0.3, schedule="onecycle")


def train(store: str | Path, catalog: str | Path, checkpoints: str | Path) -> TrainResult:
    data = LabelledSpectra(SpectraStore(store), pd.read_parquet(catalog), TABLE1)
    train_positions, dev_positions = data.select(split="train"), data.select(split="dev")
    return train_model(data, train_positions, dev_positions, CONFIG, checkpoints)
