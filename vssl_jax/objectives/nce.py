"""InfoNCE pieces shared by the contrastive objectives (MoCo, VTDL, DPC's dense variant).

Negatives come from the global batch: the objectives run under `jax.jit` on global arrays, so
a score matrix over the batch axis spans every device's examples, not one device's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) along `axis`, in float32 (as torch.nn.functional.normalize)."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


def info_nce(scores: jax.Array, positive: jax.Array) -> jax.Array:
    """Per-row InfoNCE: cross-entropy of `scores` `[n, m]` (already divided by the temperature)
    with column `positive[i]` `[n]` as row i's positive. Returns `[n]` float32 losses."""
    scores = scores.astype(jnp.float32)
    positive_score = jnp.take_along_axis(scores, positive[:, None], axis=1)[:, 0]
    return jax.nn.logsumexp(scores, axis=1) - positive_score
