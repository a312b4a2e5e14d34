"""`python -m data_prep convert ... --runner=R`: the same conversion as an Apache Beam pipeline.

The launching process plans the conversion exactly as the local path does
(`convert.plan_conversion`: label map, split plans, the shards still to write), writes one line
per shard still to write into a work list beside the sidecars, and runs the pipeline

    ReadFromText(work list) -> decode the job -> Reshuffle -> write_shard_job

so each shard is written by one worker, converting its videos in order with the same per-video
code and writing the same ArrayRecord (and TFRecord) bytes and sidecar as `convert` would. When
the pipeline has finished, the launcher rebuilds manifest.json and the TFDS metadata from the
sidecars (`convert.finish_conversion`). A re-run, with Beam or without, redoes only the shards
that are not complete.

The work list is a file rather than an in-memory `Create` because a runner ships a `Create`'s
elements inside the pipeline definition, which Kinetics-sized listings (hundreds of thousands of
videos) make too large; a text file is split between workers like any other input.

Every worker opens the video paths and the output folder as local paths, so the launcher and all
workers must see them at the same paths: one machine (DirectRunner, PrismRunner), or a cluster
with a shared filesystem (Flink or Spark over NFS, Lustre...). Dataflow's workers have no such
filesystem (they cannot mount one) and the listing and shard writers take local paths only, so
DataflowRunner is refused with that reason rather than failing on its workers. Beam itself is an
optional extra: `pip install -e ".[beam]"`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pickle
import secrets
import time
from collections.abc import Sequence

from data_prep import convert, manifest
from data_prep.manifest import ConvertError
from data_prep.sources import Listing

# Runners `--runner` accepts: Beam's local ones and engines whose workers can share a filesystem.
RUNNERS = ("DirectRunner", "PrismRunner", "PortableRunner", "FlinkRunner", "SparkRunner")


def encode_job(job: convert.ShardJob, key: bytes) -> str:
    """One line of the work list: an HMAC-SHA256 of the pickled job under this launch's `key`,
    then the pickled job in base64 (no newline in either)."""
    payload = pickle.dumps(job)
    return (
        f"{hmac.new(key, payload, hashlib.sha256).hexdigest()} {base64.b64encode(payload).decode()}"
    )


def decode_job(line: str, key: bytes) -> convert.ShardJob:
    """The job of a work-list line, unpickled only if its HMAC proves this launch wrote it: the
    file sits on disk while the pipeline runs, and a pickle from anyone else could run code."""
    digest, _, encoded = line.partition(" ")
    payload = base64.b64decode(encoded)
    expected = hmac.new(key, payload, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(digest, expected):
        raise ConvertError("Beam work list: a line was not written by this launch; refusing it")
    return pickle.loads(payload)


def convert_with_beam(
    listing: Listing,
    output_dir: str,
    *,
    runner: str,
    pipeline_args: Sequence[str] = (),
    decode_timeout: float | None = None,
    show_progress: bool = True,
    **plan_options,
) -> dict:
    """Converts the listed videos into shards in `output_dir` on Apache Beam; returns the manifest.

    `plan_options` are `convert.plan_conversion`'s (fps, short_side, jpeg_quality,
    videos_per_shard, tfrecord, dataset_name, source_fps); the output equals `convert`'s with
    the same options. `pipeline_args` are Beam pipeline options (`--direct_num_workers=4`,
    `--flink_master=host:8081`, ...), passed through as they are.
    """
    if runner == "DataflowRunner":
        raise ConvertError(
            "--runner DataflowRunner: Dataflow workers cannot see the launcher's paths and "
            "gs:// paths are not supported yet; use FlinkRunner or SparkRunner on a cluster with "
            "a shared filesystem, or one large machine (docs/scaling.md)"
        )
    if runner not in RUNNERS:
        raise ConvertError(f"--runner {runner}: unknown runner (one of {', '.join(RUNNERS)})")
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise ConvertError(
            f"--runner {runner} needs Apache Beam: pip install -e '.[beam]'"
        ) from None
    began = time.monotonic()
    plan = convert.plan_conversion(
        listing, output_dir, decode_timeout=decode_timeout, **plan_options
    )
    if plan.jobs:
        work_list = os.path.join(
            output_dir, manifest.SIDECAR_DIR, f"{plan.dataset_name}.beam-work-{os.getpid()}.txt"
        )
        # The key travels inside the pipeline definition, never on disk.
        key = secrets.token_bytes(32)
        with open(work_list, "w", encoding="ascii") as f:
            f.writelines(f"{encode_job(job, key)}\n" for job in plan.jobs)
        try:
            options = PipelineOptions([f"--runner={runner}", *pipeline_args])
            with beam.Pipeline(options=options) as pipeline:
                _ = (
                    pipeline
                    | "WorkList" >> beam.io.ReadFromText(work_list)
                    | "Decode" >> beam.Map(decode_job, key)
                    # One shard per element; spreads them over the workers, whatever the
                    # text reader's split.
                    | "Spread" >> beam.Reshuffle()
                    | "WriteShard" >> beam.Map(convert.write_shard_job, decode_timeout)
                )
        finally:
            os.remove(work_list)
    return convert.finish_conversion(plan, began, show_progress)
