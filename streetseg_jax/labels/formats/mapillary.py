"""Mapillary Vistas v2.0 polygons: `<split>/v2.0/polygons/<stem>.json`, images in `<split>/images/<stem>.jpg`.

    {"width": 4000, "height": 3000,
     "objects": [{"id": 0, "label": "construction--flat--road", "polygon": [[x, y], [x, y], ...]}, ...]}

- The height key is also accepted misspelt as `heigth`, as some converters write it (the sample does).
- `polygon` is a list of [x, y] points. A flat list `[x0, y0, x1, y1, ...]`, or a list of such flat lists (as
  Datumaro writes them), is read as the points of one ring in that order, which is how Datumaro reads them too.
- Drawing order is file order: later objects on top.
- Labels are Mapillary's names (`construction--flat--road`); the label map's names and aliases are matched with `-`
  read as a space. When the label map knows neither the name nor the label's readable name from `config_v2.0.json`
  (`Road`, looked for beside the split folders), the name is kept as written and reported as unknown.
Coordinates are used as they are (continuous, origin at the image's top-left corner).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from streetseg_jax.labels.formats.cityscapes import image_size, is_number, load_json_object, point_list
from streetseg_jax.labels.images import files_under, resolve_inside
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, Shape, read_each

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CONFIG_NAME = "config_v2.0.json"
_VERSION_DIR = re.compile(r"^v\d")     # v2.0: the folder between a split and its polygons


def read(path: Path, label_map) -> list[Annotation]:
    """Every JSON file in a `polygons` folder under `path` (sorted), or one file."""
    path = Path(path)
    files = _polygon_files(path) if path.is_dir() else [path]
    if not files:
        raise LabelFormatError(f"{path}: no Mapillary Vistas polygons/*.json files in this folder")
    configs: dict[Path, dict[str, str]] = {}
    return read_each(files, lambda f: read_mapillary(f, label_map, configs))


def looks_like(path: Path) -> bool:
    """A JSON file in a `polygons` folder with `objects` and `width` (Cityscapes writes `imgWidth`)."""
    path = Path(path)
    first = next(iter(_polygon_files(path)), None) if path.is_dir() else path
    if first is None or first.suffix.lower() != ".json":
        return False
    try:
        data = load_json_object(first)
    except LabelFormatError:
        return False
    return "objects" in data and "width" in data and ("height" in data or "heigth" in data)


def read_mapillary(path: str | Path, label_map=None, configs: dict | None = None) -> Annotation:
    """One polygons file; `configs` caches the readable names of config files across the files of one export."""
    path = Path(path)
    data = load_json_object(path)
    width, height = image_size(data, path, "width", ("height", "heigth"))
    objects = data.get("objects")
    if not isinstance(objects, list):
        raise LabelFormatError(f"{path}: 'objects' must be a list")
    readable = _readable_names(path, {} if configs is None else configs)
    shapes = [_shape(obj, f"{path}: object {i}", label_map, readable) for i, obj in enumerate(objects)]
    relative, image = _image(path)
    annotation = Annotation(path, relative, width, height, shapes)
    annotation.image_path = image
    return annotation


def _polygon_files(folder: Path) -> list[Path]:
    if folder.name == "polygons":
        return files_under(folder, "*.json")
    return [f for f in files_under(folder, "*.json") if "polygons" in f.relative_to(folder).parts[:-1]]


def _shape(obj, where: str, label_map, readable: dict[str, str]) -> Shape:
    if not isinstance(obj, dict):
        raise LabelFormatError(f"{where}: must be a JSON object with 'label' and 'polygon'")
    label = obj.get("label")
    if not isinstance(label, str) or not label.strip():
        raise LabelFormatError(f"{where}: has no 'label' string")
    points = _points(obj.get("polygon"), f"{where} ({label!r})")
    return Shape(_known_name(label, label_map, readable), points)


def _known_name(label: str, label_map, readable: dict[str, str]) -> str:
    if label_map is None or label_map.id_of(label) is not None:
        return label
    other = readable.get(label)
    return other if other is not None and label_map.id_of(other) is not None else label


def _points(polygon, where: str) -> np.ndarray:
    """Points in any of the three spellings of the module docstring."""
    if isinstance(polygon, list) and polygon and all(isinstance(p, list) for p in polygon):
        if all(len(p) == 2 for p in polygon):
            return point_list(polygon, where)
        polygon = [v for p in polygon for v in p]              # Datumaro's list of flat lists
    if not isinstance(polygon, list) or len(polygon) % 2 or not all(is_number(v) for v in polygon):
        raise LabelFormatError(f"{where}: 'polygon' must be a list of [x, y] points or of x, y numbers")
    return point_list([polygon[i:i + 2] for i in range(0, len(polygon), 2)], where)


def _folders(path: Path) -> tuple[Path, Path]:
    """(the polygons folder, the split folder: training/, validation/) of a file <split>/[v2.0/]polygons/<file>."""
    polygons = next((p for p in path.parents if p.name == "polygons"), path.parent)
    return polygons, polygons.parent.parent if _VERSION_DIR.match(polygons.parent.name) else polygons.parent


def _image(path: Path) -> tuple[str, Path | None]:
    """The image's path relative to the split's `images` folder, and the file when it exists."""
    polygons, split = _folders(path)
    stem = path.relative_to(polygons).with_suffix("").as_posix()
    for suffix in _IMAGE_SUFFIXES:
        candidate = resolve_inside(split, f"images/{stem}{suffix}", "image", path)
        if candidate.is_file():
            return f"{stem}{suffix}", candidate
    return f"{stem}.jpg", None


def _readable_names(path: Path, configs: dict[Path, dict[str, str]]) -> dict[str, str]:
    """Label name -> readable name from config_v2.0.json in the dataset root or split folder ({} when none)."""
    for folder in list(path.parents)[:4]:          # polygons, v2.0, split, dataset root
        config = folder / _CONFIG_NAME
        if config.is_file():
            if config not in configs:
                configs[config] = _config_names(config)
            return configs[config]
    return {}


def _config_names(config: Path) -> dict[str, str]:
    data = load_json_object(config)
    labels = data.get("labels")
    if not isinstance(labels, list):
        raise LabelFormatError(f"{config}: 'labels' must be a list of {{'name': ..., 'readable': ...}}")
    return {c["name"]: c["readable"] for c in labels
            if isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("readable"), str)}
