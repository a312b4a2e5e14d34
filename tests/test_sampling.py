import numpy as np
import pytest

from vssl_jax.data import sampling, transforms


def test_random_clip_covers_every_valid_start_and_stays_in_range():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(400):
        indices = sampling.random_clip_indices(20, 4, 3, rng)
        np.testing.assert_array_equal(np.diff(indices), 3)
        assert indices[0] >= 0 and indices[-1] < 20
        starts.add(int(indices[0]))
    # Span is 10 frames, so starts 0..10 are all possible and nothing else is.
    assert starts == set(range(11))


def test_short_video_loops_from_frame_zero():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(sampling.random_clip_indices(5, 4, 2, rng), [0, 2, 4, 1])
    np.testing.assert_array_equal(sampling.linspace_clip_indices(5, 4, 2, 1), [[0, 2, 4, 1]])


def test_linspace_clips_are_evenly_spread_and_centre_clip_is_centred():
    clips = sampling.linspace_clip_indices(100, 8, 2, 3)  # span 15, last start 85
    np.testing.assert_array_equal(clips[:, 0], [0, 42, 85])
    np.testing.assert_array_equal(clips[1], 42 + 2 * np.arange(8))
    np.testing.assert_array_equal(sampling.linspace_clip_indices(100, 8, 2, 1)[0, 0], 42)


def test_same_seed_same_clip_different_seed_different_clips():
    a = [sampling.random_clip_indices(300, 8, 2, np.random.default_rng(7))[0] for _ in range(3)]
    assert len(set(a)) == 1
    b = {
        int(sampling.random_clip_indices(300, 8, 2, np.random.default_rng(s))[0]) for s in range(10)
    }
    assert len(b) > 5


def test_crops_are_the_same_window_in_every_frame():
    video = np.arange(3 * 10 * 12 * 3, dtype=np.uint8).reshape(3, 10, 12, 3)
    crop = transforms.random_crop(video, 6, np.random.default_rng(1))
    assert crop.shape == (3, 6, 6, 3)
    # Locate the window in frame 0 and check every frame used the same one.
    matches = [
        (top, left)
        for top in range(5)
        for left in range(7)
        if np.array_equal(video[0, top : top + 6, left : left + 6], crop[0])
    ]
    assert len(matches) == 1
    top, left = matches[0]
    np.testing.assert_array_equal(crop, video[:, top : top + 6, left : left + 6])
    np.testing.assert_array_equal(transforms.center_crop(video, 6), video[:, 2:8, 3:9])


def test_flip_mirrors_columns_and_happens_half_the_time():
    video = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    rng = np.random.default_rng(0)
    flipped = [not np.array_equal(transforms.random_flip(video, rng), video) for _ in range(400)]
    assert 0.4 < np.mean(flipped) < 0.6
    rng = np.random.default_rng(0)
    while np.array_equal(out := transforms.random_flip(video, rng), video):
        pass
    np.testing.assert_array_equal(out, video[:, :, ::-1])


def test_crop_larger_than_frame_is_a_clear_error():
    video = np.zeros((2, 20, 30, 3), np.uint8)
    with pytest.raises(
        transforms.ClipError, match="v.mp4: frames are 20x30, smaller than crop_size 24"
    ):
        transforms.center_crop(video, 24, "v.mp4")


def test_decode_frames_decodes_only_requested_frames(monkeypatch):
    import simplejpeg

    frames = [simplejpeg.encode_jpeg(np.full((8, 8, 3), 10 * i, np.uint8), 95) for i in range(6)]
    calls = []
    real = simplejpeg.decode_jpeg
    monkeypatch.setattr(
        transforms.simplejpeg, "decode_jpeg", lambda b, **k: calls.append(b) or real(b, **k)
    )
    video = transforms.decode_frames(frames, np.array([4, 1, 4]), "v")
    assert len(calls) == 2  # frame 4 decoded once, frames 0, 2, 3, 5 never
    assert video.shape == (3, 8, 8, 3)
    np.testing.assert_allclose(video[:, 0, 0, 0], [40, 10, 40], atol=2)
    bad = frames[:1] + [b"not a jpeg"]
    with pytest.raises(transforms.ClipError, match="clip.mp4: frame 1 cannot be decoded"):
        transforms.decode_frames(bad, np.array([0, 1]), "clip.mp4")


def test_segment_indices_take_one_frame_from_each_equal_segment():
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices = sampling.segment_indices(30, 3, rng)
        assert [i // 10 for i in indices] == [0, 1, 2]  # one frame in each third
    np.testing.assert_array_equal(sampling.segment_indices(30, 3), [5, 15, 25])  # centres
    np.testing.assert_array_equal(sampling.segment_indices(30, 3, offset=0.0), [0, 10, 20])
    # Fewer frames than segments: frames repeat, nothing out of range.
    np.testing.assert_array_equal(sampling.segment_indices(2, 4), [0, 0, 1, 1])


def test_tsn_views_spread_over_the_whole_video():
    from vssl_jax.data import pipeline

    spec = pipeline.ClipSpec(
        num_frames=3, frame_stride=1, crop_size=8, sampler="segments", num_test_clips=2
    )
    np.testing.assert_array_equal(spec.test_indices(60), [[5, 25, 45], [15, 35, 55]])
    train = spec.train_indices(60, np.random.default_rng(1))
    assert [i // 20 for i in train] == [0, 1, 2]
