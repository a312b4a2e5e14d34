"""CNN + LSTM (the Kinetics video-classification seed): a 2D image backbone encodes every frame
(`cnn_lstm_resnet18`: ResNet-18, as the seed; `cnn_lstm_vit`: a ViT, `vit.py`, whose class token is
the frame's feature), an LSTM runs over the frame features, and a linear classifier reads its last
hidden state (or the mean of its hidden states, `pool="mean"`).

`cnn_lstm_vit` takes `hidden`, `pool`, `dropout`, `dtype` and `ViT2D`'s options (`width`,
`depth`, `num_heads`, `mlp_ratio`, `patch`, `image_size`, `drop_path`, `remat`, `position`,
`attention_implementation`; ViT-B/16 at 224 px by default).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.registry import register
from vssl_jax.models.resnet2d import ResNet2D
from vssl_jax.models.vit import ViT2D


class CNNLSTM(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        backbone: ResNet2D | ViT2D,
        hidden: int = 512,
        pool: str = "last",
        dropout: float = 0.0,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        if pool not in ("last", "mean"):
            raise ValueError(f"CNNLSTM: pool must be 'last' or 'mean', got '{pool}'")
        dtype = jnp.dtype(dtype)
        self.backbone = backbone
        self.lstm = nnx.LSTMCell(backbone.feature_dim, hidden, dtype=dtype, rngs=rngs)
        self.hidden = hidden
        self.pool = pool
        self.feature_dim = hidden
        self.head = ClassifierHead(hidden, num_classes, dropout=dropout, dtype=dtype, rngs=rngs)

    def features(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """[batch, time, height, width, 3] -> LSTM state [batch, hidden]."""
        frames = self.backbone.frames(video, train=train, rngs=rngs)  # [batch, time, dim]
        zeros = jnp.zeros((frames.shape[0], self.hidden), frames.dtype)
        carry, outputs = (zeros, zeros), []
        # Clips are a few to a few tens of frames: an unrolled loop compiles fast and keeps the
        # cell's parameters plain attributes (no scan-lifted module).
        for t in range(frames.shape[1]):
            carry, h = self.lstm(carry, frames[:, t])
            outputs.append(h)
        return outputs[-1] if self.pool == "last" else jnp.stack(outputs, axis=1).mean(axis=1)

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        features = self.features(video, train=train, rngs=rngs)
        return self.head(features, train=train, rngs=rngs)


@register("cnn_lstm_resnet18")
def cnn_lstm_resnet18(
    num_classes: int, *, width: int = 64, dtype: str = "float32", rngs: nnx.Rngs, **kwargs
) -> CNNLSTM:
    backbone = ResNet2D(18, width=width, dtype=dtype, rngs=rngs)
    return CNNLSTM(num_classes, backbone=backbone, dtype=dtype, rngs=rngs, **kwargs)


@register("cnn_lstm_vit")
def cnn_lstm_vit(
    num_classes: int,
    *,
    hidden: int = 512,
    pool: str = "last",
    dropout: float = 0.0,
    dtype: str = "float32",
    rngs: nnx.Rngs,
    **vit_options,
) -> CNNLSTM:
    backbone = ViT2D(dtype=dtype, rngs=rngs, **vit_options)
    return CNNLSTM(
        num_classes,
        backbone=backbone,
        hidden=hidden,
        pool=pool,
        dropout=dropout,
        dtype=dtype,
        rngs=rngs,
    )
