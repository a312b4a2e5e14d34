"""Optimizers and learning-rate schedules from `config.optimizer`."""

from __future__ import annotations

import re

import jax
import optax

from vssl_jax.sharding import path_string


def learning_rate_schedule(opt_config, num_train_steps: int) -> optax.Schedule:
    """Linear warmup from 0, then cosine decay to 0 or step decay at `lr_steps`."""
    lr = opt_config.lr
    warmup = opt_config.warmup_steps
    if opt_config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(num_train_steps - warmup, 1))
    elif opt_config.schedule == "step":
        main = optax.piecewise_constant_schedule(
            lr, {int(s) - warmup: opt_config.lr_decay for s in opt_config.lr_steps}
        )
    elif opt_config.schedule == "constant":
        main = optax.constant_schedule(lr)
    else:
        raise ValueError(
            f"unknown optimizer.schedule '{opt_config.schedule}' (cosine, step, constant)"
        )
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _decay_mask(params):
    # Decay conv/dense kernels only: not biases or normalisation scales (as torchvision recipes).
    return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(opt_config, num_train_steps: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(opt_config, num_train_steps)
    if opt_config.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(opt_config.weight_decay, mask=_decay_mask),
            optax.sgd(schedule, momentum=opt_config.momentum, nesterov=opt_config.nesterov),
        )
    elif opt_config.name == "adamw":
        tx = optax.adamw(schedule, weight_decay=opt_config.weight_decay, mask=_decay_mask)
    else:
        raise ValueError(f"unknown optimizer.name '{opt_config.name}' (sgd, adamw)")
    if opt_config.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), tx)
    if opt_config.trainable:
        tx = _only_trainable(tx, opt_config.trainable)
    return tx


def _only_trainable(tx: optax.GradientTransformation, pattern: str) -> optax.GradientTransformation:
    """`tx` on the parameters whose path ('encoder/blocks/0/conv1/kernel') matches `pattern`;
    the others get zero updates (frozen: no step, no weight decay, no optimizer moments)."""
    trainable = re.compile(pattern)

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "train" if trainable.search(path_string(path)) else "frozen", params
        )

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
