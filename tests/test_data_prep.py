"""data_prep end to end on real videos: listings, conversion, bad inputs, resume, the CLI."""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
from array_record.python.array_record_module import ArrayRecordReader

from data_prep import convert as convert_module
from data_prep.convert import convert
from data_prep.sources import SourceError, VideoSource, list_sources
from tests.real_videos import real_video_path, truncated_copy
from vssl_jax import video_io
from vssl_jax.data import records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS, SHORT_SIDE = 5, 64
GOOD = {  # Relative path -> source clip: the videos that convert.
    "phone/carphone_distorted.mp4": "carphone_distorted.mp4",
    "phone/carphone_pristine.mp4": "carphone_pristine.mp4",
    "street/bikes.mp4": "bikes.mp4",
}
BAD = ("phone/empty.mp4", "phone/notes.mp4", "street/cut.mp4")


def _make_folder(root) -> str:
    """Class folders of real clips plus a zero-byte file, a text file and a truncated mp4."""
    for relative, clip in GOOD.items():
        os.makedirs(root / os.path.dirname(relative), exist_ok=True)
        shutil.copy(real_video_path(clip), root / relative)
    (root / "phone" / "empty.mp4").write_bytes(b"")
    (root / "phone" / "notes.mp4").write_text("not a video\n")
    (root / "phone" / ".DS_Store").write_bytes(b"\0\0")  # Hidden: never listed.
    truncated_copy(real_video_path("bikes.mp4"), str(root / "street" / "cut.mp4"))
    return str(root)


@pytest.fixture
def folder(tmp_path) -> str:
    return _make_folder(tmp_path / "videos")


def _convert(listing, out, **kwargs) -> dict:
    options = dict(fps=FPS, short_side=SHORT_SIDE, workers=1, show_progress=False)
    return convert(listing, str(out), **(options | kwargs))


def _read_split(out, manifest: dict, split: str) -> list[records.VideoRecord]:
    parsed = []
    for shard in manifest["splits"][split]["shards"]:
        source = records.VideoSource([os.path.join(out, shard)])
        parsed += [source[i] for i in range(len(source))]
    return parsed


def _shard_bytes(out) -> dict[str, bytes]:
    paths = sorted(glob.glob(os.path.join(out, "*.array_record-*")))
    return {os.path.basename(p): open(p, "rb").read() for p in paths}


def _expected_frames(path: str) -> int:
    # video_io's rule: t_k = k / fps for every t_k before the end of the video.
    return math.ceil(video_io.probe(path).duration * FPS - 1e-9)


def _count_decodes(monkeypatch) -> list[str]:
    decoded: list[str] = []
    real = video_io.decode_to_jpegs

    def counting(path, **kwargs):
        decoded.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(convert_module.video_io, "decode_to_jpegs", counting)
    return decoded


def test_convert_folder_skips_bad_files(folder, tmp_path):
    listing = list_sources("folders", folder, split=None, video_root=None)
    listed = sorted(os.path.relpath(s.path, folder) for s in listing.sources)
    assert listed == sorted([*GOOD, *BAD])  # Non-videos are listed; the converter decides.
    assert listing.label_names == ["phone", "street"]
    assert {s.split for s in listing.sources} == {"train"}

    out = tmp_path / "out"
    manifest = _convert(listing, out, videos_per_shard=2)
    assert json.loads((out / "label_map.json").read_text()) == {"phone": 0, "street": 1}

    converted = _read_split(out, manifest, "train")
    assert sorted(os.path.relpath(r.path, folder) for r in converted) == sorted(GOOD)
    for record in converted:
        assert record.num_frames == _expected_frames(record.path) > 0
        assert record.label_text == os.path.basename(os.path.dirname(record.path))
        assert record.label == ["phone", "street"].index(record.label_text)
        assert record.fps == FPS

    split = manifest["splits"]["train"]
    assert split["num_videos"] == 3
    assert split["per_class"] == {"phone": 2, "street": 1}
    assert split["num_frames"] == sum(r.num_frames for r in converted) == 21 + 21 + 50
    # 6 listed sources in shards of 2; the bad ones leave their shards short.
    assert split["num_shards"] == 3
    shard_files = [os.path.join(out, s) for s in split["shards"]]
    assert records.shard_paths(str(out), "train") == shard_files
    for path in shard_files:  # One record per chunk (random access), stored without zstd.
        options = ArrayRecordReader(path).writer_options_string().split(",")
        assert "group_size:1" in options and "uncompressed" in options, options
    assert manifest["options"] == {
        "fps": FPS,
        "short_side": SHORT_SIDE,
        "jpeg_quality": 90,
        "frames_per_record": records.DEFAULT_FRAMES_PER_RECORD,
    }
    assert split["num_records"] == 1 + 1 + 2  # 21, 21 and 50 frames at 32 per record.
    assert manifest["schema_version"] == records.SCHEMA_VERSION

    assert manifest["num_skipped"] == 3
    skipped = {os.path.relpath(e["path"], folder): e["reason"] for e in manifest["skipped"]}
    assert sorted(skipped) == sorted(BAD)
    assert skipped["phone/empty.mp4"] == "empty file (0 bytes)"
    assert skipped["phone/notes.mp4"].startswith("cannot open as a video")
    assert skipped["street/cut.mp4"].startswith("corrupt or truncated data")
    assert all("\n" not in reason for reason in skipped.values())
    assert json.loads((out / "manifest.json").read_text()) == manifest


def _shard_contents(out) -> dict[str, list[tuple]]:
    contents = {}
    for name in _shard_bytes(out):
        reader = ArrayRecordReader(os.path.join(out, name))
        parsed = [records.parse_record(raw) for raw in reader.read_all()]
        reader.close()
        contents[name] = [dataclasses.astuple(r)[1:] + (list(r.frames),) for r in parsed]
    return contents


def test_worker_processes_write_the_same_shards(folder, tmp_path):
    listing = list_sources("folders", folder, split=None, video_root=None)
    _convert(listing, tmp_path / "one", videos_per_shard=2)
    _convert(listing, tmp_path / "two", videos_per_shard=2, workers=2)
    # Compared parsed: protobuf orders a record's feature map differently in each process.
    one, two = _shard_contents(tmp_path / "one"), _shard_contents(tmp_path / "two")
    assert [len(v) for v in one.values()] == [2, 0, 2]  # Records: bikes' 50 frames take two.
    assert one == two


def _make_split_folder(root) -> str:
    """ROOT/<split>/<class>/<video>; class `zoo` exists only in val, `street` only in train."""
    clips = {
        "train/phone/a.mp4": "carphone_pristine.mp4",
        "train/street/b.mp4": "carphone_distorted.mp4",
        "val/phone/c.mp4": "carphone_distorted.mp4",
        "val/zoo/d.mp4": "carphone_pristine.mp4",
    }
    for relative, clip in clips.items():
        os.makedirs(root / os.path.dirname(relative), exist_ok=True)
        shutil.copy(real_video_path(clip), root / relative)
    return str(root)


def test_label_map_is_stable_when_splits_are_converted_separately(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    root = _make_split_folder(tmp_path / "videos")
    together = tmp_path / "together"
    _convert(list_sources("folders", root, split=None, video_root=None), together)

    apart = tmp_path / "apart"
    val = list_sources("folders", root, split="val", video_root=None)
    assert {s.split for s in val.sources} == {"val"}
    assert val.label_names == ["phone", "street", "zoo"]  # From every split, not only val.
    _convert(val, apart)
    manifest = _convert(list_sources("folders", root, split="train", video_root=None), apart)

    label_map = {"phone": 0, "street": 1, "zoo": 2}
    for out in (together, apart):
        assert json.loads((out / "label_map.json").read_text()) == label_map
    assert sorted(manifest["splits"]) == ["train", "val"]
    assert manifest["splits"]["val"]["per_class"] == {"phone": 1, "street": 0, "zoo": 1}
    assert _shard_bytes(together) == _shard_bytes(apart)
    assert set(tfds.builder_from_directory(str(apart)).info.splits) == {"train", "val"}
    val_labels = [r.label for r in _read_split(apart, manifest, "val")]
    assert val_labels == [0, 2]

    # A second run finds everything done: no decoding, same files.
    decoded = _count_decodes(monkeypatch)
    again = _convert(list_sources("folders", root, split=None, video_root=None), apart)
    assert decoded == []
    assert again == manifest
    assert json.loads((apart / "label_map.json").read_text()) == label_map


def test_existing_label_map_is_kept(folder, tmp_path):
    out = tmp_path / "out"
    os.makedirs(out)
    (out / "label_map.json").write_text(json.dumps({"zoo": 0, "street": 1}))
    manifest = _convert(list_sources("folders", folder, split=None, video_root=None), out)
    assert json.loads((out / "label_map.json").read_text()) == {"zoo": 0, "street": 1}
    [record] = _read_split(out, manifest, "train")
    assert (record.label_text, record.label) == ("street", 1)
    reasons = {os.path.relpath(e["path"], folder): e["reason"] for e in manifest["skipped"]}
    assert reasons["phone/carphone_pristine.mp4"] == "label 'phone' not in label map"

    # The same rule at listing time, with --label-map.
    listing = list_sources(
        "folders", folder, split=None, video_root=None, label_map_path=str(out / "label_map.json")
    )
    assert listing.label_names == ["zoo", "street"]
    assert {s.label_text for s in listing.sources} == {"street"}
    assert sum("not in label map" in e["reason"] for e in listing.skipped) == 4


def test_resume_redoes_only_the_missing_shard(folder, tmp_path, monkeypatch):
    listing = list_sources("folders", folder, split=None, video_root=None)
    out = tmp_path / "out"
    first = _convert(listing, out, videos_per_shard=2)
    before = _shard_bytes(out)
    shards = first["splits"]["train"]["shards"]

    # Lose the middle shard and its sidecar, and leave a half-written file behind.
    os.remove(out / shards[1])
    os.remove(out / "sidecars" / f"{shards[1]}.json")
    (out / f"{shards[0]}.tmp-99999").write_bytes(b"half a shard")
    kept = {name: os.stat(out / name).st_mtime_ns for name in (shards[0], shards[2])}

    decoded = _count_decodes(monkeypatch)
    second = _convert(listing, out, videos_per_shard=2)
    # Sorted sources: phone/carphone_distorted, carphone_pristine | empty, notes | street/...
    assert sorted(os.path.relpath(p, folder) for p in decoded) == [
        "phone/empty.mp4",
        "phone/notes.mp4",
    ]
    assert _shard_bytes(out) == before
    assert {name: os.stat(out / name).st_mtime_ns for name in kept} == kept
    assert glob.glob(str(out / "**" / "*.tmp-*"), recursive=True) == []
    assert second == first


def test_resume_after_an_interrupted_run(folder, tmp_path, monkeypatch):
    listing = list_sources("folders", folder, split=None, video_root=None)
    calls = []
    real = convert_module._convert_video

    def interrupted(task):
        calls.append(task.source.path)
        if len(calls) == 4:  # Inside the second shard.
            raise KeyboardInterrupt
        return real(task)

    out = tmp_path / "out"
    monkeypatch.setattr(convert_module, "_convert_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _convert(listing, out, videos_per_shard=2)
    monkeypatch.undo()
    first_shard = records.shard_name("videos", "train", "array_record", 0, 3)
    assert os.path.isfile(out / first_shard)
    assert len(glob.glob(str(out / "*.tmp-*"))) == 1
    assert not os.path.exists(out / "manifest.json")

    decoded = _count_decodes(monkeypatch)
    manifest = _convert(listing, out, videos_per_shard=2)
    assert len(decoded) == 4  # The two unfinished shards only.
    assert glob.glob(str(out / "**" / "*.tmp-*"), recursive=True) == []
    paths = [r.path for r in _read_split(out, manifest, "train")]
    assert sorted(paths) == sorted(os.path.join(folder, p) for p in GOOD)  # Each exactly once.

    monkeypatch.undo()
    fresh = _convert(listing, tmp_path / "fresh", videos_per_shard=2)
    assert manifest == fresh
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "fresh")


def test_a_new_shard_layout_replaces_the_old_one(folder, tmp_path):
    listing = list_sources("folders", folder, split=None, video_root=None)
    out = tmp_path / "out"
    _convert(listing, out, videos_per_shard=2)
    manifest = _convert(listing, out, videos_per_shard=4)
    # The 3 shards of the first layout are gone: readers globbing the folder see each video once.
    assert [os.path.basename(p) for p in records.shard_paths(str(out), "train")] == [
        "videos-train.array_record-00000-of-00002",
        "videos-train.array_record-00001-of-00002",
    ]
    assert sorted(os.listdir(out / "sidecars")) == [
        "videos-train.array_record-00000-of-00002.json",
        "videos-train.array_record-00001-of-00002.json",
        "videos-train.split.json",
    ]
    assert len(_read_split(out, manifest, "train")) == 3


def test_other_options_into_the_same_folder_are_refused(tmp_path):
    root = _make_split_folder(tmp_path / "videos")
    out = tmp_path / "out"
    _convert(list_sources("folders", root, split="train", video_root=None), out)
    with pytest.raises(convert_module.ConvertError, match="split 'train' was converted with"):
        _convert(list_sources("folders", root, split="val", video_root=None), out, short_side=32)


# --- listings ---


def test_folders_listing(tmp_path):
    root = tmp_path / "videos"
    os.makedirs(root / "cat" / "frames")  # A folder inside a class folder: not a video.
    (root / "cat" / "a.mp4").write_bytes(b"x")
    (root / "cat" / "readme.txt").write_text("x")
    (root / "cat" / ".hidden.mp4").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    listing = list_sources("folders", str(root), split="holdout", video_root=None)
    assert [(os.path.relpath(s.path, root), s.split) for s in listing.sources] == [
        ("cat/a.mp4", "holdout"),
        ("cat/readme.txt", "holdout"),
    ]
    assert sorted(os.path.relpath(e["path"], root) for e in listing.skipped) == [
        "cat/frames",
        "notes.txt",
    ]
    with pytest.raises(SourceError, match="no such directory"):
        list_sources("folders", str(tmp_path / "nope"), split=None, video_root=None)
    split_root = _make_split_folder(tmp_path / "split")
    with pytest.raises(SourceError, match="no 'test' folder"):
        list_sources("folders", split_root, split="test", video_root=None)


def _write(path, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_kinetics_csv_listing_and_trim(tmp_path):
    root = tmp_path / "kinetics"
    os.makedirs(root / "train" / "cooking")
    os.makedirs(root / "train" / "dancing")
    # A clip already cut by the downloader, and a full video that must be cut here.
    shutil.copy(
        real_video_path("carphone_pristine.mp4"),
        root / "train" / "cooking" / "aaa_000010_000020.mp4",
    )
    shutil.copy(real_video_path("bikes.mp4"), root / "train" / "dancing" / "bbb.mp4")
    csv_path = _write(
        tmp_path / "lists" / "k.csv",
        "label,youtube_id,time_start,time_end,split\n"
        "cooking,aaa,10,20,train\n"
        "dancing,bbb,2,4,train\n"
        "dancing,ccc,0,10,train\n"
        "cooking,aaa,10,20,train\n"
        "eating,ddd,5,15,val\n"
        "eating,eee\n",  # A short row: its split and times are empty.
    )
    listing = list_sources("csv", csv_path, split=None, video_root=str(root))
    assert listing.label_names == ["cooking", "dancing", "eating"]
    assert listing.sources == [
        VideoSource(str(root / "train/cooking/aaa_000010_000020.mp4"), "cooking", "train"),
        VideoSource(str(root / "train/dancing/bbb.mp4"), "dancing", "train", 2.0, 4.0),
    ]
    reasons = {(e["path"], e["split"]): e["reason"] for e in listing.skipped}
    assert reasons[("ccc", "train")].startswith("no file ccc_000000_000010.* or ccc.*")
    assert reasons[(str(root / "train/cooking/aaa_000010_000020.mp4"), "train")] == "duplicate row"
    assert ("ddd", "val") in reasons
    assert reasons[("eee", "")] == f"{csv_path}:7: no time_start/time_end"

    train_only = list_sources("csv", csv_path, split="train", video_root=str(root))
    assert train_only.label_names == listing.label_names  # Labels come from every row.
    assert {e["split"] for e in train_only.skipped} == {"train"}

    manifest = _convert(train_only, tmp_path / "out")
    cut, full = _read_split(tmp_path / "out", manifest, "train")
    assert (cut.start_time, cut.num_frames, cut.label) == (0.0, 21, 0)
    assert (full.start_time, full.end_time) == (2.0, 4.0)
    assert full.num_frames == 10  # 2 s at 5 fps.
    assert manifest["splits"]["train"]["num_videos"] == 2
    assert manifest["num_skipped"] == 2  # ccc (missing) and the duplicate row.

    bad = _write(tmp_path / "bad.csv", "label,youtube_id,split\ncooking,aaa,train\n")
    with pytest.raises(SourceError) as error:
        list_sources("csv", bad, split=None, video_root=str(root))
    assert str(error.value).startswith(f"{bad}: missing columns time_start, time_end")
    assert "\n" not in str(error.value)


def test_csv_with_a_path_column(tmp_path):
    os.makedirs(tmp_path / "v")
    (tmp_path / "v" / "a.mp4").write_bytes(b"x")
    csv_path = _write(
        tmp_path / "list.csv",
        "label,path,time_start,time_end,split\nx,v/a.mp4,,,train\ny,v/a.mp4,1.5,3,val\nx,v/b.mp4,,,train\n",
    )
    listing = list_sources("csv", csv_path, split=None, video_root=None)
    assert listing.sources == [
        VideoSource(str(tmp_path / "v/a.mp4"), "x", "train"),
        VideoSource(str(tmp_path / "v/a.mp4"), "y", "val", 1.5, 3.0),
    ]
    assert listing.skipped == [
        {"path": str(tmp_path / "v/b.mp4"), "split": "train", "reason": "file not found"}
    ]


def test_json_listing(tmp_path):
    os.makedirs(tmp_path / "clips")
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    entries = [
        {"path": "clips/a.mp4", "label": "run", "split": "train", "start": 1, "end": 2.5},
        {"path": "clips/a.mp4", "label": "walk", "split": "test"},
        {"path": "clips/gone.mp4", "label": "walk", "split": "train"},
    ]
    json_path = _write(tmp_path / "list.json", json.dumps(entries))
    listing = list_sources("json", json_path, split=None, video_root=None)
    assert listing.label_names == ["run", "walk"]
    assert listing.sources == [
        VideoSource(str(tmp_path / "clips/a.mp4"), "run", "train", 1, 2.5),
        VideoSource(str(tmp_path / "clips/a.mp4"), "walk", "test"),
    ]
    assert [e["reason"] for e in listing.skipped] == ["file not found"]
    assert [
        s.split for s in list_sources("json", json_path, split="test", video_root=None).sources
    ] == ["test"]

    # Relative to --video-root when given.
    moved = _write(tmp_path / "elsewhere" / "list.json", json.dumps(entries[:1]))
    assert len(list_sources("json", moved, split=None, video_root=str(tmp_path)).sources) == 1

    for broken in ('{"path": "a"}', '[{"path": "a", "label": 3, "split": "x"}]', "[{"):
        bad = _write(tmp_path / "bad.json", broken)
        with pytest.raises(SourceError) as error:
            list_sources("json", bad, split=None, video_root=None)
        assert str(error.value).startswith(f"{bad}: ") and "\n" not in str(error.value)


def test_ucf101_listing(tmp_path):
    root, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    for name in (
        "Zumba/v_Zumba_g01_c01.avi",
        "Archery/v_Archery_g01_c01.avi",
        "Archery/v_Archery_g08_c02.avi",
    ):
        _write(root / name, "x")
    _write(splits / "classInd.txt", "1 Zumba\n2 Archery\n")  # Not alphabetical: order is kept.
    _write(
        splits / "trainlist01.txt",
        "Zumba/v_Zumba_g01_c01.avi 1\nArchery/v_Archery_g08_c02.avi 2\nArchery/v_Archery_g09_c01.avi 2\n",
    )
    _write(splits / "testlist01.txt", "Archery/v_Archery_g01_c01.avi\n")
    _write(splits / "trainlist02.txt", "Archery/v_Archery_g01_c01.avi 2\n")
    _write(splits / "testlist02.txt", "Zumba/v_Zumba_g01_c01.avi\n")

    listing = list_sources("ucf101", str(root), split=None, video_root=None, splits_dir=str(splits))
    assert listing.label_names == ["Zumba", "Archery"]
    assert [(os.path.relpath(s.path, root), s.label_text, s.split) for s in listing.sources] == [
        ("Zumba/v_Zumba_g01_c01.avi", "Zumba", "train"),
        ("Archery/v_Archery_g08_c02.avi", "Archery", "train"),
        ("Archery/v_Archery_g01_c01.avi", "Archery", "test"),
    ]
    assert [(e["split"], e["reason"]) for e in listing.skipped] == [("train", "file not found")]

    second = list_sources(
        "ucf101", str(root), split="test", video_root=None, splits_dir=str(splits), split_id=2
    )
    assert [(s.label_text, s.split) for s in second.sources] == [("Zumba", "test")]

    flat = tmp_path / "flat"
    _write(flat / "v_Zumba_g01_c01.avi", "x")
    flat_listing = list_sources(
        "ucf101", str(flat), split="train", video_root=None, splits_dir=str(splits)
    )
    assert [s.path for s in flat_listing.sources] == [str(flat / "v_Zumba_g01_c01.avi")]

    with pytest.raises(SourceError, match="needs --splits-dir"):
        list_sources("ucf101", str(root), split=None, video_root=None)


def test_hmdb51_listing(tmp_path):
    root, splits = tmp_path / "hmdb51", tmp_path / "splits"
    for name in ("brush_hair/a.avi", "brush_hair/b.avi", "brush_hair/c.avi", "ride_bike/d.avi"):
        _write(root / name, "x")
    _write(splits / "brush_hair_test_split1.txt", "a.avi 1\nb.avi 2\nc.avi 0\ngone.avi 1\n")
    _write(splits / "ride_bike_test_split1.txt", "d.avi 2\n")
    _write(splits / "ride_bike_test_split2.txt", "d.avi 1\n")

    listing = list_sources("hmdb51", str(root), split=None, video_root=None, splits_dir=str(splits))
    assert listing.label_names == ["brush_hair", "ride_bike"]
    assert [(os.path.relpath(s.path, root), s.label_text, s.split) for s in listing.sources] == [
        ("brush_hair/a.avi", "brush_hair", "train"),
        ("brush_hair/b.avi", "brush_hair", "test"),
        ("ride_bike/d.avi", "ride_bike", "test"),
    ]
    assert listing.skipped == [
        {"path": str(root / "brush_hair/gone.avi"), "split": "train", "reason": "file not found"}
    ]
    split2 = list_sources(
        "hmdb51", str(root), split="train", video_root=None, splits_dir=str(splits), split_id=2
    )
    assert [(s.label_text, s.split) for s in split2.sources] == [("ride_bike", "train")]
    assert split2.label_names == ["ride_bike"]


# --- the command line ---


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_convert(folder, tmp_path):
    out = tmp_path / "out"
    args = ["--input", folder, "--output", str(out), "--fps", "5", "--short-side", "64"]
    result = _cli("convert", *args, "--workers", "2", "--tfrecord")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r"converted 3 videos \(92 frames\) into 1 shards in [0-9.]+ s; "
        r"skipped 3 \(see manifest\.json\)\n",
        result.stdout,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["num_videos"] == 3
    assert os.path.isfile(out / manifest["splits"]["train"]["tfrecord_shards"][0])


def test_cli_errors_are_one_line(tmp_path):
    missing = str(tmp_path / "missing")
    bad_csv = _write(tmp_path / "k.csv", "label,split\na,train\n")
    cases = {
        f"error: {missing}: no such directory": ["--input", missing],
        f"error: {bad_csv}: missing columns youtube_id, time_start, time_end": [
            "--format",
            "csv",
            "--input",
            bad_csv,
        ],
    }
    for expected, args in cases.items():
        result = _cli("convert", *args, "--output", str(tmp_path / "out"))
        assert result.returncode == 2
        assert result.stderr.startswith(expected)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "out")
    assert _cli("--help").returncode == 0
