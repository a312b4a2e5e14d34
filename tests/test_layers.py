import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssl_jax.models import layers

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
