"""One registration of a constant model (run as a separate process by test_reliability.py)."""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from factories import TABLE1

from apogeenet.model import ApogeeNet
from apogeenet.online import example_input
from apogeenet.pyfunc import log_and_register
from apogeenet.serving import Predictor
from apogeenet.tracking import mlflow_run

FLUX = np.random.default_rng(1).uniform(10, 500, (2, 8575)).astype(np.float32)
EXAMPLE = example_input(FLUX[:1], np.ones_like(FLUX[:1]), ["2M0"])


def constant_model(c: float) -> Predictor:
    """Predicts the standardised value ``c`` for every star: dev loss c² on an all-zero dev set."""
    model = ApogeeNet(3)
    torch.nn.init.zeros_(model.head[-1].weight)
    torch.nn.init.constant_(model.head[-1].bias, c)
    return Predictor(model, TABLE1)


def dev_loss_of(predictor: Predictor) -> float:
    time.sleep(1.0)  # measuring a model takes time: the window in which registrations race
    with torch.no_grad():
        return float((predictor.first.eval()(torch.from_numpy(FLUX)) ** 2).mean())


if __name__ == "__main__":
    root, value = sys.argv[1], float(sys.argv[2])
    with mlflow_run("race", f"c={value}", root=root):
        print(log_and_register(constant_model(value), EXAMPLE, dev_loss_of=dev_loss_of))
