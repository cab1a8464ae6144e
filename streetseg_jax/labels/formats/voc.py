"""PASCAL VOC XML with polygons as Labelbox writes them (the seed's format).

    <annotation>
      <filename>street_001.jpg</filename>
      <size><width>640</width><height>480</height><depth>3</depth></size>
      <object><name>road</name><polygon><x1>0</x1><y1>300</y1><x2>640</x2><y2>310</y2>...</polygon></object>
    </annotation>

Objects come in drawing order (later ones on top); an object may hold several <polygon> elements; coordinates are
pixel coordinates from the image's top-left corner, integers or floats. A <bndbox> without a polygon is read as a
rectangle. Parsed with defusedxml: exports come from other people, and entity expansion is refused.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from streetseg_jax.labels.images import IMAGE_SUFFIXES, check_size, files_under, image_size, is_file
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, Shape, read_each
from streetseg_jax.labels.xmlio import parse_xml

_XY = re.compile(r"^([xy])(\d+)$")


def read_voc(path: str | Path) -> Annotation:
    path = Path(path)
    root = parse_xml(path)
    if root.tag != "annotation":
        raise LabelFormatError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    file_name = (root.findtext("filename") or "").strip()
    width, height = _size(root, path, file_name)
    shapes = []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise LabelFormatError(f"{path}: object {i + 1} has no <name>")
        shapes.extend(Shape(name, np.asarray(ring, np.float64).reshape(-1, 2))
                      for ring in _object_rings(obj, path, i))
    return Annotation(path, file_name, width, height, shapes)


def read(path: Path, label_map=None) -> list[Annotation]:
    """Every `*.xml` under a folder (sorted), or one file."""
    path = Path(path)
    files = files_under(path, "*.xml") if path.is_dir() else [path]
    return read_each(files, read_voc)


def looks_like(path: Path) -> bool:
    """An XML file (or a folder's first one) with <annotation> and Labelbox-style <polygon><x1>."""
    path = Path(path)
    first = next(iter(files_under(path, "*.xml")), None) if path.is_dir() else path
    if first is None or first.suffix.lower() != ".xml":
        return False
    try:
        root = parse_xml(first)
    except LabelFormatError:
        return False
    return root.tag == "annotation" and root.find("object/polygon/x1") is not None


def write_voc(path: str | Path, file_name: str, width: int, height: int,
              objects: list[tuple[str, list]]) -> None:
    """Write objects [(name, [polygon, ...]), ...] in drawing order; a polygon is a sequence of (x, y)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for name, polygons in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        for polygon in polygons:
            poly = ET.SubElement(obj, "polygon")
            for k, (x, y) in enumerate(polygon, start=1):
                ET.SubElement(poly, f"x{k}").text = _number(x)
                ET.SubElement(poly, f"y{k}").text = _number(y)
    ET.indent(root)
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n")


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{float(v):.2f}"


def _size(root: ET.Element, path: Path, file_name: str) -> tuple[int, int]:
    size = root.find("size")
    texts = [size.findtext(tag) if size is not None else None for tag in ("width", "height")]
    if all(text is None or text.strip() in ("", "0") for text in texts):     # some exporters leave it out, or 0x0
        image = _image_beside(path, file_name)
        if image is not None:
            return check_size(*image_size(image), str(path))
        raise LabelFormatError(f"{path}: no <size><width>/<height>, and no image {file_name or path.stem + '.*'} "
                               "beside it (or in a sibling JPEGImages/, images/ or Images/) to take the size from")
    try:
        values = [float(text) for text in texts]
    except (TypeError, ValueError):
        raise LabelFormatError(f"{path}: missing or non-numeric <size><width>/<height>") from None
    if not all(math.isfinite(v) and v.is_integer() for v in values):     # 1e309 is inf: no int() of it
        raise LabelFormatError(f"{path}: <size><width>/<height> must be whole numbers, got {texts[0]!r}, "
                               f"{texts[1]!r}")
    return check_size(int(values[0]), int(values[1]), str(path))


def _image_beside(path: Path, file_name: str) -> Path | None:
    """The image of an XML that gives no size: by its <filename>, else by the XML's stem, beside the XML or in the
    sibling folders VOC layouts keep images in."""
    folders = [path.parent] + [path.parent.parent / name for name in ("JPEGImages", "images", "Images")]
    names = ([Path(file_name.replace("\\", "/")).name] if file_name else []) + \
        [path.stem + suffix for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES)]
    return next((folder / name for name in names for folder in folders if is_file(folder / name)), None)


def _object_rings(obj: ET.Element, path: Path, index: int):
    polygons = obj.findall("polygon")
    if polygons:
        return [_polygon_points(p, path, index) for p in polygons]
    box = obj.find("bndbox")
    if box is not None:
        x0, y0, x1, y1 = (_float(box.findtext(t), path, index, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        return [[(x0, y0), (x1, y0), (x1, y1), (x0, y1)]]
    raise LabelFormatError(f"{path}: object {index + 1} has neither <polygon> nor <bndbox>")


def _polygon_points(poly: ET.Element, path: Path, index: int):
    coords: dict[int, dict[str, float]] = {}
    for child in poly:
        m = _XY.match(child.tag)
        if not m:
            raise LabelFormatError(f"{path}: object {index + 1}: unexpected <{child.tag}> in <polygon>")
        coords.setdefault(int(m.group(2)), {})[m.group(1)] = _float(child.text, path, index, child.tag)
    points = []
    for k in sorted(coords):
        if set(coords[k]) != {"x", "y"}:
            raise LabelFormatError(f"{path}: object {index + 1}: point {k} lacks its x or y")
        points.append((coords[k]["x"], coords[k]["y"]))
    return points


def _float(text, path: Path, index: int, tag: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise LabelFormatError(f"{path}: object {index + 1}: <{tag}> is not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise LabelFormatError(f"{path}: object {index + 1}: <{tag}> is not finite: {text!r}")
    return value
