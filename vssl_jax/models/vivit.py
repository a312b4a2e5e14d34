"""ViViT factorised encoder (Arnab et al. 2021, "model 2"): `vivit_factorised`.

A clip `[batch, time, height, width, 3]` is cut into tubelets of `tubelet_frames x patch x patch`
pixels (2x16x16 by default), each linearly embedded (`patch_embedding`), giving a grid of
`t x h x w` tokens. Two transformers follow, as scenic's `SpaceTimeViViT`:

- spatial: for each temporal index on its own, a class token (`spatial_class_token`) is put in
  front of its `h * w` tokens, a position table over `1 + h * w` rows is added
  (`spatial_position`), pre-norm blocks (`spatial`) and a LayerNorm (`spatial_norm`) run, and the
  class token's output is that temporal index's representation: `[batch, t, width]`. This is an
  image ViT applied to every temporal index, so an image ViT's weights can start it;
- temporal: a class token (`temporal_class_token`) in front of those `t` tokens, a position
  table over `1 + t` rows (`temporal_position`), blocks (`temporal`), a final LayerNorm (`norm`);
  the class token's output is the clip feature `[batch, width]`, read by the classifier (`head`,
  dropout before it).

ViViT-B/16x2 FE: width 768, 12 heads, MLP 3072, 12 spatial and 4 temporal layers. Each position
table is laid out for `num_frames x image_size x image_size` clips (the class token's row first,
then the grid's rows in row-major order); another clip length or resolution interpolates the
grid's rows (`transformer.resize_grid`) and keeps the class token's row, as `vit.ViT2D` does.
`position="sinusoidal"` uses VideoMAE's fixed table over the same rows instead (recomputed at
trace time, never trained). Stochastic depth rises linearly from 0 to `drop_path` within each
transformer, as scenic gives each encoder the same rate.

Differences from scenic's model: scenic initialises the tubelet kernel from a pretrained 2D
ViT's patch kernel ("central frame") and its classifier at zero; here both start random (the
class tokens start at zero in both).
Layer-wise lr decay (`optimizer.layer_decay`) numbers the spatial blocks then the temporal ones;
see `vssl_jax.optimizers.layer_ids`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models import transformer
from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.registry import register

POSITIONS = ("learned", "sinusoidal")


class ViViTFactorised(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        width: int = 768,
        depth: int = 12,
        temporal_depth: int = 4,
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
        if position not in POSITIONS:
            raise ValueError(
                f"vivit_factorised: position must be one of {POSITIONS}, not '{position}'"
            )
        dtype = jnp.dtype(dtype)
        self.tubelet = (tubelet_frames, patch, patch)
        self.feature_dim = width
        self.position_kind = position
        # Token grids the position tables are laid out for: (h, w) per temporal index, and (t,).
        reference = self.token_grid((num_frames, image_size, image_size, 3))
        self.spatial_grid, self.temporal_grid = reference[1:], reference[:1]
        self.patch_embedding = transformer.PatchEmbedding(
            self.tubelet, width, dtype=dtype, rngs=rngs
        )

        def stack(stack_depth: int) -> transformer.BlockStack:
            return transformer.BlockStack(
                width,
                stack_depth,
                num_heads,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path,
                remat=remat,
                attention_implementation=attention_implementation,
                dtype=dtype,
                rngs=rngs,
            )

        self.spatial_class_token = nnx.Param(jnp.zeros((1, width)))
        self.temporal_class_token = nnx.Param(jnp.zeros((1, width)))
        if position == "learned":
            init = jax.nn.initializers.truncated_normal(0.02)
            rows = (1 + reference[1] * reference[2], width), (1 + reference[0], width)
            self.spatial_position = nnx.Param(init(rngs.params(), rows[0]))
            self.temporal_position = nnx.Param(init(rngs.params(), rows[1]))
        self.spatial = stack(depth)
        self.spatial_norm = transformer.layer_norm(width, dtype=dtype, rngs=rngs)
        self.temporal = stack(temporal_depth)
        self.norm = transformer.layer_norm(width, dtype=dtype, rngs=rngs)
        self.head = ClassifierHead(width, num_classes, dropout=dropout, dtype=dtype, rngs=rngs)

    def token_grid(self, video_shape: Sequence[int]) -> tuple[int, int, int]:
        """`(t, h, w)` tubelets of a clip of shape `[..., time, height, width, 3]`."""
        spatial = tuple(video_shape[-4:-1])
        if any(s % p for s, p in zip(spatial, self.tubelet, strict=True)):
            raise ValueError(
                f"vivit_factorised: a clip of {'x'.join(map(str, spatial))} frames x pixels "
                f"does not split into {'x'.join(map(str, self.tubelet))} tubelets"
            )
        return tuple(s // p for s, p in zip(spatial, self.tubelet, strict=True))

    def position_table(self, which: str, grid: Sequence[int]) -> jax.Array:
        """`which` ("spatial" or "temporal") table for a token `grid`: `[1 + prod(grid), width]`,
        the class token's row first, the grid's rows interpolated from the reference grid."""
        reference = self.spatial_grid if which == "spatial" else self.temporal_grid
        learned = (
            getattr(self, f"{which}_position")[...] if self.position_kind == "learned" else None
        )
        return transformer.position_table(
            learned, reference, grid, self.feature_dim, class_row=True
        )

    @staticmethod
    def _with_class_token(tokens: jax.Array, class_token: nnx.Param, table: jax.Array):
        """[n, tokens, width] -> [n, 1 + tokens, width]: class token in front, positions added."""
        n, _, width = tokens.shape
        cls = jnp.broadcast_to(class_token[...].astype(tokens.dtype), (n, 1, width))
        return jnp.concatenate([cls, tokens], axis=1) + table.astype(tokens.dtype)

    def frame_tokens(
        self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        """[batch, time, height, width, 3] -> the spatial transformer's class token of every
        temporal index, after `spatial_norm`: [batch, time / tubelet_frames, width]."""
        t, h, w = self.token_grid(video.shape)
        x = self.patch_embedding(video)  # [batch, t, h, w, width]
        batch, width = x.shape[0], x.shape[-1]
        # Every temporal index is its own sequence: the spatial blocks never mix time.
        x = x.reshape(batch * t, h * w, width)
        x = self._with_class_token(
            x, self.spatial_class_token, self.position_table("spatial", (h, w))
        )
        x = self.spatial(x, train=train, rngs=rngs)
        return self.spatial_norm(x[:, 0]).reshape(batch, t, width)

    def features(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """[batch, time, height, width, 3] -> the temporal class token after `norm`
        [batch, width]."""
        x = self.frame_tokens(video, train=train, rngs=rngs)  # [batch, t, width]
        x = self._with_class_token(
            x, self.temporal_class_token, self.position_table("temporal", x.shape[1:2])
        )
        x = self.temporal(x, train=train, rngs=rngs)
        return self.norm(x[:, 0])

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """[batch, time, height, width, 3] -> float32 logits [batch, num_classes]."""
        return self.head(self.features(video, train=train, rngs=rngs), train=train, rngs=rngs)


@register("vivit_factorised")
def vivit_factorised(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ViViTFactorised:
    """ViViT factorised encoder; ViViT-B/16x2 (12 spatial + 4 temporal layers) by default."""
    return ViViTFactorised(num_classes, rngs=rngs, **kwargs)
