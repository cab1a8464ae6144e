"""Shared benchmark plumbing: timing with warm-up excluded, peers run in subprocesses, peak memory."""
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


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run_peer(script: str, *args, timeout: float = 900) -> float | None:
    """Run tools/peers/<script> with positional args; it prints one JSON line with images_per_second. The peer runs
    as its users run it: without the huge-page tunable our training process sets for itself."""
    proc = subprocess.run([sys.executable, str(PEERS / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=hugepages.environment_without_tunable(os.environ))
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)["images_per_second"]
    print(f"peer {script} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}", file=sys.stderr)
    return None


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
