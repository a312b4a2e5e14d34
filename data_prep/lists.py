"""The list and annotation files of the seeds' codebases and their peers, and format detection.

| format | file | one entry |
|---|---|---|
| `resnets3d_json` | 3D-ResNets-PyTorch `ucf101_01.json`, `hmdb51_1.json` | `{"labels": [...], "database": {video: {"subset", "annotations": {"label", "segment"}}}}` |
| `vtdl` | the VTDL seed's text lists | `video_path class_index num_frames` |
| `rawframes` | TSN / mmaction2 rawframe lists | `frame_dir total_frames label` |
| `videolist` | TSN / mmaction2 video lists | `path label` |
| `datalist` | the video_classification_pytorch seed's `datalist.json` | `{"path", "class_name", "label", "num_frames"}` |
| `dpc_csv` | DPC / CPC split CSVs, with a `classInd.txt` | `path,num_frames` (class = the path's folder) |

Paths are relative to `--video-root` (default: the list's folder; remote, `gs://...`, for video
files: storage.py). An absolute path that does not exist here (lists written on another machine)
is looked up as its last two parts, then its last part, under the root; a video name whose frames
were extracted finds its frame folder (the name without the extension). Each of these files holds
one split, except the 3D-ResNets JSON whose `subset`s become `train`, `val` and `test`.

Class indices count from 0, as every PyTorch and mmaction2 list writes them; a list whose
indices reach the number of classes and never use 0 counts from 1. The class names come from
the class list (`--class-list`; else `--label-map`; else a `classInd.txt` beside the list or in
its `annotations/` folder), never from the classes one split happens to contain.
"""

from __future__ import annotations

import csv
import json
import os
import re

from data_prep import frames, storage
from data_prep.sources import (
    VIDEO_EXTENSIONS,
    Listing,
    SourceError,
    VideoSource,
    _drop_duplicates,
    _require_file,
    _skip,
    frame_folder_range,
    load_label_map,
    require_local_frame_folder,
)

LIST_FORMATS = ("resnets3d_json", "vtdl", "rawframes", "videolist", "datalist", "dpc_csv")
# 3D-ResNets' subset names -> split names.
_SUBSETS = {"training": "train", "validation": "val", "testing": "test"}
_CLASS_FILE = "classInd.txt"
# How many entries of a three-column list are checked against the disk to tell vtdl from
# rawframes.
_SNIFF_ENTRIES = 64


# --- class lists ---


def read_class_list(path: str) -> list[str]:
    """Class names in index order from classInd.txt (`1 Name` lines) or one name per line.

    Numbered lines must count up by one from 0 or 1 (classInd.txt counts from 1: its class 1 is
    index 0). A `.json` file is a label_map.json `{name: index}` or a JSON list of names.
    """
    _require_file(path, "class list")
    if path.lower().endswith(".json"):
        try:
            with storage.open_read(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SourceError(f"{path}: not valid JSON ({e})") from e
        if isinstance(data, list) and all(isinstance(n, str) for n in data):
            return list(data)
        return load_label_map(path)
    with storage.open_read(path, encoding="utf-8-sig") as f:
        lines = [line.strip() for line in f if line.strip()]
    numbered = [re.fullmatch(r"(\d+)\s+(\S.*)", line) for line in lines]
    if lines and all(numbered):
        numbers = [int(m[1]) for m in numbered]
        if numbers != list(range(numbers[0], numbers[0] + len(numbers))) or numbers[0] > 1:
            raise SourceError(f"{path}: class numbers must count up by one from 0 or 1")
        names = [m[2].strip() for m in numbered]
    else:
        names = lines
    if not names:
        raise SourceError(f"{path}: no class names")
    if len(set(names)) != len(names):
        raise SourceError(f"{path}: a class name appears twice")
    return names


def _class_names(
    list_path: str, class_list: str | None, label_map_path: str | None, required: bool
) -> list[str] | None:
    if class_list is not None:
        return read_class_list(class_list)
    if label_map_path is not None:
        return load_label_map(label_map_path)
    folder = storage.parent(list_path)
    for candidate in (
        os.path.join(folder, _CLASS_FILE),
        os.path.join(folder, "annotations", _CLASS_FILE),
    ):
        if storage.isfile(candidate):
            return read_class_list(candidate)
    if required:
        raise SourceError(
            f"{list_path}: gives class indices but no class names; pass --class-list "
            f"(e.g. {_CLASS_FILE}) or --label-map"
        )
    return None


def _index_offset(indices: list[int], num_classes: int) -> int:
    """0, or 1 for a list that counts its classes from 1 (it reaches num_classes, never 0)."""
    if indices and min(indices) >= 1 and max(indices) == num_classes:
        return 1
    return 0


# --- entries on disk ---


def resolve(root: str, entry: str) -> str | None:
    """The file or frame folder a list entry names (see the module docstring), or None."""
    entry = entry.strip()
    candidates = [os.path.join(root, entry)]  # An absolute entry stays as it is.
    if os.path.isabs(entry):
        parts = os.path.normpath(entry).split(os.sep)
        candidates += [os.path.join(root, *parts[-2:]), os.path.join(root, parts[-1])]
    for path in list(candidates):
        stem, ext = os.path.splitext(path)
        if ext.lower() in VIDEO_EXTENSIONS:
            candidates.append(stem)
    return next((path for path in candidates if storage.exists(path)), None)


def _entry(
    root: str,
    path: str,
    label_text: str,
    split: str,
    sources: list[VideoSource],
    skipped: list[dict],
    *,
    stop: int | None = None,
    first: int = 0,
) -> None:
    """Adds the source of one list entry, or its skip reason (missing, too few frames)."""
    found = resolve(root, path)
    if found is None:
        skipped.append(_skip(os.path.join(root, path), split, "file or frame folder not found"))
        return
    frame_range = None
    if storage.isdir(found):
        frame_range, problem = frame_folder_range(found, stop, first)
        if problem is not None:
            skipped.append(_skip(found, split, problem))
            return
    sources.append(VideoSource(found, label_text, split, frame_range=frame_range))


def _split_of(list_path: str, split: str | None) -> str:
    """A one-split list's split: `split`, else what its file name says, else train."""
    if split is not None:
        return split
    name = os.path.basename(list_path).lower()
    for word, found in (("train", "train"), ("val", "val"), ("test", "test")):
        if word in name:
            return found
    return "train"


def _int(value: str, where: str, what: str) -> int:
    try:
        return int(value)
    except ValueError as e:
        raise SourceError(f"{where}: {what} '{value}' is not a whole number") from e


def _read_rows(path: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty line of a whitespace-separated list."""
    _require_file(path, "list file")
    with storage.open_read(path, encoding="utf-8-sig") as f:
        return [(n, line.split()) for n, line in enumerate(f, start=1) if line.strip()]


# --- the formats ---


def _list_resnets3d_json(path: str, root: str, split: str | None) -> Listing:
    _require_file(path, "3D-ResNets JSON")
    try:
        with storage.open_read(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from e
    schema = '{"labels": [names], "database": {video: {"subset": ..., "annotations": {...}}}}'
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("labels"), list)
        or not all(isinstance(n, str) for n in data["labels"])
        or not isinstance(data.get("database"), dict)
    ):
        raise SourceError(f"{path}: expected {schema}")
    labels = list(data["labels"])
    known = set(labels)
    sources, skipped = [], []
    for video, value in data["database"].items():
        if not isinstance(value, dict) or not isinstance(value.get("subset"), str):
            raise SourceError(f"{path}: database entry '{video}' has no \"subset\"")
        name = _SUBSETS.get(value["subset"], value["subset"])
        if split is not None and name != split:
            continue
        annotations = value.get("annotations") or {}
        label = annotations.get("label", "")
        if label and label not in known:
            skipped.append(_skip(video, name, f"label '{label}' not in the JSON's labels"))
            continue
        # 3D-ResNets reads `video_path`, else ROOT/<label>/<video>; also try a flat ROOT/<video>.
        relative = value.get("video_path") or os.path.join(label, video)
        if resolve(root, relative) is None and resolve(root, video) is not None:
            relative = video
        segment = annotations.get("segment")
        first, stop = 0, None
        if segment is not None:
            # 1-based frame numbers [start, end), as 3D-ResNets writes them after extraction.
            ok = (
                isinstance(segment, list | tuple)
                and len(segment) == 2
                and all(isinstance(x, int) for x in segment)
            )
            if not ok:
                raise SourceError(f"{path}: entry '{video}': segment must be [first, end] frames")
            first, stop = segment[0] - 1, segment[1] - 1
        _entry(root, relative, label, name, sources, skipped, stop=stop, first=first)
    return _drop_duplicates(Listing(sources=sources, label_names=labels, skipped=skipped))


def _list_columns(
    input_format: str, path: str, root: str, split: str | None, names: list[str]
) -> Listing:
    """vtdl (`path label frames`), rawframes (`path frames label`), videolist (`path label`)."""
    columns = {"vtdl": 3, "rawframes": 3, "videolist": 2}[input_format]
    shape = {
        "vtdl": "'video_path class_index num_frames'",
        "rawframes": "'frame_dir total_frames label'",
        "videolist": "'path label'",
    }[input_format]
    rows = []
    for line, fields in _read_rows(path):
        where = f"{path}:{line}"
        if len(fields) != columns:
            raise SourceError(f"{where}: expected {shape}, got '{' '.join(fields)}'")
        if input_format == "rawframes":
            entry, count, label = fields[0], _int(fields[1], where, "frame count"), fields[2]
        else:
            entry, label = fields[0], fields[1]
            count = _int(fields[2], where, "frame count") if columns == 3 else None
        rows.append((entry, _int(label, where, "class index"), count))
    name = _split_of(path, split)
    offset = _index_offset([label for _, label, _ in rows], len(names))
    sources, skipped = [], []
    for entry, label, count in rows:
        index = label - offset
        if not 0 <= index < len(names):
            skipped.append(_skip(entry, name, f"class index {label} not in the class list"))
            continue
        _entry(root, entry, names[index], name, sources, skipped, stop=count)
    return _drop_duplicates(Listing(sources=sources, label_names=names, skipped=skipped))


def _list_datalist(path: str, root: str, split: str | None, names: list[str] | None) -> Listing:
    _require_file(path, "datalist JSON")
    try:
        with storage.open_read(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from e
    schema = 'a list of {"path": str, "class_name": str, "label": int, "num_frames": int}'
    if not isinstance(entries, list):
        raise SourceError(f"{path}: expected {schema}")
    for i, entry in enumerate(entries):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("class_name"), str)
            and isinstance(entry.get("label"), int)
            and isinstance(entry.get("num_frames", 0), int)
        )
        if not ok:
            raise SourceError(f"{path}: entry {i} is not {schema}")
    if names is None:
        # No class list: the entries name their classes; indices must be 0..K-1, one name each.
        by_index: dict[int, str] = {}
        for entry in entries:
            if by_index.setdefault(entry["label"], entry["class_name"]) != entry["class_name"]:
                raise SourceError(
                    f"{path}: label {entry['label']} is both '{by_index[entry['label']]}' and "
                    f"'{entry['class_name']}'"
                )
        if sorted(by_index) != list(range(len(by_index))):
            missing = min(set(range(max(by_index, default=-1) + 1)) - set(by_index))
            raise SourceError(
                f"{path}: no entry has label {missing}, so its class name is unknown; "
                "pass --class-list"
            )
        names = [by_index[i] for i in range(len(by_index))]
    offset = _index_offset([e["label"] for e in entries], len(names))
    name = _split_of(path, split)
    sources, skipped = [], []
    for entry in entries:
        index = entry["label"] - offset
        if not 0 <= index < len(names) or names[index] != entry["class_name"]:
            reason = f"label {entry['label']} '{entry['class_name']}' disagrees with the class list"
            skipped.append(_skip(entry["path"], name, reason))
            continue
        _entry(
            root, entry["path"], names[index], name, sources, skipped, stop=entry.get("num_frames")
        )
    return _drop_duplicates(Listing(sources=sources, label_names=names, skipped=skipped))


def _list_dpc_csv(path: str, root: str, split: str | None, names: list[str]) -> Listing:
    _require_file(path, "DPC CSV")
    with storage.open_read(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row]
    name = _split_of(path, split)
    known = set(names)
    sources, skipped = [], []
    for line, row in enumerate(rows, start=1):
        where = f"{path}:{line}"
        if len(row) != 2:
            raise SourceError(f"{where}: expected 'path,num_frames', got '{','.join(row)}'")
        entry, count = row[0].strip(), _int(row[1].strip(), where, "frame count")
        # DPC: the class is the name of the folder holding the video's frame folder.
        class_name = os.path.basename(os.path.dirname(os.path.normpath(entry)))
        if class_name not in known:
            skipped.append(_skip(entry, name, f"class '{class_name}' not in the class list"))
            continue
        _entry(root, entry, class_name, name, sources, skipped, stop=count)
    return _drop_duplicates(Listing(sources=sources, label_names=names, skipped=skipped))


def list_seed_format(
    input_format: str,
    path: str,
    *,
    split: str | None,
    video_root: str | None,
    class_list: str | None,
    label_map_path: str | None,
) -> Listing:
    """Lists a file in one of LIST_FORMATS (see the module docstring)."""
    _require_file(path, f"{input_format} list")
    root = video_root or storage.parent(path)
    if not storage.isdir(root):
        raise SourceError(f"{root}: no such directory (--video-root)")
    if input_format == "resnets3d_json":
        return _list_resnets3d_json(path, root, split)
    if input_format == "datalist":
        names = _class_names(path, class_list, label_map_path, required=False)
        return _list_datalist(path, root, split, names)
    names = _class_names(path, class_list, label_map_path, required=True)
    if input_format == "dpc_csv":
        return _list_dpc_csv(path, root, split, names)
    return _list_columns(input_format, path, root, split, names)


# --- detection ---


def _sniff_three_columns(path: str, rows: list[list[str]], root: str) -> str:
    """vtdl (`path label frames`) or rawframes (`path frames label`): the column that matches
    the frames on disk is the frame count."""
    votes = {"vtdl": 0, "rawframes": 0}
    for fields in rows[:_SNIFF_ENTRIES]:
        folder = resolve(root, fields[0])
        if folder is None or not storage.isdir(folder):
            continue
        require_local_frame_folder(folder)
        try:
            count = len(frames.list_frames(folder))
        except frames.FrameFolderError:
            continue
        if fields[1] == str(count) != fields[2]:
            votes["rawframes"] += 1
        elif fields[2] == str(count) != fields[1]:
            votes["vtdl"] += 1
    if votes["vtdl"] == votes["rawframes"]:
        raise SourceError(
            f"{path}: cannot tell a VTDL list (path class frames) from a rawframe list "
            "(path frames class) by its frame folders; pass --format vtdl or --format rawframes"
        )
    return max(votes, key=votes.__getitem__)


def _detect_file(path: str, video_root: str | None) -> str:
    name = os.path.basename(path)
    ext = os.path.splitext(name)[1].lower()
    if ext == ".json":
        try:
            with storage.open_read(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SourceError(f"{path}: not valid JSON ({e})") from e
        if isinstance(data, dict) and "database" in data:
            return "resnets3d_json"
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return "datalist" if "class_name" in data[0] else "json"
        raise SourceError(
            f"{path}: not a JSON list format vssl_jax knows (3D-ResNets, datalist, or "
            '[{"path", "label", "split"}]); pass --format'
        )
    if m := re.fullmatch(r"(train|test)list0*(\d+)\.txt", name):
        raise SourceError(
            f"{path}: a UCF101 split file; use --input <UCF-101 videos or frames> "
            f"--splits-dir {storage.parent(path)} --split-id {m[2]}"
        )
    if re.fullmatch(r".+_test_split\d+\.txt", name):
        raise SourceError(
            f"{path}: an HMDB51 split file; use --input <hmdb51 videos or frames> "
            f"--splits-dir {storage.parent(path)}"
        )
    with storage.open_read(path, encoding="utf-8-sig", errors="replace") as f:
        lines = [line for line in f if line.strip()]
    first = lines[0] if lines else ""
    if ext == ".csv":
        cells = [c.strip() for c in first.split(",")]
        if "label" in cells:
            return "csv"
        if len(cells) == 2 and cells[1].isdigit():
            return "dpc_csv"
        raise SourceError(
            f"{path}: neither a Kinetics CSV (a 'label' column) nor a DPC CSV (path,num_frames)"
        )
    rows = [line.split() for line in lines]
    widths = {len(fields) for fields in rows}
    if widths == {2} and all(fields[1].lstrip("-").isdigit() for fields in rows):
        return "videolist"
    if widths == {3} and all(f[1].isdigit() and f[2].isdigit() for f in rows):
        root = video_root or storage.parent(path)
        return _sniff_three_columns(path, rows, root)
    raise SourceError(
        f"{path}: not a list format vssl_jax knows (first line '{first.strip()}'); pass --format"
    )


def detect_format(input_path: str, *, splits_dir: str | None, video_root: str | None) -> str:
    """The format of an input: a folder (with --splits-dir: UCF101 or HMDB51) or a list file."""
    if storage.isdir(input_path):
        if splits_dir is None:
            return "folders"
        if not storage.isdir(splits_dir):
            raise SourceError(f"{splits_dir}: no such directory (--splits-dir)")
        names = storage.listdir(splits_dir)
        if _CLASS_FILE in names or any(re.fullmatch(r"trainlist\d+\.txt", n) for n in names):
            return "ucf101"
        if any(re.fullmatch(r".+_test_split\d+\.txt", n) for n in names):
            return "hmdb51"
        raise SourceError(
            f"{splits_dir}: holds neither UCF101 split files ({_CLASS_FILE}, trainlist01.txt) "
            "nor HMDB51 ones (<class>_test_split1.txt); pass --format"
        )
    if not storage.exists(input_path):
        raise SourceError(f"{input_path}: no such directory or file (--input)")
    return _detect_file(input_path, video_root)
