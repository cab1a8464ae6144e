"""Orbax checkpoints that survive preemption: the latest N steps plus the best by eval mIoU, and a stop signal.

Layout under WORKDIR/checkpoints/:
    latest/<step>/{state,data,meta}   the last `keep` saves (interval, preemption, end of training)
    best/<step>/{state,data,meta}     the save with the highest eval mIoU
`state` holds params, optimiser state, BatchNorm statistics, step and RNG (StandardSave); `data` the input
iterator's state; `meta` the label map and the config (JSON). Orbax writes into a temporary folder and renames it
when complete, so a process killed mid-save leaves nothing that restore would pick up.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from streetseg_jax import atomic
from streetseg_jax.cli import absl_warnings_off


class SaveError(OSError):
    """A checkpoint that could not be written (a full disk, a file size limit, a folder that turned read-only)."""


class Checkpoints:
    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True, read_only: bool = False):
        """`read_only`: to restore, never to save: nothing is created or written in the work directory (load_model
        made checkpoints/best and latest in a folder that was no run, and failed on a run it could not write to)."""
        root = self.root = Path(workdir).absolute() / "checkpoints"
        self._read_only = read_only
        # A training run's lock file (run._take_lock): gone from the path, the work directory moved or was removed.
        self._run_lock = root.parent / ".lock" if not read_only and (root.parent / ".lock").exists() else None
        # A step to delete is renamed into TRASH first (one rename, whole or not at all), then removed by us: a kill
        # during orbax's own deletion (parallel, file by file) left a step listed by every command, loadable by none.
        options = dict(create=not read_only, enable_async_checkpointing=async_save, read_only=read_only,
                       todelete_subdir=TRASH, **({"save_interval_steps": 0} if read_only else {}))
        with absl_warnings_off():       # read_only: a warning that the folder is read-only, each time
            self.latest = ocp.CheckpointManager(
                root / "latest", options=ocp.CheckpointManagerOptions(max_to_keep=keep, **options),
                item_handlers=_handlers())
            self.best = ocp.CheckpointManager(
                root / "best", options=ocp.CheckpointManagerOptions(
                    max_to_keep=1, best_fn=lambda m: m["miou"], best_mode="max", **options),
                item_handlers=_handlers())
        self._best_miou = self._saved_best_miou()

    def _saved_best_miou(self) -> float:
        return max((m["miou"] for m in map(self.best.metrics, self.best.all_steps()) if m), default=float("-inf"))

    def drop_best_after(self, step: int) -> list[int]:
        """Remove the best checkpoints of steps after `step`, and the mIoU they set to beat; returns their steps. A
        resume from `step` trains those steps again, so such weights are of training that is thrown away (killed
        after a new best and before the next save): evaluate and predict took them, while the run's history and
        compare named another best."""
        dropped = [s for s in self.best.all_steps() if s > step]
        for s in dropped:
            self.best.delete(s)
        self._best_miou = self._saved_best_miou()
        return dropped

    def _one_save_at_a_time(self) -> None:
        # Across processes, orbax's background commits meet at barriers; two managers committing at once let the
        # processes reach them in different orders (seen as a shutdown-barrier timeout under load).
        if jax.process_count() > 1:
            self.wait()

    def save(self, step: int, state, data_state: dict, meta: dict) -> None:
        if step in self.latest.all_steps():
            return  # saved already: a stop signal that came right after this step's periodic save
        self._one_save_at_a_time()
        with self._saving():
            self._check_not_moved()
            self.latest.save(step, args=_save_args(state, data_state, meta), force=True)

    def save_best(self, step: int, state, data_state: dict, meta: dict, miou: float) -> bool:
        """Keep this step as the best one if its mIoU beats the best so far; returns whether it did. A step kept
        already is not saved again: its mIoU, logged and sent to every process as a float32, came back above
        itself, and orbax refused the save ("already exists"), every time the run was resumed."""
        if miou <= self._best_miou or step in self.best.all_steps():
            return False
        self._one_save_at_a_time()
        with self._saving():
            self._check_not_moved()
            self.best.save(step, args=_save_args(state, data_state, meta), metrics={"miou": float(miou)}, force=True)
        self._best_miou = float(miou)
        return True

    def remove_unfinished(self) -> list[str]:
        """Remove the folders of saves killed on the way (orbax's *.orbax-checkpoint-tmp*, as large as a checkpoint),
        the steps renamed to be deleted (TRASH), and steps that lack one of their items (best/3 holding state alone,
        as a deletion killed on the way left it before deletions were renames; in a run of one process), listed by
        every command and loadable by none; returns the last, as latest/N and best/N. Only for the run that holds
        the work directory, since another run's save under way looks the same (orbax's own cleanup would also run
        in predict and report)."""
        for folder in self.root.glob("*/*.orbax-checkpoint-tmp*"):     # latest/ and best/
            shutil.rmtree(folder, ignore_errors=True)
        self._empty_trash()
        if jax.process_count() > 1:     # the other processes' managers would still list them: left as they are
            return []
        cut = [folder for folder in self.root.glob("*/*") if folder.name.isdigit() and folder.is_dir()
               and not all((folder / item).exists() for item in _ITEMS)]
        for folder in cut:
            shutil.rmtree(folder, ignore_errors=True)
        cut = [folder for folder in cut if not folder.exists()]
        if cut:
            self.latest.reload()
            self.best.reload()
            self._best_miou = self._saved_best_miou()
        return [f"{folder.parent.name}/{folder.name}" for folder in cut]

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, which: str | int, state_template):
        """(state, data_state, meta) from 'latest', 'best' or a step number; state restored onto the template's
        shapes and shardings."""
        manager, step = self._resolve(which)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state_template),
            data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["data"], restored["meta"]

    def restore_as_saved(self, which: str | int) -> dict:
        """The saved state in its own structure, as arrays on this process's first device whatever devices wrote
        it (for reading another run's weights, where no template of the right shape exists)."""
        manager, step = self._resolve(which)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              manager.item_metadata(step)["state"])
        return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]

    def read_meta(self, which: str | int = "latest") -> dict:
        manager, step = self._resolve(which)
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def step_of(self, which: str | int) -> int:
        """The step of 'best', 'latest' or a step number; FileNotFoundError where there is no such checkpoint."""
        return self._resolve(which)[1]

    def _resolve(self, which: str | int):
        if which == "best":
            manager, step = self.best, self.best.latest_step()
        elif which == "latest":
            manager, step = self.latest, self.latest.latest_step()
        else:
            step = int(which)
            manager = self.latest if step in self.latest.all_steps() else self.best
            if step not in manager.all_steps():
                raise FileNotFoundError(f"no checkpoint for step {step}; have {self.all_steps()}")
        if step is None:
            raise FileNotFoundError(f"no {which} checkpoint in {self.latest.directory.parent}")
        return manager, step

    def all_steps(self) -> list[int]:
        return sorted(set(self.latest.all_steps()) | set(self.best.all_steps()))

    def wait(self) -> None:
        with self._saving():
            self.latest.wait_until_finished()
            self.best.wait_until_finished()
        if jax.process_index() == 0 and not self._read_only:
            self._empty_trash()

    def _empty_trash(self) -> None:
        """Remove the steps orbax renamed into TRASH to delete them (a kill here leaves them there, listed by no
        command, for the next run to remove)."""
        for folder in self.root.glob(f"*/{TRASH}"):
            shutil.rmtree(folder, ignore_errors=True)

    def _check_not_moved(self) -> None:
        """No save into a work directory moved or removed since the run started: orbax made the old path again,
        and the run went on into a new folder there."""
        if self._run_lock is not None and not self._run_lock.exists():
            raise OSError("the work directory was moved or removed while the run trained (its .lock is no longer "
                          "there): resume the run where it is now")

    @contextlib.contextmanager
    def _saving(self):
        try:
            yield
        except (OSError, ValueError) as e:      # orbax reports a failed write as a ValueError
            last = self.latest.latest_step()
            raise SaveError(f"could not save a checkpoint in {self.root}: {_why(e)}; " + (
                f"the last whole one is step {last}" if last is not None else "none is whole yet")) from e

    def close(self) -> None:
        """Close both managers; a background save whose failure orbax reports only now (seen once in CI: an
        OCDBT write past the size limit, after every wait had passed) is a SaveError as at a wait."""
        try:
            with self._saving():
                self.latest.close()
        finally:
            with self._saving():
                self.best.close()


def _why(error: Exception) -> str:
    """The operating system's reason inside orbax's long message ("... File too large [os_error_code='27']")."""
    code = re.search(r"os_error_code='?(\d+)", str(error))
    errno = int(code.group(1)) if code else getattr(error, "errno", None)
    if errno:
        return os.strerror(errno) + (" (a full disk?)" if errno in atomic.NO_ROOM else "")
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


_ITEMS = ("state", "data", "meta")      # what every save holds (_save_args)
TRASH = ".deleting"     # latest/ and best/ steps to delete are renamed into LATEST_OR_BEST/.deleting/ first


def _handlers() -> dict:
    # Registered up front (not inferred from the first save or restore) so that item_metadata can read the state's
    # shapes before anything is restored.
    return {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler()}


def _save_args(state, data_state: dict, meta: dict):
    return ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
                              meta=ocp.args.JsonSave(meta))


class StopSignal:
    """Turns SIGTERM / SIGINT (a spot preemption, a Ctrl-C) into a flag the training loop checks between steps.

    Under `jax.distributed`, JAX's preemption service owns SIGTERM and `should_stop(step)` asks orbax's sync point,
    so every process stops (and saves) at the same step. A single process handles the signals itself.
    """

    AGREE_EVERY = 10

    def __init__(self):
        self.received: str | None = None
        self._distributed = jax.process_count() > 1
        if threading.current_thread() is not threading.main_thread():
            return
        signals = (signal.SIGINT,) if self._distributed else (signal.SIGINT, signal.SIGTERM)
        self._previous = {s: signal.signal(s, self._handle) for s in signals}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def should_stop(self, step: int) -> bool:
        if self._distributed:
            if _reached_preemption(step):
                self.received = self.received or "SIGTERM"
                return True
            # A Ctrl-C on one process: agree on it (every few steps, same steps everywhere), so no process
            # waits for the others forever.
            if step % self.AGREE_EVERY == 0:
                if not multihost_utils.process_allgather(int(self.received is not None)).max():
                    return False
                self.received = self.received or "SIGINT on another process"    # what this one was told
                return True
            return False
        return self.received is not None

    def restore_handlers(self) -> None:
        for s, handler in getattr(self, "_previous", {}).items():
            signal.signal(s, handler)


def _reached_preemption(step: int) -> bool:
    try:
        return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # the preemption service is disabled
        return False
