"""grain input pipelines: ArrayRecord shards -> sampled, decoded, augmented uint8 clip batches.

Train: global shuffle (reshuffled every epoch) -> sample frame indices -> decode only those JPEGs
-> random crop (+ flip) -> batch. Eval: every example exactly once as `num_test_clips` clips x
`num_test_crops` crops (video `[batch, views, T, H, W, 3]`), the last batch padded and masked so
every host runs the same number of steps.
Each host reads its own slice of the examples (`jax.process_index()`), and `global_batch`
turns per-host batches into one `jax.Array` sharded over the mesh.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import math
import os
import sys

import grain
import jax
import numpy as np

from vssl_jax.data import records, sampling, transforms


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What a clip looks like; built from `config.data`."""

    num_frames: int
    frame_stride: int
    crop_size: int
    flip: bool = False
    num_test_clips: int = 1  # Eval views: clips spread evenly over the video...
    num_test_crops: int = 1  # ... times spatial crops (1 centre, or 3 along the long side).
    # "dense": `num_frames` frames `frame_stride` apart; "segments": TSN's one frame from each
    # of `num_frames` equal segments of the whole video (`frame_stride` unused).
    sampler: str = "dense"

    def train_indices(self, num_video_frames: int, rng: np.random.Generator) -> np.ndarray:
        if self.sampler == "segments":
            return sampling.segment_indices(num_video_frames, self.num_frames, rng)
        return sampling.random_clip_indices(
            num_video_frames, self.num_frames, self.frame_stride, rng
        )

    def test_indices(self, num_video_frames: int) -> np.ndarray:
        """`[num_test_clips, num_frames]`: dense clips spread evenly, or segment frames at
        evenly spread offsets inside each segment (one view at the centres)."""
        if self.sampler == "segments":
            offsets = (np.arange(self.num_test_clips) + 0.5) / self.num_test_clips
            return np.stack(
                [
                    sampling.segment_indices(num_video_frames, self.num_frames, offset=o)
                    for o in offsets
                ]
            )
        return sampling.linspace_clip_indices(
            num_video_frames, self.num_frames, self.frame_stride, self.num_test_clips
        )

    @property
    def num_views(self) -> int:
        return self.num_test_clips * self.num_test_crops


def clip_spec(data_config) -> ClipSpec:
    return ClipSpec(
        num_frames=data_config.num_frames,
        frame_stride=data_config.frame_stride,
        crop_size=data_config.crop_size,
        flip=data_config.flip,
        num_test_clips=data_config.num_test_clips,
        num_test_crops=data_config.num_test_crops,
        sampler=data_config.sampler,
    )


def load_label_names(data_dir: str) -> list[str]:
    """Class names in index order, from data_prep's `label_map.json`."""
    path = os.path.join(data_dir, "label_map.json")
    try:
        with open(path) as f:
            label_map = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: missing (convert videos with `python -m data_prep convert` first)"
        ) from None
    return sorted(label_map, key=label_map.__getitem__)


class TrainClip:
    """A video -> {'video': uint8 [T, crop, crop, 3], 'label': int32}, randomly."""

    def __init__(self, spec: ClipSpec):
        self.spec = spec

    def __call__(
        self, record: records.VideoRecord, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        indices = self.spec.train_indices(record.num_frames, rng)
        video = transforms.decode_random_crop(
            record.frames, indices, self.spec.crop_size, rng, self.spec.flip, record.path
        )
        return {"video": video, "label": np.int32(record.label)}


def test_views(frames, num_frames: int, spec: ClipSpec, source: str) -> np.ndarray:
    """All eval views of one video, `[num_views, T, crop, crop, 3]` uint8, clip-major.

    `frames` are JPEG bytes (a record) or decoded `[N, H, W, 3]` arrays (a raw video).
    """
    views = []
    for indices in spec.test_indices(num_frames):
        if isinstance(frames, np.ndarray):
            video = frames[indices]
        else:
            video = transforms.decode_frames(frames, indices, source)
        views.append(transforms.spatial_crops(video, spec.crop_size, spec.num_test_crops, source))
    return np.ascontiguousarray(np.concatenate(views))


class EvalClip:
    """Position `i` of a padded eval pass -> the test views of example `i`, masked if padding."""

    def __init__(self, source, indices: np.ndarray, spec: ClipSpec):
        self.source = source
        self.indices = indices
        self.spec = spec

    def __call__(self, position: int) -> dict[str, np.ndarray]:
        is_real = position < len(self.indices)
        index = int(self.indices[min(position, len(self.indices) - 1)])
        record = self.source[index]
        return {
            "video": test_views(record.frames, record.num_frames, self.spec, record.path),
            "label": np.int32(record.label),
            "mask": np.float32(is_real),
            "index": np.int32(index),
        }


def split_source(data_dir: str, split: str) -> records.VideoSource:
    """Random access to the videos of one split, in shard order."""
    return records.VideoSource(records.shard_paths(data_dir, split))


def _local_batch_size(global_batch_size: int) -> int:
    if global_batch_size % jax.process_count():
        raise ValueError(
            f"batch_size {global_batch_size} is not divisible by the "
            f"{jax.process_count()} processes"
        )
    return global_batch_size // jax.process_count()


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory() -> bool:
    """Lets this process's glibc malloc reuse freed multi-megabyte blocks instead of unmapping them.

    Every clip allocates and frees several blocks of megabytes (the record's bytes, the decoded
    frames, the batch). glibc hands such blocks back to the kernel on free, or trims them off the
    heap, so the next clip pays a page fault for each 4 KiB it touches: 1.5-2 ms of kernel time
    per 16x112x112 clip on the development machine, ~40% of the clip. Fixed thresholds keep
    blocks up to 32 MiB on the heap and trim it only above 256 MiB free. Runs once per process,
    in the main one and in every worker; elsewhere than glibc it does nothing and says so.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False  # Not glibc (musl, ...).
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    )


def _worker_init(worker_index: int, worker_count: int) -> None:
    keep_freed_memory()


def _finish(dataset: grain.MapDataset, num_workers: int) -> grain.IterDataset:
    keep_freed_memory()
    iter_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=8))
    if num_workers > 0:
        iter_ds = iter_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers), worker_init_fn=_worker_init
        )
    return iter_ds


def train_dataset(
    data_dir: str,
    split: str,
    spec: ClipSpec,
    *,
    global_batch_size: int,
    seed: int,
    num_workers: int,
    make_example=None,
) -> grain.IterDataset:
    """An endless, checkpointable stream of local training batches for this host.

    `make_example(video_record, rng) -> dict` makes one training example (an objective's clip
    sampler and augmentations); the default is one dense clip, `TrainClip(spec)`.
    """
    dataset = grain.MapDataset.source(split_source(data_dir, split))
    dataset = dataset[jax.process_index() :: jax.process_count()]
    dataset = dataset.shuffle(seed=seed).repeat(None)
    dataset = dataset.random_map(make_example or TrainClip(spec), seed=seed)
    dataset = dataset.batch(_local_batch_size(global_batch_size), drop_remainder=True)
    return _finish(dataset, num_workers)


def eval_dataset(
    data_dir: str, split: str, spec: ClipSpec, *, global_batch_size: int, num_workers: int
) -> tuple[grain.IterDataset, int]:
    """One pass over this host's examples; returns (dataset, number of batches).

    Every host runs the same number of batches: the shorter ones pad with masked copies.
    """
    source = split_source(data_dir, split)
    local_batch = _local_batch_size(global_batch_size)
    indices = np.arange(len(source))[jax.process_index() :: jax.process_count()]
    per_host = math.ceil(len(source) / jax.process_count())
    num_batches = math.ceil(per_host / local_batch)
    dataset = grain.MapDataset.range(num_batches * local_batch)
    dataset = dataset.map(EvalClip(source, indices, spec)).batch(local_batch)
    return _finish(dataset, num_workers), num_batches


def global_batch(local_batch: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """Per-host numpy batch -> global arrays, batch axis sharded as `sharding` says."""
    return {
        key: jax.make_array_from_process_local_data(sharding, value)
        for key, value in local_batch.items()
    }
