"""VideoMAE (`videomae`): tube masking, the loss against a NumPy computation written here, the
encoder's view of visible tokens only, one train step, and pretrain -> finetune by path."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import vssl_jax.models.video_vit  # noqa: F401  (registers vivit_joint)
from tests.conftest import tiny_config
from vssl_jax import checkpoint, objectives, optimizers, plots, sharding, train
from vssl_jax.data import pipeline
from vssl_jax.models import video_vit
from vssl_jax.objectives import videomae
from vssl_jax.state import initial_state, load_pretrained, make_state_spec

TUBELET = (2, 8, 8)


def _model(decoder_width=8):
    encoder = video_vit.vivit_joint(
        3,
        width=16,
        depth=1,
        num_heads=2,
        patch=8,
        image_size=32,
        num_frames=4,
        rngs=nnx.Rngs(0),
    )
    config = ml_collections.ConfigDict(
        {"decoder_width": decoder_width, "decoder_depth": 1, "decoder_heads": 2}
    )
    return videomae.build_videomae(encoder, config, nnx.Rngs(1))


# ---------------------------------------------------------------- Masking


@pytest.mark.parametrize(
    "grid, ratio, per_frame", [((2, 4, 4), 0.9, 14), ((4, 4, 4), 0.75, 12), ((3, 3, 3), 0.5, 4)]
)
def test_tube_mask_masks_int_ratio_of_each_frame_the_same_in_every_slice(grid, ratio, per_frame):
    t, h, w = grid
    mask = np.asarray(videomae.tube_mask(jax.random.key(0), 64, grid, ratio))
    assert mask.shape == (64, t * h * w) and mask.dtype == bool
    slices = mask.reshape(64, t, h * w)
    assert (slices.sum(-1) == per_frame).all()  # int(ratio * h * w) per temporal slice
    assert (slices == slices[:, :1]).all()  # the same positions in every slice
    assert len({row.tobytes() for row in slices[:, 0]}) > 32  # drawn per clip
    # Every position is masked about as often as any other: uniform over positions.
    assert np.abs(slices[:, 0].mean(0) - per_frame / (h * w)).max() < 0.25


def test_mask_ratios_that_leave_nothing_to_see_or_predict_are_refused():
    with pytest.raises(ValueError, match="masks 16 of the 16"):
        videomae.tube_mask(jax.random.key(0), 1, (2, 4, 4), 1.0)
    with pytest.raises(ValueError, match="masks 0 of the 16"):
        videomae.tube_mask(jax.random.key(0), 1, (2, 4, 4), 0.05)


def test_split_tokens_gives_visible_and_masked_indices_in_order():
    rng = np.random.default_rng(0)
    mask = np.stack([rng.permutation(np.repeat([True, False], [5, 3])) for _ in range(2)])
    visible, masked = videomae.split_tokens(jnp.asarray(mask), 3)
    for row in range(2):
        np.testing.assert_array_equal(visible[row], np.flatnonzero(~mask[row]))
        np.testing.assert_array_equal(masked[row], np.flatnonzero(mask[row]))


# ---------------------------------------------------------------- Loss


def _numpy_tubelets(video):
    """[B, T, H, W, C] -> [B, tokens, pixels, C] with loops over the grid."""
    batch, frames, height, width, channels = video.shape
    pt, ph, pw = TUBELET
    out = []
    for b in range(batch):
        tubes = []
        for t, i, j in np.ndindex(frames // pt, height // ph, width // pw):
            tube = video[b, pt * t : pt * (t + 1), ph * i : ph * (i + 1), pw * j : pw * (j + 1)]
            tubes.append(tube.reshape(-1, channels))
        out.append(tubes)
    return np.asarray(out, np.float64)


@pytest.mark.parametrize("normalize_target", [True, False])
def test_loss_equals_numpy_mse_of_masked_tubelets(normalize_target):
    model = _model()
    rng = np.random.default_rng(1)
    video = rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    config = ml_collections.ConfigDict({"mask_ratio": 0.75, "normalize_target": normalize_target})
    # The same mask as the loss draws (its first draw from the augment stream).
    mask = np.asarray(videomae.tube_mask(nnx.Rngs(augment=3).augment(), 2, (2, 4, 4), 0.75))
    visible = np.stack([np.flatnonzero(~m) for m in mask])
    masked = np.stack([np.flatnonzero(m) for m in mask])
    assert visible.shape == (2, 8) and masked.shape == (2, 24)
    # A flat masked tubelet: its normalised target is 0 (the 1e-6 keeps it finite).
    i, j = divmod(int(masked[0, 0]) % 16, 4)
    video[0, 2:4, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8] = 0.25

    @nnx.jit  # one compilation instead of an op-by-op run
    def run(model, video, visible, masked):
        loss, metrics = videomae.videomae_loss(
            model, {"video": video}, train=False, rngs=nnx.Rngs(augment=3), config=config
        )
        encoded = model.encode_visible(video, visible, train=False, rngs=None)
        return loss, metrics, model.decode(encoded, visible, masked, 32, train=False, rngs=None)

    loss, metrics, prediction = run(model, jnp.asarray(video), visible, masked)
    prediction = np.asarray(prediction).reshape(2, 24, 128, 3)
    tubes = _numpy_tubelets(video)
    pixels = np.stack([tubes[b, masked[b]] for b in range(2)])  # [2, 24, 128, 3]
    if normalize_target:
        mean = pixels.mean(axis=2, keepdims=True)
        std = pixels.std(axis=2, ddof=1, keepdims=True) + 1e-6
        targets = (pixels - mean) / std
        # The prediction mapped back to pixels with its target's own statistics.
        pixel_mse = np.mean(np.square(prediction * std + mean - pixels))
    else:
        targets = pixels
        pixel_mse = np.mean(np.square(prediction - pixels))
    expected = np.mean(np.square(prediction - targets))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["pixel_mse"]), pixel_mse, rtol=1e-4)


def test_encoder_sees_only_visible_tokens():
    """Changing the pixels of masked tubelets leaves the encoder's output unchanged; changing one
    visible pixel changes it."""
    model = _model()
    video = np.random.default_rng(2).normal(size=(1, 4, 32, 32, 3)).astype(np.float32)
    mask = np.asarray(videomae.tube_mask(jax.random.key(5), 1, (2, 4, 4), 0.75))
    visible, _ = videomae.split_tokens(jnp.asarray(mask), 8)
    frame = mask[0, :16].reshape(4, 4)  # the spatial positions masked in every slice

    run = nnx.jit(lambda model, v: model.encode_visible(v, visible, train=False, rngs=None))

    def encoded(v):
        return np.asarray(run(model, jnp.asarray(v)))

    changed = video.copy()
    for i, j in zip(*np.nonzero(frame), strict=True):
        changed[0, :, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8] += 5.0
    np.testing.assert_array_equal(encoded(changed), encoded(video))
    i, j = np.argwhere(~frame)[0]
    poked = video.copy()
    poked[0, 3, 8 * i, 8 * j] += 5.0
    assert not np.allclose(encoded(poked), encoded(video))


# ---------------------------------------------------------------- Pictures


def test_unpatchify_inverts_patchify_in_numpy_order():
    video = np.random.default_rng(3).normal(size=(2, 4, 32, 16, 3)).astype(np.float32)
    tubelets = videomae.patchify(jnp.asarray(video), TUBELET)
    np.testing.assert_array_equal(tubelets, _numpy_tubelets(video).astype(np.float32))
    np.testing.assert_array_equal(videomae.unpatchify(tubelets, (2, 4, 2), TUBELET), video)


@pytest.mark.parametrize("normalize_target", [True, False])
def test_reconstructions_keep_visible_tubelets_and_map_predictions_back(normalize_target):
    model = _model()
    video = np.random.default_rng(4).normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    config = ml_collections.ConfigDict({"mask_ratio": 0.75, "normalize_target": normalize_target})
    key = jax.random.key(7)
    mask = np.asarray(videomae.tube_mask(key, 2, (2, 4, 4), 0.75))
    visible = np.stack([np.flatnonzero(~m) for m in mask])
    masked = np.stack([np.flatnonzero(m) for m in mask])

    @nnx.jit
    def run(model, video):
        rows = videomae.reconstructions(model, video, key, config)
        encoded = model.encode_visible(video, visible, train=False, rngs=None)
        return rows, model.decode(encoded, visible, masked, 32, train=False, rngs=None)

    rows, prediction = run(model, jnp.asarray(video))
    prediction = np.asarray(prediction).reshape(2, 24, 128, 3)
    assert set(rows) == {"original", "masked input", "reconstruction"}
    np.testing.assert_array_equal(rows["original"], video)
    true = _numpy_tubelets(video)  # [2, 32 tokens, 128 pixels, 3]
    shown = _numpy_tubelets(np.asarray(rows["masked input"]))
    rebuilt = _numpy_tubelets(np.asarray(rows["reconstruction"]))
    for b in range(2):
        assert np.isnan(shown[b, masked[b]]).all()
        np.testing.assert_array_equal(shown[b, visible[b]], true[b, visible[b]])
        np.testing.assert_allclose(rebuilt[b, visible[b]], true[b, visible[b]], rtol=0, atol=1e-6)
        guess = rebuilt[b, masked[b]]
        if normalize_target:  # back to the target's units with the true tubelet's statistics
            pixels = true[b, masked[b]]
            mean = pixels.mean(axis=1, keepdims=True)
            scale = pixels.std(axis=1, ddof=1, keepdims=True) + 1e-6
            guess = (guess - mean) / scale
        np.testing.assert_allclose(guess, prediction[b], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- Training


# `tiny_config` overrides: a one-block joint ViT on 4x32x32 clips and a one-block decoder.
TINY_VIDEOMAE = {
    "model.name": "vivit_joint",
    "model.width": 16,
    "model.depth": 1,
    "model.num_heads": 2,
    "model.patch": 8,
    "model.image_size": 32,
    "model.num_frames": 4,
    "objective.name": "videomae",
    "objective.mask_ratio": 0.75,
    "objective.decoder_width": 8,
    "objective.decoder_depth": 1,
    "objective.decoder_heads": 2,
}


@pytest.fixture
def quick_compile():
    """Unoptimised XLA: the step compiles about twice as fast and runs once."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def test_one_train_step_moves_encoder_and_decoder(quick_compile):
    config = tiny_config(
        "",
        **TINY_VIDEOMAE,
        **{
            "model.drop_path": 0.1,
            "optimizer.name": "adamw",
            "optimizer.lr": 1e-3,
            "optimizer.weight_decay": 0.0,
        },
    )
    spec = make_state_spec(config, 2, sharding.make_mesh(config.mesh))
    step = functools.partial(
        train.train_step,
        spec=spec,
        config=config,
        objective=objectives.get("videomae").loss,
        schedule=optimizers.learning_rate_schedule(config.optimizer, config.num_train_steps),
    )
    state = initial_state(spec)
    batch = {
        "video": jnp.asarray(
            np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3), np.uint8)
        ),
        "label": jnp.asarray([0, 1], jnp.int32),
    }
    before = jax.tree.map(np.asarray, state["params"])
    new_state, metrics = jax.jit(step)(state, batch)
    assert 0.5 < float(metrics["loss"]) < 2.0  # ~1: normalised targets, near-zero predictions
    assert np.isfinite(float(metrics["grad_norm"])) and float(metrics["pixel_mse"]) > 0
    after = jax.tree.map(np.asarray, new_state["params"])
    unchanged = {
        sharding.path_string(path)
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(after), strict=True
        )
        if np.array_equal(a, b)
    }
    # The classifier is not used by pretraining; everything else gets a gradient.
    assert unchanged == {"encoder/head/kernel", "encoder/head/bias"}


def test_pictures_of_a_run_are_the_objectives_rows_in_pixels(tiny_dataset, tmp_path):
    config = tiny_config(
        tiny_dataset,
        **TINY_VIDEOMAE,
    )
    mesh = sharding.make_mesh(config.mesh)
    spec = make_state_spec(config, 2, mesh)
    rows = plots.objective_pictures(
        objectives.get("videomae").pictures,
        spec,
        config,
        initial_state(spec),
        mesh,
        tiny_dataset,
        num_videos=2,
    )
    assert list(rows) == ["original", "masked input", "reconstruction"]  # the objective's order
    source = pipeline.split_source(tiny_dataset, "val")
    views = pipeline.EvalClip(source, np.arange(2), pipeline.clip_spec(config.data))
    clips = np.stack([views(i)["video"][0] for i in range(2)]) / 255.0
    np.testing.assert_allclose(rows["original"], clips, atol=1e-6)
    hidden = np.isnan(rows["masked input"])
    assert hidden.mean() == 0.75  # 12 of each slice's 16 tubelets
    np.testing.assert_allclose(rows["masked input"][~hidden], clips[~hidden], atol=1e-6)
    assert np.isfinite(rows["reconstruction"]).all()
    path = plots.clip_rows(str(tmp_path), "videomae.png", rows)
    from PIL import Image

    assert Image.open(path).size == (760, 960)  # 4 frames across, 2 videos x 3 rows down


def test_finetuning_restores_the_pretrained_encoder_by_path(tmp_path):
    from configs import finetune_videomae_ucf101, pretrain_videomae_ucf101

    def small(config):
        with config.unlocked():
            config.model.width = 8
            config.model.num_heads = 2
            config.model.depth = 1
        return config

    pretrain = small(pretrain_videomae_ucf101.get_config("smoke"))
    finetune = small(finetune_videomae_ucf101.get_config("smoke"))
    assert finetune.model.name == "vivit_joint" and finetune.objective.name == "supervised"
    mesh = sharding.make_mesh(pretrain.mesh)
    pretrained = initial_state(make_state_spec(pretrain, 6, mesh))
    # Both stages initialise the encoder from the same seed: move the pretrained arrays away.
    pretrained["params"] = jax.tree.map(lambda x: x + 1.0, pretrained["params"])
    saver = checkpoint.Checkpointer(str(tmp_path), max_to_keep=1, async_save=False)
    saver.save(1, pretrained)
    saver.close()
    fresh = initial_state(make_state_spec(finetune, 6, mesh))
    loaded = load_pretrained(fresh, str(tmp_path), "vivit_joint")

    def flat(tree):
        return {
            sharding.path_string(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
        }

    source, target, start = (
        flat(pretrained["params"]),
        flat(loaded["params"]),
        flat(fresh["params"]),
    )
    assert set(target) == {k[len("encoder/") :] for k in source if k.startswith("encoder/")}
    heads = {k for k in source if not k.startswith("encoder/")}
    assert {"mask_token", "encoder_to_decoder/kernel", "pixel_head/kernel"} <= heads
    for key, value in target.items():
        np.testing.assert_array_equal(value, source[f"encoder/{key}"], err_msg=key)
        assert not np.array_equal(value, start[key]), key
