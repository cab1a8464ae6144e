"""A training run's log: metrics.jsonl (one JSON object per line with `step` and `time`, a `run/start` record at each
start, a `run/stop` one where a signal's stop saved) and the progress line with its ETA; only process 0 writes
and prints, but for the lines on how the run ended, which every process prints."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from streetseg_jax.atomic import cannot_write
from streetseg_jax.cli import stdout_to_devnull
from streetseg_jax.visualize import hms


def devices() -> dict:
    """What a run trains on, as config.json's provenance and each run/start record keep it. On a CPU also the cores
    it may use and whether our C++ kernels run (native.py): XLA:CPU's threads and the kernels each sum in their own
    order, so runs that differ in them differ from the first step, in float rounding."""
    record = {"count": jax.device_count(), "kind": jax.devices()[0].device_kind, "processes": jax.process_count()}
    if jax.default_backend() == "cpu":
        from streetseg_jax import native, sharding
        record.update(cores=sharding.usable_cores(), native_kernels=native.cpu_targets() is not None)
    return record


class RunLog:
    """metrics.jsonl (one JSON object per line with `step` and `time`) and a progress line with ETA on screen.

    Only process 0 writes and prints, but for the lines on how the run ended, which every process prints.
    """

    def __init__(self, workdir: Path, num_steps: int, batch_size: int, eval_every: int = 0):
        self.path = workdir / "metrics.jsonl"
        self.num_steps, self.batch_size, self.eval_every = num_steps, batch_size, eval_every
        self.primary = jax.process_index() == 0
        self.t0, self.step0 = time.time(), 0
        self.compiled: tuple[int, float] | None = None     # (step, time) when the first step of this start was done
        self.eval_seconds, self.last_eval = 0.0, 0.0       # evaluations of this start: all of them, the latest
        self.changed: dict = {}     # config keys a resume changed: kept in its run/start record
        self.commit: str | None = None      # the code's git commit: kept in each start's record (run.prepare_run)
        self.init_from: dict = {}   # what a warm start took (warm_start's record): kept in its run/start record

    def start(self, step: int, num_steps: int) -> None:
        """Marks where this (re)start begins in metrics.jsonl, so readers can tell lost steps and downtime."""
        self.restarted(step)
        self.say(f"training steps {step}..{num_steps} on {jax.device_count()} device(s), "
                 f"{jax.process_count()} process(es)")

    def restarted(self, step: int) -> None:
        """start's record alone: for a start with nothing to train that still logs (an evaluation a stop cut short),
        whose row's time counted the hours the run lay stopped as training."""
        self.t0, self.step0, self.compiled = time.time(), step, None
        self.eval_seconds = self.last_eval = 0.0
        if self.primary:
            extra = {**({"run/changed": self.changed} if self.changed else {}),
                     **({"run/commit": self.commit} if self.commit else {}),
                     **({"run/init_from": self.init_from} if self.init_from else {})}
            append_record(self.path, {"step": step, "time": self.t0, "run/start": True, "run/devices": devices(),
                                       **extra})

    def stopped(self, step: int) -> None:
        """A `run/stop` record at the step a signal's stop saved: the time since the last log is training that
        the resume keeps (visualize.run_history counts it); it makes no row."""
        if self.primary:
            append_record(self.path, {"step": step, "time": time.time(), "run/stop": True})

    def first_step_done(self, step: int) -> None:
        """The ETA counts from here on: the first step of a start includes compiling it (and an evaluation before
        it, of a step whose evaluation a stop cut short, lies outside the span the ETA measures)."""
        self.compiled = (step, time.time())
        self.eval_seconds = 0.0

    def evaluated(self, seconds: float, compiling: float = 0.0) -> None:
        """The ETA counts evaluations apart from steps: each one left is taken to last as long as the latest did
        without its `compiling` (compile_seconds; a start's first evaluation compiled for 28 of its 29 s, and the
        ETA it gave was 3x the time left)."""
        self.eval_seconds += seconds
        self.last_eval = max(seconds - compiling, 0.0)

    def write(self, step: int, row: dict) -> None:
        if not self.primary:
            return
        append_record(self.path, {"step": step, "time": time.time(), **{k: _plain(v) for k, v in row.items()}})
        self.say(self._progress(step, row))

    def _progress(self, step: int, row: dict) -> str:
        shown = "  ".join(f"{k.split('/', 1)[-1] if k.startswith('train/') else k} {v:.4g}"
                          for k, v in row.items() if isinstance(v, float) and "/iou/" not in k)
        head = f"step {step}/{self.num_steps} ({100 * step / self.num_steps:.0f}%)  {shown}"
        if self.compiled and step == self.compiled[0] < self.num_steps:
            return f"{head}  ETA from the next line (the steps so far include compiling)"   # compiling step alone
        now = time.time()
        since_step, since = self.compiled if self.compiled and step > self.compiled[0] else (self.step0, self.t0)
        if step <= since_step:      # no step trained yet in this start (a resume's redone evaluation): 13174 hours
            return head if step >= self.num_steps else f"{head}  ETA once steps are trained"
        per_step = max(now - since - self.eval_seconds, 0.0) / max(step - since_step, 1e-9)
        # A train line at an evaluation step comes before that step's evaluation: it is still to run.
        evals = self._evals_after(step - 1) if "eval/miou" not in row else self._evals_after(step)
        eta = (self.num_steps - step) * per_step + evals * self.last_eval
        return f"{head}  ETA {hms(eta)}"

    def _evals_after(self, step: int) -> int:
        """Evaluations still to come after `step`: every eval_every steps, and always at the last one."""
        if step >= self.num_steps:
            return 0
        every = self.eval_every
        regular = self.num_steps // every - step // every if every else 0
        return regular + (0 if every and self.num_steps % every == 0 else 1)

    def say(self, message: str, every_process: bool = False) -> None:
        """Prints on process 0; `every_process` also on the others, as "process i of n: message", so each host's own
        output says how its part of the run ended."""
        if not (self.primary or every_process):
            return
        if not self.primary:
            message = f"process {jax.process_index()} of {jax.process_count()}: {message}"
        try:
            print(message, flush=True)
        except BrokenPipeError:
            reader_gone()


_compiled = [0.0]      # seconds JAX spent tracing, lowering and compiling in this process so far


def _count_compiling(event: str, seconds: float, **_) -> None:
    if event.startswith("/jax/core/compile/"):
        _compiled[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_count_compiling)


def compile_seconds() -> float:
    """Seconds JAX has spent compiling in this process so far: the difference over a span is its compiling."""
    return _compiled[0]


def reader_gone() -> None:
    """Where stdout's reader is gone (`| head` done, a dead `tee`), the run goes on and says so on stderr where it
    can: a broken pipe stopped it with an error, unsaved, the steps since its checkpoint lost."""
    stdout_to_devnull()
    try:
        print("note: the reader of the run's output is gone (stdout closed): training goes on, metrics.jsonl keeps "
              "its log", file=sys.stderr, flush=True)
    except OSError:
        pass


def append_record(path: Path, record: dict) -> None:
    """One JSON line at the end of `path`; a line that a killed run left unfinished is ended first. A write the disk
    refuses is an OSError naming `path` (a full disk said only "No space left on device")."""
    try:
        with open(path, "a+b") as f:    # appends go to the end wherever the reads seek
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(json.dumps(record).encode() + b"\n")
    except OSError as e:
        if e.filename is None:
            raise cannot_write(path, e) from e
        raise


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v
