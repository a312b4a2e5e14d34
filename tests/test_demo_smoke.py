"""The README's main command at smoke size (build the demo, train, checkpoint, evaluate), then
the tools a user runs on its workdir."""

import glob
import json
import os
import subprocess
import sys

import pytest
from scipy import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# What users run: the default convolutions and compilation cache, not the suite's.
_USER_ENVIRONMENT = {
    **{k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"},
    "VSSL_JAX_CONV3D": "auto",
}


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=_USER_ENVIRONMENT,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    result = _run("vssl_jax.main", "--config=configs/demo.py:smoke", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, result


def test_smoke_config_trains_well_above_chance(smoke_run):
    workdir, result = smoke_run
    assert "final val accuracy" in result.stdout
    results = json.loads((workdir / "eval_results.json").read_text())
    assert results["num_classes"] == 6 and results["num_examples"] == 36
    assert results["step"] == 120
    # Six motion classes: chance is 1/6. Demand a top-1 that chance reaches with p < 1e-4.
    correct = round(results["top1"] * results["num_examples"])
    p_value = stats.binom.sf(correct - 1, results["num_examples"], 1 / 6)
    assert p_value < 1e-4, results
    assert sorted(os.listdir(workdir / "checkpoints")) == ["120", "60"]
    assert json.loads((workdir / "config.json").read_text())["model"]["name"] == "r3d_18"
    # The compiled train step is kept for the next run of the same config.
    cached = os.listdir(os.path.join(os.environ["VSSL_JAX_CACHE"], "xla"))
    assert any(name.startswith("jit_train_step-") for name in cached), cached


def _demo_videos(split: str) -> list[str]:
    pattern = os.path.join(os.environ["VSSL_JAX_CACHE"], "demo-64px-16x6-seed0", "raw", split)
    return sorted(glob.glob(os.path.join(pattern, "*", "*.mp4")))


def test_predict_prints_top_k_json_for_a_raw_video(smoke_run):
    workdir, _ = smoke_run
    videos = _demo_videos("val")
    assert len(videos) == 36
    result = _run(
        "vssl_jax.predict",
        "--workdir",
        str(workdir),
        "--video",
        videos[0],
        "--json",
        "--top-k",
        "3",
        "--start-time",
        "0.25",
        "--duration",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    prediction = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    assert prediction["video"] == videos[0]
    assert len(prediction["top_k"]) == 3
    probs = [entry["prob"] for entry in prediction["top_k"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    names = {e["label"] for e in prediction["top_k"]}
    assert names <= {
        "move_left",
        "move_right",
        "move_up",
        "move_down",
        "rotate_clockwise",
        "rotate_counterclockwise",
    }


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--start-time", "1"], "--start-time needs --end-time or --duration"),
        (["--start-time", "2", "--end-time", "9"], "is beyond the video's 3.000 s"),
        (["--video", __file__], "cannot open as a video"),
    ],
)
def test_predict_refuses_bad_requests_in_one_line(smoke_run, extra, expected):
    workdir, _ = smoke_run
    result = _run(
        "vssl_jax.predict", "--workdir", str(workdir), "--video", _demo_videos("val")[0], *extra
    )
    assert result.returncode == 2
    assert expected in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_training_refuses_shards_that_changed_since_conversion(smoke_run, tmp_path):
    import shutil

    demo = os.path.join(os.environ["VSSL_JAX_CACHE"], "demo-64px-16x6-seed0")
    copy = tmp_path / "demo"
    shutil.copytree(demo, copy, ignore=shutil.ignore_patterns("raw"))
    shard = sorted(copy.glob("demo-val.array_record-*"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])  # as a partial copy or a disk error would
    result = _run(
        "vssl_jax.main",
        "--config=configs/demo.py:smoke",
        f"--workdir={tmp_path / 'run'}",
        "--config.data.builtin=",
        f"--config.data.data_dir={copy}",
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and shard.name in last, result.stderr[-2000:]
