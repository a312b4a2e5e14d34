"""data_prep on Beam with remote paths: inputs and output in an object store (Beam's FileSystems).

No cloud here: `memfs://` is a Beam FileSystem registered by this file, an object store in this
process's memory that behaves like GCS (no folders, listing by prefix, an object appears whole
when its upload is closed, rename = copy + delete). Nothing in it is a local file, so a path
that the code opened with `open()` or `os` instead of Beam's FileSystems is not found, and a
folder made with `os.makedirs` would appear in the working directory (checked).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import hashlib
import io
import json
import os
import pathlib
import shutil
import struct

import apache_beam  # noqa: F401  (the `beam` extra: CI installs it; this file must not skip)
import pytest
from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem
from array_record.python.array_record_module import ArrayRecordReader
from tensorflow_datasets.proto import tf_example_pb2

from data_prep import beam as beam_convert
from data_prep.__main__ import main
from data_prep.convert import convert
from data_prep.manifest import ConvertError
from data_prep.sources import SourceError, list_sources
from tests.real_videos import real_video_path, truncated_copy
from vssl_jax.data import records

ROOT = "memfs://bucket"
OPTIONS = {"fps": 5, "short_side": 32, "videos_per_shard": 2, "tfrecord": True}
FLAGS = ["--fps=5", "--short-side=32", "--videos-per-shard=2", "--tfrecord"]
CLIPS = {
    "phone/carphone_distorted.mp4": "carphone_distorted.mp4",
    "phone/carphone_pristine.mp4": "carphone_pristine.mp4",
    "street/bikes.mp4": "bikes.mp4",
}


class _Upload(io.BytesIO):
    """A write channel: the object appears, whole, when it is closed (as a GCS upload)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def close(self) -> None:
        if not self.closed:
            MemFileSystem.objects[self.path] = self.getvalue()
            MemFileSystem.uploads.append(self.path)
        super().close()


class MemFileSystem(FileSystem):
    """`memfs://`: objects in a dict shared by every instance (Beam makes one per call)."""

    objects: dict[str, bytes] = {}
    uploads: list[str] = []  # Every object written, in order.
    failing_renames: set[str] = set()  # Destinations whose rename fails (a preempted worker).
    requests: list[str] = []  # Every listing and existence check, as "list|exists PATH".

    @classmethod
    def scheme(cls) -> str:
        return "memfs"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass  # No folders in an object store.

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        MemFileSystem.requests.append(f"list {dir_or_prefix}")
        for path in sorted(self.objects):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(self.objects[path]))

    def create(self, path, mime_type="", compression_type=CompressionTypes.AUTO):
        return _Upload(path)

    def open(self, path, mime_type="", compression_type=CompressionTypes.AUTO):
        if path not in self.objects:
            raise BeamIOError(f"{path}: no such object")
        return io.BytesIO(self.objects[path])

    def copy(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names, strict=True):
            self.objects[destination] = self.objects[source]

    def rename(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names, strict=True):
            if destination in self.failing_renames:
                raise BeamIOError(f"rename to {destination}: worker preempted (injected)")
            self.objects[destination] = self.objects.pop(source)

    def exists(self, path):
        MemFileSystem.requests.append(f"exists {path}")
        return path in self.objects

    def size(self, path):
        return len(self.objects[path])

    def last_updated(self, path):
        return 0.0

    def checksum(self, path):
        return hashlib.md5(self.objects[path]).hexdigest()

    def metadata(self, path):
        return FileMetadata(path, len(self.objects[path]))

    def delete(self, paths):
        missing = {p: FileNotFoundError(p) for p in paths if p not in self.objects}
        if missing:
            raise BeamIOError("Delete operation failed", missing)
        for path in paths:
            del self.objects[path]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty memfs store, with the working directory in a fresh folder that must stay empty."""
    MemFileSystem.objects.clear()
    MemFileSystem.uploads.clear()
    MemFileSystem.failing_renames.clear()
    MemFileSystem.requests.clear()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield MemFileSystem.objects
    assert os.listdir(cwd) == [], "a remote path was written as a local one"


def _make_folder(root) -> str:
    """Two classes of real clips, plus a truncated mp4 that both paths must skip alike."""
    for relative, clip in CLIPS.items():
        os.makedirs(root / os.path.dirname(relative), exist_ok=True)
        shutil.copy(real_video_path(clip), root / relative)
    truncated_copy(real_video_path("bikes.mp4"), str(root / "street" / "cut.mp4"))
    return str(root)


def _upload_folder(folder: str, remote: str) -> None:
    for path in glob.glob(os.path.join(folder, "**", "*.mp4"), recursive=True):
        with open(path, "rb") as f:
            MemFileSystem.objects[f"{remote}/{os.path.relpath(path, folder)}"] = f.read()


def _local_shards(out: str, pattern: str) -> dict[str, bytes]:
    """{path relative to `out`: bytes} of the files matching `pattern` there."""
    return {
        os.path.relpath(p, out): pathlib.Path(p).read_bytes()
        for p in sorted(glob.glob(os.path.join(out, pattern)))
    }


def _remote_shards(out: str, pattern: str) -> dict[str, bytes]:
    """Like `_local_shards`: the objects under `out` whose names match `pattern` (as glob does,
    `*` stays inside one folder)."""
    prefix = f"{out}/"
    found = {}
    for path, data in sorted(MemFileSystem.objects.items()):
        name = path[len(prefix) :]
        if (
            path.startswith(prefix)
            and name.count("/") == pattern.count("/")
            and fnmatch.fnmatch(name, pattern)
        ):
            found[name] = data
    return found


def _array_records(data: bytes, tmp_path) -> list[bytes]:
    path = str(tmp_path / "shard.array_record")
    with open(path, "wb") as f:
        f.write(data)
    reader = ArrayRecordReader(path)
    raw = reader.read_all()
    reader.close()
    return list(raw)


def _tfrecords(data: bytes) -> list[bytes]:
    """Records of a TFRecord file: uint64 length, uint32 length CRC, data, uint32 data CRC."""
    raw, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        raw.append(data[offset + 12 : offset + 12 + length])
        offset += 12 + length + 4
    return raw


def _with_path(raw: bytes, path: str) -> bytes:
    """A record as it reads with another `path`, serialized by the proto library itself."""
    example = tf_example_pb2.Example.FromString(raw)
    example.features.feature[records.PATH].bytes_list.value[:] = [path.encode()]
    return example.SerializeToString(deterministic=True)


def _sequence_with_path(raw: bytes, path: str) -> bytes:
    example = tf_example_pb2.SequenceExample.FromString(raw)
    example.context.feature[records.DMVR_FILENAME].bytes_list.value[:] = [path.encode()]
    return example.SerializeToString(deterministic=True)


def _moved(obj, local: str, remote: str):
    """`obj` with the local folder renamed to the remote one in every string."""
    if isinstance(obj, dict):
        return {k: _moved(v, local, remote) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_moved(v, local, remote) for v in obj]
    if isinstance(obj, str):
        return obj.replace(local, remote)
    return obj


def _remote_json(path: str):
    return json.loads(MemFileSystem.objects[path])


def _convert_cli(*args: str) -> int:
    return main(["convert", *args])


def test_direct_runner_reads_and_writes_a_remote_store_like_the_local_path(tmp_path, store, capsys):
    folder = _make_folder(tmp_path / "videos")
    local = str(tmp_path / "local")
    convert(
        list_sources("folders", folder, split=None, video_root=None),
        local,
        workers=1,
        show_progress=False,
        **OPTIONS,
    )
    videos, out = f"{ROOT}/videos", f"{ROOT}/shards"
    _upload_folder(folder, videos)
    cli = [
        f"--input={videos}",
        f"--output={out}",
        *FLAGS,
        "--runner=DirectRunner",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_threading",
    ]
    shard_names = sorted(_local_shards(local, "*.array_record-*"))
    assert len(shard_names) == 2

    # A worker "preempted" while renaming the second shard into place: the pipeline fails.
    MemFileSystem.failing_renames.add(f"{out}/{shard_names[1]}")
    with pytest.raises(Exception, match="preempted"):
        _convert_cli(*cli)
    # No shard under its final name without its whole bytes (it stays under a temporary name).
    assert f"{out}/{shard_names[1]}" not in store
    assert any(p.startswith(f"{out}/{shard_names[1]}.tmp-") for p in store)
    assert not any(".beam-work-" in p for p in store), "the work list is removed"
    # The other shard, if its bundle ran first.
    done_before = {name for name in shard_names if f"{out}/{name}" in store}

    # The same command again: only the missing shard is converted; leftovers are cleaned up.
    # (Without a decode timeout this time: the videos decode in the worker itself, not in a
    # child process.)
    MemFileSystem.failing_renames.clear()
    MemFileSystem.uploads.clear()
    assert _convert_cli(*cli, "--decode-timeout=0") == 0
    assert "converted 3 videos" in capsys.readouterr().out
    rewritten = {os.path.basename(p) for p in MemFileSystem.uploads}
    assert not any(name.startswith(tuple(done_before)) for name in rewritten)
    assert any(name.startswith(shard_names[1]) for name in rewritten)
    assert not any(".tmp-" in p or ".beam-work-" in p for p in store)

    # Record for record: the local path's bytes, but for the path each record names.
    remote_shards = _remote_shards(out, "*.array_record-*")
    local_shards = _local_shards(local, "*.array_record-*")
    assert sorted(remote_shards) == shard_names
    count = 0
    for name in shard_names:
        remote_records = _array_records(remote_shards[name], tmp_path)
        local_records = _array_records(local_shards[name], tmp_path)
        assert len(remote_records) == len(local_records) > 0
        for remote_raw, local_raw in zip(remote_records, local_records, strict=True):
            local_path = records.parse_record(local_raw).path
            remote_path = records.parse_record(remote_raw).path
            assert remote_path == f"{videos}/{os.path.relpath(local_path, folder)}"
            assert remote_raw == _with_path(local_raw, remote_path)
            count += 1
    assert count == 4  # 3 videos; bikes' 50 frames take two records.
    local_tf = _local_shards(local, "tfrecord/*")
    remote_tf = _remote_shards(out, "tfrecord/*")
    assert sorted(remote_tf) == sorted(local_tf) and len(local_tf) == 2
    for name in local_tf:
        pairs = zip(_tfrecords(remote_tf[name]), _tfrecords(local_tf[name]), strict=True)
        for remote_raw, local_raw in pairs:
            context = tf_example_pb2.SequenceExample.FromString(remote_raw).context.feature
            remote_path = context[records.DMVR_FILENAME].bytes_list.value[0].decode()
            assert remote_raw == _sequence_with_path(local_raw, remote_path)

    # Label map, TFDS metadata and sidecar names as the local path wrote them.
    for name in ("label_map.json", "dataset_info.json", "features.json", "label.labels.txt"):
        with open(os.path.join(local, name), "rb") as f:
            assert store[f"{out}/{name}"] == f.read(), name
    assert _remote_json(f"{out}/label_map.json") == {"phone": 0, "street": 1}
    assert sorted(_remote_shards(out, "sidecars/*")) == sorted(_local_shards(local, "sidecars/*"))

    # The manifest: the local one with remote paths, and the checksums of the remote shards.
    remote_manifest = _remote_json(f"{out}/manifest.json")
    with open(os.path.join(local, "manifest.json"), encoding="utf-8") as f:
        local_manifest = _moved(json.load(f), folder, videos)
    checksums = remote_manifest["splits"]["train"].pop("checksums")
    local_manifest["splits"]["train"].pop("checksums")
    assert remote_manifest == local_manifest
    assert [e["path"] for e in remote_manifest["skipped"]] == [f"{videos}/street/cut.mp4"]
    assert sorted(checksums) == sorted([*shard_names, *local_tf])
    for name, entry in checksums.items():
        data = store[f"{out}/{name}"]
        assert entry == {"num_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_remote_paths_without_a_runner_are_one_line_errors(tmp_path, store, capsys):
    folder = _make_folder(tmp_path / "videos")
    _upload_folder(folder, f"{ROOT}/videos")
    for args in (
        [f"--input={ROOT}/videos", f"--output={tmp_path / 'a'}"],
        [f"--input={folder}", f"--output={ROOT}/shards"],
        [f"--input={folder}", f"--output={tmp_path / 'b'}", f"--label-map={ROOT}/l.json"],
    ):
        assert _convert_cli(*args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {ROOT}/"), lines
        assert "needs --runner" in lines[0]
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
    for command in (["verify", f"{ROOT}/shards"], ["inspect", f"{ROOT}/shards", "--out=r"]):
        assert main(command) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [
            f"error: {ROOT}/shards: {command[0]} reads local shards; copy the "
            f"folder here first (e.g. gcloud storage cp -r {ROOT}/shards .)"
        ]
    listed = sorted(f"{ROOT}/videos/{name}" for name in [*CLIPS, "street/cut.mp4"])
    assert sorted(store) == listed, "nothing written"
    # The Python API too: remote videos listed, a local output.
    listing = list_sources("auto", f"{ROOT}/videos", split=None, video_root=None)
    assert sorted(s.path for s in listing.sources) == listed
    with pytest.raises(ConvertError, match="needs --runner"):
        convert(listing, str(tmp_path / "c"), workers=1, show_progress=False)
    assert not os.path.exists(tmp_path / "c")


DATAFLOW = [
    "--runner=DataflowRunner",
    "--project=my-project-123",
    "--region=us-central1",
    "--temp_location=gs://my-bucket/tmp",
]


def test_dataflow_is_checked_before_anything_is_listed_or_written(tmp_path, store, capsys):
    folder = _make_folder(tmp_path / "videos")
    _upload_folder(folder, f"{ROOT}/videos")
    remote = [f"--input={ROOT}/videos", f"--output={ROOT}/shards"]

    def error(*args: str) -> str:
        assert _convert_cli(*args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --runner DataflowRunner"), lines
        return lines[0]

    # Beam's own validation of the options, on one line.
    assert "Missing required option: project" in error(*remote, "--runner=DataflowRunner")
    # Local paths: Dataflow's workers cannot see them.
    message = error(f"--input={folder}", f"--output={ROOT}/shards", *DATAFLOW)
    assert f"--input {folder} is a local path" in message
    message = error(f"--input={ROOT}/videos", f"--output={tmp_path / 'out'}", *DATAFLOW)
    assert f"--output {tmp_path / 'out'} is a local path" in message
    if beam_convert._dataflow_client_missing():
        assert "pip install 'apache-beam[gcp]'" in error(*remote, *DATAFLOW)
    assert not any(p.startswith(f"{ROOT}/shards") for p in store), "nothing written"
    assert not os.path.exists(tmp_path / "out")


def test_dataflow_launch_goes_as_far_as_beams_submission(tmp_path, store, monkeypatch):
    """With the GCP extra (faked present), the launcher lists the remote videos, writes the label
    map, split plan and work list to the store, builds the pipeline and hands it to Beam's
    DataflowRunner, which stops here only because its client library is not installed."""
    if not beam_convert._dataflow_client_missing():
        pytest.skip("apache-beam[gcp] is installed: this would submit a real job")
    folder = _make_folder(tmp_path / "videos")
    _upload_folder(folder, f"{ROOT}/videos")
    monkeypatch.setattr(beam_convert, "_dataflow_client_missing", lambda: False)
    with pytest.raises(ImportError, match="Dataflow runner not available"):
        _convert_cli(f"--input={ROOT}/videos", f"--output={ROOT}/shards", *FLAGS, *DATAFLOW)
    assert _remote_json(f"{ROOT}/shards/label_map.json") == {"phone": 0, "street": 1}
    plan = _remote_json(f"{ROOT}/shards/sidecars/videos-train.split.json")
    assert len(plan["shards"]) == 2
    assert [e["path"] for e in plan["skipped"]] == []
    assert not any(".beam-work-" in p for p in store), "the work list is removed"
    assert not any(".array_record-" in p for p in store), "no worker ran"


def _put(root, relative: str, data: bytes | str = b"not decoded by a listing") -> None:
    """A file in the local tree and the same object in the store."""
    path = root / relative
    os.makedirs(path.parent, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    MemFileSystem.objects[f"{ROOT}/data/{relative}"] = path.read_bytes()


def test_lists_and_split_files_list_the_same_videos_from_the_store(tmp_path, store):
    """Every remote input form lists what its local twin lists, each folder listed once."""
    local = tmp_path / "data"
    for video in (
        "Zumba/v_Zumba_g01_c01.avi",
        "Zumba/v_Zumba_g02_c01.avi",
        "Biking/v_Biking_g01_c01.avi",
    ):
        _put(local, f"ucf/{video}")
    _put(local, "ucf/.hidden/ignored.avi")
    _put(local, "splits/classInd.txt", "1 Zumba\n2 Biking\n")
    _put(
        local,
        "splits/trainlist01.txt",
        "Zumba/v_Zumba_g01_c01.avi 1\nBiking/v_Biking_g01_c01.avi 2\n",
    )
    _put(local, "splits/testlist01.txt", "Zumba/v_Zumba_g02_c01.avi\nZumba/v_Zumba_g09_c01.avi\n")
    _put(local, "hmdb/Zumba_test_split1.txt", "v_Zumba_g01_c01.avi 1\nv_Zumba_g02_c01.avi 2\n")
    _put(local, "kinetics/abseiling/abc_000001_000011.mp4")
    _put(
        local,
        "kinetics/train.csv",
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,abc,1,11,train\nabseiling,gone,0,10,train\n",
    )
    _put(
        local,
        "ucf/paths.csv",
        "label,path,split\nZumba,Zumba/v_Zumba_g01_c01.avi,train\nZumba,Zumba/missing.avi,val\n",
    )
    _put(
        local,
        "ucf/list.json",
        json.dumps(
            [
                {"path": "Biking/v_Biking_g01_c01.avi", "label": "Biking", "split": "train"},
                {"path": "Biking/missing.avi", "label": "Biking", "split": "train"},
            ]
        ),
    )
    _put(
        local,
        "ucf/videos_train.txt",
        "Zumba/v_Zumba_g01_c01.avi 0\nBiking/v_Biking_g01_c01.avi 1\n",
    )
    inputs = [  # (format, input, splits_dir, class_list)
        ("auto", "ucf", None, None),  # Class folders.
        ("auto", "ucf", "splits", None),  # UCF101 split files.
        ("hmdb51", "ucf", "hmdb", None),
        ("auto", "kinetics/train.csv", None, None),  # Kinetics CSV: files found by YouTube id.
        ("auto", "ucf/paths.csv", None, None),
        ("auto", "ucf/list.json", None, None),
        ("auto", "ucf/videos_train.txt", None, "splits/classInd.txt"),  # A TSN video list.
    ]
    for input_format, path, splits_dir, class_list in inputs:
        listings = []
        for root in (str(local), f"{ROOT}/data"):
            MemFileSystem.requests.clear()
            listings.append(
                list_sources(
                    input_format,
                    f"{root}/{path}",
                    split=None,
                    video_root=None,
                    splits_dir=splits_dir and f"{root}/{splits_dir}",
                    class_list=class_list and f"{root}/{class_list}",
                )
            )
        local_listing, remote_listing = listings
        assert local_listing.sources, path
        assert remote_listing.input_format == local_listing.input_format, path
        moved = _moved(dataclasses.asdict(local_listing), str(local), f"{ROOT}/data")
        assert dataclasses.asdict(remote_listing) == moved, path
        # One listing per folder involved, however many entries the input has.
        assert len(MemFileSystem.requests) <= 3, (path, MemFileSystem.requests)

    # Frame folders are read with os: on the store they are refused, not silently skipped.
    _put(local, "frames/Zumba/v_Zumba_g01_c01/image_00001.jpg")
    with pytest.raises(SourceError, match="frame folder on remote storage"):
        list_sources("auto", f"{ROOT}/data/frames", split=None, video_root=None)
