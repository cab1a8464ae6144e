"""Labelbox exports: the legacy v1 JSON export and the Export v2 NDJSON.

v1 (a JSON list of data rows; a single row object is accepted too):
    [{"External ID": "street_001.jpg", "Labeled Data": "https://...", "Skipped": false,
      "Label": {"objects": [{"featureId": "ck..", "title": "Road", "value": "road",
                             "polygon": [{"x": 0, "y": 300}, ...]}, ...]}}, ...]
  An object holds `polygon`, `bbox {top, left, height, width}` (read as a rectangle), `line` or `point` (skipped:
  they cover no area), or only an `instanceURI` (a segmentation mask). v1 records no image size, so the local image
  is opened for it (`Media Attributes` width/height are used when a newer v1 export has them).

v2 (NDJSON, one data row per line):
    {"data_row": {"id": "..", "external_id": "street_001.jpg", "row_data": "https://..."},
     "media_attributes": {"height": 480, "width": 640},
     "projects": {"<project id>": {"labels": [{"annotations": {"objects": [
         {"feature_id": "..", "name": "road", "annotation_kind": "ImagePolygon", "polygon": [{"x": .., "y": ..}]},
         {"name": "car", "annotation_kind": "ImageBoundingBox", "bounding_box": {"top": .., "left": .., ...}},
         {"name": "tree", "annotation_kind": "ImageSegmentationMask", "mask": {"url": "https://..."}}]}}]}}}
  `composite_mask {url, color_rgb}` (one PNG for all of a label's masks, an object's pixels in its colour) is read
  too. Objects of every project are kept (pass `project=` to read one); of several labels of one data row in one
  project (consensus labelling) only the first is used: merging labellers' answers would draw them over each other.

Conventions:
- Class name: v1 `title` (what the labeller saw), else `value`; v2 `name`, else `value`. The label map matches
  either spelling, case and `_`/`-`/space-insensitively.
- Coordinates are pixel coordinates from the image's top-left corner, as in our shapes; objects are drawn in
  export order, later on top (Labelbox exports no z-order).
- Images: the local file named by `External ID` / `external_id` (else `global_key`, else the last part of the
  URL), in the export folder or its `images/` folder; without an extension, any file with that stem.
- Masks: Labelbox mask URLs need credentials, so masks are read from local files in a `masks/` folder beside the
  export, named `<feature id>.png` (v1 `featureId`, v2 `feature_id`) or after the URL's last path part; a
  composite mask also as `<image stem>.png`. A mask found nowhere is an error naming the file to put there. A mask
  pixel is set when its brightest channel is at least 128 (Labelbox masks are 0/255); for a composite mask, when it
  has the object's colour.
- Data rows that are skipped or not labelled yet are left out: an unlabelled image is not an image of background.
"""
from __future__ import annotations

import math
import os
import urllib.parse
from pathlib import Path

import numpy as np

from streetseg_jax.labels.images import check_size, image_size, is_file, open_rgb, resolve_inside
from streetseg_jax.labels.jsonio import load_json, parse_json
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, Shape, read_each

IMAGE_DIRS = ("", "images")
MASK_DIR = "masks"
_HEAD_BYTES = 1 << 20
_NO_AREA = ("line", "point")                   # geometries that outline nothing
DETECT_MOST_FILES = 10


def read(path: Path, label_map=None, project: str | None = None) -> list[Annotation]:
    """Every Labelbox export (*.json v1, *.ndjson v2) in a folder, or one export file."""
    path = Path(path)
    files = _export_files(path)
    if not files:
        raise LabelFormatError(f"{path}: {_why_not_export(path)}")
    root = path if path.is_dir() else path.parent
    def read_one(file: tuple[Path, str]) -> list[Annotation]:
        return read_v1(file[0], root) if file[1] == "v1" else read_v2(file[0], root, project)
    return [a for annotations in read_each(files, read_one) for a in annotations]


def looks_like(path: Path) -> bool:
    return bool(_export_files(Path(path), DETECT_MOST_FILES))


def read_v1(path: Path, root: Path | None = None) -> list[Annotation]:
    path = Path(path)
    root = path.parent if root is None else Path(root)
    data = load_json(path)
    rows = [data] if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise LabelFormatError(f"{path}: a Labelbox v1 export must be a JSON list of data rows")
    out = []
    for index, row in enumerate(rows):
        annotation = _guarded(_v1_annotation, row, f"{path}: data row {index}", path, root)
        if annotation is not None:
            out.append(annotation)
    return out


def read_v2(path: Path, root: Path | None = None, project: str | None = None) -> list[Annotation]:
    path = Path(path)
    root = path.parent if root is None else Path(root)
    out = []
    for number, row in _ndjson_rows(path):
        annotation = _guarded(_v2_annotation, row, f"{path} line {number}", path, root, project)
        if annotation is not None:
            out.append(annotation)
    return out


# --- detecting the files --------------------------------------------------------------------------------------------

def _export_files(path: Path, most: int | None = None) -> list[tuple[Path, str]]:
    """(file, "v1" or "v2") for the export files at `path`; none when a folder has more than `most` candidates
    (detection must not open every file of a one-file-per-image export)."""
    if path.is_dir():
        candidates = sorted([*path.glob("*.json"), *path.glob("*.ndjson")])
    else:
        candidates = [path] if path.is_file() else []
    if most is not None and len(candidates) > most:
        return []
    return [(f, kind) for f in candidates if (kind := _kind(f)) in ("v1", "v2")]


def _kind(path: Path) -> str | None:
    """"v1", "v2", "import" (an annotation-import file, not an export) or None, from the file's first megabyte."""
    if path.suffix.lower() not in (".json", ".ndjson"):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES).decode("utf-8", "replace")
    except OSError:
        return None
    start = head.lstrip()[:1]
    if start == "{" and '"data_row"' in head and '"projects"' in head:
        return "v2"
    if start in ("[", "{") and '"Labeled Data"' in head and '"Label"' in head:
        return "v1"
    if start in ("[", "{") and '"dataRow"' in head and '"uuid"' in head:
        return "import"
    return None


def _why_not_export(path: Path) -> str:
    if path.is_file() and _kind(path) == "import":
        return ("this is a Labelbox annotation-import (NDJSON upload) file, not an export; export the project "
                "(Export v2 NDJSON, or the legacy v1 JSON) and read that")
    return "no Labelbox export found (a v1 JSON list with 'Label' and 'Labeled Data', or an Export v2 NDJSON)"


def _ndjson_rows(path: Path):
    """(line number, parsed object) for every non-blank line."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise LabelFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, parse_json(line, f"{path} line {number}")


def _guarded(convert, row, where: str, *args):
    """convert(row, where, ...) with any stray type error in odd files turned into our own error."""
    if not isinstance(row, dict):
        raise LabelFormatError(f"{where}: must be a JSON object, got {type(row).__name__}")
    try:
        return convert(row, where, *args)
    except LabelFormatError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        raise LabelFormatError(f"{where}: malformed ({type(e).__name__}: {e})") from None


# --- v1 -------------------------------------------------------------------------------------------------------------

def _v1_annotation(row: dict, where: str, path: Path, root: Path) -> Annotation | None:
    label = row.get("Label")
    if row.get("Skipped") is True or not isinstance(label, dict) or not label:
        return None                                    # skipped, or never labelled
    name = _image_name(row.get("External ID"), row.get("Labeled Data"), where)
    where = f"{where} ({_short(name)})"
    image_path = _find_image(root, name, where)
    width, height = _v1_size(row.get("Media Attributes"), image_path, name, root, where)
    objects = label.get("objects", [])
    if not isinstance(objects, list):
        raise LabelFormatError(f"{where}: Label.objects must be a list")
    annotation = Annotation(path, name, width, height, [], image_path=image_path)
    for k, obj in enumerate(objects):
        annotation.shapes.extend(_v1_shapes(obj, f"{where}: object {k}", annotation, root))
    return annotation


def _v1_size(media, image_path: Path | None, name: str, root: Path, where: str) -> tuple[int, int]:
    if isinstance(media, dict) and media.get("width") is not None:
        return _size(media.get("width"), media.get("height"), where)
    if image_path is None:
        raise LabelFormatError(f"{where}: Labelbox v1 exports record no image size and the image {name!r} is not in "
                               f"{root} or {root / 'images'}; put the image there")
    return _size(*image_size(image_path), where)


def _v1_shapes(obj, where: str, annotation: Annotation, root: Path) -> list[Shape]:
    if not isinstance(obj, dict):
        raise LabelFormatError(f"{where}: must be a JSON object")
    label = _class_name(obj, ("title", "value"), where)
    if "polygon" in obj:
        return [Shape(label, _points(obj["polygon"], where))]
    if "bbox" in obj:
        return [Shape(label, _box(obj["bbox"], where))]
    if _no_area(obj, annotation):
        return []
    if isinstance(obj.get("instanceURI"), str):
        raster = _mask(root, annotation, [obj.get("featureId"), _url_name(obj["instanceURI"])], None, where)
        return [Shape(label, np.zeros((0, 2)), raster=raster)]
    raise LabelFormatError(f"{where} ({label!r}): has no polygon, bbox or instanceURI")


# --- v2 -------------------------------------------------------------------------------------------------------------

def _v2_annotation(row: dict, where: str, path: Path, root: Path, project: str | None) -> Annotation | None:
    objects = _v2_objects(row.get("projects"), project, where)
    if objects is None:
        return None                                    # no label in the chosen project(s) yet
    data_row = row.get("data_row")
    if not isinstance(data_row, dict):
        raise LabelFormatError(f"{where}: has no data_row object")
    external = data_row.get("external_id") or data_row.get("global_key")
    name = _image_name(external, data_row.get("row_data"), where)
    where = f"{where} ({_short(name)})"
    image_path = _find_image(root, name, where)
    width, height = _v2_size(row.get("media_attributes"), image_path, where)
    annotation = Annotation(path, name, width, height, [], image_path=image_path)
    for k, obj in enumerate(objects):
        annotation.shapes.extend(_v2_shapes(obj, f"{where}: object {k}", annotation, root))
    return annotation


def _v2_objects(projects, wanted: str | None, where: str) -> list | None:
    """The objects of the first label of each project (or of project `wanted`); None when there is no label."""
    if not isinstance(projects, dict):
        raise LabelFormatError(f"{where}: 'projects' must be an object keyed by project id")
    objects, labelled = [], False
    for project_id, entry in projects.items():
        if wanted is not None and project_id != wanted:
            continue
        labels = entry.get("labels") if isinstance(entry, dict) else None
        if not isinstance(labels, list):
            raise LabelFormatError(f"{where}: project {project_id}: 'labels' must be a list")
        if labels:
            labelled = True
            found = labels[0].get("annotations", {}).get("objects", [])
            if not isinstance(found, list):
                raise LabelFormatError(f"{where}: project {project_id}: annotations.objects must be a list")
            objects.extend(found)
    return objects if labelled else None


def _v2_size(media, image_path: Path | None, where: str) -> tuple[int, int]:
    if isinstance(media, dict) and media.get("width") is not None:
        return _size(media.get("width"), media.get("height"), where)
    if image_path is None:
        raise LabelFormatError(f"{where}: media_attributes has no width/height and the image is not found locally")
    return _size(*image_size(image_path), where)


def _v2_shapes(obj, where: str, annotation: Annotation, root: Path) -> list[Shape]:
    if not isinstance(obj, dict):
        raise LabelFormatError(f"{where}: must be a JSON object")
    label = _class_name(obj, ("name", "value"), where)
    if "polygon" in obj:
        return [Shape(label, _points(obj["polygon"], where))]
    if "bounding_box" in obj:
        return [Shape(label, _box(obj["bounding_box"], where))]
    if _no_area(obj, annotation):
        return []
    for key, colour_key in (("mask", None), ("composite_mask", "color_rgb")):
        if isinstance(obj.get(key), dict):
            return [Shape(label, np.zeros((0, 2)), raster=_v2_mask(obj, key, colour_key, annotation, root, where))]
    raise LabelFormatError(f"{where} ({label!r}): has no polygon, bounding_box or mask")


def _v2_mask(obj: dict, key: str, colour_key: str | None, annotation: Annotation, root: Path,
             where: str) -> np.ndarray:
    spec = obj[key]
    names = [obj.get("feature_id"), _url_name(spec.get("url") or spec.get("instanceURI"))]
    colour = None
    if colour_key is not None:
        colour = spec.get(colour_key)
        if not (isinstance(colour, list) and len(colour) == 3
                and all(isinstance(v, int) and 0 <= v <= 255 for v in colour)):
            raise LabelFormatError(f"{where}: composite_mask.{colour_key} must be [r, g, b], got {colour!r}")
        names.append(Path(annotation.file_name).stem)
    return _mask(root, annotation, names, colour, where)


# --- shared pieces --------------------------------------------------------------------------------------------------

def _no_area(obj: dict, annotation: Annotation) -> bool:
    """Whether `obj` is a geometry that outlines nothing (_NO_AREA), which `annotation` then records."""
    kind = next((key for key in _NO_AREA if key in obj), None)
    if kind is not None:
        annotation.no_area.append(kind)
    return kind is not None


def _class_name(obj: dict, keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        if isinstance(obj.get(key), str) and obj[key].strip():
            return obj[key]
    raise LabelFormatError(f"{where}: has no class name ({' or '.join(keys)})")


def _points(points, where: str) -> np.ndarray:
    if not isinstance(points, list) or not all(isinstance(p, dict) and _is_number(p.get("x"))
                                               and _is_number(p.get("y")) for p in points):
        raise LabelFormatError(f"{where}: polygon must be a list of {{'x': number, 'y': number}}")
    return np.array([(p["x"], p["y"]) for p in points], dtype=np.float64).reshape(-1, 2)


def _box(box, where: str) -> np.ndarray:
    keys = ("top", "left", "height", "width")
    if not isinstance(box, dict) or not all(_is_number(box.get(k)) for k in keys):
        raise LabelFormatError(f"{where}: box must have numeric top, left, height, width, got {box!r}")
    top, left, height, width = (float(box[k]) for k in keys)
    return np.array([(left, top), (left + width, top), (left + width, top + height), (left, top + height)])


def _size(width, height, where: str) -> tuple[int, int]:
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError, OverflowError):
        raise LabelFormatError(f"{where}: image width/height must be numbers, got {width!r}, {height!r}") from None
    if w <= 0 or h <= 0 or w != width or h != height:
        raise LabelFormatError(f"{where}: image size must be positive whole numbers, got {width!r}x{height!r}")
    return check_size(w, h, where)


def _image_name(external, url, where: str) -> str:
    if isinstance(external, str) and external.strip():
        return external.strip()
    name = _url_name(url)
    if not name:
        raise LabelFormatError(f"{where}: no image name (External ID / external_id) and no usable image URL")
    return name


def _url_name(url) -> str | None:
    """The last path part of a URL (query dropped, %-escapes undone), or None."""
    if not isinstance(url, str) or not url.strip():
        return None
    part = urllib.parse.unquote(urllib.parse.urlsplit(url.strip()).path).replace("\\", "/").rstrip("/")
    name = part.rsplit("/", 1)[-1]
    return name if name not in ("", ".", "..") else None


def _find_image(root: Path, name: str, source: str) -> Path | None:
    found = _find_local(root, IMAGE_DIRS, [name], "image", source)
    if found is None and not Path(name).suffix:
        for folder in IMAGE_DIRS:                       # an External ID without extension: match the stem
            matches = _matching_files(Path(root) / folder, name)
            if matches:
                return resolve_inside(root, os.path.relpath(matches[0], root), "image", source)
    return found


def _find_local(root: Path, folders, names, what: str, source: str) -> Path | None:
    """The first existing `folder/name` under root; `source` (the file and data row) starts error messages."""
    for name in names:
        for folder in folders:
            candidate = resolve_inside(root, os.path.join(folder, name.replace("\\", "/")), what, source)
            if is_file(candidate):
                return candidate
    return None


def _matching_files(folder: Path, stem: str) -> list[Path]:
    """The files `folder/<stem>.*`, none when the stem cannot be a file name (a NUL byte, far too long)."""
    try:
        return sorted(p for p in folder.glob(f"{_glob_safe(stem)}.*") if is_file(p))
    except (OSError, ValueError):
        return []


def _mask(root: Path, annotation: Annotation, names: list, colour, where: str) -> np.ndarray:
    """(H, W) bool mask from the first local file of `names` (each tried as is and with .png) in masks/."""
    names = [n for n in names if isinstance(n, str) and n.strip()]
    tries = [t for n in names for t in (n, f"{n}.png")]
    found = _find_local(root, (MASK_DIR,), tries, "mask", where)
    if found is None:
        wanted = f"{names[0]}.png" if names else "<feature id>.png"
        raise LabelFormatError(f"{where}: the segmentation mask could not be loaded: Labelbox mask URLs need "
                               f"credentials, so download it and save it as {Path(root) / MASK_DIR / wanted}")
    rgb = open_rgb(found)
    if rgb.shape[:2] != (annotation.height, annotation.width):
        raise LabelFormatError(f"{where}: mask {found.name} is {rgb.shape[1]}x{rgb.shape[0]}, the image is "
                               f"{annotation.width}x{annotation.height}")
    if colour is not None:
        return (rgb == np.asarray(colour, np.uint8)).all(axis=-1)
    return rgb.max(axis=-1) >= 128


def _short(name: str, limit: int = 80) -> str:
    # Names come from the export and may be thousands of characters long; a message needs only their start.
    return name if len(name) <= limit else name[:limit - 3] + "..."


def _glob_safe(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _is_number(v) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:                               # an integer too large for a float
        return False
