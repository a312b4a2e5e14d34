"""Faults during training: kill -9, unreadable checkpoints, diverging losses, a full disk, a
batch the devices cannot split."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import tiny_config
from vssl_jax import checkpoint, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CONFIG_FILE = """
import sys
sys.path.insert(0, {repo!r})
from tests.conftest import tiny_config

def get_config():
    return tiny_config({data!r}, num_train_steps=16, checkpoint_every=3, log_every=1)
"""


def _all_losses(workdir) -> dict[int, list[float]]:
    losses: dict[int, list[float]] = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for row in map(json.loads, f):
            if row["split"] == "train":
                losses.setdefault(row["step"], []).append(row["loss"])
    return losses


def _start(config_file, workdir) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vssl_jax.main", f"--config={config_file}", f"--workdir={workdir}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_mid_run_then_rerun_equals_an_uninterrupted_run(tiny_dataset, tmp_path):
    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(_CONFIG_FILE.format(repo=REPO, data=tiny_dataset))
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    uninterrupted = _start(config_file, clean)
    victim = _start(config_file, killed)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once step 8 is logged: checkpoints 3 and 6 exist
        if (killed / "metrics.jsonl").exists() and max(_all_losses(killed), default=0) >= 8:
            break
        assert victim.poll() is None, victim.stderr.read()[-3000:]
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stderr.read()[-3000:]
    assert not (killed / "eval_results.json").exists()

    rerun = _start(config_file, killed)
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read()[-3000:]
    want, got = _all_losses(clean), _all_losses(killed)
    assert sorted(got) == sorted(want) == list(range(1, 17))
    assert "Resumed from" in rerun.stderr.read()  # continued, did not start over
    for step, losses in got.items():
        assert losses == [want[step][0]] * len(losses), step  # every repeat bit-identical
    clean_results = json.loads((clean / "eval_results.json").read_text())
    assert json.loads((killed / "eval_results.json").read_text()) == clean_results
    leftovers = [d for d in os.listdir(killed / "checkpoints") if not d.isdigit()]
    assert not leftovers, leftovers


def test_unreadable_newest_checkpoint_falls_back_to_the_previous(tiny_dataset, tmp_path):
    workdir = str(tmp_path)
    config = tiny_config(tiny_dataset)
    train.train_and_evaluate(config, workdir)  # checkpoints 3 and 6
    shutil.rmtree(os.path.join(workdir, "checkpoints", "6", "state"))

    from vssl_jax import sharding
    from vssl_jax.state import make_state_spec

    spec = make_state_spec(config, 2, sharding.make_mesh(config.mesh))
    restored = checkpoint.Checkpointer(workdir, max_to_keep=3).restore(spec.abstract)
    assert int(restored["step"]) == 3

    shutil.rmtree(os.path.join(workdir, "checkpoints", "3", "state"))
    with pytest.raises(
        ValueError, match=r"no readable checkpoint; newest failure: .*/checkpoints/6"
    ):
        checkpoint.Checkpointer(workdir, max_to_keep=3).restore(spec.abstract)


def test_diverging_loss_stops_at_the_exact_step_and_saves_nothing_after(tiny_dataset, tmp_path):
    config = tiny_config(
        tiny_dataset, **{"optimizer.lr": 1e12, "optimizer.name": "sgd", "checkpoint_every": 1}
    )
    with pytest.raises(FloatingPointError, match=r"^step (\d+): training loss is") as error:
        train.train_and_evaluate(config, str(tmp_path))
    bad_step = int(error.value.args[0].split(":")[0].split()[1])
    assert 1 < bad_step <= 6
    saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert saved == list(range(1, bad_step))  # every finite step saved, the bad one never


def test_skip_nonfinite_keeps_the_weights_finite_and_counts_skips(tiny_dataset, tmp_path):
    config = tiny_config(
        tiny_dataset,
        **{"optimizer.lr": 1e12, "optimizer.name": "sgd", "skip_nonfinite": True},
    )
    train.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f if '"train"' in line]
    assert sum(r["skipped_steps"] for r in rows) >= 1
    assert all(np.isfinite(r["loss"]) for r in rows if r["skipped_steps"] == 0)

    import jax

    from vssl_jax import sharding
    from vssl_jax.state import make_state_spec

    spec = make_state_spec(config, 2, sharding.make_mesh(config.mesh))
    saved = checkpoint.Checkpointer(str(tmp_path), max_to_keep=3).restore(spec.abstract)
    assert int(saved["step"]) == 6
    for leaf in jax.tree.leaves(saved["params"]) + jax.tree.leaves(saved["model_state"]):
        assert np.isfinite(np.asarray(leaf)).all()
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert 0.0 <= results["top1"] <= 1.0


def _run_on_tiny_filesystem(
    mountpoint, size_kib: int, command: list[str], copy_to, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Runs `command` with a `size_kib` tmpfs mounted on `mountpoint`, then copies what the
    tmpfs holds to `copy_to`. The mount lives in a private user and mount namespace: it needs
    no root where user namespaces are allowed, and vanishes when the command ends."""
    script = 'mnt=$2 out=$3; mount -t tmpfs -o size="$1"k tmpfs "$mnt" || exit 99; shift 3; '
    script += '"$@"; rc=$?; cp -a "$mnt/." "$out/" && exit $rc'
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]
        + [str(size_kib), str(mountpoint), str(copy_to), *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def tiny_filesystems(tmp_path_factory):
    """Skips when this machine forbids user mount namespaces: then no real full disk exists."""
    if shutil.which("unshare") is None:
        pytest.skip("no `unshare` to mount a size-limited tmpfs")
    probe = tmp_path_factory.mktemp("probe")
    result = _run_on_tiny_filesystem(probe, 64, ["true"], tmp_path_factory.mktemp("copy"))
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace: {result.stderr.strip()}")


_SAVE_UNTIL_FULL = """
import json, sys
import numpy as np
from vssl_jax import checkpoint

workdir, async_save = sys.argv[1], sys.argv[2] == "async"
saver = checkpoint.Checkpointer(workdir, max_to_keep=3, async_save=async_save)
# 240 kB of noise (it does not compress): one save fits in 400 kB, two do not.
state = {"w": np.random.default_rng(0).normal(size=60_000).astype(np.float32)}
saver.save(1, state)
try:
    saver.save(2, {"w": state["w"] + 1})
    saver.close()
    print(json.dumps({"error": None}))
except checkpoint.DiskFullError as e:
    print(json.dumps({"error": str(e), "is_value_error": isinstance(e, ValueError)}))
"""


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_save_that_fills_the_disk_raises_disk_full(mode, tiny_filesystems, tmp_path):
    """The save of step 2 runs out of space. A synchronous save raises in `save`; an
    asynchronous one fails in Orbax's background thread, and the failure must still reach the
    caller (here at `close`)."""
    workdir, copy = tmp_path / "run", tmp_path / "copy"
    (workdir / "checkpoints").mkdir(parents=True)
    (copy / "checkpoints").mkdir(parents=True)
    command = [sys.executable, "-c", _SAVE_UNTIL_FULL, str(workdir), mode]
    result = _run_on_tiny_filesystem(workdir / "checkpoints", 400, command, copy / "checkpoints")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["error"] is not None, "the save that filled the disk raised nothing"
    assert report["is_value_error"]
    assert report["error"] == (
        f"checkpoint directory {workdir}/checkpoints: disk full (No space left on device) "
        "while saving step 2; earlier checkpoints (1) are intact; free space, then run again "
        "to resume from step 1"
    )
    # What the full disk held afterwards: step 1 whole and readable, step 2 never listed.
    saved = checkpoint.Checkpointer(str(copy), max_to_keep=3)
    assert saved.manager.all_steps() == [1]
    restored = saved.restore({"w": np.zeros(60_000, np.float32)})
    want = np.random.default_rng(0).normal(size=60_000).astype(np.float32)
    np.testing.assert_array_equal(restored["w"], want)


def test_disk_full_mid_run_stops_with_one_line_and_keeps_earlier_checkpoints(
    tiny_filesystems, tiny_dataset, tmp_path
):
    """Checkpoints of 1.2 MB on a 1.8 MB disk: step 3 fits, step 6 fails in the background and
    surfaces at the next save (step 9) as a one-line error; step 3 stays whole and readable."""
    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(_CONFIG_FILE.format(repo=REPO, data=tiny_dataset))
    workdir, copy = tmp_path / "run", tmp_path / "copy"
    (workdir / "checkpoints").mkdir(parents=True)
    (copy / "checkpoints").mkdir(parents=True)
    command = [sys.executable, "-m", "vssl_jax.main", f"--config={config_file}"]
    command += [f"--workdir={workdir}", "--config.num_train_steps=9"]
    # Unoptimised XLA compiles the step in two thirds of the time; what is saved is not checked.
    env = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "true"}
    result = _run_on_tiny_filesystem(
        workdir / "checkpoints", 1800, command, copy / "checkpoints", env=env
    )

    assert result.returncode == 2, result.stderr[-3000:]
    # Our line is the last line: nothing (a background writer's traceback) may print after it.
    assert result.stderr.rstrip().splitlines()[-1] == (
        f"error: checkpoint directory {workdir}/checkpoints: disk full (No space left on device) "
        "while saving step 6; earlier checkpoints (3) are intact; free space, then run again to "
        "resume from step 3"
    ), result.stderr[-3000:]
    assert max(_all_losses(workdir)) == 9  # it trained on until the next save, then stopped
    assert not (workdir / "eval_results.json").exists()

    from vssl_jax import sharding
    from vssl_jax.state import make_state_spec

    config = tiny_config(tiny_dataset)
    spec = make_state_spec(config, 2, sharding.make_mesh(config.mesh))
    saved = checkpoint.Checkpointer(str(copy), max_to_keep=3)
    assert saved.manager.all_steps() == [3]
    assert int(saved.restore(spec.abstract)["step"]) == 3


def test_batch_not_divisible_by_the_devices_is_a_one_line_error(tiny_dataset, tmp_path):
    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(_CONFIG_FILE.format(repo=REPO, data=tiny_dataset))
    result = subprocess.run(
        [sys.executable, "-m", "vssl_jax.main", f"--config={config_file}"]
        + [f"--workdir={tmp_path / 'run'}", "--config.batch_size=12"],
        cwd=REPO,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"error: batch_size 12\b.*\b8 devices\b", last), result.stderr
    assert "Traceback" not in result.stderr
