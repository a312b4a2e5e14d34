"""The Flax models compute their references' functions: same weights, same clip, same logits.

References: torchvision's models, and for the seeds' models torchvision lacks (C3D, Hara et al.'s
3D ResNets, pytorch-i3d's I3D) PyTorch modules written below from the seeds' code. A randomly
initialised reference (BatchNorm affine parameters and running statistics randomised too, so that
a mix-up of BN tensors shows; classifier scaled to O(1) logits) is converted with
`vssl_jax.tools.import_torch.convert`, and both run in eval mode.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vssl_jax import models
from vssl_jax.tools import import_torch

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

NUM_CLASSES = 5


def randomised(model):
    generator = torch.Generator().manual_seed(0)

    def uniform(tensor, low, high):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                # Scales below 1 keep ResNet-50's 16 residual additions from growing the
                # activations into the thousands, where float32 rounding alone exceeds 1e-4.
                uniform(module.weight, 0.4, 0.9)
                uniform(module.bias, -0.2, 0.2)
                uniform(module.running_mean, -0.2, 0.2)
                uniform(module.running_var, 0.5, 1.5)
        classifier = [
            m for m in model.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv3d)
        ]
        weight = classifier[-1].weight
        uniform(weight, -3 / weight[0].numel() ** 0.5, 3 / weight[0].numel() ** 0.5)
        uniform(classifier[-1].bias, -0.5, 0.5)
    return model.eval()


def eval_logits(model, clip):
    """Eval-mode logits, with the weights as jit arguments (not constants to fold)."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=False))(state, clip)


def frames_of(image_model, time):
    """torch: the 2D model on every frame, logits averaged over time (TSN's consensus)."""

    def forward(clip):  # [batch, 3, time, height, width]
        batch, channels, _, height, width = clip.shape
        frames = clip.transpose(1, 2).reshape(batch * time, channels, height, width)
        return image_model(frames).reshape(batch, time, -1).mean(dim=1)

    return forward


def s3d_for_small_clips():
    """torchvision's S3D with its 2x7x7 head pool clipped to the 3x2x2 feature map of a
    24x64x64 clip, which is the window our S3D uses there (at 224 px both use 2x7x7)."""
    model = torchvision.models.video.s3d(num_classes=NUM_CLASSES)
    model.avgpool = torch.nn.AvgPool3d((2, 2, 2), stride=1)
    return model


CASES = {  # arch: (torch model factory, clip [batch, time, height, width, 3], torch forward)
    "r3d_18": (lambda: torchvision.models.video.r3d_18(num_classes=NUM_CLASSES), (2, 8, 32, 32)),
    "mc3_18": (lambda: torchvision.models.video.mc3_18(num_classes=NUM_CLASSES), (2, 8, 32, 32)),
    "r2plus1d_18": (
        lambda: torchvision.models.video.r2plus1d_18(num_classes=NUM_CLASSES),
        (2, 8, 32, 32),
    ),
    "tsn_resnet18": (lambda: torchvision.models.resnet18(num_classes=NUM_CLASSES), (2, 3, 32, 32)),
    "tsn_resnet50": (lambda: torchvision.models.resnet50(num_classes=NUM_CLASSES), (2, 2, 64, 64)),
    "s3d": (s3d_for_small_clips, (2, 24, 64, 64)),
}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_logits_match_torchvision(arch):
    make_torch_model, shape = CASES[arch]
    torch.manual_seed(0)
    reference = randomised(make_torch_model())
    state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
    # Shapes only: every array comes from torch (`convert` returns the paths it left alone).
    model = nnx.eval_shape(lambda: models.get(arch)(NUM_CLASSES, rngs=nnx.Rngs(params=1)))
    assert import_torch.convert(model, arch, state_dict) == []

    clip = np.random.default_rng(0).standard_normal((*shape, 3)).astype(np.float32)
    forward = frames_of(reference, shape[1]) if arch.startswith("tsn_") else reference
    with torch.no_grad():
        want = forward(torch.from_numpy(clip).permute(0, 4, 1, 2, 3)).numpy()
    got = np.asarray(eval_logits(model, jnp.asarray(clip)))
    assert got.dtype == np.float32 and got.shape == want.shape == (shape[0], NUM_CLASSES)
    assert np.abs(want).max() > 0.5  # logits of a useful size, not ~0 on both sides
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- Seeds' models, not in torchvision
# Written here in PyTorch from the seeds' repositories (none is a pip package), with the seeds'
# parameter names, so a mix-up of layers or of torch's and our conventions shows as a mismatch.
# `width` scales channels as our models do (64 as published), to keep the tests fast.


def scaled(channels: int, width: int) -> int:
    return max(1, channels * width // 64)


class TorchC3D(torch.nn.Module):
    """The VTDL seed's C3D (FingerRec/Self-Supervised-Temporal-Discriminative-Representation-
    Learning-for-Video-Action-Recognition, `src/model/c3d.py`, taken from VCOP): eight 3x3x3
    convs with bias, padding 1, each followed by BN and ReLU; max-pools 1x2x2 after conv1 and
    2x2x2 (no padding) after conv2, conv3b and conv4b; pool5 an adaptive average pool to 1;
    `linear` on the 512-d feature."""

    LAYERS = (("1", 64), ("2", 128), ("3a", 256), ("3b", 256))
    LAYERS += (("4a", 512), ("4b", 512), ("5a", 512), ("5b", 512))

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        nn = torch.nn
        cin = 3
        for name, channels in self.LAYERS:
            cout = scaled(channels, width)
            setattr(self, f"conv{name}", nn.Conv3d(cin, cout, 3, padding=1))
            setattr(self, f"bn{name}", nn.BatchNorm3d(cout))
            cin = cout
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        for name, _ in self.LAYERS:
            x = torch.relu(getattr(self, f"bn{name}")(getattr(self, f"conv{name}")(x)))
            if name == "1":
                x = torch.nn.functional.max_pool3d(x, (1, 2, 2), (1, 2, 2))
            elif name in ("2", "3b", "4b"):
                x = torch.nn.functional.max_pool3d(x, 2, 2)
        return self.linear(torch.nn.functional.adaptive_avg_pool3d(x, 1).flatten(1))


class TorchHaraBlock(torch.nn.Module):
    """kenshohara/3D-ResNets-PyTorch `models/resnet.py` BasicBlock (two 3x3x3) or Bottleneck
    (1x1x1, 3x3x3 strided, 1x1x1 x4), bias-free convs with BN; shortcut type B (1x1x1 conv +
    BN where the shape changes)."""

    def __init__(self, cin: int, planes: int, stride: int, bottleneck: bool):
        super().__init__()
        nn = torch.nn
        cout = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1 = nn.Conv3d(cin, planes, 1, bias=False)
            self.conv2 = nn.Conv3d(planes, planes, 3, stride, 1, bias=False)
            self.conv3 = nn.Conv3d(planes, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm3d(cout)
        else:
            self.conv1 = nn.Conv3d(cin, planes, 3, stride, 1, bias=False)
            self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout)
            )
        self.bottleneck = bottleneck

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            out = self.bn3(self.conv3(torch.relu(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class TorchHaraResNet(torch.nn.Module):
    """Hara et al.'s ResNet (same file): conv1 7x7x7 stride (1, 2, 2) padding 3, BN, ReLU,
    max-pool 3x3x3 stride 2 padding 1, four stages (stride 2 from the second on, in time too),
    global average pool, `fc`."""

    def __init__(self, layers, bottleneck: bool, num_classes: int, width: int):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv3d(3, width, 7, (1, 2, 2), 3, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        cin = width
        for stage, num_blocks in enumerate(layers):
            blocks = []
            for i in range(num_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(TorchHaraBlock(cin, width * 2**stage, stride, bottleneck))
                cin = width * 2**stage * (4 if bottleneck else 1)
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = torch.nn.functional.max_pool3d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(x.mean(dim=(2, 3, 4)))


def tf_same_pads(sizes, kernel, stride) -> list[int]:
    """pytorch-i3d's 'SAME' padding for F.pad: the odd pixel goes at the end of each axis."""
    pads = []
    for size, k, s in zip(sizes, kernel, stride, strict=True):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads = [total // 2, total - total // 2] + pads  # F.pad lists the last axis first
    return pads


class TorchUnit3D(torch.nn.Module):
    """pytorch-i3d's Unit3D: 'SAME' zero padding from the input size, bias-free conv, BN (eps
    1e-3), ReLU; the logits unit: conv with bias, no BN, no activation."""

    def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), logits=False):
        super().__init__()
        self.kernel, self.stride, self.logits = kernel, stride, logits
        self.conv3d = torch.nn.Conv3d(cin, cout, kernel, stride, bias=logits)
        if not logits:
            self.bn = torch.nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x):
        x = torch.nn.functional.pad(x, tf_same_pads(x.shape[2:], self.kernel, self.stride))
        x = self.conv3d(x)
        return x if self.logits else torch.relu(self.bn(x))


def tf_same_max_pool(x, kernel, stride):
    """pytorch-i3d's MaxPool3dSamePadding: zero 'SAME' padding, then max-pool."""
    x = torch.nn.functional.pad(x, tf_same_pads(x.shape[2:], kernel, stride))
    return torch.nn.functional.max_pool3d(x, kernel, stride)


class TorchInceptionModule(torch.nn.Module):
    def __init__(self, cin, channels):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = channels
        self.b0 = TorchUnit3D(cin, c0)
        self.b1a = TorchUnit3D(cin, c1a)
        self.b1b = TorchUnit3D(c1a, c1b, (3, 3, 3))
        self.b2a = TorchUnit3D(cin, c2a)
        self.b2b = TorchUnit3D(c2a, c2b, (3, 3, 3))
        self.b3b = TorchUnit3D(cin, c3b)

    def forward(self, x):
        pooled = tf_same_max_pool(x, (3, 3, 3), (1, 1, 1))
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(pooled)]
        return torch.cat(branches, dim=1)


class TorchI3D(torch.nn.Module):
    """piergiaj/pytorch-i3d's InceptionI3d (`pytorch_i3d.py`), its endpoint names included:
    Conv3d_1a_7x7 (stride 2), MaxPool3d_2a_3x3 (1x3x3 /1,2,2), Conv3d_2b_1x1, Conv3d_2c_3x3,
    MaxPool3d_3a_3x3, Mixed_3b-3c, MaxPool3d_4a_3x3 (3x3x3 /2), Mixed_4b-4f, MaxPool3d_5a_2x2,
    Mixed_5b-5c, then average pool 2x7x7 stride 1, dropout, the 1x1x1 `logits` unit. It returns
    logits per remaining time step; the mean over them is taken here, as our model does. The
    pool window is clipped to the feature map of a small clip (the reference would reject it)."""

    MIXED = {
        "3b": (64, 96, 128, 16, 32, 32),
        "3c": (128, 128, 192, 32, 96, 64),
        "4b": (192, 96, 208, 16, 48, 64),
        "4c": (160, 112, 224, 24, 64, 64),
        "4d": (128, 128, 256, 24, 64, 64),
        "4e": (112, 144, 288, 32, 64, 64),
        "4f": (256, 160, 320, 32, 128, 128),
        "5b": (256, 160, 320, 32, 128, 128),
        "5c": (384, 192, 384, 48, 128, 128),
    }

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        c64, c192 = scaled(64, width), scaled(192, width)
        self.Conv3d_1a_7x7 = TorchUnit3D(3, c64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = TorchUnit3D(c64, c64)
        self.Conv3d_2c_3x3 = TorchUnit3D(c64, c192, (3, 3, 3))
        cin = c192
        for name, channels in self.MIXED.items():
            channels = [scaled(c, width) for c in channels]
            setattr(self, f"Mixed_{name}", TorchInceptionModule(cin, channels))
            cin = channels[0] + channels[2] + channels[4] + channels[5]
        self.logits = TorchUnit3D(cin, num_classes, logits=True)

    def forward(self, x):
        x = tf_same_max_pool(self.Conv3d_1a_7x7(x), (1, 3, 3), (1, 2, 2))
        x = tf_same_max_pool(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)), (1, 3, 3), (1, 2, 2))
        for name in self.MIXED:
            if name == "4b":
                x = tf_same_max_pool(x, (3, 3, 3), (2, 2, 2))
            elif name == "5b":
                x = tf_same_max_pool(x, (2, 2, 2), (2, 2, 2))
            x = getattr(self, f"Mixed_{name}")(x)
        window = [min(w, s) for w, s in zip((2, 7, 7), x.shape[2:], strict=True)]
        x = torch.nn.functional.avg_pool3d(x, window, stride=1)
        return self.logits(x).flatten(2).mean(dim=2)  # [batch, classes, time] -> time mean


SEED_CASES = {  # arch: (torch model, our width, clip [batch, time, height, width], calibrate BN)
    "c3d": (lambda: TorchC3D(NUM_CLASSES, width=8), 8, (2, 8, 32, 32), True),
    "resnet3d_18": (
        lambda: TorchHaraResNet((2, 2, 2, 2), False, NUM_CLASSES, width=8),
        8,
        (2, 8, 32, 32),
        False,
    ),
    "resnet3d_50": (
        lambda: TorchHaraResNet((3, 4, 6, 3), True, NUM_CLASSES, width=8),
        8,
        (2, 8, 32, 32),
        False,
    ),
    # Sizes that are not multiples of the strides exercise the odd 'SAME' pads: 20x60x60 ends
    # at Mixed_5c 3x2x2, so the clipped 2x2x2 pool leaves two time steps to average.
    "i3d": (lambda: TorchI3D(NUM_CLASSES, width=16), 16, (2, 20, 60, 60), True),
}


def calibrated(model, shape):
    """BN running statistics set to those of 8 random clips of `shape` (then eval mode), so that
    every layer's output has O(1) spread and the logits depend on each layer's exact function.

    For the plain (non-residual) stacks, C3D and I3D: with `randomised`'s uninformed statistics
    their activations fade to a constant, and moving one of C3D's pooling layers changed its
    logits by less than 1e-4. Residual nets keep `randomised`'s statistics: their identity paths
    keep the signal, and calibrated, the small batch variances of ResNet-50's last stage
    amplify float32 rounding past 1e-4 (torch's own float32 result then differs from its
    float64 one by 1e-3)."""
    clips = np.random.default_rng(1).standard_normal((8, 3, *shape[1:])).astype(np.float32)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0  # running statistics := this batch's
    with torch.no_grad():
        model.train()(torch.from_numpy(clips))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return model.eval()


@pytest.mark.parametrize("arch", sorted(SEED_CASES))
def test_logits_match_the_seeds_reference_code(arch):
    make_torch_model, width, shape, calibrate = SEED_CASES[arch]
    torch.manual_seed(0)
    clip = np.random.default_rng(0).standard_normal((*shape, 3)).astype(np.float32)
    torch_clip = torch.from_numpy(clip).permute(0, 4, 1, 2, 3)
    reference = randomised(make_torch_model())
    if calibrate:
        reference = calibrated(reference, shape)
    state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
    model = nnx.eval_shape(
        lambda: models.get(arch)(NUM_CLASSES, width=width, rngs=nnx.Rngs(params=1))
    )
    assert import_torch.convert(model, arch, state_dict) == []

    # The reference runs in float64 (the same float32 weights, widened): the bound then holds
    # our float32 rounding only, not torch's too (for I3D torch's float32 logits are 6e-5 off
    # its float64 ones, ours 2e-5).
    with torch.no_grad():
        want = reference.double()(torch_clip.double()).numpy()
    got = np.asarray(eval_logits(model, jnp.asarray(clip)))
    assert got.shape == want.shape == (shape[0], NUM_CLASSES)
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
