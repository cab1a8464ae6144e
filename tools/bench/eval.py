"""eval: our jitted confusion matrix on device vs the seed's numpy bincount confusion matrix, on the same random
labels.

Both sides get the same int32 labels and predictions (default 64 x 360 x 480, 12 classes, as the peer script) and do
the same work: the (K, K) confusion matrix (the seed's IoU from it, a dozen operations on K*K numbers, is left out of
both). Ours is timed on arrays already on the device(s), sharded over the images as the eval loop shards its batches
(one XLA device per core on a CPU, each counting its images with our kernel, `confusion.cc`); the peer is numpy as
the seed runs it, on one thread: on a CPU the ratio is that of our evaluation as it runs against the seed's, not of
one core against one core (`devices` says how many ours used). The two take turns, call by call, so a change in the
machine's load slows both alike; the first call of each (compilation) is excluded and each figure is the median
over --repeats calls. `--with_onehot` also times a one-hot matmul formulation, the alternative that lost to bincount
on XLA:CPU.
"""
from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import interleaved_medians, median_wall_and_cpu_seconds
from peers import miou_numpy
from streetseg_jax.metrics import confusion_matrix

UNITS = {
    "pixels": "pixel",
    "pixels_per_second": "pixel/s",
    "peers.numpy": "pixel/s",
    "ratio_numpy": "x",
    "alternatives.onehot_matmul": "pixel/s",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num_images", type=int, default=64)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--classes", "--num_classes", dest="num_classes", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per method (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with_onehot", action="store_true", help="also time the one-hot matmul formulation")


def run(args: argparse.Namespace) -> dict:
    from streetseg_jax import sharding

    sharding.split_cpu_into_cores(args.num_images)     # as evaluation does: one XLA device per core on a CPU
    k = args.num_classes
    rng = np.random.default_rng(args.seed)
    shape = (args.num_images, args.height, args.width)
    labels = rng.integers(0, k, shape).astype(np.int32)
    preds = rng.integers(0, k, shape).astype(np.int32)
    # Sharded over the images as the eval loop's batches are: each device counts its share, XLA adds the counts.
    mesh = sharding.make_mesh()
    batched = sharding.batch_sharding(mesh)
    labels_on_device, preds_on_device = jax.device_put(labels, batched), jax.device_put(preds, batched)

    def ours():
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):   # as the eval step: our CPU kernel per device
            conf = confusion_matrix(labels_on_device, preds_on_device, num_classes=k, ignore_id=255)
        return conf.block_until_ready()

    # Check both sides count the same thing before timing them.
    np.testing.assert_array_equal(np.asarray(ours()), miou_numpy.confusion(labels, preds, k))
    pixels = labels.size
    seconds = interleaved_medians({"ours": ours, "numpy": lambda: miou_numpy.confusion(labels, preds, k)},
                                  args.repeats)
    result = {
        "device": str(jax.devices()[0].platform),
        "devices": jax.device_count(),
        "peer_threads": 1,
        "pixels": pixels,
        "pixels_per_second": pixels / seconds["ours"],
        "peers": {"numpy": pixels / seconds["numpy"]},
    }
    result["ratio_numpy"] = result["pixels_per_second"] / result["peers"]["numpy"]
    if args.with_onehot:
        onehot = lambda: onehot_confusion(labels_on_device, preds_on_device, k).block_until_ready()  # noqa: E731
        np.testing.assert_array_equal(np.asarray(onehot()), miou_numpy.confusion(labels, preds, k))
        result["alternatives"] = {"onehot_matmul": pixels / median_wall_and_cpu_seconds(onehot, args.repeats)[0]}
    return result


@functools.partial(jax.jit, static_argnames=("num_classes", "chunk"))
def onehot_confusion(labels, preds, num_classes: int, chunk: int = 4096):
    """one_hot(labels).T @ one_hot(preds), chunk by chunk: float32 partial sums stay exact (chunk < 2**24)."""
    k = num_classes
    valid = (labels >= 0) & (labels < k)
    labels = jnp.where(valid, labels, k).ravel()  # class k has no one-hot column, so it counts nowhere
    pad = (-labels.size) % chunk
    labels = jnp.pad(labels, (0, pad), constant_values=k).reshape(-1, chunk)
    preds = jnp.pad(preds.ravel(), (0, pad)).reshape(-1, chunk)

    def add_chunk(total, chunk_pair):
        chunk_labels, chunk_preds = chunk_pair
        counts = jax.nn.one_hot(chunk_labels, k).T @ jax.nn.one_hot(chunk_preds, k)
        return total + counts.astype(jnp.int32), None

    total, _ = jax.lax.scan(add_chunk, jnp.zeros((k, k), jnp.int32), (labels, preds))
    return total
