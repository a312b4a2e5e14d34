"""`python -m data_prep inspect` on the demo dataset and on hand-made shards."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from data_prep import inspect
from data_prep.__main__ import main
from data_prep.convert import convert
from data_prep.demo import CLASS_NAMES, build_demo_dataset
from data_prep.sources import list_sources
from tests.conftest import moving_square_video
from tests.real_videos import real_video_path
from vssl_jax.data import records


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory) -> str:
    """The demo dataset's shards and metadata, without the videos they were made from."""
    built = build_demo_dataset(
        str(tmp_path_factory.mktemp("demo") / "demo"), train_per_class=4, val_per_class=2, workers=1
    )
    shards = str(tmp_path_factory.mktemp("shards") / "demo")
    shutil.copytree(built, shards, ignore=shutil.ignore_patterns("raw"))
    return shards


def _sheet_size(num_classes: int, tile_width: int) -> tuple[int, int]:
    """The contact sheet's layout: a header, then one row per class."""
    strip = inspect.FRAMES_PER_VIDEO * tile_width + inspect._GAP
    width = 2 * inspect._MARGIN + inspect._LABEL_WIDTH + inspect.VIDEOS_PER_CLASS * strip
    row = inspect._CAPTION + inspect._TILE_HEIGHT + inspect._GAP
    return width, 2 * inspect._MARGIN + 20 + num_classes * row + inspect._MARGIN


def test_inspect_the_demo_dataset(demo_shards, tmp_path, capsys):
    report = tmp_path / "report"
    began = time.monotonic()
    assert main(["inspect", demo_shards, "--out", str(report)]) == 0
    assert time.monotonic() - began < 20  # Seconds, also on a busy 2-core machine.
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("demo: 36 videos (train 24, val 12), 6 classes (6-6 videos each)")
    assert out[1].startswith("frames per video 24 / 24")
    assert out[-1].startswith("skipped 0 (see stats.json); wrote stats.json, contact_sheet.png")

    stats = json.loads((report / "stats.json").read_text())
    manifest = json.loads(open(os.path.join(demo_shards, "manifest.json")).read())
    assert stats["num_classes"] == manifest["num_classes"] == 6
    for split, info in manifest["splits"].items():
        for key in ("num_videos", "num_frames", "num_shards", "per_class"):
            assert stats["per_split"][split][key] == info[key]
    assert stats["num_videos"] == sum(s["num_videos"] for s in manifest["splits"].values()) == 36
    assert stats["per_class"] == {name: 6 for name in CLASS_NAMES}
    assert stats["frames_per_video"] == {"min": 24, "median": 24, "max": 24, "mean": 24}
    assert stats["duration_seconds"]["median"] == 3.0  # 24 frames at 8 fps.
    assert stats["fps"] == {"8": 36}
    assert stats["frame_sizes"] == {"64x64": 36}
    shard_files = [f for f in os.listdir(demo_shards) if ".array_record-" in f]
    assert stats["total_bytes"] == sum(
        os.path.getsize(os.path.join(demo_shards, f)) for f in shard_files
    )
    assert stats["skipped"] == manifest["skipped"] == []
    assert stats["disagrees_with_manifest"] == []
    assert stats["contact_sheets"] == ["contact_sheet.png"]

    with Image.open(report / "histograms.png") as image:
        assert image.size == (1400, 500)
    with Image.open(report / "contact_sheet.png") as image:
        sheet = np.asarray(image.convert("RGB"))
    tile = inspect._TILE_HEIGHT  # Square frames: square tiles.
    assert (sheet.shape[1], sheet.shape[0]) == _sheet_size(6, tile)

    # Row r shows class r's sampled videos: each tile is its frame, scaled up.
    _, samples = inspect._read_videos(inspect._shards(demo_shards))
    for row, name in enumerate(CLASS_NAMES):
        top = 2 * inspect._MARGIN + 20 + row * (inspect._CAPTION + tile + inspect._GAP)
        assert len(samples[name]) == inspect.VIDEOS_PER_CLASS
        for column, (_, video, jpegs) in enumerate(samples[name]):
            assert video.label_text == name
            left = inspect._MARGIN + inspect._LABEL_WIDTH
            left += column * (inspect.FRAMES_PER_VIDEO * tile + inspect._GAP)
            for k, jpeg in enumerate(jpegs):
                y, x = top + inspect._CAPTION, left + k * tile
                shown = Image.fromarray(sheet[y : y + tile, x : x + tile]).resize(
                    (64, 64), Image.Resampling.BOX
                )
                frame = simplejpeg.decode_jpeg(jpeg, colorspace="RGB").astype(np.float32)
                assert np.abs(np.asarray(shown, np.float32) - frame).mean() < 8


def _write_many_classes(root, num_classes: int) -> None:
    """Shards of moving squares in `num_classes` classes, written straight through the schema."""
    from array_record.python.array_record_module import ArrayRecordWriter

    rng = np.random.default_rng(0)
    names = [f"class_{i:02d}" for i in range(num_classes)]
    os.makedirs(root)
    (root / "label_map.json").write_text(json.dumps({n: i for i, n in enumerate(names)}))
    writer = ArrayRecordWriter(
        str(root / records.shard_name("many", "train", "array_record", 0, 1)), "group_size:1"
    )
    for i in range(2 * num_classes):
        video = moving_square_video(1, rng, frames=4 + i % 5, size=24)
        writer.write(
            records.encode_record(
                frames=[simplejpeg.encode_jpeg(f, 90) for f in video],
                label=i % num_classes,
                label_text=names[i % num_classes],
                path=f"clips/{i:03d}.mp4",
                start_time=0.0,
                end_time=len(video) / 4,
                fps=4.0,
            )
        )
    writer.close()


def test_more_than_20_classes_make_more_sheets(tmp_path):
    shards = tmp_path / "many"
    _write_many_classes(shards, 23)
    stats = inspect.inspect_shards(str(shards), str(tmp_path / "report"), show=False)
    assert stats["contact_sheets"] == ["contact_sheet.png", "contact_sheet_2.png"]
    assert stats["num_videos"] == 46 and stats["num_classes"] == 23
    assert stats["frames_per_video"] == {"min": 4, "median": 6.0, "max": 8, "mean": 5.957}
    assert stats["duration_seconds"]["max"] == 2.0
    assert stats["skipped"] == [] and "disagrees_with_manifest" not in stats  # No manifest.
    for name, classes in (("contact_sheet.png", 20), ("contact_sheet_2.png", 3)):
        with Image.open(tmp_path / "report" / name) as image:
            assert image.size == _sheet_size(classes, inspect._TILE_HEIGHT)


def test_stats_carry_the_skipped_entries(tmp_path):
    root = tmp_path / "videos" / "phone"
    os.makedirs(root)
    shutil.copy(real_video_path("carphone_distorted.mp4"), root)
    (root / "empty.mp4").write_bytes(b"")
    listing = list_sources("folders", str(tmp_path / "videos"), split=None, video_root=None)
    manifest = convert(
        listing, str(tmp_path / "out"), fps=5, short_side=32, workers=1, show_progress=False
    )
    stats = inspect.inspect_shards(str(tmp_path / "out"), str(tmp_path / "report"), show=False)
    assert stats["num_videos"] == manifest["splits"]["train"]["num_videos"] == 1
    assert stats["skipped"] == manifest["skipped"] and stats["num_skipped"] == 1
    assert stats["frame_sizes"] == {"39x32": 1} and stats["fps"] == {"5": 1}
    assert stats["duration_seconds"]["max"] == pytest.approx(4.2)  # 21 frames at 5 fps.


def test_inspect_errors_are_one_line(tmp_path, capsys):
    os.makedirs(tmp_path / "empty")
    cases = {
        str(tmp_path / "missing"): "no such directory (SHARDS_DIR)",
        str(tmp_path / "empty"): "no array_record shards",
    }
    for path, problem in cases.items():
        assert main(["inspect", path, "--out", str(tmp_path / "report")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: {problem}") and err.count("\n") == 1
