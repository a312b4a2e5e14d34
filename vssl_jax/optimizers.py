"""Optimizers and learning-rate schedules from `config.optimizer`.

Layer-wise learning-rate decay (`optimizer.layer_decay` < 1, BEiT / VideoMAE fine-tuning): the
update of every parameter is scaled by `layer_decay ** (num_layers + 1 - layer_id)`, with the
layer ids of BEiT's `get_num_layer_for_vit` read off parameter paths (`layer_ids`). The scale
multiplies the whole update, weight-decay term included, as a PyTorch param group's `lr` does
for SGD and AdamW.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
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
    # `get`: configs saved before the key existed (predict.py reloads a run's config.json).
    layer_decay = opt_config.get("layer_decay", 1.0)
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"optimizer.layer_decay must be in (0, 1], got {layer_decay}")
    if layer_decay < 1.0:
        # Outermost: it sees every parameter's path (frozen ones get zero updates either way),
        # and clipping inside acts on the unscaled gradients, as torch's clip before step().
        tx = optax.chain(tx, scale_by_layer_decay(layer_decay))
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


# A transformer block (`transformer.Block` inside a `BlockStack`, or the frame transformer's
# `TransformerBlock`): `.../layers/<i>/<one of these>/...`.
_BLOCK = re.compile(r"(?:^|/)layers/(\d+)/(?:norm1|attention|norm2|mlp_in|mlp_out)/")
# Input embeddings (BEiT's layer 0): patch / tubelet embeddings, position tables, class and mask
# tokens, by the name of a path component (`patch_embed`, `patch_embedding`, `position`,
# `class_token`, `mask_token`, `cls`).
_EMBEDDING = re.compile(r"^(?:\w+_)?(?:embed|embedding|position|token|cls)$")
# Models with several transformer stacks run them in this order (the stack is the module that
# holds `layers`, named by its attribute): ViViT's factorised encoder, spatial then temporal.
STACK_ORDER = ("spatial", "temporal")


def layer_ids(paths: Sequence[str]) -> tuple[dict[str, int], int]:
    """BEiT's layer id of every parameter path, and the number of transformer layers L.

    - block i of the model's transformer: i + 1;
    - input embeddings (patch / tubelet embedding, position tables, class tokens): 0;
    - everything else (final norm, classifier, objective heads): L + 1.

    Several stacks are numbered consecutively in `STACK_ORDER` (ViViT factorised: spatial
    blocks 1..S, temporal blocks S+1..S+T, L = S + T). A stack's own parameters outside its
    blocks are named `<stack>_...` beside it: its embeddings (`temporal_position`,
    `temporal_class_token`) take the id of the layer before its first block (S for the temporal
    ones: their lr is that of the spatial output they are added to, not the patch embedding's),
    the others (`spatial_norm`) the id of its last block. Raises when `paths` hold no
    transformer block, or several stacks whose order is unknown.
    """
    blocks, depths = {}, {}
    for path in paths:
        match = _BLOCK.search(path)
        if match:
            stack = path[: match.start()]
            blocks[path] = (stack, int(match.group(1)))
            depths[stack] = max(depths.get(stack, 0), int(match.group(1)) + 1)
    if not depths:
        raise ValueError(
            "optimizer.layer_decay < 1 needs a transformer (parameters under "
            "'layers/<i>/attention/'); this model has none: set optimizer.layer_decay=1.0"
        )
    stacks = sorted(depths)
    if len(stacks) > 1:
        names = [s.rsplit("/", 1)[-1] for s in stacks]
        parents = {s[: len(s) - len(n)] for s, n in zip(stacks, names, strict=True)}
        if len(parents) > 1 or not set(names) <= set(STACK_ORDER):
            raise ValueError(
                f"optimizer.layer_decay: transformer stacks "
                f"{', '.join(s or '(the model itself)' for s in stacks)} run in no known "
                f"order (known: {' before '.join(STACK_ORDER)} beside each other); set "
                "optimizer.layer_decay=1.0"
            )
        stacks.sort(key=lambda s: STACK_ORDER.index(s.rsplit("/", 1)[-1]))
    offsets, total = {}, 0
    for stack in stacks:
        offsets[stack], total = total, total + depths[stack]

    def layer_id(path: str) -> int:
        if path in blocks:
            stack, index = blocks[path]
            return offsets[stack] + index + 1
        for stack in stacks:
            name = stack.rsplit("/", 1)[-1]
            parent = stack[: len(stack) - len(name)]
            if name and path.startswith(f"{parent}{name}_"):
                own = path[len(parent) :].split("/", 1)[0]
                first = offsets[stack]
                return first if _EMBEDDING.match(own) else first + depths[stack]
        if any(_EMBEDDING.match(part) for part in path.split("/")):
            return 0
        return total + 1

    return {path: layer_id(path) for path in paths}, total


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
    """Multiplies each update by `decay ** (L + 1 - layer_id)` (`layer_ids` of its path)."""

    def scales(tree):
        paths = [path_string(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
        ids, num_layers = layer_ids(paths)
        return jax.tree_util.tree_map_with_path(
            lambda p, _: decay ** (num_layers + 1 - ids[path_string(p)]), tree
        )

    def update(updates, state, params=None):
        del params
        scaled = jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales(updates))
        return scaled, state

    def init(params):
        scales(params)  # A model without transformer blocks fails here, when the state is built.
        return optax.EmptyState()

    return optax.GradientTransformation(init, update)
