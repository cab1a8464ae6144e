"""train: our jitted train step vs PyTorch and Keras U-Nets of the same architecture, same shapes, same batch.

Keys: images_per_second (ours, `--upsample`), peers {torch, keras} (img/s, where installed), ratio_<peer>,
peak_rss_mib (host memory of this process after the timed steps), peak_device_mib (on a GPU: the most device
memory JAX held), ours_before_after (where peers ran: our img/s timed before and after them; a shared machine's
speed drifts, and images_per_second is their mean, so a drift during the run biases the ratios less; a drift of
more than 20% is warned of). Peers run
in subprocesses, in the same run, on the GPU where torch sees one. With `--dtype bfloat16` the torch peer runs
under bfloat16 autocast (PyTorch AMP, float32 weights, as ours) and the Keras peer, which has no mixed-precision
mode here, is left out. A peer that fails is named in peer_errors (and has no ratio). When peers run, --height and
--width must be multiples of 16: the peers do not pad. Progress lines go to stderr as each phase ends.
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np

from bench.common import (add_peer, installed, median_rate, peak_rss_mib, progress, refuse_sizes_peers_cannot_take,
                          warn)
from streetseg_jax.models.unet import DTYPES, UPSAMPLE_MODES

UNITS = {"images_per_second": "img/s", "peers": "img/s", "ours_before_after": "img/s", "peak_rss_mib": "MiB",
         "peak_device_mib": "MiB", "step_ms": "ms"}


def add_arguments(parser) -> None:
    for name, default in (("batch", 8), ("height", 192), ("width", 256), ("classes", 8), ("base_width", 16)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--upsample", default="transpose", choices=UPSAMPLE_MODES,
                        help="transpose is the peers' architecture")
    parser.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no_peers", action="store_true")


# A change of our rate between before and after the peers beyond this fraction is warned of.
DRIFT = 0.2


def run(args) -> dict:
    from streetseg_jax import sharding

    amp = args.dtype == "bfloat16"
    peers = [(peer, script) for peer, module, script in (("torch", "torch", "unet_torch.py"),
                                                         ("keras", "tensorflow", "unet_keras.py"))
             if not args.no_peers and installed(module) and not (amp and peer == "keras")]
    if peers:
        refuse_sizes_peers_cannot_take(args.height, args.width, "--no_peers")
    sharding.split_cpu_into_cores(args.batch)      # as training does: one XLA device per core on a CPU
    progress("ours: compiling and timing the train step")
    time_ours = our_timer(args)
    before = time_ours()
    progress(f"ours: {before:.4g} img/s")
    result = {"peak_rss_mib": peak_rss_mib(),
              "settings": f"B={args.batch} {args.height}x{args.width} C={args.classes} F={args.base_width} "
                          f"upsample={args.upsample} {args.dtype} on {jax.device_count()} x "
                          f"{jax.devices()[0].device_kind}",
              "peers": {}}
    memory = jax.devices()[0].memory_stats()         # None on a CPU
    if memory and "peak_bytes_in_use" in memory:
        result["peak_device_mib"] = memory["peak_bytes_in_use"] / 2**20
    shape = (args.batch, args.height, args.width, args.classes, args.base_width)
    for peer, script in peers:
        add_peer(result, peer, script, *shape, "train", *(["amp"] if amp else []))
    ours = before
    if result["peers"]:
        progress("ours: timing again after the peers")
        after = time_ours()
        progress(f"ours: {after:.4g} img/s")
        result["ours_before_after"] = [before, after]
        ours = (before + after) / 2
        warn_of_drift(result, before, after)
    result.update(images_per_second=ours, step_ms=1000 * args.batch / ours)
    for peer, rate in result["peers"].items():
        result[f"ratio_{peer}"] = ours / rate
    return result


def warn_of_drift(result: dict, before: float, after: float) -> None:
    """Ours timed before and after the peers differing by more than DRIFT: the machine's speed changed while the
    peers ran, so their figures and the ratios are uncertain."""
    if abs(after - before) > DRIFT * max(before, after):
        warn(result, f"ours ran at {before:.4g} img/s before the peers and {after:.4g} after: the machine's speed "
                     "changed during the run, so the ratios are uncertain")


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
