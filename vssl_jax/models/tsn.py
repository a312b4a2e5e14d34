"""Temporal Segment Networks (Wang et al. 2016; `yjxiong/tsn-pytorch`) and the per-frame baseline.

Both apply a 2D image backbone to every frame of `[batch, time, height, width, 3]`: a ResNet
(torchvision layout, `resnet2d.py`) or a ViT (torchvision layout, `vit.py`; its class token is the
frame's feature). TSN expects one snippet per segment (the sampler picks them: K = 3 when
training, 25 when testing) and averages the segments' logits, with dropout before the classifier
("average consensus"). The per-frame classifier of the Kinetics CNN+LSTM seed classifies each frame
on its own and averages the predicted probabilities; its logits are log(mean_t softmax(frame
logits_t)), whose softmax is that average.

The `*_vit` models take `dropout`, `dtype` and `ViT2D`'s options (`width`, `depth`, `num_heads`,
`mlp_ratio`, `patch`, `image_size`, `drop_path`, `remat`, `position`, `attention_implementation`;
ViT-B/16 at 224 px by default).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.registry import register
from vssl_jax.models.resnet2d import ResNet2D
from vssl_jax.models.vit import ViT2D


class TSN(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        backbone: ResNet2D | ViT2D,
        dropout: float = 0.5,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        self.backbone = backbone
        self.feature_dim = backbone.feature_dim
        self.head = ClassifierHead(
            self.feature_dim, num_classes, dropout=dropout, dtype=jnp.dtype(dtype), rngs=rngs
        )

    def features(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        """[batch, segments, height, width, 3] -> segment-averaged features [batch, feature_dim]."""
        return self.backbone.frames(video, train=train, rngs=rngs).mean(axis=1)

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        frames = self.backbone.frames(video, train=train, rngs=rngs)  # [batch, segments, dim]
        return self.head(frames, train=train, rngs=rngs).mean(axis=1)


class PerFrameClassifier(TSN):
    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        frames = self.backbone.frames(video, train=train, rngs=rngs)  # [batch, time, dim]
        log_probs = jax.nn.log_softmax(self.head(frames, train=train, rngs=rngs), axis=-1)
        return jax.nn.logsumexp(log_probs, axis=1) - jnp.log(log_probs.shape[1])


@register("tsn_resnet18")
def tsn_resnet18(
    num_classes: int, *, width: int = 64, dtype: str = "float32", rngs: nnx.Rngs, **kwargs
) -> TSN:
    backbone = ResNet2D(18, width=width, dtype=dtype, rngs=rngs)
    return TSN(num_classes, backbone=backbone, dtype=dtype, rngs=rngs, **kwargs)


@register("tsn_resnet50")
def tsn_resnet50(
    num_classes: int, *, width: int = 64, dtype: str = "float32", rngs: nnx.Rngs, **kwargs
) -> TSN:
    backbone = ResNet2D(50, width=width, dtype=dtype, rngs=rngs)
    return TSN(num_classes, backbone=backbone, dtype=dtype, rngs=rngs, **kwargs)


@register("per_frame_resnet18")
def per_frame_resnet18(
    num_classes: int, *, width: int = 64, dtype: str = "float32", rngs: nnx.Rngs, **kwargs
) -> PerFrameClassifier:
    backbone = ResNet2D(18, width=width, dtype=dtype, rngs=rngs)
    return PerFrameClassifier(num_classes, backbone=backbone, dtype=dtype, rngs=rngs, **kwargs)


@register("tsn_vit")
def tsn_vit(
    num_classes: int,
    *,
    dropout: float = 0.0,
    dtype: str = "float32",
    rngs: nnx.Rngs,
    **vit_options,
) -> TSN:
    backbone = ViT2D(dtype=dtype, rngs=rngs, **vit_options)
    return TSN(num_classes, backbone=backbone, dropout=dropout, dtype=dtype, rngs=rngs)


@register("per_frame_vit")
def per_frame_vit(
    num_classes: int,
    *,
    dropout: float = 0.0,
    dtype: str = "float32",
    rngs: nnx.Rngs,
    **vit_options,
) -> PerFrameClassifier:
    backbone = ViT2D(dtype=dtype, rngs=rngs, **vit_options)
    return PerFrameClassifier(
        num_classes, backbone=backbone, dropout=dropout, dtype=dtype, rngs=rngs
    )
