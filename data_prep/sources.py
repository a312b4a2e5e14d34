"""Listing the videos to convert: which file, which label, which split, which time range.

Each input format (class folders, Kinetics CSV, JSON, UCF101 and HMDB51 split files, and the
seeds' list formats in lists.py) becomes the same `Listing`. A "video" is a video file or a frame
folder (frames.py). Entries that cannot be used (missing file, unknown label, duplicate row, a
frame folder with fewer frames than its list says) are not errors: they go to `Listing.skipped`
with a reason and end up in manifest.json. A list file that cannot be read at all (wrong
columns, bad JSON) is an error: `SourceError`, one line.

Inputs may also be remote (`gs://bucket/videos`; storage.py): folders, lists, split files and
video files, not frame folders, for the Beam pipeline's workers to read (beam.py).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from collections.abc import Iterable

from data_prep import frames, storage

FORMATS = (
    "auto",
    "folders",
    "csv",
    "json",
    "ucf101",
    "hmdb51",
    "resnets3d_json",
    "vtdl",
    "rawframes",
    "videolist",
    "datalist",
    "dpc_csv",
)
SPLIT_NAMES = frozenset({"train", "val", "validation", "test"})
# Extensions indexed when looking up Kinetics files by YouTube id.
VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".mkv",
        ".webm",
        ".avi",
        ".mov",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".flv",
        ".wmv",
        ".3gp",
        ".ts",
    }
)


class SourceError(Exception):
    """An input list or folder that cannot be used; the message is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class VideoSource:
    path: str  # The video file, or a frame folder.
    label_text: str  # Class name; "" if unlabelled.
    split: str  # e.g. "train", "val", "test".
    start_time: float | None = None  # Trim range in seconds; None = from the start / to the end.
    end_time: float | None = None
    # Frame folders: keep frames [first, stop) (0-based, in frame order); None = all of them.
    frame_range: tuple[int, int] | None = None


@dataclasses.dataclass
class Listing:
    sources: list[VideoSource]
    label_names: list[str]  # Index order: label_names[i] is class i.
    skipped: list[dict]  # {"path", "split", "reason"} for list entries that cannot be used.
    input_format: str = ""  # The format that was read (what "auto" detected).


def _skip(path: str, split: str, reason: str) -> dict:
    return {"path": path, "split": split, "reason": reason}


def _visible(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _require_dir(path: str, what: str) -> None:
    if not storage.isdir(path):
        problem = "is not a directory" if storage.exists(path) else "no such directory"
        raise SourceError(f"{path}: {problem} ({what})")


def _require_file(path: str, what: str) -> None:
    if not storage.isfile(path):
        problem = "is not a file" if storage.exists(path) else "no such file"
        raise SourceError(f"{path}: {problem} ({what})")


def require_local_frame_folder(path: str) -> None:
    """Frame folders are read with os (frames.py); on remote storage only video files are."""
    if storage.is_remote(path):
        raise SourceError(
            f"{path}: a frame folder on remote storage; only video files are converted from "
            "remote paths (convert frame folders from a local or mounted copy)"
        )


def load_label_map(path: str) -> list[str]:
    """Reads a label_map.json `{name: index}` and returns the names in index order."""
    _require_file(path, "label map")
    try:
        with storage.open_read(path, encoding="utf-8") as f:
            mapping = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in mapping.items()
    ):
        raise SourceError(f"{path}: a label map must be a JSON object {{class name: index}}")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise SourceError(f"{path}: label indices must be 0..{len(mapping) - 1}, each used once")
    return sorted(mapping, key=mapping.__getitem__)


def apply_label_names(listing: Listing, label_names: list[str]) -> Listing:
    """Fixes the label names; sources whose label is not among them are skipped."""
    known = set(label_names)
    sources, skipped = [], list(listing.skipped)
    for source in listing.sources:
        if source.label_text and source.label_text not in known:
            skipped.append(
                _skip(source.path, source.split, f"label '{source.label_text}' not in label map")
            )
        else:
            sources.append(source)
    return dataclasses.replace(
        listing, sources=sources, label_names=list(label_names), skipped=skipped
    )


def _drop_duplicates(listing: Listing) -> Listing:
    """Keeps the first of the entries naming the same video (and time range) in one split."""
    seen: dict[tuple, str] = {}  # key -> the label it was first listed with.
    sources, skipped = [], list(listing.skipped)
    for source in listing.sources:
        key = (source.split, source.path, source.start_time, source.end_time, source.frame_range)
        if key in seen:
            first = seen[key]
            reason = "duplicate row"
            if source.label_text != first:
                reason += f" (label '{source.label_text}'; kept the first, labelled '{first}')"
            skipped.append(_skip(source.path, source.split, reason))
        else:
            seen[key] = source.label_text
            sources.append(source)
    return dataclasses.replace(listing, sources=sources, skipped=skipped)


_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")


def _check_split_names(listing: Listing, input_path: str) -> Listing:
    """Split names become file names (`<dataset>-<split>.array_record-...`): a row without one is
    skipped, a list that names an unusable one is refused."""
    names = {s.split for s in listing.sources} | {e["split"] for e in listing.skipped}
    bad = sorted(name for name in names - {""} if not _SPLIT_NAME.fullmatch(name))
    if bad:
        raise SourceError(
            f"{input_path}: split name '{bad[0]}' is not usable (letters, digits and _ only); "
            "fix the list's split column"
        )
    if all(source.split for source in listing.sources):
        return listing
    skipped = listing.skipped + [
        _skip(s.path, "", "no split") for s in listing.sources if not s.split
    ]
    sources = [source for source in listing.sources if source.split]
    return dataclasses.replace(listing, sources=sources, skipped=skipped)


def frame_folder_range(path: str, stop: int | None = None, first: int = 0):
    """Checks a frame folder against what a list says of it: `(frame_range, None)` or `(None, reason)`.

    `stop` is the frame count the list gives (None: all frames on disk). The range is None when
    it covers the whole folder, so a folder listed with its true count gives the same record as
    the folder found on its own.
    """
    require_local_frame_folder(path)
    try:
        count = len(frames.list_frames(path))
    except frames.FrameFolderError as e:
        return None, e.problem
    stop = count if stop is None else stop
    if stop <= first:
        return None, f"the list gives no frames ({first + 1}..{stop})"
    if count < stop:
        return None, f"has {count} frames, the list says {stop}"
    return (None if (first, stop) == (0, count) else (first, stop)), None


# --- folders: ROOT/<class>/<video> or ROOT/<split>/<class>/<video> ---


def _list_class_folders(root: str, split: str) -> tuple[list[VideoSource], list[dict]]:
    sources, skipped = [], []
    for name in _visible(storage.listdir(root)):
        class_dir = os.path.join(root, name)
        if not storage.isdir(class_dir):
            skipped.append(_skip(class_dir, split, "not inside a class folder"))
            continue
        for file_name in _visible(storage.listdir(class_dir)):
            path = os.path.join(class_dir, file_name)
            if storage.isdir(path):
                # ROOT/<class>/<video>/image_00001.jpg: a frame folder.
                _, problem = frame_folder_range(path)
                if problem is not None:
                    skipped.append(_skip(path, split, problem))
                    continue
            sources.append(VideoSource(path=path, label_text=name, split=split))
    return sources, skipped


def _list_folders(root: str, split: str | None) -> Listing:
    _require_dir(root, "video folder")
    top = [n for n in _visible(storage.listdir(root)) if storage.isdir(os.path.join(root, n))]
    if top and all(n in SPLIT_NAMES for n in top):
        if split is not None and split not in top:
            raise SourceError(f"{root}: no '{split}' folder (found splits: {', '.join(top)})")
        split_dirs = {s: os.path.join(root, s) for s in top}
    else:
        split_dirs = {split or "train": root}
    classes: set[str] = set()
    sources, skipped = [], []
    for name, split_dir in split_dirs.items():
        classes.update(
            n
            for n in _visible(storage.listdir(split_dir))
            if storage.isdir(os.path.join(split_dir, n))
        )
        if split is None or name == split:
            found, bad = _list_class_folders(split_dir, name)
            sources += found
            skipped += bad
    return Listing(sources=sources, label_names=sorted(classes), skipped=skipped)


# --- Kinetics CSV: label,youtube_id,time_start,time_end,split (or a path column) ---


def _index_videos(root: str) -> dict[str, str]:
    """Maps file name without extension -> path for every video under root (one walk)."""
    index: dict[str, str] = {}
    for dir_path, dir_names, file_names in storage.walk(root):
        dir_names[:] = _visible(dir_names)
        for file_name in _visible(file_names):
            stem, ext = os.path.splitext(file_name)
            if ext.lower() in VIDEO_EXTENSIONS:
                index.setdefault(stem, os.path.join(dir_path, file_name))
    return index


def _seconds(value: str, where: str) -> float | None:
    if value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError as e:
        raise SourceError(f"{where}: '{value}' is not a time in seconds") from e


def _list_csv(csv_path: str, video_root: str | None, split: str | None) -> Listing:
    _require_file(csv_path, "Kinetics CSV")
    root = video_root or storage.parent(csv_path)
    _require_dir(root, "--video-root")
    # utf-8-sig: spreadsheet exports start with a byte-order mark that would rename column 1.
    with storage.open_read(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = set(reader.fieldnames or ())
    if "path" in columns:
        required = ["label", "path", "split"]
    else:
        required = ["label", "youtube_id", "time_start", "time_end", "split"]
    missing = [c for c in required if c not in columns]
    if missing:
        has = ", ".join(sorted(columns)) or "nothing"
        raise SourceError(f"{csv_path}: missing columns {', '.join(missing)} (header has: {has})")
    index = None if "path" in columns else _index_videos(root)
    sources, skipped = [], []
    for line, row in enumerate(rows, start=2):
        where = f"{csv_path}:{line}"
        # A short row gives None for its missing cells.
        cell = {key: (value or "").strip() for key, value in row.items() if key is not None}
        row_split = cell["split"]
        start = _seconds(cell.get("time_start", ""), where)
        end = _seconds(cell.get("time_end", ""), where)
        if split is not None and row_split != split:
            continue
        if index is None:
            path = os.path.join(root, cell["path"])
            if not storage.isfile(path):
                skipped.append(_skip(path, row_split, "file not found"))
                continue
        else:
            youtube_id = cell["youtube_id"]
            if start is None or end is None:
                skipped.append(_skip(youtube_id, row_split, f"{where}: no time_start/time_end"))
                continue
            # Kinetics downloaders save the clip already cut as <id>_<start:06d>_<end:06d>.
            clip_name = f"{youtube_id}_{int(start):06d}_{int(end):06d}"
            if clip_name in index:
                path, start, end = index[clip_name], None, None
            elif youtube_id in index:
                path = index[youtube_id]
            else:
                reason = f"no file {clip_name}.* or {youtube_id}.* under {root}"
                skipped.append(_skip(youtube_id, row_split, reason))
                continue
        sources.append(VideoSource(path, cell["label"], row_split, start, end))
    labels = sorted({(row["label"] or "").strip() for row in rows} - {""})
    return _drop_duplicates(Listing(sources=sources, label_names=labels, skipped=skipped))


# --- JSON: [{"path", "label", "split", optional "start", "end"}] ---


def _list_json(json_path: str, video_root: str | None, split: str | None) -> Listing:
    _require_file(json_path, "JSON list")
    root = video_root or storage.parent(json_path)
    try:
        with storage.open_read(json_path, encoding="utf-8") as f:
            entries = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"{json_path}: not valid JSON ({e})") from e
    schema = 'a list of {"path": str, "label": str, "split": str, optional "start"/"end": seconds}'
    if not isinstance(entries, list):
        raise SourceError(f"{json_path}: expected {schema}")
    sources, skipped = [], []
    for i, entry in enumerate(entries):
        ok = (
            isinstance(entry, dict)
            and all(isinstance(entry.get(k), str) for k in ("path", "label", "split"))
            and all(
                entry.get(k) is None or isinstance(entry[k], (int, float)) for k in ("start", "end")
            )
        )
        if not ok:
            raise SourceError(f"{json_path}: entry {i} is not {schema}")
        if split is not None and entry["split"] != split:
            continue
        path = os.path.join(root, entry["path"])
        if not storage.isfile(path):
            skipped.append(_skip(path, entry["split"], "file not found"))
            continue
        sources.append(
            VideoSource(path, entry["label"], entry["split"], entry.get("start"), entry.get("end"))
        )
    labels = sorted({e["label"] for e in entries} - {""})
    return _drop_duplicates(Listing(sources=sources, label_names=labels, skipped=skipped))


# --- UCF101 and HMDB51 official split files ---


def _find_in_root(root: str, class_name: str, file_name: str) -> str | None:
    """`root/<class>/<file>` (the archives' layout) or `root/<file>` (a flat folder).

    Where the video's frames were extracted instead, its frame folder (the file name without
    its extension): `root/<class>/<stem>` or `root/<stem>`.
    """
    stem = os.path.splitext(file_name)[0]
    for path in (os.path.join(root, class_name, file_name), os.path.join(root, file_name)):
        if storage.isfile(path):
            return path
    for path in (os.path.join(root, class_name, stem), os.path.join(root, stem)):
        if storage.isdir(path):
            return path
    return None


def _found_source(path, class_name, split, skipped) -> VideoSource | None:
    """A source for a file or a usable frame folder; a damaged frame folder goes to `skipped`."""
    if storage.isdir(path):
        _, problem = frame_folder_range(path)
        if problem is not None:
            skipped.append(_skip(path, split, problem))
            return None
    return VideoSource(path, class_name, split)


def _read_lines(path: str) -> list[list[str]]:
    with storage.open_read(path, encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def _list_ucf101(root: str, splits_dir: str | None, split_id: int, split: str | None) -> Listing:
    _require_dir(root, "UCF101 video folder")
    if splits_dir is None:
        raise SourceError(
            f"{root}: --format ucf101 needs --splits-dir (the ucfTrainTestlist folder)"
        )
    _require_dir(splits_dir, "--splits-dir")
    class_file = os.path.join(splits_dir, "classInd.txt")
    _require_file(class_file, "UCF101 class list")
    label_names = []
    for n, fields in enumerate(_read_lines(class_file), start=1):
        if len(fields) != 2 or fields[0] != str(n):
            raise SourceError(f"{class_file}:{n}: expected '{n} ClassName'")
        label_names.append(fields[1])
    sources, skipped = [], []
    for name, list_name in (("train", "trainlist"), ("test", "testlist")):
        if split is not None and name != split:
            continue
        list_file = os.path.join(splits_dir, f"{list_name}{split_id:02d}.txt")
        _require_file(list_file, f"UCF101 {name} list of split {split_id}")
        for fields in _read_lines(list_file):
            class_name, _, file_name = fields[0].rpartition("/")
            if len(fields) > 1:
                if len(fields) != 2 or not fields[1].isdigit():
                    raise SourceError(
                        f"{list_file}: expected lines 'Class/video.avi N', got '{' '.join(fields)}'"
                    )
                index = int(fields[1]) - 1
                if not 0 <= index < len(label_names):
                    skipped.append(
                        _skip(fields[0], name, f"class index {fields[1]} not in classInd.txt")
                    )
                    continue
                class_name = label_names[index]
            if class_name not in label_names:
                skipped.append(_skip(fields[0], name, f"label '{class_name}' not in classInd.txt"))
                continue
            path = _find_in_root(root, class_name, file_name)
            if path is None:
                skipped.append(_skip(os.path.join(root, fields[0]), name, "file not found"))
                continue
            if (source := _found_source(path, class_name, name, skipped)) is not None:
                sources.append(source)
    return _drop_duplicates(Listing(sources=sources, label_names=label_names, skipped=skipped))


def _list_hmdb51(root: str, splits_dir: str | None, split_id: int, split: str | None) -> Listing:
    _require_dir(root, "HMDB51 video folder")
    if splits_dir is None:
        raise SourceError(
            f"{root}: --format hmdb51 needs --splits-dir (the testTrainMulti_7030_splits folder)"
        )
    _require_dir(splits_dir, "--splits-dir")
    pattern = re.compile(rf"(.+)_test_split{split_id}\.txt")
    split_files = {
        m.group(1): os.path.join(splits_dir, name)
        for name in sorted(storage.listdir(splits_dir))
        if (m := pattern.fullmatch(name))
    }
    if not split_files:
        raise SourceError(f"{splits_dir}: no <class>_test_split{split_id}.txt files")
    sources, skipped = [], []
    for class_name, list_file in split_files.items():
        for fields in _read_lines(list_file):
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise SourceError(
                    f"{list_file}: expected lines 'video.avi 0|1|2', got '{' '.join(fields)}'"
                )
            # 1 = train, 2 = test, 0 = in neither for this split.
            name = {"1": "train", "2": "test"}.get(fields[1])
            if name is None or (split is not None and name != split):
                continue
            path = _find_in_root(root, class_name, fields[0])
            if path is None:
                skipped.append(
                    _skip(os.path.join(root, class_name, fields[0]), name, "file not found")
                )
                continue
            if (source := _found_source(path, class_name, name, skipped)) is not None:
                sources.append(source)
    return _drop_duplicates(
        Listing(sources=sources, label_names=sorted(split_files), skipped=skipped)
    )


def list_sources(
    input_format: str,
    input_path: str,
    *,
    split: str | None,
    video_root: str | None,
    splits_dir: str | None = None,
    split_id: int = 1,
    label_map_path: str | None = None,
    class_list: str | None = None,
) -> Listing:
    """Lists the videos (files or frame folders) of `input_path` in `input_format` (see FORMATS).

    "auto" detects the format from the input (lists.detect_format). `split` keeps one split
    (None: all); for inputs that hold one split (folders without split folders, and the
    one-split lists of lists.py) it names the split, by default inferred from the list's file
    name ("train" when it says nothing). `video_root` holds the files and frame folders a list
    names (default: the list's folder). `splits_dir` and `split_id` select the official
    UCF101/HMDB51 split files. `class_list` (classInd.txt, or one class name per line) names the
    classes of lists that give class indices. With `label_map_path` the label names come from
    that label_map.json and sources with other labels are skipped; otherwise they come from the
    class list of the input (classInd.txt, the JSON's `labels`) or, for inputs without one, from
    the whole input (all splits), sorted.

    Paths may be remote URLs (`gs://...`, read with Beam's FileSystems: storage.py) for video
    files, not frame folders; each remote folder is listed once.
    """
    with storage.cached_listings():
        return _list_sources(
            input_format,
            input_path,
            split=split,
            video_root=video_root,
            splits_dir=splits_dir,
            split_id=split_id,
            label_map_path=label_map_path,
            class_list=class_list,
        )


def _list_sources(
    input_format: str,
    input_path: str,
    *,
    split: str | None,
    video_root: str | None,
    splits_dir: str | None,
    split_id: int,
    label_map_path: str | None,
    class_list: str | None,
) -> Listing:
    from data_prep import lists

    if input_format == "auto":
        input_format = lists.detect_format(input_path, splits_dir=splits_dir, video_root=video_root)
    if input_format == "folders":
        listing = _list_folders(input_path, split)
    elif input_format == "csv":
        listing = _list_csv(input_path, video_root, split)
    elif input_format == "json":
        listing = _list_json(input_path, video_root, split)
    elif input_format == "ucf101":
        listing = _list_ucf101(input_path, splits_dir, split_id, split)
    elif input_format == "hmdb51":
        listing = _list_hmdb51(input_path, splits_dir, split_id, split)
    elif input_format in lists.LIST_FORMATS:
        listing = lists.list_seed_format(
            input_format,
            input_path,
            split=split,
            video_root=video_root,
            class_list=class_list,
            label_map_path=label_map_path,
        )
    else:
        raise SourceError(
            f"{input_path}: unknown format '{input_format}' (one of {', '.join(FORMATS)})"
        )
    listing.input_format = input_format
    listing = _check_split_names(listing, input_path)
    if label_map_path is not None:
        listing = apply_label_names(listing, load_label_map(label_map_path))
    return listing
