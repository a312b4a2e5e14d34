"""Supervised classification: softmax cross-entropy with optional label smoothing, over the
whole network (`supervised`) or over a frozen encoder's features (`linear_probe`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _masked_cross_entropy(logits: jax.Array, batch: dict, config):
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(
        jax.nn.one_hot(batch["label"], num_classes), config.get("label_smoothing", 0.0)
    )
    per_example = optax.softmax_cross_entropy(logits, targets)
    mask = batch.get("mask", jnp.ones_like(per_example))
    denominator = jnp.maximum(mask.sum(), 1.0)
    loss = (per_example * mask).sum() / denominator
    correct = (logits.argmax(-1) == batch["label"]).astype(jnp.float32)
    return loss, {"loss": loss, "accuracy": (correct * mask).sum() / denominator}


def classification_loss(model, batch, *, train: bool, rngs, config):
    """Mean cross-entropy over the (masked) batch; metrics: loss and top-1 accuracy."""
    logits = model(batch["video"], train=train, rngs=rngs)  # [batch, num_classes]
    return _masked_cross_entropy(logits, batch, config)


def linear_probe_loss(model, batch, *, train: bool, rngs, config):
    """Cross-entropy of the classifier on frozen features: the encoder runs in inference mode
    (BatchNorm statistics used, not updated) and no gradient reaches it."""
    features = jax.lax.stop_gradient(model.features(batch["video"], train=False))
    logits = model.head(features, train=train, rngs=rngs)
    return _masked_cross_entropy(logits, batch, config)
