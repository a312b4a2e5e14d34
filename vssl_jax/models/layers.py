"""Layers shared by the video models.

`Conv3D` is a channels-last 3D convolution with the same parameter (`kernel`
`[kt, kh, kw, in, out]`, optional `bias`) as `nnx.Conv`. On XLA:CPU it runs as a sum of 2D
convolutions over the temporal taps, because XLA:CPU's native 3D convolution is several times
slower than its 2D one (3-6x forward and input-gradient on R3D-sized layers, measured by
`benchmarks/conv3d_cpu.py`); on GPU and TPU it is the native 3D convolution. Both compute the same
function; `tests/test_layers.py` checks values and gradients against `lax.conv_general_dilated`.
`VSSL_JAX_CONV3D=native|taps` forces one implementation (for benchmarks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

Padding = Sequence[tuple[int, int]]
_default_kernel_init = nnx.initializers.lecun_normal()


def _use_temporal_taps() -> bool:
    choice = os.environ.get("VSSL_JAX_CONV3D", "auto")
    if choice not in ("auto", "native", "taps"):
        raise ValueError(f"VSSL_JAX_CONV3D={choice!r}: expected auto, native or taps")
    return choice == "taps" or (choice == "auto" and jax.default_backend() == "cpu")


def conv3d_native(x: jax.Array, kernel: jax.Array, strides, padding: Padding) -> jax.Array:
    return lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=("NTHWC", "THWIO", "NTHWC")
    )


def conv3d_temporal_taps(x: jax.Array, kernel: jax.Array, strides, padding: Padding) -> jax.Array:
    """sum_i conv2d(frames shifted by tap i, kernel[i]): the 3D convolution, one tap at a time."""
    batch, _, height, width, channels = x.shape
    taps, stride_t = kernel.shape[0], strides[0]
    x = jnp.pad(x, ((0, 0), padding[0], (0, 0), (0, 0), (0, 0)))
    out_frames = (x.shape[1] - taps) // stride_t + 1
    out = None
    for tap in range(taps):
        frames = x[:, tap : tap + stride_t * (out_frames - 1) + 1 : stride_t]
        frames = frames.reshape(batch * out_frames, height, width, channels)
        y = lax.conv_general_dilated(
            frames,
            kernel[tap],
            strides[1:],
            padding[1:],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        out = y if out is None else out + y
    return out.reshape(batch, out_frames, *out.shape[1:])


def conv3d(x: jax.Array, kernel: jax.Array, strides, padding: Padding) -> jax.Array:
    """Channels-last 3D convolution `[B, T, H, W, C] x [kt, kh, kw, C, O] -> [B, T', H', W', O]`."""
    if _use_temporal_taps():
        return conv3d_temporal_taps(x, kernel, strides, padding)
    return conv3d_native(x, kernel, strides, padding)


class Conv3D(nnx.Module):
    """3D convolution; `padding` defaults to k // 2 on each side (torch's `padding=k // 2`)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        strides: Sequence[int] = (1, 1, 1),
        *,
        padding: Padding | None = None,
        use_bias: bool = False,
        kernel_init=_default_kernel_init,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        shape = (*kernel_size, in_features, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
        self.strides = tuple(strides)
        self.padding = tuple(padding or [(k // 2, k // 2) for k in kernel_size])
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel.value.astype(self.dtype)
        y = conv3d(x.astype(self.dtype), kernel, self.strides, self.padding)
        if self.bias is not None:
            y = y + self.bias.value.astype(self.dtype)
        return y
