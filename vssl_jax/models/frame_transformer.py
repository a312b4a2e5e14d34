"""2D ResNet-18 + Transformer (the CPCTrans seed's backbone): a 2D ResNet encodes every frame, a
linear layer maps its features to `transformer_width`, learned temporal position embeddings are
added, and pre-norm Transformer blocks (LayerNorm -> self-attention -> residual, LayerNorm -> GELU
MLP -> residual) mix time; a final LayerNorm and the mean over time give the clip feature.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.registry import register
from vssl_jax.models.resnet2d import ResNet2D


class TransformerBlock(nnx.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, dtype, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, rngs=rngs)
        # keep_rngs=False and no attention dropout: dropout rngs come with the call, never state.
        self.attention = nnx.MultiHeadAttention(
            num_heads, dim, decode=False, keep_rngs=False, dtype=dtype, rngs=rngs
        )
        self.norm2 = nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, rngs=rngs)
        hidden = int(dim * mlp_ratio)
        self.mlp_in = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(hidden, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """[batch, tokens, dim] -> [batch, tokens, dim]. `mask` (bool, broadcastable to
        `[batch, heads, tokens, tokens]`): query i attends to key j where True; None: all."""
        x = x + self.attention(self.norm1(x), mask=mask)
        return x + self.mlp_out(nnx.gelu(self.mlp_in(self.norm2(x))))


class FrameTransformer(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        depth: int = 18,
        width: int = 64,
        transformer_width: int = 512,
        transformer_depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        max_frames: int = 64,
        dropout: float = 0.0,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        dtype = jnp.dtype(dtype)
        self.backbone = ResNet2D(depth, width=width, dtype=dtype, rngs=rngs)
        self.project = nnx.Linear(
            self.backbone.feature_dim, transformer_width, dtype=dtype, rngs=rngs
        )
        init = jax.nn.initializers.normal(0.02)
        self.position = nnx.Param(init(rngs.params(), (max_frames, transformer_width)))
        self.layers = nnx.List(
            [
                TransformerBlock(transformer_width, num_heads, mlp_ratio, dtype=dtype, rngs=rngs)
                for _ in range(transformer_depth)
            ]
        )
        self.norm = nnx.LayerNorm(transformer_width, epsilon=1e-6, dtype=dtype, rngs=rngs)
        self.feature_dim = transformer_width
        self.head = ClassifierHead(
            transformer_width, num_classes, dropout=dropout, dtype=dtype, rngs=rngs
        )

    def features(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, time, height, width, 3] -> time-pooled features [batch, transformer_width]."""
        time, max_frames = video.shape[1], self.position.shape[0]
        if time > max_frames:
            raise ValueError(f"clip of {time} frames; this model has max_frames={max_frames}")
        x = self.project(self.backbone.frames(video, train=train))  # [batch, time, width]
        x = x + self.position[:time].astype(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).mean(axis=1)

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.head(self.features(video, train=train), train=train, rngs=rngs)


@register("transformer_resnet18")
def transformer_resnet18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> FrameTransformer:
    return FrameTransformer(num_classes, depth=18, rngs=rngs, **kwargs)
