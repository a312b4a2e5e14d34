"""Frame decoding and spatial augmentations on uint8 clips `[time, height, width, channels]`.

Normalisation to float happens on the device (see `normalize_video`), so the input pipeline moves
uint8 pixels: four times less host memory, shared memory and host-to-device traffic than float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import simplejpeg


class ClipError(ValueError):
    """A record cannot give the requested clip; the message names the source video."""


def decode_frames(jpegs: Sequence[bytes], indices: np.ndarray, source: str) -> np.ndarray:
    """Decodes only the frames at `indices` (each distinct frame once). Returns [T, H, W, 3]."""
    decoded: dict[int, np.ndarray] = {}
    for i in dict.fromkeys(int(i) for i in indices):
        try:
            decoded[i] = simplejpeg.decode_jpeg(jpegs[i], colorspace="RGB")
        except (ValueError, IndexError) as e:
            raise ClipError(f"{source}: frame {i} cannot be decoded ({e})") from None
    return np.stack([decoded[int(i)] for i in indices])


def _check_fits(video: np.ndarray, size: int, source: str) -> None:
    height, width = video.shape[1:3]
    if height < size or width < size:
        raise ClipError(
            f"{source}: frames are {height}x{width}, smaller than crop_size {size}; "
            "convert with a larger --short-side or lower config.data.crop_size"
        )


def random_crop(
    video: np.ndarray, size: int, rng: np.random.Generator, source: str = "clip"
) -> np.ndarray:
    """The same random `size`x`size` window in every frame (temporally consistent)."""
    _check_fits(video, size, source)
    top = int(rng.integers(0, video.shape[1] - size + 1))
    left = int(rng.integers(0, video.shape[2] - size + 1))
    return video[:, top : top + size, left : left + size]


def center_crop(video: np.ndarray, size: int, source: str = "clip") -> np.ndarray:
    _check_fits(video, size, source)
    top = (video.shape[1] - size) // 2
    left = (video.shape[2] - size) // 2
    return video[:, top : top + size, left : left + size]


def random_flip(video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirrors the whole clip left-right with probability 1/2."""
    return video[:, :, ::-1] if rng.random() < 0.5 else video


def normalize_video(video, mean: Sequence[float], std: Sequence[float], dtype):
    """uint8 [..., 3] -> (x / 255 - mean) / std in `dtype`; runs inside the jitted step."""
    import jax.numpy as jnp

    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return ((video.astype(jnp.float32) / 255.0 - mean) / std).astype(dtype)
