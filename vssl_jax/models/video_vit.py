"""Joint space-time ViT (ViViT "model 1", Arnab et al. 2021; the backbone of VideoMAE, Tong et
al. 2022): `vivit_joint`.

A clip `[batch, time, height, width, 3]` is cut into non-overlapping tubelets of
`tubelet_frames x patch x patch` pixels (2x16x16: 8 x 14 x 14 = 1,568 tokens for 16x224x224),
each linearly embedded (`patch_embedding`); a position table over the token grid is added
(`position`: learned, or the fixed sinusoidal table of VideoMAE); one stack of pre-norm
Transformer blocks attends over all tokens of all frames at once (`blocks`); a final LayerNorm
(`norm`), the mean over tokens and a linear classifier (`head`, dropout before it).

Tokens are in row-major `(t, h, w)` order: token `(t * h_grid + i) * w_grid + j` is the tube
starting at frame `t * tubelet_frames`, row `i * patch`, column `j * patch`. The position table
is laid out on the reference grid of `num_frames x image_size x image_size` clips; another clip
length or resolution interpolates it (`transformer.resize_grid`). The sinusoidal table is that
of VideoMAE, over the flattened token index; it is a constant of the graph, not a weight.

Pooling, compared with VideoMAE's fine-tuning model (`modeling_finetune.py`, mean pooling): there
the blocks' output is averaged over tokens and then normalised (`fc_norm`), and the pretrained
encoder's final `norm` is dropped (the fine-tuning model has none; `fc_norm` starts fresh). Here
every token is normalised by `norm` before the mean, the same `norm` that ends VideoMAE's
pretraining encoder, so a pretrained encoder is reused whole. Both end in a LayerNorm'd
representation; they differ in whether the statistics are per token or of the mean. Two smaller
differences: VideoMAE's attention has biases on q and v only (here on k too; k's bias cannot
change the softmax, it adds the same amount to every score of a query), and VideoMAE scales its
initial classifier by `init_scale` (0.001) where the zoo's `ClassifierHead` draws N(0, 0.01).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models import transformer
from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.registry import register


class VideoViT(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        width: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        patch: int = 16,
        tubelet_frames: int = 2,
        image_size: int = 224,
        num_frames: int = 16,
        position: str = "learned",
        drop_path: float = 0.0,
        dropout: float = 0.0,
        remat: bool = False,
        attention_implementation: str | None = None,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        dtype = jnp.dtype(dtype)
        self.width = self.feature_dim = width
        self.tubelet = (tubelet_frames, patch, patch)
        self.reference_grid = self.token_grid((num_frames, image_size, image_size, 3))
        self.position_kind = position
        self.patch_embedding = transformer.PatchEmbedding(
            self.tubelet, width, dtype=dtype, rngs=rngs
        )
        num_tokens = math.prod(self.reference_grid)
        if position == "learned":
            init = jax.nn.initializers.truncated_normal(0.02)
            self.position = nnx.Param(init(rngs.params(), (num_tokens, width)))
        elif position != "sinusoidal":
            raise ValueError(f"position must be 'learned' or 'sinusoidal', not '{position}'")
        self.blocks = transformer.BlockStack(
            width,
            depth,
            num_heads,
            mlp_ratio=mlp_ratio,
            drop_path=drop_path,
            remat=remat,
            attention_implementation=attention_implementation,
            dtype=dtype,
            rngs=rngs,
        )
        self.norm = transformer.layer_norm(width, dtype=dtype, rngs=rngs)
        self.head = ClassifierHead(width, num_classes, dropout=dropout, dtype=dtype, rngs=rngs)

    def token_grid(self, video_shape: Sequence[int]) -> tuple[int, int, int]:
        """`(t, h, w)` tokens of a clip of shape `[..., time, height, width, 3]`."""
        spatial = tuple(video_shape[-4:-1])
        if len(spatial) != 3 or any(s % p for s, p in zip(spatial, self.tubelet, strict=True)):
            raise ValueError(
                f"clip of {'x'.join(map(str, spatial))} frames x pixels does not split into "
                f"{'x'.join(map(str, self.tubelet))} tubelets"
            )
        return tuple(s // p for s, p in zip(spatial, self.tubelet, strict=True))

    def position_table(self, grid: Sequence[int]) -> jax.Array:
        """The position embeddings of a `grid` of tokens: `[prod(grid), width]`."""
        learned = self.position[...] if self.position_kind == "learned" else None
        return transformer.position_table(
            learned, self.reference_grid, grid, self.width, class_row=False
        )

    def embed(self, video: jax.Array) -> jax.Array:
        """[batch, time, height, width, 3] -> tokens with positions [batch, t * h * w, width],
        row-major over the token grid `(t, h, w)`."""
        grid = self.token_grid(video.shape)
        tokens = self.patch_embedding(video)  # [batch, t, h, w, width]
        tokens = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])
        return tokens + self.position_table(grid).astype(tokens.dtype)

    def encode(self, tokens: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Blocks and final LayerNorm over any set of tokens: [batch, n, width] -> same shape."""
        return self.norm(self.blocks(tokens, train=train, rngs=rngs))

    def features(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """[batch, time, height, width, 3] -> token mean [batch, width]."""
        return self.encode(self.embed(video), train=train, rngs=rngs).mean(axis=1)

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """[batch, time, height, width, 3] -> float32 logits [batch, num_classes]."""
        return self.head(self.features(video, train=train, rngs=rngs), train=train, rngs=rngs)


@register("vivit_joint")
def vivit_joint(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> VideoViT:
    """Joint space-time ViT; ViT-B/16 with 2x16x16 tubelets on 16x224x224 clips by default."""
    return VideoViT(num_classes, rngs=rngs, **kwargs)
