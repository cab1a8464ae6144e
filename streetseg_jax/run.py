"""A training run's surroundings: the work directory, its data, its checkpoints, its log and its end products.

`prepare_run` opens everything a run needs and refuses what cannot work (a missing dataset, a work directory
holding another model or label map); `RunSetup` saves and restores, and logs through `runlog.RunLog`;
`finish_run` draws the curves (drawn after every evaluation too) and a few prediction overlays.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from streetseg_jax import atomic, checkpoint, config_keys, resume, sharding
from streetseg_jax.cli import MAX_EXTRA_SCALE
from streetseg_jax.data import augment
from streetseg_jax.data.source import UnknownSplitError, dataset_dir, dataset_fingerprint, is_built, load_split
from streetseg_jax.labels.images import IMAGE_SUFFIXES
from streetseg_jax.labels.stats import class_pixel_counts, median_frequency_weights
from streetseg_jax.labels.label_map import LabelMap
from streetseg_jax.runlog import RunLog, devices
from streetseg_jax.visualize import (best_eval, devices_differ, eval_rows, flatten, hms, plot_curves, read_metrics,
                                     run_history, topology_text)

class RunError(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


@dataclasses.dataclass
class RunSetup:
    config: Any
    workdir: Path
    mesh: Any
    label_map: LabelMap
    train_source: Any
    eval_source: Any
    augment_cfg: augment.AugmentConfig
    class_weights: np.ndarray
    checkpoints: checkpoint.Checkpoints | None
    log: RunLog
    meta: dict
    lock: Any = None       # the work directory's lock file, held open while the run lives (process 0)

    # --- saving ---------------------------------------------------------------------------------------------------
    def save(self, step: int, state, data_iter) -> None:
        self.checkpoints.save(step, state, _iter_state(data_iter), self.meta)

    def save_best(self, step: int, state, data_iter, miou: float) -> None:
        if self.checkpoints.save_best(step, state, _iter_state(data_iter), self.meta, miou):
            self.log.say(f"step {step}: new best eval mIoU {miou:.4f}, saving it")

    def draw_curves(self) -> list[dict]:
        """curves.png from metrics.jsonl so far (process 0), after every evaluation: a long run can be looked at
        while it trains. Returns the run's history."""
        if not self.log.primary:
            return []
        records = read_metrics(self.log.path)
        try:
            plot_curves(records, self.workdir / "curves.png", f"run {self.workdir.name}")
        except OSError as e:    # a picture is not worth the run, nor the checkpoint saved after it
            self.log.say(f"warning: {e}; training goes on")
        return run_history(records)

    def stop(self, step: int, signal_name: str) -> None:
        self.checkpoints.wait()
        self.log.stopped(step)
        self.log.say(f"received {signal_name}: saved step {step} to {self.workdir / 'checkpoints'}; "
                     "run the same command again to resume from it", every_process=True)
        raise SystemExit(130 if signal_name.startswith("SIGINT") else 143)

    def release(self) -> None:
        """The checkpoint managers and the work directory's lock go (in a notebook the setup outlives the run)."""
        try:
            if self.checkpoints is not None:
                checkpoints, self.checkpoints = self.checkpoints, None
                checkpoints.close()
        finally:        # a save that fails at the close still frees the work directory
            if self.lock is not None:
                self.lock.close()
                self.lock = None

    def fail(self, message: str) -> None:
        self.checkpoints.wait()
        raise RunError(message)

    # --- restoring ------------------------------------------------------------------------------------------------
    def _redone(self, step: int) -> str:
        """', steps A..B, logged by the run that stopped, are trained again' where a run killed between saves had
        logged past its last checkpoint (metrics.jsonl then holds those steps twice; its readers keep the later)."""
        logged = max((r["step"] for r in read_metrics(self.workdir / "metrics.jsonl")), default=0)
        return (f"; steps {step + 1}..{logged}, logged by the run that stopped, are trained again" if logged > step
                else "")

    def restore_or_init(self, state, data_iter):
        """Resume from the latest checkpoint, else warm-start from `init_from`, else keep the fresh state."""
        step = self.checkpoints.latest_step()
        for dropped in self.checkpoints.drop_best_after(step or 0):    # killed after a new best, before a save
            self.log.say(f"removed the best checkpoint of step {dropped}: it is of steps this start trains again "
                         "(the next evaluation saves the best anew)")
        if step is not None:       # prepare_run checked that it is compatible
            state, data_state, _ = self.checkpoints.restore("latest", state)
            data_iter.set_state(data_state["iterator"])
            self.log.say(f"resuming from step {step} in {self.workdir / 'checkpoints'}" + self._redone(step))
            return state
        if self.config.init_from:
            from streetseg_jax.warm_start import warm_start
            return warm_start(state, self.config.init_from, self.label_map, self.log.say, self.log.init_from)
        return state


def _iter_state(data_iter) -> dict:
    return {"iterator": data_iter.get_state()}


# -------------------------------------------------------------------------------------------------------------------
def prepare_run(config, workdir: str | Path, overrides: list[str] | None = None, same_data: bool = False) -> RunSetup:
    """Everything is checked before anything is written: config.json says what the checkpoints beside it hold.
    What each process checks alone (its data, its view of the work directory), every process agrees on.
    `overrides`: the config keys the command line set (main), recorded, so that a resume that leaves one out is
    refused rather than trained with the config file's value. `same_data`: the user says that the dataset, whose
    files differ from those the run trained on, is a rebuild of the same inputs (a build by a version before
    2026-12-07, rebuilt): the run resumes on it, said, and records its fingerprint."""
    made = [path for path in _made_by_a_start(absolute(workdir)) if not path.exists()]
    workdir, mesh, (train_source, label_map, info), eval_source, log, weights, size = sharding.all_succeed(
        lambda: _open(config, workdir))
    meta = {"label_map": label_map.to_dict(), "config": config.to_dict(), "image_size": size}
    setup = RunSetup(config, workdir, mesh, label_map, train_source, eval_source, augment_config(config), weights,
                     None, log, meta, _lock(workdir, log))
    try:
        setup.checkpoints = checkpoint.Checkpoints(workdir, keep=config.keep_checkpoints)
        latest = _check_resume(setup, overrides)
        training = (latest or 0) < config.num_train_steps                   # else nothing is trained
        # Every file of the dataset is read: only where a resume is checked, process 0 records it or the processes
        # of a fresh start compare theirs.
        fingerprint = (dataset_fingerprint(dataset_dir(config.dataset, config.data_dir))
                       if training and (latest is not None or jax.process_index() == 0 or sharding.is_multiprocess())
                       else None)
        if training and latest is not None:
            _check_same_data(config, workdir, fingerprint, latest, same_data, log)
            _say_if_the_devices_changed(workdir, log)
        elif training:
            _check_processes_share_data(fingerprint)
        if jax.process_index() == 0 and training:
            record = {**provenance(config, info, fingerprint),
                      **({} if overrides is None else {"overrides": sorted(overrides)})}
            _write_json(workdir / "config.json", {**meta["config"], "provenance": record})
            log.commit = record["git_commit"]       # each start's: config.json keeps the latest alone
    except BaseException:
        lock = workdir / ".lock"
        if lock in made and setup.lock is not None:     # unlinked while locked: a start that opens it now sees so
            lock.unlink(missing_ok=True)
        setup.release()
        _remove_empty([path for path in made if path != lock])
        raise
    return setup


def _made_by_a_start(workdir: Path) -> list[Path]:
    """What a start makes before its last checks (the processes' data compared, the resume checked)."""
    checkpoints = workdir / "checkpoints"
    return [workdir, checkpoints, checkpoints / "latest", checkpoints / "best", workdir / ".lock"]


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (those a refused start made) where empty, deepest first: a fresh start refused by a late
    check left .lock (removed by its holder, while it holds it: _still_at) and empty checkpoint folders in a work
    directory that nothing was written to."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _open(config, workdir: str | Path):
    """(work directory, mesh, (train source, label map, dataset info), eval source, RunLog, class weights, typical
    training image size); no collectives in here (sharding.all_succeed)."""
    workdir = check_settings(config, workdir)
    mesh = sharding.make_mesh()
    sharding.check_batch_size(mesh, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size)
    train = _load(config, "train_split")
    eval_source, _, _ = _load(config, "eval_split")
    log = RunLog(workdir, config.num_train_steps, config.batch_size, config.eval_every_steps)
    for note in [sharding.fewer_devices_note(), *settings_notes(config)]:
        if note:
            log.say(note)
    weights = class_weights(config, train[0], train[1], log)
    _check_memory(config, train[1].num_classes, mesh)
    if config.init_from and not (workdir / "checkpoints").is_dir():    # nothing to resume: it will be read
        from streetseg_jax.warm_start import check_init_from
        check_init_from(config.init_from, config.model.to_dict())
    return workdir, mesh, train, eval_source, log, weights, typical_size(train[0])


def _check_memory(config, num_classes: int, mesh) -> None:
    from streetseg_jax.train import memory_problem    # here: train imports this module

    problem = memory_problem(config, num_classes, mesh)
    if problem:
        raise RunError(problem)


def _check_resume(setup: RunSetup, overrides: list[str] | None) -> int | None:
    """The work directory's latest step, or None; RunError when that cannot be resumed."""
    config, workdir, meta, log, checkpoints = setup.config, setup.workdir, setup.meta, setup.log, setup.checkpoints
    if setup.lock is not None:        # no other run saves here (where nothing can be locked, nothing is removed)
        for cut in checkpoints.remove_unfinished():
            log.say(f"removed checkpoints/{cut}: a deletion cut short (a kill) left it without some of its items, "
                    "which no command could load")
        _remove_killed_writes(workdir)
    latest = checkpoints.latest_step()
    if latest is not None:
        saved = checkpoints.read_meta("latest")
        problem = resume.incompatibility(saved, meta, workdir)
        if problem is None and overrides is not None:
            started = recorded(workdir, "provenance", "overrides")
            problem = resume.dropped_overrides(started, saved["config"], meta["config"], overrides)
        if problem:
            raise RunError(problem)
        if (note := resume.label_map_note(saved, meta)):
            log.say(note)
        if latest < config.num_train_steps:
            log.changed = resume.warn_of_changes(saved["config"], meta["config"], latest, log)
        elif (changed := resume.changes(saved["config"], meta["config"])):      # nothing to train: said all the same
            log.say("the settings differ from the checkpoint's: " + resume.listed(changed))
    return latest


def _remove_killed_writes(workdir: Path) -> None:
    """The temporary files of the run's own pictures and config.json that a kill left (atomic.atomic_file's
    .<name>.<random>.tmp, never removed), for the run that holds the work directory; another command's writes
    there (report's page, evaluate's scores) are no concern of it."""
    for pattern in (atomic.temporary_files("curves.png"), atomic.temporary_files("config.json"),
                    f"overlays/**/{atomic.temporary_files('*.png')}"):
        for path in workdir.glob(pattern):
            with contextlib.suppress(OSError):
                path.unlink()


def _check_same_data(config, workdir: Path, fingerprint: str, latest: int, same_data: bool = False,
                     log: RunLog | None = None) -> None:
    """RunError where the dataset's files are not those the run trained on (config.json's fingerprint): another
    build of the same name under another data_dir, or one rebuilt since, would be trained on from step `latest` as
    if it were the same, its evaluations compared with the earlier ones to pick the best checkpoint; unless the
    user says it is the same data rebuilt (`same_data`)."""
    trained_on = recorded_fingerprint(workdir)
    if trained_on is not None and trained_on != fingerprint:      # None: a run from before they were recorded
        if same_data:
            log.say(f"the dataset's files differ from those the run trained on until step {latest}; resuming on it "
                    "all the same (--same_data: a rebuild of the same inputs)")
            return
        found = dataset_dir(config.dataset, config.data_dir)
        raise RunError(f"{config.dataset} in {found} is not the dataset this run trained on until step {latest} (its "
                       "files differ: rebuilt since, or another build under --config.data_dir); resuming would train "
                       "and pick its best checkpoint on a mix of the two. Give the data it trained on"
                       f"{_its_version_there(config, workdir, found)}; or, if it is a rebuild of the same inputs (a "
                       "build by a version before 2026-12-07, rebuilt, has other bytes), --same_data resumes on it; or "
                       f"start a new run from its weights: --workdir NEW_RUN --config.init_from={workdir}")


def _check_processes_share_data(fingerprint: str) -> None:
    """RunError on every process of a fresh start where their datasets differ: a copy of one build on each machine
    is fine, other data is not (each process trained on half its batches from its own, and the run's resume then
    refused the mix)."""
    if not sharding.is_multiprocess():
        return
    def differ(prints: list[str]) -> str:
        if len(set(prints)) == 1:
            return ""
        each = ", ".join(f"{theirs[:8]} on process {i}" for i, theirs in enumerate(prints))
        return f"the processes' datasets differ (fingerprints {each}): every process needs a copy of the same " \
               "build in its --config.data_dir"
    # Each process read its whole dataset first: a slow disk's may answer long after the others.
    problem = sharding.decided_by_first("data", fingerprint, differ, timeout_s=3600)
    if problem:
        raise RunError(problem)


def _its_version_there(config, workdir: Path, found: Path) -> str:
    """' (VERSION, which it trained on, is there too: --config.dataset=NAME:VERSION)' where the run trained on
    another version of the dataset than the newest, which is still in the data_dir (it was built beside it)."""
    version = recorded(workdir, "provenance", "dataset", "version")
    pinned = f"{config.dataset.split(':')[0]}:{version}"
    if not isinstance(version, str) or version == found.name or not is_built(pinned, config.data_dir):
        return ""
    return f" (version {version}, which it trained on, is there too: --config.dataset={pinned})"


def check_same_start(config, num_processes: int | None) -> None:
    """RunError on every process where the processes of a run were started otherwise: another config (a process
    given another batch size, learning rate or seed trained on without a word, config.json recording process 0's),
    another number of devices, or another --num_processes. Every process reads every other's start and so comes to
    the same verdict. The data_dir and init_from may differ (a copy of the dataset, or of the run warm-started from,
    on each machine; made absolute from each process's own folder)."""
    if not sharding.is_multiprocess():
        return
    mine = {"devices": jax.local_device_count(), "num_processes": num_processes,
            "config": {k: v for k, v in flatten(json.loads(json.dumps(config.to_dict(), default=str))).items()
                       if k not in ("data_dir", "init_from")}}
    problem = sharding.decided_by_first("start", json.dumps(mine),
                                        lambda texts: start_differences(list(map(json.loads, texts))) or "")
    if problem:
        raise RunError(problem)


def start_differences(starts: list[dict]) -> str | None:
    """What differs between the processes' starts (check_same_start), or None."""
    problems = []
    devices = [start["devices"] for start in starts]
    if len(set(devices)) > 1:
        problems.append("every process needs as many devices as the others ("
                        + ", ".join(f"process {i} has {n}" for i, n in enumerate(devices)) + ")")
    said = [(i, start["num_processes"]) for i, start in enumerate(starts)]
    if any(n not in (None, len(starts)) for _, n in said):
        problems.append(f"{len(starts)} processes joined, but --num_processes is "
                        + ", ".join(f"{n} for process {i}" for i, n in said if n is not None))
    first = starts[0]["config"]
    for i, start in enumerate(starts[1:], 1):
        keys = sorted(k for k in {*first, *start["config"]} if first.get(k) != start["config"].get(k))
        if keys:
            problems.append(f"process {i} has another config than process 0: "
                            + ", ".join(f"{k} {start['config'].get(k)!r} (process 0: {first.get(k)!r})"
                                        for k in keys))
    if not problems:
        return None
    return ("the processes were not started alike: " + "; ".join(problems)
            + "; start every process with the same command, but for its --process_id")


def check_settings(config, workdir: str | Path) -> Path:
    """RunError for a config or work directory no run can use (main asks before it builds a missing dataset);
    returns the work directory as an absolute path."""
    workdir = absolute(workdir)
    recorded = {key: value for key, value in _read_json_object(workdir / "config.json").items() if key != "provenance"}
    check_config(config, set(config_keys.unknown(recorded)))
    _check_workdir(workdir)
    return workdir


def absolute(path: str | Path) -> Path:
    """`path` absolute and without its "..": the work directory as the run prints it (runs/../runs/a was printed
    as /home/x/runs/../runs/a/checkpoints)."""
    return Path(os.path.abspath(path))


def check_config(config, recorded: set[str] = frozenset()) -> None:
    """RunError for values a run cannot use, before it starts (they would fail later, or silently do nothing);
    `recorded`: keys no run reads that the run resumed has in its config.json, let be."""
    problems = _unknown_keys(config, recorded)
    if config.class_weights not in ("none", "median_frequency"):
        problems.append(f"class_weights must be 'none' or 'median_frequency', got {config.class_weights!r}")
    if not config.get("class_weight_power", 1.0) >= 0:
        problems.append(f"class_weight_power must be >= 0, got {config.class_weight_power!r}")
    for key, kind in (("crop_size", int), ("scale_range", (int, float))):
        value = config.augment[key]
        if not (isinstance(value, (tuple, list)) and len(value) == 2
                and all(isinstance(v, kind) and not isinstance(v, bool) and v > 0 for v in value)):
            what = "whole numbers" if kind is int else "numbers"
            problems.append(f"augment.{key} must be two positive {what}, e.g. '--config.augment.{key}=(a,b)', "
                            f"got {value!r}")
        elif key == "scale_range" and value[0] > value[1]:
            problems.append(f"augment.scale_range must be (low, high), got {tuple(value)!r}")
    problems += _range_problems(config) + _builder_problems(config)
    if problems:
        raise RunError("the config cannot be trained:\n  - " + "\n  - ".join(problems))


def settings_notes(config) -> list[str]:
    """Settings a run takes otherwise than given, or not at all (they trained without a word)."""
    from streetseg_jax.train import warmup_length

    notes = []
    if warmup_length(config) < config.warmup_steps:
        notes.append(f"note: warmup_steps {config.warmup_steps} is more than half of the run's "
                     f"{config.num_train_steps} steps: the warm-up takes {warmup_length(config)}, so that the "
                     "learning rate still comes down")
    if config.optimizer == "adam" and config.weight_decay:
        notes.append(f"note: weight_decay {config.weight_decay:g} is not used by optimizer 'adam' (adamw decays "
                     "the weights)")
    if config.class_weights == "none" and config.get("class_weight_power", 1.0) != 1.0:
        notes.append("note: class_weight_power is not used without class_weights=median_frequency")
    if config.optimizer in ("adam", "adamw") and config.get("momentum", 0.9) != 0.9:
        notes.append(f"note: momentum is used by optimizer 'sgd' only, not by {config.optimizer!r}")
    low, high = (config.augment.base_scale * factor for factor in config.augment.scale_range)
    if not low <= config.get("eval_scale", 1.0) <= high:
        notes.append(f"note: eval_scale {config.get('eval_scale', 1.0):g} lies outside the scales the network trains "
                     f"at ({low:g} to {high:g}: augment.base_scale x scale_range), so evaluation and prediction show "
                     "it objects at sizes it did not learn; change them together")
    return notes


def _whole(least: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least


def _range_problems(config) -> list[str]:
    rules = (*((key, _whole(least), f"at least {least}") for key, least in (
                 ("num_train_steps", 1), ("log_every_steps", 1), ("eval_every_steps", 0),
                 ("checkpoint_every_steps", 0), ("keep_checkpoints", 1), ("batch_size", 1), ("eval_batch_size", 1),
                 ("input_threads", 0), ("num_overlays", 0))),
             *((key, lambda v: isinstance(v, bool), "true or false") for key in ("eval_flip_tta", "augment.flip")),
             ("learning_rate", lambda v: v > 0, "> 0"), ("warmup_steps", lambda v: v >= 0, ">= 0"),
             ("weight_decay", lambda v: v >= 0, ">= 0"), ("grad_clip_norm", lambda v: v >= 0, ">= 0 (0: off)"),
             ("end_learning_rate_factor", lambda v: 0 <= v <= 1, "in [0, 1]"), ("eval_scale", lambda v: v > 0, "> 0"),
             ("eval_extra_scales", lambda v: all(0 < s <= MAX_EXTRA_SCALE for s in v)
              and len({*v, config.get("eval_scale", 1.0)}) == len(v) + 1,
              f"a tuple of numbers in (0, {MAX_EXTRA_SCALE}], none twice nor eval_scale "
              "('--config.eval_extra_scales=()': none)"),
             ("momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
             # Refused once the work directory was written (a negative seed), or taken without a word: a scale
             # of 0 trained on images of 1 pixel; jitter factors come from [1 - s, 1 + s], beyond 1 negative.
             ("seed", lambda v: v >= 0, ">= 0"), ("augment.base_scale", lambda v: v > 0, "> 0"),
             *((f"augment.{key}", lambda v: 0 <= v <= 1, "in [0, 1] (0: off)")
               for key in ("brightness", "contrast", "saturation")),
             ("augment.hue", lambda v: 0 <= v <= 0.5, "in [0, 0.5] (0: off)"))
    problems = []
    for key, ok, wanted in rules:
        value = _lookup(config, key)
        if value is _MISSING:       # a config file of its own, written before the key was
            continue
        try:
            fine = ok(value)
        except TypeError:
            fine = False
        if not fine:
            problems.append(f"{key} must be {wanted}, got {value!r}")
    return problems


_MISSING = object()


def _unknown_keys(config, recorded: set[str]) -> list[str]:
    """The keys no run reads, named with the key meant (a misspelt key in a config file did nothing, and compare
    listed it as what differed from the run without it); those the run resumed recorded itself are let be (a run
    started before keys were checked)."""
    problems = []
    for key in config_keys.unknown(config.to_dict()):
        if key not in recorded:
            guess = config_keys.meant(key)
            problems.append(f"{key} is no key a run reads: " + (f"did you mean {guess}?" if guess else
                                                                 "remove it (configs/default.py has every key)"))
    return problems


def _lookup(config, key: str):
    """config["a.b"] as config.a.b; _MISSING where a part is not there."""
    for part in key.split("."):
        if part not in config:
            return _MISSING
        config = config[part]
    return config


def _builder_problems(config) -> list[str]:
    """What the optimiser, loss and model builders would refuse once the run had started."""
    from streetseg_jax import losses, train
    from streetseg_jax.models.unet import check_model_config

    problems = []
    for check in (lambda: train.make_optimizer(config), lambda: check_model_config(config.model),
                  lambda: losses.loss_fn(config.get("loss", "cross_entropy"), [1.0], 255)):
        try:
            check()
        except (ValueError, TypeError) as e:
            problems.append(str(e))
    return problems


def _check_workdir(workdir: Path) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise RunError(f"--workdir {workdir} is a file, not a folder")
    blocked = next((parent for parent in workdir.parents if parent.exists() and not parent.is_dir()), None)
    if blocked:
        raise RunError(f"--workdir {workdir} lies under {blocked}, which is a file, not a folder")
    pattern = sorted(set("[]?*") & set(str(workdir)))
    if pattern:     # orbax finds each save's parts with glob() in the path: none found, none merged, a log line
        raise RunError(f"--workdir {workdir} has {' '.join(pattern)} in its path, which the checkpoint writer "
                       "(orbax) reads as a pattern: every checkpoint would lack its weights, unreadable for good; "
                       "give a path without [ ] ? *")
    config_file = workdir / "config.json"
    if config_file.exists():
        try:
            recorded = json.loads(config_file.read_text())
        except (OSError, ValueError) as e:      # a run's, damaged (a half-copied work directory)?
            way_on = ("remove it to resume from the checkpoints, which hold the config, or "
                      if (workdir / "checkpoints").is_dir() else "")
            raise RunError(f"{config_file} cannot be read ({e}): {way_on}give another --workdir") from None
        if not isinstance(recorded, dict) or "provenance" not in recorded:
            raise RunError(f"{workdir} holds a config.json that no training run wrote (it has no provenance); "
                           "give another --workdir rather than overwrite it")
    photos = [] if config_file.exists() or not workdir.is_dir() else sorted(
        p.name for p in workdir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name != "curves.png")
    if photos:        # --workdir photos, typed for --input: checkpoints and overlays went in among them
        raise RunError(f"--workdir {workdir} holds {len(photos)} image(s) ({', '.join(photos[:3])}"
                       f"{', ...' if len(photos) > 3 else ''}) and no training run; give a new or empty folder")
    _check_writable(workdir)


def _check_writable(workdir: Path) -> None:
    """RunError where the run's folders that exist cannot be written: a read-only checkpoints/ (a mount) was found
    at the first save, after the steps up to it were trained, and those steps were lost."""
    checkpoints = workdir / "checkpoints"
    for folder in (workdir, checkpoints, checkpoints / "latest", checkpoints / "best"):
        if not folder.is_dir():
            continue
        try:
            atomic.check_writable(folder)
        except OSError as e:
            raise RunError(f"{folder} cannot be written ({e.strerror or e}): the run saves its checkpoints and log "
                           "there; make it writable or give another --workdir") from None


def recorded_fingerprint(workdir: Path) -> str | None:
    """The fingerprint of the dataset the run in `workdir` trained on, as its config.json records it (provenance);
    None where it records none."""
    value = recorded(workdir, "provenance", "dataset", "fingerprint")
    return value if isinstance(value, str) else None


def recorded(workdir: Path, *keys: str):
    """config.json's value at `keys` (nested), None where any level is missing or not an object."""
    value = _read_json_object(workdir / "config.json")
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _lock(workdir: Path, log: RunLog):
    """An exclusive lock on WORKDIR/.lock, taken by process 0 and held while the run lives: a second run in the same
    work directory would interleave its log and checkpoints with this one's. Every process learns the outcome (the
    others would otherwise wait in their first collective for a process 0 that has left), and finds process 0's
    mark in the file: a work directory the processes do not share ran to the first save, then hung in orbax's
    barrier for good. Where the file system or the platform cannot lock (NFS without lockd, Windows), the run says
    so and goes on without."""
    mark = f"run {uuid.uuid4().hex}"
    lock = sharding.all_succeed(lambda: _take_lock(workdir, log, mark) if jax.process_index() == 0 else None)
    if sharding.is_multiprocess():
        try:
            first = json.loads(sharding.decided_by_first(
                "workdir", json.dumps({"mark": mark, "workdir": str(workdir)}), lambda texts: texts[0]))
            sharding.all_succeed(lambda: _check_shared(workdir, first))
        except BaseException:
            if lock is not None:
                lock.close()
            raise
    return lock


def _take_lock(workdir: Path, log: RunLog, mark: str):
    """The open lock file, or None where locks are not available; RunError when another run holds it. Either way
    the file says which process runs here, and `mark`."""
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count():
        if attempt == 10:
            raise RunError(f"cannot lock {workdir / '.lock'}: it was replaced 10 times while this run locked it")
        handle = open(workdir / ".lock", "a+")
        try:
            import fcntl
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip().partition(", run ")[0] or "its process unknown"
            handle.close()
            raise RunError(f"another run is training in {workdir} ({owner}); wait for it to end or give another "
                           "--workdir") from None
        except (ImportError, OSError) as e:
            log.say(f"warning: cannot lock {workdir / '.lock'} ({e}): nothing stops a second run in this work "
                    "directory")
            locked = False
        if not locked or _still_at(handle, workdir / ".lock"):
            break
        handle.close()          # a refused start removed the file it had locked: lock the one there now
    try:
        handle.truncate(0)
        handle.write(f"process {os.getpid()} on {platform.node()}, {mark}\n")
        handle.flush()
        if sharding.is_multiprocess():
            os.fsync(handle.fileno())   # the other machines read it (_check_shared)
    except OSError as e:
        handle.close()
        raise atomic.cannot_write(workdir / ".lock", e) from e
    return handle if locked else handle.close()


def _still_at(handle, path: Path) -> bool:
    """Whether the open file is the one at `path` (not one removed since it was opened): two runs locking two files
    of one name would both train."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(handle.fileno()))
    except OSError:
        return False


def _check_shared(workdir: Path, first: dict, wait_s: float = sharding.SILENCE_S) -> None:
    """RunError where this process does not find process 0's mark in WORKDIR/.lock (`first`: process 0's mark and
    work directory), after up to `wait_s` for a shared file system to show it."""
    if jax.process_index() == 0:
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if first["mark"] in (workdir / ".lock").read_text(errors="replace"):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            where = "" if first["workdir"] == str(workdir) else f" (process 0's is {first['workdir']})"
            raise RunError(f"process {jax.process_index()} does not see the work directory process 0 writes to: "
                           f"{workdir}{where} lacks its mark in .lock. Every process needs the same work directory, "
                           "on a file system they all share, at the same path (docs/scaling.md)")
        time.sleep(0.2)


def _load(config, key: str):
    """load_split of the split config[key]; a split the dataset lacks, or one with nothing labelled, names the key to
    set."""
    try:
        loaded = load_split(config.dataset, config[key], config.data_dir)
    except UnknownSplitError as e:
        raise UnknownSplitError(f"{e} (set --config.{key})") from None
    source, label_map, _ = loaded
    if not any(np.any(source[i]["segmentation_mask"] < label_map.num_classes) for i in range(len(source))):
        use = "training has nothing to learn from" if key == "train_split" else "evaluation would score nothing"
        raise RunError(f"the {config[key]!r} split of {config.dataset} has no labelled pixel: every pixel of its "
                       f"{len(source)} mask(s) is the ignore id {label_map.ignore_id}, so {use}. Label some, or "
                       f"choose another split (--config.{key})")
    return loaded


def typical_size(source, samples: int = 32) -> list[int] | None:
    """[height, width] of the image of median area among up to `samples` spread over the split (None for an empty
    one). Saved with the checkpoints, it lets predict show the network photos at the scale it learned from."""
    picks = np.unique(np.linspace(0, len(source) - 1, min(samples, len(source))).round().astype(int))
    sizes = sorted((source[int(i)]["image"].shape[:2] for i in picks), key=lambda size: size[0] * size[1])
    return [int(v) for v in sizes[len(sizes) // 2]] if sizes else None


def augment_config(config) -> augment.AugmentConfig:
    a = config.augment
    return augment.AugmentConfig(base_scale=a.base_scale, scale_range=tuple(a.scale_range),
                                 crop_size=tuple(a.crop_size), flip=a.flip, brightness=a.brightness,
                                 contrast=a.contrast, saturation=a.saturation, hue=a.hue)


def class_weights(config, source, label_map: LabelMap, log: RunLog) -> np.ndarray:
    """Per-class loss weights (check_config has checked the settings)."""
    if config.class_weights == "none":
        return np.ones(label_map.num_classes, np.float32)
    power = float(config.get("class_weight_power", 1.0))
    masks = (source[i]["segmentation_mask"] for i in range(len(source)))
    counts = class_pixel_counts(masks, label_map.num_classes)
    weights = median_frequency_weights(*counts) ** power
    log.say(f"median-frequency class weights{f' to the power {power:g}' if power != 1 else ''}: " + ", ".join(
        f"{n} {w:.3f}" for n, w in zip(label_map.names, weights)))
    absent = [name for name, pixels in zip(label_map.names, counts[0]) if not pixels]
    if absent:
        log.say(f"warning: no training image has a pixel of {', '.join(map(repr, absent))}: the model cannot learn "
                "them")
    return weights


def provenance(config, info, fingerprint: str) -> dict:
    packages = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "grain", "numpy"):
        try:
            from importlib.metadata import version
            packages[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package is simply not listed
            pass
    from streetseg_jax import __version__
    packages["streetseg_jax"] = __version__
    return {"packages": packages, "python": sys.version.split()[0], "git_commit": _git_commit(),
            "dataset": {"name": config.dataset, "version": str(info.version),
                        "fingerprint": fingerprint},
            "devices": devices()}


def _say_if_the_devices_changed(workdir: Path, log: RunLog) -> None:
    """A resume on other devices than the run's last start (config.json's record) says so: the steps from here are
    an unchanged run's to float rounding only (sums over devices add up in another order)."""
    then, now = recorded(workdir, "provenance", "devices"), devices()
    if devices_differ(then, now):
        log.say(f"resuming on {topology_text(now)}, where the run trained on {topology_text(then)} until now: from "
                "here on its steps equal those of a run that kept its devices to float rounding, not bit for bit")


def _git_commit() -> str:
    """The commit of the checkout this package runs from ("-dirty" with changes to its files), or "unknown" where
    it runs from no checkout of its own: installed into a virtual environment inside another project's repository,
    git found that one and its commit was recorded."""
    package = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=package, capture_output=True,
                             text=True, timeout=5)
        top, _, commit = out.stdout.strip().partition("\n")
        if out.returncode != 0 or Path(top).resolve() != package.parent:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=package,
                               capture_output=True, text=True, timeout=5)
        return commit + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _write_json(path: Path, data: dict) -> None:
    atomic.write_text(path, json.dumps(data, indent=1, default=str))


def _outcome(history: list[dict], workdir: Path) -> str:
    """What the run reached, and where to look next."""
    evals, best = eval_rows(history), best_eval(history)
    look = f"look at it: python -m streetseg_jax.report --workdir {shlex.quote(str(workdir))}"
    if best is None:
        return look
    return (f"eval mIoU {evals[-1]['eval/miou']:.4f} at the end, best {best['eval/miou']:.4f} at step {best['step']} "
            f"(the best checkpoint); {hms(history[-1]['elapsed'])} of training; {look}")


# -------------------------------------------------------------------------------------------------------------------
def finish_run(config, setup: RunSetup, evaluator, params, model_state, step: int) -> None:
    """Curves and a few predictions of eval images (process 0); the other processes wait for it."""
    if jax.process_index() == 0:
        history = setup.draw_curves()
        evaluator.write_overlays(params, model_state, setup.eval_source, setup.workdir / "overlays",
                                 config.num_overlays, f"run {setup.workdir.name}, {config.eval_split} split, "
                                 f"the last weights (step {step})")
        setup.log.say(f"done: {setup.workdir} (metrics.jsonl, curves.png, {'overlays/, ' * (config.num_overlays > 0)}"
                      "checkpoints/)")
        setup.log.say(_outcome(history, setup.workdir))
    else:
        setup.log.say(f"done at step {step}: process 0 writes the run's curves and overlays in {setup.workdir}",
                      every_process=True)
    if jax.process_count() > 1:
        # A process that reaches JAX's shutdown barrier long before process 0 times out there and kills the job.
        multihost_utils.sync_global_devices("run finished")
