"""The training loop: exact resume, 1 vs 8 devices, the eval stage, and user-facing errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import tiny_config
from vssl_jax import checkpoint, main, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_losses(workdir: str) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("full"))
    results = train.train_and_evaluate(tiny_config(tiny_dataset), workdir)
    return workdir, results


def test_run_writes_results_checkpoints_and_metrics(uninterrupted):
    workdir, results = uninterrupted
    with open(os.path.join(workdir, "eval_results.json")) as f:
        saved = json.load(f)
    assert saved == results
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["num_classes"] == 2 and saved["num_examples"] == 10 and saved["step"] == 6
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    assert sorted(train_losses(workdir)) == [1, 2, 3, 4, 5, 6]
    assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_resume_after_preemption_gives_the_same_losses(uninterrupted, tiny_dataset, tmp_path):
    """Stop right after the step-3 checkpoint, restart: steps 4-6 equal the uninterrupted run."""
    full_dir, full_results = uninterrupted
    workdir = str(tmp_path)

    class Preempted(Exception):
        pass

    original_save = checkpoint.Checkpointer.save

    def save_then_die(self, step, state, data_iterator=None):
        original_save(self, step, state, data_iterator)
        if step == 3:
            self.manager.wait_until_finished()
            raise Preempted

    checkpoint.Checkpointer.save = save_then_die
    try:
        with pytest.raises(Preempted):
            train.train_and_evaluate(tiny_config(tiny_dataset), workdir)
    finally:
        checkpoint.Checkpointer.save = original_save
    assert sorted(train_losses(workdir)) == [1, 2, 3]

    results = train.train_and_evaluate(tiny_config(tiny_dataset), workdir)
    full, resumed = train_losses(full_dir), train_losses(workdir)
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert resumed[step] == full[step], step  # bit-identical, not merely close
    assert results["top1"] == full_results["top1"]


def test_eval_stage_restores_the_latest_checkpoint(uninterrupted, tiny_dataset):
    workdir, results = uninterrupted
    os.remove(os.path.join(workdir, "eval_results.json"))
    evaluated = main.run(tiny_config(tiny_dataset, stage="eval"), workdir)
    assert evaluated == results
    assert os.path.exists(os.path.join(workdir, "eval_results.json"))


_RUN_ON_DEVICES = """
import json, sys
sys.path.insert(0, {repo!r})
from absl import flags
flags.FLAGS.mark_as_parsed()
import jax
assert jax.device_count() == {devices}, jax.devices()
from tests.conftest import tiny_config
from vssl_jax import train
config = tiny_config({data!r}, num_train_steps=4, checkpoint_every=4, **{overrides!r})
train.train_and_evaluate(config, {workdir!r})
"""


def _start(devices: int, data: str, workdir: str, overrides: dict) -> subprocess.Popen:
    code = _RUN_ON_DEVICES.format(
        repo=REPO,
        devices=devices,
        data=data,
        workdir=workdir,
        overrides=overrides,
    )
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True
    )


def test_eight_devices_with_fsdp_match_one_device(tiny_dataset, tmp_path):
    """Same global batch on 1 device and on a 4 (data) x 2 (fsdp) mesh: same loss trajectory."""
    fsdp = {"mesh.data": 4, "mesh.fsdp": 2, "sharding_rules": ((".*kernel", "fsdp"),)}
    runs = {
        "one": _start(1, tiny_dataset, str(tmp_path / "one"), {}),
        "eight": _start(8, tiny_dataset, str(tmp_path / "eight"), fsdp),
    }
    for name, process in runs.items():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name}: {stderr[-3000:]}"
    one, eight = train_losses(str(tmp_path / "one")), train_losses(str(tmp_path / "eight"))
    assert sorted(one) == sorted(eight) == [1, 2, 3, 4]
    np.testing.assert_allclose([eight[s] for s in one], list(one.values()), rtol=2e-4)
    # The losses must move, or the comparison proves nothing.
    assert len({round(v, 4) for v in one.values()}) == 4


def _cli(*args: str, cwd: str = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vssl_jax.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.optimizer.lrr=0.1", "unknown config key 'lrr' in --config.optimizer.lrr=0.1"),
        ("--config.batch_size=abc", "--config.batch_size=abc"),
        ("--config.data.builtin=", "config.data.data_dir is empty"),
        ("--config.model.name=r3d_19", "unknown model 'r3d_19'; registered models: "),
    ],
)
def test_user_mistakes_are_one_line_errors(override, expected, tmp_path):
    result = _cli("--config=configs/demo.py:smoke", f"--workdir={tmp_path}", override)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_final_eval_writes_readable_plots(uninterrupted):
    from PIL import Image

    workdir, _ = uninterrupted
    sizes = {}
    for name in ("curves.png", "confusion_matrix.png", "predictions.png"):
        with Image.open(os.path.join(workdir, "plots", name)) as image:
            pixels = np.asarray(image.convert("L"))
            sizes[name] = image.size
        assert pixels.std() > 10, name  # drawn on, not a blank canvas
    assert sizes["curves.png"] == (1100, 400)
    assert sizes["predictions.png"][1] > sizes["predictions.png"][0]  # one row per video


def test_multi_view_eval_averages_logits_of_every_view(uninterrupted, tiny_dataset):
    """3 clips x 3 crops: the eval logits equal the mean of the 9 single-view logits."""
    import jax

    from vssl_jax import evaluate, sharding
    from vssl_jax.data import pipeline
    from vssl_jax.state import make_state_spec

    workdir, _ = uninterrupted
    config = tiny_config(tiny_dataset, **{"data.num_test_clips": 3, "data.num_test_crops": 3})
    state, spec, mesh, data_dir, names = evaluate.restore_latest(config, workdir)
    results, outputs = evaluate.evaluate(
        evaluate.make_eval_step(spec, config, mesh), config, state, mesh, data_dir, names
    )
    assert results["num_views"] == 9 and results["num_examples"] == 10
    assert outputs["index"].tolist() == list(range(10))

    # The same videos, one view at a time, through the model directly.
    from flax import nnx

    from vssl_jax.state import normalized

    model = nnx.merge(spec.graphdef, state["params"], state["model_state"], copy=True)
    source = pipeline.split_source(tiny_dataset, "val")
    views = pipeline.test_views(
        source[3].frames,
        12,
        pipeline.clip_spec(config.data),
        "v",
    )
    assert views.shape == (9, 4, 32, 32, 3)
    video = normalized({"video": jax.numpy.asarray(views)}, config)["video"]
    want = np.asarray(model(video, train=False)).mean(axis=0)
    np.testing.assert_allclose(outputs["logits"][3], want, rtol=1e-4, atol=1e-5)
    del make_state_spec, sharding


def test_features_stage_writes_aligned_features_labels_and_paths(uninterrupted, tiny_dataset):
    workdir, _ = uninterrupted
    summary = main.run(tiny_config(tiny_dataset, stage="features"), workdir)
    features = np.load(os.path.join(workdir, "features.npy"))
    labels = np.load(os.path.join(workdir, "labels.npy"))
    with open(os.path.join(workdir, "paths.txt")) as f:
        paths = f.read().splitlines()
    assert features.shape == (10, summary["feature_dim"]) == (10, 32)  # width 4 * 8
    assert np.isfinite(features).all() and features.std() > 0
    # Record order; the tiny set's labels alternate and its paths are val/000.mp4, val/001.mp4...
    assert paths == [f"val/{i:03d}.mp4" for i in range(10)]
    assert labels.tolist() == [i % 2 for i in range(10)]


def test_init_from_loads_matching_arrays_and_keeps_a_new_classifier(tiny_dataset, tmp_path):
    """Weights saved from a 5-class model start a 2-class run: all but the head are loaded."""
    import jax

    from vssl_jax import models, sharding
    from vssl_jax.models import pretrained
    from vssl_jax.state import initial_state, load_pretrained, make_state_spec

    config = tiny_config(tiny_dataset, init_from=str(tmp_path / "pretrained"))
    source = models.create(config.model, 5, seed=123)
    pretrained.save(source, config.init_from)
    want = pretrained.flat_arrays(nnx_state_params(source))

    spec = make_state_spec(config, 2, sharding.make_mesh(config.mesh))
    fresh = initial_state(spec)
    loaded = load_pretrained(fresh, config.init_from, config.model.name)
    got = pretrained.flat_arrays(loaded["params"])
    before = pretrained.flat_arrays(fresh["params"])
    assert set(got) == set(want)
    for key, value in got.items():
        if key.startswith("head."):  # 5 vs 2 classes: keeps its initial values
            np.testing.assert_array_equal(value, before[key])
        else:
            np.testing.assert_array_equal(value, want[key])
    assert any(not np.array_equal(before[k], want[k]) for k in want if not k.startswith("head."))
    jax.block_until_ready(loaded)


def nnx_state_params(model):
    from flax import nnx

    return nnx.state(model, nnx.Param)


def test_compilation_cache_defaults_to_the_vssl_jax_cache_and_keeps_a_users_directory(
    monkeypatch, tmp_path
):
    import jax

    monkeypatch.setenv("VSSL_JAX_CACHE", str(tmp_path))
    users = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", "/somewhere/of/the/users")
        assert main.use_compilation_cache() == "/somewhere/of/the/users"
        jax.config.update("jax_compilation_cache_dir", None)
        assert main.use_compilation_cache() == str(tmp_path / "xla")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    finally:
        jax.config.update("jax_compilation_cache_dir", users)
