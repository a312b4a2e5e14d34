"""3D ResNets (Hara et al. 2018; Tran et al. 2018), laid out as torchvision's `video.r3d_18`.

Channels-last: input `[batch, time, height, width, 3]`. Stem conv 3x7x7 stride (1, 2, 2), four
stages of basic blocks (3x3x3 convs), stages 2-4 halve time, height and width, and a 1x1x1
projection shortcut (type B) wherever the shape changes. `width` scales every stage's channels
(64 as published; tiny values for CPU tests).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.layers import Conv3D
from vssl_jax.models.registry import register

# torchvision initialises convs with kaiming_normal_(mode="fan_out", nonlinearity="relu").
_conv_init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(cin, cout, kernel, stride, *, dtype, rngs) -> Conv3D:
    return Conv3D(cin, cout, kernel, stride, kernel_init=_conv_init, dtype=dtype, rngs=rngs)


def _batch_norm(channels, *, dtype, rngs) -> nnx.BatchNorm:
    # torch's momentum 0.1 is flax's 0.9; same epsilon as torch.
    return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)


class BasicBlock3D(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, *, dtype, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, cout, (3, 3, 3), (stride,) * 3, dtype=dtype, rngs=rngs)
        self.bn1 = _batch_norm(cout, dtype=dtype, rngs=rngs)
        self.conv2 = _conv(cout, cout, (3, 3, 3), (1, 1, 1), dtype=dtype, rngs=rngs)
        self.bn2 = _batch_norm(cout, dtype=dtype, rngs=rngs)
        if stride != 1 or cin != cout:
            self.shortcut_conv = _conv(cin, cout, (1, 1, 1), (stride,) * 3, dtype=dtype, rngs=rngs)
            self.shortcut_bn = _batch_norm(cout, dtype=dtype, rngs=rngs)
        else:
            self.shortcut_conv = self.shortcut_bn = None

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        frozen = not train
        y = nnx.relu(self.bn1(self.conv1(x), use_running_average=frozen))
        y = self.bn2(self.conv2(y), use_running_average=frozen)
        if self.shortcut_conv is not None:
            x = self.shortcut_bn(self.shortcut_conv(x), use_running_average=frozen)
        return nnx.relu(x + y)


class ResNet3D(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        stage_sizes: tuple[int, ...],
        width: int = 64,
        dropout: float = 0.0,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        dtype = jnp.dtype(dtype)
        self.stem_conv = _conv(3, width, (3, 7, 7), (1, 2, 2), dtype=dtype, rngs=rngs)
        self.stem_bn = _batch_norm(width, dtype=dtype, rngs=rngs)
        blocks = []
        cin = width
        for stage, num_blocks in enumerate(stage_sizes):
            cout = width * 2**stage
            for i in range(num_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock3D(cin, cout, stride, dtype=dtype, rngs=rngs))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.feature_dim = cin
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(
            cin,
            num_classes,
            kernel_init=jax.nn.initializers.normal(0.01),
            dtype=dtype,
            rngs=rngs,
        )

    def features(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, time, height, width, 3] -> pooled features [batch, feature_dim]."""
        x = nnx.relu(self.stem_bn(self.stem_conv(video), use_running_average=not train))
        for block in self.blocks:
            x = block(x, train=train)
        return x.mean(axis=(1, 2, 3))

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = self.features(video, train=train)
        x = self.dropout(x, deterministic=not train, rngs=rngs)
        return self.head(x).astype(jnp.float32)


@register("r3d_18")
def r3d_18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    return ResNet3D(num_classes, stage_sizes=(2, 2, 2, 2), rngs=rngs, **kwargs)
