"""List the registered models, or summarise one: parameters and GFLOPs at its reference input.

    python -m vssl_jax.models --list
    python -m vssl_jax.models --summary r3d_18 [--num-classes 400] [--frames 16 --size 112]

GFLOPs follow torchvision's model tables: multiply-accumulates of the convolutions and matrix
products (linear layers, attention, LSTM gates) of one clip's forward pass, in units of 1e9, so
one "FLOP" is one multiply-add; BatchNorm, activations and pooling are not counted. Parameters
count trainable arrays (BatchNorm scale and bias included, running statistics not), as torchvision
does. Counted by tracing the model (`jax.make_jaxpr`) without running it.
"""

from __future__ import annotations

import argparse
import math
import sys

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax import models

# Reference clip (frames, pixels) of each model, as its source evaluates it: torchvision's video
# ResNets 16x112x112, S3D 16x224x224 (torchvision's table), I3D 64x224x224 (Carreira &
# Zisserman), the ResNet-I3D seed 32x224x224, 2D frame models 8 frames at 224.
REFERENCE_INPUTS = {
    "i3d": (64, 224),
    "s3d": (16, 224),
    "s3d_g": (16, 224),
    "i3d_resnet50": (32, 224),
    "i3d_resnet101": (32, 224),
    "tsn_resnet18": (8, 224),
    "tsn_resnet50": (8, 224),
    "per_frame_resnet18": (8, 224),
    "cnn_lstm_resnet18": (8, 224),
    "transformer_resnet18": (8, 224),
    "per_frame_vit": (8, 224),
    "tsn_vit": (8, 224),
    "cnn_lstm_vit": (8, 224),
    "transformer_vit": (8, 224),
    "vivit_factorised": (16, 224),
    "vivit_joint": (16, 224),
}
DEFAULT_INPUT = (16, 112)


def reference_input(name: str) -> tuple[int, int]:
    return REFERENCE_INPUTS.get(name, DEFAULT_INPUT)


def _macs(jaxpr) -> int:
    """Multiply-accumulates of the convolutions and dot products in a jaxpr, sub-jaxprs included."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            out = eqn.outvars[0].aval.shape
            kernel = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) axes
            taps = math.prod(kernel[a] for a in spec[2:])
            total += math.prod(out) * taps * kernel[spec[1]]
        elif eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[a] for a in contract)
        repeat = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += repeat * _macs(inner)
    return total


def summary(
    name: str, *, num_classes: int = 400, frames: int | None = None, size: int | None = None
):
    """(parameter count, GMACs of one clip) of model `name` at its reference input."""
    ref_frames, ref_size = reference_input(name)
    frames, size = frames or ref_frames, size or ref_size
    abstract = nnx.eval_shape(lambda: models.get(name)(num_classes, rngs=nnx.Rngs(params=0)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(params))

    def forward(params, rest, video):
        return nnx.merge(graphdef, params, rest)(video, train=False)

    video = jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.float32)
    jaxpr = jax.make_jaxpr(forward)(params, rest, video)
    return num_params, _macs(jaxpr.jaxpr) / 1e9, (frames, size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vssl_jax.models", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--list", action="store_true", help="print the registered model names")
    group.add_argument("--summary", metavar="NAME", help="parameters and GFLOPs of one model")
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--frames", type=int, help="clip length (default: the reference input)")
    parser.add_argument("--size", type=int, help="frame height = width (default: the reference)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(models.names()))
        return 0
    if args.summary not in models.names():
        print(f"error: unknown model '{args.summary}'; see --list", file=sys.stderr)
        return 2
    num_params, gflops, (frames, size) = summary(
        args.summary, num_classes=args.num_classes, frames=args.frames, size=args.size
    )
    print(f"model        {args.summary}")
    print(f"input        1 x {frames} x {size} x {size} x 3, {args.num_classes} classes")
    print(f"parameters   {num_params:,} ({num_params / 1e6:.2f} M)")
    print(f"GFLOPs       {gflops:.2f} (multiply-adds, as torchvision counts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
