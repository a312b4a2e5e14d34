"""Shared fixtures. Tiny shapes: XLA's CPU 3D convolutions are slow."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
import simplejpeg
from absl import flags
from array_record.python.array_record_module import ArrayRecordWriter

from vssl_jax.data import records

# grain's worker processes read absl flags; under pytest nobody parses them.
flags.FLAGS.mark_as_parsed()
# The demo dataset built by tests (and their subprocesses) stays out of the user's cache.
os.environ.setdefault("VSSL_JAX_CACHE", tempfile.mkdtemp(prefix="vssl_jax_test_cache_"))
# XLA's native 3D convolutions, not the CPU default of temporal taps (`models/layers.py`): at the
# suite's tiny shapes XLA compiles the taps ~3x slower (the multibranch smoke run: 97 s of
# compilation against 34 s) and the run saves nothing. `tests/test_layers.py` checks the taps
# against the native convolution; `tests/test_demo_smoke.py` trains on the default path.
os.environ.setdefault("VSSL_JAX_CONV3D", "native")
# One XLA compilation cache for the whole run, its xdist workers and their subprocesses: a test
# that reruns or resumes a step loads the executable an earlier test compiled.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(
        tempfile.gettempdir(),
        "vssl_jax_test_xla_" + os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid())),
    ),
)

TINY_CLASSES = ("square_moves_left", "square_moves_right")


def moving_square_video(direction: int, rng: np.random.Generator, frames=12, size=40):
    """A bright square sliding `direction` (-1 left, +1 right) 2 px/frame over noise."""
    video = rng.integers(0, 60, (frames, size, size, 3), dtype=np.uint8)
    top, left = rng.integers(4, size - 12, 2)
    for t in range(frames):
        x = (left + direction * 2 * t) % (size - 8)
        video[t, top : top + 8, x : x + 8] = 230
    return video


def write_tiny_dataset(root: str, *, per_class: dict[str, int], seed: int = 0) -> str:
    """Shards of moving-square videos made straight through the record schema (no video codec)."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "label_map.json"), "w") as f:
        json.dump({name: i for i, name in enumerate(TINY_CLASSES)}, f)
    for split, count in per_class.items():
        path = os.path.join(root, records.shard_name("tiny", split, "array_record", 0, 1))
        writer = ArrayRecordWriter(path, "group_size:1")
        for i in range(count * len(TINY_CLASSES)):
            label = i % len(TINY_CLASSES)
            video = moving_square_video(2 * label - 1, rng)
            writer.write(
                records.encode_record(
                    frames=[simplejpeg.encode_jpeg(f, 95) for f in video],
                    label=label,
                    label_text=TINY_CLASSES[label],
                    path=f"{split}/{i:03d}.mp4",
                    start_time=0.0,
                    end_time=len(video) / 10,
                    fps=10.0,
                )
            )
        writer.close()
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    return write_tiny_dataset(
        str(tmp_path_factory.mktemp("tiny")), per_class={"train": 12, "val": 5}
    )


def tiny_config(data_dir: str, **overrides):
    """A seconds-long supervised config on `tiny_dataset`."""
    from configs.base import get_base_config

    config = get_base_config()
    config.data.data_dir = data_dir
    config.data.num_frames = 4
    config.data.frame_stride = 2
    config.data.crop_size = 32
    config.data.flip = False
    config.data.num_workers = 0
    config.model.width = 4
    config.model.dropout = 0.0
    config.optimizer.lr = 0.05
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 6
    config.log_every = 1
    config.checkpoint_every = 3
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    config.lock()
    return config
