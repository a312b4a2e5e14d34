"""Temporal Segment Networks (Wang et al. 2016; `yjxiong/tsn-pytorch`) and the per-frame baseline.

Both apply a 2D ResNet (torchvision layout) to every frame of `[batch, time, height, width, 3]`.
TSN expects one snippet per segment (the sampler picks them: K = 3 when training, 25 when testing)
and averages the segments' logits, with dropout before the classifier ("average consensus").
The per-frame classifier of the Kinetics CNN+LSTM seed classifies each frame on its own and
averages the predicted probabilities; its logits are log(mean_t softmax(frame logits_t)), whose
softmax is that average.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.registry import register
from vssl_jax.models.resnet2d import ResNet2D


class TSN(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        depth: int = 18,
        width: int = 64,
        dropout: float = 0.5,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        dtype = jnp.dtype(dtype)
        self.backbone = ResNet2D(depth, width=width, dtype=dtype, rngs=rngs)
        self.feature_dim = self.backbone.feature_dim
        self.head = ClassifierHead(
            self.feature_dim, num_classes, dropout=dropout, dtype=dtype, rngs=rngs
        )

    def features(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, segments, height, width, 3] -> segment-averaged features [batch, feature_dim]."""
        return self.backbone.frames(video, train=train).mean(axis=1)

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        frames = self.backbone.frames(video, train=train)  # [batch, segments, feature_dim]
        return self.head(frames, train=train, rngs=rngs).mean(axis=1)


class PerFrameClassifier(TSN):
    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        frames = self.backbone.frames(video, train=train)  # [batch, time, feature_dim]
        log_probs = jax.nn.log_softmax(self.head(frames, train=train, rngs=rngs), axis=-1)
        return jax.nn.logsumexp(log_probs, axis=1) - jnp.log(log_probs.shape[1])


@register("tsn_resnet18")
def tsn_resnet18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> TSN:
    return TSN(num_classes, depth=18, rngs=rngs, **kwargs)


@register("tsn_resnet50")
def tsn_resnet50(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> TSN:
    return TSN(num_classes, depth=50, rngs=rngs, **kwargs)


@register("per_frame_resnet18")
def per_frame_resnet18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> PerFrameClassifier:
    return PerFrameClassifier(num_classes, depth=18, rngs=rngs, **kwargs)
