"""The built-in demo dataset: motion rules, uninformative single frames, real video, conversion.

Motion is measured on the rendered pixels with estimators independent of the renderer: phase
correlation for translation, angular correlation of polar samples around the digit's own centroid
for rotation. Both work on the "digit layer", the part of each pixel brighter than the darkened
photo can be.
"""

from __future__ import annotations

import json
import os
import time

import av
import ml_collections
import numpy as np
import pytest
import simplejpeg
from scipy import ndimage, stats
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from data_prep import demo
from vssl_jax.data import records

# The demo darkens its photo to at most 55% grey so the white digit stays the brightest thing in
# a frame: whatever lies above this level is (partly) digit.
_PHOTO_MAX = 0.55 * 255
_DIRECTIONS = {
    "move_left": (0, -1),
    "move_right": (0, 1),
    "move_up": (-1, 0),  # Rows count downwards: up on screen is -y.
    "move_down": (1, 0),
}


def _digit_layer(video: np.ndarray) -> np.ndarray:
    """How much of each pixel is digit. [T, H, W, 3] uint8 -> [T, H, W] float in [0, 1]."""
    grey = video.astype(np.float32).mean(-1)
    return np.clip((grey - _PHOTO_MAX) / (255 - _PHOTO_MAX), 0.0, 1.0)


def _wrap(d: np.ndarray, size: int) -> np.ndarray:
    """Offsets on a torus of side `size`, into [-size/2, size/2)."""
    return (d + size / 2) % size - size / 2


def _centroid(layer: np.ndarray) -> np.ndarray:
    """(y, x) centre of mass of an [H, W] layer on the torus: circular mean, then refined."""
    size = layer.shape[0]
    coords = np.arange(size)
    centre = []
    for profile in (layer.sum(1), layer.sum(0)):
        angle = np.angle(np.sum(profile * np.exp(2j * np.pi * coords / size)))
        rough = angle * size / (2 * np.pi)
        centre.append(rough + np.sum(profile * _wrap(coords - rough, size)) / profile.sum())
    return np.array(centre)


def _shift_per_frame(layer: np.ndarray, lag: int = 4) -> np.ndarray:
    """(dy, dx) px/frame by phase correlation of frames `lag` apart, pooled over the video."""
    spectra = np.fft.fft2(layer)
    cross = spectra[lag:] * np.conj(spectra[:-lag])
    cross /= np.abs(cross) + 1e-9
    # The pooled correlation peaks at the shift s with frame[t + lag](p) = frame[t](p - s).
    correlation = np.fft.ifft2(cross.sum(0)).real
    peak = np.unravel_index(np.argmax(correlation), correlation.shape)
    return _wrap(np.array(peak, dtype=float), layer.shape[-1]) / lag


def _turn_per_frame(layer: np.ndarray) -> float:
    """Rotation in degrees/frame, clockwise on screen positive, of the digit about its centroid.

    Each frame is sampled on rings around its own centroid (a rotation about any point is one
    about the centroid plus a translation); the angle runs from +x towards +y, i.e. clockwise on
    screen because rows count downwards. The pooled angular correlation of consecutive frames
    peaks at the turn.
    """
    radii = np.arange(2.0, 14.0)[:, None]
    theta = np.deg2rad(np.arange(360.0))
    rings = []
    for frame in layer:
        cy, cx = _centroid(frame)
        coords = [cy + radii * np.sin(theta), cx + radii * np.cos(theta)]
        rings.append(ndimage.map_coordinates(frame, coords, order=1, mode="grid-wrap"))
    rings = np.stack(rings)  # [T, radius, angle]
    spectra = np.fft.fft(rings - rings.mean(-1, keepdims=True), axis=-1)
    correlation = np.fft.ifft((spectra[1:] * np.conj(spectra[:-1])).sum((0, 1))).real
    lags = np.arange(-60, 61)  # Beyond the demo's 25 deg/frame, short of 180-degree look-alikes.
    return float(lags[np.argmax(correlation[lags % 360])])


def _assert_moves_as_named(class_name: str, video: np.ndarray) -> None:
    layer = _digit_layer(video)
    turn = _turn_per_frame(layer)
    if class_name in _DIRECTIONS:
        direction = np.array(_DIRECTIONS[class_name])
        shift = _shift_per_frame(layer)
        along, across = shift @ direction, shift @ direction[::-1]
        assert 1.5 - 0.3 <= along <= 3.0 + 0.3, (class_name, shift)
        assert abs(across) <= 0.3, (class_name, shift)
        assert abs(turn) <= 2, (class_name, turn)  # Fixed orientation.
    else:
        sign = 1 if class_name == "rotate_clockwise" else -1
        assert 12 - 2 <= sign * turn <= 25 + 2, (class_name, turn)
        # Fixed position: the centroid (about 3 px off the rotation centre) only circles it.
        centroids = np.stack([_centroid(frame) for frame in layer])
        spread = _wrap(centroids - centroids[0], layer.shape[-1])
        assert np.abs(spread).max() <= 8, (class_name, spread)


def _decode(path: str) -> tuple[np.ndarray, float]:
    """All frames of a video file and its average frame rate. [T, H, W, 3] uint8."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return np.stack(frames), float(stream.average_rate)


def test_render_is_a_deterministic_function_of_the_seed():
    for class_name in demo.CLASS_NAMES:
        video = demo.render_video(class_name, np.random.default_rng(7))
        assert video.shape == (24, 64, 64, 3) and video.dtype == np.uint8
        again = demo.render_video(class_name, np.random.default_rng(7))
        np.testing.assert_array_equal(video, again)
        other = demo.render_video(class_name, np.random.default_rng(8))
        assert np.abs(video.astype(int) - other).mean() > 5


def test_plain_background_keeps_the_digit_and_replaces_only_the_photo():
    for class_name in demo.CLASS_NAMES:
        photo = demo.render_video(class_name, np.random.default_rng(3)).astype(int)
        plain = demo.render_video(class_name, np.random.default_rng(3), background="plain")
        plain = plain.astype(int)
        # Where the photo version is pure white the digit covers the pixel in both.
        digit = (photo == 255).all(axis=-1)
        assert digit.any(axis=(1, 2)).all()
        assert (plain[digit] >= 250).all()
        # Everywhere else the plain background is one unchanging grey, below the digit.
        assert plain.min() == 60
        grey = (plain == 60).all(axis=-1)
        assert grey.mean() > 0.7
        assert np.abs(photo[grey] - 60).mean() > 5  # The photo version does differ there.
        _assert_moves_as_named(class_name, plain.astype(np.uint8))
    with pytest.raises(ValueError, match="unknown demo background 'noise'"):
        demo.render_video("move_up", np.random.default_rng(0), background="noise")


@pytest.mark.parametrize("class_name", demo.CLASS_NAMES)
def test_accelerating_motion_speeds_up_so_a_reversed_clip_is_no_class(class_name):
    """Constant motion: both halves of a video move equally fast, so played backward it is just
    another class. Accelerating: the second half is much faster, in the class's direction."""
    for seed in range(3):
        speeds = {}
        for motion in demo.MOTIONS:
            video = demo.render_video(
                class_name, np.random.default_rng(seed), background="plain", motion=motion
            )
            layer = _digit_layer(video)
            if class_name in _DIRECTIONS:
                direction = np.array(_DIRECTIONS[class_name])
                halves = [_shift_per_frame(half) @ direction for half in (layer[:12], layer[12:])]
            else:
                sign = 1 if class_name == "rotate_clockwise" else -1
                halves = [sign * _turn_per_frame(half) for half in (layer[:12], layer[12:])]
            speeds[motion] = halves
            if motion == "constant":
                first_frame = video[0]
            else:  # Same digit, start and direction: only the speed profile differs.
                np.testing.assert_array_equal(video[0], first_frame)
        early, late = speeds["constant"]
        assert early > 0 and late == pytest.approx(early, abs=0.3), speeds
        early, late = speeds["accelerating"]
        assert early > 0 and late > 1.4 * early, speeds
    with pytest.raises(ValueError, match="unknown demo motion 'jerky'"):
        demo.render_video("move_up", np.random.default_rng(0), motion="jerky")


def test_travel_in_frames_keeps_the_mean_speed():
    np.testing.assert_array_equal(demo.travel_in_frames(5, "constant"), [0, 1, 2, 3, 4])
    travel = demo.travel_in_frames(24, "accelerating")
    speeds = np.diff(travel)
    assert travel[0] == 0 and travel[-1] == pytest.approx(23)
    assert speeds[0] == pytest.approx(0.5 + 0.5 / 23) and speeds[-1] == pytest.approx(
        1.5 - 0.5 / 23
    )
    np.testing.assert_allclose(np.diff(speeds), 1 / 23)


@pytest.mark.parametrize("class_name", demo.CLASS_NAMES)
def test_each_class_moves_as_its_name_says(class_name):
    for seed in range(5):
        _assert_moves_as_named(
            class_name, demo.render_video(class_name, np.random.default_rng(seed))
        )


def _features(frames: np.ndarray) -> np.ndarray:
    """What K frames [K, H, W, 3] show, and for K > 1 how they relate, as one vector.

    Per frame: a grey 8x8 thumbnail (where the digit is), colour histograms (which photo), the
    digit layer's second moments (how the digit is turned). Per pair of frames, including a frame
    with itself: the digit layers' correlation at shifts of up to 3 px, which for two consecutive
    frames shows how the digit moved.
    """
    pixels = frames.astype(np.float32) / 255.0
    grey = pixels.mean(-1)
    count, height, width = grey.shape
    thumbnails = grey.reshape(count, 8, height // 8, 8, width // 8).mean((2, 4))
    histograms = [
        np.histogram(pixels[k, ..., c], bins=8, range=(0.0, 1.0))[0] / grey[k].size
        for k in range(count)
        for c in range(3)
    ]
    layer = _digit_layer(frames)
    moments = []
    for frame in layer:
        dy, dx = (_wrap(np.arange(height) - c, height) for c in _centroid(frame))
        mass = frame.sum() + 1e-6
        yy = np.sum(frame * dy[:, None] ** 2) / mass
        xx = np.sum(frame * dx[None, :] ** 2) / mass
        xy = np.sum(frame * dy[:, None] * dx[None, :]) / mass
        moments += [(xx - yy) / (xx + yy + 1e-6), 2 * xy / (xx + yy + 1e-6)]
    spectra = np.fft.fft2(layer)
    correlations = [
        np.roll(np.fft.ifft2(spectra[j] * np.conj(spectra[i])).real, (3, 3), (0, 1))[:7, :7]
        / grey[0].size
        for i in range(count)
        for j in range(i, count)
    ]
    return np.concatenate(
        [thumbnails.ravel(), *histograms, moments, *(c.ravel() for c in correlations)]
    )


def _frame_dataset(num_videos: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of one random frame, and of it with the next, from each of `num_videos` videos."""
    rng = np.random.default_rng(seed)
    labels = np.arange(num_videos) % len(demo.CLASS_NAMES)
    single, pair = [], []
    for label in labels:
        video = demo.render_video(demo.CLASS_NAMES[label], rng)
        t = rng.integers(len(video) - 1)
        single.append(_features(video[t : t + 1]))
        pair.append(_features(video[t : t + 2]))
    return np.stack(single), np.stack(pair), labels


def test_single_frames_carry_no_label_but_frame_pairs_do():
    train_single, train_pair, train_labels = _frame_dataset(600, seed=1)
    test_single, test_pair, test_labels = _frame_dataset(300, seed=2)
    # A classifier that knows nothing scores Binomial(n, 1/6) on the balanced held-out set;
    # beyond this bound it knows something (one-sided, p = 0.001).
    n = len(test_labels)
    chance_bound = stats.binom.ppf(1 - 1e-3, n, 1 / 6) / n

    def held_out_accuracy(train: np.ndarray, test: np.ndarray) -> float:
        classifier = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        return classifier.fit(train, train_labels).score(test, test_labels)

    assert held_out_accuracy(train_single, test_single) <= chance_bound
    # The same classifier, shown two consecutive frames, does read the label: the test can see it.
    assert held_out_accuracy(train_pair, test_pair) >= 0.5


def test_h264_round_trip_keeps_the_frames(tmp_path):
    for class_name in ("move_up", "rotate_counterclockwise"):
        video = demo.render_video(class_name, np.random.default_rng(3))
        path = str(tmp_path / f"{class_name}.mp4")
        demo.write_video(path, video, fps=8.0)
        decoded, fps = _decode(path)
        assert decoded.shape == video.shape
        assert fps == 8.0
        mse = np.mean((decoded.astype(np.float64) - video) ** 2, axis=(1, 2, 3))
        assert np.all(10 * np.log10(255.0**2 / mse) > 30)


def test_written_videos_are_filed_under_the_class_they_show(tmp_path):
    counts = {"train": 2, "val": 1}
    paths = demo.write_demo_videos(str(tmp_path / "a"), videos_per_class=counts, seed=3)
    assert paths == [
        str(tmp_path / "a" / split / name / f"{name}_{i:04d}.mp4")
        for split, count in counts.items()
        for name in demo.CLASS_NAMES
        for i in range(count)
    ]
    for name in demo.CLASS_NAMES:
        video, _ = _decode(str(tmp_path / "a" / "val" / name / f"{name}_0000.mp4"))
        assert video.shape == (24, 64, 64, 3)
        _assert_moves_as_named(name, video)
    # Each video has its own random stream: other counts leave it as it was.
    demo.write_demo_videos(str(tmp_path / "b"), videos_per_class={"val": 1}, seed=3)
    for name in demo.CLASS_NAMES:
        relative = os.path.join("val", name, f"{name}_0000.mp4")
        a, _ = _decode(str(tmp_path / "a" / relative))
        b, _ = _decode(str(tmp_path / "b" / relative))
        np.testing.assert_array_equal(a, b)


def _files(root: str) -> dict[str, int]:
    return {
        os.path.join(folder, name): os.stat(os.path.join(folder, name)).st_mtime_ns
        for folder, _, names in os.walk(root)
        for name in names
    }


def test_build_converts_the_videos_and_a_second_run_does_nothing(tmp_path, capsys):
    from array_record.python.array_record_module import ArrayRecordReader

    from data_prep.__main__ import main

    out = str(tmp_path / "demo")
    assert demo.build_demo_dataset(out, train_per_class=4, val_per_class=2, workers=1) == out
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    for split, count in (("train", 4), ("val", 2)):
        summary = manifest["splits"][split]
        assert summary["per_class"] == {name: count for name in demo.CLASS_NAMES}
        assert summary["num_frames"] == 24 * count * len(demo.CLASS_NAMES)
    with open(os.path.join(out, "label_map.json")) as f:
        assert json.load(f) == {name: i for i, name in enumerate(demo.CLASS_NAMES)}

    # The shards hold the motion their labels name.
    for path in records.shard_paths(out, "val"):
        reader = ArrayRecordReader(path)
        for raw in reader.read_all():
            record = records.parse_record(raw)
            name = demo.CLASS_NAMES[record.label]
            assert record.label_text == name and f"/{name}/" in record.path
            video = np.stack([simplejpeg.decode_jpeg(jpeg) for jpeg in record.frames])
            assert video.shape == (24, 64, 64, 3)
            _assert_moves_as_named(name, video)
        reader.close()
    capsys.readouterr()

    before = _files(out)
    began = time.monotonic()
    assert main(["demo", "--output", out, "--train-per-class", "4", "--val-per-class", "2"]) == 0
    assert time.monotonic() - began < 2
    assert _files(out) == before
    assert "nothing to do" in capsys.readouterr().out

    # Other options would mix two demos in one folder: a one-line error instead.
    assert main(["demo", "--output", out, "--train-per-class", "5", "--val-per-class", "2"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "--force" in error and error.count("\n") == 1
    assert _files(out) == before
    # So would another background; a photo demo's options name no background (older caches).
    assert (
        main(
            [
                "demo",
                "--output",
                out,
                "--train-per-class",
                "4",
                "--val-per-class",
                "2",
                "--background",
                "plain",
            ]
        )
        == 2
    )
    assert "'background'" not in capsys.readouterr().err.split("holds a demo built with")[1]
    assert _files(out) == before
    # And so would accelerating motion.
    args = ["demo", "--output", out, "--train-per-class", "4", "--val-per-class", "2"]
    assert main([*args, "--motion", "accelerating"]) == 2
    assert "'motion'" not in capsys.readouterr().err.split("holds a demo built with")[1]
    assert _files(out) == before


def test_each_demo_option_gets_its_own_cache_folder(monkeypatch, tmp_path):
    from configs import demo as demo_config
    from vssl_jax import datasets

    monkeypatch.setenv("VSSL_JAX_CACHE", str(tmp_path))
    data = demo_config.get_config().data
    # The default keeps the name caches had before the options existed.
    assert datasets.resolve(data) == str(tmp_path / "demo-64px-48x16-seed0")
    with data.unlocked():
        data.demo.background = "plain"
        data.demo.motion = "accelerating"
    assert datasets.resolve(data) == str(tmp_path / "demo-64px-48x16-seed0-plain-accelerating")
    # A config.json saved before the options existed (predict reloads it) names the old folder.
    saved = ml_collections.ConfigDict(json.loads(demo_config.get_config().to_json()))
    del saved.data.demo["background"], saved.data.demo["motion"]
    assert datasets.resolve(saved.data) == str(tmp_path / "demo-64px-48x16-seed0")
