"""The model zoo: every registered model trains in the real train step; sizes match the published
figures; the architectural rules (R(2+1)D mid channels, inflate modes, non-local blocks, SAME
padding, consensus of frame models) hold."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import tiny_config
from vssl_jax import models, objectives, optimizers, sharding, train
from vssl_jax.models import heads, resnet3d
from vssl_jax.models.__main__ import main as models_main
from vssl_jax.models.__main__ import summary
from vssl_jax.state import make_state_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Model-specific sizes for the tiny train step; every model gets width 4 and dropout 0.1.
TINY_KWARGS = {
    "cnn_lstm_resnet18": {"hidden": 8},
    "transformer_resnet18": {"transformer_width": 8, "num_heads": 2, "transformer_depth": 1},
    "resnet3d_50": {"non_local": True},
    "i3d_resnet50": {"non_local": True},  # the non-local R50-I3D of Wang et al.
    "per_frame_vit": {"depth": 1, "num_heads": 2, "patch": 8, "image_size": 32},
    "tsn_vit": {"depth": 1, "num_heads": 2, "patch": 8, "image_size": 32},
    "cnn_lstm_vit": {"depth": 1, "num_heads": 2, "patch": 8, "image_size": 32, "hidden": 8},
    "transformer_vit": {
        "depth": 1,
        "num_heads": 2,
        "patch": 8,
        "image_size": 32,
        "transformer_width": 8,
        "transformer_heads": 2,
        "transformer_depth": 1,
    },
    "vivit_joint": {"depth": 1, "num_heads": 2, "patch": 8, "image_size": 32, "num_frames": 4},
    "vivit_factorised": {
        "depth": 1,
        "temporal_depth": 1,
        "num_heads": 2,
        "patch": 8,
        "image_size": 32,
        "num_frames": 4,
    },
}
# These pool time down by 16 before their last stage; 4 frames would pool to nothing.
EIGHT_FRAMES = {"c3d", "s3d", "s3d_g"}
# Every model goes through the training loop's `train_step` at one of three depths, because
# XLA:CPU needs 10-40 s to compile a deep model's step, too long for every test run:
# - RUN: compiled and run; one model per code path (stem, block, convolution, head).
# - TRACE: traced abstractly, gradients included (catches non-differentiable or mis-shaped ops);
#   each differs from a RUN model in layers that RUN already executes (S3D is I3D's inception
#   network with each 3x3x3 conv split in two; `resnet3d_50` is `i3d_resnet50`'s bottleneck
#   fully 3D; `mc3_18` is `r3d_18` with 1x3x3 convs), or, for S3D-G, in the gates of
#   `test_s3d_g_gates_scale_channels_by_a_sigmoid_of_their_mean`.
# - DEEPER: the same blocks as a shallower sibling, stacked deeper; checked to be exactly that.
RUN = (
    "r3d_18",
    "r2plus1d_18",
    "i3d_resnet50",
    "c3d",
    "i3d",
    "per_frame_resnet18",
    "cnn_lstm_resnet18",
    "transformer_resnet18",
)
DEEPER = {  # deeper model: (shallower sibling, its stage sizes)
    "r2plus1d_34": ("r2plus1d_18", (3, 4, 6, 3)),
    "resnet3d_34": ("resnet3d_18", (3, 4, 6, 3)),
    "resnet3d_101": ("resnet3d_50", (3, 4, 23, 3)),
    "i3d_resnet101": ("i3d_resnet50", (3, 4, 23, 3)),
}
TRACE = tuple(n for n in models.names() if n not in RUN and n not in DEEPER)


def host_random(abstract):
    """Random values for an abstract state, drawn with numpy: kernels ~ N(0, 1/fan_in), norm
    scales and variances 1, biases and means 0. Compiling the models' own initialisers takes
    several seconds per model on CPU; what these tests check does not depend on them."""
    rng = np.random.default_rng(0)

    def value(path, leaf):
        name = sharding.path_string(path).rsplit("/", 1)[-1]
        if name in ("scale", "var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if name in ("bias", "mean") or leaf.ndim < 2:
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.normal(0, fan_in**-0.5, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(value, abstract)


def random_model(name: str, num_classes: int, **kwargs):
    model = nnx.eval_shape(lambda: models.get(name)(num_classes, rngs=nnx.Rngs(0), **kwargs))
    nnx.update(model, host_random(nnx.state(model)))
    return model


@pytest.fixture
def quick_compile(monkeypatch):
    """Unoptimised XLA (compiles ~2x faster; these steps run once) and native 3D convs (one op
    per layer instead of the CPU's sum of 2D convs)."""
    monkeypatch.setenv("VSSL_JAX_CONV3D", "native")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def test_every_model_family_is_registered():
    assert set(RUN) | set(TRACE) | set(DEEPER) == set(models.names())
    assert set(models.names()) >= {
        "r3d_18",
        "mc3_18",
        "r2plus1d_18",
        "r2plus1d_34",
        "resnet3d_18",
        "resnet3d_34",
        "resnet3d_50",
        "resnet3d_101",
        "i3d_resnet50",
        "i3d_resnet101",
        "c3d",
        "i3d",
        "s3d",
        "s3d_g",
        "tsn_resnet18",
        "tsn_resnet50",
        "per_frame_resnet18",
        "cnn_lstm_resnet18",
        "transformer_resnet18",
        "per_frame_vit",
        "tsn_vit",
        "cnn_lstm_vit",
        "transformer_vit",
        "vivit_factorised",
        "vivit_joint",
    }


def _train_setup(name: str):
    """The training loop's own state spec and jitted-able `train_step`, for a 2-clip batch."""
    overrides = {f"model.{k}": v for k, v in TINY_KWARGS.get(name, {}).items()}
    config = tiny_config("", **{"model.name": name, "model.dropout": 0.1, **overrides})
    spec = make_state_spec(config, 3, sharding.make_mesh(config.mesh))
    step = functools.partial(
        train.train_step,
        spec=spec,
        config=config,
        objective=objectives.get("supervised").loss,
        schedule=optimizers.learning_rate_schedule(config.optimizer, config.num_train_steps),
    )
    frames = 8 if name in EIGHT_FRAMES else 4
    # At 32 px res4's map is 2x2, and the non-local block's 1x2x2-pooled keys a single position:
    # a softmax over one key is constant and theta/phi would get no gradient.
    size = 64 if name == "i3d_resnet50" else 32
    return spec, step, (2, frames, size, size, 3)


def _check_outputs(spec, state, shape):
    """Eval logits are float32 [batch, classes]; features are [batch, feature_dim]."""

    def outputs(params, model_state, video):
        model = nnx.merge(spec.graphdef, params, model_state)
        return model(video, train=False), model.features(video, train=False)

    video = jax.ShapeDtypeStruct(shape, jnp.float32)
    logits, features = jax.eval_shape(outputs, state["params"], state["model_state"], video)
    feature_dim = nnx.merge(spec.graphdef, state["params"], state["model_state"]).feature_dim
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32
    assert features.shape == (2, feature_dim)


@pytest.mark.parametrize("name", RUN)
def test_one_train_step(name, quick_compile):
    """The training loop's `train_step`, jitted: finite loss, every parameter array moves."""
    spec, step, shape = _train_setup(name)
    params = host_random(spec.abstract["params"])
    state = {
        "params": params,
        "model_state": host_random(spec.abstract["model_state"]),
        "opt_state": spec.tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.PRNGKey(0),
    }
    rng = np.random.default_rng(0)
    batch = {
        "video": jnp.asarray(rng.integers(0, 256, shape, dtype=np.uint8)),
        "label": jnp.asarray([0, 2], jnp.int32),
        "mask": jnp.ones((2,), jnp.float32),
    }
    before = jax.tree.map(np.asarray, state["params"])
    new_state, metrics = jax.jit(step)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
    after = jax.tree.map(np.asarray, new_state["params"])
    unchanged = [
        sharding.path_string(path)
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(after), strict=True
        )
        if np.array_equal(a, b)
    ]
    assert not unchanged
    _check_outputs(spec, new_state, shape)


@pytest.mark.parametrize("name", TRACE)
def test_train_step_traces(name):
    """The same train step, traced abstractly (gradients included): shapes and dtypes only."""
    spec, step, shape = _train_setup(name)
    batch = {
        "video": jax.ShapeDtypeStruct(shape, jnp.uint8),
        "label": jax.ShapeDtypeStruct((2,), jnp.int32),
        "mask": jax.ShapeDtypeStruct((2,), jnp.float32),
    }
    new_state, metrics = jax.eval_shape(step, spec.abstract, batch)
    assert metrics["loss"].shape == () and metrics["loss"].dtype == jnp.float32
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new_state["params"]) == jax.tree.map(
        lambda a: (a.shape, a.dtype), spec.abstract["params"]
    )
    _check_outputs(spec, spec.abstract, shape)


@pytest.mark.parametrize("name", sorted(DEEPER))
def test_deeper_models_stack_the_same_blocks(name):
    sibling, stage_sizes = DEEPER[name]

    def block_types(model_name):
        model = nnx.eval_shape(lambda: models.get(model_name)(3, width=4, rngs=nnx.Rngs(0)))
        return model, [
            (type(b).__name__, jax.tree.map(lambda a: a.shape[:3], nnx.state(b.conv2)))
            for b in model.blocks
        ]

    deep, deep_blocks = block_types(name)
    _, shallow_blocks = block_types(sibling)
    assert deep.stage_sizes == stage_sizes and len(deep_blocks) == sum(stage_sizes)
    assert {str(b) for b in deep_blocks} == {str(b) for b in shallow_blocks}


def test_dropout_draws_from_the_call_rngs_and_modules_hold_none():
    abstract = nnx.eval_shape(lambda: models.get("r3d_18")(4, dropout=0.5, rngs=nnx.Rngs(0)))
    assert not jax.tree.leaves(nnx.state(abstract, nnx.RngState))
    model = random_model("r3d_18", 4, width=4, dropout=0.5)
    graphdef, state = nnx.split(model)
    # Not a constant clip: training-mode BatchNorm maps identical positions and clips to 0.
    video = jax.random.normal(jax.random.key(2), (2, 4, 16, 16, 3))

    @jax.jit
    def logits(state, key):
        return nnx.merge(graphdef, state)(video, train=True, rngs=nnx.Rngs(dropout=key))

    first = logits(state, jax.random.key(0))
    again = logits(state, jax.random.key(0))
    other = logits(state, jax.random.key(1))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


# torchvision's model tables (`num_params`, `_ops` in GFLOPS) at their reference inputs.
TORCHVISION_FIGURES = [
    ("r3d_18", 400, 16, 112, 33_371_472, 40.697),
    ("mc3_18", 400, 16, 112, 11_695_440, 43.343),
    ("r2plus1d_18", 400, 16, 112, 31_505_325, 40.519),
    ("s3d", 400, 16, 224, 8_320_048, 17.979),
    # The 2D backbones, as an ImageNet classifier on one frame.
    ("tsn_resnet18", 1000, 1, 224, 11_689_512, 1.814),
    ("tsn_resnet50", 1000, 1, 224, 25_557_032, 4.089),
]


@pytest.mark.parametrize("name, classes, frames, size, params, gflops", TORCHVISION_FIGURES)
def test_params_and_gflops_match_torchvision(name, classes, frames, size, params, gflops):
    counted_params, counted_gflops, _ = summary(name, num_classes=classes, frames=frames, size=size)
    assert counted_params == pytest.approx(params, rel=0.01)
    assert counted_gflops == pytest.approx(gflops, rel=0.01)


# I3D and C3D are not in torchvision. Their figures are the reference code's, counted with torch
# at the papers' inputs: parameters as sum(p.numel()), GFLOPs as FlopCounterMode's total / 2e9
# (torch.utils.flop_counter counts a multiply-add as 2 FLOPs; torchvision's tables, and
# `--summary`, count it as one).
# - i3d: piergiaj/pytorch-i3d `InceptionI3d(num_classes=400)` on 1x3x64x224x224, Carreira &
#   Zisserman's 64-frame input. Their paper rounds: Table 1 gives 25M for the two-stream I3D,
#   an RGB and a flow network of about 12.7M each.
# - c3d: the VTDL seed's C3D (`src/model/c3d.py`, 512-d features, no fc6/fc7) with its default
#   101 classes (UCF101) on 1x3x16x112x112, Tran et al.'s 16-frame 112 px clip.
REFERENCE_CODE_FIGURES = [
    ("i3d", 400, 12_697_264, 111.153),
    ("c3d", 101, 27_713_253, 38.497),
]


@pytest.mark.parametrize("name, classes, params, gflops", REFERENCE_CODE_FIGURES)
def test_summary_matches_the_reference_code_of_i3d_and_c3d(name, classes, params, gflops, capsys):
    assert models_main(["--summary", name, "--num-classes", str(classes)]) == 0
    lines = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert lines["input"].startswith(
        "1 x 64 x 224 x 224" if name == "i3d" else "1 x 16 x 112 x 112"
    )
    assert int(lines["parameters"].split()[0].replace(",", "")) == pytest.approx(params, rel=0.01)
    assert float(lines["GFLOPs"].split()[0]) == pytest.approx(gflops, rel=0.01)


def test_c3d_refuses_clips_its_pools_would_empty():
    """The pools take 4 frames to none before conv5a (8 frames, pooled to 4, 2, 1, are the
    least); the mean over nothing is NaN, which a run would report as a diverged loss."""
    model = random_model("c3d", 3, width=4)
    with pytest.raises(ValueError, match=r"c3d needs clips of at least 8 frames .* got 4 frames"):
        model(jnp.zeros((1, 4, 32, 32, 3)), train=False)
    with pytest.raises(ValueError, match=r"got 8 frames of 8x32"):
        model(jnp.zeros((1, 8, 8, 32, 3)), train=False)
    assert model(jnp.zeros((1, 8, 16, 16, 3)), train=False).shape == (1, 3)


def test_list_and_summary_command_line(capsys):
    assert models_main(["--list"]) == 0
    assert capsys.readouterr().out.split() == models.names()
    assert models_main(["--summary", "r3d_18"]) == 0
    out = capsys.readouterr().out
    assert "33,371,472" in out and "GFLOPs       40.70" in out and "1 x 16 x 112 x 112" in out
    assert models_main(["--summary", "r3d_81"]) == 2
    assert "unknown model 'r3d_81'" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "vssl_jax.models", "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "r2plus1d_18" in result.stdout.split()


def test_r2plus1d_mid_channels_keep_the_3d_parameter_count():
    """M = floor(27 N_in N_out / (9 N_in + 3 N_out)): the largest M whose 1x3x3 + 3x1x1 pair
    has no more weights than the 3x3x3 conv; torchvision's r2plus1d_18 gets 144 for 64 -> 64."""
    assert resnet3d.mid_channels(64, 64) == 144
    for cin, cout in [(64, 64), (64, 128), (128, 256), (256, 512), (3, 45)]:
        m = resnet3d.mid_channels(cin, cout)
        assert m * (9 * cin + 3 * cout) <= 27 * cin * cout < (m + 1) * (9 * cin + 3 * cout)
    model = nnx.eval_shape(lambda: models.get("r2plus1d_18")(10, rngs=nnx.Rngs(0)))
    block = model.blocks[2]  # first block of stage 2: 64 -> 128, M = 230, both convs
    assert block.conv1.spatial.kernel.shape == (1, 3, 3, 64, 230)
    assert block.conv2.spatial.kernel.shape == (1, 3, 3, 128, 230)
    assert block.conv2.temporal.kernel.shape == (3, 1, 1, 230, 128)


@pytest.mark.parametrize(
    "inflate, inflated_kernels",
    [
        (0, ((1, 1, 1), (1, 3, 3), (1, 1, 1))),
        (1, ((1, 1, 1), (3, 3, 3), (1, 1, 1))),
        (2, ((3, 1, 1), (1, 3, 3), (3, 1, 1))),
    ],
)
def test_resnet_i3d_inflates_every_other_block(inflate, inflated_kernels):
    model = nnx.eval_shape(
        lambda: models.get("i3d_resnet50")(10, inflate=inflate, rngs=nnx.Rngs(0))
    )
    for index, block in enumerate(model.blocks):
        kernels = tuple(conv.kernel.shape[:3] for conv in (block.conv1, block.conv2, block.conv3))
        want = inflated_kernels if index % 2 == 0 else ((1, 1, 1), (1, 3, 3), (1, 1, 1))
        assert kernels == want, index


@pytest.mark.parametrize(
    "name, frames, size, shape",
    [
        ("r3d_18", 16, 112, (2, 7, 7, 512)),
        ("mc3_18", 16, 112, (16, 7, 7, 512)),  # 2D stages keep every frame
        ("resnet3d_50", 16, 112, (1, 4, 4, 2048)),  # Hara: max-pool after the stem
        ("i3d_resnet50", 32, 224, (4, 7, 7, 2048)),  # seed: /2 stem, /2 pool, /2 after res3
    ],
)
def test_resnet3d_feature_maps(name, frames, size, shape):
    model = nnx.eval_shape(lambda: models.get(name)(10, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    video = jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.float32)
    out = jax.eval_shape(
        lambda s, v: nnx.merge(graphdef, s).feature_map(v, train=False), state, video
    )
    assert out.shape == (1, *shape)


def test_non_local_blocks_sit_in_res3_and_res4_and_start_as_identity():
    from vssl_jax.models.non_local import NonLocal3D

    model = nnx.eval_shape(lambda: models.get("resnet3d_50")(10, non_local=True, rngs=nnx.Rngs(0)))
    placed = [i for i, block in enumerate(model.blocks) if block.non_local is not None]
    assert placed == [3 + 1, 3 + 3, 7 + 1, 7 + 3, 7 + 5]  # res3 starts at 3, res4 at 7
    block = NonLocal3D(8, dtype=jnp.float32, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(block)
    apply = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=False))
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 4, 4, 8))
    np.testing.assert_array_equal(apply(state, x), x)
    block.out_bn.scale[...] = jnp.ones_like(block.out_bn.scale[...])
    assert not np.allclose(apply(nnx.state(block), x), x)


def test_non_local_attends_over_every_position():
    """Embedded Gaussian: y_i = sum_j softmax_j(theta_i . phi_j) g_j, checked against numpy."""
    from vssl_jax.models.non_local import NonLocal3D

    block = NonLocal3D(6, subsample=False, dtype=jnp.float32, rngs=nnx.Rngs(0))
    block.out_bn.scale[...] = jnp.ones(6)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (1, 2, 3, 3, 6)))
    flat = x.reshape(18, 6)

    def conv(c):
        return flat @ np.asarray(c.kernel[...]).reshape(c.kernel.shape[-2:]) + np.asarray(
            c.bias[...]
        )

    theta, phi, g = conv(block.theta), conv(block.phi), conv(block.g)
    scores = theta @ phi.T
    weights = np.exp(scores - scores.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    y = (weights @ g) @ np.asarray(block.out.kernel[...]).reshape(3, 6) + np.asarray(
        block.out.bias[...]
    )
    bn = block.out_bn
    y = (y - np.asarray(bn.mean[...])) / np.sqrt(np.asarray(bn.var[...]) + 1e-5)
    want = flat + y * np.asarray(bn.scale[...]) + np.asarray(bn.bias[...])
    got = np.asarray(block(jnp.asarray(x), train=False)).reshape(18, 6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_i3d_and_s3d_feature_maps_have_the_papers_shapes():
    """64x224x224 -> Mixed_5c 8x7x7x1024 (Carreira & Zisserman, Fig. 3); S3D the same at T/8."""
    for name, frames in (("i3d", 64), ("s3d", 16), ("s3d_g", 16)):
        model = nnx.eval_shape(lambda n=name: models.get(n)(10, rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(model)
        video = jax.ShapeDtypeStruct((1, frames, 224, 224, 3), jnp.float32)
        out = jax.eval_shape(
            lambda s, v, g=graphdef: nnx.merge(g, s).feature_map(v, train=False), state, video
        )
        assert out.shape == (1, frames // 8, 7, 7, 1024), name


def test_i3d_same_padding_puts_the_extra_pixel_at_the_end():
    """TensorFlow 'SAME' for a 7-tap, stride-2 conv on an even size pads 2 before, 3 after."""
    from vssl_jax.models.layers import same_padding

    assert same_padding((64, 224, 224), (7, 7, 7), (2, 2, 2)) == [(2, 3)] * 3
    assert same_padding((9,), (3,), (2,)) == [(1, 1)]
    assert same_padding((8,), (1,), (2,)) == [(0, 0)]


def test_s3d_g_gates_scale_channels_by_a_sigmoid_of_their_mean():
    from vssl_jax.models.inception3d import SelfGating

    gate = SelfGating(4, dtype=jnp.float32, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 5, 4))
    weights = jax.nn.sigmoid(x.mean(axis=(1, 2, 3)) @ gate.kernel[...])
    np.testing.assert_allclose(gate(x), x * weights[:, None, None, None, :], rtol=1e-6)
    with_gates = nnx.eval_shape(lambda: models.get("s3d_g")(10, rngs=nnx.Rngs(0)))
    without = nnx.eval_shape(lambda: models.get("s3d")(10, rngs=nnx.Rngs(0)))

    def count(m):
        return sum(p.size for p in jax.tree.leaves(nnx.state(m, nnx.Param)))

    # One C x C gate after the 192-channel stem conv and on each inception branch's output
    # (branch widths of Mixed_3b ... Mixed_5c, Xie et al. / Szegedy et al.).
    branches = [
        (64, 128, 32, 32),
        (128, 192, 96, 64),
        (192, 208, 48, 64),
        (160, 224, 64, 64),
        (128, 256, 64, 64),
        (112, 288, 64, 64),
        (256, 320, 128, 128),
        (256, 320, 128, 128),
        (384, 384, 128, 128),
    ]
    expected = 192**2 + sum(c**2 for block in branches for c in block)
    assert count(with_gates) - count(without) == expected


def test_tsn_averages_segment_logits_and_per_frame_averages_probabilities():
    tsn = random_model("tsn_resnet18", 3, width=4)
    # The same weights in the per-frame classifier: the two differ only in their consensus.
    per_frame = nnx.merge(
        nnx.graphdef(
            nnx.eval_shape(lambda: models.get("per_frame_resnet18")(3, width=4, rngs=nnx.Rngs(0)))
        ),
        nnx.state(tsn),
    )
    video = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 32, 32, 3))

    @jax.jit
    def run(video):
        frame_logits = jnp.stack(
            [tsn.head(tsn.backbone(video[:, t], train=False), train=False) for t in range(5)],
            axis=1,
        )
        return tsn(video, train=False), per_frame(video, train=False), frame_logits

    tsn_logits, per_frame_logits, frame_logits = run(video)
    np.testing.assert_allclose(tsn_logits, frame_logits.mean(1), atol=1e-5)
    np.testing.assert_allclose(
        jax.nn.softmax(per_frame_logits, axis=-1),
        jax.nn.softmax(frame_logits, axis=-1).mean(1),
        atol=1e-5,
    )


def test_frame_transformer_uses_position_and_rejects_long_clips():
    model = random_model(
        "transformer_resnet18", 3, width=4, transformer_width=8, num_heads=2, max_frames=4
    )
    video = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 32, 32, 3))
    logits = jax.jit(lambda v: model(v, train=False))
    # Without position embeddings, self-attention and the mean over time ignore frame order.
    assert not np.allclose(logits(video), logits(video[:, ::-1]))
    with pytest.raises(ValueError, match="max_frames=4"):
        jax.eval_shape(logits, jax.ShapeDtypeStruct((1, 5, 32, 32, 3), jnp.float32))


def test_cnn_lstm_depends_on_frame_order():
    model = random_model("cnn_lstm_resnet18", 3, width=4, hidden=8)
    video = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 32, 32, 3))
    logits = jax.jit(lambda v: model(v, train=False))
    assert not np.allclose(logits(video), logits(video[:, ::-1]))


def test_projection_head():
    head = heads.ProjectionHead(16, 8, hidden_features=32, use_batch_norm=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 16))
    out = head(x, train=True)
    assert out.shape == (4, 8) and out.dtype == jnp.float32
    hidden = nnx.relu(head.norms[0](head.layers[0](x), use_running_average=False))
    np.testing.assert_allclose(out, head.layers[1](hidden), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="num_layers"):
        heads.ProjectionHead(16, num_layers=0, rngs=nnx.Rngs(0))


def test_r3d_18_parameter_paths_are_stable():
    """Checkpoints written before the model zoo name R3D-18's arrays this way."""
    model = nnx.eval_shape(lambda: models.get("r3d_18")(10, rngs=nnx.Rngs(0)))
    paths = {
        ".".join(map(str, p)): v.shape for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    assert paths["stem_conv.kernel"] == (3, 7, 7, 3, 64)
    assert paths["blocks.2.shortcut_conv.kernel"] == (1, 1, 1, 64, 128)
    assert paths["blocks.7.bn2.scale"] == (512,)
    assert paths["head.kernel"] == (512, 10) and paths["head.bias"] == (10,)
    assert len(paths) == 62


@pytest.mark.parametrize("name", models.names())
def test_every_model_has_a_config_with_all_variants(name):
    import importlib

    from configs import supervised

    module = importlib.import_module(f"configs.{name}")
    for variant in supervised.VARIANTS:
        config = module.get_config(variant)
        assert config.is_locked and config.model.name == name
        if variant in supervised.DATASETS:
            assert config.data.data_dir and not config.data.builtin
            assert config.data.eval_split in ("test", "val")
        else:
            assert config.data.builtin == "demo"
    with pytest.raises(ValueError, match="unknown variant 'ucf'"):
        module.get_config("ucf")


@pytest.mark.parametrize(
    "config_name, variant, model_name",
    [
        ("cnn_lstm_resnet18", "demo", "cnn_lstm_resnet18"),
        ("cnn_lstm_resnet18", "ucf101", "cnn_lstm_resnet18"),
        ("transformer_resnet18", "demo", "transformer_resnet18"),
        ("transformer_resnet18", "kinetics", "transformer_resnet18"),
        ("resnet3d_50", "hmdb51", "resnet3d_50"),
        ("i3d_resnet50", "ucf101", "i3d_resnet50"),
        # The comparison trains both models from one config.
        ("frame_vs_lstm", "demo", "per_frame_resnet18"),
        ("frame_vs_lstm", "ucf101", "cnn_lstm_resnet18"),
    ],
)
def test_config_model_options_are_accepted(config_name, variant, model_name):
    import importlib

    config = importlib.import_module(f"configs.{config_name}").get_config(variant)
    with config.unlocked():
        config.model.name = model_name
    abstract = nnx.eval_shape(lambda: models.create(config.model, 5, seed=0))
    assert abstract.feature_dim > 0
