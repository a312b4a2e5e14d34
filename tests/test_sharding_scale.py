"""FSDP on 8 simulated devices, and a checkpoint of that run evaluated on 1, 2 and 4 devices.

XLA's CPU client is told to expose 8 devices; the parameters and optimizer state follow
`config.sharding_rules` over a mesh of 8 on the `fsdp` axis. Orbax restores a checkpoint into
whatever shardings the abstract state of the new mesh asks for, so the same files serve any
device count.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
FSDP = {"mesh.data": 1, "mesh.fsdp": 8, "sharding_rules": ((".*kernel", "fsdp"),)}
REPLICATED = {"mesh.data": 8, "mesh.fsdp": 1}
SHARDED = ['--config.sharding_rules=((".*kernel", "fsdp"),)']

# Both runs start with this; the replicated one then only trains.
_EIGHT_DEVICES = """
import json, sys
sys.path.insert(0, {repo!r})
from absl import flags
flags.FLAGS.mark_as_parsed()
import jax
import numpy as np
assert jax.device_count() == 8, jax.devices()
from tests.conftest import tiny_config
from vssl_jax import checkpoint, sharding, train
from vssl_jax.state import make_state_spec

def config(overrides):
    return tiny_config({data!r}, num_train_steps={steps}, checkpoint_every={steps}, **overrides)
"""

_REPLICATED_RUN = """
train.train_and_evaluate(config({replicated!r}), {replicated_dir!r})
"""

_FSDP_RUN = """
fsdp = config({fsdp!r})
train.train_and_evaluate(fsdp, {fsdp_dir!r})

# The checkpoint restored into the training layout (the shardings train_step takes and returns)
# and into the replicated one; Checkpointer.restore(abstract) follows the abstract's shardings.
spec = make_state_spec(fsdp, 2, sharding.make_mesh(fsdp.mesh))
replicated = config({replicated!r})
replicated_spec = make_state_spec(replicated, 2, sharding.make_mesh(replicated.mesh))
restorer = checkpoint.Checkpointer({fsdp_dir!r}, max_to_keep=1)
as_fsdp = restorer.restore(spec.abstract)
as_replicated = restorer.restore(replicated_spec.abstract)
restorer.close()
target_shardings = all(
    a.sharding == s for a, s in zip(jax.tree.leaves(as_fsdp), jax.tree.leaves(spec.shardings))
) and all(
    a.sharding == s
    for a, s in zip(jax.tree.leaves(as_replicated), jax.tree.leaves(replicated_spec.shardings))
)
same_values = all(
    np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(as_replicated), jax.tree.leaves(as_fsdp))
)
# Bytes on each device of every parameter and optimizer-state array.
layouts = {{}}
for name, state in (("fsdp", as_fsdp), ("replicated", as_replicated)):
    layouts[name] = {{
        part + "/" + sharding.path_string(path): {{
            "shape": list(array.shape),
            "total": array.nbytes,
            "per_device": sorted({{s.data.nbytes for s in array.addressable_shards}}),
            "devices": len({{s.device for s in array.addressable_shards}}),
        }}
        for part in ("params", "opt_state")
        for path, array in jax.tree_util.tree_leaves_with_path(state[part])
    }}
with open({report!r}, "w") as f:
    json.dump({{"layouts": layouts, "same_values": same_values, "target_shardings": target_shardings}}, f)
"""

# The eval stage through the command line, with the test's tiny config.
_CONFIG_FILE = """
import sys
sys.path.insert(0, {repo!r})
from tests.conftest import tiny_config


def get_config():
    return tiny_config({data!r})
"""


def _losses(workdir: str) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def _start(args: list[str], devices: int, log: str) -> tuple[subprocess.Popen, str]:
    """`python ARGS` on `devices` simulated CPU devices, stderr to the file `log`."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    with open(log, "w") as stderr:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stderr=stderr), log


def _finish(runs: dict[str, tuple[subprocess.Popen, str]]) -> None:
    """Waits for every run (they go side by side on the cores); names the first that failed
    and stops the others."""
    try:
        for name, (process, log) in runs.items():
            returncode = process.wait(timeout=300)
            with open(log) as f:
                assert returncode == 0, f"{name}: {f.read()[-4000:]}"
    finally:
        for process, _ in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def eight_devices(tiny_dataset, tmp_path_factory) -> dict:
    """Trains the tiny config replicated and FSDP on 8 devices (two processes side by side);
    returns their folders and the FSDP process's report."""
    root = tmp_path_factory.mktemp("eight_devices")
    runs = {
        "report": str(root / "report.json"),
        "replicated_dir": str(root / "replicated"),
        "fsdp_dir": str(root / "fsdp"),
    }
    values = dict(repo=REPO, data=tiny_dataset, steps=STEPS, fsdp=FSDP, replicated=REPLICATED)
    _finish(
        {
            name: _start(
                ["-c", (_EIGHT_DEVICES + code).format(**values, **runs)], 8, f"{root / name}.log"
            )
            for name, code in (("replicated", _REPLICATED_RUN), ("fsdp", _FSDP_RUN))
        }
    )
    with open(runs["report"]) as f:
        return {**runs, **json.load(f)}


def test_fsdp_shards_parameters_and_optimizer_state_and_matches_the_replicated_loss(
    eight_devices,
):
    layout = eight_devices["layouts"]["fsdp"]
    kernels = {name: a for name, a in layout.items() if name.endswith("kernel")}
    # The optimizer's momentum follows the parameters it belongs to.
    assert any(name.startswith("opt_state/") for name in kernels)
    for name, array in layout.items():
        assert array["devices"] == 8, name
        if name in kernels and any(d % 8 == 0 for d in array["shape"]):
            assert array["per_device"] == [array["total"] // 8], name  # an eighth on each
        else:
            assert array["per_device"] == [array["total"]], name  # whole on each (replicated)
    # The large tensors are the sharded ones: on each device the parameters take about 1/8.
    params = [a for name, a in layout.items() if name.startswith("params/")]
    total = sum(a["total"] for a in params)
    largest, covered = [], 0
    for array in sorted(params, key=lambda a: a["total"], reverse=True):
        if covered >= 0.9 * total:
            break
        largest.append(array)
        covered += array["total"]
    assert all(a["per_device"] == [a["total"] // 8] for a in largest), largest
    per_device = sum(a["per_device"][0] for a in params) / total
    assert 1 / 8 <= per_device < 0.2, per_device
    # The same checkpoint restored for the replicated mesh: whole arrays, the same values.
    for name, array in eight_devices["layouts"]["replicated"].items():
        assert array["per_device"] == [array["total"]] and array["devices"] == 8, name
    assert eight_devices["target_shardings"] and eight_devices["same_values"]

    fsdp, replicated = _losses(eight_devices["fsdp_dir"]), _losses(eight_devices["replicated_dir"])
    assert sorted(fsdp) == sorted(replicated) == list(range(1, STEPS + 1))
    # Reduce-scatter instead of all-reduce sums the gradients in another order: drift ~1e-5.
    np.testing.assert_allclose([fsdp[s] for s in replicated], list(replicated.values()), rtol=2e-4)
    assert len({round(v, 4) for v in replicated.values()}) == STEPS  # The losses move.


# Device count -> mesh and rules: replicated on 1; FSDP over 2; data 2 x FSDP 2 on 4.
MESHES = {
    1: [],
    2: ["--config.mesh.data=1", "--config.mesh.fsdp=2", *SHARDED],
    4: ["--config.mesh.data=2", "--config.mesh.fsdp=2", *SHARDED],
}


def test_checkpoint_of_8_devices_evaluates_the_same_on_1_2_and_4(
    eight_devices, tiny_dataset, tmp_path
):
    """`python -m vssl_jax.main` stage eval on other meshes: the metrics of the 8-device run."""
    config_file = tmp_path / "tiny.py"
    config_file.write_text(_CONFIG_FILE.format(repo=REPO, data=tiny_dataset))
    runs = {}
    for devices, mesh in MESHES.items():  # Side by side: each is mostly compilation.
        workdir = tmp_path / f"on_{devices}"
        shutil.copytree(
            os.path.join(eight_devices["fsdp_dir"], "checkpoints"), workdir / "checkpoints"
        )
        args = ["-m", "vssl_jax.main", f"--config={config_file}", f"--workdir={workdir}"]
        runs[f"{devices} devices"] = _start(
            [*args, "--config.stage=eval", *mesh], devices, f"{workdir}.log"
        )
    _finish(runs)
    with open(os.path.join(eight_devices["fsdp_dir"], "eval_results.json")) as f:
        trained = json.load(f)
    assert trained["step"] == STEPS and trained["num_examples"] == 10
    for devices in MESHES:
        with open(tmp_path / f"on_{devices}" / "eval_results.json") as f:
            assert json.load(f) == trained, devices
