"""The train state: how it is built, laid out on the mesh and fed.

A train state is a plain dict of arrays
    {"params", "model_state" (BatchNorm statistics), "opt_state", "step", "rng"}
that `train_step` and `eval_step` take and Orbax saves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from absl import logging
from flax import nnx

from vssl_jax import models, objectives, optimizers, sharding
from vssl_jax.data import transforms
from vssl_jax.models import pretrained


@dataclasses.dataclass(frozen=True, eq=False)
class StateSpec:
    """What is needed to build, shard, restore and run a train state."""

    graphdef: nnx.GraphDef
    init: Callable[[], dict]  # Builds a fresh state; jit it with `shardings` as out_shardings.
    abstract: dict  # ShapeDtypeStructs with their shardings, for restoring.
    shardings: dict
    tx: optax.GradientTransformation


def make_state_spec(config, num_classes: int, mesh) -> StateSpec:
    """The model is the encoder that `config.model` names, wrapped by the objective's heads."""
    objective = objectives.get(config.objective.name)

    def new_model():
        encoder = models.create(config.model, num_classes, seed=config.seed)
        # Heads draw from their own stream, so adding one never changes the encoder's init.
        heads_rngs = nnx.Rngs(params=jax.random.fold_in(jax.random.PRNGKey(config.seed), 1))
        return objective.build_model(encoder, config.objective, heads_rngs)

    tx = optimizers.create_optimizer(config.optimizer, config.num_train_steps)

    def init() -> dict:
        _, params, model_state = nnx.split(new_model(), nnx.Param, ...)
        return {
            "params": params,
            "model_state": model_state,
            "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.PRNGKey(config.seed),
        }

    graphdef = nnx.split(nnx.eval_shape(new_model), nnx.Param, ...)[0]
    shapes = jax.eval_shape(init)
    shardings = sharding.tree_shardings(shapes, mesh, config.sharding_rules)
    abstract = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )
    return StateSpec(graphdef, init, abstract, shardings, tx)


def initial_state(spec: StateSpec) -> dict:
    """A freshly initialised state, created directly in its sharded layout.

    Initialisation draws with the non-partitionable threefry: on XLA:CPU, compiling the
    partitionable variant (this JAX's default) took 30 s instead of 5 s for a tiny R3D-18,
    measured here. Both are independent of the sharding, so every mesh gets the same values.
    """
    with jax.threefry_partitionable(False):
        return jax.jit(spec.init, out_shardings=spec.shardings)()


def normalized(batch: dict, config) -> dict:
    video = transforms.normalize_video(
        batch["video"], config.data.mean, config.data.std, jnp.dtype(config.model.dtype)
    )
    return {**batch, "video": video}


def load_pretrained(state: dict, directory: str, model_name: str) -> dict:
    """`state` with its encoder's arrays taken from `directory` (a workdir or an imported model).

    A model of the zoo is its own encoder; an objective's wrapper holds it under `encoder`.
    The classifier keeps its initial values when its shape differs (other classes); any other
    shape mismatch, or a checkpoint of another model, is an error naming the arrays.
    """
    arrays = pretrained.restore_encoder(directory)
    wrapped = "encoder" in state["params"]
    params = state["params"]["encoder"] if wrapped else state["params"]
    model_state = state["model_state"]["encoder"] if wrapped else state["model_state"]
    pretrained.check_fits(params, arrays["params"], directory, model_name)
    params, kept = pretrained.load_into(params, arrays["params"])
    model_state, _ = pretrained.load_into(model_state, arrays["model_state"])
    logging.info("Initialised from %s; kept initial %s", directory, ", ".join(kept) or "nothing")
    if wrapped:
        params = nnx.State({**state["params"], "encoder": params})
        model_state = nnx.State({**state["model_state"], "encoder": model_state})
    return {**state, "params": params, "model_state": model_state}
