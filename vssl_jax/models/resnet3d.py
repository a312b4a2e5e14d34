"""3D ResNets: torchvision's video ResNets, Hara et al.'s 3D-ResNets and the ResNet-I3D seed.

Channels-last: input `[batch, time, height, width, 3]`. All share one skeleton (stem, four
stages of residual blocks, global average pool, dropout + linear head) and differ in the stem,
the block and the convolutions inside it:

| name | layout | stem | blocks |
|---|---|---|---|
| `r3d_18` | torchvision `video.r3d_18` (Tran et al. 2018) | 3x7x7 /1,2,2 | basic, 3x3x3 |
| `mc3_18` | torchvision `video.mc3_18` | 3x7x7 /1,2,2 | basic, 3x3x3 in stage 1, 1x3x3 after |
| `r2plus1d_18`, `_34` | torchvision `video.r2plus1d_18` | (2+1)D 1x7x7 + 3x1x1 | basic, (2+1)D |
| `resnet3d_18/34/50/101` | Hara et al. 2018 (`kenshohara/3D-ResNets-PyTorch`) | 7x7x7 /1,2,2 + max-pool | basic / bottleneck, 3x3x3 |
| `i3d_resnet50`, `_101` | ResNet-I3D of the `video_classification_pytorch` seed | 5x7x7 /2 + max-pool | bottleneck, inflated every other block |

Stages 2-4 halve height and width (and time, except in MC3's 2D stages and ResNet-I3D, which
pools time after stage 2 instead). Shortcuts are 1x1x1 conv + BN where the shape changes (type B).

R(2+1)D's mid-channel rule (Tran et al. 2018): a 3x3x3 conv N_in -> N_out becomes 1x3x3 N_in -> M
and 3x1x1 M -> N_out with M = floor(27 N_in N_out / (9 N_in + 3 N_out)), so the parameter count
matches the 3D conv. As in torchvision, a block computes M once from its input and output widths
and uses it for both of its convolutions.

ResNet-I3D inflate modes, as that seed's `i3dResnet.py` defines them (the issue's one-line summary
swaps modes 1 and 2; the code is followed here): 0 = no temporal kernels in the blocks (1x1x1,
1x3x3, 1x1x1); 1 = the 3x3 conv becomes 3x3x3; 2 = the two 1x1 convs become 3x1x1. A mode applies
to every other block (the 1st, 3rd, ... counting across stages); the rest use mode 0. Its convs pad
like TensorFlow's 'SAME', as the seed's `Unit3D` does.

`non_local=True` adds embedded-Gaussian non-local blocks (Wang et al. 2018) after every other
residual block of res3 and res4: 2 + 3 = 5 blocks, the paper's configuration for ResNet-50.
`width` scales every stage's channels (64 as published; tiny values for CPU tests).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models.heads import ClassifierHead
from vssl_jax.models.layers import Conv3D, batch_norm, conv_init, max_pool
from vssl_jax.models.non_local import NonLocal3D
from vssl_jax.models.registry import register

# Stage index -> block indices followed by a non-local block (res3: 2 blocks, res4: 3 blocks).
_NON_LOCAL_AT = {1: (1, 3), 2: (1, 3, 5)}
# Bottleneck kernels (conv1, conv2, conv3) of the ResNet-I3D seed's inflate modes.
_INFLATE_KERNELS = {
    0: ((1, 1, 1), (1, 3, 3), (1, 1, 1)),
    1: ((1, 1, 1), (3, 3, 3), (1, 1, 1)),
    2: ((3, 1, 1), (1, 3, 3), (3, 1, 1)),
}
_FULL_3D_KERNELS = ((1, 1, 1), (3, 3, 3), (1, 1, 1))


def _conv(cin, cout, kernel, stride, *, padding=None, dtype, rngs) -> Conv3D:
    return Conv3D(
        cin, cout, kernel, stride, padding=padding, kernel_init=conv_init, dtype=dtype, rngs=rngs
    )


def mid_channels(cin: int, cout: int) -> int:
    """R(2+1)D's M: the (2+1)D pair has as many parameters as the 3x3x3 conv it replaces."""
    return (cin * cout * 3 * 3 * 3) // (cin * 3 * 3 + 3 * cout)


class Conv2Plus1D(nnx.Module):
    """1xkxk spatial conv -> BN -> ReLU -> 3x1x1 temporal conv (no BN after: the caller has it)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        mid: int,
        *,
        spatial_kernel: int = 3,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        dtype,
        rngs: nnx.Rngs,
    ):
        k, s = spatial_kernel, spatial_stride
        self.spatial = _conv(cin, mid, (1, k, k), (1, s, s), dtype=dtype, rngs=rngs)
        self.mid_bn = batch_norm(mid, dtype=dtype, rngs=rngs)
        self.temporal = _conv(mid, cout, (3, 1, 1), (temporal_stride, 1, 1), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = nnx.relu(self.mid_bn(self.spatial(x), use_running_average=not train))
        return self.temporal(x)


def _apply(conv: Conv3D | Conv2Plus1D, x: jax.Array, train: bool) -> jax.Array:
    return conv(x, train=train) if isinstance(conv, Conv2Plus1D) else conv(x)


class BasicBlock3D(nnx.Module):
    """Two 3x3 convs (3D, 1x3x3 or (2+1)D by `conv`) with BN, plus the shortcut."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        *,
        conv: str = "3d",
        non_local: bool = False,
        dtype,
        rngs: nnx.Rngs,
    ):
        s = stride
        if conv == "3d":
            self.conv1 = _conv(cin, cout, (3, 3, 3), (s, s, s), dtype=dtype, rngs=rngs)
            self.conv2 = _conv(cout, cout, (3, 3, 3), (1, 1, 1), dtype=dtype, rngs=rngs)
            shortcut_stride = (s, s, s)
        elif conv == "2d":
            self.conv1 = _conv(cin, cout, (1, 3, 3), (1, s, s), dtype=dtype, rngs=rngs)
            self.conv2 = _conv(cout, cout, (1, 3, 3), (1, 1, 1), dtype=dtype, rngs=rngs)
            shortcut_stride = (1, s, s)
        elif conv == "2plus1d":
            mid = mid_channels(cin, cout)
            self.conv1 = Conv2Plus1D(
                cin, cout, mid, spatial_stride=s, temporal_stride=s, dtype=dtype, rngs=rngs
            )
            self.conv2 = Conv2Plus1D(cout, cout, mid, dtype=dtype, rngs=rngs)
            shortcut_stride = (s, s, s)
        else:
            raise ValueError(f"unknown block convolution '{conv}' (3d, 2d, 2plus1d)")
        self.bn1 = batch_norm(cout, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(cout, dtype=dtype, rngs=rngs)
        if stride != 1 or cin != cout:
            self.shortcut_conv = _conv(
                cin, cout, (1, 1, 1), shortcut_stride, dtype=dtype, rngs=rngs
            )
            self.shortcut_bn = batch_norm(cout, dtype=dtype, rngs=rngs)
        else:
            self.shortcut_conv = self.shortcut_bn = None
        self.non_local = NonLocal3D(cout, dtype=dtype, rngs=rngs) if non_local else None

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        frozen = not train
        y = nnx.relu(self.bn1(_apply(self.conv1, x, train), use_running_average=frozen))
        y = self.bn2(_apply(self.conv2, y, train), use_running_average=frozen)
        if self.shortcut_conv is not None:
            x = self.shortcut_bn(self.shortcut_conv(x), use_running_average=frozen)
        y = nnx.relu(x + y)
        return y if self.non_local is None else self.non_local(y, train=train)


class Bottleneck3D(nnx.Module):
    """1x1x1 -> 3x3x3 (strided) -> 1x1x1 x4, with BN; kernels and padding set by the layout."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int,
        *,
        kernels=_FULL_3D_KERNELS,
        temporal_stride: bool = True,
        padding: str | None = None,
        non_local: bool = False,
        dtype,
        rngs: nnx.Rngs,
    ):
        cout = planes * self.expansion
        strides = (stride if temporal_stride else 1, stride, stride)
        self.conv1 = _conv(
            cin, planes, kernels[0], (1, 1, 1), padding=padding, dtype=dtype, rngs=rngs
        )
        self.bn1 = batch_norm(planes, dtype=dtype, rngs=rngs)
        self.conv2 = _conv(
            planes, planes, kernels[1], strides, padding=padding, dtype=dtype, rngs=rngs
        )
        self.bn2 = batch_norm(planes, dtype=dtype, rngs=rngs)
        self.conv3 = _conv(
            planes, cout, kernels[2], (1, 1, 1), padding=padding, dtype=dtype, rngs=rngs
        )
        self.bn3 = batch_norm(cout, dtype=dtype, rngs=rngs)
        if stride != 1 or cin != cout:
            self.shortcut_conv = _conv(cin, cout, (1, 1, 1), strides, dtype=dtype, rngs=rngs)
            self.shortcut_bn = batch_norm(cout, dtype=dtype, rngs=rngs)
        else:
            self.shortcut_conv = self.shortcut_bn = None
        self.non_local = NonLocal3D(cout, dtype=dtype, rngs=rngs) if non_local else None

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        frozen = not train
        y = nnx.relu(self.bn1(self.conv1(x), use_running_average=frozen))
        y = nnx.relu(self.bn2(self.conv2(y), use_running_average=frozen))
        y = self.bn3(self.conv3(y), use_running_average=frozen)
        if self.shortcut_conv is not None:
            x = self.shortcut_bn(self.shortcut_conv(x), use_running_average=frozen)
        y = nnx.relu(x + y)
        return y if self.non_local is None else self.non_local(y, train=train)


# Stem presets: (conv kernel, conv strides, conv padding, max-pool after it or None).
_POOL_3x3x3 = ((3, 3, 3), (2, 2, 2), ((1, 1),) * 3)
_STEMS = {
    "r3d": ((3, 7, 7), (1, 2, 2), None, None),
    "hara": ((7, 7, 7), (1, 2, 2), None, _POOL_3x3x3),
    "i3d": ((5, 7, 7), (2, 2, 2), "SAME", _POOL_3x3x3),
}


class ResNet3D(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        stage_sizes: tuple[int, ...],
        block: str = "basic",
        stem: str = "r3d",
        convs: tuple[str, ...] = ("3d", "3d", "3d", "3d"),
        inflate: int | None = None,
        non_local: bool = False,
        width: int = 64,
        dropout: float = 0.0,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        """`inflate` (0, 1, 2) selects the ResNet-I3D seed's layout; None is fully 3D."""
        dtype = jnp.dtype(dtype)
        if stem == "r2plus1d":
            # torchvision's R(2+1)D stem: 1x7x7 to 45 channels, then 3x1x1 to 64.
            self.stem_conv = Conv2Plus1D(
                3,
                width,
                45 * width // 64,
                spatial_kernel=7,
                spatial_stride=2,
                dtype=dtype,
                rngs=rngs,
            )
            self.stem_pool = None
        elif stem in _STEMS:
            kernel, strides, padding, self.stem_pool = _STEMS[stem]
            self.stem_conv = _conv(
                3, width, kernel, strides, padding=padding, dtype=dtype, rngs=rngs
            )
        else:
            raise ValueError(f"unknown ResNet3D stem '{stem}' (r3d, r2plus1d, hara, i3d)")
        self.stem_bn = batch_norm(width, dtype=dtype, rngs=rngs)
        if inflate is not None and inflate not in _INFLATE_KERNELS:
            raise ValueError(f"inflate must be 0, 1 or 2, got {inflate}")
        if inflate is not None and block != "bottleneck":
            raise ValueError("inflate modes are defined for bottleneck blocks only")

        blocks = []
        cin = width
        for stage, num_blocks in enumerate(stage_sizes):
            planes = width * 2**stage
            for i in range(num_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                with_non_local = non_local and i in _NON_LOCAL_AT.get(stage, ())
                if block == "basic":
                    blocks.append(
                        BasicBlock3D(
                            cin,
                            planes,
                            stride,
                            conv=convs[stage],
                            non_local=with_non_local,
                            dtype=dtype,
                            rngs=rngs,
                        )
                    )
                    cin = planes
                elif block == "bottleneck":
                    if inflate is None:
                        kernels = _FULL_3D_KERNELS
                    else:
                        kernels = _INFLATE_KERNELS[inflate if len(blocks) % 2 == 0 else 0]
                    blocks.append(
                        Bottleneck3D(
                            cin,
                            planes,
                            stride,
                            kernels=kernels,
                            temporal_stride=inflate is None,
                            padding=None if inflate is None else "SAME",
                            non_local=with_non_local,
                            dtype=dtype,
                            rngs=rngs,
                        )
                    )
                    cin = planes * Bottleneck3D.expansion
                else:
                    raise ValueError(f"unknown ResNet3D block '{block}' (basic, bottleneck)")
        self.blocks = nnx.List(blocks)
        self.stage_sizes = tuple(stage_sizes)
        # ResNet-I3D pools time (3x1x1, stride 2) after res3 instead of striding it in blocks.
        self.temporal_pool_after = 1 if inflate is not None else None
        self.feature_dim = cin
        self.head = ClassifierHead(cin, num_classes, dropout=dropout, dtype=dtype, rngs=rngs)

    def feature_map(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, time, height, width, 3] -> last stage's output [batch, T', H', W', feature_dim]."""
        x = _apply(self.stem_conv, video, train)
        x = nnx.relu(self.stem_bn(x, use_running_average=not train))
        if self.stem_pool is not None:
            x = max_pool(x, *self.stem_pool)
        index = 0
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in self.blocks[index : index + num_blocks]:
                x = block(x, train=train)
            index += num_blocks
            if stage == self.temporal_pool_after:
                x = max_pool(x, (3, 1, 1), (2, 1, 1), ((1, 1), (0, 0), (0, 0)))
        return x

    def features(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, time, height, width, 3] -> pooled features [batch, feature_dim]."""
        return self.feature_map(video, train=train).mean(axis=(1, 2, 3))

    def __call__(self, video: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.head(self.features(video, train=train), train=train, rngs=rngs)


@register("r3d_18")
def r3d_18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    return ResNet3D(num_classes, stage_sizes=(2, 2, 2, 2), rngs=rngs, **kwargs)


@register("mc3_18")
def mc3_18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    convs = ("3d", "2d", "2d", "2d")
    return ResNet3D(num_classes, stage_sizes=(2, 2, 2, 2), convs=convs, rngs=rngs, **kwargs)


def _r2plus1d(stage_sizes, num_classes, rngs, kwargs) -> ResNet3D:
    return ResNet3D(
        num_classes,
        stage_sizes=stage_sizes,
        stem="r2plus1d",
        convs=("2plus1d",) * 4,
        rngs=rngs,
        **kwargs,
    )


@register("r2plus1d_18")
def r2plus1d_18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    return _r2plus1d((2, 2, 2, 2), num_classes, rngs, kwargs)


@register("r2plus1d_34")
def r2plus1d_34(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    return _r2plus1d((3, 4, 6, 3), num_classes, rngs, kwargs)


def _hara(stage_sizes, block, num_classes, rngs, kwargs) -> ResNet3D:
    return ResNet3D(
        num_classes, stage_sizes=stage_sizes, block=block, stem="hara", rngs=rngs, **kwargs
    )


@register("resnet3d_18")
def resnet3d_18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    return _hara((2, 2, 2, 2), "basic", num_classes, rngs, kwargs)


@register("resnet3d_34")
def resnet3d_34(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    return _hara((3, 4, 6, 3), "basic", num_classes, rngs, kwargs)


@register("resnet3d_50")
def resnet3d_50(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    return _hara((3, 4, 6, 3), "bottleneck", num_classes, rngs, kwargs)


@register("resnet3d_101")
def resnet3d_101(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    return _hara((3, 4, 23, 3), "bottleneck", num_classes, rngs, kwargs)


def _i3d_resnet(stage_sizes, num_classes, rngs, kwargs) -> ResNet3D:
    kwargs.setdefault("inflate", 1)
    return ResNet3D(
        num_classes,
        stage_sizes=stage_sizes,
        block="bottleneck",
        stem="i3d",
        rngs=rngs,
        **kwargs,
    )


@register("i3d_resnet50")
def i3d_resnet50(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    return _i3d_resnet((3, 4, 6, 3), num_classes, rngs, kwargs)


@register("i3d_resnet101")
def i3d_resnet101(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet3D:
    return _i3d_resnet((3, 4, 23, 3), num_classes, rngs, kwargs)
