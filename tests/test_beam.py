"""data_prep on Apache Beam (DirectRunner) writes what the local path writes, on real videos."""

from __future__ import annotations

import glob
import json
import os
import shutil
import struct
import subprocess
import sys

import apache_beam  # noqa: F401  (the `beam` extra: CI installs it; this file must not skip)
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from data_prep.beam import convert_with_beam
from data_prep.convert import convert
from data_prep.sources import list_sources
from tests.real_videos import real_video_path, truncated_copy
from vssl_jax.data import records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = {"fps": 5, "short_side": 32, "videos_per_shard": 2, "tfrecord": True}


def _make_folder(root) -> str:
    """Two classes of real clips, plus a truncated mp4 that both paths must skip alike."""
    clips = {
        "phone/carphone_distorted.mp4": "carphone_distorted.mp4",
        "phone/carphone_pristine.mp4": "carphone_pristine.mp4",
        "street/bikes.mp4": "bikes.mp4",
    }
    for relative, clip in clips.items():
        os.makedirs(root / os.path.dirname(relative), exist_ok=True)
        shutil.copy(real_video_path(clip), root / relative)
    truncated_copy(real_video_path("bikes.mp4"), str(root / "street" / "cut.mp4"))
    return str(root)


def _listing(folder: str):
    return list_sources("folders", folder, split=None, video_root=None)


def _array_records(out: str) -> list[bytes]:
    raw = []
    for path in sorted(glob.glob(os.path.join(out, "*.array_record-*"))):
        reader = ArrayRecordReader(path)
        raw += reader.read_all()
        reader.close()
    return raw


def _tfrecords(out: str) -> list[bytes]:
    """Every record of the TFRecord shards, read with the format's framing: uint64 length,
    uint32 length CRC, data, uint32 data CRC."""
    raw = []
    for path in sorted(glob.glob(os.path.join(out, "tfrecord", "*"))):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            raw.append(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
    return raw


def _json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_prep", "convert", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_direct_runner_writes_the_local_paths_records_label_map_and_manifest(tmp_path):
    folder = _make_folder(tmp_path / "videos")
    local, beam = str(tmp_path / "local"), str(tmp_path / "beam")
    convert(_listing(folder), local, workers=1, show_progress=False, **OPTIONS)

    # Through the CLI, with Beam pipeline options passed through (two bundles in parallel).
    result = _cli(
        f"--input={folder}",
        f"--output={beam}",
        "--fps=5",
        "--short-side=32",
        "--videos-per-shard=2",
        "--tfrecord",
        "--runner=DirectRunner",
        "--direct_num_workers",
        "2",
        "--direct_running_mode=multi_threading",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "converted 3 videos" in result.stdout and "skipped 1" in result.stdout

    local_records = _array_records(local)
    assert len(local_records) == 4  # bikes' 50 frames take two records.
    assert sorted(_array_records(beam)) == sorted(local_records)
    firsts = [records.parse_record(r) for r in local_records]
    names = sorted(os.path.basename(r.path) for r in firsts if r.first_frame == 0)
    assert names == [
        "bikes.mp4",
        "carphone_distorted.mp4",
        "carphone_pristine.mp4",
    ]
    assert all(records.parse_record(r).num_frames > 0 for r in local_records)
    local_tf = _tfrecords(local)
    assert len(local_tf) == 3 and sorted(_tfrecords(beam)) == sorted(local_tf)

    assert _json(os.path.join(beam, "label_map.json")) == {"phone": 0, "street": 1}
    assert _json(os.path.join(beam, "label_map.json")) == _json(
        os.path.join(local, "label_map.json")
    )
    beam_manifest = _json(os.path.join(beam, "manifest.json"))
    # Equal manifests: same shards, videos, skipped entries, and the same SHA-256 of every shard.
    assert beam_manifest == _json(os.path.join(local, "manifest.json"))
    assert beam_manifest["splits"]["train"]["num_shards"] == 2
    assert [e["path"].endswith("cut.mp4") for e in beam_manifest["skipped"]] == [True]
    # The work list is gone; the sidecars are the local path's.
    assert sorted(os.listdir(os.path.join(beam, "sidecars"))) == sorted(
        os.listdir(os.path.join(local, "sidecars"))
    )

    # Resume on Beam: only the deleted shard is converted and written again.
    shards = beam_manifest["splits"]["train"]["shards"]
    kept = os.path.join(beam, shards[0])
    kept_mtime = os.stat(kept).st_mtime_ns
    os.remove(os.path.join(beam, shards[1]))
    convert_with_beam(_listing(folder), beam, runner="DirectRunner", show_progress=False, **OPTIONS)
    assert os.stat(kept).st_mtime_ns == kept_mtime
    with (
        open(os.path.join(beam, shards[1]), "rb") as f,
        open(os.path.join(local, shards[1]), "rb") as g,
    ):
        assert f.read() == g.read()
    assert _json(os.path.join(beam, "manifest.json")) == beam_manifest


def test_options_beam_does_not_take_are_one_line_errors(tmp_path):
    folder = _make_folder(tmp_path / "videos")
    without_runner = _cli(
        f"--input={folder}", f"--output={tmp_path / 'a'}", "--direct_num_workers=2"
    )
    assert without_runner.returncode == 2
    assert "unrecognized arguments: --direct_num_workers=2" in without_runner.stderr
    unknown = _cli(f"--input={folder}", f"--output={tmp_path / 'b'}", "--runner=FastRunner")
    assert unknown.returncode == 2, unknown.stderr
    assert unknown.stderr.strip().splitlines()[-1].startswith("error: --runner FastRunner")
    assert not os.path.exists(tmp_path / "b")
    # Dataflow's workers cannot see this machine's files (remote paths: test_beam_remote.py).
    dataflow = _cli(
        f"--input={folder}",
        f"--output={tmp_path / 'c'}",
        "--runner=DataflowRunner",
        "--project=my-project-123",
        "--region=us-central1",
        "--temp_location=gs://my-bucket/tmp",
    )
    assert dataflow.returncode == 2
    last = dataflow.stderr.strip().splitlines()[-1]
    assert (
        last == f"error: --runner DataflowRunner: --input {folder} is a local path, which "
        "Dataflow's workers cannot see; give a gs:// URL (docs/scaling.md)"
    )
    assert not os.path.exists(tmp_path / "c")


def test_work_list_lines_not_written_by_this_launch_are_refused():
    """The work list is on disk while the pipeline runs; only lines carrying this launch's HMAC
    are unpickled."""
    import base64
    import pickle

    from data_prep import beam as beam_convert
    from data_prep.manifest import ConvertError

    key = bytes(range(32))
    line = beam_convert.encode_job({"shard": 3}, key)
    assert beam_convert.decode_job(line, key) == {"shard": 3}
    digest = line.split(" ")[0]
    forged = f"{digest} {base64.b64encode(pickle.dumps({'shard': 4})).decode()}"
    for bad_line, bad_key in ((forged, key), (line, bytes(32))):
        with pytest.raises(ConvertError, match="not written by this launch"):
            beam_convert.decode_job(bad_line, bad_key)
