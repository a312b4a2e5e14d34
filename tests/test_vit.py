"""The ViT frame encoder (`vssl_jax.models.vit`) and the frame models built on it.

References: torchvision's `VisionTransformer` (ViT-B/16 at 224 px, and a tiny one over several
frames), with LayerNorms, biases, class token and classifier randomised (torchvision starts them
at 1, 0 or ~0, which would hide a mix-up), converted by `vssl_jax.tools.import_torch`; both in
eval mode, float32. Where the position table is resized, the reference is torchvision's layers
fed a table interpolated here in NumPy.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from vssl_jax import models, objectives, sharding
from vssl_jax.models import pretrained, vit
from vssl_jax.objectives import dpc
from vssl_jax.tools import import_torch

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

NUM_CLASSES = 5
# torchvision `VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
# hidden_dim=16, mlp_dim=32)` as our options.
TINY = {"width": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "patch": 8, "image_size": 32}
VIT_MODELS = ("per_frame_vit", "tsn_vit", "cnn_lstm_vit", "transformer_vit")
# The options beyond the ViT's that keep the LSTM and the temporal Transformer tiny.
FAMILY_TINY = {
    "cnn_lstm_vit": {"hidden": 8},
    "transformer_vit": {"transformer_width": 8, "transformer_depth": 1, "transformer_heads": 2},
}


@pytest.fixture
def quick_compile():
    """Unoptimised XLA: the tiny models here compile about 3x faster (attention dominates), and
    run once. (ViT-B/16 compiles faster optimised.)"""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def randomised(model):
    generator = torch.Generator().manual_seed(0)

    def uniform(tensor, low, high):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                uniform(parameter, -0.1, 0.1)
            elif parameter.ndim == 1:  # LayerNorm scales
                uniform(parameter, 0.5, 1.5)
        uniform(model.class_token, -1.0, 1.0)
        weight = model.heads.head.weight
        bound = 3 / weight.shape[1] ** 0.5  # O(1) logits
        uniform(weight, -bound, bound)
        uniform(model.heads.head.bias, -0.5, 0.5)
    return model.eval()


def tiny_torch_vit(image_size=32):
    torch.manual_seed(0)
    reference = torchvision.models.vision_transformer.VisionTransformer(
        image_size=image_size,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=NUM_CLASSES,
    )
    return randomised(reference)


def numpy_state(reference) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in reference.state_dict().items()}


def converted(name, state_dict, **kwargs):
    """Model `name` (shapes only) filled from a torchvision state dict; its untouched paths."""
    model = nnx.eval_shape(lambda: models.get(name)(NUM_CLASSES, rngs=nnx.Rngs(1), **kwargs))
    return model, import_torch.convert(model, name, state_dict)


def torch_tokens(reference, images: np.ndarray, table: torch.Tensor | None = None):
    """torchvision's encoder output (after `encoder.ln`) `[n, 1 + patches, D]` for channels-last
    `images`; `table` replaces `encoder.pos_embedding` (any patch grid; torchvision's own
    forward only takes its `image_size`)."""
    with torch.no_grad():
        x = reference.conv_proj(torch.from_numpy(images).permute(0, 3, 1, 2))
        x = x.flatten(2).transpose(1, 2)  # [n, patches, D], row-major over the grid
        x = torch.cat([reference.class_token.expand(len(x), -1, -1), x], dim=1)
        table = reference.encoder.pos_embedding if table is None else table
        return reference.encoder.ln(reference.encoder.layers(x + table))


def torch_logits(reference, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return reference.heads(torch_tokens(reference, images)[:, 0]).numpy()


def jitted(model, method: str = "__call__"):
    """`model.<method>(x, train=False)` compiled, with the weights as arguments."""
    graphdef, state = nnx.split(model)

    def run(state, x):
        return getattr(nnx.merge(graphdef, state), method)(x, train=False)

    compiled = jax.jit(run)
    return lambda x: np.asarray(compiled(state, jnp.asarray(x)))


def log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


# ---------------------------------------------------------------- torchvision's logits


@pytest.fixture(scope="module")
def vit_b_16():
    torch.manual_seed(0)
    return randomised(torchvision.models.vit_b_16(weights=None, num_classes=NUM_CLASSES))


def test_vit_b_16_logits_match_torchvision(vit_b_16):
    """The issue's check: torchvision's ViT-B/16 at 224 px, one frame: TSN's logits are the
    frame's, the per-frame classifier's its log-probabilities."""
    reference = vit_b_16
    state_dict = numpy_state(reference)
    tsn_model, left = converted("tsn_vit", state_dict)
    assert left == []
    assert tsn_model.backbone.blocks.layers[11].attention.qkv.kernel.shape == (768, 3 * 768)
    per_frame = nnx.merge(
        nnx.graphdef(nnx.eval_shape(lambda: models.get("per_frame_vit")(5, rngs=nnx.Rngs(0)))),
        nnx.state(tsn_model),
    )
    image = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(image).permute(0, 3, 1, 2)).numpy()

    graphdef, state = nnx.split(tsn_model)
    per_frame_graphdef = nnx.graphdef(per_frame)

    @jax.jit
    def both(state, clip):
        return (
            nnx.merge(graphdef, state)(clip, train=False),
            nnx.merge(per_frame_graphdef, state)(clip, train=False),
        )

    got, got_per_frame = map(np.asarray, both(state, jnp.asarray(image[:, None])))
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got_per_frame, log_softmax(want), rtol=0, atol=1e-4)


def test_frame_models_match_torchvision_on_every_frame(quick_compile):
    """A tiny torchvision ViT on each of 3 frames: TSN averages the frames' logits, the
    per-frame classifier their probabilities, `features` the class tokens, and `feature_map`
    lays the patch tokens out on the 4 x 4 grid (row-major, as torchvision flattens them)."""
    reference = tiny_torch_vit()
    state_dict = numpy_state(reference)
    clip = np.random.default_rng(0).standard_normal((2, 3, 32, 32, 3)).astype(np.float32)
    frames = clip.reshape(6, 32, 32, 3)
    frame_logits = torch_logits(reference, frames).reshape(2, 3, NUM_CLASSES)
    tokens = torch_tokens(reference, frames).numpy()  # [6, 17, 16]

    tsn_model, left = converted("tsn_vit", state_dict, **TINY)
    assert left == []
    graphdef, state = nnx.split(tsn_model)
    per_frame_graphdef = nnx.graphdef(
        nnx.eval_shape(lambda: models.get("per_frame_vit")(5, rngs=nnx.Rngs(0), **TINY))
    )

    @jax.jit
    def outputs(state, clip):
        model, per_frame = nnx.merge(graphdef, state), nnx.merge(per_frame_graphdef, state)
        return (
            model(clip, train=False),
            per_frame(clip, train=False),
            model.features(clip, train=False),
            model.backbone.feature_map(clip.reshape(6, 32, 32, 3), train=False),
        )

    logits, per_frame_logits, features, feature_map = map(np.asarray, outputs(state, clip))
    assert np.abs(frame_logits).max() > 0.5
    np.testing.assert_allclose(logits, frame_logits.mean(1), rtol=0, atol=1e-5)
    probabilities = np.exp(log_softmax(frame_logits)).mean(1)
    np.testing.assert_allclose(np.exp(per_frame_logits), probabilities, rtol=0, atol=1e-5)
    np.testing.assert_allclose(features, tokens[:, 0].reshape(2, 3, 16).mean(1), atol=1e-5)
    np.testing.assert_allclose(feature_map, tokens[:, 1:].reshape(6, 4, 4, 16), atol=1e-5)


@pytest.mark.parametrize("name", ["cnn_lstm_vit", "transformer_vit"])
def test_backbone_only_import(name, quick_compile):
    """The ViT of the CNN+LSTM and of the ViT + Transformer takes torchvision's weights; their
    other modules stay as initialised, and the checkpoint's classifier is dropped."""
    reference = tiny_torch_vit()
    model, left = converted(name, numpy_state(reference), **TINY, **FAMILY_TINY[name])
    paths = [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model))]
    assert sorted(left) == sorted(p for p in paths if not p.startswith("backbone."))
    assert "head.kernel" in left
    frames = np.random.default_rng(1).standard_normal((3, 32, 32, 3)).astype(np.float32)
    want = torch_tokens(reference, frames).numpy()[:, 0]
    np.testing.assert_allclose(jitted(model.backbone)(frames), want, atol=1e-5)


# ---------------------------------------------------------------- Position table


def keys_cubic(x):
    """Keys' cubic convolution kernel with a = -0.5 (jax.image.resize's "cubic")."""
    x = np.abs(x)
    near = (1.5 * x - 2.5) * x * x + 1
    far = ((-0.5 * x + 2.5) * x - 4) * x + 2
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def upsampling_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in]: output pixel centres mapped onto the input's (half-pixel convention),
    the kernel's taps that fall inside the input renormalised to sum to 1."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    weights = keys_cubic(centres[:, None] - np.arange(n_in)[None, :])
    return weights / weights.sum(axis=1, keepdims=True)


def sinusoidal(num_positions: int, dim: int) -> np.ndarray:
    """VideoMAE's `get_sinusoid_encoding_table`, written out."""
    table = np.array(
        [
            [p / np.power(10000, 2 * (i // 2) / dim) for i in range(dim)]
            for p in range(num_positions)
        ]
    )
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return table.astype(np.float32)


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_position_table_follows_the_image_size(position, quick_compile):
    """At 32 px (the table's 4 x 4 grid) the table is used as it is; at 48 x 40 (6 x 5 patches)
    the patch rows are interpolated (cubic, per axis) and the class token's row is kept. The
    sinusoidal table is not a parameter."""
    reference = tiny_torch_vit()
    state_dict = numpy_state(reference)
    if position == "sinusoidal":
        del state_dict["encoder.pos_embedding"]
        table = sinusoidal(17, 16)
    else:
        table = state_dict["encoder.pos_embedding"][0]
    model, left = converted("per_frame_vit", state_dict, position=position, **TINY)
    assert left == []
    params = nnx.state(model, nnx.Param)
    assert ("position" in params["backbone"]) == (position == "learned")
    encode = jitted(model.backbone)
    rng = np.random.default_rng(2)

    images = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    want = torch_tokens(reference, images, torch.from_numpy(table)).numpy()[:, 0]
    np.testing.assert_allclose(encode(images), want, atol=1e-5)

    images = rng.standard_normal((2, 48, 40, 3)).astype(np.float32)
    grid = table[1:].reshape(4, 4, 16)
    resized = np.einsum("ia,jb,abd->ijd", upsampling_weights(4, 6), upsampling_weights(4, 5), grid)
    resized_table = np.concatenate([table[:1], resized.reshape(30, 16)]).astype(np.float32)
    want = torch_tokens(reference, images, torch.from_numpy(resized_table)).numpy()[:, 0]
    np.testing.assert_allclose(encode(images), want, atol=1e-5)
    # The class token's row matters: interpolating it with the rest would change the output.
    moved = resized_table.copy()
    moved[0] = resized_table[1]
    other = torch_tokens(reference, images, torch.from_numpy(moved)).numpy()[:, 0]
    assert np.abs(other - want).max() > 1e-2


def test_vit_sizes_and_registered_defaults():
    """ViT-B/16 by default: with 1,000 classes, the parameters of torchvision's `vit_b_16`
    (86,567,656 in its model table)."""
    assert vit.VIT_SIZES["b"] == (768, 12, 12)
    abstract = nnx.eval_shape(lambda: models.get("tsn_vit")(1000, rngs=nnx.Rngs(0)))
    count = sum(p.size for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert count == 86_567_656
    width, depth, heads = vit.VIT_SIZES["s"]
    small = nnx.eval_shape(
        lambda: vit.ViT2D(width=width, depth=depth, num_heads=heads, rngs=nnx.Rngs(0))
    )
    assert small.feature_dim == 384 and len(small.blocks.layers) == 12
    with pytest.raises(ValueError, match="position must be one of"):
        vit.ViT2D(position="rope", rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- Stochastic depth and rngs


def random_weights(module):
    """Every variable of `module` (built by `nnx.eval_shape`) drawn by NumPy: kernels ~
    N(0, 1/fan_in), biases and token tables ~ N(0, 0.1^2), norm scales 1. Compiling the real
    initialisers op by op takes seconds on CPU, and nothing here depends on them."""
    rng = np.random.default_rng(0)

    def value(path, leaf):
        name = sharding.path_string(path).rsplit("/", 1)[-1]
        if name == "scale":
            return jnp.ones(leaf.shape, leaf.dtype)
        if leaf.ndim < 2 or name in ("position", "class_token"):
            return jnp.asarray(rng.normal(0, 0.1, leaf.shape), leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.normal(0, fan_in**-0.5, leaf.shape), leaf.dtype)

    nnx.update(module, jax.tree_util.tree_map_with_path(value, nnx.state(module)))
    return module


def tiny_options(name, **kwargs):
    return {**TINY, **FAMILY_TINY.get(name, {}), **kwargs}


def tiny_model(name, **kwargs):
    """Model `name` at `TINY` size, random weights."""
    options = tiny_options(name, **kwargs)
    return random_weights(nnx.eval_shape(lambda: models.get(name)(3, rngs=nnx.Rngs(0), **options)))


def test_drop_path_changes_the_output_only_when_training(quick_compile):
    """Evaluation ignores stochastic depth; training with it changes the output with the key,
    and needs the key; training without it gives the evaluation output (no BatchNorm)."""
    dropping = tiny_model("tsn_vit", drop_path=0.5).backbone
    graphdef, state = nnx.split(dropping)
    plain = nnx.graphdef(tiny_model("tsn_vit").backbone)  # drop_path draws no parameter
    images = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))

    @jax.jit
    def outputs(state, key):
        model, baseline = nnx.merge(graphdef, state), nnx.merge(plain, state)
        return {
            "train": model(images, train=True, rngs=nnx.Rngs(dropout=key)),
            "eval": model(images, train=False, rngs=nnx.Rngs(dropout=key)),
            "plain_train": baseline(images, train=True),
            "plain_eval": baseline(images, train=False),
        }

    first, again, other = (outputs(state, jax.random.key(k)) for k in (0, 0, 1))
    np.testing.assert_array_equal(first["train"], again["train"])
    assert not np.allclose(first["train"], other["train"], atol=1e-3)
    assert not np.allclose(first["train"], first["eval"], atol=1e-3)
    np.testing.assert_allclose(first["eval"], first["plain_eval"], atol=1e-6)
    np.testing.assert_allclose(first["plain_train"], first["plain_eval"], atol=1e-6)
    with pytest.raises(ValueError, match="drop_path > 0 needs rngs"):
        jax.eval_shape(lambda s: nnx.merge(graphdef, s)(images, train=True), state)


@pytest.mark.parametrize("name", VIT_MODELS)
def test_frame_models_hand_their_rngs_to_the_vit(name, quick_compile):
    """`features` and `__call__` of every frame model pass the call's rngs to the ViT: with
    stochastic depth, another key gives another training output, and none is an error."""
    model = tiny_model(name, drop_path=0.5)
    graphdef, state = nnx.split(model)
    video = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 32, 32, 3))

    @jax.jit
    def outputs(state, key):
        model = nnx.merge(graphdef, state)
        return (
            model(video, train=True, rngs=nnx.Rngs(dropout=key)),
            model.features(video, train=True, rngs=nnx.Rngs(dropout=key)),
        )

    first, other = outputs(state, jax.random.key(0)), outputs(state, jax.random.key(1))
    for a, b, what in zip(first, other, ("logits", "features"), strict=True):
        assert not np.allclose(a, b, atol=1e-4), what
    for method in ("__call__", "features"):
        with pytest.raises(ValueError, match="drop_path > 0 needs rngs"):
            jax.eval_shape(
                lambda s, m=method: getattr(nnx.merge(graphdef, s), m)(video, train=True), state
            )


# ---------------------------------------------------------------- cpc_transformer


def test_cpc_transformer_runs_on_transformer_vit(quick_compile):
    """ViT-temporal CPC: the targets are the ViT's patch tokens (its 4 x 4 `feature_map`,
    projected); the loss is finite and its gradient reaches the ViT."""
    config = ml_collections.ConfigDict({"num_seq": 4, "seq_len": 1, "pred_step": 2})
    options = tiny_options("transformer_vit", depth=1)

    def build():
        encoder = models.get("transformer_vit")(3, rngs=nnx.Rngs(0), **options)
        return objectives.get("cpc_transformer").build_model(encoder, config, nnx.Rngs(1))

    model = random_weights(nnx.eval_shape(build))
    video = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 32, 32, 3))

    @nnx.jit
    def loss_and_grads(model):
        def loss(model):
            value, metrics = dpc.dense_predictive_loss(
                model, {"video": video}, train=True, rngs=nnx.Rngs(dropout=0), config=config
            )
            return value, metrics

        return nnx.value_and_grad(loss, has_aux=True)(model)

    @nnx.jit
    def outputs(model):
        predicted, target = model(video, train=False)
        frames = video[:, 2:].reshape(4, 32, 32, 3)
        want = model.encoder.project(model.encoder.backbone.feature_map(frames, train=False))
        return predicted, target, want

    predicted, target, want = outputs(model)
    assert predicted.shape == target.shape == (2, 2, 4, 4, 8)
    np.testing.assert_allclose(target, want.reshape(2, 2, 4, 4, 8), atol=1e-6)

    (loss, metrics), grads = loss_and_grads(model)
    assert np.isfinite(float(loss)) and float(loss) > 0 and metrics["loss"] == loss
    flat = {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(grads)}
    assert all(np.isfinite(g).all() for g in flat.values())
    for path in (
        "encoder.backbone.patch_embedding.kernel",
        "encoder.backbone.position",
        "encoder.backbone.blocks.layers.0.mlp_out.kernel",
        "encoder.project.kernel",
        "predictor.out.kernel",
    ):
        assert np.abs(flat[path]).max() > 0, path


# ---------------------------------------------------------------- Command line


def test_command_line_imports_a_torchvision_vit_b_16(vit_b_16, tmp_path, capsys):
    """`--arch tsn_vit` on a ViT-B/16 state dict as torchvision published it (its MLP layers
    under their pre-0.13 names `mlp.linear_1` / `mlp.linear_2`)."""
    state_dict = vit_b_16.state_dict()
    legacy = {
        k.replace(".mlp.0.", ".mlp.linear_1.").replace(".mlp.3.", ".mlp.linear_2."): v
        for k, v in state_dict.items()
    }
    assert "encoder.layers.encoder_layer_3.mlp.linear_1.weight" in legacy
    checkpoint = tmp_path / "vit_b_16.pth"
    torch.save(legacy, checkpoint)
    out = tmp_path / "imported"
    argv = ["--arch", "tsn_vit", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert import_torch.main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out

    params = pretrained.restore(str(out))["params"]
    assert params["head.kernel"].shape == (768, NUM_CLASSES)  # classes from the checkpoint
    layer = "encoder.layers.encoder_layer_3"
    expected = {
        "backbone.patch_embedding.kernel": state_dict["conv_proj.weight"].permute(2, 3, 1, 0),
        "backbone.class_token": state_dict["class_token"][0],
        "backbone.position": state_dict["encoder.pos_embedding"][0],
        "backbone.blocks.layers.3.attention.qkv.kernel": state_dict[
            f"{layer}.self_attention.in_proj_weight"
        ].T,
        "backbone.blocks.layers.3.attention.out.bias": state_dict[
            f"{layer}.self_attention.out_proj.bias"
        ],
        "backbone.blocks.layers.3.mlp_in.kernel": state_dict[f"{layer}.mlp.0.weight"].T,
        "backbone.blocks.layers.3.norm2.scale": state_dict[f"{layer}.ln_2.weight"],
        "backbone.norm.bias": state_dict["encoder.ln.bias"],
        "head.kernel": state_dict["heads.head.weight"].T,
    }
    for key, value in expected.items():
        np.testing.assert_array_equal(params[key], value.numpy(), err_msg=key)
