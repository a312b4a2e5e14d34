"""Non-local block, embedded-Gaussian version (Wang, Girshick, Gupta, He 2018).

z = x + BN(W y), y_i = sum_j softmax_j(theta(x_i) . phi(x_j)) g(x_j), with theta, phi, g and W
1x1x1 convolutions to and from `channels // 2`. As in the paper (and AlexHex7/Non-local_pytorch),
phi and g are max-pooled 1x2x2 to cut the cost four-fold, and the BN after W starts at zero so a
freshly inserted block is the identity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.layers import Conv3D, batch_norm, conv_init, max_pool


class NonLocal3D(nnx.Module):
    def __init__(self, channels: int, *, subsample: bool = True, dtype, rngs: nnx.Rngs):
        inner = max(channels // 2, 1)

        def conv(cin, cout):
            return Conv3D(
                cin, cout, (1, 1, 1), use_bias=True, kernel_init=conv_init, dtype=dtype, rngs=rngs
            )

        self.theta = conv(channels, inner)
        self.phi = conv(channels, inner)
        self.g = conv(channels, inner)
        self.out = conv(inner, channels)
        self.out_bn = batch_norm(channels, zero_init=True, dtype=dtype, rngs=rngs)
        self.subsample = subsample

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        batch, time, height, width, _ = x.shape
        theta = self.theta(x).reshape(batch, time * height * width, -1)  # [B, N, C/2]
        phi, g = self.phi(x), self.g(x)
        if self.subsample and height > 1 and width > 1:
            phi = max_pool(phi, (1, 2, 2), (1, 2, 2), ((0, 0),) * 3)
            g = max_pool(g, (1, 2, 2), (1, 2, 2), ((0, 0),) * 3)
        phi = phi.reshape(batch, -1, phi.shape[-1])  # [B, M, C/2]
        g = g.reshape(batch, -1, g.shape[-1])  # [B, M, C/2]
        affinity = jax.nn.softmax(jnp.einsum("bnc,bmc->bnm", theta, phi), axis=-1)
        y = jnp.einsum("bnm,bmc->bnc", affinity, g).reshape(batch, time, height, width, -1)
        return x + self.out_bn(self.out(y), use_running_average=not train)
