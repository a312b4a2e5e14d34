"""`python -m vssl_jax.tools.import_torch`: PyTorch state dicts -> Orbax pretrained checkpoints,
tensors only. (That the converted weights compute torchvision's logits is
`tests/test_torch_reference.py`'s job; here: the files, the formats, and refusing pickles.)"""

import os

import numpy as np
import pytest
from flax import nnx

from vssl_jax import models
from vssl_jax.models import pretrained
from vssl_jax.tools import import_torch

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def converted_arrays(arch, state_dict, num_classes):
    model = nnx.eval_shape(lambda: models.get(arch)(num_classes, rngs=nnx.Rngs(0)))
    import_torch.convert(model, arch, {k: v.numpy() for k, v in state_dict.items()})
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return pretrained.flat_arrays(params), pretrained.flat_arrays(rest)


@pytest.fixture(scope="module")
def mc3_state_dict():
    """MC3-18: torchvision's smallest video ResNet (11.7M parameters), fast to write twice."""
    torch.manual_seed(0)
    return torchvision.models.video.mc3_18(num_classes=7).state_dict()


def test_command_line_writes_the_converted_weights(mc3_state_dict, tmp_path, capsys):
    checkpoint = tmp_path / "mc3_18.pth"
    torch.save(mc3_state_dict, checkpoint)
    out = tmp_path / "imported"
    argv = ["--arch", "mc3_18", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert import_torch.main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out

    assert import_torch.main(argv) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err

    restored = pretrained.restore(str(out))
    params, model_state = converted_arrays("mc3_18", mc3_state_dict, 7)
    assert restored["params"].keys() == params.keys()
    assert restored["params"]["head.kernel"].shape == (512, 7)  # classes from the checkpoint
    for group, want in (("params", params), ("model_state", model_state)):
        for key, value in want.items():
            np.testing.assert_array_equal(restored[group][key], value, err_msg=key)
    # The torch layout really was transposed, not copied: [O, I, t, h, w] -> [t, h, w, I, O].
    np.testing.assert_array_equal(
        restored["params"]["stem_conv.kernel"],
        mc3_state_dict["stem.0.weight"].numpy().transpose(2, 3, 4, 1, 0),
    )


def test_fine_tuning_loads_everything_but_a_classifier_of_another_size(mc3_state_dict, tmp_path):
    """`pretrained.load_into` (what `config.init_from` uses): a 101-class model takes every
    array of a 7-class checkpoint except the classifier."""
    out = tmp_path / "imported"
    model = nnx.eval_shape(lambda: models.get("mc3_18")(7, rngs=nnx.Rngs(0)))
    import_torch.convert(model, "mc3_18", {k: v.numpy() for k, v in mc3_state_dict.items()})
    pretrained.save(model, str(out))

    target = nnx.eval_shape(lambda: models.get("mc3_18")(101, rngs=nnx.Rngs(0)))
    _, params, rest = nnx.split(target, nnx.Param, ...)
    restored = pretrained.restore(str(out))
    new_params, kept = pretrained.load_into(params, restored["params"])
    new_rest, kept_rest = pretrained.load_into(rest, restored["model_state"])
    assert sorted(kept) == ["head.bias", "head.kernel"] and kept_rest == []
    new_values = {
        ".".join(map(str, path)): v.get_value() for path, v in nnx.to_flat_state(new_params)
    }
    assert new_values["head.kernel"] is target.head.kernel.get_value()  # left as it was
    np.testing.assert_array_equal(
        new_values["blocks.3.conv1.kernel"], restored["params"]["blocks.3.conv1.kernel"]
    )
    np.testing.assert_array_equal(
        pretrained.flat_arrays(new_rest)["stem_bn.var"], restored["model_state"]["stem_bn.var"]
    )


def test_wrapped_state_dicts_and_backbone_only_import(tmp_path, capsys):
    """A {"state_dict": ...} checkpoint with DataParallel's "module." prefix, imported into the
    ResNet-18 backbone of the CNN+LSTM; its LSTM and classifier have no torch counterpart."""
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in resnet.state_dict().items()}}
    checkpoint = tmp_path / "resnet18.pt"
    torch.save(wrapped, checkpoint)
    out = tmp_path / "imported"
    argv = ["--arch", "cnn_lstm_resnet18", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert import_torch.main(argv) == 0
    assert "left as initialised" in capsys.readouterr().out
    restored = pretrained.restore(str(out))["params"]
    np.testing.assert_array_equal(
        restored["backbone.blocks.2.shortcut_conv.kernel"],
        resnet.state_dict()["layer2.0.downsample.0.weight"].numpy().transpose(2, 3, 1, 0),
    )


def test_safetensors_files_are_read_without_torch_load(mc3_state_dict, tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    checkpoint = tmp_path / "mc3_18.safetensors"
    safetensors_numpy.save_file({k: v.numpy() for k, v in mc3_state_dict.items()}, checkpoint)
    loaded = import_torch.load_state_dict(str(checkpoint))
    assert loaded.keys() == mc3_state_dict.keys()
    np.testing.assert_array_equal(loaded["fc.weight"], mc3_state_dict["fc.weight"].numpy())


class Payload:
    """Unpickling this calls os.mkdir(path): harmless, and visible if it ever ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    checkpoint = tmp_path / "model.pth"
    torch.save({"fc.weight": torch.zeros(3, 512), "extra": Payload(str(marker))}, checkpoint)
    out = tmp_path / "imported"
    argv = ["--arch", "r3d_18", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert import_torch.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "refused to load" in error and "(posix.mkdir)" in error
    assert error.count("\n") == 1  # one line for the user
    assert not marker.exists() and not out.exists()


def test_a_checkpoint_of_another_architecture_is_rejected(mc3_state_dict, tmp_path, capsys):
    checkpoint = tmp_path / "mc3_18.pth"
    torch.save(mc3_state_dict, checkpoint)
    out = tmp_path / "imported"
    argv = ["--arch", "r3d_18", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert import_torch.main(argv) == 2
    error = capsys.readouterr().err
    # mc3_18's stages 2-4 are 1x3x3 where r3d_18's are 3x3x3.
    assert "does not match 'r3d_18'" in error
    assert "has shape (1, 3, 3, 64, 128), the model needs (3, 3, 3, 64, 128)" in error
    assert not out.exists()


def test_load_into_places_arrays_like_the_values_they_replace():
    """In training the state is on devices with shardings; loaded arrays must land the same way."""
    import jax
    import jax.numpy as jnp

    layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    state = nnx.state(layer)
    new, kept = pretrained.load_into(
        state, {"kernel": np.ones((3, 2), np.float64), "bias": np.ones((5,), np.float32)}
    )
    assert kept == ["bias"]
    kernel = dict(nnx.to_flat_state(new))[("kernel",)].get_value()
    assert isinstance(kernel, jax.Array) and kernel.dtype == jnp.float32
    assert kernel.sharding == layer.kernel.get_value().sharding
    np.testing.assert_array_equal(kernel, np.ones((3, 2)))
