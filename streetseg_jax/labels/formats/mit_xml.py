"""MIT LabelMe XML: the CSAIL LabelMe web tool's annotations (also what datumaro's `label_me` format writes).

    <annotation>
      <filename>img1.png</filename><folder>subset1</folder>
      <imagesize><nrows>77</nrows><ncols>102</ncols></imagesize>
      <object><name>car</name><deleted>0</deleted><id>2</id>
        <polygon><pt><x>30</x><y>12</y></pt>...</polygon>                   (or <segm><mask>img1_mask_2.png</mask>)
        <parts><hasparts>3,4</hasparts><ispartof></ispartof></parts></object>
    </annotation>

Layout: `Annotations/<folder>/<name>.xml`, `Images/<folder>/<filename>`, `Masks/<folder>/<mask png>` under one
export folder (the parent of `Annotations`). Without an `Annotations` folder above the XML (datumaro's export),
images and masks are looked for beside the XML file.

Objects marked <deleted>1</deleted> are skipped. Drawing order is file order, except that a part (<ispartof>, or
listed in its whole's <hasparts>) is drawn after its whole, so it ends up on top: a part listed before its whole is
moved to just after it. A <segm> mask is a PNG the size of the image; a pixel is in when any channel (alpha
included) is non-zero, which is how the tool's anti-aliased RGBA masks are meant (and how datumaro reads them).

Pixel convention: points are used as they are. The web tool rounds the mouse position to the nearest integer and
draws the vertex there on an overlay where image pixel c covers [c, c+1), our convention (shapes.py), so the
masks follow the outlines the annotator saw.

Parsed with defusedxml: DTDs (and so entity expansion, "billion laughs") are refused.
"""
from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from streetseg_jax.labels import images
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, Shape, read_each
from streetseg_jax.labels.xmlio import parse_xml

_LOOKS_LIKE_FILES = 3       # how many XML files --format auto opens before deciding


@dataclasses.dataclass
class _Object:
    index: int                              # position among the file's <object> elements
    id: int
    element: ET.Element
    parent_ids: tuple[int, ...] = ()        # from <ispartof>
    child_ids: tuple[int, ...] = ()         # from <hasparts>


def read(path: Path, label_map=None) -> list[Annotation]:
    """Every `*.xml` under a folder (recursively, sorted, hidden folders skipped), or one file."""
    path = Path(path)
    if path.is_dir():
        return read_each(_xml_files(path), lambda f: read_file(f, path))
    return [read_file(path, path.parent)]


def looks_like(path: Path) -> bool:
    """An <annotation> XML (or one of a folder's first few) with <object><polygon><pt>, <object><segm>, or
    <imagesize>, none of which PASCAL VOC or Labelbox-style VOC use."""
    path = Path(path)
    try:
        candidates = _xml_files(path)[:_LOOKS_LIKE_FILES] if path.is_dir() else [path]
        return any(f.suffix.lower() == ".xml" and _is_mit(parse_xml(f)) for f in candidates)
    except (LabelFormatError, OSError):
        return False


def read_file(path: Path, export_root: Path | None = None) -> Annotation:
    """One annotation file; `export_root` (default: the file's folder) is used when no `Annotations` folder is above
    the file, and bounds where <folder>, <filename> and masks may point."""
    path = Path(path)
    root = parse_xml(path)
    if root.tag != "annotation":
        raise LabelFormatError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    file_name = (root.findtext("filename") or "").strip()
    if not file_name:
        raise LabelFormatError(f"{path}: no <filename>")
    places = _Places(path, Path(export_root or path.parent), (root.findtext("folder") or "").strip())
    image_path = places.find("Images", file_name, "image <filename>")
    width, height = _image_size(root, path, image_path)
    shapes = [_shape(obj, path, places, width, height) for obj in _drawing_order(_objects(root, path))]
    return Annotation(path, file_name, width, height, shapes, image_path=image_path)


# --- files ----------------------------------------------------------------------------------------------------------

def _xml_files(folder: Path) -> list[Path]:
    return images.files_under(folder, "*.xml")


def _is_mit(root: ET.Element) -> bool:
    return root.tag == "annotation" and any(root.find(p) is not None
                                            for p in ("object/polygon/pt", "object/segm", "imagesize"))


class _Places:
    """Where an annotation's image and masks live, every candidate kept inside the export folder."""

    def __init__(self, xml_path: Path, given_root: Path, folder: str):
        self.xml_path = xml_path
        anchor = next((p for p in xml_path.resolve().parents if p.name == "Annotations"), None)
        self.root = (anchor.parent if anchor is not None else given_root).resolve()
        self.folder = folder
        self.standard = anchor is not None
        self.beside = xml_path.resolve().parent

    def find(self, kind: str, name: str, what: str) -> Path:
        """The first existing candidate for file `name` of `kind` (Images or Masks), else the first candidate."""
        candidates = []
        if self.standard:
            candidates.append(Path(self.root, kind, self.folder, name))
        candidates += [self.beside / name, self.beside / kind / name]
        resolved = [self._inside(c, name, what) for c in candidates]
        return next((c for c in resolved if images.is_file(c)), resolved[0])

    def _inside(self, candidate: Path, name: str, what: str) -> Path:
        try:
            return images.resolve_inside(self.root, os.path.relpath(candidate, self.root), what, self.xml_path)
        except images.OutsideExportError:
            folder = f" in <folder> {self.folder!r}" if self.folder else ""
            raise images.OutsideExportError(f"{self.xml_path}: {what} {name!r}{folder} points outside the export "
                                            f"folder {self.root}; refused") from None


def _image_size(root: ET.Element, path: Path, image_path: Path) -> tuple[int, int]:
    """(width, height) from <imagesize><ncols>/<nrows>, or (the tool sometimes leaves them empty) from the image."""
    size = root.find("imagesize")
    texts = [(size.findtext(t) or "").strip() if size is not None else "" for t in ("ncols", "nrows")]
    if any(texts):
        width, height = (_positive_int(text, tag, path) for text, tag in zip(texts, ("ncols", "nrows")))
    else:
        try:
            width, height = images.image_size(image_path)
        except (LabelFormatError, Image.DecompressionBombError) as e:
            raise LabelFormatError(f"{path}: no <imagesize>, and the image gives no size ({e})") from None
    return images.check_size(width, height, str(path))


def _positive_int(text: str, tag: str, path: Path) -> int:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer() or value <= 0:
        raise LabelFormatError(f"{path}: <imagesize><{tag}> must be a positive integer, got {text!r}")
    return int(value)


# --- objects and their order ------------------------------------------------------------------------------------------

def _objects(root: ET.Element, path: Path) -> list[_Object]:
    """The objects not deleted, in file order, with their part links."""
    objects = []
    for index, element in enumerate(root.findall("object")):
        where = f"{path}: object {index + 1}"
        if _flag(element.findtext("deleted"), where):
            continue
        own_id = _ids(element.findtext("id"), where, "<id>")
        parent_ids = _ids(element.findtext("parts/ispartof"), where, "<ispartof>")
        child_ids = _ids(element.findtext("parts/hasparts"), where, "<hasparts>")
        # Without an <id>, the object's position stands in: the tool numbers objects in file order from 0.
        objects.append(_Object(index, own_id[0] if own_id else index, element, parent_ids, child_ids))
    return objects


def _flag(text: str | None, where: str) -> bool:
    text = (text or "").strip()
    if text not in ("", "0", "1"):
        raise LabelFormatError(f"{where}: <deleted> must be 0 or 1, got {text!r}")
    return text == "1"


def _ids(text: str | None, where: str, tag: str) -> tuple[int, ...]:
    """Comma-separated object ids, as <id>, <hasparts> and <ispartof> hold them."""
    try:
        return tuple(int(part) for part in (text or "").split(",") if part.strip())
    except ValueError:
        raise LabelFormatError(f"{where}: {tag} must hold object ids (integers, comma-separated), "
                               f"got {text!r}") from None


def _drawing_order(objects: list[_Object]) -> list[_Object]:
    """File order, but every part right after its whole once the whole is drawn."""
    parent = _wholes(objects)
    waiting: dict[int, list[_Object]] = defaultdict(list)
    order, drawn = [], set()
    for obj in objects:
        whole = parent[obj.index]
        if whole is None or whole.index in drawn:
            _draw_with_parts(obj, waiting, order, drawn)
        else:
            waiting[whole.index].append(obj)
    return order


def _wholes(objects: list[_Object]) -> dict[int, _Object | None]:
    """Each object's whole (by object index), None for objects that are no part; links to missing or deleted
    objects are dropped, and so are part-of cycles (their objects keep file order)."""
    by_id = {}
    for obj in objects:
        by_id.setdefault(obj.id, obj)
    parent = {obj.index: by_id.get(obj.parent_ids[0]) if obj.parent_ids else None for obj in objects}
    for whole in objects:                      # <hasparts> names parts that may not name their whole
        for child in filter(None, map(by_id.get, whole.child_ids)):
            if parent[child.index] is None and child is not whole:
                parent[child.index] = whole
    settled: set[int] = set()
    for obj in objects:
        chain: dict[int, int] = {}             # object index -> position; walk up to a settled or top object
        current = obj
        while current is not None and current.index not in settled and current.index not in chain:
            chain[current.index] = len(chain)
            current = parent[current.index]
        if current is not None and current.index in chain:     # a cycle: its members become top objects
            for index in list(chain)[chain[current.index]:]:
                parent[index] = None
        settled.update(chain)
    return parent


def _draw_with_parts(obj: _Object, waiting: dict, order: list, drawn: set) -> None:
    stack = [obj]                              # a stack, not recursion: part chains can be long
    while stack:
        current = stack.pop()
        if current.index in drawn:
            continue
        order.append(current)
        drawn.add(current.index)
        stack.extend(reversed(waiting.pop(current.index, [])))


# --- shapes -----------------------------------------------------------------------------------------------------------

def _shape(obj: _Object, path: Path, places: _Places, width: int, height: int) -> Shape:
    name = (obj.element.findtext("name") or "").strip()
    where = f"{path}: object {obj.index + 1}"
    if not name:
        raise LabelFormatError(f"{where} has no <name>")
    where = f"{where} ({name!r})"
    polygon, segm = obj.element.find("polygon"), obj.element.find("segm")
    if segm is not None and (polygon is None or polygon.find("pt") is None):
        return Shape(name, np.zeros((0, 2)), raster=_mask(segm, where, places, width, height))
    if polygon is None:
        raise LabelFormatError(f"{where} has neither <polygon> nor <segm>")
    return Shape(name, _points(polygon, where))


def _points(polygon: ET.Element, where: str) -> np.ndarray:
    points = []
    for k, pt in enumerate(polygon.findall("pt")):
        points.append([_coordinate(pt.findtext(axis), where, k, axis) for axis in ("x", "y")])
    return np.array(points, np.float64).reshape(-1, 2)


def _coordinate(text: str | None, where: str, k: int, axis: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise LabelFormatError(f"{where}: point {k + 1}: <{axis}> is not a number: {text!r}") from None
    if not np.isfinite(value):
        raise LabelFormatError(f"{where}: point {k + 1}: <{axis}> is not finite: {text!r}")
    return value


def _mask(segm: ET.Element, where: str, places: _Places, width: int, height: int) -> np.ndarray:
    """(height, width) bool from the <segm><mask> PNG: a pixel is in when any of its channels is non-zero."""
    name = (segm.findtext("mask") or "").strip()
    if not name:
        raise LabelFormatError(f"{where}: <segm> has no <mask> file name")
    mask_path = places.find("Masks", name, "<mask>")
    try:
        image = Image.open(mask_path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise LabelFormatError(f"{where}: mask {mask_path} cannot be read ({e})") from None
    with image:
        if image.size != (width, height):   # checked before decoding: a huge PNG is never decompressed
            raise LabelFormatError(f"{where}: mask {mask_path} is {image.size[0]}x{image.size[1]}, the image is "
                                   f"{width}x{height}")
        try:
            array = np.asarray(image)
        except (OSError, ValueError, SyntaxError) as e:
            raise LabelFormatError(f"{where}: mask {mask_path} cannot be read ({e})") from None
    return array.any(axis=2) if array.ndim == 3 else array != 0
