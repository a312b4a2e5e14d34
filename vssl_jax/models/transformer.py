"""Vision Transformer pieces shared by the ViT frame encoder, ViViT and VideoMAE.

- `PatchEmbedding`: a convolution whose kernel equals its stride: 2D patches (ViT, p x p) or 3D
  tubelets (ViViT / VideoMAE, t x p x p), giving one token per patch `[batch, *grid, dim]`.
- `Attention`: fused q/k/v projection, `jax.nn.dot_product_attention` (XLA on CPU; on GPU, with
  bf16/fp16 inputs, `attention_implementation="cudnn"` selects cuDNN's fused flash attention),
  output projection.
- `Block`: pre-norm Transformer block (LayerNorm eps 1e-6 -> attention -> residual, LayerNorm ->
  exact-erf GELU MLP -> residual), the layout of torchvision's ViT, ViViT and VideoMAE, with
  stochastic depth (Huang et al. 2016) on both residual branches.
- `BlockStack`: `depth` blocks with the stochastic-depth rate rising linearly from 0 to
  `drop_path` (DeiT / VideoMAE), and `remat=True` recomputing each block's activations in the
  backward pass (a `lax.scan` over the blocks under `jax.checkpoint`) to trade compute for
  memory.
- Position embeddings: `position_table` (a learned table or `sinusoidal_table`, the fixed table
  of "Attention is all you need" as VideoMAE builds it, with or without a class token's row) and
  `resize_grid`, which interpolates a table to another token grid when the clip length or
  resolution differs from the one it was laid out for.

Stochastic depth draws from the `rngs.dropout` stream passed at call time (no module holds an
`nnx.Rngs`, as everywhere in the zoo): one key per call, folded with the block index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# timm / VideoMAE initialise every linear layer from a truncated normal of std 0.02.
linear_init = jax.nn.initializers.truncated_normal(0.02)


def layer_norm(dim: int, *, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, rngs=rngs)


def linear(cin: int, cout: int, *, use_bias: bool = True, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(cin, cout, use_bias=use_bias, kernel_init=linear_init, dtype=dtype, rngs=rngs)


class PatchEmbedding(nnx.Module):
    """Non-overlapping patches to tokens: `[batch, *spatial, 3] -> [batch, *grid, dim]`, where
    `spatial` is `(height, width)` for 2D patches or `(time, height, width)` for tubelets and
    `grid = spatial // patch`. Sizes that do not divide are refused, not cropped.

    The same map as a convolution whose kernel equals its stride (`kernel` is laid out as an
    `nnx.Conv` kernel, `[*patch, 3, dim]`), computed as one matrix product over the cut-out
    patches: XLA's CPU convolution is slow for 3D kernels, a matrix product is not.
    """

    def __init__(self, patch: Sequence[int], dim: int, *, dtype, rngs: nnx.Rngs):
        self.patch = tuple(int(p) for p in patch)
        fan_in = 3 * math.prod(self.patch)
        init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        self.kernel = nnx.Param(init(rngs.params(), (fan_in, dim)).reshape(*self.patch, 3, dim))
        self.bias = nnx.Param(jnp.zeros((dim,)))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        spatial = x.shape[1:-1]
        if len(spatial) != len(self.patch) or any(
            s % p for s, p in zip(spatial, self.patch, strict=True)
        ):
            raise ValueError(
                f"input of size {'x'.join(map(str, spatial))} does not split into "
                f"{'x'.join(map(str, self.patch))} patches"
            )
        grid = [s // p for s, p in zip(spatial, self.patch, strict=True)]
        ndim = len(grid)
        # [batch, g0, p0, g1, p1, ..., 3] -> [batch, g0, g1, ..., p0, p1, ..., 3]
        x = x.reshape(
            x.shape[0], *[n for pair in zip(grid, self.patch, strict=True) for n in pair], 3
        )
        order = [0, *range(1, 2 * ndim, 2), *range(2, 2 * ndim + 1, 2), 2 * ndim + 1]
        x = x.transpose(order).reshape(x.shape[0], *grid, -1)
        kernel = self.kernel[...].reshape(-1, self.kernel.shape[-1]).astype(self.dtype)
        return x.astype(self.dtype) @ kernel + self.bias[...].astype(self.dtype)


class Attention(nnx.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        implementation: str | None = None,
        dtype,
        rngs: nnx.Rngs,
    ):
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.implementation = implementation
        self.qkv = linear(dim, 3 * dim, use_bias=qkv_bias, dtype=dtype, rngs=rngs)
        self.out = linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """[batch, tokens, dim] -> [batch, tokens, dim]. `mask` (bool, broadcastable to
        `[batch, heads, tokens, tokens]`): query i attends to key j where True; None: all."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        y = jax.nn.dot_product_attention(
            qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask=mask, implementation=self.implementation
        )
        return self.out(y.reshape(batch, tokens, dim))


def drop_path(x: jax.Array, rate: float | jax.Array, key: jax.Array | None) -> jax.Array:
    """Stochastic depth: zero the whole branch of a sample with probability `rate`, scale the
    others by 1 / (1 - rate). `key` None (evaluation) or rate 0: identity. `rate` may be traced
    (the scanned stack), where rate 0 keeps every sample and scales by exactly 1."""
    if key is None or (isinstance(rate, float) and rate == 0.0):
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x)).astype(x.dtype)


class Block(nnx.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
        attention_implementation: str | None = None,
        dtype,
        rngs: nnx.Rngs,
    ):
        self.norm1 = layer_norm(dim, dtype=dtype, rngs=rngs)
        self.attention = Attention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            implementation=attention_implementation,
            dtype=dtype,
            rngs=rngs,
        )
        self.norm2 = layer_norm(dim, dtype=dtype, rngs=rngs)
        hidden = int(dim * mlp_ratio)
        self.mlp_in = linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.mlp_out = linear(hidden, dim, dtype=dtype, rngs=rngs)
        self.drop_path = float(drop_path)

    def __call__(
        self,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        mask: jax.Array | None = None,
        drop_path_rate: jax.Array | None = None,
    ) -> jax.Array:
        """[batch, tokens, dim] -> [batch, tokens, dim]; `key` draws stochastic depth (training).
        `drop_path_rate` overrides the block's own rate (the scanned stack passes it traced)."""
        rate = self.drop_path if drop_path_rate is None else drop_path_rate
        keys = (None, None) if key is None else tuple(jax.random.split(key))
        x = x + drop_path(self.attention(self.norm1(x), mask), rate, keys[0])
        y = self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x)), approximate=False))
        return x + drop_path(y, rate, keys[1])


class BlockStack(nnx.Module):
    """`depth` Transformer blocks; `drop_path` is the last block's rate (linear from 0)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
        remat: bool = False,
        attention_implementation: str | None = None,
        dtype,
        rngs: nnx.Rngs,
    ):
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        rates = np.linspace(0.0, drop_path, depth) if depth > 1 else [drop_path] * depth
        self.layers = nnx.List(
            [
                Block(
                    dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    drop_path=float(rate),
                    qkv_bias=qkv_bias,
                    attention_implementation=attention_implementation,
                    dtype=dtype,
                    rngs=rngs,
                )
                for rate in rates
            ]
        )
        self.uses_drop_path = drop_path > 0.0
        self.remat = remat

    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        rngs: nnx.Rngs | None = None,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """[batch, tokens, dim] -> [batch, tokens, dim]."""
        key = None
        if train and self.uses_drop_path:
            if rngs is None:
                raise ValueError(
                    "model.drop_path > 0 needs rngs when training: call the model with "
                    "rngs=nnx.Rngs(dropout=...), or set model.drop_path=0"
                )
            key = rngs.dropout()
        if self.remat:
            return self._scan_checkpointed(x, key, mask)
        for index, layer in enumerate(self.layers):
            x = layer(x, key=None if key is None else jax.random.fold_in(key, index), mask=mask)
        return x

    def _scan_checkpointed(
        self, x: jax.Array, key: jax.Array | None, mask: jax.Array | None
    ) -> jax.Array:
        """The blocks as one `lax.scan` over their stacked parameters, each step under
        `jax.checkpoint`: the backward pass keeps only each block's input and recomputes the
        rest. Unrolled blocks each under `jax.checkpoint` saved nothing on XLA:CPU (the step's
        scratch memory grew); under the scan only one block's activations ever exist at once.

        Parameters keep their per-block paths (`layers/N/...`): they are stacked here, inside the
        trace, which costs one extra copy of the stack's parameters for the step.
        """
        depth = len(self.layers)
        graphdef = nnx.graphdef(self.layers[0])
        stacked = jax.tree.map(lambda *p: jnp.stack(p), *(nnx.state(b) for b in self.layers))
        rates = jnp.asarray([block.drop_path for block in self.layers], jnp.float32)
        # The same per-block keys as the unrolled loop, so both paths draw the same masks.
        keys = (
            None
            if key is None
            else jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(depth))
        )

        @jax.checkpoint
        def step(tokens, per_block):
            state, rate, block_key = per_block
            block = nnx.merge(graphdef, state)
            return block(tokens, key=block_key, mask=mask, drop_path_rate=rate), None

        x, _ = jax.lax.scan(step, x, (stacked, rates, keys))
        return x


def sinusoidal_table(num_positions: int, dim: int) -> np.ndarray:
    """The fixed table of Vaswani et al. as VideoMAE builds it: `[num_positions, dim]` float32,
    entry (p, i) = sin(p / 10000^(2 floor(i/2) / dim)) for even i, cos(...) for odd i."""
    positions = np.arange(num_positions, dtype=np.float64)[:, None]
    exponents = 2 * (np.arange(dim) // 2) / dim
    angles = positions / np.power(10000.0, exponents)[None, :]
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
    return table.astype(np.float32)


def position_table(
    learned: jax.Array | None,
    reference_grid: Sequence[int],
    grid: Sequence[int],
    dim: int,
    *,
    class_row: bool,
) -> jax.Array:
    """Position embeddings for a token `grid`: `[class_row + prod(grid), dim]`.

    `learned` is a model's table laid out on `reference_grid` (the class token's row first when
    `class_row`); None stands for VideoMAE's fixed sinusoidal table over the same rows. The grid
    rows are interpolated to `grid` (`resize_grid`); the class token's row is kept as it is.
    """
    first = int(class_row)
    rows = first + math.prod(reference_grid)
    table = jnp.asarray(sinusoidal_table(rows, dim)) if learned is None else learned
    grid_rows = resize_grid(table[first:], reference_grid, grid)
    return jnp.concatenate([table[:first], grid_rows], axis=0) if class_row else grid_rows


def resize_grid(table: jax.Array, from_grid: Sequence[int], to_grid: Sequence[int]) -> jax.Array:
    """A position table laid out on `from_grid` (e.g. `(t, h, w)`, tokens in row-major order) as
    `[prod(from_grid), dim]`, interpolated (cubic, per axis) to `[prod(to_grid), dim]`; the same
    table when the grids are equal."""
    from_grid, to_grid = tuple(from_grid), tuple(to_grid)
    if table.shape[0] != math.prod(from_grid):
        raise ValueError(
            f"position table of {table.shape[0]} rows does not fit a grid of "
            f"{'x'.join(map(str, from_grid))}"
        )
    if from_grid == to_grid:
        return table
    grid = table.reshape(*from_grid, table.shape[-1])
    resized = jax.image.resize(grid, (*to_grid, table.shape[-1]), method="cubic")
    return resized.reshape(-1, table.shape[-1]).astype(table.dtype)
