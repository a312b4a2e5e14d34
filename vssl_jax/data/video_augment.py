"""Photometric, geometric and mixing augmentations of uint8 clips `[time, height, width, 3]`.

Each transform is drawn once per clip and applied identically to every frame (temporally
consistent, as CVRL and the VTDL seed do), so it changes appearance but never invents motion:
a pixel's colour maps through the same function in every frame, and every frame moves through
the same geometry. The contrastive objectives (`vssl_jax.objectives.moco`, `.vtdl`) compose
them on the host, in grain workers; colour arithmetic runs on contiguous float32 channel planes
with the constant matrices precomputed, and the result is rounded back to uint8.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# ITU-R 601-2 luma, the weights of PIL's "L" conversion and torchvision's rgb_to_grayscale.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)

# Hue rotation turns colours about the grey axis u = (1, 1, 1) / sqrt(3) (Rodrigues' formula
# R = cos(a) I + sin(a) [u]x + (1 - cos(a)) u u^T): greys stay fixed and +1/3 of a turn maps red
# to green to blue, as a +1/3 HSV hue shift does.
_IDENTITY = np.eye(3, dtype=np.float32)
_GREY_OUTER = np.full((3, 3), 1.0 / 3.0, np.float32)
_GREY_CROSS = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], np.float32) / np.sqrt(3.0)
# Saturation blends every channel towards the luma: row c of the matrix is s e_c + (1 - s) LUMA.
_LUMA_ROWS = np.tile(LUMA, (3, 1))

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


@dataclasses.dataclass(frozen=True)
class JitterParams:
    """One clip's colour jitter: factors (1 and 0 are identities) applied in `order`."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0  # Fraction of a full turn, in [-0.5, 0.5].
    order: tuple[int, ...] = (BRIGHTNESS, CONTRAST, SATURATION, HUE)


def sample_jitter(
    rng: np.random.Generator,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
) -> JitterParams:
    """torchvision's `ColorJitter` draw: factors uniform in [max(0, 1 - s), 1 + s] for strength
    s, hue uniform in [-hue, hue], the four operations in random order."""

    def factor(strength: float) -> float:
        return float(rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength)) if strength else 1.0

    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"colour jitter hue must lie in [0, 0.5], got {hue}")
    return JitterParams(
        brightness=factor(brightness),
        contrast=factor(contrast),
        saturation=factor(saturation),
        hue=float(rng.uniform(-hue, hue)) if hue else 0.0,
        order=tuple(int(i) for i in rng.permutation(4)),
    )


def _hue_matrix(hue: float) -> np.ndarray:
    angle = 2.0 * np.pi * hue
    return (
        np.cos(angle) * _IDENTITY
        + np.sin(angle) * _GREY_CROSS
        + (1.0 - np.cos(angle)) * _GREY_OUTER
    ).astype(np.float32)


def _saturation_matrix(saturation: float) -> np.ndarray:
    return (saturation * _IDENTITY + (1.0 - saturation) * _LUMA_ROWS).astype(np.float32)


def _planar(video: np.ndarray) -> np.ndarray:
    """uint8 `[..., 3]` -> float32 `[3, pixels]`, C-contiguous: numpy's reductions and small
    matrix products run several times faster on whole channel rows than on interleaved ones."""
    planar = np.empty((3, video.size // 3), np.float32)
    for channel in range(3):
        planar[channel] = video[..., channel].reshape(-1)
    return planar


def _interleaved(planar: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """float32 `[3, pixels]` in [0, 255] -> uint8 `shape` (`[..., 3]`), rounded."""
    out = np.empty(shape, np.uint8)
    rows = out.reshape(-1, 3)
    for channel in range(3):
        rows[:, channel] = np.rint(planar[channel])
    return out


def _mix_channels(matrix: np.ndarray, planar: np.ndarray) -> np.ndarray:
    """`matrix @ planar` for a 3x3 `matrix`. einsum's own loop: a BLAS call for this shape was
    20x slower here (thread start-up on every call, and grain workers share the cores)."""
    return np.einsum("dc,cn->dn", matrix, planar)


def color_jitter(video: np.ndarray, params: JitterParams) -> np.ndarray:
    """Brightness, contrast, saturation and hue changes of a uint8 clip `[..., 3]`, each clipped
    to [0, 255] as torchvision does between its operations.

    Brightness scales pixels; contrast blends them with the mean luma of the whole clip (one
    mean for all frames, where torchvision takes each image's own: a per-frame mean would shift
    frames differently); saturation blends with each pixel's luma; hue turns colours about the
    grey axis (a linear stand-in for torchvision's HSV shift: equal for the primaries and greys,
    close elsewhere). Returns uint8 of `video`'s shape.
    """
    pixels = _planar(video)  # [3, pixels]
    for op in params.order:
        if op == BRIGHTNESS and params.brightness != 1.0:
            pixels *= np.float32(params.brightness)
        elif op == CONTRAST and params.contrast != 1.0:
            mean = float(LUMA @ pixels.mean(axis=1))
            pixels *= np.float32(params.contrast)
            pixels += np.float32((1.0 - params.contrast) * mean)
        elif op == SATURATION and params.saturation != 1.0:
            pixels = _mix_channels(_saturation_matrix(params.saturation), pixels)
        elif op == HUE and params.hue != 0.0:
            pixels = _mix_channels(_hue_matrix(params.hue), pixels)
        else:
            continue
        np.clip(pixels, 0.0, 255.0, out=pixels)
    return _interleaved(pixels, video.shape)


def grayscale(video: np.ndarray) -> np.ndarray:
    """The luma of a uint8 clip `[..., 3]` copied to all three channels (uint8, same shape)."""
    luma = np.einsum("c,cn->n", LUMA, _planar(video))  # [pixels]
    return _interleaved(np.broadcast_to(luma, (3, luma.size)), video.shape)


def mix_static_frame(video: np.ndarray, frame: int, weight: float) -> np.ndarray:
    """`(1 - weight) * video[t] + weight * video[frame]` for every t, rounded to uint8.

    The VTDL seed's intra-video mixup (its "TCA"): the added frame is static, so every frame
    difference is only scaled by `1 - weight` while the still background grows stronger.
    `video` is `[time, height, width, 3]` uint8; returns the same shape.
    """
    mixed = video.astype(np.float32)
    mixed *= np.float32(1.0 - weight)
    mixed += np.float32(weight) * video[frame].astype(np.float32)
    return np.rint(mixed, out=mixed).astype(np.uint8)


def rotate_crop(video: np.ndarray, degrees: float, top: int, left: int, size: int) -> np.ndarray:
    """The `size`x`size` window at (`top`, `left`) of every frame rotated `degrees`
    counter-clockwise about the frame's centre.

    Nearest-neighbour, with black where the rotated frame does not reach (PIL's
    `Image.rotate` defaults, which the VTDL seed's `RandomRotation` uses); only the window's
    pixels are gathered, so rotating then cropping costs one crop. `video` is
    `[time, height, width, 3]`; returns `[time, size, size, 3]` of its dtype.
    """
    frames, height, width, channels = video.shape
    rows, cols = np.mgrid[top : top + size, left : left + size].astype(np.float32)
    center_row, center_col = (height - 1) / 2.0, (width - 1) / 2.0
    d_row, d_col = rows - center_row, cols - center_col
    angle = np.deg2rad(degrees)
    # Image rows grow downwards, so a counter-clockwise turn on screen samples the source at
    # the window position turned clockwise.
    src_col = np.rint(center_col + d_col * np.cos(angle) - d_row * np.sin(angle)).astype(np.int64)
    src_row = np.rint(center_row + d_col * np.sin(angle) + d_row * np.cos(angle)).astype(np.int64)
    inside = (src_row >= 0) & (src_row < height) & (src_col >= 0) & (src_col < width)
    flat = np.where(inside, src_row * width + src_col, 0).reshape(-1)
    out = video.reshape(frames, height * width, channels)[:, flat]
    out[:, ~inside.reshape(-1)] = 0
    return out.reshape(frames, size, size, channels)
