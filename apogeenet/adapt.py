"""Model adaptation (Olney et al. 2020, §3.4): focus a trained model on M dwarfs and YSOs.

Starting from a model trained on everything, each round trains on every MSTAR and YSO training
star plus a fresh random 5 % of the Payne training stars, with early stopping on the MSTAR + YSO
dev stars (``stop_on="focus"``, default) or on the whole dev set (``"all"``: a round then rarely
gets past its first epoch, since the pretrained model already sits at the whole-dev optimum); the
round's best model is reloaded for the next round with a new 5 % draw. The Payne stars are
protected by the 5 % sample and a gentler, constant learning rate (``adapt.learning_rate``). Rounds stop when the MSTAR + YSO dev loss (standardised MSE) has not
improved for ``patience_rounds`` rounds; the best model over all rounds is returned.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from apogeenet.model import ApogeeNet
from apogeenet.train import LabelledSpectra, TrainConfig, predict_standardised, train_model

__all__ = ["AdaptConfig", "AdaptResult", "adapt_model", "focus_loss"]

FOCUS_SOURCES = ("MSTAR", "YSO")


@dataclass(frozen=True)
class AdaptConfig:
    payne_fraction: float = 0.05
    patience_rounds: int = 2
    max_rounds: int = 6
    seed: int = 1
    stop_on: str = "focus"  # early stopping inside a round on the "focus" (MSTAR + YSO) or "all" dev stars


@dataclass
class AdaptResult:
    model: ApogeeNet
    initial_focus_loss: float
    best_focus_loss: float
    best_round: int
    rounds: list[dict] = field(default_factory=list)


def focus_loss(model: ApogeeNet, data: LabelledSpectra, positions: np.ndarray) -> float:
    """Standardised MSE of ``model`` on ``positions``."""
    pred = predict_standardised(model, data, positions)
    return float(np.mean((pred - data.targets[positions]) ** 2))


def adapt_model(data: LabelledSpectra, init_state: dict, train_cfg: TrainConfig, cfg: AdaptConfig,
                checkpoint_dir: str | Path, *,
                on_round: Callable[[dict, list[dict]], None] | None = None,
                on_epoch: Callable[[dict], None] | None = None) -> AdaptResult:
    """Run the rounds of §3.4 from ``init_state``; ``on_round(record, history)`` after each."""
    checkpoint_dir = Path(checkpoint_dir)
    focus_train = data.select(split="train", sources=FOCUS_SOURCES)
    payne_train = data.select(split="train", sources=("PAYNE",))
    focus_dev = data.select(split="dev", sources=FOCUS_SOURCES)
    dev = data.select(split="dev")
    if len(focus_train) == 0 or len(focus_dev) == 0:
        raise ValueError("adaptation needs MSTAR or YSO stars in the train and dev splits")
    model = ApogeeNet(3, dropout=train_cfg.dropout)
    model.load_state_dict(init_state)
    initial = focus_loss(model, data, focus_dev)
    best, best_round, best_state, stale = initial, -1, copy.deepcopy(init_state), 0
    state, rounds = init_state, []
    n_payne = max(1, int(round(cfg.payne_fraction * len(payne_train)))) if len(payne_train) else 0
    for k in range(cfg.max_rounds):
        rng = np.random.default_rng([cfg.seed, k])
        sample = rng.choice(payne_train, n_payne, replace=False) if n_payne else np.array([], int)
        positions = np.concatenate([focus_train, sample])
        result = train_model(data, positions, focus_dev if cfg.stop_on == "focus" else dev,
                             replace(train_cfg, seed=train_cfg.seed + k),
                             checkpoint_dir / f"round{k:02d}", init_state=state, on_epoch=on_epoch)
        loss = focus_loss(result.model, data, focus_dev)
        record = {"round": k, "n_train": len(positions), "n_payne": int(n_payne),
                  "epochs": len(result.history), "dev_loss": result.best_dev_loss, "focus_dev_loss": loss}
        rounds.append(record)
        state = result.model.state_dict()  # reload the round's best model for the next round
        if loss < best:
            best, best_round, best_state, stale = loss, k, copy.deepcopy(state), 0
        else:
            stale += 1
        if on_round:
            on_round(record, result.history)
        if stale >= cfg.patience_rounds:
            break
    model.load_state_dict(best_state)
    return AdaptResult(model, initial, best, best_round, rounds)
