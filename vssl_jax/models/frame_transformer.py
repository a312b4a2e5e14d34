"""2D ResNet-18 + Transformer (the CPCTrans seed's backbone): a 2D image backbone encodes every
frame (`transformer_resnet18`: ResNet-18; `transformer_vit`: a ViT, `vit.py`, whose class token is
the frame's feature), a linear layer maps its features to `transformer_width`, learned temporal
position embeddings are added, and pre-norm Transformer blocks (LayerNorm -> self-attention ->
residual, LayerNorm -> GELU MLP -> residual) mix time; a final LayerNorm and the mean over time
give the clip feature.

`transformer_resnet18` takes `width` (the ResNet's), `transformer_width`, `transformer_depth`,
`num_heads`, `mlp_ratio` (the temporal Transformer's), `max_frames`, `dropout`, `dtype`.
`transformer_vit` takes `width`, `depth`, `num_heads`, `mlp_ratio` and `ViT2D`'s other options
(`patch`, `image_size`, `drop_path`, `remat`, `position`, `attention_implementation`; ViT-B/16 at
224 px by default) for the frame encoder, and `transformer_width`, `transformer_depth`,
`transformer_heads`, `transformer_mlp_ratio`, `max_frames`, `dropout`, `dtype`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.registry import register
from vssl_jax.models.resnet2d import ResNet2D
from vssl_jax.models.vit import ViT2D


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
        backbone: ResNet2D | ViT2D,
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
        self.backbone = backbone
        self.project = nnx.Linear(backbone.feature_dim, transformer_width, dtype=dtype, rngs=rngs)
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

    def features(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """[batch, time, height, width, 3] -> time-pooled features [batch, transformer_width]."""
        time, max_frames = video.shape[1], self.position.shape[0]
        if time > max_frames:
            raise ValueError(f"clip of {time} frames; this model has max_frames={max_frames}")
        frames = self.backbone.frames(video, train=train, rngs=rngs)
        x = self.project(frames)  # [batch, time, transformer_width]
        x = x + self.position[:time].astype(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).mean(axis=1)

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        features = self.features(video, train=train, rngs=rngs)
        return self.head(features, train=train, rngs=rngs)


@register("transformer_resnet18")
def transformer_resnet18(
    num_classes: int, *, width: int = 64, dtype: str = "float32", rngs: nnx.Rngs, **kwargs
) -> FrameTransformer:
    backbone = ResNet2D(18, width=width, dtype=dtype, rngs=rngs)
    return FrameTransformer(num_classes, backbone=backbone, dtype=dtype, rngs=rngs, **kwargs)


@register("transformer_vit")
def transformer_vit(
    num_classes: int,
    *,
    transformer_width: int = 512,
    transformer_depth: int = 4,
    transformer_heads: int = 8,
    transformer_mlp_ratio: float = 4.0,
    max_frames: int = 64,
    dropout: float = 0.0,
    dtype: str = "float32",
    rngs: nnx.Rngs,
    **vit_options,
) -> FrameTransformer:
    # The temporal Transformer's options are prefixed: `num_heads` and `mlp_ratio` are the ViT's.
    backbone = ViT2D(dtype=dtype, rngs=rngs, **vit_options)
    return FrameTransformer(
        num_classes,
        backbone=backbone,
        transformer_width=transformer_width,
        transformer_depth=transformer_depth,
        num_heads=transformer_heads,
        mlp_ratio=transformer_mlp_ratio,
        max_frames=max_frames,
        dropout=dropout,
        dtype=dtype,
        rngs=rngs,
    )
