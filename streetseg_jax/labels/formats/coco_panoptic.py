"""COCO panoptic: one JSON plus one RGB PNG per image whose colours are segment ids.

    {"images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}, ...],
     "categories": [{"id": 7, "name": "road", "isthing": 0}, ...],
     "annotations": [{"image_id": 1, "file_name": "a.png",
                      "segments_info": [{"id": 3226956, "category_id": 7, "iscrowd": 0}, ...]}, ...]}

A pixel's segment id is R + 256 * G + 256**2 * B; id 0 is unlabelled (left to the fill). Each segment becomes a
raster Shape named after its category (things and stuff alike: a semantic mask does not tell them apart). Segments
do not overlap, so their order does not matter. Crowd segments follow the COCO instances rule: ignore id by
default, their category with `crowd="class"`.

PNGs are looked up, by the annotation's `file_name`, in the folder named after the JSON (`panoptic_val2017.json`
-> `panoptic_val2017/`, panopticapi's layout), then `masks/`, `panoptic/` and the JSON's own folder; images as for
COCO instances. A pixel id that `segments_info` does not list is an error (panopticapi's evaluation refuses the same
file), so a PNG that belongs to another JSON is caught.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from streetseg_jax.labels.formats import coco
from streetseg_jax.labels.images import open_rgb
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, Shape, read_each

MASK_DIRS = ("masks", "panoptic", "")


def read(path: Path, label_map=None, crowd: str = "ignore") -> list[Annotation]:
    """Every COCO panoptic JSON in a folder (and its `annotations/` folder), or one JSON file."""
    if crowd not in coco.CROWD_CHOICES:
        raise ValueError(f"crowd must be one of {coco.CROWD_CHOICES}, got {crowd!r}")
    path = Path(path)
    if path.is_file() and coco.scan_json_keys(path, coco.COCO_KEYS, ('"segmentation"',)) == '"segmentation"':
        raise LabelFormatError(f"{path}: this is a COCO instances file (segmentation); read it as coco")
    files = [path] if path.is_file() else coco.json_files(path, looks_like_panoptic)
    if not files:
        raise LabelFormatError(f"{path}: no COCO panoptic JSON (with images, annotations and segments_info) found")
    root = coco.export_root(path)
    return [a for annotations in read_each(files, lambda f: read_panoptic(f, root, crowd)) for a in annotations]


def looks_like(path: Path) -> bool:
    return bool(coco.json_files(Path(path), looks_like_panoptic, coco.DETECT_MOST_FILES))


def looks_like_panoptic(path: Path) -> bool:
    found = coco.scan_json_keys(path, coco.COCO_KEYS, ('"segmentation"', '"segments_info"'))
    return found == '"segments_info"'


def read_panoptic(json_path: Path, root: Path | None = None, crowd: str = "ignore") -> list[Annotation]:
    """One Annotation per entry of `annotations` (file order), with one raster Shape per listed segment."""
    json_path = Path(json_path)
    root = coco.export_root(json_path) if root is None else Path(root)
    data = coco.load_json(json_path)
    names = coco.categories_by_id(data, json_path)
    images = coco.annotations_by_image(data, json_path, root)
    out: dict = {}
    for index, entry in enumerate(coco.json_list(data, "annotations", json_path)):
        where = f"{json_path}: annotation {index}"
        try:
            annotation = _annotation(entry, index, images, names, json_path, root, where, crowd)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
            if isinstance(e, LabelFormatError):
                raise
            raise LabelFormatError(f"{where}: malformed ({type(e).__name__}: {e})") from None
        if id(annotation) in out:
            raise LabelFormatError(f"{where}: a second annotation for image {annotation.file_name!r}")
        out[id(annotation)] = annotation
    return list(out.values())


def _annotation(entry, index: int, images: dict, names: dict, json_path: Path, root: Path, where: str,
                crowd: str) -> Annotation:
    image_id = coco.entry_id(coco.entry_field(entry, "image_id", json_path, index), where, "image_id")
    annotation = images.get(image_id)
    if annotation is None:
        raise LabelFormatError(f"{where}: image_id {image_id!r} is not in images")
    segments = entry.get("segments_info")
    if not isinstance(segments, list):
        raise LabelFormatError(f"{where}: segments_info must be a list")
    ids = _segment_ids(_png_path(entry, json_path, root, where), annotation, where)
    annotation.shapes = _segment_shapes(segments, ids, names, where, crowd)
    return annotation


def _png_path(entry: dict, json_path: Path, root: Path, where: str) -> Path:
    name = entry.get("file_name")
    if not isinstance(name, str) or not name:
        raise LabelFormatError(f"{where}: has no file_name (the segment-id PNG)")
    folders = (json_path.stem, *MASK_DIRS)
    png = coco.find_file(root, json_path, name, "panoptic PNG file_name", folders)
    if png is None:
        raise LabelFormatError(f"{where}: panoptic PNG {name!r} not found in {', '.join(f or '.' for f in folders)} "
                               f"beside {json_path.name}")
    return png


def _segment_ids(png: Path, annotation: Annotation, where: str) -> np.ndarray:
    """(H, W) int64 segment ids of the PNG, which must be RGB (ids need all 24 bits) and match the image's size."""
    mode = _mode(png)
    if mode != "RGB":
        raise LabelFormatError(f"{where}: {png.name} is a {mode} image; segment-id PNGs are RGB "
                               "(id = R + 256 G + 256^2 B)")
    rgb = open_rgb(png).astype(np.int64)
    if rgb.shape[:2] != (annotation.height, annotation.width):
        raise LabelFormatError(f"{where}: {png.name} is {rgb.shape[1]}x{rgb.shape[0]}, the image is "
                               f"{annotation.width}x{annotation.height}")
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _mode(png: Path) -> str:
    try:
        with Image.open(png) as image:
            return image.mode
    except (OSError, ValueError, SyntaxError) as e:
        raise LabelFormatError(f"{png}: unreadable image ({e})") from None


def _segment_shapes(segments: list, ids: np.ndarray, names: dict, where: str, crowd: str) -> list[Shape]:
    claimed = ids == 0                  # unlabelled; every other pixel must belong to a listed segment
    shapes = []
    for k, segment in enumerate(segments):
        seg_where = f"{where}: segment {k}"
        seg_id = segment.get("id") if isinstance(segment, dict) else None
        if not isinstance(seg_id, int) or isinstance(seg_id, bool) or not 0 < seg_id < 256 ** 3:
            raise LabelFormatError(f"{seg_where}: id must be an integer 1..{256 ** 3 - 1}, got {seg_id!r}")
        category_id = coco.entry_id(segment.get("category_id"), seg_where, "category_id")
        if category_id not in names:
            raise LabelFormatError(f"{seg_where}: category_id {category_id!r} is not in categories")
        raster = ids == seg_id
        claimed |= raster
        is_crowd = segment.get("iscrowd", 0) in (1, "1")
        shapes.append(Shape(names[category_id], np.zeros((0, 2)), ignore=is_crowd and crowd == "ignore",
                            raster=raster))
    unlisted = np.unique(ids[~claimed]).tolist()
    if unlisted:
        raise LabelFormatError(f"{where}: the PNG holds segment id(s) {unlisted[:5]} that segments_info does not list")
    return shapes
