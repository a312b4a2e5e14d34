"""`--dry_run`: what a config will do, checked before a long run, without reading its data.

Prints the resolved config, the devices and mesh, the global batch and how it is split
(processes x devices x accumulation steps), the model's parameters (encoder and heads) and
GFLOPs per clip, and the train step's compiled memory per device. The train step is compiled
on a synthetic batch made by the objective's own sampler, so a config whose clips do not fit
its model fails here, in seconds, not hours into a run.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import simplejpeg
from flax import nnx

from vssl_jax import datasets, objectives, sharding, train
from vssl_jax.data import pipeline, records
from vssl_jax.models.__main__ import _macs
from vssl_jax.state import make_state_spec

NUM_CLASSES_WITHOUT_DATA = 101


def synthetic_record(config) -> records.VideoRecord:
    """A grey 64-frame video, frames of the crop size plus a margin."""
    size = config.data.crop_size + 16
    frame = simplejpeg.encode_jpeg(np.full((size, size + 8, 3), 128, np.uint8), 90)
    return records.VideoRecord(
        frames=[frame] * 64,
        label=0,
        label_text="synthetic",
        path="synthetic.mp4",
        start_time=0.0,
        end_time=8.0,
        fps=8.0,
    )


def abstract_batch(config, objective, spec_clip) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of a global training batch, from one example of the objective's sampler."""
    make_example = objective.train_example(spec_clip, config.objective)
    example = make_example(synthetic_record(config), np.random.default_rng(0))
    return {
        key: jax.ShapeDtypeStruct((config.batch_size, *np.shape(v)), np.asarray(v).dtype)
        for key, v in example.items()
    }


def _num_classes(config) -> tuple[int, str]:
    try:
        data_dir = datasets.resolve(config.data)
        return len(pipeline.load_label_names(data_dir)), data_dir
    except (FileNotFoundError, ValueError) as e:
        return (
            NUM_CLASSES_WITHOUT_DATA,
            f"not found ({e}); assuming {NUM_CLASSES_WITHOUT_DATA} classes",
        )


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def plan(config, *, compile_step: bool = True) -> dict:
    """The facts `--dry_run` prints, as a dict. The train step is always traced on a batch of
    the objective's sampler; `compile_step` also compiles it to measure its memory."""
    objective = objectives.get(config.objective.name)
    num_classes, data = _num_classes(config)
    mesh = sharding.make_mesh(config.mesh)
    accumulation = config.grad_accum_steps
    per_device = config.batch_size / (mesh.size * accumulation)
    if per_device != int(per_device):
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the {mesh.size} devices x "
            f"{accumulation} grad_accum_steps"
        )
    spec = make_state_spec(config, num_classes, mesh)
    params = spec.abstract["params"]
    encoder_params = params["encoder"] if "encoder" in params else params
    clip = pipeline.clip_spec(config.data)
    model = nnx.merge(spec.graphdef, params, spec.abstract["model_state"])
    encoder = objectives.encoder_of(model)
    video = jax.ShapeDtypeStruct(
        (1, clip.num_frames, clip.crop_size, clip.crop_size, 3), jnp.float32
    )
    graphdef, enc_params, enc_rest = nnx.split(encoder, nnx.Param, ...)
    forward = jax.make_jaxpr(lambda p, r, v: nnx.merge(graphdef, p, r)(v, train=False))(
        enc_params, enc_rest, video
    )
    facts = {
        "stage": config.stage,
        "objective": config.objective.name,
        "model": config.model.name,
        "data": data,
        "num_classes": num_classes,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "mesh": dict(mesh.shape),
        "global_batch": config.batch_size,
        "grad_accum_steps": accumulation,
        "clips_per_device_per_micro_batch": int(per_device),
        "params_total": _count(params),
        "params_encoder": _count(encoder_params),
        "encoder_gflops_per_clip": _macs(forward.jaxpr) / 1e9,
        "eval_clip": f"{clip.num_test_clips} clips x {clip.num_test_crops} crops",
    }
    batch = abstract_batch(config, objective, clip)
    facts["train_batch"] = {k: list(v.shape) for k, v in batch.items()}
    step_fn = train.jit_train_step(spec, config, mesh, objective)
    if not compile_step:
        jax.eval_shape(step_fn, spec.abstract, batch)  # Traces the step: shapes and names.
    else:
        memory = step_fn.lower(spec.abstract, batch).compile().memory_analysis()
        total = sum(
            getattr(memory, name, 0)
            for name in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
        )
        facts["compiled_memory_mib_per_device"] = round(total / 2**20, 1)
    return facts


def print_plan(config) -> None:
    print(config)
    facts = plan(config)
    width = max(map(len, facts))
    for key, value in facts.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        if isinstance(value, float):
            shown = f"{value:.3f}"
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
            shown = f"{value:,}"
        print(f"{key.ljust(width)}  {shown}")
    print("dry run: nothing was trained or written")
