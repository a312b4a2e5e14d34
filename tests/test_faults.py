"""Faults during training: kill -9, unreadable checkpoints, diverging losses."""

import json
import os
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
