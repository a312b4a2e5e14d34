"""Orbax checkpoints of the whole training state together with the grain iterator.

A checkpoint at step N holds the state after N updates and the iterator positioned at batch N+1,
so a restarted run continues with exactly the batches (and losses) an uninterrupted run sees.
Orbax writes each step to a temporary directory and renames it when complete, so a run killed
mid-save never leaves a checkpoint that `latest_step` would pick.
"""

from __future__ import annotations

import os

import grain
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
    def __init__(self, workdir: str, *, max_to_keep: int, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=True,
                enable_async_checkpointing=async_save,
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator=None) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items))

    def restore(self, abstract_state, data_iterator=None):
        """Restores the newest readable checkpoint into the shapes and shardings of
        `abstract_state` (and, with `data_iterator`, its position in place).

        A checkpoint that cannot be read (files deleted or damaged after it was written) is
        reported and skipped for the one before it; when none is readable, a one-line error
        names the newest and why it failed.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        failures = []
        for step in steps:
            try:
                return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
            except Exception as e:  # Any unreadable checkpoint: report it, try an older one.
                cause = " ".join(str(e).split())[:300] or type(e).__name__
                failures.append(f"{self.directory}/{step}: {cause}")
                logging.warning("Checkpoint %s/%d is unreadable (%s)", self.directory, step, cause)
        raise ValueError(f"no readable checkpoint; newest failure: {failures[0]}")

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
