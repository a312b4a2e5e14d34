"""The record schema read back by every consumer: parse_record, TFDS, and TFRecord readers."""

from __future__ import annotations

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
    reader = ArrayRecordReader(path)
    raw = reader.read_all()
    reader.close()
    return [records.parse_record(r) for r in raw]


def _masked_crc(data: bytes) -> int:
    # TFRecord's CRC masking, written out independently of the writer.
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_tfds_reads_converted_shards(converted):
    import tensorflow_datasets as tfds

    out, manifest = converted
    parsed = _read_records(os.path.join(out, manifest["splits"]["train"]["shards"][0]))
    # Sorted by path: phone/carphone_pristine.mp4, then street/bikes.mp4.
    assert [r.path.rsplit("/", 1)[1] for r in parsed] == ["carphone_pristine.mp4", "bikes.mp4"]

    builder = tfds.builder_from_directory(out)
    assert builder.info.features["label"].names == ["phone", "street"]
    source = builder.as_data_source("train")
    assert len(source) == 2
    for i, record in enumerate(parsed):
        example = source[i]
        assert example["label"] == record.label
        assert example["label_text"].decode() == record.label_text
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

    array_records = _read_records(os.path.join(out, manifest["splits"]["train"]["shards"][0]))
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
    record = _read_records(os.path.join(out, manifest["splits"]["train"]["shards"][0]))[1]
    frames = list(video_io.iter_frames(record.path, fps=5, short_side=32))
    assert len(frames) == record.num_frames
    for jpeg, (_, rgb) in zip(record.frames, frames, strict=True):
        decoded = simplejpeg.decode_jpeg(jpeg, colorspace="RGB").astype(np.float32)
        # JPEG at quality 90 of the same picture: PSNR well above 30 dB (a wrong frame is ~15).
        mse = np.mean((decoded - rgb) ** 2)
        assert 10 * np.log10(255**2 / mse) > 30
