import json
import os

from PIL import Image

from tests.conftest import tiny_config
from vssl_jax import compare


def test_compare_trains_both_models_and_writes_a_report(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, num_train_steps=3, checkpoint_every=3)
    rows = compare.compare(config, str(tmp_path), ["per_frame_resnet18", "r3d_18"])
    assert [r["model"] for r in rows] == ["per_frame_resnet18", "r3d_18"]
    for row in rows:
        saved = json.loads((tmp_path / row["model"] / "eval_results.json").read_text())
        assert row["top1"] == saved["top1"]
        assert row["params"] > 0 and row["train_seconds"] > 0
    assert rows[0]["params"] != rows[1]["params"]
    report = (tmp_path / "report.md").read_text()
    for row in rows:
        assert f"| {row['model']} | {row['top1']:.3f} |" in report
    assert "is best" in report
    with Image.open(tmp_path / "comparison.png") as image:
        assert image.size[0] > 300 and image.size[1] > 300

    # A second call reuses the finished runs instead of training again.
    mtime = os.path.getmtime(tmp_path / "r3d_18" / "eval_results.json")
    again = compare.compare(config, str(tmp_path), ["per_frame_resnet18", "r3d_18"])
    assert again == rows
    assert os.path.getmtime(tmp_path / "r3d_18" / "eval_results.json") == mtime
