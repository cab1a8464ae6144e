"""COCO instances JSON: `images`, `annotations` and `categories` in one file for many images.

    {"images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}, ...],
     "categories": [{"id": 3, "name": "car"}, ...],
     "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "iscrowd": 0,
                      "segmentation": [[x1, y1, x2, y2, ...], ...]            # polygons, or
                                      {"size": [480, 640], "counts": [...]}   # uncompressed RLE, or
                                      {"size": [480, 640], "counts": "..."}}, # compressed RLE
                      "bbox": [x, y, w, h]}, ...]}

Conventions (see `read`):
- Polygon coordinates are continuous pixel coordinates with the origin at the image's top-left corner, as in our
  shapes: pycocotools' own polygon rasterisation fills pixel (r, c) when its centre (c + 0.5, r + 0.5) is inside
  (a square 0..10 fills pixels 0..9; 2.5..7.5 fills 3..7), so it differs from our coverage rule only on boundary
  pixels (tests/test_format_coco.py measures it on the real samples).
- Several polygons in one annotation are separate parts of one object (COCO draws their union), never holes.
- RLE is decoded by pycocotools; counts are checked against the image size first, because pycocotools' C decoder
  writes past its buffer when the runs add up to more than height * width.
- COCO has no z-order. Annotations are drawn in file order, later ones on top, except crowd regions, which are
  drawn under every single-object annotation of their image (a person outlined on their own beats the crowd blob).
  That is how converters built on pycocotools paint them, and masks made before stay the same; a small object
  listed before a large one around it (a fork before the dining table) is then painted over, which `labels check`
  reports (the rasterizer names every shape that later ones cover entirely).
- `iscrowd: 1` regions are painted with the ignore id by default: their masks are coarse blobs that also cover the
  gaps between the people or cars in them, so their pixels are neither trained on nor scored, as instance and
  semantic segmentation toolboxes commonly do. `crowd="class"` paints them with their category instead.
- An annotation with an empty segmentation but a `bbox` is drawn as that rectangle.
- Images without annotations stay in the result (their mask is all fill: nothing was outlined on them).
- Image files are looked up, by `file_name`, in the JSON's folder and its `images/` and `JPEGImages/` folders, then
  (when the JSON sits in `annotations/`) in the export folder, its `images/` and `JPEGImages/` folders and a folder
  named after the JSON's split (`instances_val2017.json` -> `val2017/`). A name that leads out of the export folder
  is refused; an image found nowhere leaves `image_path` None.
- A folder given holds its JSONs, those in its `annotations/`, and those in its split folders (Roboflow's `train/`,
  `valid/`, `test/`, each JSON with its images beside it). An image's split in the export (Annotation.split) is its
  JSON's: from the JSON's name (`instances_val2017.json`: validation) or its split folder (formats.add_split_folders).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from streetseg_jax.labels import jsonio
from streetseg_jax.labels.images import check_size, is_file, resolve_inside
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, Shape, export_split, read_each

CROWD_CHOICES = ("ignore", "class")
IMAGE_DIRS = ("", "images", "JPEGImages")
_SCAN_CHUNK = 1 << 20
COCO_KEYS = ('"images"', '"annotations"')       # "categories" tends to come last, after hundreds of megabytes
DETECT_MOST_FILES = 10     # a folder of more JSON files holds one file per image: not a COCO export


def read(path: Path, label_map=None, crowd: str = "ignore") -> list[Annotation]:
    """Every COCO instances JSON in a folder (and its `annotations/` folder), or one JSON file."""
    if crowd not in CROWD_CHOICES:
        raise ValueError(f"crowd must be one of {CROWD_CHOICES}, got {crowd!r}")
    path = Path(path)
    if path.is_file() and scan_json_keys(path, COCO_KEYS, ('"segments_info"',)) == '"segments_info"':
        raise LabelFormatError(f"{path}: this is a COCO panoptic file (segments_info); read it as coco_panoptic")
    files = [path] if path.is_file() else json_files(path, looks_like_instances)
    if not files:
        raise LabelFormatError(f"{path}: no COCO instances JSON (with images, annotations and segmentation) found")
    root = export_root(path)
    return [a for annotations in read_each(files, lambda f: read_coco(f, root, crowd)) for a in annotations]


def looks_like(path: Path) -> bool:
    return bool(json_files(Path(path), looks_like_instances, DETECT_MOST_FILES))


def looks_like_instances(path: Path) -> bool:
    """A JSON file whose text holds the keys "images", "annotations" and, if there is any annotation, its
    "segmentation" (a panoptic file has "segments_info" instead)."""
    return scan_json_keys(path, COCO_KEYS, ('"segmentation"', '"segments_info"')) in ('"segmentation"', "")


def read_coco(json_path: Path, root: Path | None = None, crowd: str = "ignore") -> list[Annotation]:
    """One Annotation per entry of `images` (file order); `root` is the export folder image paths must stay in."""
    json_path = Path(json_path)
    root = export_root(json_path) if root is None else Path(root)
    data = load_json(json_path)
    names = categories_by_id(data, json_path)
    annotations = annotations_by_image(data, json_path, root)
    for index, ann in enumerate(json_list(data, "annotations", json_path)):
        where = f"{json_path}: annotation {index} (id {entry_field(ann, 'id', json_path, index)})"
        try:
            target = annotations.get(entry_id(ann.get("image_id"), where, "image_id"))
            if target is None:
                raise LabelFormatError(f"{where}: image_id {ann.get('image_id')!r} is not in images")
            target.shapes.extend(annotation_shapes(ann, target, names, where, crowd))
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
            if isinstance(e, LabelFormatError):
                raise
            raise LabelFormatError(f"{where}: malformed ({type(e).__name__}: {e})") from None
    for annotation in annotations.values():
        annotation.shapes.sort(key=lambda shape: shape.z_order)   # stable: crowds under, file order otherwise
    return list(annotations.values())


# --- shared with coco_panoptic ------------------------------------------------------------------------------------

def export_root(path: Path) -> Path:
    """The folder image and mask names must stay inside: the folder given, or the JSON's folder (its parent when
    that folder is `annotations/`, COCO's own layout)."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "annotations" else path.parent


def json_files(path: Path, accept, most: int | None = None) -> list[Path]:
    """`path` itself when it is an accepted file; else the accepted *.json in the folder, its annotations/ and its
    split folders (Roboflow's train/ valid/ test/, each with its own JSON), none when there are more than `most` to
    look at: detection must not read every file of a large folder."""
    if not path.is_dir():
        return [path] if path.is_file() and accept(path) else []
    splits = sorted(p for p in path.iterdir() if export_split(p.name) and p.is_dir())
    candidates = [f for folder in (path, path / "annotations", *splits) for f in sorted(folder.glob("*.json"))]
    if most is not None and len(candidates) > most:
        return []
    return [f for f in candidates if f.is_file() and accept(f)]


def scan_json_keys(path: Path, required: tuple[str, ...], decisive: tuple[str, ...]) -> str | None:
    """Which of `decisive` comes first in the file's text once all of `required` were seen: that key, "" when
    the file holds all of `required` and none of `decisive` (a file without annotations), None otherwise.

    Reads in chunks and stops early, so telling a 400 MB instances file from a panoptic one costs little.
    """
    if path.suffix.lower() != ".json":
        return None
    seen, tail = set(), ""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_SCAN_CHUNK):
                text = tail + chunk.decode("utf-8", "replace")
                seen.update(k for k in required if k in text)
                hits = [(text.find(k), k) for k in decisive if k in text]
                if hits and len(seen) == len(required):
                    return min(hits)[1]
                tail = text[-64:]
    except OSError:
        return None
    return "" if len(seen) == len(required) else None


def load_json(path: Path) -> dict:
    data = jsonio.load_json(path)
    if not isinstance(data, dict):
        raise LabelFormatError(f"{path}: the top level must be a JSON object with images, annotations, categories")
    return data


def categories_by_id(data: dict, path: Path) -> dict:
    names: dict = {}
    for index, category in enumerate(json_list(data, "categories", path)):
        where = f"{path}: category {index}"
        cat_id = entry_id(entry_field(category, "id", path, index, "category"), where, "id")
        name = category.get("name")
        if not isinstance(name, str) or not name.strip():
            raise LabelFormatError(f"{where}: has no name")
        if cat_id in names:
            raise LabelFormatError(f"{where}: id {cat_id} is used twice ({names[cat_id]!r} and {name!r})")
        names[cat_id] = name
    return names


def annotations_by_image(data: dict, path: Path, root: Path) -> dict:
    """An empty Annotation per image id, in file order, with its size and (when found) its image file."""
    out: dict = {}
    split = json_split(path)
    for index, image in enumerate(json_list(data, "images", path)):
        where = f"{path}: image {index}"
        image_id = entry_id(entry_field(image, "id", path, index, "image"), where, "id")
        if image_id in out:
            raise LabelFormatError(f"{where}: id {image_id} is used twice")
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise LabelFormatError(f"{where}: has no file_name")
        width, height = image_size_of(image, where)
        image_path = find_file(root, path, file_name, "image file_name", IMAGE_DIRS)
        out[image_id] = Annotation(path, file_name, width, height, [], image_path=image_path, split=split)
    return out


def json_split(path: Path) -> str | None:
    """The split a JSON's name gives (COCO's own instances_train2017.json, panoptic_val2017.json), or None."""
    return export_split(path.stem.rsplit("_", 1)[1].rstrip("0123456789")) if "_" in path.stem else None


def image_size_of(entry: dict, where: str) -> tuple[int, int]:
    width, height = entry.get("width"), entry.get("height")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise LabelFormatError(f"{where}: width and height must be positive integers, got {width!r}, {height!r}")
    return check_size(width, height, where)


def find_file(root: Path, json_path: Path, name: str, what: str, folders: tuple[str, ...]) -> Path | None:
    """The first existing `folder/name` for the folders (relative to the JSON's folder, then to the export folder
    and the JSON's split folder); every candidate must stay inside `root`."""
    name = name.replace("\\", "/")
    bases = [json_path.parent]
    if json_path.parent.resolve() != Path(root).resolve():
        bases.append(Path(root))
    candidates = [base / folder for base in bases for folder in folders]
    if "_" in json_path.stem:
        candidates.append(Path(root) / json_path.stem.rsplit("_", 1)[1])
    root_resolved = Path(root).resolve()
    for folder in candidates:
        relative = os.path.relpath(folder.resolve(), root_resolved)
        candidate = resolve_inside(root, os.path.join(relative, name), what, json_path, name)
        if is_file(candidate):
            return candidate
    return None


def decode_rle(segmentation: dict, height: int, width: int, where: str) -> np.ndarray:
    """(height, width) bool mask of a COCO RLE, checked before pycocotools sees it."""
    size = segmentation.get("size")
    if size != [height, width]:
        raise LabelFormatError(f"{where}: RLE size {size!r} is not the image's [height, width] [{height}, {width}]")
    counts = segmentation.get("counts")
    if isinstance(counts, list):
        _check_runs(counts, height * width, where)
        rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    elif isinstance(counts, str):
        _check_runs(_string_counts(counts, where), height * width, where)
        rle = {"size": [height, width], "counts": counts.encode("ascii")}
    else:
        raise LabelFormatError(f"{where}: RLE counts must be a list of run lengths or a compressed string")
    with warnings.catch_warnings():       # pycocotools 2.0.x under numpy 2 warns about its own array protocol
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(coco_mask.decode(rle), dtype=bool)


# --- one annotation -----------------------------------------------------------------------------------------------

def annotation_shapes(ann: dict, image: Annotation, names: dict, where: str, crowd: str) -> list[Shape]:
    category_id = entry_id(ann.get("category_id"), where, "category_id")
    if category_id not in names:
        raise LabelFormatError(f"{where}: category_id {category_id} is not in categories")
    is_crowd = ann.get("iscrowd", 0) in (1, "1")      # True == 1 as well
    shapes = _segmentation_shapes(ann, names[category_id], image, where)
    for shape in shapes:
        shape.ignore = shape.ignore or is_crowd and crowd == "ignore"
        shape.z_order = -1 if is_crowd else 0
    return shapes


def _segmentation_shapes(ann: dict, label: str, image: Annotation, where: str) -> list[Shape]:
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, dict):
        return [_raster_shape(label, decode_rle(segmentation, image.height, image.width, where))]
    if isinstance(segmentation, list) and segmentation:
        if all(isinstance(part, dict) for part in segmentation):       # a list of RLEs: their union
            return [_raster_shape(label, decode_rle(part, image.height, image.width, where))
                    for part in segmentation]
        return [Shape(label, _ring(part, where, k)) for k, part in enumerate(segmentation)]
    if segmentation in (None, []) and ann.get("bbox") is not None:
        return [Shape(label, _box_ring(ann["bbox"], where))]
    raise LabelFormatError(f"{where}: segmentation must be a list of polygons or an RLE object, "
                           f"got {type(segmentation).__name__}")


def _raster_shape(label: str, raster: np.ndarray) -> Shape:
    return Shape(label, np.zeros((0, 2)), raster=raster)


def _ring(flat, where: str, k: int) -> np.ndarray:
    if not isinstance(flat, list) or not all(_is_number(v) for v in flat):
        raise LabelFormatError(f"{where}: polygon {k} must be a flat list of numbers [x1, y1, x2, y2, ...]")
    if len(flat) % 2:
        raise LabelFormatError(f"{where}: polygon {k} has an odd number of coordinates ({len(flat)})")
    return np.asarray(flat, dtype=np.float64).reshape(-1, 2)


def _box_ring(bbox, where: str) -> np.ndarray:
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise LabelFormatError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    return np.array([(x, y), (x + w, y), (x + w, y + h), (x, y + h)])


# --- RLE checks ---------------------------------------------------------------------------------------------------

def _check_runs(counts: list, total: int, where: str) -> None:
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise LabelFormatError(f"{where}: RLE counts must be non-negative integers")
    if sum(counts) != total:
        raise LabelFormatError(f"{where}: RLE runs add up to {sum(counts)} pixels, the image has {total}")


def _string_counts(text: str, where: str) -> list[int]:
    """Run lengths of a compressed RLE string, read the way pycocotools' C code reads them (6-bit characters from
    '0', 5 payload bits, a continuation bit, a sign bit in the last character; from the fourth run on, each is
    stored as the difference to the run two before). Only used to check the string before pycocotools decodes it:
    a string that ends inside a number makes the C code read past its end."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        value, k, more = 0, 0, True
        while more:
            if p >= len(text) or k == 6:      # 6 characters (30 bits) cover any run in an image we accept
                raise LabelFormatError(f"{where}: compressed RLE counts are malformed (a run is cut off or too long)")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise LabelFormatError(f"{where}: compressed RLE counts hold an invalid character {text[p]!r}")
            value |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                value |= -1 << (5 * k)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


# --- small checks -------------------------------------------------------------------------------------------------

def json_list(data: dict, key: str, path: Path) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise LabelFormatError(f"{path}: '{key}' must be a list, got {type(value).__name__}")
    return value


def entry_field(entry, key: str, path: Path, index: int, what: str = "annotation"):
    if not isinstance(entry, dict):
        raise LabelFormatError(f"{path}: {what} {index} must be an object, got {type(entry).__name__}")
    return entry.get(key)


def entry_id(value, where: str, key: str) -> int | str:
    """Ids are integers in COCO; some converters write strings (even file names), which work as keys just as well."""
    if (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value):
        return value
    raise LabelFormatError(f"{where}: {key} must be an integer or a string, got {value!r}")


def _is_number(v) -> bool:
    """A finite int or float (not bool): 1e999 parses to inf, and an integer past float range is no coordinate."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False
