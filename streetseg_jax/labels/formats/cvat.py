"""CVAT for images 1.1 XML, task exports and project exports.

    <annotations>
      <version>1.1</version>
      <meta><task>...</task></meta>        (a project export: <meta><project> with several tasks and subsets)
      <image id="0" name="street_001.jpg" width="640" height="480" [subset="Train" task_id="39"]>
        <polygon label="road" points="0,300;640,310;640,480;0,480" occluded="0" z_order="0"/>
        <box label="car" xtl="10" ytl="20" xbr="50" ybr="60" rotation="0" z_order="1"/>
        <ellipse label="sign" cx="80" cy="40" rx="6" ry="6" rotation="0" z_order="2"/>
        <mask label="tree" rle="3, 5, 7, ..." left="707" top="888" width="13" height="15" z_order="0"/>
        <polyline .../> <points .../> <skeleton .../> <tag .../> <cuboid .../>
      </image>
    </annotations>

Drawing order: a higher z_order is drawn on top; equal z_orders keep document order (later on top), as CVAT itself
draws and exports masks. The rasterizer does that stacking (Shape.z_order), so shapes are returned in document order.
`occluded` changes nothing: it says an object is partly hidden, and what hides it is settled by z_order.

Coordinates are CVAT canvas coordinates: continuous, origin at the image's top-left corner, used as they are. A box
with `rotation` (degrees, clockwise on screen, about its centre) becomes a rotated rectangle; an ellipse becomes a
polygon of the same area that strays from it by under a hundredth of a pixel. Shapes without an area (polyline,
points, skeleton, tag) are skipped, and so are cuboids: a 3-D box drawn in 2-D, whose faces are not one region.

Mask RLE, CVAT's own (its XML format documentation gives the example; its importer decodes it so): comma-separated
run lengths over the `width` x `height` box whose top-left pixel is (`left`, `top`), in row-major order, alternating
background and foreground and starting with background (a mask whose first pixel is set starts with a run of 0).
The runs must add up to width * height.

Images: a task export keeps them in `images/<name>`, a project export in `images/<subset>/<name>`. Names that point
outside the export folder are refused. A project export repeats image names across its subsets (the same img0.jpg
in Train and Test), so an image with a `subset` gets the key `<subset>/<stem>` (Annotation.key: its mask is
written as `<subset>/<stem>.png`); images of task exports keep their stem. Parsed with defusedxml, DTDs and
entities refused: exports come from other people.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from streetseg_jax.labels.images import MAX_PIXELS, check_size, files_under, is_file, resolve_inside
from streetseg_jax.labels.shapes import (Annotation, LabelFormatError, Shape, ellipse_ring, export_split, make_key,
                                         read_each)
from streetseg_jax.labels.xmlio import parse_xml

_NO_AREA = ("polyline", "points", "skeleton", "tag", "cuboid")
_HEAD = re.compile(rb"<annotations[\s>]")


def read(path: Path, label_map=None) -> list[Annotation]:
    """Every CVAT XML under a folder (sorted; other XML files are left alone), or one file."""
    path = Path(path)
    if path.suffix.lower() == ".zip":
        raise LabelFormatError(f"{path}: a zipped CVAT export; extract it and pass the folder")
    if not path.is_dir():
        return read_cvat(path)
    def read_one(file: Path) -> list[Annotation] | None:
        root = parse_xml(file)
        return _read_root(root, file) if root.tag == "annotations" else None
    found = [annotations for annotations in read_each(files_under(path, "*.xml"), read_one) if annotations is not None]
    if not found:
        raise LabelFormatError(f"{path}: no CVAT XML (an .xml file with an <annotations> root) in this folder")
    return [a for annotations in found for a in annotations]


def read_cvat(path: str | Path) -> list[Annotation]:
    """All images of one CVAT for images XML file."""
    path = Path(path)
    root = parse_xml(path)
    if root.tag != "annotations":
        raise LabelFormatError(f"{path}: root element is <{root.tag}>, expected <annotations> (CVAT for images 1.1)")
    return _read_root(root, path)


def looks_like(path: Path) -> bool:
    """An XML file (a folder's annotations.xml, or its first .xml) that starts with an <annotations> root."""
    path = Path(path)
    if path.is_dir():
        named = path / "annotations.xml"
        path = named if named.is_file() else next(iter(files_under(path, "*.xml")), None)
    if path is None or path.suffix.lower() != ".xml":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return bool(_HEAD.search(head)) and (b"<image" in head or b"<meta" in head or b"<version" in head)


# --- the document ----------------------------------------------------------------------------------------------------

def _read_root(root: ET.Element, path: Path) -> list[Annotation]:
    if root.find("track") is not None:
        # Tracks only appear in "CVAT for video" exports; reading just their first frame would lose annotations.
        raise LabelFormatError(f"{path}: holds <track> elements (a 'CVAT for video' export); export the task as "
                               "'CVAT for images 1.1' instead")
    return [_read_image(image, path) for image in root.findall("image")]


def _read_image(image: ET.Element, path: Path) -> Annotation:
    name = image.get("name") or ""
    where = f"{path}: <image id={image.get('id')!r} name={name!r}>"
    if not name:
        raise LabelFormatError(f"{where}: has no name")
    width, height = check_size(_int(image, "width", where), _int(image, "height", where), where)
    shapes, no_area = [], []
    for k, element in enumerate(image):
        if element.tag in _NO_AREA:
            no_area += [element.tag] if element.tag != "tag" else []      # a tag labels the image, draws nothing
            continue
        shape = _shape(element, f"{where}: shape {k} <{element.tag}>", width, height)
        if shape is not None:
            shapes.append(shape)
    annotation = Annotation(path, name, width, height, shapes, no_area=no_area)
    subset = image.get("subset")
    annotation.image_path = _image_path(path.parent, name, subset, path)
    if subset:
        annotation.key = make_key([subset, Path(name.replace("\\", "/")).stem], f"{where}: subset and name")
        annotation.split = export_split(subset)
    return annotation


def _image_path(root: Path, name: str, subset: str | None, source: Path) -> Path | None:
    """The first existing of images/<subset>/<name>, images/<name>, <name>; None when the export has no images."""
    candidates = [f"images/{subset}/{name}"] if subset else []
    candidates += [f"images/{name}", name]
    for relative in candidates:
        resolved = resolve_inside(root, relative, "image name", source)   # refuses names escaping the export
        if is_file(resolved):
            return resolved
    return None


# --- shapes ----------------------------------------------------------------------------------------------------------

def _shape(element: ET.Element, where: str, width: int, height: int) -> Shape | None:
    """One drawable shape, or None for an element that is no shape (an unknown tag from a newer CVAT)."""
    readers = {"polygon": _polygon, "box": _box, "ellipse": _ellipse}
    if element.tag not in readers and element.tag != "mask":
        return None
    label = element.get("label")
    if label is None:
        raise LabelFormatError(f"{where}: has no label attribute")
    z_order = _int(element, "z_order", where, default=0)
    if element.tag == "mask":
        return Shape(label, np.zeros((0, 2)), z_order=z_order, raster=_mask(element, where, width, height))
    return Shape(label, readers[element.tag](element, where), z_order=z_order)


def _polygon(element: ET.Element, where: str) -> np.ndarray:
    return parse_points(element.get("points"), where)


def _box(element: ET.Element, where: str) -> np.ndarray:
    x0, y0, x1, y1 = (_float(element, name, where) for name in ("xtl", "ytl", "xbr", "ybr"))
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    return _rotate(corners, _float(element, "rotation", where, 0.0), ((x0 + x1) / 2, (y0 + y1) / 2))


def _ellipse(element: ET.Element, where: str) -> np.ndarray:
    cx, cy, rx, ry = (_float(element, name, where) for name in ("cx", "cy", "rx", "ry"))
    ring = ellipse_ring(cx, cy, rx, ry, fewest=32)
    return _rotate(ring, _float(element, "rotation", where, 0.0), (cx, cy))


def _rotate(points: np.ndarray, degrees: float, centre: tuple[float, float]) -> np.ndarray:
    """Rotate clockwise on screen (y points down), as CVAT's `rotation` does."""
    if degrees == 0.0:
        return points
    a = math.radians(degrees)
    d = points - centre
    return np.stack([centre[0] + d[:, 0] * math.cos(a) - d[:, 1] * math.sin(a),
                     centre[1] + d[:, 0] * math.sin(a) + d[:, 1] * math.cos(a)], axis=1)


def parse_points(text: str | None, where: str) -> np.ndarray:
    """`"x0,y0;x1,y1;..."` as an (N, 2) float64 array; anything else is a LabelFormatError."""
    if text is None:
        raise LabelFormatError(f"{where}: has no points attribute")
    pairs = text.strip().split(";")
    if not all(pair.count(",") == 1 for pair in pairs):
        raise LabelFormatError(f"{where}: bad points string {_short(text)} (expected 'x0,y0;x1,y1;...')")
    try:
        points = np.array([v for pair in pairs for v in pair.split(",")], dtype=np.float64).reshape(-1, 2)
    except ValueError:
        raise LabelFormatError(f"{where}: bad points string {_short(text)} (a coordinate is not a number)") from None
    if not np.isfinite(points).all():
        raise LabelFormatError(f"{where}: bad points string {_short(text)} (a coordinate is not finite)")
    return points


# --- masks -----------------------------------------------------------------------------------------------------------

def _mask(element: ET.Element, where: str, width: int, height: int) -> np.ndarray:
    """The mask as a full-image bool raster (the part outside the image, if any, is cut off)."""
    left, top = _int(element, "left", where), _int(element, "top", where)
    box_w, box_h = _int(element, "width", where), _int(element, "height", where)
    if box_w <= 0 or box_h <= 0 or box_w * box_h > MAX_PIXELS:
        raise LabelFormatError(f"{where}: mask size {box_w}x{box_h} is not positive or is too large")
    box = decode_rle(element.get("rle"), box_w, box_h, where)
    raster = np.zeros((height, width), bool)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + box_w, width), min(top + box_h, height)
    if x0 < x1 and y0 < y1:
        raster[y0:y1, x0:x1] = box[y0 - top:y1 - top, x0 - left:x1 - left]
    return raster


def decode_rle(text: str | None, width: int, height: int, where: str = "mask") -> np.ndarray:
    """CVAT's mask RLE over a width x height box as a (height, width) bool array (see the module docstring)."""
    if text is None:
        raise LabelFormatError(f"{where}: has no rle attribute")
    try:
        runs = np.array([int(v) for v in text.split(",")], dtype=np.int64)
    except ValueError:
        raise LabelFormatError(f"{where}: rle {_short(text)} is not a comma-separated list of integers") from None
    if (runs < 0).any():
        raise LabelFormatError(f"{where}: rle has a negative run length")
    if int(runs.sum()) != width * height:
        raise LabelFormatError(f"{where}: rle runs add up to {int(runs.sum())} pixels, but the mask box is "
                               f"{width}x{height} = {width * height}")
    foreground = np.arange(len(runs)) % 2 == 1          # runs alternate, starting with background
    return np.repeat(foreground, runs).reshape(height, width)


# --- attributes ------------------------------------------------------------------------------------------------------

def _float(element: ET.Element, name: str, where: str, default: float | None = None) -> float:
    text = element.get(name)
    if text is None and default is not None:
        return default
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise LabelFormatError(f"{where}: attribute {name}={_short(text)} is missing or not a number") from None
    if not math.isfinite(value):
        raise LabelFormatError(f"{where}: attribute {name}={_short(text)} is not finite")
    return value


def _int(element: ET.Element, name: str, where: str, default: int | None = None) -> int:
    """An integer attribute; CVAT writes integers, but '12.0' is accepted as 12."""
    text = element.get(name)
    if text is None and default is not None:
        return default
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise LabelFormatError(f"{where}: attribute {name}={_short(text)} is missing or not a number") from None
    if not value.is_integer():
        raise LabelFormatError(f"{where}: attribute {name}={_short(text)} is not an integer")
    return int(value)


def _short(text) -> str:
    text = repr(text)
    return text if len(text) <= 60 else text[:57] + "...'"
