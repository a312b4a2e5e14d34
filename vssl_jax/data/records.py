"""The record schema: the one place that knows how a video is stored in a shard.

data_prep writes records with `encode_record` (ArrayRecord, a TFDS-compatible `tf.train.Example`)
and `encode_sequence_example` (TFRecord, DMVR/Scenic keys); the training pipeline reads them with
`parse_record`, which touches no JPEG: frames are decoded later, and only those a clip samples.

One record is one video (or one Kinetics clip): its JPEG frames at a fixed fps and short side,
the label index and text, the source path and the time range it was cut from.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import threading
from collections.abc import Sequence

import numpy as np

# Bump when a field changes meaning; data_prep records it in manifest.json.
SCHEMA_VERSION = 1

# Feature keys of the ArrayRecord (TFDS) records.
VIDEO = "video"  # Sequence of JPEG-encoded RGB frames.
LABEL = "label"  # int64 class index into label_map.json; -1 when unlabelled.
LABEL_TEXT = "label_text"
PATH = "path"  # Source file (or frame folder) the record was made from.
START_TIME = "start_time"  # Seconds into the source where the first frame lies.
END_TIME = "end_time"
FPS = "fps"  # Frame rate of the stored frames (after resampling).

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
# TFDS's sharded-file naming, so `tfds.builder_from_directory` finds the shards.
SHARD_TEMPLATE = "{dataset}-{split}.{file_format}-{index:05d}-of-{count:05d}"
TFDS_FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """A parsed record; `frames` are still JPEG bytes."""

    frames: Sequence[bytes]
    label: int
    label_text: str
    path: str
    start_time: float
    end_time: float
    fps: float

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
) -> bytes:
    """Serializes one video as the `tf.train.Example` that `features_spec` describes.

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
    # Map fields are otherwise ordered differently in each process: same video, different bytes.
    return example.SerializeToString(deterministic=True)


def parse_record(raw: bytes) -> VideoRecord:
    """Parses `encode_record`'s bytes without decoding any frame."""
    feature = _example_pb2().Example.FromString(raw).features.feature
    missing = [k for k in (VIDEO, LABEL, FPS) if k not in feature]
    if missing:
        raise ValueError(f"record is not a vssl_jax video record: missing keys {missing}")
    return VideoRecord(
        frames=feature[VIDEO].bytes_list.value,
        label=int(feature[LABEL].int64_list.value[0]),
        label_text=feature[LABEL_TEXT].bytes_list.value[0].decode("utf-8"),
        path=feature[PATH].bytes_list.value[0].decode("utf-8"),
        start_time=float(feature[START_TIME].float_list.value[0]),
        end_time=float(feature[END_TIME].float_list.value[0]),
        fps=float(feature[FPS].float_list.value[0]),
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
