"""Shared benchmark plumbing: timing with warm-up excluded, peers run in subprocesses, peak memory, progress lines
and warnings on stderr, the machine's load."""
from __future__ import annotations

import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from streetseg_jax import hugepages

PEERS = Path(__file__).resolve().parents[1] / "peers"


def median_rate(run_once, items_per_run: int, warmup: int = 2, repeats: int = 5) -> float:
    """Median items/second over `repeats` timed calls of `run_once` (which must block until done)."""
    for _ in range(warmup):
        run_once()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_once()
        rates.append(items_per_run / (time.perf_counter() - t0))
    return statistics.median(rates)


def median_wall_and_cpu_seconds(run_once, repeats: int):
    """(median wall-clock seconds, median CPU seconds of this process, the warm-up's result) over `repeats` timed
    calls of `run_once` after one untimed warm-up call. CPU time shows a single-process tool's own speed on a
    machine shared with other work."""
    result = run_once()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run_once()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def interleaved_medians(calls: dict, repeats: int) -> dict:
    """Median seconds per call, the calls taking turns (after one untimed warm-up each), so that a machine whose
    load changes during the run slows every contender alike."""
    times = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class PeerError(Exception):
    """A peer that gave no figure; the message says why (its exit status and last line of output)."""


def run_peer(script: str, *args, timeout: float = 900) -> float:
    """Run tools/peers/<script> with positional args; it prints one JSON line with images_per_second. The peer runs
    as its users run it: without the huge-page tunable our training process sets for itself. PeerError when it
    fails or runs past `timeout` seconds (its output is printed on stderr first)."""
    progress(f"peer {script}: started")
    try:
        proc = subprocess.run([sys.executable, str(PEERS / script), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=hugepages.environment_without_tunable(os.environ))
    except subprocess.TimeoutExpired:
        raise PeerError(f"{script} ran past {timeout:.0f} s") from None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            rate = json.loads(line)["images_per_second"]
            progress(f"peer {script}: done, {rate:.4g} img/s")
            return rate
    print(f"peer {script} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}", file=sys.stderr)
    last = next((line for line in reversed(proc.stderr.splitlines()) if line.strip()), "no output")
    raise PeerError(f"{script} exited with status {proc.returncode}: {last.strip()}")


def add_peer(result: dict, name: str, script: str, *args) -> float | None:
    """Run a peer into result["peers"][name]; a peer that fails is said in result["peer_errors"][name] and on
    stderr, so a result without its ratio says why."""
    try:
        rate = run_peer(script, *args)
    except PeerError as e:
        result.setdefault("peer_errors", {})[name] = str(e)
        warn(result, f"peer {name} gave no figure, so there is no ratio_{name}: {e}")
        return None
    result.setdefault("peers", {})[name] = rate
    return rate


def refuse_sizes_peers_cannot_take(height: int, width: int, no_peers_flag: str) -> None:
    """The peers' U-Nets do not pad: each of the 4 levels halves the image, so a side that is not a multiple of 16
    ends in a size mismatch (torch) or a traceback (Keras) after minutes of work. Said before any work."""
    bad = {name: value for name, value in (("height", height), ("width", width)) if value % 16}
    if bad:
        given = " and ".join(f"--{name} {value}" for name, value in bad.items())
        sizes = " ".join(f"--{name} {-(-value // 16) * 16}" for name, value in bad.items())
        sys.exit(f"error: {given}: the peers take only multiples of 16 (2**depth, they do not pad): "
                 f"try {sizes}, or {no_peers_flag} to time ours alone")


def progress(message: str) -> None:
    """A line on stderr as each phase starts or ends, so a long run shows where it is and a run cut off by a
    timeout still shows the figures it had."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def warn(result: dict, message: str) -> None:
    """A caveat about the figures: on stderr now and in result["warnings"]."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
    result.setdefault("warnings", []).append(message)


def record_load(result: dict, load_at_start: float) -> None:
    """The 1-minute load average at the start and the end of the run, with a warning when either exceeds the cores:
    figures taken while other jobs ran are not those of a quiet machine. A result that has them (the one scaling's
    re-run of itself returns) keeps its own."""
    if "load_average_1min" in result:
        return
    cores = os.cpu_count() or 1
    result["load_average_1min_start"], result["load_average_1min"] = load_at_start, os.getloadavg()[0]
    busiest = max(load_at_start, result["load_average_1min"])
    if busiest > cores:
        warn(result, f"load average {busiest:.1f} exceeds the {cores} cores: other jobs were running, so these "
                     "figures are lower than a quiet machine's")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
