"""Transformer pieces against NumPy references written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vssl_jax.models import transformer


def test_patch_embedding_equals_strided_convolution():
    rng = np.random.default_rng(0)
    embed = transformer.PatchEmbedding((2, 4, 4), 5, dtype=jnp.float32, rngs=nnx.Rngs(0))
    video = rng.normal(size=(2, 4, 8, 12, 3)).astype(np.float32)
    tokens = np.asarray(embed(jnp.asarray(video)))
    kernel, bias = np.asarray(embed.kernel[...]), np.asarray(embed.bias[...])
    assert tokens.shape == (2, 2, 2, 3, 5)
    for b, t, h, w in np.ndindex(2, 2, 2, 3):
        tube = video[b, 2 * t : 2 * t + 2, 4 * h : 4 * h + 4, 4 * w : 4 * w + 4]
        expected = np.einsum("thwc,thwcd->d", tube, kernel) + bias
        np.testing.assert_allclose(tokens[b, t, h, w], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not split into 2x4x4 patches"):
        embed(jnp.zeros((1, 3, 8, 8, 3)))


def test_attention_matches_numpy_softmax_attention_with_mask():
    rng = np.random.default_rng(1)
    attention = transformer.Attention(8, 2, dtype=jnp.float32, rngs=nnx.Rngs(0))
    x = rng.normal(size=(2, 5, 8)).astype(np.float32)
    mask = np.tril(np.ones((5, 5), bool))
    y = np.asarray(attention(jnp.asarray(x), mask=jnp.asarray(mask)))
    qkv = x @ np.asarray(attention.qkv.kernel[...]) + np.asarray(attention.qkv.bias[...])
    q, k, v = (qkv[..., i * 8 : (i + 1) * 8].reshape(2, 5, 2, 4) for i in range(3))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
    scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(2, 5, 8)
    expected = heads @ np.asarray(attention.out.kernel[...]) + np.asarray(attention.out.bias[...])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    x = jnp.ones((4000, 3, 2))
    y = np.asarray(transformer.drop_path(x, 0.25, jax.random.key(0)))
    per_sample = y.reshape(4000, -1)
    # Every sample is all zeros or all 1/(1 - 0.25).
    assert set(np.unique(per_sample)) <= {0.0, np.float32(1 / 0.75)}
    assert np.all(per_sample.min(1) == per_sample.max(1))
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03
    assert transformer.drop_path(x, 0.25, None) is x


def test_block_stack_rates_rise_linearly_and_remat_gives_same_gradients():
    def loss_and_grads(remat):
        stack = transformer.BlockStack(
            8, 3, 2, drop_path=0.2, remat=remat, dtype=jnp.float32, rngs=nnx.Rngs(0)
        )
        x = jnp.linspace(-1, 1, 2 * 4 * 8).reshape(2, 4, 8)

        @nnx.jit
        def step(stack):
            def loss(stack):
                return (stack(x, train=True, rngs=nnx.Rngs(dropout=3)) ** 2).mean()

            return nnx.value_and_grad(loss)(stack)

        return stack, step(stack)

    stack, (value, grads) = loss_and_grads(False)
    assert [layer.drop_path for layer in stack.layers] == pytest.approx([0.0, 0.1, 0.2])
    _, (value_remat, grads_remat) = loss_and_grads(True)
    np.testing.assert_allclose(value, value_remat, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_remat), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="drop_path > 0 needs rngs"):
        stack(jnp.zeros((1, 2, 8)), train=True)


def test_block_stack_remat_shrinks_the_backward_pass_scratch_memory():
    # What remat is for: XLA's own buffer plan for the gradient step, without and with it.
    x = jnp.ones((4, 64, 32))

    def scratch_bytes(remat):
        stack = transformer.BlockStack(32, 6, 2, remat=remat, dtype=jnp.float32, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(stack)

        def loss(params):
            return (nnx.merge(graphdef, params)(x, train=True) ** 2).mean()

        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    unrolled, checkpointed = scratch_bytes(False), scratch_bytes(True)
    # Unrolled, the step keeps ~10 activations of [4, 64, 128]-ish size per block; checkpointed,
    # one block input per block plus one block's working set.
    assert checkpointed < 0.5 * unrolled, (unrolled, checkpointed)


def test_sinusoidal_table_matches_the_formula():
    table = transformer.sinusoidal_table(6, 8)
    for p, i in np.ndindex(6, 8):
        angle = p / 10000 ** (2 * (i // 2) / 8)
        expected = np.sin(angle) if i % 2 == 0 else np.cos(angle)
        assert table[p, i] == pytest.approx(expected, abs=1e-6)


def test_resize_grid_keeps_an_equal_grid_and_interpolates_a_linear_ramp():
    table = jnp.asarray(np.random.default_rng(0).normal(size=(2 * 3 * 3, 4)), jnp.float32)
    assert transformer.resize_grid(table, (2, 3, 3), (2, 3, 3)) is table
    # A table constant along time stays constant when time is stretched.
    ramp = np.tile(np.arange(9, dtype=np.float32)[:, None], (2, 4))  # [2*3*3, 4]
    resized = np.asarray(transformer.resize_grid(jnp.asarray(ramp), (2, 3, 3), (4, 3, 3)))
    assert resized.shape == (36, 4)
    np.testing.assert_allclose(
        resized.reshape(4, 9, 4), np.broadcast_to(ramp[:9], (4, 9, 4)), atol=1e-5
    )
    with pytest.raises(ValueError, match="does not fit a grid of 3x3"):
        transformer.resize_grid(table, (3, 3), (4, 4))
