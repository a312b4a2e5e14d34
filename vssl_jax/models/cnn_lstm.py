"""CNN + LSTM (the Kinetics video-classification seed): a 2D ResNet-18 encodes every frame, an
LSTM runs over the frame features, and a linear classifier reads its last hidden state (or the
mean of its hidden states, `pool="mean"`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.registry import register
from vssl_jax.models.resnet2d import ResNet2D


class CNNLSTM(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        depth: int = 18,
        width: int = 64,
        hidden: int = 512,
        pool: str = "last",
        dropout: float = 0.0,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        if pool not in ("last", "mean"):
            raise ValueError(f"CNNLSTM: pool must be 'last' or 'mean', got '{pool}'")
        dtype = jnp.dtype(dtype)
        self.backbone = ResNet2D(depth, width=width, dtype=dtype, rngs=rngs)
        self.lstm = nnx.LSTMCell(self.backbone.feature_dim, hidden, dtype=dtype, rngs=rngs)
        self.hidden = hidden
        self.pool = pool
        self.feature_dim = hidden
        self.head = ClassifierHead(hidden, num_classes, dropout=dropout, dtype=dtype, rngs=rngs)

    def features(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, time, height, width, 3] -> LSTM state [batch, hidden]."""
        frames = self.backbone.frames(video, train=train)  # [batch, time, feature_dim]
        zeros = jnp.zeros((frames.shape[0], self.hidden), frames.dtype)
        carry, outputs = (zeros, zeros), []
        # Clips are a few to a few tens of frames: an unrolled loop compiles fast and keeps the
        # cell's parameters plain attributes (no scan-lifted module).
        for t in range(frames.shape[1]):
            carry, h = self.lstm(carry, frames[:, t])
            outputs.append(h)
        return outputs[-1] if self.pool == "last" else jnp.stack(outputs, axis=1).mean(axis=1)

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.head(self.features(video, train=train), train=train, rngs=rngs)


@register("cnn_lstm_resnet18")
def cnn_lstm_resnet18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> CNNLSTM:
    return CNNLSTM(num_classes, depth=18, rngs=rngs, **kwargs)
