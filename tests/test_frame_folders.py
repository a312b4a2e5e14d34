"""Frame folders made from real videos, in the three common layouts, against the videos.

The frames are extracted with the product's own decode (video_io), so a frame folder and its
video must give the very same records: JPEGs copied as they are when they already have the
requested size, and resized / re-encoded ones within JPEG noise of the resized video.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from data_prep import frames
from data_prep.__main__ import main
from data_prep.convert import convert
from data_prep.inspect import inspect_shards
from data_prep.sources import list_sources
from tests.real_videos import real_video_path
from vssl_jax import video_io
from vssl_jax.data import records

SHORT_SIDE = 64
CLIPS = {"clean": "carphone_pristine", "noisy": "carphone_distorted"}  # class -> clip.
CARPHONE_FPS = 30000 / 1001  # Both clips' frame rate.


def write_frames(folder, jpegs, pattern: str = "image_{:05d}.jpg", first: int = 1) -> str:
    """Writes frame files numbered from `first` with `pattern`; returns the folder."""
    os.makedirs(folder, exist_ok=True)
    for i, data in enumerate(jpegs):
        with open(os.path.join(folder, pattern.format(first + i)), "wb") as f:
            f.write(data)
    return str(folder)


def read_records(out) -> dict[str, records.VideoRecord]:
    """Every record of a converted folder, by the base name of its source path."""
    manifest = json.loads((out / "manifest.json").read_text())
    found = {}
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            source = records.VideoSource([str(out / shard)])
            for index in range(len(source)):
                record = source[index]
                found[os.path.basename(record.path)] = record
    return found


def convert_quietly(listing, out, **options) -> dict:
    defaults = dict(fps=None, short_side=SHORT_SIDE, workers=1, show_progress=False)
    return convert(listing, str(out), **(defaults | options))


@pytest.fixture(scope="module")
def extracted():
    """clip name -> its frames as JPEGs at SHORT_SIDE, as an extraction script would save them."""
    return {
        clip: video_io.decode_to_jpegs(
            real_video_path(f"{clip}.mp4"), fps=None, short_side=SHORT_SIDE
        ).frames
        for clip in CLIPS.values()
    }


@pytest.fixture(scope="module")
def video_records(tmp_path_factory):
    """The two real videos converted directly, at SHORT_SIDE, every frame and at 5 fps."""
    root = tmp_path_factory.mktemp("videos")
    for label, clip in CLIPS.items():
        os.makedirs(root / label)
        shutil.copy(real_video_path(f"{clip}.mp4"), root / label / f"{clip}.mp4")
    listing = list_sources("folders", str(root), split=None, video_root=None)
    out = {}
    for fps in (None, 5):
        folder = tmp_path_factory.mktemp(f"video_shards_{fps}")
        convert_quietly(listing, folder, fps=fps)
        out[fps] = {name.removesuffix(".mp4"): r for name, r in read_records(folder).items()}
    return out


def _check_same_as_video(record, video_record, files: list[bytes] | None):
    assert record.frames == video_record.frames  # The same JPEG bytes, so the same pixels.
    if files is not None:
        assert list(record.frames) == files  # Copied as they are.
    assert record.label_text == video_record.label_text
    assert record.start_time == video_record.start_time == 0.0
    assert record.end_time == pytest.approx(video_record.end_time, abs=1e-5)


def test_three_layouts_copy_the_frames_of_the_video(tmp_path, extracted, video_records):
    # 3D-ResNets-PyTorch: ROOT/<class>/<video>/image_00001.jpg.
    resnets = tmp_path / "resnets"
    for label, clip in CLIPS.items():
        write_frames(resnets / label / clip, extracted[clip])
    # Two-stream jpegs_256: ROOT/<video>/frame000001.jpg, labels from the seed's datalist.json.
    jpegs_256 = tmp_path / "jpegs_256"
    datalist = []
    for index, (label, clip) in enumerate(CLIPS.items()):
        write_frames(jpegs_256 / clip, extracted[clip], "frame{:06d}.jpg")
        datalist.append({"path": clip, "class_name": label, "label": index, "num_frames": 120})
    (jpegs_256 / "datalist.json").write_text(json.dumps(datalist))
    # TSN / mmaction2: ROOT/<video>/img_00001.jpg next to optical flow, with a rawframe list.
    rawframes = tmp_path / "rawframes"
    for clip, jpegs in extracted.items():
        write_frames(rawframes / clip, jpegs, "img_{:05d}.jpg")
        write_frames(rawframes / clip, jpegs[:60], "flow_x_{:05d}.jpg")  # Ignored.
        write_frames(rawframes / clip, jpegs[:60], "flow_y_{:05d}.jpg")
    (rawframes / "classInd.txt").write_text("1 clean\n2 noisy\n")
    (rawframes / "train_rawframes.txt").write_text(
        "carphone_pristine 120 0\ncarphone_distorted 120 1\n"
    )

    inputs = {
        "folders": str(resnets),
        "datalist": str(jpegs_256 / "datalist.json"),
        "rawframes": str(rawframes / "train_rawframes.txt"),
    }
    for expected_format, input_path in inputs.items():
        listing = list_sources("auto", input_path, split=None, video_root=None)
        assert listing.input_format == expected_format
        assert listing.label_names == ["clean", "noisy"]
        assert listing.skipped == []
        out = tmp_path / f"out_{expected_format}"
        manifest = convert_quietly(listing, out, source_fps=CARPHONE_FPS)
        assert manifest["options"]["source_fps"] == CARPHONE_FPS
        assert manifest["splits"]["train"]["num_videos"] == 2
        converted = read_records(out)
        assert sorted(converted) == sorted(CLIPS.values())
        for clip, record in converted.items():
            assert os.path.isdir(record.path)
            _check_same_as_video(record, video_records[None][clip], extracted[clip])
            assert record.fps == pytest.approx(CARPHONE_FPS)
            assert record.label == ["clean", "noisy"].index(record.label_text)

    # What inspect reads back from the last one agrees with the manifest and the folders.
    stats = inspect_shards(str(out), str(tmp_path / "report"), show=False)
    assert stats["num_videos"] == manifest["splits"]["train"]["num_videos"] == 2
    assert stats["num_frames"] == manifest["splits"]["train"]["num_frames"] == 240
    assert stats["per_class"] == {"clean": 1, "noisy": 1}
    assert stats["frame_sizes"] == {"78x64": 2} and stats["fps"] == {"29.97": 2}
    assert stats["duration_seconds"]["max"] == pytest.approx(120 / CARPHONE_FPS, abs=1e-3)


def test_resampled_frame_folder_matches_the_resampled_video(tmp_path, extracted, video_records):
    root = tmp_path / "frames"
    for label, clip in CLIPS.items():
        write_frames(root / label / clip, extracted[clip])
    listing = list_sources("folders", str(root), split=None, video_root=None)
    convert_quietly(listing, tmp_path / "out", fps=5, source_fps=CARPHONE_FPS)
    for clip, record in read_records(tmp_path / "out").items():
        video_record = video_records[5][clip]
        assert record.num_frames == video_record.num_frames == 21  # k/5 < 120/29.97.
        _check_same_as_video(record, video_record, None)
        assert record.fps == 5


def _mean_difference(jpeg_a: bytes, jpeg_b: bytes) -> float:
    a = simplejpeg.decode_jpeg(jpeg_a, colorspace="RGB").astype(np.float32)
    b = simplejpeg.decode_jpeg(jpeg_b, colorspace="RGB").astype(np.float32)
    assert a.shape == b.shape
    return float(np.abs(a - b).mean())


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_frames_of_another_size_or_png_are_reencoded(tmp_path, video_records):
    clip = "carphone_pristine"
    full = [rgb for _, rgb in video_io.iter_frames(real_video_path(f"{clip}.mp4"))][:30]
    full_jpegs = [simplejpeg.encode_jpeg(rgb, quality=95, colorspace="RGB") for rgb in full]
    write_frames(tmp_path / "jpeg" / "clean" / clip, full_jpegs)
    write_frames(tmp_path / "png" / "clean" / clip, [_png(rgb) for rgb in full], "img_{:05d}.png")
    video = video_records[None][clip].frames[:30]

    def converted(layout: str, short_side: int | None) -> records.VideoRecord:
        listing = list_sources("folders", str(tmp_path / layout), split=None, video_root=None)
        out = tmp_path / f"out_{layout}_{short_side}"
        convert_quietly(listing, out, short_side=short_side, source_fps=CARPHONE_FPS)
        [record] = read_records(out).values()
        assert record.num_frames == 30
        return record

    # Full-size JPEGs resized to 64: the same pictures as the video resized to 64.
    for layout in ("jpeg", "png"):
        record = converted(layout, SHORT_SIDE)
        assert simplejpeg.decode_jpeg_header(record.frames[0])[:2] == (64, 78)
        differences = [_mean_difference(a, b) for a, b in zip(record.frames, video, strict=True)]
        assert max(differences) < 3.0, differences
    # Already the requested size (144 is the clips' short side) or no resize: copied.
    assert list(converted("jpeg", 144).frames) == full_jpegs
    assert list(converted("jpeg", None).frames) == full_jpegs
    # PNG at its own size is still re-encoded: JPEG bytes with the PNG's pixels.
    record = converted("png", None)
    for jpeg, rgb in zip(record.frames, full, strict=True):
        decoded = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        assert np.abs(decoded.astype(np.float32) - rgb).mean() < 3.0


def test_damaged_frame_folders_are_skipped_and_reported(tmp_path, extracted):
    jpegs = extracted["carphone_pristine"][:10]
    root = tmp_path / "frames"
    write_frames(root / "clean" / "good", jpegs)
    gap = write_frames(root / "clean" / "gap", jpegs)
    os.remove(os.path.join(gap, "image_00005.jpg"))
    cut = write_frames(root / "clean" / "cut", jpegs)
    with open(os.path.join(cut, "image_00003.jpg"), "r+b") as f:
        f.truncate(len(jpegs[2]) // 2)
    write_frames(root / "clean" / "mixed", jpegs[:3])
    write_frames(root / "clean" / "mixed", jpegs[:3], "frame{:06d}.jpg")
    garbage = write_frames(root / "clean" / "garbage", jpegs[:4])
    with open(os.path.join(garbage, "image_00002.jpg"), "wb") as f:
        f.write(b"not a picture")
    os.makedirs(root / "clean" / "empty")
    (root / "clean" / "empty" / "n_frames").write_text("0\n")  # Not a frame.

    listing = list_sources("auto", str(root), split=None, video_root=None)
    manifest = convert_quietly(listing, tmp_path / "out")
    assert list(read_records(tmp_path / "out")) == ["good"]
    reasons = {os.path.basename(e["path"]): e["reason"] for e in manifest["skipped"]}
    assert reasons.pop("garbage").startswith("image_00002.jpg: not a readable JPEG (")
    assert reasons == {
        "gap": "frame numbering jumps from 4 to 6 at image_00006.jpg (missing frames)",
        "cut": "image_00003.jpg: truncated JPEG (no end-of-image marker)",
        "mixed": "frames named in several ways (frameN.jpg, image_N.jpg); keep one",
        "empty": "no frame images (numbered .jpg/.jpeg/.png files)",
    }
    # When the frames would be re-encoded, the cut frame is caught just the same.
    manifest = convert_quietly(listing, tmp_path / "out32", short_side=32)
    reasons_32 = {os.path.basename(e["path"]): e["reason"] for e in manifest["skipped"]}
    assert reasons_32.pop("garbage").startswith("image_00002.jpg: not a readable JPEG (")
    assert reasons_32 == reasons


def test_cli_source_fps_default_is_recorded(tmp_path, extracted, capsys):
    jpegs = extracted["carphone_distorted"][:20]
    for name in ("ucf_frames", "hmdb51_frames"):
        write_frames(tmp_path / name / "noisy" / "v1", jpegs)
    runs = {  # input, extra flags -> expected fps.
        ("ucf_frames",): 25.0,  # UCF101's rate: the default.
        ("hmdb51_frames",): 30.0,  # HMDB51's.
        ("ucf_frames", "--source-fps", "12.5"): 12.5,
    }
    for (name, *flags), fps in runs.items():
        out = tmp_path / f"out_{name}_{len(flags)}"
        argv = ["convert", "--input", str(tmp_path / name), "--output", str(out)]
        argv += ["--short-side", str(SHORT_SIDE), "--workers", "1", "--decode-timeout", "0"]
        assert main(argv + flags) == 0
        assert "converted 1 videos (20 frames)" in capsys.readouterr().out
        [record] = read_records(out).values()
        assert record.fps == fps
        assert (record.start_time, record.end_time) == (0.0, pytest.approx(20 / fps))
        assert list(record.frames) == jpegs
        assert json.loads((out / "manifest.json").read_text())["options"]["source_fps"] == fps


def test_frame_selection_follows_sample_and_hold():
    # Hand-computed: 10 frames at 25 fps resampled to 10 fps: t_k = 0, .1, .2, .3 (< 0.4 s),
    # holding frame floor(t_k * 25) = 0, 2, 5, 7; upsampled to 50 fps every frame twice.
    from fractions import Fraction

    assert frames._selected(10, Fraction(25), Fraction(10)) == [0, 2, 5, 7]
    assert frames._selected(3, Fraction(25), Fraction(50)) == [0, 0, 1, 1, 2, 2]
    assert frames._selected(4, Fraction(25), None) == [0, 1, 2, 3]
