"""`python -m data_prep inspect SHARDS_DIR --out REPORT_DIR`: a look at converted data.

Reads only what `convert` wrote (the ArrayRecord shards, label_map.json and manifest.json, not
the original videos) and writes into REPORT_DIR:

- `stats.json`: videos, classes, per-split and per-class counts, frames per video and duration
  (min / median / max), frame sizes, fps values, bytes, and the entries the manifest skipped;
- `contact_sheet.png` (then `contact_sheet_2.png`, ... past 20 classes): a few videos of each
  class, a handful of evenly spaced frames each, captioned with the class and the file name;
- `histograms.png`: videos per class (stacked by split) and the distribution of durations.

Only the frames the contact sheet shows are decoded; everything else comes from the records'
fields and the first frame's JPEG header.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import re
import statistics
import zlib

import numpy as np
import simplejpeg

from vssl_jax.data import records

STATS = "stats.json"
HISTOGRAMS = "histograms.png"
CLASSES_PER_SHEET = 20
VIDEOS_PER_CLASS = 3
FRAMES_PER_VIDEO = 5
UNLABELLED = "(unlabelled)"
# Complete shards only (an interrupted conversion leaves `<shard>.tmp-<pid>` files).
_SHARD = re.compile(
    rf"(?P<dataset>.+)-(?P<split>[^-]+)\.{records.ARRAY_RECORD}-\d+-of-\d+", re.IGNORECASE
)
# The contact sheet's geometry, in pixels.
_TILE_HEIGHT = 96
_LABEL_WIDTH = 200
_CAPTION = 18
_GAP = 10
_MARGIN = 12
_BACKGROUND = (255, 255, 255)
_TILE_BACKGROUND = (40, 40, 40)


class InspectError(Exception):
    """A folder that cannot be inspected; the message is one line naming it."""


@dataclasses.dataclass(frozen=True)
class _Video:
    split: str
    label_text: str
    path: str
    num_frames: int
    duration: float
    fps: float
    size: str  # "WIDTHxHEIGHT" of its first frame.


def contact_sheet_name(index: int) -> str:
    """contact_sheet.png, contact_sheet_2.png, ..."""
    return "contact_sheet.png" if index == 0 else f"contact_sheet_{index + 1}.png"


def _read_json(path: str):
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InspectError(f"{path}: not valid JSON ({e})") from e


def _shards(shards_dir: str) -> dict[str, list[str]]:
    """split -> its shard paths, sorted."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    pattern = os.path.join(glob.escape(shards_dir), f"*.{records.ARRAY_RECORD}-*-of-*")
    for path in sorted(glob.glob(pattern)):
        match = _SHARD.fullmatch(os.path.basename(path))
        if match:
            found[match["split"]].append(path)
    return dict(found)


def _sample_key(path: str) -> int:
    # A hash of the path: the same videos every run, spread over the class whatever the order.
    return zlib.crc32(path.encode("utf-8"))


def _picked_frames(frames, count: int) -> list[bytes]:
    indices = np.linspace(0, len(frames) - 1, num=min(count, len(frames)))
    return [frames[int(round(i))] for i in indices]


def _read_videos(shards: dict[str, list[str]]):
    """Every video's summary, and up to VIDEOS_PER_CLASS sampled videos' frames per class.

    A video's record(s) of frames are read only for the frames shown (and the first)."""
    videos: list[_Video] = []
    # class -> [(sample key, video, JPEG frames)], the VIDEOS_PER_CLASS smallest keys.
    samples: dict[str, list[tuple[int, _Video, list[bytes]]]] = collections.defaultdict(list)
    for split, paths in shards.items():
        for path in paths:
            try:
                source = records.VideoSource([path])
            except (OSError, RuntimeError, ValueError) as e:
                raise InspectError(f"{path}: cannot read the shard ({e})") from e
            for index in range(len(source)):
                try:
                    record = source[index]
                except Exception as e:
                    raise InspectError(f"{path}: not a vssl_jax record ({e})") from e
                height, width = (
                    simplejpeg.decode_jpeg_header(record.frames[0])[:2]
                    if record.num_frames
                    else (0, 0)
                )
                video = _Video(
                    split=split,
                    label_text=record.label_text or UNLABELLED,
                    path=record.path,
                    num_frames=record.num_frames,
                    duration=record.num_frames / record.fps if record.fps else 0.0,
                    fps=round(record.fps, 3),
                    size=f"{width}x{height}",
                )
                videos.append(video)
                chosen = samples[video.label_text]
                key = _sample_key(video.path)
                if len(chosen) < VIDEOS_PER_CLASS or key < chosen[-1][0]:
                    picked = _picked_frames(record.frames, FRAMES_PER_VIDEO)
                    chosen.append((key, video, picked))
                    chosen.sort(key=lambda item: (item[0], item[1].path))
                    del chosen[VIDEOS_PER_CLASS:]
    return videos, samples


def _summary(values: list[float]) -> dict:
    if not values:
        return {"min": 0, "median": 0, "max": 0, "mean": 0}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "mean": round(statistics.fmean(values), 3),
    }


def _counts(values) -> dict[str, int]:
    return dict(sorted(collections.Counter(values).items(), key=lambda kv: (-kv[1], kv[0])))


def _stats(shards_dir, shards, videos, label_names, manifest) -> dict:
    classes = list(label_names)
    if any(v.label_text == UNLABELLED for v in videos):
        classes.append(UNLABELLED)
    classes += sorted({v.label_text for v in videos} - set(classes))  # Not in the label map.
    per_split = {}
    for split, paths in shards.items():
        in_split = [v for v in videos if v.split == split]
        counts = collections.Counter(v.label_text for v in in_split)
        per_split[split] = {
            "num_videos": len(in_split),
            "num_frames": sum(v.num_frames for v in in_split),
            "num_shards": len(paths),
            "num_bytes": sum(os.path.getsize(p) for p in paths),
            "per_class": {name: counts[name] for name in classes},
        }
    totals = collections.Counter(v.label_text for v in videos)
    skipped = (manifest or {}).get("skipped", [])
    stats = {
        "shards_dir": os.path.abspath(shards_dir),
        "dataset_name": (manifest or {}).get("dataset_name")
        or _SHARD.fullmatch(os.path.basename(next(iter(shards.values()))[0]))["dataset"],
        "num_videos": len(videos),
        "num_classes": len(label_names) if label_names else len(classes),
        "num_frames": sum(v.num_frames for v in videos),
        "total_bytes": sum(s["num_bytes"] for s in per_split.values()),
        "per_split": per_split,
        "per_class": {name: totals[name] for name in classes},
        "frames_per_video": _summary([v.num_frames for v in videos]),
        "duration_seconds": _summary([round(v.duration, 3) for v in videos]),
        "frame_sizes": _counts(v.size for v in videos),
        "fps": _counts(f"{v.fps:g}" for v in videos),
        "options": (manifest or {}).get("options"),
        "num_skipped": len(skipped),
        "skipped": skipped,
    }
    if manifest is not None:
        # Shards and manifest.json disagree after an interrupted or mixed-up conversion.
        stats["disagrees_with_manifest"] = [
            split
            for split in sorted(set(per_split) | set(manifest.get("splits", {})))
            if per_split.get(split, {}).get("num_videos")
            != manifest.get("splits", {}).get(split, {}).get("num_videos")
        ]
    return stats


def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    try:
        import matplotlib

        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        return ImageFont.truetype(
            os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size
        )
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """Up to two lines, broken after a '_', '-' or space where possible."""
    if draw.textlength(text, font=font) <= width:
        return [text]
    breaks = [i + 1 for i, c in enumerate(text) if c in "_- "]
    fitting = [i for i in breaks if draw.textlength(text[:i], font=font) <= width]
    cut = fitting[-1] if fitting else len(_fit_text(draw, text, font, width)) - 1
    return [text[:cut], _fit_text(draw, text[cut:], font, width)]


def _fit_text(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _tile(jpeg: bytes, tile_width: int):
    """One frame scaled to the tile height (and at most the tile width), centred on grey."""
    from PIL import Image

    frame = Image.fromarray(simplejpeg.decode_jpeg(jpeg, colorspace="RGB"))
    scale = min(_TILE_HEIGHT / frame.height, tile_width / frame.width)
    size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
    frame = frame.resize(size, Image.Resampling.BICUBIC)
    tile = Image.new("RGB", (tile_width, _TILE_HEIGHT), _TILE_BACKGROUND)
    tile.paste(frame, ((tile_width - size[0]) // 2, (_TILE_HEIGHT - size[1]) // 2))
    return tile


def _contact_sheets(out_dir, title, classes, samples, totals) -> list[str]:
    from PIL import Image, ImageDraw

    shown = [name for name in classes if samples.get(name)]
    if not shown:
        return []
    # Tiles take the most common aspect ratio of the sampled videos, between 1:1 and 16:9.
    sizes = [tuple(map(int, v.size.split("x"))) for s in samples.values() for _, v, _ in s]
    aspects = collections.Counter(round(w / h, 2) for w, h in sizes if w and h)
    aspect = min(max(aspects.most_common(1)[0][0] if aspects else 4 / 3, 1.0), 16 / 9)
    tile_width = round(_TILE_HEIGHT * aspect)
    strip = FRAMES_PER_VIDEO * tile_width
    row_height = _CAPTION + _TILE_HEIGHT + _GAP
    width = 2 * _MARGIN + _LABEL_WIDTH + VIDEOS_PER_CLASS * (strip + _GAP)
    font, bold, header_font = _font(12), _font(14, bold=True), _font(16, bold=True)
    sheets = [shown[i : i + CLASSES_PER_SHEET] for i in range(0, len(shown), CLASSES_PER_SHEET)]
    names = []
    for index, sheet_classes in enumerate(sheets):
        header = 2 * _MARGIN + 20
        height = header + len(sheet_classes) * row_height + _MARGIN
        sheet = Image.new("RGB", (width, height), _BACKGROUND)
        draw = ImageDraw.Draw(sheet)
        first = index * CLASSES_PER_SHEET
        draw.text(
            (_MARGIN, _MARGIN),
            f"{title}: classes {first + 1}-{first + len(sheet_classes)} of {len(shown)} "
            f"(sheet {index + 1} of {len(sheets)}); up to {VIDEOS_PER_CLASS} videos per class, "
            f"{FRAMES_PER_VIDEO} evenly spaced frames each",
            fill=(0, 0, 0),
            font=header_font,
        )
        for row, name in enumerate(sheet_classes):
            top = header + row * row_height
            lines = _wrap(draw, name, bold, _LABEL_WIDTH - _GAP)
            for n, line in enumerate(lines):
                draw.text((_MARGIN, top + _CAPTION + 4 + 18 * n), line, fill=(0, 0, 0), font=bold)
            draw.text(
                (_MARGIN, top + _CAPTION + 6 + 18 * len(lines)),
                f"{totals[name]} video{'s' if totals[name] != 1 else ''}",
                fill=(90, 90, 90),
                font=font,
            )
            for column, (_, video, jpegs) in enumerate(samples[name]):
                left = _MARGIN + _LABEL_WIDTH + column * (strip + _GAP)
                caption = f"{os.path.basename(video.path)} [{video.split}]"
                draw.text(
                    (left, top + 2),
                    _fit_text(draw, caption, font, strip),
                    fill=(0, 0, 0),
                    font=font,
                )
                for k, jpeg in enumerate(jpegs):
                    sheet.paste(_tile(jpeg, tile_width), (left + k * tile_width, top + _CAPTION))
        file_name = contact_sheet_name(index)
        sheet.save(os.path.join(out_dir, file_name), optimize=False)
        names.append(file_name)
    return names


def _histograms(path: str, stats: dict, videos: list[_Video]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 5), dpi=100, layout="constrained")
    per_class, durations = figure.subplots(1, 2, width_ratios=(3, 2))
    classes = list(stats["per_class"])
    positions = np.arange(len(classes))
    bottom = np.zeros(len(classes))
    for split, info in stats["per_split"].items():
        counts = np.array([info["per_class"][name] for name in classes])
        per_class.bar(positions, counts, bottom=bottom, label=split, width=0.8)
        bottom += counts
    per_class.set_ylim(top=max(bottom.max(initial=0), 1) * 1.2)  # Room for the legend.
    per_class.set_title(f"videos per class ({len(classes)} classes)")
    per_class.set_ylabel("videos")
    if len(classes) <= 40:
        per_class.set_xticks(positions, classes, rotation=60, ha="right", fontsize=8)
    else:
        per_class.set_xticks([])
        per_class.set_xlabel("classes, in label-map order")
    per_class.legend()

    splits = list(stats["per_split"])
    values = [[v.duration for v in videos if v.split == split] for split in splits]
    everything = [d for vs in values for d in vs]
    low, high = (min(everything), max(everything)) if everything else (0.0, 1.0)
    if high - low < 1e-6:  # All as long: one bar in the middle.
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, 31)
    durations.hist(values, bins=bins, stacked=True, label=splits)
    durations.set_title("duration of the videos")
    durations.set_xlabel("seconds")
    durations.set_ylabel("videos")
    durations.legend()
    figure.savefig(path)


def _print_summary(stats: dict, out_dir: str, files: list[str]) -> None:
    splits = ", ".join(f"{s} {info['num_videos']}" for s, info in stats["per_split"].items())
    frames, seconds = stats["frames_per_video"], stats["duration_seconds"]
    per_class = [n for n in stats["per_class"].values()]
    print(
        f"{stats['dataset_name']}: {stats['num_videos']} videos ({splits}), "
        f"{stats['num_classes']} classes ({min(per_class, default=0)}-{max(per_class, default=0)} "
        "videos each), "
        f"{stats['num_frames']} frames, {stats['total_bytes'] / 1e6:.1f} MB"
    )
    print(
        f"frames per video {frames['min']} / {frames['median']} / {frames['max']}, duration "
        f"{seconds['min']:.1f} / {seconds['median']:.1f} / {seconds['max']:.1f} s "
        f"(min / median / max); fps {', '.join(stats['fps'])}; "
        f"sizes {', '.join(list(stats['frame_sizes'])[:4])}"
    )
    if stats.get("disagrees_with_manifest"):
        print(
            f"warning: the shards and manifest.json disagree on the videos of "
            f"{', '.join(stats['disagrees_with_manifest'])}; re-run the convert command"
        )
    print(f"skipped {stats['num_skipped']} (see stats.json); wrote {', '.join(files)} to {out_dir}")


def inspect_shards(shards_dir: str, out_dir: str, *, show: bool = True) -> dict:
    """Writes the report of `shards_dir` into `out_dir` (see the module docstring); returns the
    stats. `show` prints a short summary."""
    if not os.path.isdir(shards_dir):
        problem = "is not a directory" if os.path.exists(shards_dir) else "no such directory"
        raise InspectError(f"{shards_dir}: {problem} (SHARDS_DIR)")
    shards = _shards(shards_dir)
    if not shards:
        raise InspectError(
            f"{shards_dir}: no {records.ARRAY_RECORD} shards (run `python -m data_prep convert` "
            "into it first)"
        )
    label_map = _read_json(os.path.join(shards_dir, "label_map.json"))
    label_names = sorted(label_map, key=label_map.__getitem__) if label_map else []
    manifest = _read_json(os.path.join(shards_dir, "manifest.json"))
    videos, samples = _read_videos(shards)
    stats = _stats(shards_dir, shards, videos, label_names, manifest)

    os.makedirs(out_dir, exist_ok=True)
    totals = stats["per_class"]
    sheets = _contact_sheets(out_dir, stats["dataset_name"], list(totals), samples, totals)
    stats["contact_sheets"] = sheets
    _histograms(os.path.join(out_dir, HISTOGRAMS), stats, videos)
    with open(os.path.join(out_dir, STATS), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1, ensure_ascii=False)
        f.write("\n")
    if show:
        _print_summary(stats, out_dir, [STATS, *sheets, HISTOGRAMS])
    return stats
