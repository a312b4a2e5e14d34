"""The README's main command, at smoke size: build the demo, train, checkpoint, evaluate."""

import json
import os
import subprocess
import sys

from scipy import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_config_trains_well_above_chance(tmp_path):
    workdir = tmp_path / "smoke"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vssl_jax.main",
            "--config=configs/demo.py:smoke",
            f"--workdir={workdir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "final val accuracy" in result.stdout
    results = json.loads((workdir / "eval_results.json").read_text())
    assert results["num_classes"] == 6 and results["num_examples"] == 36
    assert results["step"] == 120
    # Six motion classes: chance is 1/6. Demand a top-1 that chance reaches with p < 1e-4.
    correct = round(results["top1"] * results["num_examples"])
    p_value = stats.binom.sf(correct - 1, results["num_examples"], 1 / 6)
    assert p_value < 1e-4, results
    assert sorted(os.listdir(workdir / "checkpoints")) == ["120", "60"]
