"""Smoke runs of the input-pipeline and data-prep benchmarks on one small real video.

Not speed assertions: each loader / tool runs a few batches or one conversion, and the JSON the
scripts print must carry every figure, positive, plus what the numbers say they are.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from benchmarks import data_prep, input_pipeline, report
from tests.real_videos import real_video_path


def test_input_pipeline_measures_every_loader(tmp_path, capsys):
    video = real_video_path("carphone_pristine.mp4")  # 176x144, 120 frames.
    data = input_pipeline.build_data(
        str(tmp_path), [video], copies=2, records_in_shards=6, frames=4, stride=2, crop=32
    )
    # The shards repeat the two converted records; the frame folders hold their JPEGs.
    assert len(data.videos) == len(data.frame_folders) == 2
    for shard_dir, compression in (("shards", "uncompressed"), ("zstd_shards", "zstd:3")):
        paths = sorted((tmp_path / shard_dir).glob("*.array_record-*"))
        assert paths != []
        for path in paths:
            assert compression in ArrayRecordReader(str(path)).writer_options_string()
    # Compressed or not, the same records make the same batches.
    batches = [
        next(iter(input_pipeline.make_loader(loader, data, batch=2, workers=0)))
        for loader in ("vssl_jax", "vssl_jax_zstd")
    ]
    np.testing.assert_array_equal(batches[0]["video"], batches[1]["video"])
    payload = input_pipeline.benchmark(
        data,
        loaders=list(input_pipeline.LOADERS),
        workers=[0],
        batch=2,
        seconds=0.05,
        warmup=0.0,
        rounds=1,
        isolated=False,
        log=lambda line: None,
    )
    report.emit_json("-", payload)
    printed = json.loads(capsys.readouterr().out)
    per_core = printed["clips_per_s_per_core"]
    assert set(per_core) == set(input_pipeline.LOADERS)
    assert all(value > 0 for value in per_core.values())
    assert all(value > 0 for value in printed["clips_per_cpu_s"].values())
    assert printed["machine"]["cpus"] >= 1
    by_loader = {r["loader"]: r for r in printed["results"]}
    # Every loader hands out the same batch shape; only vssl_jax leaves normalising to the device.
    for loader, result in by_loader.items():
        assert result["shape"] == [2, 4, 32, 32, 3]
        assert result["dtype"] == (
            "uint8" if loader in ("vssl_jax", "vssl_jax_zstd", "decode_limit_uint8") else "float32"
        )
        assert 0.0 <= result["others_cpu_share"] <= 1.0
    assert printed["targets"]["clips_per_s_per_core"]["target"] == 250.0


def test_normalizer_matches_the_device_formula():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (2, 3, 5, 7, 3), dtype=np.uint8)
    want = (video / 255.0 - np.array(input_pipeline.MEAN)) / np.array(input_pipeline.STD)
    got = input_pipeline.Normalizer(7)(video)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_decode_limit_makes_the_same_crops_as_decoding_whole_frames(tmp_path):
    data = input_pipeline.build_data(
        str(tmp_path),
        [real_video_path("carphone_pristine.mp4")],
        copies=1,
        records_in_shards=1,
        frames=3,
        stride=1,
        crop=32,
    )
    loader = input_pipeline.DecodeLimit(data, batch=4, normalize=False, seed=1)
    batch = next(iter(loader))["video"]
    # Replay the loader's random draws and cut the clips from whole decoded frames.
    import simplejpeg

    from vssl_jax.data import sampling

    frames, _, _ = loader.videos[0]
    rng = np.random.default_rng(1)
    for clip in batch:
        rng.integers(1)  # The video choice (one video).
        indices = sampling.random_clip_indices(len(frames), 3, 1, rng)
        top, left = rng.integers(0, 128 - 32 + 1), rng.integers(0, 156 - 32 + 1)
        mirror = rng.random() < 0.5
        whole = np.stack([simplejpeg.decode_jpeg(frames[i]) for i in indices])
        want = whole[:, top : top + 32, left : left + 32]
        np.testing.assert_array_equal(clip, want[:, :, ::-1] if mirror else want)


def test_data_prep_measures_both_tools(tmp_path, capsys):
    tools = data_prep.find_ffmpeg()
    video = real_video_path("carphone_pristine.mp4")
    payload = data_prep.benchmark(
        [video, video],
        str(tmp_path),
        cores=[1],
        short_side=128,
        rounds=1,
        ffmpeg=tools,
        log=lambda line: None,
    )
    report.emit_json("-", payload)
    printed = json.loads(capsys.readouterr().out)
    assert printed["source_frames"] == 240
    expected = {"vssl_jax", "ffmpeg"} if tools else {"vssl_jax"}
    assert set(printed["frames_per_s_per_core"]) == expected
    assert all(value > 0 for value in printed["frames_per_s_per_core"].values())
    by_tool = {r["tool"]: r for r in printed["results"]}
    assert by_tool["vssl_jax"]["output_bytes"] > 0
    if tools:
        # One JPEG per source frame, in one folder per video.
        assert by_tool["ffmpeg"]["output_files"] == 240
        assert printed["vs_ffmpeg"]["wall"] > 0
    assert not (tmp_path / "output").exists()  # Removed after measuring.


def test_fused_decode_crop_mirror_equals_decoding_whole_frames():
    # The training pipeline's fast path (what the input-pipeline benchmark times) against a
    # NumPy reference: decode every whole frame, cut the window, reverse the columns.
    import simplejpeg

    from vssl_jax.data import transforms

    rng = np.random.default_rng(0)
    frames = [
        simplejpeg.encode_jpeg(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8), 90)
        for _ in range(5)
    ]
    indices = np.array([3, 0, 3, 4])  # A repeated frame, as short videos loop.
    mirrored = 0
    for seed in range(12):
        got = transforms.decode_random_crop(frames, indices, 16, np.random.default_rng(seed), True)
        draws = np.random.default_rng(seed)
        top, left = draws.integers(0, 24 - 16 + 1), draws.integers(0, 40 - 16 + 1)
        mirror = draws.random() < 0.5
        whole = np.stack([simplejpeg.decode_jpeg(frames[i]) for i in indices])
        want = whole[:, top : top + 16, left : left + 16]
        np.testing.assert_array_equal(got, want[:, :, ::-1] if mirror else want)
        assert got.flags.c_contiguous and got.dtype == np.uint8
        mirrored += mirror
    assert 0 < mirrored < 12  # Both branches ran.
    with pytest.raises(transforms.ClipError, match="v.mp4: frames are 24x40, smaller than"):
        transforms.decode_random_crop(frames, indices, 32, rng, True, "v.mp4")
    with pytest.raises(transforms.ClipError, match="v.mp4: frame 1 cannot be decoded"):
        transforms.decode_random_crop([frames[0], b"junk"], [0, 1], 16, rng, False, "v.mp4")


def test_ssl_transfer_pretrains_on_unlabelled_videos_and_fine_tunes_on_the_labelled_ones(tmp_path):
    from benchmarks import ssl_transfer

    def demo_options(run: str) -> dict:
        with open(tmp_path / run / "config.json") as f:
            return json.load(f)["data"]["demo"]

    results = ssl_transfer.run_comparison(
        ["videomae"],
        [0],
        variant="smoke",
        pretrain_steps=1,
        finetune_steps=1,
        workdir=str(tmp_path),
        unlabelled_per_class=18,
    )
    assert len(results["videomae"]) == 1
    assert demo_options("videomae-pretrain-0")["train_per_class"] == 18
    with open(tmp_path / "videomae-pretrain-0" / "eval_results.json") as f:
        assert json.load(f)["num_train"] == 18 * 6  # The kNN bank: every pretraining video.
    for run in ("videomae-finetune-0", "videomae-random-0"):
        assert demo_options(run)["train_per_class"] == 16
        assert (
            demo_options(run)["val_per_class"]
            == demo_options("videomae-pretrain-0")["val_per_class"]
        )

    with pytest.raises(ValueError, match="--unlabelled-per-class 15: fewer than the 16 labelled"):
        ssl_transfer.run_comparison(
            ["videomae"],
            [0],
            variant="smoke",
            pretrain_steps=1,
            finetune_steps=1,
            workdir=str(tmp_path / "refused"),
            unlabelled_per_class=15,
        )
