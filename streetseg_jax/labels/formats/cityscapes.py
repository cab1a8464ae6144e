"""Cityscapes polygon annotations: `gtFine/<split>/<city>/<stem>_gtFine_polygons.json`.

    {"imgHeight": 1024, "imgWidth": 2048,
     "objects": [{"label": "road", "polygon": [[0, 769], [290, 574], ...], "deleted": 0, ...}, ...]}

What we do, following Cityscapes' own json2labelImg:
- Drawing order is file order: later objects are drawn over earlier ones.
- Objects with a true `deleted` are skipped.
- A label ending in `group` (`cargroup`, `persongroup`: a crowd of that class drawn as one region) becomes its base
  class (`car`, `person`) unless the label map knows the group name itself (as a class or an alias).
- `license plate` is skipped unless the label map knows it: Cityscapes gives it no id, so the car under it shows.
Coordinates are used as they are (continuous, origin at the image's top-left corner, like every reader here).
json2labelImg fills with PIL, which puts integer vertices at pixel centres and fills boundary pixels, so its masks
differ from ours along polygon edges by up to a pixel; the interiors agree.

A folder holding gtFine files is read without its gtCoarse files (Cityscapes ships coarse polygons for images that
also have fine ones); a folder with only gtCoarse files is read as such. Images are looked up in
`leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png` next to the gtFine folder, or beside the JSON file.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from streetseg_jax.labels.images import check_size, files_under, iter_files, resolve_inside
from streetseg_jax.labels.jsonio import load_json
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, Shape, read_each

_NAME = re.compile(r"^(?P<stem>.+)_(?P<kind>gtFine|gtCoarse)_polygons\.json$")
_SKIPPED_UNLESS_KNOWN = ("license plate",)


def read(path: Path, label_map) -> list[Annotation]:
    """Every `*_gtFine_polygons.json` under a folder (sorted), or one file."""
    path = Path(path)
    files = _polygon_files(path) if path.is_dir() else [path]
    if not files:
        raise LabelFormatError(f"{path}: no Cityscapes *_gtFine_polygons.json files in this folder (this reader "
                               f"reads the polygon JSON files){label_id_masks_hint(path)}")
    return read_each(files, lambda f: read_cityscapes(f, label_map))


def label_id_masks_hint(path: Path) -> str:
    """"; it holds N *_gtFine_labelIds.png masks ..." where `path` holds Cityscapes' label-id masks but no
    polygons: no reader pairs them with their leftImg8bit photos, and the polygons they were drawn from come
    beside them in gtFine."""
    found = sum(1 for _ in iter_files(Path(path), "*_gt*_labelIds.png")) if Path(path).is_dir() else 0
    if not found:
        return ""
    return (f"; it holds {found} *_gtFine_labelIds.png mask(s), which are not read: read the *_gtFine_polygons.json "
            "files that Cityscapes' gtFine package keeps beside them (--format cityscapes), as they were drawn from "
            "them")


def looks_like(path: Path) -> bool:
    """A `*_gtFine_polygons.json` (or gtCoarse) file, or a folder holding one: Cityscapes' own file naming."""
    path = Path(path)
    if path.is_dir():
        return next(iter_files(path, "*_gt*_polygons.json"), None) is not None
    return _NAME.match(path.name) is not None


def read_cityscapes(path: str | Path, label_map=None) -> Annotation:
    path = Path(path)
    data = load_json_object(path)
    width, height = image_size(data, path, "imgWidth", ("imgHeight",))
    objects = data.get("objects")
    if not isinstance(objects, list):
        raise LabelFormatError(f"{path}: 'objects' must be a list")
    shapes = [s for i, obj in enumerate(objects) if (s := _shape(obj, f"{path}: object {i}", label_map))]
    stem = _stem(path)
    annotation = Annotation(path, f"{stem}_leftImg8bit.png", width, height, shapes)
    annotation.image_path = _image_path(path, stem)
    return annotation


def _polygon_files(folder: Path) -> list[Path]:
    fine = files_under(folder, "*_gtFine_polygons.json")
    return fine or files_under(folder, "*_gtCoarse_polygons.json")


def _shape(obj, where: str, label_map) -> Shape | None:
    if not isinstance(obj, dict):
        raise LabelFormatError(f"{where}: must be a JSON object with 'label' and 'polygon'")
    if obj.get("deleted"):
        return None
    label = obj.get("label")
    if not isinstance(label, str) or not label.strip():
        raise LabelFormatError(f"{where}: has no 'label' string")
    label = _base_label(label, label_map)
    if label is None:
        return None
    return Shape(label, point_list(obj.get("polygon"), f"{where} ({obj['label']!r})"))


def _base_label(label: str, label_map) -> str | None:
    """The class name to draw (see the module docstring), or None for a label Cityscapes does not draw."""
    known = label_map is not None and label_map.id_of(label) is not None
    if known:
        return label
    if label.endswith("group"):
        return label[:-len("group")]
    return None if label in _SKIPPED_UNLESS_KNOWN else label


def _stem(path: Path) -> str:
    match = _NAME.match(path.name)
    return match["stem"] if match else path.stem


def _image_path(path: Path, stem: str) -> Path | None:
    image_name = f"{stem}_leftImg8bit.png"
    gt_dir = next((p for p in path.parents if p.name in ("gtFine", "gtCoarse")), None)
    if gt_dir is not None:
        relative = path.parent.relative_to(gt_dir) / image_name
        candidate = resolve_inside(gt_dir.parent, f"leftImg8bit/{relative.as_posix()}", "image", path)
        if candidate.is_file():
            return candidate
    beside = resolve_inside(path.parent, image_name, "image", path)
    return beside if beside.is_file() else None


# --- helpers shared with the Mapillary reader (both are polygon JSON) -------------------------------------------------

def load_json_object(path: Path) -> dict:
    data = load_json(path)
    if not isinstance(data, dict):
        raise LabelFormatError(f"{path}: the top level must be a JSON object")
    return data


def image_size(data: dict, path: Path, width_key: str, height_keys: tuple[str, ...]) -> tuple[int, int]:
    """(width, height) from the first present key of each; positive integers, below the decompression-bomb limit."""
    height_key = next((k for k in height_keys if k in data), height_keys[0])
    values = []
    for key in (width_key, height_key):
        value = data.get(key)
        if not is_number(value) or (isinstance(value, float) and not value.is_integer()):
            raise LabelFormatError(f"{path}: '{key}' is missing or not an integer (got {value!r})")
        values.append(int(value))
    return check_size(*values, str(path))


def point_list(polygon, where: str) -> np.ndarray:
    """[[x, y], ...] as an (N, 2) float64 array of finite numbers (an empty list gives no points)."""
    if not isinstance(polygon, list) or not all(_is_pair(p) for p in polygon):
        raise LabelFormatError(f"{where}: 'polygon' must be a list of [x, y] number pairs")
    try:
        points = np.array(polygon, dtype=np.float64).reshape(-1, 2)
    except OverflowError:                       # an integer beyond float range
        points = np.full((1, 2), np.inf)
    if not np.isfinite(points).all():
        raise LabelFormatError(f"{where}: 'polygon' has a coordinate that is not finite")
    return points


def _is_pair(point) -> bool:
    return isinstance(point, list) and len(point) == 2 and all(is_number(v) for v in point)


def is_number(value) -> bool:
    """int or float, not bool: JSON true/false would pass as 1/0 through numpy, and they are no coordinates."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
