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


def spatial_crops(video: np.ndarray, size: int, num_crops: int, source: str = "clip") -> np.ndarray:
    """Test-time crops `[num_crops, T, size, size, 3]`: 1 = centre; 3 = start, centre and end of
    the long side, centred on the short side (the three-crop test of SlowFast and DMVR)."""
    if num_crops == 1:
        return center_crop(video, size, source)[None]
    if num_crops != 3:
        raise ValueError(f"num_test_crops must be 1 or 3, not {num_crops}")
    _check_fits(video, size, source)
    height, width = video.shape[1:3]
    long_axis = 1 if height > width else 2
    long_offsets = (0, (video.shape[long_axis] - size) // 2, video.shape[long_axis] - size)
    short_offset = (video.shape[3 - long_axis] - size) // 2
    crops = []
    for offset in long_offsets:
        top, left = (offset, short_offset) if long_axis == 1 else (short_offset, offset)
        crops.append(video[:, top : top + size, left : left + size])
    return np.stack(crops)


def random_flip(video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirrors the whole clip left-right with probability 1/2."""
    return video[:, :, ::-1] if rng.random() < 0.5 else video


def normalize_video(video, mean: Sequence[float], std: Sequence[float], dtype):
    """uint8 [..., 3] -> (x / 255 - mean) / std in `dtype`; runs inside the jitted step."""
    import jax.numpy as jnp

    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return ((video.astype(jnp.float32) / 255.0 - mean) / std).astype(dtype)
