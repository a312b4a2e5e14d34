"""ViViT factorised encoder (`vivit_factorised`) against a NumPy forward pass written here, and
its FSDP layout (`sharding.TRANSFORMER_FSDP`) on 8 simulated devices."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from vssl_jax import sharding
from vssl_jax.models import transformer, vivit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Reference grid 4 x 32 x 32 with 2x8x8 tubelets: t = 2 temporal indices of 4 x 4 patches.
TINY = dict(
    width=16,
    depth=2,
    temporal_depth=1,
    num_heads=2,
    patch=8,
    tubelet_frames=2,
    image_size=32,
    num_frames=4,
)


@pytest.fixture(scope="module", autouse=True)
def quick_compile():
    """Unoptimised XLA: these functions run once or twice, and compile 2-4x faster."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def tiny_model(**overrides) -> vivit.ViViTFactorised:
    return vivit.vivit_factorised(3, rngs=nnx.Rngs(0), **{**TINY, **overrides})


def numpy_weights(model) -> dict:
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def np_layer_norm(x, p):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def np_block(x, p, heads):
    """Pre-norm block: softmax attention over all tokens, exact-erf GELU MLP."""
    n, tokens, dim = x.shape
    h = np_layer_norm(x, p["norm1"])
    qkv = h @ p["attention"]["qkv"]["kernel"] + p["attention"]["qkv"]["bias"]
    q, k, v = (qkv[..., i * dim : (i + 1) * dim].reshape(n, tokens, heads, -1) for i in range(3))
    scores = np.einsum("nqhd,nkhd->nhqk", q, k) / np.sqrt(dim // heads)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = np.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, tokens, dim)
    x = x + y @ p["attention"]["out"]["kernel"] + p["attention"]["out"]["bias"]
    h = np_layer_norm(x, p["norm2"]) @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"]
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    return x + h @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"]


def np_tubelets(video, p, tubelet=(2, 8, 8)):
    """[batch, T, H, W, 3] -> [batch, t, h, w, dim]: each tube times the kernel, plus the bias."""
    b, frames, height, width, _ = video.shape
    a, q, r = tubelet
    x = video.reshape(b, frames // a, a, height // q, q, width // r, r, 3)
    return np.einsum("btahqwrc,aqrcd->bthwd", x, p["kernel"]) + p["bias"]


def np_vivit(video, w, spatial_table, temporal_table, heads=2):
    """The factorised encoder in NumPy: returns (per-index spatial class tokens, clip feature)."""
    x = np_tubelets(video, w["patch_embedding"])
    b, t, h, wd, dim = x.shape
    x = x.reshape(b * t, h * wd, dim)
    cls = np.broadcast_to(w["spatial_class_token"], (b * t, 1, dim))
    x = np.concatenate([cls, x], axis=1) + spatial_table
    for i in sorted(w["spatial"]["layers"]):
        x = np_block(x, w["spatial"]["layers"][i], heads)
    frames = np_layer_norm(x[:, 0], w["spatial_norm"]).reshape(b, t, dim)
    cls = np.broadcast_to(w["temporal_class_token"], (b, 1, dim))
    x = np.concatenate([cls, frames], axis=1) + temporal_table
    for i in sorted(w["temporal"]["layers"]):
        x = np_block(x, w["temporal"]["layers"][i], heads)
    return frames, np_layer_norm(x[:, 0], w["norm"])


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_forward_matches_numpy_and_shapes(model):
    rng = np.random.default_rng(0)
    video = rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    w = numpy_weights(model)
    frames, features = np_vivit(video, w, w["spatial_position"], w["temporal_position"])

    @jax.jit
    def run(v):
        return (
            model.frame_tokens(v, train=False),
            model.features(v, train=False),
            model(v, train=False),
        )

    got_frames, got_features, logits = run(jnp.asarray(video))
    assert got_frames.shape == (2, 2, 16) and got_features.shape == (2, 16)
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32
    assert model.feature_dim == 16
    np.testing.assert_allclose(got_frames, frames, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_features, features, rtol=1e-4, atol=1e-4)
    want_logits = features @ w["head"]["kernel"] + w["head"]["bias"]
    np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="does not split into 2x8x8 tubelets"):
        model(jnp.zeros((1, 3, 32, 32, 3)), train=False)


def test_spatial_transformer_sees_one_temporal_index(model):
    """Changing the pixels of one tubelet changes the spatial output of its temporal index only;
    the temporal transformer is what mixes the indices (the clip feature changes too)."""
    rng = np.random.default_rng(1)
    video = rng.normal(size=(1, 8, 32, 32, 3)).astype(np.float32)  # t = 4 (resized positions)
    changed = video.copy()
    changed[0, 4:6, 8:16, 16:24] += 1.0  # the tubelet at temporal index 2, row 1, column 2
    run = jax.jit(lambda v: (model.frame_tokens(v, train=False), model.features(v, train=False)))
    (frames, features), (frames2, features2) = run(video), run(changed)
    moved = np.abs(np.asarray(frames2) - np.asarray(frames)).max(axis=-1)[0]
    assert moved[2] > 1e-3 and np.all(moved[[0, 1, 3]] == 0.0), moved
    assert not np.allclose(features, features2)


def test_position_tables_resize_to_other_clip_lengths_and_sizes(model):
    """8 frames at 48 px: the temporal grid 2 -> 4 and the spatial grid 4x4 -> 6x6; the class
    token's rows stay, the grids' rows are interpolated, and the model uses those tables."""
    w = numpy_weights(model)
    spatial = np.asarray(model.position_table("spatial", (6, 6)))
    temporal = np.asarray(model.position_table("temporal", (4,)))
    assert spatial.shape == (37, 16) and temporal.shape == (5, 16)
    np.testing.assert_array_equal(spatial[0], w["spatial_position"][0])
    np.testing.assert_array_equal(temporal[0], w["temporal_position"][0])
    np.testing.assert_allclose(
        spatial[1:],
        transformer.resize_grid(jnp.asarray(w["spatial_position"][1:]), (4, 4), (6, 6)),
        rtol=1e-6,
    )
    # Resizing 2 -> 4 rows keeps the end rows' order (a per-axis interpolation, not a crop).
    assert np.allclose(temporal[1], w["temporal_position"][1], atol=0.5)
    assert not np.allclose(temporal[1:3], w["temporal_position"][1:3])
    np.testing.assert_array_equal(model.position_table("spatial", (4, 4)), w["spatial_position"])

    video = np.random.default_rng(2).normal(size=(1, 8, 48, 48, 3)).astype(np.float32)
    _, features = np_vivit(video, w, spatial, temporal)
    got = jax.jit(lambda v: model.features(v, train=False))(jnp.asarray(video))
    np.testing.assert_allclose(got, features, rtol=1e-4, atol=1e-4)


def test_sinusoidal_positions_are_fixed_tables():
    model = tiny_model(position="sinusoidal")
    paths = {sharding.path_string(p) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert not any("position" in p for p in paths)
    table = np.asarray(model.position_table("temporal", (2,)))
    np.testing.assert_allclose(table, transformer.sinusoidal_table(3, 16), atol=1e-7)
    video = np.random.default_rng(3).normal(size=(1, 4, 32, 32, 3)).astype(np.float32)
    w = numpy_weights(model)
    _, features = np_vivit(
        video, w, transformer.sinusoidal_table(17, 16), transformer.sinusoidal_table(3, 16)
    )
    got = jax.jit(lambda v: model.features(v, train=False))(jnp.asarray(video))
    np.testing.assert_allclose(got, features, rtol=1e-4, atol=1e-4)


def test_drop_path_is_off_in_eval_and_remat_keeps_the_gradients():
    video = jnp.asarray(np.random.default_rng(4).normal(size=(2, 4, 32, 32, 3)), jnp.float32)
    plain = tiny_model(depth=1)
    dropping = tiny_model(depth=1, drop_path=0.5)
    eval_logits = jax.jit(lambda v: dropping(v, train=False))(video)
    np.testing.assert_array_equal(jax.jit(lambda v: plain(v, train=False))(video), eval_logits)

    def grads(remat: bool):
        model = tiny_model(depth=1, drop_path=0.5, remat=remat)
        graphdef, params = nnx.split(model, nnx.Param)

        @jax.jit
        def loss_and_grads(params):
            def loss(params):
                m = nnx.merge(graphdef, params)
                return (m(video, train=True, rngs=nnx.Rngs(dropout=7)) ** 2).mean()

            return jax.value_and_grad(loss)(params)

        return loss_and_grads(params)

    (loss, g), (loss_remat, g_remat) = grads(False), grads(True)
    # Stochastic depth is on: the training loss differs from the deterministic one.
    assert not np.isclose(loss, (eval_logits**2).mean())
    np.testing.assert_allclose(loss, loss_remat, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_remat), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="drop_path > 0 needs rngs"):
        dropping(video, train=True)


# Runs on 8 simulated CPU devices: the same train steps replicated (data 8) and FSDP (fsdp 8)
# with TRANSFORMER_FSDP; writes the losses and each parameter's bytes per device.
_EIGHT_DEVICES = """
import json, sys
sys.path.insert(0, {repo!r})
from absl import flags
flags.FLAGS.mark_as_parsed()
import jax
import jax.numpy as jnp
import numpy as np
assert jax.device_count() == 8, jax.devices()
# Unoptimised XLA compiles ~2x faster; the partitioner still lays the arrays out.
jax.config.update("jax_disable_most_optimizations", True)
from tests.conftest import tiny_config
from vssl_jax import objectives, sharding
from vssl_jax.models import vivit  # registers vivit_factorised
from vssl_jax.state import initial_state, make_state_spec
from vssl_jax.train import jit_train_step

model = {{"model." + k: v for k, v in {tiny!r}.items()}}
rng = np.random.default_rng(0)
batch = {{
    "video": rng.integers(0, 256, (8, 4, 32, 32, 3), dtype=np.uint8),
    "label": np.arange(8, dtype=np.int32) % 2,
    "mask": np.ones(8, np.float32),
}}
report = {{}}
for name, overrides in (
    ("replicated", {{"mesh.data": 8, "mesh.fsdp": 1}}),
    ("fsdp", {{"mesh.data": 1, "mesh.fsdp": 8, "sharding_rules": sharding.TRANSFORMER_FSDP}}),
):
    config = tiny_config("", **{{"model.name": "vivit_factorised", **model, **overrides}})
    mesh = sharding.make_mesh(config.mesh)
    spec = make_state_spec(config, 2, mesh)
    step = jit_train_step(spec, config, mesh, objectives.get("supervised"))
    state = initial_state(spec)
    placed = jax.device_put(batch, sharding.batch_sharding(mesh))
    losses = []
    for _ in range(2):
        state, metrics = step(state, placed)
        losses.append(float(metrics["loss"]))
    report[name] = {{
        "losses": losses,
        "params": {{
            sharding.path_string(path): [array.nbytes, sorted({{s.data.nbytes for s in array.addressable_shards}})]
            for path, array in jax.tree_util.tree_leaves_with_path(state["params"])
        }},
    }}
with open({out!r}, "w") as f:
    json.dump(report, f)
"""


def test_transformer_fsdp_shards_attention_and_mlp_kernels_on_8_devices(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    code = _EIGHT_DEVICES.format(repo=REPO, tiny=TINY, out=str(out))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    params = report["fsdp"]["params"]
    sharded = [
        p
        for p in params
        if p.endswith(
            ("qkv/kernel", "attention/out/kernel", "mlp_in/kernel", "mlp_out/kernel", "position")
        )
        or p == "patch_embedding/kernel"
    ]
    # 3 blocks x 4 kernels, the tubelet kernel and the two position tables.
    assert len(sharded) == 3 * 4 + 1 + 2
    for path, (total, per_device) in params.items():
        want = [total // 8] if path in sharded else [total]
        assert per_device == want, path
    total = sum(t for t, _ in params.values())
    on_each = sum(d[0] for _, d in params.values())
    assert on_each / total < 0.25, on_each / total  # ~1/8 of the weights, plus small ones whole
    for _, per_device in report["replicated"]["params"].values():
        assert len(per_device) == 1
    # Reduce-scatter instead of all-reduce sums the gradients in another order.
    np.testing.assert_allclose(report["fsdp"]["losses"], report["replicated"]["losses"], rtol=2e-4)
    assert report["fsdp"]["losses"][0] != report["fsdp"]["losses"][1]  # the step moved
