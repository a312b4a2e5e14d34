import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vssl_jax.models import layers

CONV2D = ("NHWC", "HWIO", "NHWC")
CASES = [  # kernel, strides, padding, input [B, T, H, W, C]
    ((3, 3, 3), (1, 1, 1), ((1, 1), (1, 1), (1, 1)), (2, 6, 10, 10, 4)),
    ((3, 3, 3), (2, 2, 2), ((1, 1), (1, 1), (1, 1)), (2, 7, 9, 9, 3)),
    ((3, 7, 7), (1, 2, 2), ((1, 1), (3, 3), (3, 3)), (1, 5, 16, 12, 3)),
    ((1, 1, 1), (2, 2, 2), ((0, 0), (0, 0), (0, 0)), (2, 6, 8, 8, 5)),
    ((3, 1, 1), (1, 1, 1), ((1, 1), (0, 0), (0, 0)), (2, 4, 6, 6, 3)),
]


@pytest.mark.parametrize("kernel_size, strides, padding, shape", CASES)
def test_temporal_taps_equal_native_3d_convolution(kernel_size, strides, padding, shape):
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, shape)
    w = jax.random.normal(kw, (*kernel_size, shape[-1], 6))
    native = layers.conv3d_native(x, w, strides, padding)
    taps = layers.conv3d_temporal_taps(x, w, strides, padding)
    assert taps.shape == native.shape
    np.testing.assert_allclose(taps, native, rtol=1e-4, atol=1e-4)

    def grads(conv):
        return jax.grad(lambda x, w: (conv(x, w, strides, padding) ** 2).sum(), (0, 1))(x, w)

    for got, want in zip(
        grads(layers.conv3d_temporal_taps), grads(layers.conv3d_native), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_conv3d_module_matches_native_and_has_nnx_conv_parameters(monkeypatch):
    from flax import nnx

    conv = layers.Conv3D(3, 4, (3, 3, 3), (1, 2, 2), use_bias=True, rngs=nnx.Rngs(0))
    assert conv.kernel.value.shape == (3, 3, 3, 3, 4) and conv.bias.value.shape == (4,)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 8, 8, 3))
    want = layers.conv3d_native(x, conv.kernel.value, (1, 2, 2), ((1, 1),) * 3) + conv.bias.value
    for impl in ("native", "taps"):
        monkeypatch.setenv("VSSL_JAX_CONV3D", impl)
        np.testing.assert_allclose(conv(x), want, rtol=1e-4, atol=1e-4)
    monkeypatch.setenv("VSSL_JAX_CONV3D", "fast")
    with pytest.raises(ValueError, match="VSSL_JAX_CONV3D='fast'"):
        conv(jnp.ones((1, 3, 4, 4, 3)))


def test_cpu_convolution_gradients_run_on_eigen_not_ynnpack():
    # Importing vssl_jax set the flag before JAX started; the compiled kernel gradient of a 2D
    # convolution must then be XLA's own convolution, not a YNNPACK fusion (~9x slower here).
    import vssl_jax

    assert vssl_jax.CPU_CONVOLUTION_FLAG in os.environ["XLA_FLAGS"].split()
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 5))

    def loss(w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=CONV2D).sum()

    compiled = jax.jit(jax.grad(loss)).lower(w).compile().as_text()
    assert "convolution(" in compiled
    assert "ynn_fusion" not in compiled


def test_cpu_convolution_flag_leaves_a_users_own_setting_alone():
    import vssl_jax

    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
    assert not vssl_jax.use_eigen_cpu_convolutions(mine)
    assert mine == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
    empty = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert vssl_jax.use_eigen_cpu_convolutions(empty)
    assert empty["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=8",
        vssl_jax.CPU_CONVOLUTION_FLAG,
    ]


CONV2D_CASES = [  # kernel, stride, padding, input [N, H, W, C], computed as patches on CPU?
    ((3, 3), 1, ((1, 1), (1, 1)), (3, 2, 2, 6), True),  # A map of 4 positions.
    ((3, 3), 2, ((1, 1), (1, 1)), (2, 7, 5, 5), True),  # 4 x 3 = 12 output positions.
    ((7, 7), 2, ((3, 3), (3, 3)), (2, 17, 12, 3), True),  # A stem: 3 input channels.
    ((1, 1), 2, ((0, 0), (0, 0)), (2, 4, 4, 5), True),  # A strided shortcut.
    ((3, 3), 1, ((1, 1), (1, 1)), (2, 9, 9, 6), False),  # 81 positions of 6 channels.
    ((2, 3), 1, ((0, 1), (2, 0)), (1, 6, 7, 5), False),  # Uneven kernel and padding.
]


@pytest.mark.parametrize("kernel_size, stride, padding, shape, as_patches", CONV2D_CASES)
def test_conv2d_equals_lax_convolution_and_takes_patches_where_xla_cpu_is_slow(
    kernel_size, stride, padding, shape, as_patches
):
    kx, kw = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(kx, shape)
    w = jax.random.normal(kw, (*kernel_size, shape[-1], 4))
    strides = (stride, stride)

    def reference(x, w):
        return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=CONV2D)

    def ours(x, w):
        return layers.conv2d(x, w, strides, padding)

    np.testing.assert_allclose(ours(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
    for got, want in zip(
        jax.grad(lambda x, w: (ours(x, w) ** 2).sum(), (0, 1))(x, w),
        jax.grad(lambda x, w: (reference(x, w) ** 2).sum(), (0, 1))(x, w),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    compiled = jax.jit(ours).lower(x, w).compile().as_text()
    assert ("convolution(" not in compiled) == as_patches


def test_resnet2d_convolutions_are_the_cpu_aware_conv2d():
    from flax import nnx

    from vssl_jax.models import resnet2d

    net = resnet2d.ResNet2D(18, width=8, dtype=jnp.float32, rngs=nnx.Rngs(0))
    convs = [m for _, m in nnx.iter_graph(net) if isinstance(m, nnx.Conv)]
    assert len(convs) == 20 and all(c.conv_general_dilated is layers.conv2d for c in convs)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_batch_norm_equals_flax_and_never_updates_in_place(dtype, monkeypatch):
    """Same outputs and running statistics as nnx.BatchNorm, bit for bit, and the same gradients,
    over two training steps and an eval pass; and the training pass never takes flax's in-place
    `variable[...] = ...` update, whose tracing cost grows with the model traced before it."""
    from flax import nnx

    def built(cls):
        norm = cls(8, momentum=0.9, dtype=dtype, rngs=nnx.Rngs(0))
        norm.scale[...] = jnp.arange(8.0) / 4
        norm.bias[...] = jnp.arange(8.0) / 8
        return norm

    ours, flax_norm = built(layers.BatchNorm), built(nnx.BatchNorm)
    x = jax.random.normal(jax.random.key(0), (4, 3, 5, 8)) * 3 + 1
    weights = jax.random.normal(jax.random.key(1), x.shape)

    @nnx.jit
    def step(norm, x):
        def loss(norm, x):
            return jnp.sum(norm(x).astype(jnp.float32) * weights)

        return nnx.value_and_grad(loss, argnums=(0, 1))(norm, x)

    for _ in range(2):
        (value, (grads, x_grad)), (want, (want_grads, want_x_grad)) = (
            step(ours, x),
            step(flax_norm, x),
        )
        np.testing.assert_array_equal(value, want)
        # Gradients through another graph of the same ops: equal to rounding.
        for got, expected in (
            (x_grad, want_x_grad),
            (grads["scale"][...], want_grads["scale"][...]),
        ):
            got, expected = np.float32(got), np.float32(expected)
            np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-5 * np.abs(expected).max())
        np.testing.assert_array_equal(ours.mean[...], flax_norm.mean[...])
        np.testing.assert_array_equal(ours.var[...], flax_norm.var[...])
    assert not np.array_equal(ours.mean[...], np.zeros(8))
    ours.eval()
    flax_norm.eval()
    np.testing.assert_array_equal(ours(x), flax_norm(x))

    def refuse(self, key, value):
        raise AssertionError("in-place update of a BatchStat")

    monkeypatch.setattr(nnx.BatchStat, "__setitem__", refuse)
    ours.train()
    flax_norm.train()
    train_pass = nnx.jit(lambda norm, x: norm(x))
    train_pass(ours, x)
    with pytest.raises(AssertionError, match="in-place update"):
        train_pass(flax_norm, x)
