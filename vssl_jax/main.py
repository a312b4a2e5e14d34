"""Entry point: `python -m vssl_jax.main --config=configs/X.py[:variant] --workdir=DIR`.

Dispatches on `config.stage`. A mistake of the user's (a bad config value, missing data, a
diverged run) ends with one line `error: ...` and exit status 2; the full traceback goes to
`workdir/error.log` for whoever debugs it.
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import re
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
DRY_RUN = flags.DEFINE_bool(
    "dry_run",
    False,
    "Print the resolved config, devices, batch split, parameters, GFLOPs per clip and the "
    "compiled train step's memory, then exit without training.",
)
RUNLOCAL = flags.DEFINE_bool(
    "runlocal",
    False,
    "Shrink the config to seconds on a CPU (tiny demo data, width 4, 2 steps; configs/runlocal.py).",
)
COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    "",
    "Multi-process runs without SLURM or Cloud TPU: host:port of process 0 (or set "
    "JAX_COORDINATOR_ADDRESS); with --num_processes and --process_id. See docs/scaling.md.",
)
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 0, "With --coordinator_address: how many processes."
)
PROCESS_ID = flags.DEFINE_integer(
    "process_id", -1, "With --coordinator_address: this process's index, 0..num_processes-1."
)
flags.mark_flags_as_required(["config"])

# Errors that carry a message meant for the user; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, KeyError)


def run(config, workdir: str) -> dict:
    """Runs `config.stage` in `workdir`; returns its results."""
    import jax

    from vssl_jax import evaluate, knn, models, objectives, train

    # Fail on misspelt names and contradictory settings before any data is built or read.
    models.get(config.model.name)
    objectives.get(config.objective.name)
    stages = {
        "train": train.train_and_evaluate,
        "pretrain": train.train_and_evaluate,
        "finetune": train.train_and_evaluate,
        "linear_probe": train.train_and_evaluate,
        "knn": knn.knn_stage,
        "eval": evaluate.evaluate_checkpoint,
        "features": evaluate.extract_features,
    }
    if config.stage not in stages:
        raise ValueError(f"config.stage: unknown stage '{config.stage}' ({', '.join(stages)})")
    if config.stage == "linear_probe" and not (
        config.objective.name == "linear_probe" and config.optimizer.trainable
    ):
        raise ValueError(
            "stage linear_probe needs objective.name='linear_probe' and optimizer.trainable="
            "'^head/' (configs/ssl.py's derived_config sets both)"
        )
    if config.get("compilation_cache", True):
        use_compilation_cache()
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    return stages[config.stage](config, workdir)


def use_compilation_cache() -> str:
    """Turns on JAX's persistent compilation cache, in `$VSSL_JAX_CACHE/xla` unless the user
    named a directory (JAX_COMPILATION_CACHE_DIR); returns the directory. Executables that took
    over a second to compile are kept: a resumed run skips recompiling its train step (the
    multibranch smoke run: 83 s, 37 s the second time)."""
    import jax

    from vssl_jax.datasets import default_cache_dir

    directory = jax.config.jax_compilation_cache_dir
    if not directory:
        directory = os.path.join(default_cache_dir(), "xla")
        jax.config.update("jax_compilation_cache_dir", directory)
    return directory


class _QuietLibraries(std_logging.Filter):
    """Drops INFO chatter of libraries that log every save step (Orbax) from the console."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno > std_logging.INFO or "/orbax/" not in record.pathname


def _last_line(error: BaseException) -> str:
    """The line of a (possibly nested, multi-line) error message that says what went wrong."""
    lines = [line.strip() for line in str(error).replace("\\n", "\n").splitlines()]
    return next((line for line in reversed(lines) if line), type(error).__name__)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with config mistakes (unknown keys, wrong types, bad files) as one line."""
    try:
        remaining = flags.FLAGS(argv)
        CONFIG.value.to_dict()  # Loads the config file now, so its errors surface here.
        return remaining
    except (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError) as e:
        message = _last_line(e)
        unknown_key = re.match(r"""^'\\?'?(\w+)""", str(e))
        if isinstance(e, AttributeError | KeyError) and unknown_key:
            # ConfigDict names only the missing key; say which argument it came from.
            key = unknown_key.group(1)
            culprit = next(
                (
                    a
                    for a in argv
                    if a.startswith("--config.") and re.search(rf"\.{key}(=|\.|$)", a)
                ),
                "a --config override",
            )
            message = f"unknown config key '{key}' in {culprit} ({message.strip(chr(39))})"
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def configure_logging() -> None:
    """INFO to the console, without the per-save chatter of Orbax."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_QuietLibraries())


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    configure_logging()
    from vssl_jax import distributed

    # Before anything touches the devices (the dry run lists them; JAX then refuses to join).
    try:
        distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    config = CONFIG.value
    if RUNLOCAL.value:
        from configs.runlocal import shrink

        config = shrink(config)
    workdir = WORKDIR.value
    if DRY_RUN.value:
        from vssl_jax import dry_run

        try:
            dry_run.print_plan(config)
        except USER_ERRORS as e:
            print(f"error: {_last_line(e)}", file=sys.stderr)
            sys.exit(2)
        return
    if not workdir:
        print(
            "error: --workdir is required (where checkpoints, logs and results go)", file=sys.stderr
        )
        sys.exit(2)
    try:
        results = run(config, workdir)
    except USER_ERRORS as e:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "error.log"), "w") as f:
            traceback.print_exc(file=f)
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        from vssl_jax.checkpoint import DiskFullError

        if isinstance(e, DiskFullError):
            # The checkpointer's background threads still hold the failed write; at interpreter
            # exit they print their own tracebacks after this line. Nothing is left to save.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        sys.exit(2)
    if "top1" in results:
        summary = {k: results[k] for k in ("top1", "top5", "mean_class_accuracy", "num_examples")}
        print(f"final {results['split']} accuracy: {json.dumps(summary)}")
    elif "knn_top1" in results:
        summary = {k: v for k, v in results.items() if k.startswith(("recall_at", "knn_top1"))}
        print(f"final {results['split']} nearest neighbours: {json.dumps(summary)}")
    else:
        print(
            f"features of {results['num_examples']} {results['split']} videos "
            f"(dim {results['feature_dim']}) written to {workdir}"
        )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
