"""polygonize: predicted masks per second turned into editable polygons (labels.polygonize.mask_to_shapes).

Reads the class-id mask PNGs in --masks (default: tests/data/predicted_masks, a barely trained U-Net's 480x360
predictions of 400-650 regions each before small ones are absorbed) with the default label map, and times
mask_to_shapes at its default tolerance and minimum area: one untimed warm-up pass, then the median of --repeats
timed passes over all masks. `cpu_masks_per_second` divides by this process's CPU time, as in `rasterize`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from streetseg_jax.labels.convert import read_mask_png
from streetseg_jax.labels.label_map import default_label_map
from streetseg_jax.labels.polygonize import mask_to_shapes

from bench.common import median_wall_and_cpu_seconds

PREDICTED = Path(__file__).resolve().parents[2] / "tests" / "data" / "predicted_masks"
UNITS = {"masks_per_second": "masks/s", "cpu_masks_per_second": "masks/s", "ms_per_mask": "ms",
         "shapes_per_mask": "shapes"}


def add_arguments(parser) -> None:
    parser.add_argument("--masks", type=Path, default=PREDICTED, help="folder of class-id mask PNGs")
    parser.add_argument("--repeats", type=int, default=5)


def run(args) -> dict:
    paths = sorted(args.masks.glob("*.png"))
    if not paths:
        print(f"error: no mask PNGs in {args.masks}", file=sys.stderr)
        raise SystemExit(2)
    masks, label_map = [read_mask_png(p) for p in paths], default_label_map()
    seconds, cpu_seconds, shapes = median_wall_and_cpu_seconds(
        lambda: sum(len(mask_to_shapes(mask, label_map)) for mask in masks), args.repeats)
    height, width = masks[0].shape
    return {
        "masks_per_second": len(masks) / seconds,
        "cpu_masks_per_second": len(masks) / cpu_seconds,
        "ms_per_mask": 1000 * seconds / len(masks),
        "shapes_per_mask": shapes / len(masks),
        "masks": len(masks), "height": height, "width": width, "repeats": args.repeats,
    }
