"""LabelMe JSON (the wkentaro/labelme desktop tool): one `<image>.json` per image.

    {"version": "5.7.0", "shapes": [{"label": "car", "points": [[x, y], ...], "shape_type": "polygon",
                                      "mask": null, "group_id": null, "flags": {}}, ...],
     "imagePath": "00000100.jpg", "imageData": null | "<base64>", "imageHeight": 563, "imageWidth": 1000}

Shapes are kept in file order, which is LabelMe's drawing order (later shapes on top):
  polygon    the points as one ring (a missing shape_type, as in old files, means polygon)
  rectangle  two opposite corners
  circle     centre and one point on the circle -> a polygon of enough vertices that it strays from the true circle
             by at most shapes.CIRCLE_TOLERANCE px, with the radius scaled so the polygon's area equals the circle's
  mask       a base64 PNG of the shape's box, its top-left pixel at the first point -> a full-image raster
  line, linestrip, point, points: no area, skipped (not an error); labelme2voc would paint lines 10 px wide and
             points as discs of radius 5, which are drawing artefacts rather than regions
The label `__ignore__` marks a region that counts nowhere (Shape.ignore).

Pixel convention: LabelMe points are used as they are. The LabelMe window draws the image with pixel (row r,
column c) covering [c, c+1) x [r, r+1) and stores the mouse position in those units, which is exactly our
convention (shapes.py), so the masks we draw follow the outlines the annotator saw. labelme2voc (via
labelme.utils.shape_to_mask and PIL's ImageDraw) differs on boundaries only: PIL truncates every vertex to an
integer, treats an integer point as a pixel CENTRE (so a float point x lands at floor(x) + 0.5, on average x
again, but up to half a pixel off), fills the pixels whose centre lies inside, and then also paints the polygon's
1-pixel outline, which makes every shape about half a pixel fatter on each side. We take each boundary pixel's
class by covered area instead. On labelme's own examples the two agree on 99.4-99.9% of pixels, every difference
within about a pixel of a polygon edge (tests/test_format_labelme.py). Shifting our points by +0.5 (the literal
"integer point = pixel centre" reading) agrees worse (98.7-99.9%), because LabelMe writes float points.

imageData (when present) is the image itself and wins over imagePath, as in LabelMe; imagePath is relative to the
JSON file and must stay inside the export folder.
"""
from __future__ import annotations

import base64
import binascii
import glob
import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from streetseg_jax.labels import images
from streetseg_jax.labels.jsonio import load_json
from streetseg_jax.labels.label_map import labelme_labels
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, Shape, ellipse_ring, read_each

AREA_TYPES = ("polygon", "rectangle", "circle", "mask")
NO_AREA_TYPES = ("line", "linestrip", "point", "points")
_LOOKS_LIKE_FILES = 3       # how many JSON files --format auto opens before deciding


def read(path: Path, label_map=None) -> list[Annotation]:
    """Every `*.json` under a folder (recursively, sorted, hidden folders skipped), or one file. In a folder, JSON
    with none of LabelMe's keys (a label map, a check report, a dataset built inside the export) is left out, but an
    empty one beside an image of its name (its annotation, emptied) and a file with some of them but not a LabelMe
    file's shape are errors."""
    path = Path(path)
    if path.is_dir():
        def read_one(f: Path) -> Annotation | None:
            data = load_json(f)
            if _has_labelme_keys(data):
                return read_file(f, path, data)
            image = None if data else next((p for p in f.parent.glob(glob.escape(f.stem) + ".*")
                                            if p.suffix.lower() in images.IMAGE_SUFFIXES), None)
            if image is not None:       # '{}' there read as an image without annotation, the file unnamed
                raise LabelFormatError(f"{f}: beside {image.name}, but not a LabelMe file (none of its keys "
                                       "shapes, imagePath, imageData)")
            return None
        return [a for a in read_each(_json_files(path), read_one) if a is not None]
    return [read_file(path, path.parent)]


def class_list(export: Path) -> tuple[Path, list[str]] | None:
    """labelme2voc's labels.txt for the export (label_map.labelme_labels): (the file, its class names in order,
    __ignore__ left out), or None."""
    path = labelme_labels(Path(export) if Path(export).is_dir() else Path(export).parent)
    if path is None:
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return path, [name for name in names if name != "__ignore__"]


def looks_like(path: Path) -> bool:
    """A JSON file (or one of a folder's first few) holding a `shapes` list and `imagePath` or `imageData`."""
    path = Path(path)
    try:
        candidates = _json_files(path)[:_LOOKS_LIKE_FILES] if path.is_dir() else [path]
        return any(f.suffix.lower() == ".json" and _is_labelme(load_json(f)) for f in candidates)
    except (LabelFormatError, OSError):
        return False


def read_file(path: Path, export_root: Path | None = None, data=None) -> Annotation:
    """One LabelMe JSON file (`data`: its contents, when already loaded); `export_root` (default: the file's folder)
    bounds where imagePath may point."""
    path = Path(path)
    data = load_json(path) if data is None else data
    if not _is_labelme(data):
        raise LabelFormatError(f"{path}: not a LabelMe file (expected a JSON object with a 'shapes' list and "
                               "'imagePath' or 'imageData')")
    file_name, image_path, image_bytes = _image_source(data, path, Path(export_root or path.parent))
    width, height = _image_size(data, path, image_path, image_bytes)
    shapes, no_area = [], []
    for index, raw in enumerate(data["shapes"]):
        shape = _shape(raw, index, path, height, width)
        if shape is not None:
            shapes.append(shape)
        else:                   # _shape's None: a kind of NO_AREA_TYPES
            no_area.append(raw["shape_type"])
    return Annotation(path, file_name, width, height, shapes, image_path=image_path, image_bytes=image_bytes,
                      no_area=no_area)


# --- files -------------------------------------------------------------------------------------------------------

def _json_files(folder: Path) -> list[Path]:
    return images.files_under(folder, "*.json")


def _has_labelme_keys(data) -> bool:
    return isinstance(data, dict) and not data.keys().isdisjoint(("shapes", "imagePath", "imageData"))


def _is_labelme(data) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("shapes"), list)
            and ("imagePath" in data or "imageData" in data))


# --- the image ----------------------------------------------------------------------------------------------------

def _image_source(data: dict, path: Path, export_root: Path) -> tuple[str, Path | None, bytes | None]:
    """(file name as written, resolved image path, embedded bytes); embedded data wins, as in LabelMe."""
    image_path_text = data.get("imagePath")
    if image_path_text is not None and not isinstance(image_path_text, str):
        raise LabelFormatError(f"{path}: 'imagePath' must be a string, got {_type(image_path_text)}")
    file_name = (image_path_text or "").replace("\\", "/")  # LabelMe on Windows writes backslashes
    image_data = data.get("imageData")
    if image_data not in (None, ""):                         # LabelMe too reads the file when there is no data
        return file_name, None, _base64(image_data, "'imageData'", str(path))
    if not file_name:
        raise LabelFormatError(f"{path}: neither 'imageData' nor 'imagePath' names the image")
    # imagePath is relative to the JSON file, and must still land inside the export folder.
    root = Path(export_root).resolve()
    relative = os.path.relpath(path.parent.resolve() / file_name, root)
    try:
        return file_name, images.resolve_inside(root, relative, "imagePath", path), None
    except images.OutsideExportError:
        target = Path(os.path.normpath(path.parent.resolve() / file_name))
        common = Path(os.path.commonpath([root, target]))
        hint = (f" (LabelMe keeps images beside the annotations' folder: give the folder holding both, {common}, "
                "as --input)" if common == root.parent and images.is_file(target) else "")
        raise images.OutsideExportError(f"{path}: imagePath {file_name!r} points outside the export folder "
                                        f"{root}; refused{hint}") from None


def _base64(text, what: str, where: str) -> bytes:
    if not isinstance(text, str):
        raise LabelFormatError(f"{where}: {what} must be a base64 string, got {_type(text)}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise LabelFormatError(f"{where}: {what} is not valid base64 ({e})") from None


def _image_size(data: dict, path: Path, image_path: Path | None, image_bytes: bytes | None) -> tuple[int, int]:
    """(width, height) from imageWidth/imageHeight, or (old files lack them) from the image's header."""
    if data.get("imageWidth") is not None or data.get("imageHeight") is not None:
        width, height = (_positive_int(data.get(key), key, path) for key in ("imageWidth", "imageHeight"))
    else:
        try:
            width, height = images.image_size(io.BytesIO(image_bytes) if image_bytes is not None else image_path)
        except (LabelFormatError, Image.DecompressionBombError) as e:
            why = str(e).split(": ", 1)[-1]                  # drop image_size's own (file object) prefix
            raise LabelFormatError(f"{path}: no imageWidth/imageHeight, and the image gives no size ({why})") \
                from None
    return images.check_size(width, height, str(path))


def _positive_int(value, key: str, path: Path) -> int:
    # JSON writers sometimes turn 563 into 563.0; anything else is not a size.
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            or isinstance(value, float) and not value.is_integer()):
        raise LabelFormatError(f"{path}: '{key}' must be a positive integer, got {value!r}")
    return int(value)


# --- shapes -------------------------------------------------------------------------------------------------------

def _shape(raw, index: int, path: Path, height: int, width: int) -> Shape | None:
    """One LabelMe shape as a Shape in continuous coordinates; None for shapes without area."""
    where = f"{path}: shapes[{index}]"
    if not isinstance(raw, dict):
        raise LabelFormatError(f"{where} must be an object, got {_type(raw)}")
    label = raw.get("label")
    if not isinstance(label, str) or not label.strip():
        raise LabelFormatError(f"{where} needs a non-empty string 'label', got {label!r}")
    where = f"{where} ({label!r})"
    kind = raw.get("shape_type") or "polygon"
    if kind in NO_AREA_TYPES:
        return None
    if kind not in AREA_TYPES:
        raise LabelFormatError(f"{where}: unknown shape_type {_preview(kind)}; expected one of "
                               f"{', '.join(AREA_TYPES + NO_AREA_TYPES)}")
    points = _points(raw.get("points"), where)
    if kind == "mask":
        return Shape(label, np.zeros((0, 2)), raster=_mask(raw.get("mask"), points, where, height, width))
    if kind == "rectangle":
        points = _rectangle(points, where)
    elif kind == "circle":
        points = _circle(points, where)
    return Shape(label, points)


def _points(raw, where: str) -> np.ndarray:
    if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 for p in raw):
        raise LabelFormatError(f"{where}: 'points' must be a list of [x, y] pairs, got {_preview(raw)}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for p in raw for v in p):
        raise LabelFormatError(f"{where}: 'points' must hold numbers, got {_preview(raw)}")
    try:
        points = np.array(raw, dtype=np.float64).reshape(-1, 2)
    except OverflowError:                                 # an integer with hundreds of digits
        points = np.array([[np.inf, np.inf]])
    if not np.isfinite(points).all():                     # e.g. 1e999, which JSON parses as infinity
        raise LabelFormatError(f"{where}: 'points' has a non-finite coordinate")
    return points


def _rectangle(points: np.ndarray, where: str) -> np.ndarray:
    _expect_points(points, 2, "rectangle", "two opposite corners", where)
    (x0, y0), (x1, y1) = points
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def _circle(points: np.ndarray, where: str) -> np.ndarray:
    _expect_points(points, 2, "circle", "its centre and a point on it", where)
    centre, rim = points
    radius = float(np.hypot(*(rim - centre)))
    if not math.isfinite(radius):
        raise LabelFormatError(f"{where}: the circle's radius is not finite")
    return ellipse_ring(*centre, radius, radius)


def _expect_points(points: np.ndarray, count: int, kind: str, meaning: str, where: str) -> None:
    if len(points) != count:
        raise LabelFormatError(f"{where}: a {kind} needs {count} points ({meaning}), got {len(points)}")


def _mask(encoded, points: np.ndarray, where: str, height: int, width: int) -> np.ndarray:
    """The full-image bool raster of a mask shape: its PNG covers the box whose top-left pixel is the first point.

    The points are pixel indices as LabelMe writes them ([[xmin, ymin], [xmax, ymax]], both inclusive); LabelMe
    truncates them to integers, which for points in the image is the floor we take.
    """
    _expect_points(points, 2, "mask", "the top-left and bottom-right pixels of its box", where)
    (x0, y0), (x1, y1) = (math.floor(v) for v in points[0]), (math.floor(v) for v in points[1])
    box_size = (x1 - x0 + 1, y1 - y0 + 1)
    if not (1 <= box_size[0] <= width and 1 <= box_size[1] <= height):
        raise LabelFormatError(f"{where}: mask box {box_size[0]}x{box_size[1]} does not fit the {width}x{height} "
                               "image")
    box = _decode_mask_png(_base64(encoded, "'mask'", where), where, box_size)
    raster = np.zeros((height, width), bool)
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y1 + 1, height), min(x1 + 1, width)
    if top < bottom and left < right:                     # the part of the box inside the image
        raster[top:bottom, left:right] = box[top - y0:bottom - y0, left - x0:right - x0]
    return raster


def _decode_mask_png(data: bytes, where: str, box_size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: non-zero pixels are in. The size is checked against the box before decoding (no bombs)."""
    try:
        image = Image.open(io.BytesIO(data))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise LabelFormatError(f"{where}: 'mask' is not a readable image ({e})") from None
    with image:
        if image.size != box_size:
            raise LabelFormatError(f"{where}: mask PNG is {image.size[0]}x{image.size[1]} but its points span "
                                   f"{box_size[0]}x{box_size[1]} pixels")
        try:
            array = np.asarray(image)
        except (OSError, ValueError, SyntaxError) as e:
            raise LabelFormatError(f"{where}: 'mask' is not a readable image ({e})") from None
    return array.any(axis=2) if array.ndim == 3 else array != 0


# --- messages -----------------------------------------------------------------------------------------------------

def _type(value) -> str:
    return "null" if value is None else type(value).__name__


def _preview(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
