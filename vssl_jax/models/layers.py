"""Layers shared by the video models.

`Conv3D` is a channels-last 3D convolution with the same parameter (`kernel`
`[kt, kh, kw, in, out]`, optional `bias`) as `nnx.Conv`. On XLA:CPU it runs as a sum of 2D
convolutions over the temporal taps, because XLA:CPU's native 3D convolution is several times
slower than its 2D one (3-6x forward and input-gradient on R3D-sized layers, measured by
`benchmarks/conv3d_cpu.py`); on GPU and TPU it is the native 3D convolution. Both compute the same
function; `tests/test_layers.py` checks values and gradients against `lax.conv_general_dilated`.
`VSSL_JAX_CONV3D=native|taps` forces one implementation (for benchmarks).

`conv2d` is `lax.conv_general_dilated` for channels-last 2D convolutions (the taps and
`resnet2d`'s `nnx.Conv`s use it). On XLA:CPU it computes two kinds of layer as one matrix product
over cut-out patches instead, where XLA's convolution is pathologically slow: small maps (a
2x2 map under a 3x3 kernel: 458 ms forward for 5 ms as patches; 16 positions or fewer) and
inputs of a few channels (the stems: 7x7 kernel gradient 122 ms -> 15 ms), timed one layer
at a time at ResNet-18's shapes (`benchmarks/README.md`, `train_step.py` section). The patches
hold kh x kw copies of the input: fine for these small maps and 3-channel stems.

Also here: the building blocks that several model families share (conv + BatchNorm + ReLU, pooling,
torch-compatible initialisers and BatchNorm settings), so that a model file holds only its
architecture.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

Padding = Sequence[tuple[int, int]]
_default_kernel_init = nnx.initializers.lecun_normal()

# torchvision initialises convs with kaiming_normal_(mode="fan_out", nonlinearity="relu").
conv_init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")


_CHANNELS_LAST_2D = ("NHWC", "HWIO", "NHWC")
# Where XLA:CPU's 2D convolution loses to patches + matmul (see the module docstring).
_PATCHES_MAX_POSITIONS = 16
_PATCHES_MAX_CHANNELS = 4


def conv2d_as_patches(x: jax.Array, kernel: jax.Array, strides, padding: Padding) -> jax.Array:
    """The channels-last 2D convolution as one matrix product of the kernel with the input's
    `kh x kw` patches (cut out by strided slices, stacked along channels)."""
    kh, kw, cin, cout = kernel.shape
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out_h = (x.shape[1] - kh) // strides[0] + 1
    out_w = (x.shape[2] - kw) // strides[1] + 1
    rows = strides[0] * (out_h - 1) + 1
    cols = strides[1] * (out_w - 1) + 1
    patches = jnp.concatenate(
        [
            x[:, i : i + rows : strides[0], j : j + cols : strides[1]]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )
    return patches @ kernel.reshape(kh * kw * cin, cout)


def conv2d(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=_CHANNELS_LAST_2D,
    feature_group_count: int = 1,
    **kwargs,
) -> jax.Array:
    """`lax.conv_general_dilated` (same signature; `nnx.Conv(conv_general_dilated=conv2d)`), with
    XLA:CPU's slow cases of a plain channels-last 2D convolution computed as patches."""
    plain = (
        jax.default_backend() == "cpu"
        and lhs.ndim == 4
        and not isinstance(padding, str)
        and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
        and feature_group_count == 1
        and all(value is None for value in kwargs.values())  # precision, out_sharding, ...
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _CHANNELS_LAST_2D)
    )
    if plain:
        positions = math.prod(
            (size + lo + hi - k) // stride + 1
            for size, (lo, hi), k, stride in zip(
                lhs.shape[1:3], padding, rhs.shape[:2], window_strides, strict=True
            )
        )
        if positions <= _PATCHES_MAX_POSITIONS or lhs.shape[-1] <= _PATCHES_MAX_CHANNELS:
            return conv2d_as_patches(lhs, rhs, window_strides, padding)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        **kwargs,
    )


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
        y = conv2d(frames, kernel[tap], strides[1:], padding[1:])
        out = y if out is None else out + y
    return out.reshape(batch, out_frames, *out.shape[1:])


def conv3d(x: jax.Array, kernel: jax.Array, strides, padding: Padding) -> jax.Array:
    """Channels-last 3D convolution `[B, T, H, W, C] x [kt, kh, kw, C, O] -> [B, T', H', W', O]`."""
    if _use_temporal_taps():
        return conv3d_temporal_taps(x, kernel, strides, padding)
    return conv3d_native(x, kernel, strides, padding)


def same_padding(sizes: Sequence[int], kernel_size: Sequence[int], strides: Sequence[int]):
    """TensorFlow's 'SAME' padding (the extra pixel at the end), as I3D-style models compute it."""
    return lax.padtype_to_pads(tuple(sizes), tuple(kernel_size), tuple(strides), "SAME")


class Conv3D(nnx.Module):
    """3D convolution; `padding` defaults to k // 2 on each side (torch's `padding=k // 2`).

    `padding="SAME"` pads like TensorFlow, from the input size at call time (I3D and the
    ResNet-I3D seed compute their padding that way).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        strides: Sequence[int] = (1, 1, 1),
        *,
        padding: Padding | str | None = None,
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
        if padding == "SAME":
            self.padding = padding
        else:
            self.padding = tuple(padding or [(k // 2, k // 2) for k in kernel_size])
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        padding = self.padding
        if padding == "SAME":
            padding = same_padding(x.shape[1:4], kernel.shape[:3], self.strides)
        y = conv3d(x.astype(self.dtype), kernel, self.strides, padding)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class BatchNorm(nnx.BatchNorm):
    """`nnx.BatchNorm` (same variables, options and results) whose training pass replaces the
    running statistics with `set_value` instead of flax's in-place `variable[...] = ...`.

    flax's in-place update asks the traced value for its `sharding`; the error JAX raises inside
    that `getattr` describes where the tracer came from by walking the whole trace so far, so
    every BatchNorm costs time proportional to the model traced before it: 10.7 s of the 27 s
    that tracing the multibranch train step took. Features on the last axis, statistics over all
    others (the zoo's layout); cross-device statistics (`axis_name`) and masks go to flax.
    """

    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average or mask is not None or self.axis_name is not None:
            return super().__call__(x, use_running_average=use_running_average, mask=mask)
        if self.axis not in (-1, x.ndim - 1):
            raise ValueError(f"BatchNorm over axis {self.axis}: the zoo's features are last")
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        # Statistics in at least float32, as flax's fast variance: E[x^2] - E[x]^2.
        wide = x.astype(jnp.promote_types(dtype, jnp.float32))
        axes = tuple(range(x.ndim - 1))
        mean = wide.mean(axes)
        var = jnp.maximum(0.0, (wide * wide).mean(axes) - mean * mean)
        keep = self.momentum
        self.mean.set_value(lax.stop_gradient(keep * self.mean[...] + (1 - keep) * mean))
        self.var.set_value(lax.stop_gradient(keep * self.var[...] + (1 - keep) * var))
        multiplier = lax.rsqrt(var + self.epsilon)
        if self.scale is not None:
            multiplier = multiplier * self.scale[...].astype(dtype)
        y = (x - mean) * multiplier
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y.astype(dtype)


def batch_norm(
    channels: int,
    *,
    momentum: float = 0.1,
    epsilon: float = 1e-5,
    zero_init: bool = False,
    dtype,
    rngs: nnx.Rngs,
) -> BatchNorm:
    """BatchNorm with torch's conventions: `momentum` is torch's (flax's is 1 - it)."""
    return BatchNorm(
        channels,
        momentum=1.0 - momentum,
        epsilon=epsilon,
        scale_init=nnx.initializers.zeros if zero_init else nnx.initializers.ones,
        dtype=dtype,
        rngs=rngs,
    )


class ConvBN(nnx.Module):
    """Conv3D (no bias) -> BatchNorm -> ReLU: the unit of the Inception-style video models."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: Sequence[int],
        strides: Sequence[int] = (1, 1, 1),
        *,
        padding: Padding | str | None = None,
        bn_momentum: float = 0.1,
        bn_epsilon: float = 1e-5,
        dtype,
        rngs: nnx.Rngs,
    ):
        self.conv = Conv3D(
            cin,
            cout,
            kernel_size,
            strides,
            padding=padding,
            kernel_init=conv_init,
            dtype=dtype,
            rngs=rngs,
        )
        self.bn = batch_norm(cout, momentum=bn_momentum, epsilon=bn_epsilon, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return nnx.relu(self.bn(self.conv(x), use_running_average=not train))


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int], padding: Padding):
    """Max-pool over the axes between batch and channels; padding counts as -inf (torch's)."""
    dims = (1, *window, 1)
    return lax.reduce_window(
        x,
        -jnp.inf,
        lax.max,
        dims,
        (1, *strides, 1),
        ((0, 0), *padding, (0, 0)),
    )


def max_pool_same(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> jax.Array:
    """Max-pool with TensorFlow 'SAME' padding. I3D pads with zeros there; its inputs are ReLU
    outputs (>= 0), where zero and -inf padding give the same maximum."""
    return max_pool(x, window, strides, same_padding(x.shape[1:-1], window, strides))


def avg_pool_valid(x: jax.Array, window: Sequence[int]) -> jax.Array:
    """Stride-1 average pool without padding over the axes between batch and channels."""
    dims = (1, *window, 1)
    total = lax.reduce_window(x, 0.0, lax.add, dims, (1,) * x.ndim, "VALID")
    return total / math.prod(window)
