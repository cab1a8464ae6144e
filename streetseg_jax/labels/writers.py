"""Predicted masks written as polygons in labelling tools' own formats, ready to open and correct there.

    paths = export_predictions(masks, image_paths, label_map, "labelme", out_dir)   # predict --export labelme

Every writer takes Shapes in drawing order, as `polygonize.mask_to_shapes` returns them: by nesting depth
(`Shape.z_order`), every hole covered exactly by the shapes drawn after its owner. Each writer leaves its files
readable by our own reader for that format (`python -m streetseg_jax.labels to-masks`) and by the tool:

- LabelMe (`write_labelme`): one JSON per image. LabelMe has no holes and draws later shapes on top, so holes are
  left out and the stacking does their work (this needs the covering shapes; mask_to_shapes gives them, fill
  class included). Points are written as they are: LabelMe's window stores canvas coordinates in which pixel
  (r, c) covers [c, c+1) x [r, r+1), our own convention (see formats/labelme.py for why the reader takes them
  so). Regions of the ignore id are labelled `__ignore__`, as LabelMe users do.
- COCO (`write_coco`): one instances JSON for all images. COCO has neither holes in polygons nor a drawing order,
  so a shape with holes is written as a compressed RLE of its pixels (pycocotools) and one without as a polygon;
  category ids are class id + 1 (COCO keeps 0 free). Regions of the ignore id become `iscrowd: 1` annotations of
  an extra `__ignore__` category: crowd regions are what COCO tools leave out of training and scoring.
- CVAT for images 1.1 (`write_cvat`): one XML for all images, polygons with `z_order` (the nesting depth) and
  document order for stacking, holes left out as for LabelMe; `source="auto"` marks them as machine-made.
  Ignore regions are polygons labelled `__ignore__`, which every reader here takes as ignore (shapes.IGNORE_LABEL).

A fill class that is a real class (CamVid's sky) gets shapes in every format, as any other class does
(polygonize.fill_is_background). Classes are named as the tool spelt them (LabelMap.tool_name: 'Road Surface',
where the label map `labels classes` made calls it road_surface), so the polygons go back into the tool's task.

Files are written atomically (streetseg_jax.atomic).
"""
from __future__ import annotations

import datetime
import filecmp
import io
import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from pycocotools import mask as coco_mask

from streetseg_jax.atomic import atomic_file, write_bytes
from streetseg_jax.labels.images import is_rotated
from streetseg_jax.labels.label_map import LabelMap
from streetseg_jax.labels.polygonize import DEFAULT_MIN_AREA, DEFAULT_TOLERANCE, mask_to_shapes
from streetseg_jax.labels.rasterize import rasterize
from streetseg_jax.labels.shapes import IGNORE_LABEL, Shape

EXPORT_FORMATS = ("labelme", "coco", "cvat")
LABELME_VERSION = "5.5.0"          # a LabelMe release whose files hold every key written here
_DECIMALS = 3

ImageShapes = tuple[str, int, int, list[Shape]]   # (file name, height, width, shapes)


# --- LabelMe --------------------------------------------------------------------------------------------------------

def write_labelme(path: str | Path, image_path_relative: str, height: int, width: int, shapes: list[Shape]) -> None:
    """One LabelMe JSON; `image_path_relative` is the image's path relative to the JSON file's folder."""
    document = {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": [_labelme_shape(shape) for shape in _in_drawing_order(shapes)],
        "imagePath": image_path_relative,
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }
    write_bytes(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))


def _labelme_shape(shape: Shape) -> dict:
    points = np.round(np.asarray(shape.exterior, np.float64), _DECIMALS)
    return {"label": IGNORE_LABEL if shape.ignore else shape.label, "points": points.tolist(), "group_id": None,
            "description": "", "shape_type": "polygon", "flags": {}, "mask": None}


# --- COCO -----------------------------------------------------------------------------------------------------------

def write_coco(path: str | Path, images: list[ImageShapes], label_map: LabelMap) -> None:
    """One COCO instances JSON for `images` [(file_name, height, width, shapes), ...]; image ids count from 1."""
    ignore_category = label_map.num_classes + 1
    annotations = []
    for image_id, (_, height, width, shapes) in enumerate(images, start=1):
        for shape in _in_drawing_order(shapes):
            category = ignore_category if shape.ignore else _class_id(shape, label_map) + 1
            annotation = _coco_annotation(shape, int(height), int(width))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                **annotation})
    categories = [{"id": c.id + 1, "name": label_map.tool_name(c.id), "supercategory": ""} for c in label_map.classes]
    if any(a["category_id"] == ignore_category for a in annotations):
        categories.append({"id": ignore_category, "name": IGNORE_LABEL, "supercategory": ""})
    document = {
        "info": {"description": "streetseg_jax predictions", "date_created": _now()},
        "licenses": [],
        "images": [{"id": i, "file_name": name, "height": int(h), "width": int(w)}
                   for i, (name, h, w, _) in enumerate(images, start=1)],
        "categories": categories,
        "annotations": annotations,
    }
    write_bytes(path, (json.dumps(document) + "\n").encode("utf-8"))


def _coco_annotation(shape: Shape, height: int, width: int) -> dict:
    """segmentation, area, bbox and iscrowd: a polygon when the shape has no holes, else the RLE of its pixels."""
    crowd = int(shape.ignore)
    if not shape.holes:
        ring = np.round(np.asarray(shape.exterior, np.float64), _DECIMALS)
        low, high = ring.min(axis=0), ring.max(axis=0)
        return {"segmentation": [ring.reshape(-1).tolist()], "area": round(_polygon_area(ring), _DECIMALS),
                "bbox": [float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])],
                "iscrowd": crowd}
    pixels = rasterize([(1, Shape(shape.label, shape.exterior, shape.holes))], height, width, 0, 255).mask == 1
    rle = coco_mask.encode(np.asfortranarray(pixels.astype(np.uint8)))
    return {"segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
            "area": float(coco_mask.area(rle)), "bbox": [float(v) for v in coco_mask.toBbox(rle)],
            "iscrowd": crowd}


def _polygon_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


# --- CVAT -----------------------------------------------------------------------------------------------------------

def write_cvat(path: str | Path, images: list[ImageShapes], label_map: LabelMap) -> None:
    """One CVAT for images 1.1 XML for `images` [(name, height, width, shapes), ...]; image ids count from 0."""
    check_cvat_names([name for name, *_ in images])
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    has_ignore = any(shape.ignore for *_, shapes in images for shape in shapes)
    _cvat_meta(root, label_map, len(images), has_ignore)
    for image_id, (name, height, width, shapes) in enumerate(images):
        element = ET.SubElement(root, "image", id=str(image_id), name=name, width=str(int(width)),
                                height=str(int(height)))
        for shape in _in_drawing_order(shapes):
            ET.SubElement(element, "polygon", label=IGNORE_LABEL if shape.ignore else shape.label, source="auto",
                          occluded="0", points=_cvat_points(shape.exterior), z_order=str(int(shape.z_order)))
    ET.indent(root)
    write_bytes(path, b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n")


def check_cvat_names(names: list[str]) -> None:
    """ValueError for a file name holding bytes that are not UTF-8 (Python keeps them as lone surrogates): XML
    cannot hold them."""
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"CVAT's XML cannot hold file names that are not UTF-8, such as {name!r}: rename them, "
                             "or export labelme or coco") from None


def _cvat_meta(root: ET.Element, label_map: LabelMap, size: int, has_ignore: bool) -> None:
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    for tag, text in (("name", "streetseg_jax predictions"), ("size", str(size)), ("mode", "annotation"),
                      ("overlap", "0")):
        ET.SubElement(task, tag).text = text
    labels = ET.SubElement(task, "labels")
    colours = [(label_map.tool_name(c.id), "#%02x%02x%02x" % c.color) for c in label_map.classes]
    for name, colour in colours + ([(IGNORE_LABEL, "#ffffff")] if has_ignore else []):
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "color").text = colour
        ET.SubElement(label, "type").text = "any"
        ET.SubElement(label, "attributes")
    ET.SubElement(root.find("meta"), "dumped").text = _now()


def _cvat_points(ring) -> str:
    return ";".join(f"{_number(x)},{_number(y)}" for x, y in np.asarray(ring, np.float64))


def _number(v: float) -> str:
    v = round(float(v), _DECIMALS)
    return str(int(v)) if v.is_integer() else repr(v)


# --- all predictions of a run ---------------------------------------------------------------------------------------

def export_predictions(masks: dict[str, np.ndarray], image_names: dict[str, str], label_map: LabelMap, fmt: str,
                       out_dir: str | Path, tolerance: float = DEFAULT_TOLERANCE,
                       min_area: float = DEFAULT_MIN_AREA, copy_images: bool = True,
                       on_written: Callable[[Path], None] | None = None) -> list[Path]:
    """Write every mask's polygons into out_dir in format `fmt`; returns the annotation files written;
    `on_written(path)` is called as each file (annotation or image copy) is whole.

    masks: key -> (H, W) uint8 class-id mask, the key being the output name without suffix ("street_001", or
    "folder/street_001" for inputs from subfolders). image_names: key -> the source image's path (or a dict with
    that path under "path", as predict passes it). Each image is copied into the export (unless
    copy_images=False), so that the folder opens in the tool as it is and our readers, which refuse image paths
    leading out of an export, find it; give the export a folder of its own (predict: OUT/<fmt>), since LabelMe
    lists every image in the folder it opens and a mask PNG of the same name is never overwritten:
      labelme: OUT/<key>.json beside OUT/<key><suffix>     (open OUT in LabelMe)
      coco:    OUT/annotations.json, images in OUT/images/<key><suffix>
      cvat:    OUT/annotations.xml, images in OUT/images/<key><suffix> (CVAT's task-export layout: create a task
               from the images, then upload the XML as its annotations in "CVAT for images 1.1")
    COCO gets shapes with real holes (RLE), so no shapes of a background fill; LabelMe and CVAT get the covering
    shapes. A fill that is a real class (polygonize.fill_is_background) gets its shapes everywhere.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    missing = sorted(set(masks) - set(image_names))
    if missing:
        raise ValueError(f"no image path for mask(s) {missing[:5]}")
    out_dir = Path(out_dir)
    sources = {key: _source_path(image_names[key]) for key in masks}
    polygons = {key: mask_to_shapes(mask, label_map, tolerance, min_area, fill_shapes=fmt != "coco")
                for key, mask in masks.items()}
    written = on_written or (lambda path: None)
    if fmt == "labelme":
        return [_export_labelme(out_dir, key, sources[key], masks[key].shape, polygons[key], copy_images, written)
                for key in masks]
    images = []
    for key, mask in masks.items():
        if copy_images:
            copy = out_dir / image_copy_name(fmt, key, sources[key])
            copy_atomic(sources[key], copy)
            written(copy)
        images.append((_export_name(key, sources[key]), mask.shape[0], mask.shape[1], polygons[key]))
    path = out_dir / ("annotations.json" if fmt == "coco" else "annotations.xml")
    (write_coco if fmt == "coco" else write_cvat)(path, images, label_map)
    written(path)
    return [path]


def _export_labelme(out_dir: Path, key: str, image: str, shape: tuple, shapes: list[Shape], copy: bool,
                    written: Callable[[Path], None]) -> Path:
    json_path = out_dir / annotation_file_name("labelme", key)
    if copy:
        target = out_dir / image_copy_name("labelme", key, image)
        copy_atomic(image, target)
        written(target)
        relative = target.name
    else:
        relative = Path(os.path.relpath(Path(image).resolve(), json_path.parent.resolve())).as_posix()
    write_labelme(json_path, relative, shape[0], shape[1], shapes)
    written(json_path)
    return json_path


def _source_path(entry) -> str:
    return str(entry["path"]) if isinstance(entry, dict) else str(entry)


def _export_name(key: str, image: str) -> str:
    return f"{key}{Path(image).suffix}"            # the source's own suffix: CVAT and COCO match images by name


def annotation_file_name(fmt: str, key: str) -> str:
    """The file of an export in `fmt` that holds the polygons of `key`, relative to the export's folder."""
    return {"labelme": f"{key}.json", "coco": "annotations.json", "cvat": "annotations.xml"}[fmt]


def image_copy_name(fmt: str, key: str, image: str | Path) -> str:
    """Where an export in `fmt` copies the image of `key`, relative to the export's folder."""
    return _export_name(key, str(image)) if fmt == "labelme" else f"images/{_export_name(key, str(image))}"


# --- small helpers --------------------------------------------------------------------------------------------------

def _in_drawing_order(shapes: list[Shape]) -> list[Shape]:
    return sorted(shapes, key=lambda shape: shape.z_order)     # stable: ties keep list order, as the rasterizer


def _class_id(shape: Shape, label_map: LabelMap) -> int:
    class_id = label_map.id_of(shape.label)
    if class_id is None:
        raise ValueError(f"shape label {shape.label!r} is not in the label map ({', '.join(label_map.names)})")
    return class_id


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def copy_atomic(source: str | Path, target: Path) -> None:
    """Copy an image into the export; a different file already at the target (a predicted mask PNG of the same
    name, say) is never overwritten. A photo a viewer shows turned (EXIF orientation) is written upright, as the
    annotations' coordinates are: a tool or loader that ignores EXIF (torchvision's read_image, OpenCV told to)
    would lay the polygons over the photo turned."""
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise FileNotFoundError(f"image {source} does not exist (needed to copy it into the export)")
    upright = _upright(source) if is_rotated(source) else None
    if target.exists():
        if is_copy_of(source, target, upright):
            return
        raise FileExistsError(f"{target} exists and is not the image {source}; export into another folder")
    if upright is not None:
        write_bytes(target, upright)
        return
    with atomic_file(target) as f, open(source, "rb") as original:
        shutil.copyfileobj(original, f)


def is_copy_of(source: str | Path, target: str | Path, upright: bytes | None = None) -> bool:
    """Whether `target` is the export's copy of the image `source` (or `source` itself): its bytes, or those of
    the photo turned upright (`upright`, where the caller has them already)."""
    source, target = Path(source), Path(target)
    if target.resolve() == source.resolve():
        return True
    if upright is None and is_rotated(source):
        upright = _upright(source)
    return target.read_bytes() == upright if upright is not None else filecmp.cmp(source, target, shallow=False)


def _upright(source: Path) -> bytes:
    """The photo's pixels as a viewer shows them, in its own format, without the orientation tag (JPEG at quality
    95: turning it costs one re-encoding)."""
    buffer = io.BytesIO()
    with Image.open(source) as image:
        upright = ImageOps.exif_transpose(image)      # drops the orientation tag from the EXIF it keeps
        upright.save(buffer, format=image.format, **({"quality": 95} if image.format == "JPEG" else {}),
                     exif=upright.getexif())
    return buffer.getvalue()
