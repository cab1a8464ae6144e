"""train: our jitted train step vs PyTorch and Keras U-Nets of the same architecture, same shapes, same batch.

Keys: images_per_second (ours, `--upsample`), peers {torch, keras} (img/s, where installed), ratio_<peer>,
peak_rss_mib (host memory of this process after the timed steps), peak_device_mib (on a GPU: the most device
memory JAX held), ours_before_after (where peers ran: our img/s timed before and after them; a shared machine's
speed drifts, and images_per_second is their mean, so a drift during the run biases the ratios less). Peers run
in subprocesses, in the same run, on the GPU where torch sees one. With `--dtype bfloat16` the torch peer runs
under bfloat16 autocast (PyTorch AMP, float32 weights, as ours) and the Keras peer, which has no mixed-precision
mode here, is left out.
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np

from bench.common import installed, median_rate, peak_rss_mib, run_peer

UNITS = {"images_per_second": "img/s", "peers": "img/s", "ours_before_after": "img/s", "peak_rss_mib": "MiB",
         "peak_device_mib": "MiB", "step_ms": "ms"}


def add_arguments(parser) -> None:
    for name, default in (("batch", 8), ("height", 192), ("width", 256), ("classes", 8), ("base_width", 16)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--upsample", default="transpose", help="transpose is the peers' architecture")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no_peers", action="store_true")


def run(args) -> dict:
    from streetseg_jax import sharding

    sharding.split_cpu_into_cores(args.batch)      # as training does: one XLA device per core on a CPU
    time_ours = our_timer(args)
    before = time_ours()
    result = {"peak_rss_mib": peak_rss_mib(),
              "settings": f"B={args.batch} {args.height}x{args.width} C={args.classes} F={args.base_width} "
                          f"upsample={args.upsample} {args.dtype} on {jax.device_count()} x "
                          f"{jax.devices()[0].device_kind}",
              "peers": {}}
    memory = jax.devices()[0].memory_stats()         # None on a CPU
    if memory and "peak_bytes_in_use" in memory:
        result["peak_device_mib"] = memory["peak_bytes_in_use"] / 2**20
    shape = (args.batch, args.height, args.width, args.classes, args.base_width)
    amp = args.dtype == "bfloat16"
    for peer, module, script in (("torch", "torch", "unet_torch.py"), ("keras", "tensorflow", "unet_keras.py")):
        if args.no_peers or not installed(module) or (amp and peer == "keras"):
            continue
        rate = run_peer(script, *shape, "train", *(["amp"] if amp else []))
        if rate:
            result["peers"][peer] = rate
    ours = before
    if result["peers"]:
        result["ours_before_after"] = [before, time_ours()]
        ours = sum(result["ours_before_after"]) / 2
    result.update(images_per_second=ours, step_ms=1000 * args.batch / ours)
    for peer, rate in result["peers"].items():
        result[f"ratio_{peer}"] = ours / rate
    return result


def our_timer(args):
    """A function that times our compiled train step (median images/second) each time it is called."""
    from streetseg_jax import sharding, train

    config = ml_collections.ConfigDict(dict(
        seed=0, num_train_steps=10_000, learning_rate=1e-3, warmup_steps=0, lr_schedule="cosine",
        end_learning_rate_factor=1.0, optimizer="adam", weight_decay=0.0, grad_clip_norm=0.0,
        model=dict(base_width=args.base_width, depth=4, upsample=args.upsample, dropout=0.0, dtype=args.dtype)))
    mesh = sharding.make_mesh()
    tx = train.make_optimizer(config)
    graphdef, state = train.init_state(config, args.classes, tx, mesh)
    step = train.make_train_step(graphdef, tx, np.ones(args.classes, np.float32), 255, mesh)
    rng = np.random.default_rng(0)
    batch = sharding.global_batch({
        "image": rng.integers(0, 256, (args.batch, args.height, args.width, 3), dtype=np.uint8),
        "label": rng.integers(0, args.classes, (args.batch, args.height, args.width)).astype(np.uint8)}, mesh)
    holder = {"state": state}

    def steps():
        for _ in range(args.steps):
            holder["state"], metrics = step(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    return lambda: median_rate(steps, args.steps * args.batch, warmup=1, repeats=args.repeats)
