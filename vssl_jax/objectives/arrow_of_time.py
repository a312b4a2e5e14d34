"""Arrow of time (Wei et al. 2018, "Learning and Using the Arrow of Time"): a binary classifier on
the encoder's pooled features tells a clip played forward from the same clip played backward.

Each clip of the batch is reversed in time with probability 1/2, on the device (the `augment`
stream), and the head, a linear layer on `encoder.features`, is trained with a two-way softmax
cross-entropy (target 1 = reversed). Data: the dense clip (`pipeline.TrainClip`).

Departures from the paper, and why: Wei et al. classify stacks of optical flow with a VGG-16
(T-CAM) and also clean the data of artificial cues (black frames, credits, camera zoom); here the
input is the RGB clip of whichever encoder the config names and the head is linear, as the seed
"video classification from scratch" uses the task (a branch of a 3D ResNet weighted by
`binary_class_weight`, see `multibranch.py`). No cue removal: the data pipeline has none.

A clip whose reverse is as plausible as itself carries no arrow of time: on the built-in demo
dataset every class reversed is another class (left/right, up/down, the two rotations), so there
the direction accuracy stays at chance by construction. Its accelerating variant
(`config.data.demo.motion = "accelerating"`) has an arrow of time: reversed clips slow down.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vssl_jax.models.heads import ClassifierHead
from vssl_jax.objectives import Objective, register


def new_head(encoder: nnx.Module, rngs: nnx.Rngs) -> ClassifierHead:
    """The forward/backward classifier: `[batch, feature_dim] -> [batch, 2]` logits."""
    return ClassifierHead(encoder.feature_dim, 2, rngs=rngs)


class ArrowOfTime(nnx.Module):
    """The encoder and its direction classifier (`arrow_head`)."""

    def __init__(self, encoder: nnx.Module, *, rngs: nnx.Rngs):
        self.encoder = encoder
        self.arrow_head = new_head(encoder, rngs)


def build_model(encoder: nnx.Module, config, rngs: nnx.Rngs) -> ArrowOfTime:
    return ArrowOfTime(encoder, rngs=rngs)


def reverse_randomly(video: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reverses each clip's time axis with probability 1/2.

    Args:
      video: `[batch, time, height, width, channels]`.
      key: PRNG key.

    Returns:
      (video of the same shape, int32 `[batch]` target: 1 where the clip was reversed).
    """
    reversed_ = jax.random.bernoulli(key, 0.5, (video.shape[0],))
    video = jnp.where(reversed_[:, None, None, None, None], video[:, ::-1], video)
    return video, reversed_.astype(jnp.int32)


def direction_loss(logits: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy and accuracy of `[batch, 2]` logits against `[batch]` targets."""
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
    accuracy = (logits.argmax(-1) == target).astype(jnp.float32).mean()
    return loss, accuracy


def arrow_of_time_branch(
    model: nnx.Module, video: jax.Array, *, train: bool, rngs: nnx.Rngs
) -> tuple[jax.Array, jax.Array]:
    """(loss, accuracy) of `model.arrow_head` on `video` `[batch, time, H, W, 3]`, half reversed.

    `model` is any wrapper with `encoder` and `arrow_head` (this module's, or the multi-branch
    one)."""
    video, target = reverse_randomly(video, rngs.augment())
    logits = model.arrow_head(model.encoder.features(video, train=train), train=train)
    return direction_loss(logits, target)


def loss(model: ArrowOfTime, batch: dict, *, train: bool, rngs: nnx.Rngs, config):
    """Direction cross-entropy on the batch's clips; metrics: loss and direction accuracy."""
    value, accuracy = arrow_of_time_branch(model, batch["video"], train=train, rngs=rngs)
    return value, {"loss": value, "accuracy": accuracy}


register("arrow_of_time", Objective(loss, build_model=build_model, final_eval="knn"))
