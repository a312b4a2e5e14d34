"""The joint space-time ViT (`vivit_joint`) against NumPy references written here."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vssl_jax.models import video_vit


def _model(**kwargs):
    options = {
        "width": 16,
        "depth": 1,
        "num_heads": 2,
        "patch": 8,
        "image_size": 32,
        "num_frames": 4,
        **kwargs,
    }
    return video_vit.vivit_joint(3, rngs=nnx.Rngs(0), **options)


@nnx.jit  # one compilation instead of an op-by-op run
def _embed(model, video):
    return model.embed(video)


def _tube(video, b, t, i, j, tubelet=(2, 8, 8)):
    pt, ph, pw = tubelet
    return video[b, pt * t : pt * (t + 1), ph * i : ph * (i + 1), pw * j : pw * (j + 1)]


def test_tokens_are_tubelet_projections_plus_position_in_row_major_order():
    model = _model()
    video = np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    position = np.random.default_rng(1).normal(size=(2 * 4 * 4, 16)).astype(np.float32)
    model.position[...] = jnp.asarray(position)
    tokens = np.asarray(_embed(model, jnp.asarray(video)))
    kernel = np.asarray(model.patch_embedding.kernel[...])
    bias = np.asarray(model.patch_embedding.bias[...])
    assert model.token_grid(video.shape) == (2, 4, 4)
    assert tokens.shape == (2, 32, 16)
    for b, t, i, j in np.ndindex(2, 2, 4, 4):
        expected = np.einsum("thwc,thwcd->d", _tube(video, b, t, i, j), kernel) + bias
        expected += position[(t * 4 + i) * 4 + j]
        np.testing.assert_allclose(tokens[b, (t * 4 + i) * 4 + j], expected, rtol=1e-5, atol=1e-5)


def test_position_table_is_resized_to_another_clip_length():
    """A table constant over time keeps its spatial rows when the grid grows from 2 to 4 slices
    (interpolation weights sum to one): 8 frames read the 4-frame model's table."""
    model = _model()
    spatial = np.random.default_rng(2).normal(size=(16, 16)).astype(np.float32)
    model.position[...] = jnp.asarray(np.tile(spatial, (2, 1)))
    video = np.random.default_rng(3).normal(size=(1, 8, 32, 32, 3)).astype(np.float32)
    tokens = np.asarray(_embed(model, jnp.asarray(video)))
    kernel = np.asarray(model.patch_embedding.kernel[...])
    bias = np.asarray(model.patch_embedding.bias[...])
    assert tokens.shape == (1, 4 * 16, 16)
    for t, i, j in np.ndindex(4, 4, 4):
        expected = np.einsum("thwc,thwcd->d", _tube(video, 0, t, i, j), kernel) + bias
        expected += spatial[i * 4 + j]
        np.testing.assert_allclose(tokens[0, t * 16 + i * 4 + j], expected, rtol=1e-4, atol=1e-4)
    # Not the reference grid in space either: the table is interpolated, never cut or padded.
    shape = nnx.eval_shape(lambda m: m.embed(jnp.zeros((1, 6, 48, 40, 3))), model).shape
    assert shape == (1, 3 * 6 * 5, 16)


def test_sinusoidal_positions_are_vaswanis_table_over_the_token_index():
    model = _model(position="sinusoidal", width=8)
    assert "position" not in nnx.to_pure_dict(nnx.state(model, nnx.Param))
    video = jnp.zeros((1, 4, 32, 32, 3))
    positions = np.asarray(_embed(model, video)) - np.asarray(model.patch_embedding.bias[...])
    index = np.arange(32)[:, None]
    dim = np.arange(8)[None, :]
    angle = index / 10000.0 ** (2 * (dim // 2) / 8)
    expected = np.where(dim % 2 == 0, np.sin(angle), np.cos(angle))
    np.testing.assert_allclose(positions[0], expected, rtol=1e-5, atol=1e-5)


def test_features_are_the_mean_of_normalised_tokens_and_logits_a_linear_head():
    """Depth 0 leaves the final LayerNorm, the token mean and the classifier to check."""
    model = _model(depth=0)
    model.norm.scale[...] = jnp.linspace(0.5, 1.5, 16)
    model.norm.bias[...] = jnp.linspace(-0.1, 0.1, 16)
    video = jnp.asarray(np.random.default_rng(4).normal(size=(2, 4, 32, 32, 3)), jnp.float32)
    tokens = np.asarray(_embed(model, video))
    mean = tokens.mean(-1, keepdims=True)
    normed = (tokens - mean) / np.sqrt(tokens.var(-1, keepdims=True) + 1e-6)
    normed = normed * np.asarray(model.norm.scale[...]) + np.asarray(model.norm.bias[...])
    features = normed.mean(1)
    outputs = nnx.jit(lambda model, v: (model.features(v, train=False), model(v, train=False)))
    got_features, got_logits = outputs(model, video)
    np.testing.assert_allclose(got_features, features, rtol=1e-4, atol=1e-5)
    logits = features @ np.asarray(model.head.kernel[...]) + np.asarray(model.head.bias[...])
    np.testing.assert_allclose(got_logits, logits, rtol=1e-4, atol=1e-5)
    assert model.feature_dim == model.width == 16 and model.tubelet == (2, 8, 8)


def test_encode_takes_any_subset_of_tokens_and_attends_over_it_only():
    """Dropping a token changes the others' outputs (attention), and the encoder runs on any
    number of tokens; each token's output depends on the set, not on where it sits."""
    model = _model(depth=2)
    tokens = _embed(model, jnp.asarray(np.random.default_rng(5).normal(size=(1, 4, 32, 32, 3))))
    encode = nnx.jit(lambda model, tokens: model.encode(tokens, train=False))
    full = np.asarray(encode(model, tokens))
    subset = np.asarray(encode(model, tokens[:, ::3]))
    permuted = np.asarray(encode(model, tokens[:, ::3][:, ::-1]))
    assert subset.shape == (1, 11, 16)
    assert not np.allclose(full[:, ::3], subset, atol=1e-4)
    np.testing.assert_allclose(permuted[:, ::-1], subset, rtol=1e-4, atol=1e-5)


def test_drop_path_needs_rngs_in_training_and_bad_shapes_are_refused():
    model = _model(drop_path=0.1)
    video = jnp.zeros((1, 4, 32, 32, 3))
    with pytest.raises(ValueError, match="needs rngs"):
        model.features(video, train=True)
    a = model.features(video, train=True, rngs=nnx.Rngs(dropout=0))
    assert a.shape == (1, 16) and np.isfinite(np.asarray(a)).all()
    with pytest.raises(ValueError, match="does not split into 2x8x8 tubelets"):
        model.embed(jnp.zeros((1, 3, 32, 32, 3)))
    with pytest.raises(ValueError, match="'learned' or 'sinusoidal'"):
        _model(position="rotary")
