"""Vision Transformer image encoder (Dosovitskiy et al. 2021), laid out as torchvision's
`VisionTransformer`: the 2D frame backbone of `per_frame_vit`, `tsn_vit`, `cnn_lstm_vit` and
`transformer_vit` (the last one also the frame encoder of `cpc_transformer`, "ViT-temporal CPC").

Channels-last images `[n, height, width, 3]`: p x p patches -> tokens (`patch_embedding`), a learned
class token in front (`class_token`), a position table over the 1 + (H/p)(W/p) tokens added
(`position`), pre-norm Transformer blocks (`blocks`, `vssl_jax.models.transformer.BlockStack`),
a final LayerNorm (`norm`). The image feature is the class token after `norm`, as torchvision's
classifier reads it; `feature_map` gives the patch tokens after `norm` on their grid, the dense
map that `cpc_transformer` predicts. No classifier: the video models own theirs.

The position table is either learned (an `nnx.Param`, truncated normal of std 0.02) or the fixed
sinusoidal table of VideoMAE (`position="sinusoidal"`, recomputed at trace time, never trained);
either is laid out for `image_size` (row-major over the patch grid after the class token's row).
Images of another size get the patch rows interpolated to their grid (`resize_grid`, cubic) and
the class token's row unchanged, as timm and DeiT fine-tune at a higher resolution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models import transformer

# (width, depth, heads) of ViT-Ti/16 and ViT-S/16 (DeiT, Touvron et al. 2021) and ViT-B/16
# (Dosovitskiy et al. 2021); all have an MLP 4x as wide as the tokens.
VIT_SIZES = {"ti": (192, 12, 3), "s": (384, 12, 6), "b": (768, 12, 12)}
POSITIONS = ("learned", "sinusoidal")


class ViT2D(nnx.Module):
    def __init__(
        self,
        *,
        width: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        patch: int = 16,
        image_size: int = 224,
        drop_path: float = 0.0,
        remat: bool = False,
        position: str = "learned",
        attention_implementation: str | None = None,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        """`width`, `depth`, `num_heads`, `mlp_ratio`: the blocks (ViT-B by default,
        `VIT_SIZES`); `patch` px square patches; `image_size`: the images the position table is
        laid out for; `drop_path`: the last block's stochastic-depth rate (0 for the first);
        `remat`: recompute each block in the backward pass; `position`: "learned" or
        "sinusoidal"; `attention_implementation`: `jax.nn.dot_product_attention`'s (None: XLA;
        "cudnn" on GPU in bf16/fp16); `dtype`: the compute dtype, or its name."""
        if position not in POSITIONS:
            raise ValueError(f"ViT: position must be one of {POSITIONS}, got '{position}'")
        if image_size % patch:
            raise ValueError(f"ViT: image_size {image_size} is not a multiple of patch {patch}")
        dtype = jnp.dtype(dtype)
        self.patch_embedding = transformer.PatchEmbedding(
            (patch, patch), width, dtype=dtype, rngs=rngs
        )
        # torchvision starts the class token at zero.
        self.class_token = nnx.Param(jnp.zeros((1, width)))
        self.grid = (image_size // patch, image_size // patch)
        tokens = 1 + self.grid[0] * self.grid[1]
        if position == "learned":
            self.position = nnx.Param(transformer.linear_init(rngs.params(), (tokens, width)))
        else:
            self.position = None
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
        self.feature_dim = width

    def position_table(self, grid: tuple[int, int]) -> jax.Array:
        """The position table for a `grid` of patches: `[1 + grid[0] * grid[1], width]`, the
        class token's row first, the patch rows resized from the reference grid."""
        learned = None if self.position is None else self.position[...]
        return transformer.position_table(
            learned, self.grid, grid, self.feature_dim, class_row=True
        )

    def tokens(self, images: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """[n, height, width, 3] -> tokens after `norm` [n, 1 + (height/p)(width/p), width]:
        the class token, then the patches in row-major order."""
        x = self.patch_embedding(images)  # [n, height/p, width/p, width]
        n, rows, cols, dim = x.shape
        x = x.reshape(n, rows * cols, dim)
        cls = jnp.broadcast_to(self.class_token[...].astype(x.dtype), (n, 1, dim))
        x = jnp.concatenate([cls, x], axis=1)
        x = x + self.position_table((rows, cols)).astype(x.dtype)
        return self.norm(self.blocks(x, train=train, rngs=rngs))

    def feature_map(
        self, images: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        """[n, height, width, 3] -> patch tokens on their grid [n, height/p, width/p, width]."""
        n, height, width = images.shape[:3]
        patch = self.patch_embedding.patch
        tokens = self.tokens(images, train=train, rngs=rngs)[:, 1:]
        return tokens.reshape(n, height // patch[0], width // patch[1], -1)

    def __call__(
        self, images: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        """[n, height, width, 3] -> class token [n, feature_dim]."""
        return self.tokens(images, train=train, rngs=rngs)[:, 0]

    def frames(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """[batch, time, height, width, 3] -> per-frame features [batch, time, feature_dim]."""
        batch, time = video.shape[:2]
        features = self(video.reshape(batch * time, *video.shape[2:]), train=train, rngs=rngs)
        return features.reshape(batch, time, -1)
