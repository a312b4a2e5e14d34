"""Metrics to TensorBoard (tensorboardX: no TensorFlow needed) and `metrics.jsonl`, process 0 only.

clu's `metric_writers` import TensorFlow, which the core package must not need; the event files
tensorboardX writes are read by TensorBoard as usual.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np


class MetricWriter:
    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))
            self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def write_scalars(self, step: int, scalars: dict[str, float], prefix: str) -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            self.tensorboard.add_scalar(f"{prefix}/{name}", float(value), step)
        record = {
            "step": step,
            "split": prefix,
            **{k: float(np.asarray(v)) for k, v in scalars.items()},
        }
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self.tensorboard.close()
            self.jsonl.close()
