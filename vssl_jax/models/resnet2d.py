"""2D ResNets (He et al. 2016), laid out as torchvision's `resnet18/34/50`: the per-frame backbone
of TSN, CNN+LSTM, the per-frame classifier and the ResNet-18 + Transformer (`vit.py` is the other
frame backbone they take).

Channels-last images `[n, height, width, 3]` -> features `[n, feature_dim]`: 7x7/2 conv, BN, ReLU,
3x3/2 max-pool, four stages (basic blocks for 18/34, bottlenecks with the stride on the 3x3 conv,
"v1.5", for 50), global average pool. No classifier: the video models own theirs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.layers import batch_norm, conv2d, conv_init, max_pool

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _conv(cin, cout, kernel, stride, *, dtype, rngs) -> nnx.Conv:
    pad = kernel // 2
    return nnx.Conv(
        cin,
        cout,
        (kernel, kernel),
        (stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=conv_init,
        dtype=dtype,
        conv_general_dilated=conv2d,
        rngs=rngs,
    )


class BasicBlock2D(nnx.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, *, dtype, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, planes, 3, stride, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(planes, dtype=dtype, rngs=rngs)
        self.conv2 = _conv(planes, planes, 3, 1, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(planes, dtype=dtype, rngs=rngs)
        self._shortcut(cin, planes, stride, dtype=dtype, rngs=rngs)

    def _shortcut(self, cin, planes, stride, *, dtype, rngs):
        cout = planes * self.expansion
        if stride != 1 or cin != cout:
            self.shortcut_conv = _conv(cin, cout, 1, stride, dtype=dtype, rngs=rngs)
            self.shortcut_bn = batch_norm(cout, dtype=dtype, rngs=rngs)
        else:
            self.shortcut_conv = self.shortcut_bn = None

    def _residual(self, x: jax.Array, y: jax.Array, frozen: bool) -> jax.Array:
        if self.shortcut_conv is not None:
            x = self.shortcut_bn(self.shortcut_conv(x), use_running_average=frozen)
        return nnx.relu(x + y)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        frozen = not train
        y = nnx.relu(self.bn1(self.conv1(x), use_running_average=frozen))
        y = self.bn2(self.conv2(y), use_running_average=frozen)
        return self._residual(x, y, frozen)


class Bottleneck2D(BasicBlock2D):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, *, dtype, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, planes, 1, 1, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(planes, dtype=dtype, rngs=rngs)
        self.conv2 = _conv(planes, planes, 3, stride, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(planes, dtype=dtype, rngs=rngs)
        self.conv3 = _conv(planes, planes * 4, 1, 1, dtype=dtype, rngs=rngs)
        self.bn3 = batch_norm(planes * 4, dtype=dtype, rngs=rngs)
        self._shortcut(cin, planes, stride, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        frozen = not train
        y = nnx.relu(self.bn1(self.conv1(x), use_running_average=frozen))
        y = nnx.relu(self.bn2(self.conv2(y), use_running_average=frozen))
        y = self.bn3(self.conv3(y), use_running_average=frozen)
        return self._residual(x, y, frozen)


class ResNet2D(nnx.Module):
    def __init__(self, depth: int = 18, *, width: int = 64, dtype=jnp.float32, rngs: nnx.Rngs):
        """`dtype`: the compute dtype, or its name."""
        if depth not in STAGE_SIZES:
            raise ValueError(f"2D ResNet depth {depth} is not one of {sorted(STAGE_SIZES)}")
        dtype = jnp.dtype(dtype)
        block = Bottleneck2D if depth >= 50 else BasicBlock2D
        self.conv1 = _conv(3, width, 7, 2, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(width, dtype=dtype, rngs=rngs)
        blocks = []
        cin = width
        for stage, num_blocks in enumerate(STAGE_SIZES[depth]):
            planes = width * 2**stage
            for i in range(num_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(block(cin, planes, stride, dtype=dtype, rngs=rngs))
                cin = planes * block.expansion
        self.blocks = nnx.List(blocks)
        self.stage_sizes = STAGE_SIZES[depth]
        self.feature_dim = cin

    # `rngs` is accepted so that a frame model calls every backbone alike (a ViT draws stochastic
    # depth from it); a ResNet draws nothing.
    def feature_map(
        self, images: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        """[n, height, width, 3] -> last stage's output [n, height/32, width/32, feature_dim]."""
        x = nnx.relu(self.bn1(self.conv1(images), use_running_average=not train))
        x = max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x, train=train)
        return x

    def __call__(
        self, images: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        """[n, height, width, 3] -> pooled features [n, feature_dim]."""
        return self.feature_map(images, train=train).mean(axis=(1, 2))

    def frames(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """[batch, time, height, width, 3] -> per-frame features [batch, time, feature_dim]."""
        batch, time = video.shape[:2]
        features = self(video.reshape(batch * time, *video.shape[2:]), train=train)
        return features.reshape(batch, time, -1)
