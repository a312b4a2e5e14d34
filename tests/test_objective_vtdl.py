"""VTDL (`vtdl`): the loss with its temporal negative against a NumPy reference, the temporal
triplet sampler, TCA (intra-video mixup) and the basic augmentation, one real train step."""

import functools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import simplejpeg
from flax import nnx

from configs import pretrain_vtdl_hmdb51, pretrain_vtdl_kinetics, pretrain_vtdl_ucf101
from tests.conftest import tiny_config
from tests.test_objective_moco import (
    decode_codes,
    frame_coded_record,
    numpy_contrastive_loss,
    objective_config,
    random_arrays,
    tiny_model,
)
from vssl_jax import objectives, optimizers, sharding, train
from vssl_jax.data import records, video_augment
from vssl_jax.data.pipeline import ClipSpec
from vssl_jax.objectives import vtdl
from vssl_jax.state import make_state_spec

# ---------------------------------------------------------------- Loss


def check_loss_against_numpy(temporal_negatives: bool, rng: np.random.Generator) -> None:
    config = objective_config(
        "vtdl",
        queue_size=5,
        embedding_dim=4,
        momentum=0.5,
        temperature=0.07,
        temporal_negatives=temporal_negatives,
    )
    graphdef, state = nnx.split(tiny_model(vtdl.build_vtdl, config))
    views = 3 if temporal_negatives else 2
    video = jnp.asarray(rng.uniform(-1, 1, (3, views, 2, 4, 4, 3)), jnp.float32)

    @jax.jit
    def run(video):
        model = nnx.merge(graphdef, state, copy=True)
        queue = model.queue.get_value()
        batch = {"video": video}
        loss, metrics = vtdl.vtdl_loss(model, batch, train=True, rngs=nnx.Rngs(0), config=config)
        queries = model.queries(video[:, 0], train=True)
        keys = model.keys(video[:, 1], train=True)
        negatives = model.queries(video[:, 2], train=True) if temporal_negatives else None
        return loss, metrics, queries, keys, negatives, queue

    loss, metrics, q, k, n, queue = run(video)
    reference = numpy_contrastive_loss(q, k, queue, 0.07, negatives=n)
    np.testing.assert_allclose(float(loss), reference, rtol=1e-5)
    assert ("temporal_negative_similarity" in metrics) == temporal_negatives
    # The seed's queue starts as U(-sqrt(3/d), sqrt(3/d)) vectors, not unit ones.
    assert np.abs(queue).max() <= (3 / 4) ** 0.5


def test_loss_matches_numpy_reference_with_and_without_temporal_negatives():
    rng = np.random.default_rng(0)
    check_loss_against_numpy(True, rng)
    check_loss_against_numpy(False, rng)


def test_a_batch_without_the_temporal_negative_view_is_refused():
    config = objective_config("vtdl", queue_size=5, embedding_dim=4)
    model = tiny_model(vtdl.build_vtdl, config)
    video = jnp.zeros((2, 2, 2, 4, 4, 3))
    with pytest.raises(ValueError, match=r"\[batch, 3, time"):
        vtdl.vtdl_loss(model, {"video": video}, train=False, rngs=nnx.Rngs(0), config=config)


# ---------------------------------------------------------------- Augmentations


def test_mix_static_frame_adds_one_frame_with_the_given_weight():
    rng = np.random.default_rng(1)
    video = rng.integers(0, 256, (4, 3, 5, 3), np.uint8)
    mixed = video_augment.mix_static_frame(video, 2, 0.08)
    expected = np.empty_like(video)
    for t in range(4):
        for index in np.ndindex(video.shape[1:]):
            value = 0.92 * float(video[t][index]) + 0.08 * float(video[2][index])
            expected[t][index] = int(np.floor(value + 0.5))
    assert np.abs(mixed.astype(int) - expected.astype(int)).max() <= 1  # Ties round to even.
    # Frame differences shrink by (1 - weight): the mixup only rescales motion.
    difference = np.diff(mixed.astype(float), axis=0) - 0.92 * np.diff(video.astype(float), axis=0)
    assert np.abs(difference).max() <= 1.0


def test_rotate_crop_turns_counter_clockwise_about_the_centre():
    rng = np.random.default_rng(2)
    video = rng.integers(1, 256, (2, 7, 7, 3), np.uint8)
    np.testing.assert_array_equal(
        video_augment.rotate_crop(video, 90, 0, 0, 7), np.rot90(video, 1, axes=(1, 2))
    )
    np.testing.assert_array_equal(
        video_augment.rotate_crop(video, 180, 0, 0, 7), video[:, ::-1, ::-1]
    )
    np.testing.assert_array_equal(video_augment.rotate_crop(video, 0, 1, 2, 4), video[:, 1:5, 2:6])
    turned = video_augment.rotate_crop(video, 45, 0, 0, 7)
    assert (turned[:, 0, 0] == 0).all() and (turned[:, 3, 3] == video[:, 3, 3]).all()


def noise_record(num_frames: int = 12, size: int = 40) -> tuple[records.VideoRecord, np.ndarray]:
    """A video of random frames and the frames as the pipeline decodes them."""
    frames = np.random.default_rng(3).integers(0, 256, (num_frames, size, size, 3), np.uint8)
    jpegs = [simplejpeg.encode_jpeg(f, 95) for f in frames]
    record = records.VideoRecord(
        frames=jpegs, label=1, label_text="1", path="noise", start_time=0.0, end_time=1.2, fps=10.0
    )
    return record, np.stack([simplejpeg.decode_jpeg(j, colorspace="RGB") for j in jpegs])


def vtdl_views(spec, **keys):
    config = objective_config(
        "vtdl",
        **{"basic_augment": False, "temporal_consistency_augment": False, **keys},
    )
    return vtdl.vtdl_clips(spec, config)


def test_triplet_anchor_and_positive_share_frames_and_the_negative_is_elsewhere_in_the_video():
    spec = ClipSpec(num_frames=4, frame_stride=2, crop_size=32, flip=False)
    views = vtdl_views(spec)
    rng = np.random.default_rng(4)
    for video_id in range(6):
        example = views(frame_coded_record(16, video_id), rng)
        assert example["video"].shape == (3, 4, 32, 32, 3)
        (anchor, ids_a), (positive, ids_p), (negative, ids_n) = map(decode_codes, example["video"])
        assert set(ids_a) == set(ids_p) == set(ids_n) == {video_id}
        np.testing.assert_array_equal(anchor, positive)
        assert abs(int(negative[0]) - int(anchor[0])) >= 2
        np.testing.assert_array_equal(np.diff(negative), 2)
    example = vtdl_views(spec, temporal_negatives=False)(frame_coded_record(16, 0), rng)
    assert example["video"].shape == (2, 4, 32, 32, 3)


def test_tca_anchor_is_the_positive_plus_one_of_its_frames_weighted_up_to_a_tenth():
    """Crop = frame size and no other augmentation, so the positive is the decoded clip and the
    anchor must be (1 - w) clip + w clip[k] for some frame k and w in [0, 0.1]."""
    record, _ = noise_record()
    spec = ClipSpec(num_frames=4, frame_stride=2, crop_size=40, flip=False)
    views = vtdl_views(spec, temporal_consistency_augment=True, temporal_negatives=False)
    rng = np.random.default_rng(5)
    weights = []
    for _ in range(5):
        anchor, positive = views(record, rng)["video"].astype(np.float64)
        fits = []
        for k in range(4):
            direction = positive[k] - positive  # [T, H, W, 3]
            weight = np.sum((anchor - positive) * direction) / np.sum(direction**2)
            fits.append((np.abs(anchor - positive - weight * direction).max(), weight))
        residual, weight = min(fits)
        # Rounding to uint8 and the least-squares weight leave at most about one level.
        assert residual <= 1.0 and -1e-3 <= weight <= 0.1 + 1e-3
        weights.append(weight)
    assert max(weights) > 0.02 and len(set(np.round(weights, 3))) > 1  # A new weight per clip.


def test_basic_augment_draws_one_rotation_and_jitter_per_clip():
    """A still video stays still under BA (every frame gets the same transform), while anchor and
    positive get different draws."""
    frame = np.random.default_rng(6).integers(0, 256, (40, 40, 3), np.uint8)
    jpeg = simplejpeg.encode_jpeg(frame, 95)
    record = records.VideoRecord(
        frames=[jpeg] * 10,
        label=0,
        label_text="0",
        path="still",
        start_time=0.0,
        end_time=1.0,
        fps=10.0,
    )
    spec = ClipSpec(num_frames=4, frame_stride=2, crop_size=32, flip=False)
    example = vtdl_views(spec, basic_augment=True, temporal_negatives=False)(
        record, np.random.default_rng(7)
    )
    for clip in example["video"]:
        assert all(np.array_equal(clip[0], clip[t]) for t in range(1, 4))
    assert not np.array_equal(example["video"][0], example["video"][1])


# ---------------------------------------------------------------- The real train step


@pytest.fixture
def quick_compile(monkeypatch):
    """Unoptimised XLA and native 3D convs: this step compiles once and runs once."""
    monkeypatch.setenv("VSSL_JAX_CONV3D", "native")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def test_one_train_step_of_c3d_with_every_switch_on(quick_compile):
    """The seed's encoder, C3D (8 frames: it pools time by 8), through the loop's train step."""
    config = tiny_config("", **{"model.name": "c3d", "data.num_frames": 8})
    with config.unlocked():
        config.objective = objective_config("vtdl", queue_size=16, embedding_dim=8)
    spec = make_state_spec(config, 2, sharding.make_mesh(config.mesh))
    assert objectives.get("vtdl").final_eval == "knn"
    params = random_arrays(spec.abstract["params"])
    state = {
        "params": params,
        "model_state": random_arrays(spec.abstract["model_state"]),
        "opt_state": spec.tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.PRNGKey(0),
    }
    step = functools.partial(
        train.train_step,
        spec=spec,
        config=config,
        objective=objectives.get("vtdl").loss,
        schedule=optimizers.learning_rate_schedule(config.optimizer, config.num_train_steps),
    )
    rng = np.random.default_rng(8)
    batch = {
        "video": jnp.asarray(rng.integers(0, 256, (4, 3, 8, 32, 32, 3), np.uint8)),
        "label": jnp.zeros((4,), jnp.int32),
    }
    new_state, metrics = jax.jit(step)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
    assert np.isfinite(float(metrics["grad_norm"])) and float(metrics["grad_norm"]) > 0
    for name in ("convs", "norms"):
        before = jax.tree.leaves(state["params"]["encoder"][name])
        after = jax.tree.leaves(new_state["params"]["encoder"][name])
        assert not any(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert int(new_state["model_state"]["queue_pointer"].get_value()) == 4


# ---------------------------------------------------------------- Configs

SWITCHES = ("basic_augment", "temporal_negatives", "temporal_consistency_augment")
OBJECTIVE_KEYS = {
    "name",
    "embedding_dim",
    "head_layers",
    "queue_size",
    "momentum",
    "temperature",
    "rotation_degrees",
    "color_jitter",
    "negative_min_gap",
    "tca_max_weight",
    *SWITCHES,
}


def test_ablation_rows_add_one_switch_each_and_set_the_views():
    rows = {}
    spec = ClipSpec(num_frames=4, frame_stride=2, crop_size=32, flip=False)
    for row in ("baseline", "ba", "td", "tca"):
        objective = pretrain_vtdl_ucf101.get_config(f"{row}+smoke").objective
        assert set(objective.keys()) == OBJECTIVE_KEYS  # A misspelt key would be read as absent.
        rows[row] = tuple(objective[s] for s in SWITCHES)
        example = vtdl.vtdl_clips(spec, objective)(
            frame_coded_record(12, 0), np.random.default_rng(9)
        )
        assert example["video"].shape[0] == (3 if objective.temporal_negatives else 2)
    assert rows == {
        "baseline": (False, False, False),
        "ba": (True, False, False),
        "td": (True, True, False),
        "tca": (True, True, True),
    }
    assert pretrain_vtdl_ucf101.get_config("demo") == pretrain_vtdl_ucf101.get_config("tca+demo")


def test_dataset_recipes_follow_the_seed_scripts():
    for module, batch, queue, steps_per_epoch in (
        (pretrain_vtdl_ucf101, 8, 5000, 9537 // 8),
        (pretrain_vtdl_hmdb51, 16, 3569, 3570 // 16),
        (pretrain_vtdl_kinetics, 10, 12500, 23464 // 10),
    ):
        config = module.get_config("td")
        assert (config.batch_size, config.objective.queue_size) == (batch, queue)
        assert config.model.name == "i3d" and config.objective.temperature == 0.07
        assert (config.data.num_frames, config.data.frame_stride, config.data.crop_size) == (
            16,
            4,
            224,
        )
        assert config.num_train_steps == 240 * steps_per_epoch
        assert tuple(config.optimizer.lr_steps) == tuple(
            e * steps_per_epoch for e in (120, 160, 200)
        )
    with pytest.raises(ValueError, match="unknown VTDL variant"):
        pretrain_vtdl_ucf101.get_config("tca+ba+nope")


def test_views_pickle_for_grain_workers():
    spec = ClipSpec(num_frames=4, frame_stride=2, crop_size=32, flip=True)
    views = vtdl.vtdl_clips(spec, pretrain_vtdl_hmdb51.get_config("smoke").objective)
    restored = pickle.loads(pickle.dumps(views))
    record = frame_coded_record(12, 1)
    np.testing.assert_array_equal(
        restored(record, np.random.default_rng(10))["video"],
        views(record, np.random.default_rng(10))["video"],
    )
