"""Losses whose negatives come from the batch give, on 8 simulated devices, the value they give
on 1: the negatives are the global batch's, not one device's."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense InfoNCE over the whole batch (`cpc_transformer` shares this loss). The queue objectives
# (`moco`, `vtdl`) take their negatives from a queue, not from the batch.
OBJECTIVES = {"dpc": ({"num_seq": 4, "seq_len": 2, "pred_step": 2, "downsample": 1}, {})}

_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
from absl import flags
flags.FLAGS.mark_as_parsed()
import jax, ml_collections, numpy as np
from jax.sharding import Mesh
assert jax.device_count() == 8, jax.devices()
from tests.conftest import tiny_config
from vssl_jax import objectives, train
from vssl_jax.data import pipeline
from vssl_jax.state import initial_state, make_state_spec

results = {{}}
for name, (keys, model) in {objectives!r}.items():
    config = tiny_config({data!r})
    with config.unlocked():
        config.objective = ml_collections.ConfigDict({{"name": name, **keys}})
        config.model.update(model)
    objective = objectives.get(name)
    make = objective.train_example(pipeline.clip_spec(config.data), config.objective)
    source = pipeline.split_source({data!r}, "train")
    examples = [make(source[i], np.random.default_rng(i)) for i in range(8)]
    batch = {{k: np.stack([e[k] for e in examples]) for k in examples[0]}}
    losses = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = Mesh(np.asarray(devices).reshape(len(devices), 1), ("data", "fsdp"))
        spec = make_state_spec(config, 2, mesh)
        step = train.jit_train_step(spec, config, mesh, objective)
        placed = {{k: jax.device_put(v, train.sharding.batch_sharding(mesh)) for k, v in batch.items()}}
        _, metrics = step(initial_state(spec), placed)
        losses.append([float(metrics["loss"]), float(metrics["grad_norm"])])
    results[name] = losses
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def one_and_eight_devices(tiny_dataset):
    code = _SCRIPT.format(repo=REPO, data=tiny_dataset, objectives=OBJECTIVES)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_loss_and_gradient_on_eight_devices_equal_one_device(one_and_eight_devices, name):
    (loss_one, grad_one), (loss_eight, grad_eight) = one_and_eight_devices[name]
    assert loss_one == pytest.approx(loss_eight, rel=1e-4)
    assert grad_one == pytest.approx(grad_eight, rel=1e-3)
    assert loss_one > 0.1  # A loss with something left to learn, not a degenerate 0.
