"""Layer-wise learning-rate decay (`optimizer.layer_decay`): one optimizer step on a tiny
ViViT (two stacks) against the step written out in NumPy with BEiT's per-layer scales."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.conftest import tiny_config
from vssl_jax import optimizers, sharding
from vssl_jax.models import vivit

LR, WEIGHT_DECAY, DECAY = 0.1, 0.01, 0.5
SPATIAL, TEMPORAL = 2, 1  # blocks; L = 3

# BEiT's layer id by path for the tiny model, written out by hand: embeddings 0, spatial block
# i -> i + 1, temporal block i -> 2 + i + 1; the temporal class token and positions enter after
# the spatial stack (id 2, like spatial_norm, its last layer); final norm and head L + 1 = 4.
EXPECTED_IDS = [
    (r"^patch_embedding/", 0),
    (r"^spatial_(class_token|position)$", 0),
    (r"^spatial/layers/0/", 1),
    (r"^spatial/layers/1/", 2),
    (r"^spatial_norm/", 2),
    (r"^temporal_(class_token|position)$", 2),
    (r"^temporal/layers/0/", 3),
    (r"^(norm|head)/", 4),
    (r"^projection/layers/0/", 4),  # an objective's MLP head: `layers/<i>/` but not a block
]


def expected_scale(path: str) -> float:
    ids = [layer for pattern, layer in EXPECTED_IDS if re.search(pattern, path)]
    assert len(ids) == 1, path
    return DECAY ** (SPATIAL + TEMPORAL + 1 - ids[0])


def tiny_params() -> dict:
    """The tiny ViViT's parameters plus a projection head's, random, as a plain nested dict."""
    model = nnx.eval_shape(
        lambda: vivit.vivit_factorised(
            3,
            width=8,
            depth=SPATIAL,
            temporal_depth=TEMPORAL,
            num_heads=2,
            patch=8,
            image_size=16,
            num_frames=4,
            rngs=nnx.Rngs(0),
        )
    )
    rng = np.random.default_rng(0)
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    state["projection"] = {"layers": {0: {"kernel": np.zeros((8, 4)), "bias": np.zeros(4)}}}
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), state)


def flat(tree) -> dict[str, np.ndarray]:
    return {
        sharding.path_string(p): np.asarray(a) for p, a in jax.tree_util.tree_leaves_with_path(tree)
    }


def step(params, grads, **overrides):
    config = tiny_config(
        "",
        **{
            "optimizer.lr": LR,
            "optimizer.schedule": "constant",
            "optimizer.weight_decay": WEIGHT_DECAY,
            "optimizer.momentum": 0.0,
            "optimizer.layer_decay": DECAY,
            **overrides,
        },
    )
    tx = optimizers.create_optimizer(config.optimizer, config.num_train_steps)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    return flat(optax.apply_updates(params, updates))


@pytest.fixture(scope="module")
def params_and_grads():
    params = tiny_params()
    rng = np.random.default_rng(1)
    grads = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), params)
    return params, grads


def test_sgd_step_scales_each_layer_and_its_weight_decay(params_and_grads):
    params, grads = params_and_grads
    new = step(params, grads)
    p, g = flat(params), flat(grads)
    assert len(p) == len(new)
    seen = set()
    for path, value in p.items():
        # Weight decay on kernels (ndim > 1) only; the lr scale multiplies both terms, as a
        # PyTorch param group's lr does.
        decay = WEIGHT_DECAY * value if value.ndim > 1 else 0.0
        scale = expected_scale(path)
        seen.add(scale)
        want = value - LR * scale * (g[path] + decay)
        np.testing.assert_allclose(new[path], want, rtol=1e-6, atol=1e-7, err_msg=path)
    assert len(seen) == 5  # every id from 0 to L + 1 occurs


def test_adamw_first_step_scales_adam_and_decoupled_decay(params_and_grads):
    params, grads = params_and_grads
    new = step(params, grads, **{"optimizer.name": "adamw"})
    p, g = flat(params), flat(grads)
    for path, value in p.items():
        # Adam's first step: m_hat = g, v_hat = g^2 -> g / (|g| + eps).
        adam = g[path] / (np.abs(g[path]) + 1e-8)
        decay = WEIGHT_DECAY * value if value.ndim > 1 else 0.0
        want = value - LR * expected_scale(path) * (adam + decay)
        np.testing.assert_allclose(new[path], want, rtol=1e-5, atol=1e-6, err_msg=path)


def test_composes_with_clipping_and_trainable(params_and_grads):
    params, grads = params_and_grads
    clip = 0.5
    new = step(
        params,
        grads,
        **{"optimizer.grad_clip_norm": clip, "optimizer.trainable": "^(temporal|norm|head)"},
    )
    p, g = flat(params), flat(grads)
    trainable = {k for k in p if re.match("^(temporal|norm|head)", k)}
    # Clipping sees the trainable gradients only (the frozen ones are outside the inner chain).
    norm = np.sqrt(sum((g[k].astype(np.float64) ** 2).sum() for k in trainable))
    assert norm > clip
    for path, value in p.items():
        if path not in trainable:
            np.testing.assert_array_equal(new[path], value, err_msg=path)
            continue
        decay = WEIGHT_DECAY * value if value.ndim > 1 else 0.0
        want = value - LR * expected_scale(path) * (g[path] * clip / norm + decay)
        np.testing.assert_allclose(new[path], want, rtol=1e-5, atol=1e-7, err_msg=path)


def test_layer_decay_one_is_the_plain_optimizer(params_and_grads):
    """1.0 adds nothing to the chain: the updates and the state are the optimizer's without it."""
    params, grads = params_and_grads
    new = step(params, grads, **{"optimizer.layer_decay": 1.0, "optimizer.momentum": 0.9})
    mask = jax.tree.map(lambda a: a.ndim > 1, params)
    plain = optax.chain(
        optax.add_decayed_weights(WEIGHT_DECAY, mask=mask), optax.sgd(LR, momentum=0.9)
    )
    updates, _ = jax.jit(plain.update)(grads, plain.init(params), params)
    for path, value in flat(optax.apply_updates(params, updates)).items():
        np.testing.assert_array_equal(new[path], value, err_msg=path)
    config = tiny_config("", **{"optimizer.layer_decay": 1.0})
    tx = optimizers.create_optimizer(config.optimizer, 10)
    assert jax.tree.structure(tx.init(params)) == jax.tree.structure(
        optimizers.create_optimizer(tiny_config("").optimizer, 10).init(params)
    )


def test_layer_ids_of_a_single_vit_and_refusals():
    # Helper A's ViT naming inside a frame model (`backbone/`), one stack of 2 blocks.
    paths = [
        "backbone/patch_embed/kernel",
        "backbone/class_token",
        "backbone/position",
        "backbone/blocks/layers/0/attention/qkv/kernel",
        "backbone/blocks/layers/1/mlp_out/bias",
        "backbone/norm/scale",
        "head/kernel",
    ]
    ids, num_layers = optimizers.layer_ids(paths)
    assert num_layers == 2
    assert [ids[p] for p in paths] == [0, 0, 0, 1, 2, 3, 3]
    with pytest.raises(ValueError, match="needs a transformer .* set optimizer.layer_decay=1.0"):
        optimizers.layer_ids(["stem_conv/kernel", "blocks/0/conv1/kernel", "head/kernel"])
    with pytest.raises(ValueError, match="run in no known order"):
        optimizers.layer_ids(
            ["encoder/blocks/layers/0/norm1/scale", "decoder/blocks/layers/0/norm1/scale"]
        )
    # A model without transformer blocks is refused when the optimizer state is built.
    config = tiny_config("", **{"optimizer.layer_decay": 0.75})
    tx = optimizers.create_optimizer(config.optimizer, 10)
    with pytest.raises(ValueError, match="needs a transformer"):
        tx.init({"stem_conv": {"kernel": jnp.zeros((3, 3))}})
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\]"):
        optimizers.create_optimizer(tiny_config("", **{"optimizer.layer_decay": 1.5}).optimizer, 10)
