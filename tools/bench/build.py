"""build: time the street_seg/synthetic build (scenes written, rasterized, encoded, stored as array_record).

    python tools/benchmark.py build [--num_images 1000] [--height 360 --width 480] [--num_workers N]

Builds into a temporary data dir (deleted afterwards) so nothing is reused; the time covers the whole
`python -m streetseg_jax.data build` work: scene generation, XML reading, rasterizing, PNG encoding, writing.
"""
from __future__ import annotations

import argparse
import tempfile

UNITS = {"build_seconds": "s", "images_per_second": "images/s", "num_images": "images"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num_images", type=int, default=1000, help="synthetic scenes to build")
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--num_workers", type=int, default=None, help="worker processes (default: all cores)")


def run(args: argparse.Namespace) -> dict:
    from streetseg_jax.data.build import build

    with tempfile.TemporaryDirectory(prefix="bench_build_") as data_dir:
        result = build("synthetic", data_dir, num_images=args.num_images, height=args.height, width=args.width,
                       num_workers=args.num_workers)
    return {
        "num_images": sum(result.splits.values()),
        "build_seconds": result.seconds,
        "images_per_second": sum(result.splits.values()) / result.seconds,
    }
