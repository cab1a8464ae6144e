"""build: time the street_seg/synthetic build (scenes written, read back, rasterized, stored as array_record).

    python tools/benchmark.py build [--num_images 1000] [--height 360 --width 480] [--num_workers N]

Builds into a temporary data dir (deleted afterwards) so nothing is reused; the time covers the whole
`python -m streetseg_jax.data build` work: scene generation (each photo written as PNG beside its XML), reading
them back (XML parsing, PNG decoding), rasterizing, writing the raw pixels (version 2.0.0 stores no PNG).
"""
from __future__ import annotations

import argparse
import tempfile

from bench.common import progress

UNITS = {"build_seconds": "s", "images_per_second": "images/s", "num_images": "images"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num_images", type=int, default=1000, help="synthetic scenes to build")
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--num_workers", type=int, default=None, help="worker processes (default: all cores)")


def run(args: argparse.Namespace) -> dict:
    from streetseg_jax.data.build import build

    progress(f"building {args.num_images} synthetic scenes")
    with tempfile.TemporaryDirectory(prefix="bench_build_") as data_dir:
        result = build("synthetic", data_dir, num_images=args.num_images, height=args.height, width=args.width,
                       num_workers=args.num_workers)
    return {
        "num_images": sum(result.splits.values()),
        "build_seconds": result.seconds,
        "images_per_second": sum(result.splits.values()) / result.seconds,
    }
