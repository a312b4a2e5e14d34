"""Orbax checkpoints of the whole training state together with the grain iterator.

A checkpoint at step N holds the state after N updates and the iterator positioned at batch N+1,
so a restarted run continues with exactly the batches (and losses) an uninterrupted run sees.
Orbax writes each step to a temporary directory and renames it when complete, so a run killed
mid-save never leaves a checkpoint that `latest_step` would pick. A save that fails in Orbax's
background thread (a full disk) is raised at the next `save` or at `close`.
"""

from __future__ import annotations

import errno
import os
import traceback
from typing import NoReturn

import grain
import orbax.checkpoint as ocp
from absl import logging


class DiskFullError(OSError, ValueError):
    """The disk under the checkpoint directory filled up during a save.

    Also a ValueError (as `io.UnsupportedOperation` is), so entry points that report ValueErrors
    as the user's to fix print its one-line message instead of a traceback.
    """


_NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


def _is_disk_full(error: BaseException) -> bool:
    """Whether `error` or an exception it was raised from is ENOSPC.

    Python writes (Orbax's metadata, grain's iterator state) raise OSError(ENOSPC); tensorstore's
    array writes raise a ValueError whose text carries the OS message and code.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if _NO_SPACE in str(error) or f"os_error_code='{errno.ENOSPC}'" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


class Checkpointer:
    def __init__(self, workdir: str, *, max_to_keep: int, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        # The step whose save may still be running in Orbax's background thread.
        self._unfinished_step: int | None = None
        self._failed = False
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
        """Starts saving `state` (and the iterator's position) as checkpoint `step`.

        Raises DiskFullError when this save, or the previous one still running in the
        background, ran out of disk space.
        """
        self._wait(self._unfinished_step)
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        try:
            self.manager.save(step, args=ocp.args.Composite(**items))
        except Exception as e:
            self._raise_failure(step, e)
        self._unfinished_step = step

    def _wait(self, step: int | None) -> None:
        """Waits for the background save of `step`; its failure is raised here, not lost."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            self._raise_failure(step, e)
        self._unfinished_step = None

    def _raise_failure(self, step: int | None, error: Exception) -> NoReturn:
        """Raises `error` of saving `step`, as a one-line DiskFullError when the disk is full."""
        self._failed = True
        if not _is_disk_full(error):
            raise error
        intact = sorted(s for s in self.manager.all_steps() if s != step)
        if intact:
            kept = f"earlier checkpoints ({', '.join(map(str, intact))}) are intact"
            advice = f"free space, then run again to resume from step {intact[-1]}"
        else:
            kept, advice = "no earlier checkpoint exists", "free space, then run again"
        raise DiskFullError(
            f"checkpoint directory {self.directory}: disk full ({_NO_SPACE}) while saving "
            f"step {step}; {kept}; {advice}"
        ) from error

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
                # Where it was raised, so that a library fault is told apart from bad files.
                where = traceback.extract_tb(e.__traceback__)[-1]
                cause = (
                    f"{type(e).__name__} at {os.path.basename(where.filename)}:{where.lineno}: "
                    + " ".join(str(e).split())[:300]
                )
                failures.append(f"{self.directory}/{step}: {cause}")
                logging.warning("Checkpoint %s/%d is unreadable (%s)", self.directory, step, cause)
        raise ValueError(f"no readable checkpoint; newest failure: {failures[0]}")

    def close(self) -> None:
        """Waits for the last save and closes the manager. After a failed save (already raised
        to the caller) Orbax would only raise the same failure again, so closing stops there."""
        if self._failed:
            return
        self._wait(self._unfinished_step)
        self.manager.close()
