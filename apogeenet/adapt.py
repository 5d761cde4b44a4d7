"""Model adaptation (Olney et al. 2020, §3.4): focus a trained model on M dwarfs and YSOs.

Starting from a model trained on everything, each round trains on every MSTAR and YSO training
star plus a fresh random 5 % of the Payne training stars, with early stopping inside the round;
the round's best model is reloaded for the next round with a new 5 % draw; rounds stop when the
criterion has not improved for ``patience_rounds`` rounds and the best model over all rounds is
returned. The criterion (``stop_on``): ``groups`` (default) — the larger of the MSTAR and the YSO
dev MSE, each relative to the starting model's, so a model counts as better only when both groups
are (the paper continued "until the performance on M dwarfs and YSOs did not show continuing
improvement"); ``focus`` — the MSTAR + YSO dev stars pooled, which lets one group pay for the
other; ``all`` — the whole dev set, at whose optimum the pretrained model already sits.

The paper keeps "performance on the broader Payne data set"; the 5 % sample and a gentle constant
learning rate alone need not (README, "Adaptation"). So an epoch counts as better only while the
Payne dev stars' RMS error of every parameter stays within ``max_payne_increase`` of the starting
model's (None: no guard); a round in which no epoch qualifies keeps the model it started from.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apogeenet.config import AdaptParams, StopOn
from apogeenet.errors import InputError
from apogeenet.model import ApogeeNet
from apogeenet.dataset import LabelledSpectra, standardised_mse
from apogeenet.train import member_directory, predict_standardised, train_model

__all__ = ["AdaptResult", "adapt_ensemble", "adapt_model", "focus_loss", "rms_per_parameter"]

FOCUS_SOURCES = ("MSTAR", "YSO")


@dataclass
class AdaptResult:
    model: ApogeeNet
    initial_focus_loss: float
    best_focus_loss: float
    best_round: int
    rounds: list[dict] = field(default_factory=list)


def focus_loss(model: ApogeeNet, data: LabelledSpectra, positions: np.ndarray) -> float:
    """Standardised MSE of ``model`` on ``positions``."""
    return standardised_mse(data, positions, predict_standardised(model, data, positions))


def rms_per_parameter(model: ApogeeNet, data: LabelledSpectra, positions: np.ndarray) -> np.ndarray:
    """RMS error of each standardised target on ``positions`` (3,)."""
    pred = predict_standardised(model, data, positions)
    return np.sqrt(np.mean((pred - data.targets[positions]) ** 2, axis=0))


def adapt_model(data: LabelledSpectra, init_state: dict, cfg: AdaptParams, checkpoint_dir: str | Path, *,
                on_round: Callable[[dict, list[dict]], None] | None = None,
                on_epoch: Callable[[dict], None] | None = None) -> AdaptResult:
    """Run the rounds of §3.4 from ``init_state``, each trained with ``cfg.training``;
    ``on_round(record, history)`` after each."""
    checkpoint_dir = Path(checkpoint_dir)
    focus_train = data.select(split="train", sources=FOCUS_SOURCES)
    payne_train = data.select(split="train", sources=("PAYNE",))
    focus_dev = data.select(split="dev", sources=FOCUS_SOURCES)
    payne_dev = data.select(split="dev", sources=("PAYNE",))
    if len(focus_train) == 0 or len(focus_dev) == 0:
        raise InputError("adaptation needs MSTAR or YSO stars in the train and dev splits")
    model = ApogeeNet(3, dropout=cfg.training.dropout)
    model.load_state_dict(init_state)
    criterion = _stopping_criterion(model, data, cfg, focus_dev, payne_dev)
    initial = focus_loss(model, data, focus_dev)
    best, best_round, best_state, stale = criterion(model), -1, copy.deepcopy(init_state), 0
    state, rounds = init_state, []
    n_payne = max(1, int(round(cfg.payne_fraction * len(payne_train)))) if len(payne_train) else 0
    for k in range(cfg.max_rounds):
        rng = np.random.default_rng([cfg.seed, k])
        sample = rng.choice(payne_train, n_payne, replace=False) if n_payne else np.array([], int)
        positions = np.concatenate([focus_train, sample])
        result = train_model(data, positions, focus_dev, cfg.training, checkpoint_dir / f"round{k:02d}",
                             seed=cfg.training.seed + k, init_state=state, dev_loss=criterion,
                             on_epoch=on_epoch)
        record = {"round": k, "n_train": len(positions), "n_payne": int(n_payne),
                  "epochs": len(result.history), "best_epoch": result.best_epoch,
                  "dev_loss": result.best_dev_loss, "focus_dev_loss": focus_loss(result.model, data, focus_dev)}
        rounds.append(record)
        state = result.model.state_dict()  # reload the round's best model for the next round
        if result.best_dev_loss < best:
            best, best_round, best_state, stale = result.best_dev_loss, k, copy.deepcopy(state), 0
        else:
            stale += 1
        if on_round:
            on_round(record, result.history)
        if stale >= cfg.patience_rounds:
            break
    model.load_state_dict(best_state)
    return AdaptResult(model, initial, focus_loss(model, data, focus_dev), best_round, rounds)


def _stopping_criterion(start: ApogeeNet, data: LabelledSpectra, cfg: AdaptParams, focus_dev: np.ndarray,
                        payne_dev: np.ndarray) -> Callable[[ApogeeNet], float]:
    """The loss by which epochs and rounds are compared (``stop_on``), measured against the
    starting model ``start``; infinite where the Payne guard is broken."""
    guard = None
    if cfg.max_payne_increase is not None and len(payne_dev):
        guard = (1 + cfg.max_payne_increase) * rms_per_parameter(start, data, payne_dev)
    if cfg.stop_on is StopOn.GROUPS:
        groups = [data.select(split="dev", sources=(source,)) for source in FOCUS_SOURCES]
        groups = [(g, focus_loss(start, data, g)) for g in groups if len(g)]
    stop_dev = data.select(split="dev") if cfg.stop_on is StopOn.ALL else focus_dev

    def criterion(net: ApogeeNet) -> float:
        if guard is not None and np.any(rms_per_parameter(net, data, payne_dev) > guard):
            return float("inf")
        if cfg.stop_on is StopOn.GROUPS:  # better only when every focus group is better
            return max(focus_loss(net, data, g) / base for g, base in groups)
        return focus_loss(net, data, stop_dev)

    return criterion


def adapt_ensemble(data: LabelledSpectra, init_states: list[dict], cfg: AdaptParams, checkpoint_dir: str | Path, *,
                   on_round: Callable[[int, dict, list[dict]], None] | None = None) -> list[AdaptResult]:
    """:func:`adapt_model` for each member of an ensemble, on its own: the same Payne draws per
    round, training seeds of its own (member m's round k: ``training.seed + m·max_rounds + k``),
    checkpoints under ``member<m>/`` (a single network: the directory itself);
    ``on_round(member, record, history)``."""
    results = []
    for m, state in enumerate(init_states):
        training = cfg.training.model_copy(update={"seed": cfg.training.seed + m * cfg.max_rounds})
        results.append(adapt_model(data, state, cfg.model_copy(update={"training": training}),
                                   member_directory(checkpoint_dir, m, len(init_states)),
                                   on_round=None if on_round is None else functools.partial(on_round, m)))
    return results
