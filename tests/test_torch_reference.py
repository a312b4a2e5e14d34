"""The Flax models compute torchvision's functions: same weights, same clip, same logits.

A randomly initialised torchvision model (BatchNorm affine parameters and running statistics
randomised too, so that a mix-up of BN tensors shows; classifier scaled to O(1) logits) is
converted with `vssl_jax.tools.import_torch.convert`, and both run in eval mode, float32.
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
