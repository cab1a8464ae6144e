"""Cityscapes annotations: `gtFine/<split>/<city>/<stem>_gtFine_polygons.json`, else its label-id masks.

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
also have fine ones); a folder with only gtCoarse files is read as such.

A folder with no polygon file (some packages derived from Cityscapes ship the masks alone) is read from its
`<stem>_gtFine_labelIds.png` masks (else gtCoarse's): 8-bit grey, each pixel one of Cityscapes' 34 label ids
(LABEL_IDS), which becomes its Cityscapes class name (`7` -> `road`), then a class of the label map by name or
alias, as a polygon's label does (`polegroup` -> `pole` as above; names the label map does not know, such as
`unlabeled` or `ego vehicle`, are unknown class names). The `*_trainIds.png` masks are not read (their 19 ids leave
the other classes out), nor are labelIds masks beside polygon files, which they were drawn from.

Images are looked up in `leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png` next to the gtFine folder, or beside
the JSON or mask file.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from streetseg_jax.labels.images import check_size, files_under, iter_files, resolve_inside
from streetseg_jax.labels.jsonio import load_json
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, Shape, read_each

_NAME = re.compile(r"^(?P<stem>.+)_(?P<kind>gtFine|gtCoarse)_(polygons\.json|labelIds\.png)$")
_SKIPPED_UNLESS_KNOWN = ("license plate",)
_PATTERNS = ("*_gtFine_polygons.json", "*_gtCoarse_polygons.json", "*_gtFine_labelIds.png", "*_gtCoarse_labelIds.png")

# Cityscapes' label ids and names, as its labels.py defines them; license plate's -1 is no pixel value of a mask
LABEL_IDS = {
    0: "unlabeled", 1: "ego vehicle", 2: "rectification border", 3: "out of roi", 4: "static", 5: "dynamic",
    6: "ground", 7: "road", 8: "sidewalk", 9: "parking", 10: "rail track", 11: "building", 12: "wall", 13: "fence",
    14: "guard rail", 15: "bridge", 16: "tunnel", 17: "pole", 18: "polegroup", 19: "traffic light",
    20: "traffic sign", 21: "vegetation", 22: "terrain", 23: "sky", 24: "person", 25: "rider", 26: "car",
    27: "truck", 28: "bus", 29: "caravan", 30: "trailer", 31: "train", 32: "motorcycle", 33: "bicycle",
    -1: "license plate",
}


def read(path: Path, label_map) -> list[Annotation]:
    """Every `*_gtFine_polygons.json` under a folder (sorted), else every `*_gtFine_labelIds.png`; or one file."""
    path = Path(path)
    files = _annotation_files(path) if path.is_dir() else [path]
    if not files:
        raise LabelFormatError(f"{path}: no Cityscapes *_gtFine_polygons.json files nor *_gtFine_labelIds.png masks "
                               "in this folder (this reader reads the polygon JSON files, else the labelIds masks; "
                               "not *_trainIds.png)")
    return read_each(files, lambda f: read_file(f, label_map))


def label_id_masks_hint(path: Path) -> str:
    """"; it holds N *_gtFine_labelIds.png masks ..." where `path` holds Cityscapes' label-id masks, which the
    Cityscapes reader reads (their names do not pair them with their leftImg8bit photos as a mask folder's)."""
    found = sum(1 for _ in iter_files(Path(path), "*_gt*_labelIds.png")) if Path(path).is_dir() else 0
    if not found:
        return ""
    return f"; it holds {found} Cityscapes *_gtFine_labelIds.png mask(s): read them with --format cityscapes"


def looks_like(path: Path) -> bool:
    """A `*_gtFine_polygons.json` or `*_gtFine_labelIds.png` (or gtCoarse) file, or a folder holding one:
    Cityscapes' own file naming."""
    path = Path(path)
    if path.is_dir():
        return any(next(iter_files(path, pattern), None) is not None
                   for pattern in ("*_gt*_polygons.json", "*_gt*_labelIds.png"))
    return _NAME.match(path.name) is not None


def read_file(path: Path, label_map=None) -> Annotation:
    """One polygon file, or one label-id mask."""
    return read_label_ids(path, label_map) if Path(path).suffix.lower() == ".png" else read_cityscapes(path, label_map)


def read_cityscapes(path: str | Path, label_map=None) -> Annotation:
    path = Path(path)
    data = load_json_object(path)
    width, height = image_size(data, path, "imgWidth", ("imgHeight",))
    objects = data.get("objects")
    if not isinstance(objects, list):
        raise LabelFormatError(f"{path}: 'objects' must be a list")
    shapes = [s for i, obj in enumerate(objects) if (s := _shape(obj, f"{path}: object {i}", label_map))]
    return _annotation(path, width, height, shapes)


def read_label_ids(path: str | Path, label_map=None) -> Annotation:
    """One `*_gtFine_labelIds.png`: a raster shape per label id it holds, named by LABEL_IDS (see the docstring)."""
    from streetseg_jax.labels.formats.masks import stored_pixels       # masks imports this module
    path = Path(path)
    ids = stored_pixels(path)[1]
    if ids.ndim != 2:
        raise LabelFormatError(f"{path}: a labelIds mask holds one Cityscapes label id per pixel (8-bit grey), not "
                               "colours (the *_gtFine_color.png masks are not read)")
    values = np.unique(ids).tolist()
    strange = [v for v in values if v not in LABEL_IDS or v < 0]
    if strange:
        raise LabelFormatError(f"{path}: pixel value(s) {', '.join(map(str, strange[:10]))} are no Cityscapes label "
                               "id (0..33)")
    shapes = [Shape(label, np.zeros((0, 2)), raster=ids == value)
              for value in values if (label := _base_label(LABEL_IDS[value], label_map))]
    return _annotation(path, ids.shape[1], ids.shape[0], shapes)


def _annotation(path: Path, width: int, height: int, shapes: list[Shape]) -> Annotation:
    stem = _stem(path)
    annotation = Annotation(path, f"{stem}_leftImg8bit.png", width, height, shapes)
    annotation.image_path = _image_path(path, stem)
    return annotation


def _annotation_files(folder: Path) -> list[Path]:
    """The polygon files (fine before coarse), else the label-id masks (fine before coarse)."""
    return next((files for pattern in _PATTERNS if (files := files_under(folder, pattern))), [])


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
