"""import: images/second from a LabelMe export to a finished street_seg dataset (the from_annotations build).

    python tools/benchmark.py import [--num_images 500] [--polygons 30] [--height 360 --width 480]
                                     [--image_format jpg|png] [--embed] [--num_workers N]

The export is generated first (not timed): --distinct scenes of --polygons random star-shaped polygons each (as in
the rasterize benchmark), painted in their class colours over noise and saved as JPEG (or PNG), with one LabelMe
JSON per image (`imagePath`, and `imageData` too with --embed); the scenes repeat under new names up to
--num_images. The time covers everything `python -m streetseg_jax.data build --config from_annotations` does:
fingerprinting the export, reading the JSON, the validation report (one rasterization per image), then the TFDS
build (image decode and PNG encode, array_record writing; the masks are those the validation drew).

On a machine shared with other work the wall-clock figure says little, so CPU time is reported too:
`cpu_ms_per_image` (this process and its workers) and `cpu_bound_images_per_second`, the rate the same CPU work
gives on idle cores: images / max(all CPU seconds / cores, this process's CPU seconds), the latter being the part
that does not run in parallel (reading the JSON, TFDS serialising and writing).
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import resource
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.rasterize import random_polygon
from streetseg_jax.labels.label_map import default_label_map

UNITS = {"images_per_second": "images/s", "cpu_bound_images_per_second": "images/s", "cpu_ms_per_image": "ms",
         "build_seconds": "s", "num_images": "images", "height": "px",
         "width": "px", "polygons_per_image": "polygons", "export_megabytes": "MB"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num_images", type=int, default=500)
    parser.add_argument("--distinct", type=int, default=25, help="distinct scenes, repeated under new names")
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--polygons", type=int, default=30, help="polygons per image")
    parser.add_argument("--image_format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--embed", action="store_true", help="also embed each image in its JSON (imageData)")
    parser.add_argument("--num_workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> dict:
    from streetseg_jax.data.build import build

    with tempfile.TemporaryDirectory(prefix="bench_import_") as tmp:
        export, label_map = Path(tmp) / "export", Path(tmp) / "labels.json"
        write_export(export, args)
        label_map.write_text(default_label_map().to_json())
        size = sum(p.stat().st_size for p in export.iterdir())
        before = _cpu_seconds()
        result = build("from_annotations", Path(tmp) / "tfds", export, name="bench", format="labelme",
                       label_map=str(label_map), num_workers=args.num_workers, log=lambda text: None)
        main, workers = (after - start for after, start in zip(_cpu_seconds(), before))
    images = sum(result.splits.values())
    cpus = os.cpu_count() or 1
    return {"num_images": images, "build_seconds": result.seconds, "images_per_second": images / result.seconds,
            "cpu_ms_per_image": 1000 * (main + workers) / images,
            "cpu_bound_images_per_second": images / max((main + workers) / cpus, main),
            "height": args.height, "width": args.width, "polygons_per_image": args.polygons,
            "image_format": args.image_format, "embedded": args.embed, "export_megabytes": size / 1e6,
            "cpus": cpus}


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process and of its finished child processes (the build's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def write_export(folder: Path, args) -> None:
    """--num_images LabelMe JSON files (and images) made from --distinct random scenes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(args.seed)
    scenes = [random_scene(rng, args) for _ in range(args.distinct)]
    for i in range(args.num_images):
        image_bytes, shapes = scenes[i % len(scenes)]
        stem = f"frame_{i:05d}"
        (folder / f"{stem}.{args.image_format}").write_bytes(image_bytes)
        document = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": f"{stem}.{args.image_format}",
                    "imageData": base64.b64encode(image_bytes).decode() if args.embed else None,
                    "imageHeight": args.height, "imageWidth": args.width}
        (folder / f"{stem}.json").write_text(json.dumps(document))


def random_scene(rng: np.random.Generator, args) -> tuple[bytes, list[dict]]:
    """(encoded image, LabelMe shapes): polygons painted in their class colours, later ones on top, over noise."""
    label_map = default_label_map()
    noise = rng.integers(0, 40, (args.height, args.width, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    shapes = []
    for _ in range(args.polygons):
        info = label_map.classes[int(rng.integers(0, label_map.num_classes))]
        points = random_polygon(rng, args.height, args.width, 8.0).round(2)
        draw.polygon([tuple(p) for p in points], fill=tuple(info.color))
        shapes.append({"label": info.name, "points": points.tolist(), "group_id": None, "description": "",
                       "shape_type": "polygon", "flags": {}, "mask": None})
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if args.image_format == "jpg" else "PNG", quality=90)
    return buffer.getvalue(), shapes
