"""Inflated Inception-v1 video models: I3D, S3D and S3D-G.

- `i3d` (Carreira & Zisserman 2017), as `piergiaj/pytorch-i3d`: every conv 3D, TensorFlow 'SAME'
  padding computed from the input size, first conv 7x7x7 stride 2; BN eps 1e-3, momentum 0.01.
- `s3d` (Xie et al. 2018), as torchvision's `video.s3d`: the 3x3x3 convs (and the 7x7x7 stem)
  split into 1xkxk then kx1x1, each with BN + ReLU; BN eps 1e-3, momentum 1e-3.
- `s3d_g`: S3D plus self-gating (TF-slim `nets/s3dg.py`): after the stem's separable 3x3 conv
  and on each branch of every inception block, x * sigmoid(W mean_{t,h,w}(x)), W a bias-free
  1x1x1 conv.

The head is the reference's: average pool 2x7x7 with stride 1 (window clipped to the feature map
for inputs smaller than the reference 224 px / 16 frames, which the references reject), dropout,
a 1x1x1 conv with bias (here the equivalent linear layer), then the mean over the remaining time
positions (pytorch-i3d returns them per time step; torchvision's S3D averages them).
`width` scales every channel count by width / 64 (64 as published).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.layers import ConvBN, avg_pool_valid, max_pool, max_pool_same
from vssl_jax.models.registry import register

# Inception blocks: (name, input channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels).
_MIXED = (
    ("3b", 192, (64, 96, 128, 16, 32, 32)),
    ("3c", 256, (128, 128, 192, 32, 96, 64)),
    ("4b", 480, (192, 96, 208, 16, 48, 64)),
    ("4c", 512, (160, 112, 224, 24, 64, 64)),
    ("4d", 512, (128, 128, 256, 24, 64, 64)),
    ("4e", 512, (112, 144, 288, 32, 64, 64)),
    ("4f", 528, (256, 160, 320, 32, 128, 128)),
    ("5b", 832, (256, 160, 320, 32, 128, 128)),
    ("5c", 832, (384, 192, 384, 48, 128, 128)),
)
MIXED_NAMES = tuple(name for name, _, _ in _MIXED)


class SelfGating(nnx.Module):
    """x * sigmoid(mean_{t,h,w}(x) @ W): S3D-G's feature gating, W a bias-free 1x1x1 conv."""

    def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
        init = jax.nn.initializers.truncated_normal(0.01)
        self.kernel = nnx.Param(init(rngs.params(), (channels, channels)))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        pooled = x.mean(axis=(1, 2, 3))  # [batch, channels]
        weights = jax.nn.sigmoid(pooled @ self.kernel[...].astype(self.dtype))
        return x * weights[:, None, None, None, :]


class SeparableConv(nnx.Module):
    """1xkxk conv -> BN -> ReLU -> kx1x1 conv -> BN -> ReLU (torchvision's TemporalSeparableConv)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, *, bn, dtype, rngs):
        k, s, p = kernel, stride, kernel // 2
        self.spatial = ConvBN(
            cin, cout, (1, k, k), (1, s, s), padding=((0, 0), (p, p), (p, p)), **bn,
            dtype=dtype, rngs=rngs,
        )  # fmt: skip
        self.temporal = ConvBN(
            cout, cout, (k, 1, 1), (s, 1, 1), padding=((p, p), (0, 0), (0, 0)), **bn,
            dtype=dtype, rngs=rngs,
        )  # fmt: skip

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return self.temporal(self.spatial(x, train=train), train=train)


class InceptionBlock(nnx.Module):
    """Four branches, concatenated: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max-pool -> 1x1."""

    def __init__(self, cin, channels, *, separable: bool, gating: bool, padding, bn, dtype, rngs):
        c0, c1a, c1b, c2a, c2b, c3b = channels

        def unit(a, b, kernel=(1, 1, 1)):
            return ConvBN(a, b, kernel, padding=padding, **bn, dtype=dtype, rngs=rngs)

        def conv3x3(a, b):
            if separable:
                return SeparableConv(a, b, 3, 1, bn=bn, dtype=dtype, rngs=rngs)
            return unit(a, b, (3, 3, 3))

        self.b0 = unit(cin, c0)
        self.b1a = unit(cin, c1a)
        self.b1b = conv3x3(c1a, c1b)
        self.b2a = unit(cin, c2a)
        self.b2b = conv3x3(c2a, c2b)
        self.b3b = unit(cin, c3b)
        if gating:
            self.gates = nnx.List(
                [SelfGating(c, dtype=dtype, rngs=rngs) for c in (c0, c1b, c2b, c3b)]
            )
        else:
            self.gates = None
        self.out_channels = c0 + c1b + c2b + c3b

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        pooled = max_pool(x, (3, 3, 3), (1, 1, 1), ((1, 1),) * 3)
        branches = [
            self.b0(x, train=train),
            self.b1b(self.b1a(x, train=train), train=train),
            self.b2b(self.b2a(x, train=train), train=train),
            self.b3b(pooled, train=train),
        ]
        if self.gates is not None:
            branches = [gate(b) for gate, b in zip(self.gates, branches, strict=True)]
        return jnp.concatenate(branches, axis=-1)


def _scaled(channels, width: int):
    return tuple(max(1, c * width // 64) for c in channels)


class Inception3D(nnx.Module):
    """I3D (`separable=False`), S3D (`separable=True`), S3D-G (`gating=True` as well)."""

    def __init__(
        self,
        num_classes: int,
        *,
        separable: bool,
        gating: bool = False,
        width: int = 64,
        dropout: float = 0.5,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        dtype = jnp.dtype(dtype)
        self.separable = separable
        c64, c192 = _scaled((64, 192), width)
        if separable:
            bn = {"bn_momentum": 1e-3, "bn_epsilon": 1e-3}
            padding = None
            self.conv1 = SeparableConv(3, c64, 7, 2, bn=bn, dtype=dtype, rngs=rngs)
            self.conv2 = ConvBN(c64, c64, (1, 1, 1), **bn, dtype=dtype, rngs=rngs)
            self.conv3 = SeparableConv(c64, c192, 3, 1, bn=bn, dtype=dtype, rngs=rngs)
        else:
            bn = {"bn_momentum": 1e-2, "bn_epsilon": 1e-3}
            padding = "SAME"

            def unit(a, b, kernel, strides=(1, 1, 1)):
                return ConvBN(a, b, kernel, strides, padding="SAME", **bn, dtype=dtype, rngs=rngs)

            self.conv1 = unit(3, c64, (7, 7, 7), (2, 2, 2))
            self.conv2 = unit(c64, c64, (1, 1, 1))
            self.conv3 = unit(c64, c192, (3, 3, 3))
        self.conv3_gate = SelfGating(c192, dtype=dtype, rngs=rngs) if gating else None
        blocks = []
        cin = c192
        for _, _, channels in _MIXED:
            block = InceptionBlock(
                cin,
                _scaled(channels, width),
                separable=separable,
                gating=gating,
                padding=padding,
                bn=bn,
                dtype=dtype,
                rngs=rngs,
            )
            blocks.append(block)
            cin = block.out_channels
        self.mixed = nnx.List(blocks)
        self.feature_dim = cin
        self.head = ClassifierHead(cin, num_classes, dropout=dropout, dtype=dtype, rngs=rngs)

    def _pool(self, x, window, strides):
        if self.separable:  # torchvision: explicit symmetric padding, k // 2 where k = 3.
            return max_pool(x, window, strides, [(w // 2 if w == 3 else 0,) * 2 for w in window])
        return max_pool_same(x, window, strides)

    def feature_map(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, time, height, width, 3] -> Mixed_5c output [batch, T/8, H/32, W/32, C]."""
        x = self.conv1(video, train=train)
        x = self._pool(x, (1, 3, 3), (1, 2, 2))
        x = self.conv3(self.conv2(x, train=train), train=train)
        if self.conv3_gate is not None:
            x = self.conv3_gate(x)
        x = self._pool(x, (1, 3, 3), (1, 2, 2))
        for name, block in zip(MIXED_NAMES, self.mixed, strict=True):
            if name == "4b":
                x = self._pool(x, (3, 3, 3), (2, 2, 2))
            elif name == "5b":
                x = self._pool(x, (2, 2, 2), (2, 2, 2))
            x = block(x, train=train)
        return x

    def _windows(self, x: jax.Array) -> jax.Array:
        """The reference's 2x7x7 stride-1 average pool: [batch, positions, channels]."""
        window = tuple(min(w, s) for w, s in zip((2, 7, 7), x.shape[1:4], strict=True))
        pooled = avg_pool_valid(x, window)
        return pooled.reshape(x.shape[0], -1, x.shape[-1])

    def features(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, time, height, width, 3] -> pooled features [batch, feature_dim]."""
        return self._windows(self.feature_map(video, train=train)).mean(axis=1)

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        windows = self._windows(self.feature_map(video, train=train))
        return self.head(windows, train=train, rngs=rngs).mean(axis=1)


@register("i3d")
def i3d(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> Inception3D:
    return Inception3D(num_classes, separable=False, rngs=rngs, **kwargs)


@register("s3d")
def s3d(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> Inception3D:
    kwargs.setdefault("dropout", 0.2)  # torchvision's default
    return Inception3D(num_classes, separable=True, rngs=rngs, **kwargs)


@register("s3d_g")
def s3d_g(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> Inception3D:
    kwargs.setdefault("dropout", 0.2)
    return Inception3D(num_classes, separable=True, gating=True, rngs=rngs, **kwargs)
