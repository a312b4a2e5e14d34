"""Clip samplers: which frame indices a clip uses, chosen before any frame is decoded.

All samplers share one rule for videos shorter than a clip's span: the clip starts at frame 0 and
its indices wrap around (the video loops), so every clip has exactly `clip_len` frames.
"""

from __future__ import annotations

import numpy as np


def clip_span(clip_len: int, stride: int) -> int:
    """Number of source frames a clip of `clip_len` frames `stride` apart covers."""
    return (clip_len - 1) * stride + 1


def _clip_at(start: int, num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    return (start + np.arange(clip_len) * stride) % num_frames


def random_clip_indices(
    num_frames: int, clip_len: int, stride: int, rng: np.random.Generator
) -> np.ndarray:
    """A clip at a uniformly random start. Returns int64 indices of shape [clip_len]."""
    last_start = num_frames - clip_span(clip_len, stride)
    start = int(rng.integers(0, last_start + 1)) if last_start > 0 else 0
    return _clip_at(start, num_frames, clip_len, stride)


def linspace_clip_indices(
    num_frames: int, clip_len: int, stride: int, num_clips: int
) -> np.ndarray:
    """`num_clips` clips with starts spread evenly over the video (DMVR's multi-clip test).

    Returns int64 indices of shape [num_clips, clip_len]; one clip is the centre clip.
    """
    last_start = max(num_frames - clip_span(clip_len, stride), 0)
    if num_clips == 1:
        starts = np.array([last_start // 2])
    else:
        starts = np.round(np.linspace(0, last_start, num_clips)).astype(np.int64)
    return np.stack([_clip_at(int(s), num_frames, clip_len, stride) for s in starts])


def segment_indices(
    num_frames: int,
    num_segments: int,
    rng: np.random.Generator | None = None,
    offset: float = 0.5,
) -> np.ndarray:
    """TSN's sparse sampling: the video cut into `num_segments` equal segments, one frame from
    each, at a uniformly random position in its segment (`rng`, training) or at fraction
    `offset` of it (testing; 0.5 is the centre). Videos with fewer frames than segments repeat
    frames. Returns int64 indices of shape [num_segments], in time order."""
    length = num_frames / num_segments
    starts = np.arange(num_segments) * length
    fractions = rng.random(num_segments) if rng is not None else np.full(num_segments, offset)
    return np.minimum((starts + fractions * length).astype(np.int64), num_frames - 1)
