"""Gradient accumulation (`config.grad_accum_steps`): K micro-batches give the update of the
whole batch; with BatchNorm, that of K devices with per-device statistics; resume is exact."""

import contextlib
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import tiny_config
from vssl_jax import objectives, optimizers, sharding, train
from vssl_jax.models import registry
from vssl_jax.models.heads import ClassifierHead
from vssl_jax.state import initial_state, make_state_spec, normalized


class _PooledMLP(nnx.Module):
    """A model without BatchNorm: per-pixel MLP, mean over the clip, linear classifier."""

    def __init__(self, num_classes: int, *, width: int = 8, dropout: float = 0.0, rngs, **_):
        self.hidden = nnx.Linear(3, width, rngs=rngs)
        self.feature_dim = width
        self.head = ClassifierHead(width, num_classes, dropout=dropout, rngs=rngs)

    def features(self, video, *, train: bool):
        return nnx.relu(self.hidden(video)).mean(axis=(1, 2, 3))

    def __call__(self, video, *, train: bool, rngs=None):
        return self.head(self.features(video, train=train), train=train, rngs=rngs)


@pytest.fixture
def pooled_mlp(monkeypatch):
    """`_PooledMLP` registered as "test_pooled_mlp" for one test only (other tests enumerate
    the registry: every registered model must have a config)."""
    monkeypatch.setitem(
        registry._MODELS,
        "test_pooled_mlp",
        lambda num_classes, *, rngs, **kw: _PooledMLP(num_classes, rngs=rngs, **kw),
    )
    return "test_pooled_mlp"


def _step(config):
    spec = make_state_spec(config, 2, sharding.make_mesh(config.mesh))
    step = functools.partial(
        train.train_step,
        spec=spec,
        config=config,
        objective=objectives.get("supervised").loss,
        schedule=optimizers.learning_rate_schedule(config.optimizer, config.num_train_steps),
    )
    return spec, jax.jit(step)


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "video": rng.integers(0, 255, (8, 4, 32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, 2, 8).astype(np.int32),
    }


def _config(tiny_dataset, model: str, accumulation: int):
    return tiny_config(
        tiny_dataset,
        grad_accum_steps=accumulation,
        **{"model.name": model, "optimizer.name": "sgd", "optimizer.momentum": 0.0},
    )


def test_micro_batches_take_every_kth_row():
    batch = {"x": jnp.arange(8)}
    np.testing.assert_array_equal(
        train.micro_batches(batch, 4)["x"], [[0, 4], [1, 5], [2, 6], [3, 7]]
    )


def test_without_batch_norm_four_micro_batches_equal_one_batch(tiny_dataset, pooled_mlp):
    batch = _batch()
    spec, whole = _step(_config(tiny_dataset, pooled_mlp, 1))
    _, accumulated = _step(_config(tiny_dataset, pooled_mlp, 4))
    state = initial_state(spec)
    one, metrics_one = whole(state, batch)
    four, metrics_four = accumulated(initial_state(spec), batch)
    for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(four["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(metrics_one["loss"], metrics_four["loss"], rtol=1e-6)
    assert not np.allclose(jax.tree.leaves(state["params"])[0], jax.tree.leaves(one["params"])[0])


def test_with_batch_norm_equals_per_device_statistics(tiny_dataset):
    """K=4 micro-batches of 2 on one device vs the definition of 4 devices with per-device
    BatchNorm (what `pmap` computes): the loss averaged over a `vmap` of the 4 shards."""
    config = _config(tiny_dataset, "r3d_18", 4)
    spec, accumulated = _step(config)
    state = initial_state(spec)
    batch = _batch(1)
    four, _ = accumulated(state, batch)

    shards = train.micro_batches(normalized(batch, config), 4)  # the rows device k would hold

    def per_device_loss(params, shard):
        model = nnx.merge(spec.graphdef, params, state["model_state"], copy=True)
        logits = model(shard["video"], train=True)
        labels = jax.nn.one_hot(shard["label"], 2)
        return -(jax.nn.log_softmax(logits) * labels).sum(-1).mean()

    def mean_loss(params):
        return jax.vmap(per_device_loss, in_axes=(None, 0))(params, shards).mean()

    grads = jax.jit(jax.grad(mean_loss))(state["params"])
    lr = optimizers.learning_rate_schedule(config.optimizer, config.num_train_steps)(0)
    decay = config.optimizer.weight_decay
    flat_old = jax.tree_util.tree_flatten_with_path(state["params"])[0]
    for (path, old), grad, new in zip(
        flat_old, jax.tree.leaves(grads), jax.tree.leaves(four["params"]), strict=True
    ):
        decayed = grad + (decay * old if old.ndim > 1 else 0.0)
        np.testing.assert_allclose(new, old - lr * decayed, rtol=1e-4, atol=1e-6, err_msg=str(path))


def test_batch_must_divide_into_devices_and_micro_batches(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, grad_accum_steps=3)
    with pytest.raises(ValueError, match="not divisible by the 1 devices x 3 grad_accum_steps"):
        train.train_and_evaluate(config, str(tmp_path))


@contextlib.contextmanager
def _compilations(function: str):
    """Collects JAX's 'Compiling jit(<function>)' log lines while the block runs."""
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith(f"Compiling jit({function})"):
                messages.append(record.getMessage()[:120])

    logger = logging.getLogger("jax._src.interpreters.pxla")
    handler, level = Collect(level=logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    try:
        yield messages
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_resume_with_accumulation_equals_an_uninterrupted_run(tiny_dataset, tmp_path):
    from tests.test_train import train_losses

    def run(workdir: str, steps: int) -> None:
        config = tiny_config(
            tiny_dataset,
            grad_accum_steps=2,
            num_train_steps=steps,
            checkpoint_every=2,
            **{"optimizer.schedule": "constant"},  # The same learning rates whatever `steps`.
        )
        train.train_and_evaluate(config, workdir)

    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    with _compilations("train_step") as compiled:
        run(full, 4)
    assert len(compiled) == 1, compiled  # 4 steps (8 micro-batches), one compilation.
    run(part, 2)  # Stops after the step-2 checkpoint...
    run(part, 4)  # ... and a second run resumes from it.
    assert train_losses(part) == train_losses(full)
    assert sorted(train_losses(full)) == [1, 2, 3, 4]
