"""rasterize: masks per second from random street-like polygon scenes (coverage anti-aliasing, one process).

Each scene holds --polygons random star-shaped polygons of 5-40 vertices whose diameters run from --min_size
pixels to a third of the image width, centres anywhere in the image (so some stick out and get clipped), random
classes 0..7. Scenes are generated (seeded) before timing; the figure is the median over --repeats timed passes
over all scenes, after one untimed warm-up pass. `cpu_masks_per_second` divides by this process's CPU time
instead of wall time: on a machine shared with other work it shows the rasterizer's own speed, and
`load_average_1min` says how shared the machine was.
"""
from __future__ import annotations

import numpy as np

from streetseg_jax.labels.rasterize import rasterize
from streetseg_jax.labels.shapes import Shape

from bench.common import median_wall_and_cpu_seconds

UNITS = {"masks_per_second": "masks/s", "cpu_masks_per_second": "masks/s", "ms_per_mask": "ms",
         "height": "px", "width": "px",
         "polygons_per_mask": "polygons", "vertices_per_polygon": "vertices", "masks_per_repeat": "masks"}


def add_arguments(parser) -> None:
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--polygons", type=int, default=30, help="polygons per mask")
    parser.add_argument("--masks", type=int, default=100, help="distinct scenes, rasterized once per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min_size", type=float, default=8.0, help="smallest polygon diameter in pixels")
    parser.add_argument("--seed", type=int, default=0)


def random_polygon(rng: np.random.Generator, height: int, width: int, min_size: float) -> np.ndarray:
    """A star-shaped polygon: sorted angles around a centre, radii between 50% and 100% of its size."""
    vertices = int(rng.integers(5, 41))
    radius = 0.5 * rng.uniform(min_size, width / 3)
    centre = rng.uniform((0, 0), (width, height))
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * rng.uniform(0.5, 1.0, vertices)
    return centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def random_scene(rng: np.random.Generator, args) -> list[tuple[int, Shape]]:
    return [(int(rng.integers(0, 8)), Shape("region", random_polygon(rng, args.height, args.width, args.min_size)))
            for _ in range(args.polygons)]


def run(args) -> dict:
    rng = np.random.default_rng(args.seed)
    scenes = [random_scene(rng, args) for _ in range(args.masks)]
    seconds, cpu_seconds, _ = median_wall_and_cpu_seconds(
        lambda: [rasterize(scene, args.height, args.width) for scene in scenes], args.repeats)
    vertices = np.mean([len(shape.exterior) for scene in scenes for _, shape in scene])
    return {
        "masks_per_second": args.masks / seconds,
        "cpu_masks_per_second": args.masks / cpu_seconds,
        "ms_per_mask": 1000 * seconds / args.masks,
        "height": args.height, "width": args.width,
        "polygons_per_mask": args.polygons,
        "vertices_per_polygon": float(vertices),
        "masks_per_repeat": args.masks, "repeats": args.repeats, "seed": args.seed,
        "anti_aliasing": "exact area coverage",
    }
