"""scaling: images/second and step time on 1, 2, 4, 8 devices (as many as there are), global batch fixed and
per-device batch fixed, plus model FLOPs utilisation and the memory-bound floor of the step.

On a CPU-only machine it re-runs itself with 8 forced host devices (`--xla_force_host_platform_device_count`):
that checks the plumbing, not real scaling (the forced devices share the same cores); the re-run's progress lines
(stderr, one per device count measured, with its figures) show as they come.
Keys: devices.<n>.{global_batch_fixed,per_device_batch_fixed}.{images_per_second,step_ms};
flops_per_step (XLA's count for the 1-device step at the fixed global batch), bytes_accessed_per_step,
peak_tflops and mfu (only where the device's peak is known or given), memory_floor_ms (bytes accessed over the
memory bandwidth, where known or given).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np

from bench.common import median_rate, progress
from streetseg_jax.models.unet import DTYPES, UPSAMPLE_MODES

UNITS = {"images_per_second": "img/s", "step_ms": "ms", "flops_per_step": "FLOP", "bytes_accessed_per_step": "B",
         "peak_tflops": "TFLOP/s", "memory_floor_ms": "ms", "mfu": "", "measured_step_ms": "ms"}

# Dense peaks per device (bfloat16 tensor-core / float32 SIMT) and HBM bandwidth, from the vendors' data sheets.
KNOWN = {"H100": {"bfloat16": 989.4, "float32": 66.9, "bandwidth_gbs": 3350},
         "H200": {"bfloat16": 989.4, "float32": 66.9, "bandwidth_gbs": 4800},
         "A100": {"bfloat16": 312.0, "float32": 19.5, "bandwidth_gbs": 2039}}


def add_arguments(parser) -> None:
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--base_width", type=int, default=16)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--upsample", default="transpose", choices=UPSAMPLE_MODES)
    parser.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
    parser.add_argument("--global_batch", type=int, default=16,
                        help="fixed global batch (divisible by every device count measured: 8 on a CPU)")
    parser.add_argument("--per_device_batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak_tflops", type=float, help="device peak for MFU when not in the known table")
    parser.add_argument("--bandwidth_gbs", type=float, help="memory bandwidth when not in the known table")


def run(args) -> dict:
    forced = (jax.device_count() == 1 and jax.default_backend() == "cpu"
              and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""))
    counts = [n for n in (1, 2, 4, 8) if n <= (8 if forced else jax.device_count())]
    most = counts[-1]
    if args.global_batch % most:      # before anything is measured: it failed after the first counts
        sys.exit(f"error: --global_batch {args.global_batch} must divide by every device count measured "
                 f"({', '.join(map(str, counts))}): try {max(most, args.global_batch // most * most)}")
    if forced:
        return _rerun_with_forced_devices()
    result = {"device_kind": jax.devices()[0].device_kind, "devices": {}}
    for n in counts:
        progress(f"{n} device(s): timing")
        figures = result["devices"][str(n)] = {
            "global_batch_fixed": _measure(args, n, args.global_batch),
            "per_device_batch_fixed": _measure(args, n, args.per_device_batch * n)}
        progress(f"{n} device(s): " + ", ".join(f"batch {f['global_batch']}: {f['images_per_second']:.4g} img/s "
                                                f"({f['step_ms']:.4g} ms)" for f in figures.values()))
    progress("counting FLOPs and bytes of the 1-device step")
    result.update(_roofline(args, result["devices"]["1"]["global_batch_fixed"]["step_ms"]))
    return result


def _rerun_with_forced_devices() -> dict:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()    # theirs kept
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    argv = [a for a in sys.argv[1:] if a != "--json"] + ["--json"]
    progress("re-running with 8 forced CPU devices")
    # Its stderr (progress lines, warnings, errors) goes straight through: a run cut off still shows what it had.
    proc = subprocess.run([sys.executable, sys.argv[0], *argv], env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        sys.exit(proc.returncode)       # the re-run said why on stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["note"] = "8 forced CPU devices sharing the same cores: plumbing check, not real scaling"
    return result


def _setup(args, n: int, batch: int):
    import ml_collections
    from streetseg_jax import sharding, train

    config = ml_collections.ConfigDict(dict(
        seed=0, num_train_steps=10_000, learning_rate=1e-3, warmup_steps=0, lr_schedule="cosine",
        end_learning_rate_factor=1.0, optimizer="adam", weight_decay=0.0, grad_clip_norm=0.0,
        model=dict(base_width=args.base_width, depth=4, upsample=args.upsample, dropout=0.0, dtype=args.dtype)))
    mesh = sharding.make_mesh(jax.devices()[:n])
    tx = train.make_optimizer(config)
    graphdef, state = train.init_state(config, args.classes, tx, mesh)
    step = train.make_train_step(graphdef, tx, np.ones(args.classes, np.float32), 255, mesh)
    rng = np.random.default_rng(0)
    batch_arrays = sharding.global_batch({
        "image": rng.integers(0, 256, (batch, args.height, args.width, 3), dtype=np.uint8),
        "label": rng.integers(0, args.classes, (batch, args.height, args.width)).astype(np.uint8)}, mesh)
    return step, state, batch_arrays


def _measure(args, n: int, batch: int) -> dict:
    step, state, batch_arrays = _setup(args, n, batch)
    holder = {"state": state}

    def steps():
        for _ in range(args.steps):
            holder["state"], metrics = step(holder["state"], batch_arrays)
        jax.block_until_ready(metrics["loss"])

    rate = median_rate(steps, args.steps * batch, warmup=1, repeats=args.repeats)
    return {"global_batch": batch, "images_per_second": rate, "step_ms": 1000 * batch / rate}


def _roofline(args, step_ms: float) -> dict:
    """XLA's FLOP and byte counts for the 1-device step, against the device's peak and memory bandwidth.

    Counted on the step as XLA alone would compute it: XLA's cost analysis cannot see into our CPU kernels
    (native.py), and with them it counted a tenth of the FLOPs."""
    from streetseg_jax import native

    kernels = native.cpu_targets
    native.cpu_targets = lambda: None       # asked when the step is traced, below
    try:
        step, state, batch_arrays = _setup(args, 1, args.global_batch)
        cost = step.lower(state, batch_arrays).compile().cost_analysis()
    finally:
        native.cpu_targets = kernels
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}    # None where the backend has none
    flops, moved = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    known = next((v for k, v in KNOWN.items() if k in jax.devices()[0].device_kind), {})
    peak = args.peak_tflops or known.get(args.dtype)
    bandwidth = args.bandwidth_gbs or known.get("bandwidth_gbs")
    out = {"flops_per_step": flops, "bytes_accessed_per_step": moved, "measured_step_ms": step_ms}
    if peak:
        out.update(peak_tflops=peak, mfu=flops / (step_ms / 1000) / (peak * 1e12))
    if bandwidth:
        out["memory_floor_ms"] = 1000 * moved / (bandwidth * 1e9)
    return out
