"""The device mesh and how arrays are laid out on it, all from config data.

`config.mesh` sizes the axes (`data`, `fsdp`; -1 takes the remaining devices). The batch is split
over both axes. Parameters follow `config.sharding_rules`: (regex on the parameter path, tactic)
pairs, first match wins; `replicate` copies the array to every device, `fsdp` splits its largest
dimension that divides evenly over the `fsdp` axis (replicating when none does).
"""

from __future__ import annotations

import math
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp")
BATCH_SPEC = PartitionSpec(AXES)

# FSDP for the transformers built from `vssl_jax.models.transformer` (ViT, ViViT, VideoMAE): the
# blocks' attention (fused qkv, output) and MLP kernels, which hold ~98% of a ViT-B's weights,
# the patch / tubelet embedding kernel and the learned position tables are split over `fsdp`
# (each along its largest dimension that divides); norms, biases, class tokens and classifiers
# stay replicated. A config uses it as `config.sharding_rules = sharding.TRANSFORMER_FSDP`.
TRANSFORMER_FSDP = (
    (r"layers/\d+/attention/(qkv|out)/kernel$", "fsdp"),
    (r"layers/\d+/mlp_(in|out)/kernel$", "fsdp"),
    (r"(^|/)\w*embed(ding)?/kernel$", "fsdp"),
    (r"(^|/)\w*position$", "fsdp"),
    (".*", "replicate"),
)


def make_mesh(mesh_config) -> Mesh:
    sizes = [mesh_config[axis] for axis in AXES]
    num_devices = jax.device_count()
    if sizes.count(-1) > 1:
        raise ValueError("config.mesh: at most one axis may be -1")
    fixed = math.prod(s for s in sizes if s != -1)
    sizes = [num_devices // fixed if s == -1 else s for s in sizes]
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"config.mesh {dict(zip(AXES, sizes, strict=True))} does not fit the {num_devices} devices"
        )
    devices = np.asarray(jax.devices()).reshape(sizes)
    return Mesh(devices, AXES)


def path_string(path) -> str:
    """A key path as 'blocks/0/conv1/kernel' (NNX's trailing `.value` dropped)."""
    parts = []
    for key in path:
        name = getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))
        if name != "value":
            parts.append(str(name))
    return "/".join(parts)


def _spec(shape: tuple[int, ...], tactic: str, fsdp_size: int) -> PartitionSpec:
    if tactic == "replicate" or fsdp_size == 1:
        return PartitionSpec()
    if tactic != "fsdp":
        raise ValueError(f"config.sharding_rules: unknown tactic '{tactic}' (replicate, fsdp)")
    for dim in np.argsort(shape)[::-1]:
        if shape[dim] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return PartitionSpec(*spec)
    return PartitionSpec()


def tree_shardings(tree, mesh: Mesh, rules) -> object:
    """NamedShardings for every array of `tree` (params, optimizer state...) by the rules."""
    compiled = [(re.compile(pattern), tactic) for pattern, tactic in rules]
    fsdp_size = mesh.shape["fsdp"]

    def shard(path, leaf):
        name = path_string(path)
        tactic = next((t for pattern, t in compiled if pattern.search(name)), "replicate")
        return NamedSharding(mesh, _spec(tuple(np.shape(leaf)), tactic, fsdp_size))

    return jax.tree_util.tree_map_with_path(shard, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, BATCH_SPEC)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
