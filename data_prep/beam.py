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

Paths are local (every worker must see them at the same place: one machine, or a cluster with a
shared filesystem) or remote URLs that Beam's FileSystems serve (`gs://` with Beam's GCP extra,
`s3://`, ...; data_prep/storage.py): the launcher lists and plans through them, each worker
copies its videos from them and uploads its shards to them. Dataflow's workers share no
filesystem, so DataflowRunner takes remote paths only. Beam itself is an optional extra:
`pip install -e ".[beam]"` (and `apache-beam[gcp]` for Dataflow and gs://).
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
from typing import TYPE_CHECKING

from data_prep import convert, manifest, storage
from data_prep.manifest import ConvertError
from data_prep.sources import Listing

if TYPE_CHECKING:  # Beam is an optional extra, imported when a pipeline is wanted.
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

# Runners `--runner` accepts: Beam's local ones, engines whose workers can share a filesystem,
# and Dataflow (remote paths only).
RUNNERS = (
    "DirectRunner",
    "PrismRunner",
    "PortableRunner",
    "FlinkRunner",
    "SparkRunner",
    "DataflowRunner",
)


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


def _dataflow_client_missing() -> bool:
    """True when Beam's GCP extra (the Dataflow client and the gs:// FileSystem) is not installed."""
    try:
        import apache_beam.io.gcp.gcsfilesystem  # noqa: F401
        import apache_beam.runners.dataflow.internal.apiclient  # noqa: F401
    except ImportError:
        return True
    return False


def check_runner(
    runner: str, pipeline_args: Sequence[str] = (), paths: Sequence[tuple[str, str]] = ()
) -> PipelineOptions:
    """The pipeline options, once everything that can be checked before anything is listed or
    written is right; else a one-line ConvertError.

    Checks the runner's name, that Beam is installed, Beam's own validation of the pipeline
    options for that runner (what `beam.Pipeline` would refuse), and for DataflowRunner that
    every path in `paths` (`(what, path)` pairs, e.g. `("--output", ...)`) is remote and that
    Beam's GCP extra is installed. Also hands the options to Beam's FileSystems, so the launcher
    reaches remote storage with the same settings (credentials, endpoints) as the workers.
    """
    if runner not in RUNNERS:
        raise ConvertError(f"--runner {runner}: unknown runner (one of {', '.join(RUNNERS)})")
    try:
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.options.pipeline_options import PipelineOptions
        from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
        from apache_beam.runners.runner import create_runner
    except ImportError:
        raise ConvertError(
            f"--runner {runner} needs Apache Beam: pip install -e '.[beam]'"
        ) from None
    options = PipelineOptions([f"--runner={runner}", *pipeline_args])
    errors = PipelineOptionsValidator(options, create_runner(runner)).validate()
    if errors:
        problems = "; ".join(e.strip().rstrip(".") for e in errors)
        raise ConvertError(f"--runner {runner}: {problems}")
    if runner == "DataflowRunner":
        for what, path in paths:
            if not storage.is_remote(path):
                raise ConvertError(
                    f"--runner DataflowRunner: {what} {path} is a local path, which Dataflow's "
                    "workers cannot see; give a gs:// URL (docs/scaling.md)"
                )
        if _dataflow_client_missing():
            raise ConvertError(
                "--runner DataflowRunner needs Beam's GCP extra (the Dataflow client and gs:// "
                "paths): pip install 'apache-beam[gcp]'"
            )
    FileSystems.set_options(options)
    return options


def build_pipeline(
    options: PipelineOptions, work_list: str, key: bytes, decode_timeout: float | None
) -> beam.Pipeline:
    """The conversion pipeline over `work_list` (lines signed with `key`), built but not run:
    running it is submitting it."""
    import apache_beam as beam

    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | "WorkList" >> beam.io.ReadFromText(work_list)
        | "Decode" >> beam.Map(decode_job, key)
        # One shard per element; spreads them over the workers, whatever the text reader's
        # split.
        | "Spread" >> beam.Reshuffle()
        | "WriteShard" >> beam.Map(convert.write_shard_job, decode_timeout)
    )
    return pipeline


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
    videos_per_shard, frames_per_record, tfrecord, dataset_name, source_fps); the output equals
    `convert`'s with the same options. `pipeline_args` are Beam pipeline options
    (`--direct_num_workers=4`, `--flink_master=host:8081`, `--project=...`), passed through as
    they are. The videos and `output_dir` may be remote (`gs://...`); with DataflowRunner they
    must be.
    """
    local_video = next((s.path for s in listing.sources if not storage.is_remote(s.path)), None)
    paths = [("--output", output_dir)]
    if local_video is not None:
        paths.append(("the listed video", local_video))
    options = check_runner(runner, pipeline_args, paths)
    from apache_beam.runners.runner import PipelineState

    began = time.monotonic()
    plan = convert.plan_conversion(
        listing, output_dir, decode_timeout=decode_timeout, **plan_options
    )
    if plan.jobs:
        work_list = os.path.join(
            output_dir,
            manifest.SIDECAR_DIR,
            f"{plan.dataset_name}.beam-work-{secrets.token_hex(8)}.txt",
        )
        # The key travels inside the pipeline definition, never on disk.
        key = secrets.token_bytes(32)
        with storage.open_write(work_list, "w", encoding="ascii") as f:
            f.writelines(f"{encode_job(job, key)}\n" for job in plan.jobs)
        try:
            result = build_pipeline(options, work_list, key, decode_timeout).run()
            state = result.wait_until_finish()
        finally:
            storage.remove(work_list)
        if state != PipelineState.DONE:
            raise ConvertError(
                f"{output_dir}: the {runner} pipeline ended {state}; run the same command "
                "again to convert the shards it did not write"
            )
    return convert.finish_conversion(plan, began, show_progress)
