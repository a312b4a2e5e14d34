"""C3D (Tran et al. 2015) as the VTDL seed uses it (`src/model/c3d.py`, from VCOP): the paper's 8
3x3x3 convolutions (64, 128, 256 x2, 512 x2, 512 x2; with bias) and 5 pools (the first 1x2x2, then
2x2x2), each conv followed by BatchNorm and ReLU, and pool5 replaced by a global average pool
that gives the 512-d feature; no fc6/fc7. Reference input 16x112x112. `width` scales the channels
by width / 64. The pools need clips of at least 8 frames of 16x16 pixels; shorter or smaller ones
are refused (pooled to nothing, the average would be NaN), as torch's max-pool refuses them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.layers import Conv3D, batch_norm, conv_init, max_pool
from vssl_jax.models.registry import register

# (layer name, output channels at width 64, max-pool window after it or None).
_LAYERS = (
    ("1", 64, (1, 2, 2)),
    ("2", 128, (2, 2, 2)),
    ("3a", 256, None),
    ("3b", 256, (2, 2, 2)),
    ("4a", 512, None),
    ("4b", 512, (2, 2, 2)),
    ("5a", 512, None),
    ("5b", 512, None),
)
LAYER_NAMES = tuple(name for name, _, _ in _LAYERS)


class C3D(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        width: int = 64,
        dropout: float = 0.0,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        dtype = jnp.dtype(dtype)
        convs, norms = [], []
        cin = 3
        for _, channels, _ in _LAYERS:
            cout = max(1, channels * width // 64)
            convs.append(
                Conv3D(
                    cin,
                    cout,
                    (3, 3, 3),
                    use_bias=True,
                    kernel_init=conv_init,
                    dtype=dtype,
                    rngs=rngs,
                )
            )
            norms.append(batch_norm(cout, dtype=dtype, rngs=rngs))
            cin = cout
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.pools = tuple(pool for _, _, pool in _LAYERS)
        self.feature_dim = cin
        self.head = ClassifierHead(cin, num_classes, dropout=dropout, dtype=dtype, rngs=rngs)

    def features(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, time, height, width, 3] -> pooled conv5b features [batch, feature_dim]."""
        _, frames, height, width, _ = video.shape
        if frames < 8 or height < 16 or width < 16:
            raise ValueError(
                f"c3d needs clips of at least 8 frames of 16x16 pixels (its max-pools halve time "
                f"3 times and space 4 times), got {frames} frames of {height}x{width}"
            )
        x = video
        for conv, norm, pool in zip(self.convs, self.norms, self.pools, strict=True):
            x = nnx.relu(norm(conv(x), use_running_average=not train))
            if pool is not None:
                x = max_pool(x, pool, pool, ((0, 0),) * 3)
        return x.mean(axis=(1, 2, 3))

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.head(self.features(video, train=train), train=train, rngs=rngs)


@register("c3d")
def c3d(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> C3D:
    return C3D(num_classes, rngs=rngs, **kwargs)
