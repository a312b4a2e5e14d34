"""Hangs and memory: a decode that never finishes is killed and skipped; a worker that crashes
skips its video; peak memory does not grow with the decoded frames of a long video."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import av

from data_prep import convert as convert_module
from data_prep.sources import VideoSource
from tests.real_videos import real_video_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 2.0


def test_a_hung_decode_is_killed_skipped_and_reported(tmp_path):
    """A FIFO nobody writes to: opening it blocks forever, as a stalled network mount would."""
    root = tmp_path / "videos" / "phone"
    os.makedirs(root)
    for clip in ("carphone_distorted.mp4", "carphone_pristine.mp4"):
        shutil.copy(real_video_path(clip), root / clip)
    os.mkfifo(root / "stalled.mp4")
    frames = root / "stalled_frames"  # A frame folder whose sixth frame never arrives.
    os.makedirs(frames)
    with av.open(str(root / "carphone_distorted.mp4")) as container:
        first = next(container.decode(video=0)).to_image()
    for number in range(1, 11):
        if number == 6:  # At 25 fps, 5 fps output takes frames 1 and 6.
            os.mkfifo(frames / "image_00006.jpg")
        else:
            first.save(frames / f"image_{number:05d}.jpg")

    out = tmp_path / "out"
    args = ["--input", str(tmp_path / "videos"), "--output", str(out), "--fps", "5"]
    args += ["--short-side", "32", "--workers", "2", "--decode-timeout", str(TIMEOUT)]
    began = time.monotonic()
    # Without the timeout this would never return: the subprocess limit fails the test.
    result = subprocess.run(
        [sys.executable, "-m", "data_prep", "convert", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("converted 2 videos (42 frames) into 1 shards")
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {os.path.basename(e["path"]): e["reason"] for e in manifest["skipped"]}
    killed = f"decoding did not finish in {TIMEOUT:g} s (--decode-timeout); its process was killed"
    assert reasons == {"stalled.mp4": killed, "stalled_frames": killed}
    assert manifest["splits"]["train"]["num_videos"] == 2
    assert elapsed > TIMEOUT


class _Crashes:
    """A path whose use kills the process using it: a decoder that segfaults."""

    def __fspath__(self):
        os.kill(os.getpid(), signal.SIGKILL)


class _Hangs:
    """A path whose use never returns: a decoder stuck in a loop."""

    def __fspath__(self):
        while True:
            time.sleep(1)


def _task(path) -> convert_module._Task:
    return convert_module._Task(
        source=VideoSource(path, "phone", "train"),
        label=0,
        fps=5,
        short_side=32,
        jpeg_quality=90,
        tfrecord=False,
        frames_per_record=32,
    )


def test_workers_replace_a_crashed_or_hung_one_and_keep_the_order():
    good = real_video_path("carphone_distorted.mp4")
    tasks = [_task(good), _task(_Crashes()), _task(_Hangs()), _task(good), _task(good)]
    context = multiprocessing.get_context("forkserver")
    results = list(convert_module._in_workers(tasks, 2, TIMEOUT, context))
    assert [r.skip_reason for r in results] == [
        None,
        "the decoding process died (killed by SIGKILL)",
        f"decoding did not finish in {TIMEOUT:g} s (--decode-timeout); its process was killed",
        None,
        None,
    ]
    assert results[0].records == results[3].records == results[4].records != ()
    assert results[0].num_frames == 21
    assert not multiprocessing.active_children()


def _looped_copy(source: str, destination: str, times: int) -> str:
    """The video stream of `source` played `times` times over, remuxed without re-encoding."""
    with av.open(source) as src, av.open(destination, "w") as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        packets = [p for p in src.demux(in_stream) if p.dts is not None]
        timing = [(p.pts, p.dts, p.duration or 0) for p in packets]
        start = min(pts for pts, _, _ in timing)
        period = max(pts + duration for pts, _, duration in timing) - start
        for k in range(times):
            for packet, (pts, dts, _) in zip(packets, timing, strict=True):
                packet.pts, packet.dts = pts + k * period, dts + k * period
                packet.stream = out_stream
                dst.mux(packet)
    return destination


_MEASURE = """
import json, shutil, sys, tempfile
import tensorflow_datasets  # The manifest writer's import, loaded before measuring.
from data_prep.convert import convert
from data_prep.sources import Listing, VideoSource

def peak_mib():
    # VmHWM, not ru_maxrss: a child's ru_maxrss can start at its parent's (pytest's) peak.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))

def run(path):
    out = tempfile.mkdtemp()
    listing = Listing([VideoSource(path, "x", "train")], ["x"], [])
    convert(listing, out, fps=None, short_side=None, workers=1, show_progress=False)
    shutil.rmtree(out)

short, long = sys.argv[1:]
run(short)  # Warm up: codecs, encoders, the writers...
run(short)  # ... and what their second use allocates (protobuf 6, with Beam installed).
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # Peak RSS := current RSS.
# Under memory pressure (the rest of the test suite) the kernel drops clean library pages from
# RSS; the first run after the reset faults them back in. Peak of a short run, then of another.
run(short)
before = peak_mib()
run(short)
after_short = peak_mib()
run(long)
print(json.dumps({"before": before, "short": after_short, "long": peak_mib()}))
"""


def test_peak_memory_does_not_grow_with_the_decoded_frames(tmp_path):
    short = real_video_path("bikes.mp4")  # 250 frames of 640x272: 10 s.
    long = _looped_copy(short, str(tmp_path / "bikes_x4.mp4"), 4)  # 1000 frames: 40 s.
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, short, long],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    peaks = json.loads(result.stdout)
    growth = peaks["long"] - peaks["short"]
    # Holding the 750 extra frames decoded (RGB at 640x272) would take 374 MiB more; only their
    # JPEGs may stay (about 24 MiB, held up to 3 times: the list, the proto, its serialization).
    decoded = 750 * 640 * 272 * 3 / 2**20
    print(f"peak RSS MiB: {peaks}; long - short: {growth:.0f}; decoded frames: {decoded:.0f}")
    assert growth < decoded / 2, peaks
    assert peaks["short"] - peaks["before"] < 32, peaks  # A second short video: no growth.


def test_a_bad_timeout_is_one_line(tmp_path, capsys):
    from data_prep.__main__ import main

    os.makedirs(tmp_path / "videos" / "phone")
    shutil.copy(real_video_path("carphone_distorted.mp4"), tmp_path / "videos" / "phone")
    argv = ["convert", "--input", str(tmp_path / "videos"), "--output", str(tmp_path / "out")]
    assert main([*argv, "--decode-timeout", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'out'}: --decode-timeout must be positive")
    assert err.count("\n") == 1
