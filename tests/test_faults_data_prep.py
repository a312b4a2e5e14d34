"""Faults and bad input in data_prep (issue 8's fault matrix, data side).

Each bad input is made here with PyAV, most from the real clips of tests/real_videos.py: it must
be skipped with its reason in manifest.json and counted in the summary line while every good
video converts, or, when the list itself is malformed, refused with a one-line error (exit 2).
Then the faults: `kill -9` in the middle of a conversion, and shards deleted or changed after
one (`verify_shards`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import simplejpeg

from data_prep import manifest as manifest_module
from data_prep.__main__ import main
from data_prep.manifest import ShardError, verify_shards
from tests.real_videos import real_video_path, reference_frames, truncated_copy
from vssl_jax import video_io
from vssl_jax.data import pipeline, records, sampling, transforms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ODD_CLASS, ODD_NAME = "straße café", "vidéo 1 ✓.mp4"  # Non-ASCII and spaces.


# --- making bad videos ---


def _encode(path, frames, *, rate=30, times_ms=None) -> str:
    """h264 mp4 of RGB `frames` [T, H, W, 3]; `times_ms`: irregular presentation times."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def _remux(source, destination, *, rotation=None, drop_keyframes=False) -> str:
    """The video stream of `source` unchanged, with a display rotation (degrees counter-clockwise,
    as phones record portrait video) or without its keyframes (nothing left to decode)."""
    with av.open(source) as src, av.open(str(destination), "w") as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        if rotation is not None:
            out_stream.set_display_rotation(rotation)
        for packet in src.demux(in_stream):
            if packet.dts is None or (drop_keyframes and packet.is_keyframe):
                continue
            packet.stream = out_stream
            dst.mux(packet)
    return str(destination)


def _audio_only(path) -> str:
    """One second of a 440 Hz tone, AAC in an mp4: a file with no video stream."""
    rate = 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)[None]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        for start in range(0, rate, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(tone[:, start : start + 1024]), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def _rgb(path) -> list[np.ndarray]:
    return [rgb for _, rgb in reference_frames(path)]


# Variable frame rate: frame i is flat grey 8 * i + 20, shown at these times (ms).
VFR_TIMES_MS = [0, 40, 80, 300, 320, 340, 360, 700, 740, 780]


def _vfr(path) -> str:
    frames = np.stack([np.full((48, 64, 3), 8 * i + 20, np.uint8) for i in range(10)])
    return _encode(path, frames, times_ms=VFR_TIMES_MS)


def _which_frame(jpeg: bytes) -> int:
    """Index of the VFR source frame a stored frame shows (from its grey level)."""
    return round((simplejpeg.decode_jpeg(jpeg).mean() - 20) / 8)


# --- the folder of good and bad videos ---

GOOD = ("phone/carphone.mp4", "phone/rotated.mp4", "phone/short.mp4", "phone/vfr.mp4")
GOOD += (f"{ODD_CLASS}/{ODD_NAME}",)
BAD = {  # file -> the start of its reason in manifest.json.
    "phone/empty.mp4": "empty file (0 bytes)",
    "phone/notes.mp4": "cannot open as a video (Invalid data found",
    "phone/no_keyframe.mp4": "no decodable frames",
    "phone/audio_only.mp4": "has no video stream",
    "phone/cut.mp4": "corrupt or truncated data after",
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    os.makedirs(root / "phone")
    os.makedirs(root / ODD_CLASS)
    carphone = real_video_path("carphone_pristine.mp4")
    shutil.copy(carphone, root / "phone" / "carphone.mp4")
    shutil.copy(real_video_path("carphone_distorted.mp4"), root / ODD_CLASS / ODD_NAME)
    _remux(carphone, root / "phone" / "rotated.mp4", rotation=-90)  # Shown turned clockwise.
    _encode(root / "phone" / "short.mp4", np.stack(_rgb(carphone)[:3]))  # 3 frames.
    _vfr(root / "phone" / "vfr.mp4")
    (root / "phone" / "empty.mp4").write_bytes(b"")
    (root / "phone" / "notes.mp4").write_text("meeting notes, not a video\n")
    _remux(carphone, root / "phone" / "no_keyframe.mp4", drop_keyframes=True)
    _audio_only(root / "phone" / "audio_only.mp4")
    truncated_copy(real_video_path("bikes.mp4"), str(root / "phone" / "cut.mp4"))
    return root


def _records(out, split="train") -> dict[str, records.VideoRecord]:
    """path -> record, over the split's shards; fails on a path seen twice."""
    found: dict[str, records.VideoRecord] = {}
    source = records.VideoSource(records.shard_paths(str(out), split))
    for index in range(len(source)):
        record = source[index]
        assert record.path not in found, f"{record.path} stored twice"
        found[record.path] = record
    return found


def _frames(record) -> list[np.ndarray]:
    return [simplejpeg.decode_jpeg(jpeg, colorspace="RGB") for jpeg in record.frames]


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b).mean())


def test_bad_videos_are_skipped_listed_and_counted_and_good_ones_convert(videos, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["convert", "--input", str(videos), "--output", str(out), "--short-side", "0"]
    assert main([*argv, "--workers", "1", "--videos-per-shard", "4"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"converted {len(GOOD)} videos \(\d+ frames\) into 3 shards in [0-9.]+ s; "
        rf"skipped {len(BAD)} \(see manifest\.json\)",
        summary,
    ), summary

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    reasons = {os.path.relpath(e["path"], videos): e["reason"] for e in manifest["skipped"]}
    assert sorted(reasons) == sorted(BAD) and manifest["num_skipped"] == len(BAD)
    for name, start in BAD.items():
        assert reasons[name].startswith(start), (name, reasons[name])
        assert "\n" not in reasons[name]

    converted = _records(out)
    assert sorted(os.path.relpath(p, videos) for p in converted) == sorted(GOOD)
    assert manifest["splits"]["train"]["per_class"] == {"phone": 4, ODD_CLASS: 1}
    labels = json.loads((out / "label_map.json").read_text(encoding="utf-8"))
    assert labels == {"phone": 0, ODD_CLASS: 1}

    # Non-ASCII, spaces: the path and label survive; the frames are the video's.
    odd = converted[str(videos / ODD_CLASS / ODD_NAME)]
    assert (odd.label_text, odd.label) == (ODD_CLASS, 1)
    reference = _rgb(real_video_path("carphone_distorted.mp4"))
    assert odd.num_frames == len(reference) == 120
    assert _mad(_frames(odd)[60], reference[60]) < 3

    # Rotated phone video: stored as shown, turned 90 degrees clockwise (portrait).
    rotated = _frames(converted[str(videos / "phone" / "rotated.mp4")])
    reference = _rgb(real_video_path("carphone_pristine.mp4"))
    assert len(rotated) == 120 and rotated[0].shape == (176, 144, 3)
    for k in (0, 60, 119):
        assert _mad(rotated[k], np.rot90(reference[k], k=-1)) < 3
        assert _mad(rotated[k], np.rot90(reference[k], k=1)) > 20  # Not the other way round.

    # Fewer frames than a clip: kept whole; training loops it from frame 0 (sampling.py).
    short = converted[str(videos / "phone" / "short.mp4")]
    assert short.num_frames == 3
    indices = sampling.random_clip_indices(short.num_frames, 8, 2, np.random.default_rng(0))
    assert indices.tolist() == [0, 2, 1, 0, 2, 1, 0, 2]
    source = _rgb(str(videos / "phone" / "short.mp4"))
    clip = transforms.decode_frames(short.frames, indices, short.path)
    for k, i in enumerate(indices):
        assert _mad(clip[k], source[i]) < 3
    spec = pipeline.ClipSpec(num_frames=8, frame_stride=2, crop_size=112)
    video = pipeline.TrainClip(spec)(short, np.random.default_rng(0))["video"]
    assert video.shape == (8, 112, 112, 3)


def test_variable_frame_rate_is_stored_at_a_constant_rate(videos):
    path = str(videos / "phone" / "vfr.mp4")
    source = reference_frames(path)  # PyAV's own decode: the true display times.
    assert [round(float(t) * 1000) for t, _ in source] == VFR_TIMES_MS
    with av.open(path) as container:
        last = list(container.decode(video=0))[-1]
        end = float(last.time + last.duration * last.time_base)  # When the video ends.
    assert end == pytest.approx(0.78 + 1 / 30, abs=1e-3)

    # --fps 10: sample and hold, t = 0, 0.1, ..., 0.8 shows the latest frame at or before t.
    clip = video_io.decode_to_jpegs(path, fps=10, short_side=None)
    assert [_which_frame(j) for j in clip.frames] == [0, 2, 2, 3, 6, 6, 6, 7, 9]
    assert (clip.fps, clip.start_time, clip.end_time) == (10, 0.0, pytest.approx(0.9))

    # No --fps: the source's average rate, each stored frame the source frame nearest its time,
    # so frame k of the record is what played at start + k / fps.
    clip = video_io.decode_to_jpegs(path, fps=None, short_side=None)
    times = np.array([float(t) for t, _ in source])
    shown = [_which_frame(j) for j in clip.frames]
    for k, index in enumerate(shown):
        distance = np.abs(times - (clip.start_time + k / clip.fps))
        assert index == int(np.argmin(distance)), (k, shown)
    assert abs(clip.end_time - end) <= 1 / clip.fps  # The record lasts as long as the video.
    assert shown[0] == 0 and sorted(shown) == shown and len(set(shown)) >= 7


@pytest.mark.parametrize(
    "rotation, hflip, turn",
    [
        (90, False, lambda a: np.rot90(a, 1)),  # Counter-clockwise.
        (-90, False, lambda a: np.rot90(a, -1)),
        (180, False, lambda a: a[::-1, ::-1]),
        (0, True, lambda a: a[:, ::-1]),  # Mirrored (a selfie camera).
        (90, True, lambda a: np.rot90(a, 1)[:, ::-1]),  # Turned, then mirrored.
    ],
)
def test_display_rotation_is_applied_as_a_player_shows_it(rotation, hflip, turn, tmp_path):
    # A white block in the top-left corner of a 64x32 picture, with a display matrix.
    picture = np.zeros((32, 64, 3), np.uint8)
    picture[:8, :16] = 255
    path = str(tmp_path / "turned.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(rotation, hflip=hflip)
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    expected = turn(picture)
    for short_side, scale in ((None, 1), (16, 2)):
        frames = [rgb for _, rgb in video_io.iter_frames(path, short_side=short_side)]
        assert len(frames) == 3
        for rgb in frames:
            assert rgb.shape == (expected.shape[0] // scale, expected.shape[1] // scale, 3)
            assert rgb.flags["C_CONTIGUOUS"]
            assert _mad(rgb, expected[::scale, ::scale]) < 12


_MEASURE = """
import json, shutil, sys, tempfile
import tensorflow_datasets  # The manifest writer's import, loaded before measuring.
from data_prep.convert import convert
from data_prep.sources import Listing, VideoSource

def mib(key):
    # This process's own numbers: getrusage's ru_maxrss would include the RSS of the pytest
    # process that forked it (Linux keeps the peak across exec).
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key + ":"))

def run(path):
    out = tempfile.mkdtemp()
    listing = Listing([VideoSource(path, "x", "train")], ["x"], [])
    result = convert(listing, out, fps=None, short_side=128, workers=1, show_progress=False)
    shutil.rmtree(out)
    return result["splits"]["train"]["num_frames"]

small, large = sys.argv[1:]
run(small)  # Warm up: codecs, encoders, the writers.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # Peak RSS := current RSS.
before = mib("VmHWM")
frames = run(large)
print(json.dumps({"before": before, "peak": mib("VmHWM"), "frames": frames}))
"""


def test_very_large_resolution_is_resized_as_decoded_in_bounded_memory(tmp_path):
    # 8K (7680x4320): a decoded frame is 50 MB (YUV 4:2:0), 100 MB as full-size RGB.
    width, height, count = 7680, 4320, 8
    path = str(tmp_path / "8k.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        planes = np.zeros((height * 3 // 2, width), np.uint8)  # Y, then U and V.
        planes[:height] = (np.arange(width) * 255 // width)[None]
        for i in range(count):
            planes[: height // 4, i * 960 : (i + 1) * 960] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(planes, format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, real_video_path("carphone_pristine.mp4"), path],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    peaks = json.loads(result.stdout)
    growth = peaks["peak"] - peaks["before"]
    print(f"8K conversion, peak RSS MiB: {peaks}; growth {growth:.0f}")
    assert peaks["frames"] == count
    # Holding the 8 frames at full size would take 800 MB; frame threading alone keeps one
    # 50 MB frame per thread in flight (up to 17). Slice threads and resizing each frame as it
    # is decoded keep it to a few frames.
    assert growth < 256, peaks


# --- list files ---


def _write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_bad_list_rows_are_skipped_and_listed(tmp_path, capsys):
    root = tmp_path / "clips"
    os.makedirs(root)
    shutil.copy(real_video_path("carphone_pristine.mp4"), root / "a.mp4")
    shutil.copy(real_video_path("carphone_distorted.mp4"), root / ODD_NAME)
    label_map = _write(tmp_path / "label_map.json", '{"walk": 0, "run": 1}')
    rows = [
        "label,path,split",
        "walk,a.mp4,train",
        f"run,{ODD_NAME},train",  # Non-ASCII and a space in the path.
        "walk,gone.mp4,train",  # No such file.
        "walk,a.mp4,train",  # The same row again.
        "run,a.mp4,train",  # Again, with another label.
        f"zebra,{ODD_NAME},val",  # Not in the label map.
        f"walk,{ODD_NAME},",  # No split.
    ]
    csv_path = _write(root / "list.csv", "\n".join(rows) + "\n")
    entries = [
        {"path": "a.mp4", "label": "walk", "split": "train"},
        {"path": ODD_NAME, "label": "run", "split": "train"},
        {"path": "gone.mp4", "label": "walk", "split": "train"},
        {"path": "a.mp4", "label": "walk", "split": "train"},
        {"path": "a.mp4", "label": "run", "split": "train"},
        {"path": ODD_NAME, "label": "zebra", "split": "val"},
        {"path": ODD_NAME, "label": "walk", "split": ""},
    ]
    json_path = _write(root / "list.json", json.dumps(entries, ensure_ascii=False))
    expected = [
        (ODD_NAME, "", "no split"),
        ("a.mp4", "train", "duplicate row"),
        ("a.mp4", "train", "duplicate row (label 'run'; kept the first, labelled 'walk')"),
        ("gone.mp4", "train", "file not found"),
        (ODD_NAME, "val", "label 'zebra' not in label map"),
    ]
    for index, list_path in enumerate((csv_path, json_path)):
        out = tmp_path / f"out{index}"
        argv = ["convert", "--input", list_path, "--output", str(out), "--label-map", label_map]
        assert main([*argv, "--fps", "5", "--short-side", "32", "--workers", "1"]) == 0
        summary = capsys.readouterr().out.strip().splitlines()[-1]
        assert summary.endswith("; skipped 5 (see manifest.json)"), summary
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        skipped = [
            (os.path.basename(e["path"]), e["split"], e["reason"]) for e in manifest["skipped"]
        ]
        assert sorted(skipped) == sorted(expected)
        converted = _records(out)
        assert {os.path.basename(p): r.label_text for p, r in converted.items()} == {
            "a.mp4": "walk",
            ODD_NAME: "run",
        }
        assert manifest["splits"]["train"]["num_videos"] == 2
        assert manifest["splits"]["val"]["num_videos"] == 0


def test_malformed_lists_are_refused_in_one_line(tmp_path, capsys):
    shutil.copy(real_video_path("carphone_pristine.mp4"), tmp_path / "a.mp4")
    cases = {
        "missing columns youtube_id, time_start, time_end (header has: label, split)": _write(
            tmp_path / "no_columns.csv", "label,split\nwalk,train\n"
        ),
        "entry 1 is not a list of": _write(
            tmp_path / "wrong_schema.json",
            json.dumps(
                [
                    {"path": "a.mp4", "label": "walk", "split": "train"},
                    {"file": "a.mp4", "label": 3},
                ]
            ),
        ),
        "expected a list of": _write(tmp_path / "not_a_list.json", '{"path": "a.mp4"}'),
        "split name 'val-1' is not usable": _write(
            tmp_path / "bad_split.csv", "label,path,split\nwalk,a.mp4,val-1\n"
        ),
        "not valid JSON": _write(tmp_path / "cut.json", '[{"path": "a.mp4", "lab'),
    }
    for message, list_path in cases.items():
        out = tmp_path / "out"
        fmt = "json" if list_path.endswith(".json") else "csv"
        argv = ["convert", "--format", fmt, "--input", list_path, "--output", str(out)]
        assert main(argv) == 2, list_path
        err = capsys.readouterr().err
        assert err.startswith(f"error: {list_path}: ") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert not out.exists()  # Refused before anything was written.


# --- kill -9 in the middle of a conversion ---


def _converter(args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "data_prep", "convert", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _live_in_session(session: int) -> list[int]:
    """Processes of a session that are still running (not zombies)."""
    live = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            live.append(int(stat.split("/")[2]))
    return live


def _shard_files(out) -> dict[str, bytes]:
    """Every shard file (ArrayRecord, TFRecord, and temporary ones) -> its bytes."""
    paths = glob.glob(str(out / "*.array_record-*")) + glob.glob(str(out / "tfrecord" / "*"))
    return {os.path.relpath(p, out): open(p, "rb").read() for p in sorted(paths)}


def test_kill_9_mid_conversion_then_rerun_equals_an_uninterrupted_run(tmp_path):
    videos = tmp_path / "videos"
    for i in range(8):
        os.makedirs(videos / f"class{i % 2}", exist_ok=True)
        shutil.copy(real_video_path("bikes.mp4"), videos / f"class{i % 2}" / f"bikes{i}.mp4")
    options = ["--short-side", "64", "--videos-per-shard", "2", "--workers", "2", "--tfrecord"]

    reference = tmp_path / "reference"
    done = _converter(["--input", str(videos), "--output", str(reference), *options])
    assert done.wait(timeout=300) == 0, done.stderr.read()

    out = tmp_path / "out"
    run = _converter(
        ["--input", str(videos), "--output", str(out), *options], start_new_session=True
    )
    deadline = time.monotonic() + 120
    # Kill once a shard is complete and the next one is being written.
    while not (
        glob.glob(str(out / "sidecars" / "*.array_record-*.json"))
        and glob.glob(str(out / "*.array_record-*.tmp-*"))
    ):
        assert run.poll() is None, "the conversion ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    assert run.wait(timeout=30) == -signal.SIGKILL
    complete = [p for p in _shard_files(out) if ".tmp-" not in p and "tfrecord" not in p]
    assert 1 <= len(complete) < 4  # Killed part-way, with a partial shard on disk.
    assert not (out / "manifest.json").exists()
    # The decoding workers notice their parent is gone and exit.
    for _ in range(200):
        if not _live_in_session(run.pid):
            break
        time.sleep(0.05)
    assert not _live_in_session(run.pid)

    rerun = _converter(["--input", str(videos), "--output", str(out), *options])
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    assert re.match(r"converted 8 videos \(2000 frames\) into 4 shards", rerun.stdout.read())

    # Record by record, and byte for byte: nothing lost, nothing twice, no leftovers.
    expected, got = _records(reference), _records(out)
    assert list(got) == list(expected) and len(got) == 8
    for path, record in expected.items():
        assert got[path] == record
    assert _shard_files(out) == _shard_files(reference)
    assert not glob.glob(str(out / "**" / "*.tmp-*"), recursive=True)
    for name in ("manifest.json", "label_map.json"):
        assert (out / name).read_text() == (reference / name).read_text()
    verify_shards(str(out), "train", full=True)


# --- shards deleted or changed after the conversion ---


@pytest.fixture
def converted(tmp_path, capsys) -> str:
    videos = tmp_path / "videos"
    os.makedirs(videos / "phone")
    for name in ("carphone_pristine.mp4", "carphone_distorted.mp4"):
        shutil.copy(real_video_path(name), videos / "phone" / name)
    out = str(tmp_path / "out")
    argv = ["convert", "--input", str(videos), "--output", out, "--fps", "5"]
    assert main([*argv, "--short-side", "32", "--videos-per-shard", "1", "--workers", "1"]) == 0
    capsys.readouterr()
    return out


def _shard(out, index: int) -> str:
    return os.path.join(out, records.shard_name("videos", "train", "array_record", index, 2))


def test_manifest_records_shard_sizes_and_sha256(converted):
    manifest = json.loads(open(os.path.join(converted, "manifest.json")).read())
    checksums = manifest["splits"]["train"]["checksums"]
    assert sorted(checksums) == sorted(manifest["splits"]["train"]["shards"])
    for name, entry in checksums.items():
        data = open(os.path.join(converted, name), "rb").read()
        assert entry == {"num_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _problem(out, split="train", full=False) -> str:
    with pytest.raises(ShardError) as error:
        verify_shards(out, split, full=full)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_deleted_changed_or_extra_shards_are_detected(converted, monkeypatch, capsys):
    verify_shards(converted, "train")
    verify_shards(converted, "train", full=True)
    first, second = _shard(converted, 0), _shard(converted, 1)
    original, original_second = open(first, "rb").read(), open(second, "rb").read()

    # The cheap check only stats: no shard is read.
    def no_reading(path):
        raise AssertionError(f"read {path}")

    with monkeypatch.context() as patch:
        patch.setattr(manifest_module, "file_sha256", no_reading)
        verify_shards(converted, "train", full=False)

    # Same size, one byte changed: only the checksum tells.
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0xFF
    open(first, "wb").write(bytes(changed))
    verify_shards(converted, "train")
    assert _problem(converted, full=True) == (
        f"{first}: shard content changed since it was written (SHA-256 differs from "
        "manifest.json); re-run the convert command that made it to rebuild it, or restore "
        "the file"
    )
    assert main(["verify", converted]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {first}: shard content changed") and err.count("\n") == 1
    assert main(["verify", converted, "--quick"]) == 0

    open(first, "ab").write(b"\0")  # Grown.
    assert _problem(converted).startswith(
        f"{first}: shard changed since it was written ({len(original) + 1} bytes, "
        f"manifest.json says {len(original)})"
    )
    open(first, "wb").write(original)
    os.remove(second)
    assert _problem(converted).startswith(f"{second}: shard is missing (listed in manifest.json)")
    os.rename(first, second)  # The first shard put in the second's place.
    assert _problem(converted).startswith(f"{first}: shard is missing")
    shutil.copy(second, first)
    if len(original) == len(original_second):
        verify_shards(converted, "train")
    assert _problem(converted, full=True).startswith(f"{second}: shard content changed")
    open(second, "wb").write(original_second)
    extra = os.path.join(converted, "old-train.array_record-00000-of-00001")
    shutil.copy(first, extra)  # From an earlier conversion under another name.
    assert _problem(converted).startswith(
        f"{extra}: shard of split 'train' is not in manifest.json"
    )
    os.remove(extra)
    verify_shards(converted, "train", full=True)
    assert main(["verify", converted]) == 0

    assert _problem(converted, "val").endswith("no split 'val' (it lists: train)")
    os.remove(os.path.join(converted, "manifest.json"))
    verify_shards(converted, "train", full=True)  # Not data_prep's: nothing to check against.


def test_rerun_adds_checksums_to_an_older_conversion_without_converting(
    converted, monkeypatch, capsys
):
    path = os.path.join(converted, "manifest.json")
    before = json.loads(open(path).read())
    for sidecar in glob.glob(os.path.join(converted, "sidecars", "*.array_record-*.json")):
        data = json.loads(open(sidecar).read())
        del data["sha256"]  # As data_prep wrote sidecars before checksums.
        open(sidecar, "w").write(json.dumps(data))
    old = json.loads(open(path).read())
    del old["splits"]["train"]["checksums"]
    open(path, "w").write(json.dumps(old))
    verify_shards(converted, "train")  # Presence is still checked...
    assert "records no checksum" in _problem(converted, full=True)  # ...a full check needs them.

    decoded = []
    monkeypatch.setattr(video_io, "decode_to_jpegs", lambda *a, **k: decoded.append(a))
    videos = os.path.join(os.path.dirname(converted), "videos")
    argv = ["convert", "--input", videos, "--output", converted, "--fps", "5"]
    assert main([*argv, "--short-side", "32", "--videos-per-shard", "1", "--workers", "1"]) == 0
    assert decoded == []
    assert json.loads(open(path).read()) == before
    verify_shards(converted, "train", full=True)
