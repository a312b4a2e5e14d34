"""Heads shared by every model family: a linear classifier behind dropout, and the MLP
projection head of contrastive learning (MoCo v2, SimCLR).

`ClassifierHead` keeps its `kernel`/`bias` at its own level, so a model's `head/kernel` has the
same path and shape as an `nnx.Linear` named `head` (checkpoints of R3D-18 depend on that).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models import layers


class ClassifierHead(nnx.Module):
    """Dropout, then a linear layer: `[..., in_features] -> [..., num_classes]` float32 logits."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        dropout: float = 0.0,
        init_std: float = 0.01,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        init = jax.nn.initializers.normal(init_std)
        self.kernel = nnx.Param(init(rngs.params(), (in_features, num_classes), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_classes,), jnp.float32))
        self.dropout = nnx.Dropout(dropout)
        self.dtype = dtype

    def __call__(self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = self.dropout(x, deterministic=not train, rngs=rngs).astype(self.dtype)
        logits = x @ self.kernel[...].astype(self.dtype) + self.bias[...].astype(self.dtype)
        return logits.astype(jnp.float32)


class ProjectionHead(nnx.Module):
    """MLP projection head: (Linear -> [BatchNorm] -> ReLU) x (num_layers - 1) -> Linear.

    MoCo v2 uses 2 layers without BatchNorm (`in -> in -> 128`); SimCLR v2 / MoCo v3 add
    BatchNorm to the hidden layers.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 128,
        *,
        hidden_features: int | None = None,
        num_layers: int = 2,
        use_batch_norm: bool = False,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_layers < 1:
            raise ValueError(f"ProjectionHead: num_layers must be >= 1, got {num_layers}")
        hidden = hidden_features or in_features
        sizes = [in_features] + [hidden] * (num_layers - 1) + [out_features]
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, dtype=dtype, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.norms = nnx.List(
            [
                layers.BatchNorm(hidden, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)
                for _ in range(num_layers - 1)
            ]
            if use_batch_norm
            else []
        )

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """[..., in_features] -> [..., out_features] float32 embeddings (not normalised)."""
        for i, layer in enumerate(self.layers[:-1]):
            x = layer(x)
            if self.norms:
                x = self.norms[i](x, use_running_average=not train)
            x = nnx.relu(x)
        return self.layers[-1](x).astype(jnp.float32)
