"""Every list format of the seeds and their peers, written by hand over real frame folders.

A miniature UCF101: classInd.txt names Zumba, Archery, Biking (in that order, not alphabetical);
each class has a g01 video (train) and Zumba / Archery a g02 video (test), so the test split
lacks a class. The frames are real (slices of a real clip), stored in the layouts the lists
expect. Each list is auto-detected, converted, and its labels and frames checked.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from data_prep.__main__ import main
from data_prep.inspect import inspect_shards
from data_prep.lists import read_class_list
from data_prep.sources import SourceError, list_sources
from tests.real_videos import real_video_path
from tests.test_frame_folders import convert_quietly, read_records, write_frames
from vssl_jax import video_io

CLASS_IND = "1 Zumba\n2 Archery\n3 Biking\n"
CLASSES = ["Zumba", "Archery", "Biking"]
LABEL_MAP = {name: i for i, name in enumerate(CLASSES)}
TRAIN = ["v_Zumba_g01_c01", "v_Archery_g01_c01", "v_Biking_g01_c01"]
TEST = ["v_Zumba_g02_c01", "v_Archery_g02_c01"]
FRAMES = 15  # Per video.


def _class(video: str) -> str:
    return video.split("_")[1]


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    """Frame folders of the five videos in three layouts, plus classInd.txt; returns paths."""
    root = tmp_path_factory.mktemp("ucf")
    clip = video_io.decode_to_jpegs(
        real_video_path("carphone_pristine.mp4"), fps=None, short_side=32
    ).frames
    frames = {}
    for i, video in enumerate(TRAIN + TEST):
        frames[video] = clip[i * FRAMES : (i + 1) * FRAMES]  # A different stretch each.
        write_frames(root / "resnets" / _class(video) / video, frames[video])  # image_00001.jpg
        write_frames(root / "jpegs_256" / video, frames[video], "frame{:06d}.jpg")
        write_frames(root / "rawframes" / video, frames[video], "img_{:05d}.jpg")
    os.makedirs(root / "lists")
    (root / "lists" / "classInd.txt").write_text(CLASS_IND)
    return {"root": root, "frames": frames}


def _write(path, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def _reasons(listing) -> dict[str, str]:
    return {os.path.basename(e["path"]): e["reason"] for e in listing.skipped}


def _check_records(ucf, out, expected: dict[str, tuple]) -> None:
    """expected: video -> (label index, frame slice or None for all) of its record."""
    converted = read_records(out)
    assert sorted(converted) == sorted(expected)
    for video, (label, frames) in expected.items():
        record = converted[video]
        assert (record.label, record.label_text) == (label, CLASSES[label])
        want = ucf["frames"][video] if frames is None else ucf["frames"][video][frames]
        assert list(record.frames) == want  # Copied from the frame folder as they are.


def test_3d_resnets_json(ucf, tmp_path):
    root = ucf["root"] / "resnets"
    database = {
        video: {
            "subset": "training" if video in TRAIN else "validation",
            "annotations": {"label": _class(video), "segment": [1, FRAMES + 1]},
        }
        for video in TRAIN + TEST
    }
    database["v_Archery_g01_c01"]["annotations"]["segment"] = [3, 10]  # Frames 3..9.
    database["v_Biking_g01_c01"]["annotations"]["segment"] = [1, 40]  # More than on disk.
    database["v_Zumba_g09_c01"] = {"subset": "training", "annotations": {"label": "Zumba"}}
    data = {"labels": CLASSES, "database": database}
    path = _write(tmp_path / "ucf101_01.json", json.dumps(data))

    listing = list_sources("auto", path, split=None, video_root=str(root))
    assert listing.input_format == "resnets3d_json"
    assert listing.label_names == CLASSES
    assert _reasons(listing) == {
        "v_Biking_g01_c01": f"has {FRAMES} frames, the list says 39",
        "v_Zumba_g09_c01": "file or frame folder not found",
    }
    assert {s.split for s in listing.sources} == {"train", "val"}  # training, validation.
    convert_quietly(listing, tmp_path / "out", short_side=None)
    _check_records(
        ucf,
        tmp_path / "out",
        {
            "v_Zumba_g01_c01": (0, None),
            "v_Archery_g01_c01": (1, slice(2, 9)),
            "v_Zumba_g02_c01": (0, None),
            "v_Archery_g02_c01": (1, None),
        },
    )
    stats = inspect_shards(str(tmp_path / "out"), str(tmp_path / "report"), show=False)
    assert {s: v["num_videos"] for s, v in stats["per_split"].items()} == {"train": 2, "val": 2}
    assert stats["num_frames"] == 3 * FRAMES + 7
    assert stats["per_class"] == {"Zumba": 2, "Archery": 2, "Biking": 0}
    assert (
        stats["skipped"] == json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped"]
    )
    assert stats["num_skipped"] == 2
    val = list_sources("resnets3d_json", path, split="val", video_root=str(root))
    assert sorted(os.path.basename(s.path) for s in val.sources) == sorted(TEST)


def test_vtdl_list(ucf, tmp_path):
    path = _write(
        tmp_path / "lists" / "vtdl_train.txt",
        "Zumba/v_Zumba_g01_c01 0 15\n"
        "Archery/v_Archery_g01_c01 1 12\n"  # Fewer than on disk: the first 12.
        "Biking/v_Biking_g01_c01 2 20\n"  # More than on disk.
        "Biking/v_Biking_g07_c01 2 15\n",  # Not on disk.
    )
    _write(tmp_path / "lists" / "classInd.txt", CLASS_IND)  # Found beside the list.
    root = str(ucf["root"] / "resnets")
    listing = list_sources("auto", path, split=None, video_root=root)
    assert listing.input_format == "vtdl"
    assert listing.label_names == CLASSES
    assert _reasons(listing) == {
        "v_Biking_g01_c01": f"has {FRAMES} frames, the list says 20",
        "v_Biking_g07_c01": "file or frame folder not found",
    }
    convert_quietly(listing, tmp_path / "out", short_side=None)
    _check_records(
        ucf, tmp_path / "out", {"v_Zumba_g01_c01": (0, None), "v_Archery_g01_c01": (1, slice(12))}
    )

    # Indices that reach the number of classes and never use 0 count from 1.
    one_based = _write(tmp_path / "lists" / "vtdl_one.txt", "Biking/v_Biking_g01_c01 3 15\n")
    listing = list_sources("vtdl", one_based, split=None, video_root=root)
    assert [s.label_text for s in listing.sources] == ["Biking"]


def test_rawframe_and_video_lists(ucf, tmp_path):
    lists = ucf["root"] / "lists"
    rawframes = _write(
        lists / "ucf101_train_split_1_rawframes.txt",
        "v_Zumba_g01_c01 15 0\nv_Biking_g01_c01 15 2\nv_Archery_g01_c01 15 7\n",
    )
    listing = list_sources("auto", rawframes, split=None, video_root=str(ucf["root"] / "rawframes"))
    assert listing.input_format == "rawframes"
    assert {s.split for s in listing.sources} == {"train"}  # From the file name.
    assert _reasons(listing) == {"v_Archery_g01_c01": "class index 7 not in the class list"}
    convert_quietly(listing, tmp_path / "raw", short_side=None)
    _check_records(
        ucf, tmp_path / "raw", {"v_Zumba_g01_c01": (0, None), "v_Biking_g01_c01": (2, None)}
    )

    # `path label`: a real video file, and a video whose frames were extracted instead.
    videos = tmp_path / "videos"
    os.makedirs(videos / "Archery")
    shutil.copy(real_video_path("carphone_distorted.mp4"), videos / "Archery" / "v_A.mp4")
    shutil.copytree(ucf["root"] / "resnets" / "Zumba", videos / "Zumba")
    video_list = _write(
        tmp_path / "test_videos.txt",
        "Archery/v_A.mp4 1\nZumba/v_Zumba_g02_c01.avi 0\n",
    )
    listing = list_sources(
        "auto",
        video_list,
        split=None,
        video_root=str(videos),
        class_list=str(lists / "classInd.txt"),
    )
    assert listing.input_format == "videolist"
    assert [(os.path.basename(s.path), s.label_text, s.split) for s in listing.sources] == [
        ("v_A.mp4", "Archery", "test"),
        ("v_Zumba_g02_c01", "Zumba", "test"),
    ]
    convert_quietly(listing, tmp_path / "videolist", short_side=32, fps=5)
    converted = read_records(tmp_path / "videolist")
    assert converted["v_A.mp4"].num_frames == 21  # Decoded: 4.004 s at 5 fps.
    assert converted["v_Zumba_g02_c01"].num_frames == 3  # 15 frames at 25 fps: 0.6 s.


def test_datalist_json(ucf, tmp_path):
    entries = [
        {
            "path": video,
            "class_name": _class(video),
            "label": LABEL_MAP[_class(video)],
            "num_frames": FRAMES,
        }
        for video in TEST
    ]
    entries.append({"path": "v_Zumba_g05_c01", "class_name": "Zumba", "label": 0, "num_frames": 9})
    path = _write(tmp_path / "test_datalist.json", json.dumps(entries))
    root = str(ucf["root"] / "jpegs_256")  # frame000001.jpg
    # The entries name their classes: Zumba 0, Archery 1 (Biking is not in this split).
    listing = list_sources("auto", path, split=None, video_root=root)
    assert listing.input_format == "datalist"
    assert listing.label_names == ["Zumba", "Archery"]
    assert _reasons(listing) == {"v_Zumba_g05_c01": "file or frame folder not found"}
    # With the class list, all three classes.
    class_list = str(ucf["root"] / "lists" / "classInd.txt")
    listing = list_sources("datalist", path, split=None, video_root=root, class_list=class_list)
    assert listing.label_names == CLASSES
    assert {s.split for s in listing.sources} == {"test"}
    convert_quietly(listing, tmp_path / "out", short_side=None)
    _check_records(
        ucf, tmp_path / "out", {"v_Zumba_g02_c01": (0, None), "v_Archery_g02_c01": (1, None)}
    )

    gap = _write(tmp_path / "gap.json", json.dumps(entries[:1] + [dict(entries[1], label=2)]))
    with pytest.raises(SourceError, match="no entry has label 1, so its class name is unknown"):
        list_sources("datalist", gap, split=None, video_root=root)


def test_dpc_csv_with_paths_from_another_machine(ucf, tmp_path):
    lists = tmp_path / "ucf101"
    _write(lists / "classInd.txt", CLASS_IND)
    elsewhere = "/scratch/local/ssd/htd/ucf101/frame"
    path = _write(
        lists / "test_split01.csv",
        f"{elsewhere}/Zumba/v_Zumba_g02_c01,15\n{elsewhere}/Archery/v_Archery_g02_c01,16\n"
        f"{elsewhere}/Skiing/v_Skiing_g01_c01,15\n",
    )
    listing = list_sources("auto", path, split=None, video_root=str(ucf["root"] / "resnets"))
    assert listing.input_format == "dpc_csv"
    assert _reasons(listing) == {
        "v_Archery_g02_c01": f"has {FRAMES} frames, the list says 16",
        "v_Skiing_g01_c01": "class 'Skiing' not in the class list",
    }
    convert_quietly(listing, tmp_path / "out", short_side=None)
    _check_records(ucf, tmp_path / "out", {"v_Zumba_g02_c01": (0, None)})


def _ucf_splits(folder) -> str:
    _write(folder / "classInd.txt", CLASS_IND)
    _write(
        folder / "trainlist01.txt",
        "".join(f"{_class(v)}/{v}.avi {LABEL_MAP[_class(v)] + 1}\n" for v in TRAIN),
    )
    _write(folder / "testlist01.txt", "".join(f"{_class(v)}/{v}.avi\n" for v in TEST))
    return str(folder)


def test_ucf101_and_hmdb51_split_files_over_frame_folders(ucf, tmp_path):
    splits = _ucf_splits(tmp_path / "ucfTrainTestlist")
    # The two-stream jpegs_256 release: a flat ROOT/<video>/frame000001.jpg.
    flat = str(ucf["root"] / "jpegs_256")
    listing = list_sources("auto", flat, split=None, video_root=None, splits_dir=splits)
    assert listing.input_format == "ucf101"
    assert [(os.path.basename(s.path), s.split) for s in listing.sources] == [
        *[(v, "train") for v in TRAIN],
        *[(v, "test") for v in TEST],
    ]
    assert listing.skipped == []

    hmdb = tmp_path / "testTrainMulti_7030_splits"
    _write(hmdb / "Zumba_test_split1.txt", "v_Zumba_g01_c01.avi 1\nv_Zumba_g02_c01.avi 2\n")
    _write(hmdb / "Archery_test_split1.txt", "v_Archery_g01_c01.avi 0\nv_Archery_g02_c01.avi 2\n")
    resnets = str(ucf["root"] / "resnets")
    listing = list_sources("auto", resnets, split=None, video_root=None, splits_dir=str(hmdb))
    assert listing.input_format == "hmdb51"
    assert [(os.path.basename(s.path), s.label_text, s.split) for s in listing.sources] == [
        ("v_Archery_g02_c01", "Archery", "test"),
        ("v_Zumba_g01_c01", "Zumba", "train"),
        ("v_Zumba_g02_c01", "Zumba", "test"),
    ]


def test_train_and_test_converted_separately_agree_on_class_indices(ucf, tmp_path):
    """Split 1's test list lacks Biking; the label map still comes from classInd.txt."""
    splits = _ucf_splits(tmp_path / "ucfTrainTestlist")
    flat = str(ucf["root"] / "jpegs_256")
    lists = ucf["root"] / "lists"
    _write(
        lists / "ucf101_val_split_1_rawframes.txt",
        "".join(f"{v} 15 {LABEL_MAP[_class(v)]}\n" for v in TEST),
    )
    _write(
        lists / "ucf101_train_split_1_rawframes.txt",
        "".join(f"{v} 15 {LABEL_MAP[_class(v)]}\n" for v in TRAIN),
    )
    raw_root = str(ucf["root"] / "rawframes")
    runs = {  # name -> (listing of train, listing of test)
        "ucf101": [
            list_sources("ucf101", flat, split=s, video_root=None, splits_dir=splits)
            for s in ("train", "test")
        ],
        "rawframes": [
            list_sources(
                "auto",
                str(lists / f"ucf101_{s}_split_1_rawframes.txt"),
                split=None,
                video_root=raw_root,
            )
            for s in ("train", "val")
        ],
    }
    labels = {}
    for name, (train, test) in runs.items():
        assert train.label_names == test.label_names == CLASSES
        # Test first, each into its own folder, and both into one folder.
        for listing, out in [(test, "test"), (train, "train"), (test, "both"), (train, "both")]:
            convert_quietly(listing, tmp_path / name / out, short_side=None)
        for out in ("test", "train", "both"):
            folder = tmp_path / name / out
            assert json.loads((folder / "label_map.json").read_text()) == LABEL_MAP
            for video, record in read_records(folder).items():
                labels.setdefault(video, set()).add(record.label)
    assert labels == {v: {LABEL_MAP[_class(v)]} for v in TRAIN + TEST}


def test_class_lists(tmp_path):
    assert read_class_list(_write(tmp_path / "classInd.txt", CLASS_IND)) == CLASSES
    names = "abseiling\nair drumming\narm wrestling\n"  # Kinetics' label_map_k400.txt.
    assert read_class_list(_write(tmp_path / "k400.txt", names))[1] == "air drumming"
    assert read_class_list(_write(tmp_path / "zero.txt", "0 a\n1 b\n")) == ["a", "b"]
    with pytest.raises(SourceError, match="count up by one"):
        read_class_list(_write(tmp_path / "bad.txt", "1 a\n3 b\n"))


def test_list_errors_are_one_line(ucf, tmp_path, capsys):
    bare = tmp_path / "bare"
    rawframes = _write(bare / "train_rawframes.txt", "v_Zumba_g01_c01 15 0\n")
    broken = _write(bare / "broken.txt", "v_Zumba_g01_c01 15 0\nv_Archery_g01_c01 15\n")
    ambiguous = _write(bare / "ambiguous.txt", "nowhere/v1 3 4\n")
    trainlist = _write(bare / "trainlist01.txt", "Zumba/v_Zumba_g01_c01.avi 1\n")
    raw_root = str(ucf["root"] / "rawframes")
    class_list = ["--class-list", str(ucf["root"] / "lists" / "classInd.txt")]
    cases = [
        (
            [rawframes, "--format", "rawframes"],
            f"{rawframes}: gives class indices but no class names; pass --class-list",
        ),
        (
            [broken, "--format", "rawframes", *class_list],
            f"{broken}:2: expected 'frame_dir total_frames label', got",
        ),
        ([ambiguous, *class_list], f"{ambiguous}: cannot tell a VTDL list"),
        ([trainlist], f"{trainlist}: a UCF101 split file; use --input"),
        ([str(tmp_path / "missing.txt")], f"{tmp_path / 'missing.txt'}: no such directory or file"),
    ]
    for (path, *flags), expected in cases:
        argv = ["convert", "--input", path, "--video-root", raw_root, *flags]
        assert main([*argv, "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {expected}"), err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out")
