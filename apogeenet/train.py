"""Training APOGEE Net (Olney et al. 2020, §3.1 and §3.3).

Targets are standardised with Table 1 (eq. 4: (x − μ)/σ over the training split); the loss is
the MSE of the standardised targets; after every epoch the dev loss decides: a better model is
saved, five epochs without improvement stop training (patience is a parameter). The optimiser,
learning rate and momentum are parameters: the paper's profile is SGD at 1e-3, batch 128; the
demo profile uses Adam, which converges on a few thousand stars (see params.yaml).

Two engines compute the same steps (to float32 rounding; bench/train.py measures both): ``fast``
(the default) holds the training and dev splits in memory (or on the GPU) once
(:class:`apogeenet.dataset.StagedSplit`), runs the convolutions on a CPU with the kernels of
:mod:`apogeenet.train_kernels` and steps a fused optimiser; ``eager``, the reference, streams each
batch from the spectra store (memory-mapped rows) through the Conv1d stack. Neither reads FITS
files. A split too large to hold is streamed by the fast engine as well. Training
resumes from ``last.pt`` in the checkpoint directory after an interruption (only if that
checkpoint has the same configuration, apart from patience (and max_epochs for a constant rate),
and data sizes); ``best.pt`` holds the best weights so far. CUDA is used when present (optionally
with bfloat16 autocast), the CPU otherwise. The learning rate is constant (the paper) or follows a
one-cycle schedule over ``max_epochs`` that peaks at ``learning_rate``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from apogeenet.config import Augment, Engine, Loss, Optimizer, Schedule, TrainProfile, per_parameter
from apogeenet.dataset import LabelledSpectra, StagedSplit, best_device, standardised_mse
from apogeenet.errors import UserFacingError
from apogeenet.model import ApogeeNet
from apogeenet.train_kernels import fast_forward, fast_supported
from apogeenet.weights import ModelFileError, load_weights, save_weights

__all__ = ["TrainResult", "TrainingDiverged", "load_checkpoint", "member_directory", "predict_standardised",
           "train_ensemble", "train_model"]


_log = logging.getLogger(__name__)


class TrainingDiverged(UserFacingError):
    """The loss became NaN or infinite; the message says when and what to change."""


@dataclass
class TrainResult:
    model: ApogeeNet
    best_dev_loss: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)


def _optimizer(model: nn.Module, cfg: TrainProfile) -> torch.optim.Optimizer:
    """The profile's optimiser; one fused kernel over all parameters for the fast engine."""
    fused = {"fused": True} if cfg.engine is Engine.FAST else {}
    if cfg.optimizer is Optimizer.SGD:
        return torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, **fused)
    if cfg.weight_decay > 0:
        return torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, **fused)
    return torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, **fused)


def _forward(model: nn.Module, cfg: TrainProfile) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network's forward pass as the engine runs it (the fast kernels only for float32 on a CPU)."""
    if cfg.engine is Engine.EAGER:
        return model
    return lambda flux: fast_forward(model, flux) if fast_supported(flux) else model(flux)


def _staging_budget(device: torch.device) -> int:
    """Bytes a staged split may take: half the GPU's free memory, a quarter of the machine's."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    import os

    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4


def _stage(data: LabelledSpectra, train_positions: np.ndarray, dev_positions: np.ndarray,
           cfg: TrainProfile, device: torch.device) -> tuple[StagedSplit | None, StagedSplit | None]:
    """The fast engine's staged training and dev splits (None: streamed from the store; no dev
    split for an empty ``dev_positions``)."""
    if cfg.engine is Engine.EAGER:
        return None, None
    noise = cfg.augment is Augment.NOISE
    size = StagedSplit.nbytes(train_positions, noise) + StagedSplit.nbytes(dev_positions, False)
    if size > _staging_budget(device):
        _log.info("the training split (%.1f GB) is streamed from the store", size / 1e9)
        return None, None
    return (StagedSplit(data, train_positions, device, noise_cap=cfg.augment_error_cap if noise else None),
            StagedSplit(data, dev_positions, device) if len(dev_positions) else None)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainProfile, steps_per_epoch: int):
    """None for a constant rate; a one-cycle schedule peaking at ``learning_rate`` otherwise."""
    if cfg.schedule is Schedule.CONSTANT:
        return None
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.learning_rate,
                                               epochs=cfg.max_epochs, steps_per_epoch=steps_per_epoch)


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def predict_standardised(model: nn.Module, data: LabelledSpectra | StagedSplit, positions: np.ndarray,
                         chunk: int = 256, device: torch.device | None = None,
                         forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """Standardised predictions (len(positions), 3) in eval mode, ``chunk`` spectra at a time,
    from the store or a staged split, through ``forward`` (default: the model)."""
    device = device or next(model.parameters()).device
    forward = forward or model
    model.eval()
    out = np.empty((len(positions), 3), np.float32)
    with torch.no_grad():
        for start in range(0, len(positions), chunk):
            part = positions[start:start + chunk]
            flux, _ = data.batch(part) if isinstance(data, StagedSplit) else data.batch(part, device)
            out[start:start + len(flux)] = forward(flux).float().cpu().numpy()
    return out


def _dev_loss(model, data, positions, device, staged: StagedSplit | None, forward) -> float:
    if len(positions) == 0:
        return math.nan
    source = data if staged is None else staged
    return standardised_mse(data, positions, predict_standardised(model, source, positions, 256, device, forward))


def _inputs_hash(data: LabelledSpectra, train_positions: np.ndarray, dev_positions: np.ndarray) -> str:
    """What a checkpoint may only be resumed with: the same stars and targets, and the same code of
    the network, the training loop and the flux handling (a changed stage must start afresh)."""
    import hashlib
    import inspect

    from apogeenet import model as model_module

    digest = hashlib.sha256()
    for positions in (train_positions, dev_positions):
        digest.update(data.rows[positions].tobytes())
        digest.update(data.targets[positions].tobytes())
    digest.update(inspect.getsource(model_module).encode())
    digest.update(inspect.getsource(train_model).encode())
    return digest.hexdigest()[:16]


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path`` (plain weights only, no code runs), or None when it is missing
    or unusable (torn by a kill under an older version, planted, not a checkpoint): training then
    starts afresh and says so."""
    if not path.exists():
        return None
    try:
        return load_weights(path)
    except ModelFileError as exc:
        _log.warning("ignoring checkpoint: %s; training starts afresh", exc)
        return None


def _rng_state(device: torch.device) -> dict:
    """The global generators that dropout draws from, so that a resumed run is the same run."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train_model(data: LabelledSpectra, train_positions: np.ndarray, dev_positions: np.ndarray,
                cfg: TrainProfile, checkpoint_dir: str | Path, *,
                seed: int | None = None,
                init_state: dict | None = None,
                dev_loss: Callable[[nn.Module], float] | None = None,
                on_epoch: Callable[[dict], None] | None = None,
                progress: bool = False) -> TrainResult:
    """Train with early stopping on the dev loss; resumable from ``checkpoint_dir/last.pt``.

    ``seed`` replaces the profile's (adaptation rounds). ``init_state`` starts from given weights
    (adaptation, §3.4); those weights are measured first (epoch −1) and stay the best unless an
    epoch beats them. ``dev_loss(model)`` replaces the MSE
    on ``dev_positions`` as the early-stopping criterion. ``on_epoch`` receives each epoch's record
    (epoch, train_loss, dev_loss, seconds, samples_per_s).
    """
    from apogeenet.progress import progress_bar

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    for torn in checkpoint_dir.glob(".*.tmp-*"):  # a save that a kill interrupted
        torn.unlink(missing_ok=True)
    last, best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    device = best_device()
    seed = cfg.seed if seed is None else seed
    torch.manual_seed(seed)
    model = ApogeeNet(3, dropout=cfg.dropout).to(device)
    optimizer = _optimizer(model, cfg)
    scheduler = _scheduler(optimizer, cfg, math.ceil(len(train_positions) / cfg.batch_size))
    generator = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "best_dev_loss": math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}
    resizable = {"patience"} if cfg.schedule is Schedule.ONECYCLE else {"max_epochs", "patience"}
    config = {**cfg.model_dump(mode="json"), "seed": seed}  # plain values: checkpoints hold no objects
    signature = {**{k: v for k, v in config.items() if k not in resizable},
                 "n_train": int(len(train_positions)), "n_dev": int(len(dev_positions)),
                 "flux_scale": data.flux_scale, "inputs": _inputs_hash(data, train_positions, dev_positions)}
    saved = load_checkpoint(last)
    if saved is not None and saved.get("signature") != signature:
        saved = None  # a checkpoint of another configuration or data set: start afresh
    if saved is not None:  # resume after a kill
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        _set_rng_state(saved["rng"], device)
        state = saved["state"]
    elif init_state is not None:
        model.load_state_dict(init_state)
    forward = _forward(model, cfg)
    staged, staged_dev = _stage(data, train_positions, dev_positions if dev_loss is None else dev_positions[:0],
                                cfg, device)
    measure = dev_loss or (lambda net: _dev_loss(net, data, dev_positions, device, staged_dev, forward))
    if saved is None and init_state is not None:  # the starting point is the best so far
        state.update(best_dev_loss=measure(model), best_epoch=-1)
        save_weights({"model": model.state_dict(), "config": config, "epoch": -1}, best_path)
    loss_fn = _loss_function(cfg)
    while state["epoch"] < cfg.max_epochs and state["bad_epochs"] < cfg.patience:
        started = time.perf_counter()
        model.train()
        order = train_positions[torch.randperm(len(train_positions), generator=generator).numpy()]
        total, seen = 0.0, 0
        with progress_bar(math.ceil(len(order) / cfg.batch_size), f"epoch {state['epoch']}",
                          enabled=progress) as bar:
            for start in range(0, len(order), cfg.batch_size):
                noise = (np.random.default_rng([seed, state["epoch"], start]) if cfg.augment is Augment.NOISE
                         else None)  # a function of (seed, epoch, batch): a resumed run draws the same
                batch = order[start:start + cfg.batch_size]
                flux, target = (data.batch(batch, device, noise, noise_cap=cfg.augment_error_cap) if staged is None
                                else staged.batch(batch, noise))
                optimizer.zero_grad(set_to_none=True)
                with _autocast(device, cfg.amp):
                    loss = loss_fn(forward(flux).float(), target)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                total += loss.detach().double() * len(flux)  # on the device: no wait for each step
                seen += len(flux)
                bar.advance()
        total = float(total)
        if not math.isfinite(total):
            raise _diverged("training", total, state["epoch"], cfg)
        epoch_loss = measure(model)  # inf from a dev_loss is an epoch it rejects (the §3.4 guard), NaN is not
        if math.isnan(epoch_loss):
            raise _diverged("dev", epoch_loss, state["epoch"], cfg)
        seconds = time.perf_counter() - started
        record = {"epoch": state["epoch"], "train_loss": total / max(seen, 1), "dev_loss": epoch_loss,
                  "seconds": seconds, "samples_per_s": seen / seconds}
        state["history"].append(record)
        if epoch_loss < state["best_dev_loss"]:
            state.update(best_dev_loss=epoch_loss, best_epoch=state["epoch"], bad_epochs=0)
            save_weights({"model": model.state_dict(), "config": config, "epoch": state["epoch"]}, best_path)
        else:
            state["bad_epochs"] += 1
        state["epoch"] += 1
        save_weights({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "generator": generator.get_state(), "rng": _rng_state(device), "state": state,
               "signature": signature, "scheduler": scheduler.state_dict() if scheduler is not None else None},
              last)
        if on_epoch:
            on_epoch(record)
    model.load_state_dict(load_weights(best_path)["model"])
    return TrainResult(model.cpu(), state["best_dev_loss"], state["best_epoch"], state["history"])


def _loss_function(cfg: TrainProfile) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Eq. 4's MSE, or the Huber loss with one δ, or with a δ per parameter: δ_k² · huber₁(r / δ_k),
    which is huber_δk(r) term by term (quadratic within δ_k, linear beyond)."""
    if cfg.loss is not Loss.HUBER:
        return nn.MSELoss()
    deltas = per_parameter(cfg.huber_delta)
    if len(set(deltas)) == 1:
        return nn.HuberLoss(delta=deltas[0])
    unit = nn.HuberLoss(delta=1.0, reduction="none")

    def huber(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        delta = prediction.new_tensor(deltas)
        return torch.mean(unit(prediction / delta, target / delta) * delta ** 2)
    return huber


def _diverged(which: str, loss: float, epoch: int, cfg: TrainProfile) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged: the {which} loss is {loss} in epoch {epoch} ({cfg.optimizer}, "
                            f"learning rate {cfg.learning_rate}); lower the learning rate or set grad_clip in the "
                            "training profile")


def member_directory(checkpoint_dir: str | Path, member: int, members: int) -> Path:
    """Where member ``member`` of an ensemble of ``members`` keeps its checkpoints: the directory
    itself for a single network (the paper's layout), ``member<k>/`` in it otherwise."""
    return Path(checkpoint_dir) if members == 1 else Path(checkpoint_dir) / f"member{member}"


def train_ensemble(data: LabelledSpectra, train_positions: np.ndarray, dev_positions: np.ndarray,
                   cfg: TrainProfile, checkpoint_dir: str | Path, *, init_states: list[dict] | None = None,
                   on_epoch: Callable[[int, dict], None] | None = None,
                   progress: bool = False) -> list[TrainResult]:
    """The ``cfg.members`` networks of a deep ensemble (Lakshminarayanan et al. 2017), member k
    trained by :func:`train_model` with seed ``cfg.seed + k`` (each resumable on its own) and,
    given ``init_states``, from state k modulo their number. ``on_epoch(k, record)``."""
    results = []
    for k in range(cfg.members):
        init = None if not init_states else init_states[k % len(init_states)]
        results.append(train_model(data, train_positions, dev_positions, cfg,
                                   member_directory(checkpoint_dir, k, cfg.members), seed=cfg.seed + k,
                                   init_state=init, progress=progress,
                                   on_epoch=None if on_epoch is None else functools.partial(on_epoch, k)))
    return results
