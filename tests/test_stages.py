"""Stages after pretraining: finetune, linear probe and kNN from a pretrain workdir, and
their errors (no checkpoint, another model)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import tiny_config
from vssl_jax import knn, main, train
from vssl_jax.models import pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _brute_force_knn(train_x, train_y, query_x, query_y, recall_at, k, temperature):
    """Straightforward loops over queries, as the retrieval papers describe it."""
    recalls = {r: 0 for r in recall_at}
    knn_correct = 0
    for x, y in zip(query_x, query_y, strict=True):
        sims = [float(np.dot(x, t) / (np.linalg.norm(x) * np.linalg.norm(t))) for t in train_x]
        ranked = sorted(range(len(sims)), key=lambda i: (-sims[i], i))
        for r in recall_at:
            recalls[r] += any(train_y[i] == y for i in ranked[:r])
        votes = {}
        for i in ranked[:k]:
            votes[train_y[i]] = votes.get(train_y[i], 0.0) + np.exp(sims[i] / temperature)
        knn_correct += max(votes, key=votes.get) == y
    n = len(query_y)
    return {f"recall_at_{r}": c / n for r, c in recalls.items()}, knn_correct / n


def test_knn_results_equal_a_brute_force_reference():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    train_y = rng.integers(0, 4, 60)
    query_y = rng.integers(0, 4, 25)
    train_x = centres[train_y] + 3.0 * rng.normal(size=(60, 16))
    query_x = centres[query_y] + 3.0 * rng.normal(size=(25, 16))
    got = knn.retrieval_results(
        train_x, train_y, query_x, query_y, recall_at=(1, 3, 10), k=7, temperature=0.1
    )
    recalls, knn_top1 = _brute_force_knn(train_x, train_y, query_x, query_y, (1, 3, 10), 7, 0.1)
    for key, value in recalls.items():
        assert got[key] == pytest.approx(value), key
    assert got["knn_top1"] == pytest.approx(knn_top1)
    assert 0.25 < got["recall_at_1"] < got["recall_at_3"] < 1.0  # Neither trivial nor perfect.


@pytest.fixture(scope="module")
def pretrained_workdir(tiny_dataset, tmp_path_factory):
    """A short supervised run standing in for a pretraining run: the stages only read its
    checkpoint's encoder."""
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    train.train_and_evaluate(tiny_config(tiny_dataset, num_train_steps=3), workdir)
    return workdir


def _final_arrays(workdir: str) -> dict[str, np.ndarray]:
    return pretrained.restore_encoder(workdir)["params"]


def test_linear_probe_trains_only_the_classifier(pretrained_workdir, tiny_dataset, tmp_path):
    config = tiny_config(
        tiny_dataset,
        stage="linear_probe",
        init_from=pretrained_workdir,
        num_train_steps=3,
        **{"objective.name": "linear_probe", "optimizer.trainable": "^head/"},
    )
    main.run(config, str(tmp_path))
    before, after = _final_arrays(pretrained_workdir), _final_arrays(str(tmp_path))
    assert set(before) == set(after)
    for key in before:
        if key.startswith("head."):
            assert not np.array_equal(before[key], after[key]), key
        else:
            np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    # BatchNorm statistics are frozen too: the encoder ran in inference mode.
    stats_before = pretrained.restore_encoder(pretrained_workdir)["model_state"]
    stats_after = pretrained.restore_encoder(str(tmp_path))["model_state"]
    for key, value in stats_before.items():
        np.testing.assert_array_equal(value, stats_after[key], err_msg=key)


def test_finetune_starts_from_the_pretrained_encoder_and_trains_it(
    pretrained_workdir, tiny_dataset, tmp_path
):
    config = tiny_config(tiny_dataset, stage="finetune", init_from=pretrained_workdir)
    results = main.run(config, str(tmp_path))
    assert 0.0 <= results["top1"] <= 1.0
    before, after = _final_arrays(pretrained_workdir), _final_arrays(str(tmp_path))
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert any(not k.startswith("head.") for k in changed)


def test_knn_stage_reports_recalls_of_the_pretrained_encoder(
    pretrained_workdir, tiny_dataset, tmp_path
):
    config = tiny_config(tiny_dataset, stage="knn", init_from=pretrained_workdir)
    results = main.run(config, str(tmp_path))
    recalls = [results[f"recall_at_{k}"] for k in (1, 5, 10, 20, 50)]
    assert recalls == sorted(recalls) and recalls[-1] == 1.0  # 24 train videos, 2 classes.
    assert results["num_examples"] == 10 and results["num_train"] == 24
    assert 0.0 <= results["knn_top1"] <= 1.0
    assert os.path.exists(os.path.join(tmp_path, "eval_results.json"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vssl_jax.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_init_from_mistakes_are_one_line_errors(pretrained_workdir, tiny_dataset, tmp_path):
    # An empty folder: nothing to start from.
    with pytest.raises(FileNotFoundError, match="no pretrained checkpoint there"):
        main.run(
            tiny_config(tiny_dataset, stage="finetune", init_from=str(tmp_path / "missing")),
            str(tmp_path / "a"),
        )
    # Fine-tuning without naming the pretrained encoder.
    with pytest.raises(ValueError, match="set --config.init_from=PRETRAIN_WORKDIR"):
        main.run(tiny_config(tiny_dataset, stage="finetune"), str(tmp_path / "b"))
    # The same architecture at another width: every mismatching array is named.
    with pytest.raises(
        ValueError,
        match=r"arrays do not fit model 'r3d_18'.*conv1.kernel \(3, 3, 3, 4, 4\) vs \(3, 3, 3, 8, 8\)",
    ):
        main.run(
            tiny_config(
                tiny_dataset, stage="finetune", init_from=pretrained_workdir, **{"model.width": 8}
            ),
            str(tmp_path / "c"),
        )
    # Another model altogether, through the command line: one line, exit status 2.
    result = _cli(
        "--config=configs/c3d.py:smoke",
        f"--workdir={tmp_path / 'd'}",
        "--config.stage=finetune",
        f"--config.init_from={pretrained_workdir}",
        f"--config.data.data_dir={tiny_dataset}",
        "--config.data.builtin=",
        "--config.data.crop_size=32",
        "--config.data.num_frames=4",
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: init_from") and "model 'c3d'" in last, result.stderr
    assert "Traceback" not in result.stderr


def test_finetune_from_a_self_supervised_workdir_takes_its_encoder_not_its_heads(
    tiny_dataset, tmp_path
):
    """A MoCo pretraining run (encoder + projection head + momentum copies + queue): fine-tuning
    restores exactly the `encoder/...` arrays, and the kNN stage reads the same encoder."""
    import ml_collections

    from vssl_jax import sharding
    from vssl_jax.state import initial_state, load_pretrained, make_state_spec

    pretrain = tiny_config(tiny_dataset, stage="pretrain", num_train_steps=2, checkpoint_every=2)
    with pretrain.unlocked():
        pretrain.objective = ml_collections.ConfigDict({"name": "moco", "queue_size": 16})
    workdir = str(tmp_path / "moco")
    results = main.run(pretrain, workdir)
    assert "recall_at_1" in results  # A pretraining run ends with kNN retrieval.

    finetune = tiny_config(tiny_dataset, stage="finetune", init_from=workdir)
    spec = make_state_spec(finetune, 2, sharding.make_mesh(finetune.mesh))
    loaded = load_pretrained(initial_state(spec), workdir, "r3d_18")
    encoder = pretrained.restore_encoder(workdir)
    assert encoder["params"] and not any(k.startswith("encoder.") for k in encoder["params"])
    got = pretrained.flat_arrays(loaded["params"])
    assert set(got) == set(encoder["params"])
    for key, value in encoder["params"].items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    stats = pretrained.flat_arrays(loaded["model_state"])
    for key, value in encoder["model_state"].items():
        np.testing.assert_array_equal(stats[key], value, err_msg=key)
