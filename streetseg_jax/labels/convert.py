"""Annotations to masks: class names through the label map, unknown names collected, masks written as palette PNGs.

Used by `python -m streetseg_jax.labels to-masks` and by the dataset builder. Unknown class names are a user
error worth stopping for: all of them are collected first, across every file, so one run names them all.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, PngImagePlugin

from streetseg_jax.atomic import save_image
from streetseg_jax.labels.label_map import LabelMap
from streetseg_jax.labels.rasterize import RasterResult, rasterize
from streetseg_jax.labels.shapes import Annotation

UNKNOWN_CHOICES = ("error", "ignore")
_FILES_SHOWN = 10   # per unknown name, in error messages


class UnknownLabelsError(ValueError):
    """Class names the label map does not know; `.unknown` maps each name to the files it occurs in."""

    def __init__(self, unknown: dict[str, list[str]], label_map: LabelMap | None = None):
        self.unknown = unknown
        lines = [f"  {name!r} in {_file_list(files)}" for name, files in unknown.items()]
        known = f"\nknown classes: {', '.join(label_map.names)}" if label_map is not None else ""
        super().__init__(f"{len(unknown)} class name(s) not in the label map:\n" + "\n".join(lines) + known +
                         "\nadd them to the label map (as classes or as aliases of one), or map them to the ignore "
                         "id (unknown='ignore', --unknown ignore)")


def _file_list(files: list[str]) -> str:
    shown = ", ".join(files[:_FILES_SHOWN])
    more = len(files) - _FILES_SHOWN
    return shown + (f" and {more} more file(s)" if more > 0 else "")


def find_unknown_labels(annotations: Iterable[Annotation], label_map: LabelMap) -> dict[str, list[str]]:
    """Every class name the label map cannot resolve, with the files it occurs in (first-seen order)."""
    unknown: dict[str, list[str]] = {}
    for annotation in annotations:
        for shape in annotation.shapes:
            if shape.ignore or label_map.id_of(shape.label) is not None:
                continue
            files = unknown.setdefault(shape.label, [])
            if str(annotation.source) not in files:
                files.append(str(annotation.source))
    return unknown


def annotation_to_mask(annotation: Annotation, label_map: LabelMap, unknown: str = "error") -> RasterResult:
    """Rasterize one annotation; unknown names raise UnknownLabelsError, or with unknown="ignore" get ignore_id.

    Problems (degenerate or off-image shapes) come back in the result, each prefixed with the annotation file.
    """
    if unknown not in UNKNOWN_CHOICES:
        raise ValueError(f"unknown must be one of {UNKNOWN_CHOICES}, got {unknown!r}")
    if unknown == "error":
        missing = find_unknown_labels([annotation], label_map)
        if missing:
            raise UnknownLabelsError(missing, label_map)
    result = rasterize(drawing_items(annotation, label_map), annotation.height, annotation.width,
                       label_map.fill_id, label_map.ignore_id)
    result.problems = [f"{annotation.source}: {p}" for p in result.problems]
    return result


def drawing_items(annotation: Annotation, label_map: LabelMap) -> list[tuple[int, object]]:
    """(class id, shape) in drawing order, the ignore id for a name the label map does not know (the rasterizer
    paints a shape the tool marked "ignore" with the ignore id itself)."""
    ids = class_ids(annotation, label_map)
    return [(label_map.ignore_id if ids[shape.label] is None else ids[shape.label], shape)
            for shape in annotation.shapes]


def rasterize_with_unlabelled(annotation: Annotation, label_map: LabelMap) -> tuple[np.ndarray, int | None, list]:
    """(the mask annotation_to_mask(unknown="ignore") makes, pixels no shape claims, the rasterizer's problems,
    shapes left with no pixel of their class included: labels check's).

    The pixels nobody claims are found by drawing with a free id as the fill. When no shape has the fill's own
    class, that drawing is the mask itself with the free id standing for the fill (the fill's claim on a pixel
    is then the same in both); otherwise the mask is drawn a second time."""
    items = drawing_items(annotation, label_map)
    height, width, fill = annotation.height, annotation.width, label_map.fill_id
    free = next((v for v in range(255, label_map.num_classes - 1, -1) if v != label_map.ignore_id), None)
    result = rasterize(items, height, width, fill if free is None else free, label_map.ignore_id, report_covered=True)
    if free is None:
        return result.mask, None, result.problems
    unclaimed = result.mask == free
    if any((label_map.ignore_id if shape.ignore else class_id) == fill for class_id, shape in items):  # as drawn
        mask = rasterize(items, height, width, fill, label_map.ignore_id).mask
    else:
        mask = np.where(unclaimed, np.uint8(fill), result.mask)
    return mask, int(unclaimed.sum()), result.problems


def mask_png(mask: np.ndarray) -> bytes:
    """A class-id mask as 8-bit greyscale PNG (fast zlib level: masks compress well anyway)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def class_ids(annotation: Annotation, label_map: LabelMap) -> dict[str, int | None]:
    """{class name as written: id or None}, each name looked up once (a lookup normalises every alias)."""
    return {label: label_map.id_of(label) for label in {shape.label for shape in annotation.shapes}}


def write_mask_png(path: str | Path, mask: np.ndarray, label_map: LabelMap, text: dict[str, str] | None = None) -> None:
    """8-bit palette PNG in the label map's colours, written atomically (streetseg_jax.atomic); `text` goes into
    its text chunks."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask must be a 2-D uint8 array, got {mask.dtype} {mask.shape}")
    image = Image.fromarray(mask)                          # mode "L"; putpalette turns it into "P", same values
    image.putpalette(label_map.palette().reshape(-1).tolist())
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    save_image(image, path, format="PNG", pnginfo=info)


def read_mask_png(path: str | Path) -> np.ndarray:
    """The class ids of a mask PNG (palette or 8-bit grey) as an (H, W) uint8 array."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path}: mask PNG must be 8-bit palette or greyscale (class ids as pixel values), "
                             f"got mode {image.mode}")
        return np.asarray(image, dtype=np.uint8).copy()
