"""The record schema read back by every consumer: parse_record, TFDS, and TFRecord readers."""

from __future__ import annotations

import json
import os
import shutil
import struct

import crc32c
import numpy as np
import pytest
import simplejpeg
from array_record.python.array_record_module import ArrayRecordReader
from tensorflow_datasets.proto import tf_example_pb2
from tfrecord.reader import tfrecord_iterator

from data_prep.convert import convert
from data_prep.sources import list_sources
from tests.real_videos import real_video_path
from vssl_jax import video_io
from vssl_jax.data import records


def _jpegs(count: int, value: int = 0) -> list[bytes]:
    rgb = np.full((16, 24, 3), value, np.uint8)
    return [simplejpeg.encode_jpeg(rgb + i, colorspace="RGB") for i in range(count)]


def test_encode_then_parse_round_trip():
    frames = _jpegs(3, value=40)
    raw = records.encode_record(
        frames=frames,
        label=4,
        label_text="juggling",
        path="clips/a.mp4",
        start_time=1.5,
        end_time=2.75,
        fps=12.0,
    )
    record = records.parse_record(raw)
    assert list(record.frames) == frames
    assert record.num_frames == 3
    assert (record.label, record.label_text, record.path) == (4, "juggling", "clips/a.mp4")
    assert (record.start_time, record.end_time, record.fps) == (1.5, 2.75, 12.0)
    with pytest.raises(ValueError, match="not a vssl_jax video record"):
        records.parse_record(tf_example_pb2.Example().SerializeToString())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Two real clips in two classes, converted with TFRecord output too."""
    root = tmp_path_factory.mktemp("videos")
    for name, label in (("carphone_pristine.mp4", "phone"), ("bikes.mp4", "street")):
        os.makedirs(root / label)
        shutil.copy(real_video_path(name), root / label / name)
    out = str(tmp_path_factory.mktemp("out"))
    listing = list_sources("folders", str(root), split=None, video_root=None)
    manifest = convert(
        listing, out, fps=5, short_side=32, workers=1, tfrecord=True, show_progress=False
    )
    return out, manifest


def _read_records(path: str) -> list[records.VideoRecord]:
    """Every record of a shard, as stored (a video may span several)."""
    reader = ArrayRecordReader(path)
    raw = reader.read_all()
    reader.close()
    return [records.parse_record(r) for r in raw]


def _read_videos(path: str) -> list[records.VideoRecord]:
    source = records.VideoSource([path])
    return [source[i] for i in range(len(source))]


def _masked_crc(data: bytes) -> int:
    # TFRecord's CRC masking, written out independently of the writer.
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_tfds_reads_converted_shards(converted):
    import tensorflow_datasets as tfds

    out, manifest = converted
    shard = os.path.join(out, manifest["splits"]["train"]["shards"][0])
    parsed = _read_videos(shard)
    # Sorted by path: phone/carphone_pristine.mp4, then street/bikes.mp4.
    assert [r.path.rsplit("/", 1)[1] for r in parsed] == ["carphone_pristine.mp4", "bikes.mp4"]

    # TFDS's examples are the records: carphone's 21 frames in one, bikes' 50 in 32 + 18.
    stored = _read_records(shard)
    assert [(r.path, r.first_frame, r.num_frames, r.video_num_frames) for r in stored] == [
        (parsed[0].path, 0, 21, 21),
        (parsed[1].path, 0, 32, 50),
        (parsed[1].path, 32, 18, 50),
    ]
    assert manifest["splits"]["train"]["num_records"] == 3
    builder = tfds.builder_from_directory(out)
    assert builder.info.features["label"].names == ["phone", "street"]
    source = builder.as_data_source("train")
    assert len(source) == 3
    for i, record in enumerate(stored):
        example = source[i]
        assert example["label"] == record.label
        assert example["label_text"].decode() == record.label_text
        assert (example["first_frame"], example["video_num_frames"]) == (
            record.first_frame,
            record.video_num_frames,
        )
        assert len(example["video"]) == record.num_frames
        np.testing.assert_array_equal(
            example["video"][0], simplejpeg.decode_jpeg(record.frames[0], colorspace="RGB")
        )
    # carphone: 4.004 s at 5 fps, k / 5 < 4.004 -> 21 frames; bikes: 10 s at 5 fps.
    assert [r.num_frames for r in parsed] == [21, 50]
    assert [r.label_text for r in parsed] == ["phone", "street"]
    assert [r.label for r in parsed] == [0, 1]
    assert [r.fps for r in parsed] == [5.0, 5.0]
    # The last frame's time plus one frame period (stored as float32).
    assert [(r.start_time, r.end_time) for r in parsed] == [(0, pytest.approx(4.2)), (0, 10)]
    assert simplejpeg.decode_jpeg_header(parsed[1].frames[0])[:2] == (32, 75)


def test_tfrecord_output_has_dmvr_keys(converted):
    out, manifest = converted
    (relative,) = manifest["splits"]["train"]["tfrecord_shards"]
    path = os.path.join(out, relative)
    with open(path, "rb") as f:
        data = f.read()
    # Walk the framing by hand and check both CRCs of every record.
    offset, payloads = 0, []
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        (length_crc,) = struct.unpack_from("<I", data, offset + 8)
        assert length_crc == _masked_crc(data[offset : offset + 8])
        payload = data[offset + 12 : offset + 12 + length]
        (payload_crc,) = struct.unpack_from("<I", data, offset + 12 + length)
        assert payload_crc == _masked_crc(payload)
        payloads.append(payload)
        offset += 16 + length
    assert [bytes(p) for p in tfrecord_iterator(path)] == payloads

    # A SequenceExample per video, however many ArrayRecord records it spans.
    array_records = _read_videos(os.path.join(out, manifest["splits"]["train"]["shards"][0]))
    assert len(payloads) == len(array_records) == 2
    for payload, record in zip(payloads, array_records, strict=True):
        sequence = tf_example_pb2.SequenceExample.FromString(payload)
        context = sequence.context.feature
        frames = sequence.feature_lists.feature_list[records.DMVR_IMAGE].feature
        assert [f.bytes_list.value[0] for f in frames] == list(record.frames)
        assert context[records.DMVR_LABEL_INDEX].int64_list.value == [record.label]
        assert context[records.DMVR_LABEL_TEXT].bytes_list.value == [record.label_text.encode()]
        assert context[records.DMVR_FILENAME].bytes_list.value == [record.path.encode()]
        assert context[records.DMVR_END].int64_list.value == [round(record.end_time * 1e6)]


def test_records_hold_the_decoded_frames(converted):
    """The stored JPEGs are video_io's frames for the same options."""
    out, manifest = converted
    record = _read_videos(os.path.join(out, manifest["splits"]["train"]["shards"][0]))[1]
    frames = list(video_io.iter_frames(record.path, fps=5, short_side=32))
    assert len(frames) == record.num_frames
    for jpeg, (_, rgb) in zip(record.frames, frames, strict=True):
        decoded = simplejpeg.decode_jpeg(jpeg, colorspace="RGB").astype(np.float32)
        # JPEG at quality 90 of the same picture: PSNR well above 30 dB (a wrong frame is ~15).
        mse = np.mean((decoded - rgb) ** 2)
        assert 10 * np.log10(255**2 / mse) > 30


def _write_shard(path: str, raws: list[bytes]) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter

    from data_prep.convert import ARRAY_RECORD_OPTIONS

    writer = ArrayRecordWriter(path, ARRAY_RECORD_OPTIONS)
    for raw in raws:
        writer.write(raw)
    writer.close()


_FIELDS = dict(label_text="c", start_time=0.0, end_time=7.0, fps=10.0)


@pytest.mark.parametrize("with_sidecar", [True, False])
def test_video_source_reads_only_the_records_of_the_frames_asked_for(tmp_path, with_sidecar):
    """70 + 5 frames at 32 per record: 3 + 1 records. Every frame comes back in place, and a
    frame costs a read of its own record only (once), not of the whole video."""
    long, short = _jpegs(70), _jpegs(5, value=100)
    raws = records.encode_video_records(
        frames=long, frames_per_record=32, label=1, path="long.mp4", **_FIELDS
    ) + records.encode_video_records(
        frames=short, frames_per_record=32, label=0, path="short.mp4", **_FIELDS
    )
    assert len(raws) == 4
    shard = str(tmp_path / "d-train.array_record-00000-of-00001")
    _write_shard(shard, raws)
    if with_sidecar:  # What data_prep writes; without it the shard's records are scanned.
        os.makedirs(tmp_path / records.SIDECAR_DIR)
        sidecar = {
            "options": {"frames_per_record": 32},
            "videos": [{"num_frames": 70}, {"num_frames": 5}],
        }
        with open(records.sidecar_file(shard), "w") as f:
            json.dump(sidecar, f)
    source = records.VideoSource([shard])
    assert len(source) == 2
    reads = []
    source._records = _CountingReads(source._records, reads)
    video = source[0]
    assert (video.num_frames, video.label, video.path) == (70, 1, "long.mp4")
    assert reads == [0]
    assert video.frames[40] == long[40] and video.frames[63] == long[63]
    assert reads == [0, 1]  # Frames 32..63.
    assert video.frames[-1] == long[69] and video.frames[5] == long[5]
    assert reads == [0, 1, 2]
    assert list(video.frames) == long
    assert reads == [0, 1, 2]
    with pytest.raises(IndexError, match="frame 70 of a 70-frame video"):
        video.frames[70]
    assert list(source[1].frames) == short and reads[-1] == 3


class _CountingReads:
    def __init__(self, inner, reads: list[int]):
        self.inner, self.reads = inner, reads

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> bytes:
        self.reads.append(index)
        return self.inner[index]


def test_video_source_reads_schema_1_shards(tmp_path):
    """Shards converted before videos spanned records (no segment keys, no frames_per_record
    in the sidecar) read as a record per video."""
    frames = _jpegs(40)
    raw = records.encode_record(frames=frames, label=2, path="old.mp4", **_FIELDS)
    example = tf_example_pb2.Example.FromString(raw)
    for key in (records.FIRST_FRAME, records.VIDEO_NUM_FRAMES):
        del example.features.feature[key]
    shard = str(tmp_path / "d-train.array_record-00000-of-00001")
    _write_shard(shard, [example.SerializeToString()] * 2)
    os.makedirs(tmp_path / records.SIDECAR_DIR)
    with open(records.sidecar_file(shard), "w") as f:
        json.dump({"options": {"fps": None}, "videos": [{"num_frames": 40}] * 2}, f)
    source = records.VideoSource([shard])
    assert len(source) == 2
    assert list(source[1].frames) == frames and source[1].label == 2


def test_video_source_refuses_sidecars_that_do_not_match(tmp_path):
    raws = records.encode_video_records(
        frames=_jpegs(40), frames_per_record=16, label=0, path="a.mp4", **_FIELDS
    )
    shard = str(tmp_path / "d-train.array_record-00000-of-00001")
    _write_shard(shard, raws)
    os.makedirs(tmp_path / records.SIDECAR_DIR)

    def sidecar(per_record: int, videos: list[int]) -> None:
        with open(records.sidecar_file(shard), "w") as f:
            json.dump(
                {
                    "options": {"frames_per_record": per_record},
                    "videos": [{"num_frames": n} for n in videos],
                },
                f,
            )

    sidecar(16, [40, 8])
    with pytest.raises(ValueError, match=r"the sidecars list 4 records, the 1 shards hold 3"):
        records.VideoSource([shard])
    sidecar(16, [16, 24])  # 1 + 2 records: the second "video" starts mid-video.
    with pytest.raises(ValueError, match=r"a\.mp4: record 1 starts at frame 16"):
        records.VideoSource([shard])[1]
