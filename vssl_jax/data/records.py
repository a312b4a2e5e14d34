"""The record schema: the one place that knows how a video is stored in a shard.

data_prep writes records with `encode_record` (ArrayRecord, a TFDS-compatible `tf.train.Example`)
and `encode_sequence_example` (TFRecord, DMVR/Scenic keys); the training pipeline reads them with
`parse_record`, which touches no JPEG: frames are decoded later, and only those a clip samples.

A video (or one Kinetics clip) is stored as consecutive records of up to `frames_per_record`
JPEG frames each (at a fixed fps and short side), every one with the video's label index and text,
source path and the time range it was cut from, plus where its frames lie in the video
(`first_frame`, `video_num_frames`). A clip then reads only the records holding its frames: one
record per video made a 16-frame clip of a 1323-frame video read all 1323 JPEGs (11.5 MB, 38 ms
in ArrayRecord against 3.3 ms to decode the 16). `VideoSource` gives random access by video;
records written before segments existed (schema 1: one record per video) read the same way.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import glob
import json
import logging
import math
import os
import re
import threading
from collections.abc import Sequence

import numpy as np

# Bump when a field changes meaning; data_prep records it in manifest.json.
# 2: a video may span several records (FIRST_FRAME, VIDEO_NUM_FRAMES).
SCHEMA_VERSION = 2
# Frames per record unless `convert --frames-per-record` says otherwise: a 16-frame clip at
# stride 2 spans 31 frames, so it reads two records (~0.6 MB at short side 128).
DEFAULT_FRAMES_PER_RECORD = 32

# Feature keys of the ArrayRecord (TFDS) records.
VIDEO = "video"  # Sequence of JPEG-encoded RGB frames.
LABEL = "label"  # int64 class index into label_map.json; -1 when unlabelled.
LABEL_TEXT = "label_text"
PATH = "path"  # Source file (or frame folder) the record was made from.
START_TIME = "start_time"  # Seconds into the source where the first frame lies.
END_TIME = "end_time"
FPS = "fps"  # Frame rate of the stored frames (after resampling).
FIRST_FRAME = "first_frame"  # Index in the video of the record's first frame.
VIDEO_NUM_FRAMES = "video_num_frames"  # Frames of the whole video, over all its records.

# DMVR / Scenic keys of the TFRecord SequenceExample output.
DMVR_IMAGE = "image/encoded"
DMVR_LABEL_INDEX = "clip/label/index"
DMVR_LABEL_TEXT = "clip/label/text"
DMVR_FILENAME = "video/filename"
DMVR_START = "clip/start/timestamp"  # Microseconds, as DMVR's generators write them.
DMVR_END = "clip/end/timestamp"
DMVR_FPS = "video/fps"

ARRAY_RECORD = "array_record"
TFRECORD = "tfrecord"
# data_prep's bookkeeping beside the shards: `sidecars/<shard>.json` lists the shard's videos.
SIDECAR_DIR = "sidecars"
# TFDS's sharded-file naming, so `tfds.builder_from_directory` finds the shards.
SHARD_TEMPLATE = "{dataset}-{split}.{file_format}-{index:05d}-of-{count:05d}"
TFDS_FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """Frames `first_frame ...` of a video of `video_num_frames` frames, still JPEG bytes.

    `parse_record` gives one record's; `VideoSource` a whole video's (first_frame 0), whose
    frames are read from its records when first indexed.
    """

    frames: Sequence[bytes]
    label: int
    label_text: str
    path: str
    start_time: float  # Of the whole video, as are end_time and fps.
    end_time: float
    fps: float
    first_frame: int = 0
    video_num_frames: int | None = None  # None: len(frames).

    @property
    def num_frames(self) -> int:
        return len(self.frames)


def features_spec(label_names: Sequence[str]):
    """The TFDS features of a record; `label_names` are label_map.json's names in index order."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            VIDEO: tfds.features.Sequence(
                tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
            ),
            LABEL: tfds.features.ClassLabel(names=list(label_names)),
            LABEL_TEXT: tfds.features.Text(),
            PATH: tfds.features.Text(),
            START_TIME: tfds.features.Scalar(np.float32),
            END_TIME: tfds.features.Scalar(np.float32),
            FPS: tfds.features.Scalar(np.float32),
            FIRST_FRAME: tfds.features.Scalar(np.int64),
            VIDEO_NUM_FRAMES: tfds.features.Scalar(np.int64),
        }
    )


_IMPORT_LOCK = threading.Lock()


def _example_pb2():
    # TFDS ships the tf.train protos; importing them does not import TensorFlow. One thread at a
    # time: grain's reader threads arrive here together, and two threads importing TFDS at once
    # deadlocked (its lazy imports hold a lock while importing; seen as a hang at step 1).
    with _IMPORT_LOCK:
        from tensorflow_datasets.proto import tf_example_pb2
    return tf_example_pb2


def encode_record(
    *,
    frames: Sequence[bytes],
    label: int,
    label_text: str,
    path: str,
    start_time: float,
    end_time: float,
    fps: float,
    first_frame: int = 0,
    video_num_frames: int | None = None,
) -> bytes:
    """Serializes frames `first_frame ...` of a video of `video_num_frames` frames (None: these
    are all of it) as the `tf.train.Example` that `features_spec` describes.

    Built directly with the proto rather than through `FeaturesDict.serialize_example`, which
    re-validates every JPEG; `tests/test_records.py` checks that TFDS reads these bytes back.
    """
    pb = _example_pb2()
    example = pb.Example()
    feature = example.features.feature
    feature[VIDEO].bytes_list.value.extend(frames)
    feature[LABEL].int64_list.value.append(int(label))
    feature[LABEL_TEXT].bytes_list.value.append(label_text.encode("utf-8"))
    feature[PATH].bytes_list.value.append(path.encode("utf-8"))
    feature[START_TIME].float_list.value.append(float(start_time))
    feature[END_TIME].float_list.value.append(float(end_time))
    feature[FPS].float_list.value.append(float(fps))
    feature[FIRST_FRAME].int64_list.value.append(int(first_frame))
    total = len(frames) if video_num_frames is None else int(video_num_frames)
    feature[VIDEO_NUM_FRAMES].int64_list.value.append(total)
    # Map fields are otherwise ordered differently in each process: same video, different bytes.
    return example.SerializeToString(deterministic=True)


def encode_video_records(
    *, frames: Sequence[bytes], frames_per_record: int, **fields
) -> list[bytes]:
    """A video as consecutive records of up to `frames_per_record` frames (`encode_record`'s
    other fields in `fields`); at least one record, so a video of no frames stays visible."""
    if frames_per_record < 1:
        raise ValueError(f"frames_per_record must be at least 1, got {frames_per_record}")
    starts = range(0, max(len(frames), 1), frames_per_record)
    return [
        encode_record(
            frames=frames[first : first + frames_per_record],
            first_frame=first,
            video_num_frames=len(frames),
            **fields,
        )
        for first in starts
    ]


def parse_record(raw: bytes) -> VideoRecord:
    """Parses `encode_record`'s bytes without decoding any frame."""
    feature = _example_pb2().Example.FromString(raw).features.feature
    missing = [k for k in (VIDEO, LABEL, FPS) if k not in feature]
    if missing:
        raise ValueError(f"record is not a vssl_jax video record: missing keys {missing}")
    frames = feature[VIDEO].bytes_list.value
    # Schema 1 records lack the segment fields: each is a whole video.
    segment = FIRST_FRAME in feature and VIDEO_NUM_FRAMES in feature
    return VideoRecord(
        frames=frames,
        label=int(feature[LABEL].int64_list.value[0]),
        label_text=feature[LABEL_TEXT].bytes_list.value[0].decode("utf-8"),
        path=feature[PATH].bytes_list.value[0].decode("utf-8"),
        start_time=float(feature[START_TIME].float_list.value[0]),
        end_time=float(feature[END_TIME].float_list.value[0]),
        fps=float(feature[FPS].float_list.value[0]),
        first_frame=int(feature[FIRST_FRAME].int64_list.value[0]) if segment else 0,
        video_num_frames=(
            int(feature[VIDEO_NUM_FRAMES].int64_list.value[0]) if segment else len(frames)
        ),
    )


def encode_sequence_example(
    *,
    frames: Sequence[bytes],
    label: int,
    label_text: str,
    path: str,
    start_time: float,
    end_time: float,
    fps: float,
) -> bytes:
    """Serializes one video as a `tf.train.SequenceExample` with DMVR / Scenic keys."""
    pb = _example_pb2()
    seq = pb.SequenceExample()
    context = seq.context.feature
    context[DMVR_LABEL_INDEX].int64_list.value.append(int(label))
    context[DMVR_LABEL_TEXT].bytes_list.value.append(label_text.encode("utf-8"))
    context[DMVR_FILENAME].bytes_list.value.append(path.encode("utf-8"))
    context[DMVR_START].int64_list.value.append(round(start_time * 1e6))
    context[DMVR_END].int64_list.value.append(round(end_time * 1e6))
    context[DMVR_FPS].float_list.value.append(float(fps))
    frame_list = seq.feature_lists.feature_list[DMVR_IMAGE].feature
    for jpeg in frames:
        frame_list.add().bytes_list.value.append(jpeg)
    return seq.SerializeToString(deterministic=True)


def shard_name(dataset: str, split: str, file_format: str, index: int, count: int) -> str:
    return SHARD_TEMPLATE.format(
        dataset=dataset, split=split, file_format=file_format, index=index, count=count
    )


def shard_paths(data_dir: str, split: str, file_format: str = ARRAY_RECORD) -> list[str]:
    """The complete shards of one split, in order; raises a one-line error when there are none."""
    pattern = os.path.join(data_dir, f"*-{split}.{file_format}-*-of-*")
    # Complete shards only: an interrupted conversion leaves `<shard>.tmp-<pid>` files behind.
    paths = sorted(p for p in glob.glob(pattern) if re.fullmatch(r".*-of-\d+", p))
    if not paths:
        raise FileNotFoundError(
            f"{data_dir}: no {file_format} shards for split '{split}' "
            "(run `python -m data_prep convert` first, or check config.data.data_dir / split)"
        )
    return paths


def sidecar_file(shard_path: str) -> str:
    """Where data_prep keeps the sidecar of the shard at `shard_path`."""
    folder, name = os.path.split(shard_path)
    return os.path.join(folder, SIDECAR_DIR, f"{name}.json")


def records_of(num_frames: int, frames_per_record: int | None) -> int:
    """Records holding a video of `num_frames` stored `frames_per_record` to a record (None:
    schema 1, one record per video); a video of no frames still has one."""
    if frames_per_record is None:
        return 1
    return max(1, math.ceil(num_frames / frames_per_record))


def _shard_videos(path: str) -> list[tuple[int, int]]:
    """(frames, frames per record) of each video of a shard, in record order.

    From the shard's sidecar (its videos' frame counts; `frames_per_record` in its options,
    absent before schema 2: a record per video); without one, by reading every record once.
    """
    try:
        with open(sidecar_file(path), encoding="utf-8") as f:
            sidecar = json.load(f)
    except FileNotFoundError:
        sidecar = None
    except (OSError, ValueError) as e:
        raise ValueError(f"{sidecar_file(path)}: cannot be read ({e})") from None
    if sidecar is not None:
        per_record = sidecar.get("options", {}).get("frames_per_record")
        return [(v["num_frames"], per_record or max(v["num_frames"], 1)) for v in sidecar["videos"]]
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(path)
    try:
        count = reader.num_records()
        logging.warning(
            "%s: no sidecar, so its %d records are read once to find their videos", path, count
        )
        videos = []
        for _ in range(count):
            record = parse_record(reader.read())
            if record.first_frame == 0:
                total = record.video_num_frames
                videos.append(
                    (total, record.num_frames if total > record.num_frames else max(total, 1))
                )
    finally:
        reader.close()
    return videos


class SegmentedFrames(collections.abc.Sequence):
    """The JPEG frames of a video stored over consecutive records; each record is read the first
    time one of its frames is indexed (then kept while this object lives)."""

    def __init__(self, read, first_record: int, first: VideoRecord, frames_per_record: int):
        self._read = read  # Record index -> raw bytes.
        self._first_record = first_record
        self._path = first.path
        self._num_frames = first.video_num_frames
        self._frames_per_record = frames_per_record
        self._segments: dict[int, Sequence[bytes]] = {0: first.frames}

    def __len__(self) -> int:
        return self._num_frames

    def __eq__(self, other) -> bool:
        try:
            same_length = len(other) == self._num_frames
        except TypeError:
            return NotImplemented
        return same_length and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._num_frames))]
        index = int(index)
        if index < 0:
            index += self._num_frames
        if not 0 <= index < self._num_frames:
            raise IndexError(f"frame {index} of a {self._num_frames}-frame video")
        segment, offset = divmod(index, self._frames_per_record)
        frames = self._segments.get(segment)
        if frames is None:
            frames = self._segments[segment] = self._segment(segment)
        return frames[offset]

    def _segment(self, segment: int) -> Sequence[bytes]:
        position = self._first_record + segment
        record = parse_record(self._read(position))
        first = segment * self._frames_per_record
        if (record.path, record.first_frame, record.video_num_frames) != (
            self._path,
            first,
            self._num_frames,
        ):
            raise ValueError(
                f"{self._path}: record {position} holds frames {record.first_frame}... of "
                f"{record.path}, not frame {first}: the shards and their sidecars disagree "
                "(convert again)"
            )
        return record.frames


class VideoSource:
    """Random access to the videos of some shards: `source[i]` is video `i`'s `VideoRecord`
    (in shard order), whose frames are read from its records as they are indexed.

    A grain data source (`len`, `[]`, picklable): worker processes open the shards themselves.
    """

    def __init__(self, paths: Sequence[str]):
        import grain

        self._records = grain.sources.ArrayRecordDataSource(list(paths))
        first_record, frames_per_record = [], []
        position = 0
        for path in paths:
            for num_frames, per_record in _shard_videos(path):
                first_record.append(position)
                frames_per_record.append(per_record)
                position += records_of(num_frames, per_record)
        if position != len(self._records):
            raise ValueError(
                f"{os.path.dirname(paths[0]) or '.'}: the sidecars list {position} records, the "
                f"{len(paths)} shards hold {len(self._records)} (shards replaced after "
                "conversion? convert again)"
            )
        self._first_record = np.asarray(first_record, np.int64)
        self._frames_per_record = np.asarray(frames_per_record, np.int64)

    def __len__(self) -> int:
        return len(self._first_record)

    def __getitem__(self, index: int) -> VideoRecord:
        position = int(self._first_record[index])
        record = parse_record(self._records[position])
        if record.first_frame != 0:
            raise ValueError(
                f"{record.path}: record {position} starts at frame {record.first_frame}, not at "
                "a video's first: the shards and their sidecars disagree (convert again)"
            )
        per_record = int(self._frames_per_record[index])
        if record.video_num_frames <= record.num_frames:
            return record
        frames = SegmentedFrames(self._records.__getitem__, position, record, per_record)
        return dataclasses.replace(record, frames=frames)

    def __repr__(self) -> str:
        return f"VideoSource({len(self)} videos in {self._records!r})"
