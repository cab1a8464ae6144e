"""The validation report: everything wrong with an export, found before anything is written.

Per file: unknown class names, degenerate or self-intersecting polygons, points outside the image, the image
missing or unreadable, and the image's size (after EXIF orientation) disagreeing with the annotation. Over the
export: each class's share of the pixels and the number of images it appears in, the unlabelled share per image
(pixels no shape claims, which get the label map's fill class), and suggested median-frequency class weights.

Errors make an export unusable as it stands (a build refuses it, `check` exits non-zero); warnings are worth a
look but the masks are still made (`check --strict` exits non-zero on them too). Notes are about the label map
alone and change no mask, training or score (class colours that pictures cannot tell apart): no reason to stop.

Images are found for each annotation by `locate_images`: the image the export embeds, else the file the reader
resolved, else a file under the export folder with the annotation file's stem or the file name the annotation
gives; files in folders of masks (SegmentationClass/, masks/, trainannot/ ...) and masks named like a photo (few
grey levels, palette indices or, where several files share a stem, colours) are never taken for the photo.
Each image is known by its key (shapes.image_key): the image's file stem, or the key its reader gave it where
stems repeat within an export (a CVAT project's `Train/img0`, a mask folder's `seq1/frame_001`). Masks are named after
it (`<key>.png`, in subfolders for keys with a `/`), splits hash it.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import unicodedata
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from streetseg_jax.atomic import WRITE_ERRORS, atomic_file, write_bytes
from streetseg_jax.labels.convert import UNKNOWN_CHOICES, class_ids, mask_png, rasterize_with_unlabelled
from streetseg_jax.labels.formats.masks import MASK_DIRS, find_pairs
from streetseg_jax.labels.images import (IMAGE_SUFFIXES, MAX_PIXELS, OutsideExportError, files_under, image_size,
                                         is_file, is_rotated, open_rgb, resolve_inside)
from streetseg_jax.labels.label_map import LabelMap
from streetseg_jax.labels.rasterize import coordinate_limit
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, base_name, image_key, listing
from streetseg_jax.labels.stats import median_frequency_weights, sum_image_counts

EMBEDDED = "<embedded in the annotation>"
_PAIRS_PER_CHUNK = 1 << 20        # segment pairs tested at once by the self-intersection check
_SHOWN = 30                       # problems listed on screen (all of them are in the JSON)


@dataclasses.dataclass
class FileReport:
    """What was found in one annotation (one image)."""
    annotation: str                       # the annotation file
    key: str                              # image_key: mask file name (without .png), split key
    image: str | None = None              # the image file, EMBEDDED, or None when there is none
    width: int = 0
    height: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    class_pixels: list[int] = dataclasses.field(default_factory=list)   # per class id
    ignore_pixels: int = 0
    unlabelled_pixels: int | None = None  # pixels no shape claims; None when not measured

    @property
    def unlabelled_share(self) -> float | None:
        pixels = self.width * self.height
        return None if self.unlabelled_pixels is None or not pixels else self.unlabelled_pixels / pixels


# --- keys and images ---------------------------------------------------------------------------------------------
# Folders of label masks, never of photos (PASCAL VOC's SegmentationClass/, CamVid's trainannot/, Cityscapes'
# gtFine/): a mask named like a missing photo was taken for it, and the standard VOC layout was ambiguous.
# The mask reader's own folders are among them, but annotations/, which holds VOC XML beside photos as often.
LABEL_FOLDERS = frozenset({d.lower() for d in MASK_DIRS if d != "annotations"} | {
    "mask", "label", "segmentationclassaug", "segmentationclassvisualization", "segmentationobject",
    "segmentationobjectpng", "segmentationobjectvisualization", "gtfine", "gtcoarse"})


def in_label_folder(path: Path, root: Path) -> bool:
    """Whether `path` lies in a folder of label masks below `root` (LABEL_FOLDERS, or `<name>annot/`)."""
    folders = path.relative_to(root).parts[:-1]
    return any(f.lower() in LABEL_FOLDERS or (f.lower().endswith("annot") and len(f) > len("annot")) for f in folders)


def looks_like_mask(path: Path, thorough: bool = False) -> bool:
    """Whether an image file is a label mask rather than a photo: a lossless greyscale or palette image of at most
    64 values (class ids), or, `thorough`, an RGB one of at most 256 colours (class colours: decoding every photo to
    learn that would double a check's time). JPEGs are photos: no tool writes masks in a lossy format."""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return False
    try:
        with Image.open(path) as image:
            if image.mode in ("P", "L", "1", "I", "I;16"):
                return image.getcolors(64) is not None        # None: more values than that
            if not thorough:
                return False
            return image.convert("RGB").getcolors(256) is not None
    except (OSError, ValueError, Image.DecompressionBombError):
        return False        # unreadable: check_file says so for the image it is given


class ImageIndex:
    """Every image file under an export folder (hidden folders and folders of label masks skipped), by file name
    and by stem."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        self.by_folded_name: dict[str, list[Path]] = {}     # case and Unicode form aside (Windows, macOS zips)
        self._masks: dict[tuple[Path, bool], bool] = {}
        self.in_label_folders: dict[str, list[Path]] = {}     # by stem: named in the message when none is found
        for path in files_under(self.root) if self.root.is_dir() else []:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if in_label_folder(path, self.root):
                self.in_label_folders.setdefault(path.stem, []).append(path)
                continue
            self.by_name.setdefault(path.name, []).append(path)
            self.by_stem.setdefault(path.stem, []).append(path)
            self.by_folded_name.setdefault(_fold(path.name), []).append(path)

    def find(self, annotation: Annotation, one_per_file: bool) -> Path | str:
        """The image of `annotation`, or a message saying why there is none. For formats with one annotation
        file per image the file's stem is tried first (file names inside annotations are often stale)."""
        source = Path(annotation.source)
        name = base_name(annotation.file_name)
        tries = [lambda: self._by_stem(source.stem, source)] if one_per_file else []
        tries += [lambda: self._by_path(annotation.file_name, source),
                  lambda: self._unique(self.by_name, name, source), lambda: self._by_stem(Path(name).stem, source),
                  lambda: self._unique(self.by_folded_name, _fold(name), source)]
        for attempt in tries:
            found = attempt()
            if found is not None:
                return found
        looked_for = " or ".join(filter(None, [f"{source.stem}.*" if one_per_file else "",
                                                repr(annotation.file_name) if annotation.file_name else ""]))
        stems = {Path(name).stem, source.stem} if one_per_file else {Path(name).stem}
        photos = [p for stem in stems for p in self.in_label_folders.get(stem, []) if not self.is_mask(p, True)]
        aside = (f" ({photos[0].relative_to(self.root)} looks like a photo, but folders of label masks are not "
                 "searched for photos: move the photos to images/)") if photos else ""
        return f"no image named {looked_for or '(no name given)'} under {self.root}{aside}"

    def _by_path(self, file_name: str | None, source: Path) -> Path | str | None:
        if not file_name or "://" in file_name:
            return None
        for base in (source.parent, self.root, self.root / "images"):
            try:
                candidate = resolve_inside(self.root, os.path.relpath(base / file_name, self.root), "image",
                                           source)
            except OutsideExportError as e:
                return str(e).split(": ", 1)[-1]
            except ValueError:          # a name no file has (NUL byte, too long), another drive on Windows
                continue
            if is_file(candidate):
                return candidate
        return None

    def _by_stem(self, stem: str, source: Path) -> Path | str | None:
        """The image with this stem that is no mask (a greyscale or palette PNG the tool or the user left beside the
        annotation); among several, the one in the annotation's own folder, else the one that is not a colour
        mask either (decoded only then: every image of a folder of sequences shares its stems), else the one
        nearest the annotation (_nearest)."""
        candidates = [p for p in self.by_stem.get(stem, ()) if not self.is_mask(p, False)] if stem else []
        if len(candidates) > 1:
            near = [p for p in candidates if p.parent == source.parent]
            candidates = near or [p for p in candidates if not self.is_mask(p, True)] or candidates
        if len(candidates) > 1:
            candidates = _nearest(candidates, source)
        return self._one(candidates, f"several images share the stem {stem!r}")

    def is_mask(self, path: Path, thorough: bool) -> bool:
        """looks_like_mask, each file decoded once at most."""
        if (path, thorough) not in self._masks:
            self._masks[path, thorough] = looks_like_mask(path, thorough)
        return self._masks[path, thorough]

    def _unique(self, table: dict[str, list[Path]], name: str, source: Path) -> Path | str | None:
        """The image of this name; among several, the one nearest the annotation file (_nearest)."""
        candidates = table.get(name) if name else None
        return self._one(_nearest(candidates, source) if candidates else None, f"several images are named {name!r}")

    def _one(self, candidates: list[Path] | None, why: str) -> Path | str | None:
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        return f"{why}: {', '.join(str(p.relative_to(self.root)) for p in candidates)}"


def _nearest(candidates: list[Path], source: Path) -> list[Path]:
    """The candidates that share the most folders with the annotation file `source` (its own folder first; then
    train/Annotations/a.xml takes train/JPEGImages/a.jpg, not valid/JPEGImages/a.jpg)."""
    here = os.path.abspath(source.parent)
    shared = [len(Path(os.path.commonpath([os.path.abspath(p.parent), here])).parts) for p in candidates]
    return [p for p, n in zip(candidates, shared) if n == max(shared)]


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def locate_images(annotations: list[Annotation], root: Path, index: ImageIndex | None = None) -> dict[int, str]:
    """Set `image_path` on every annotation whose image is found (unless the reader did, or the image is
    embedded); returns {index: why not} for the others."""
    index = index or ImageIndex(root)
    per_source = collections.Counter(str(a.source) for a in annotations)
    missing = {}
    for i, annotation in enumerate(annotations):
        if annotation.image_bytes is not None:
            continue
        if annotation.image_path is not None and is_file(Path(annotation.image_path)):
            continue
        # Not named, or named but not there as written (another case, another Unicode form): looked for.
        found = index.find(annotation, per_source[str(annotation.source)] == 1)
        if isinstance(found, Path):
            annotation.image_path = found
        else:
            missing[i] = _missing_image(annotation) if annotation.image_path is not None else found
    return missing


def _missing_image(annotation: Annotation) -> str:
    return f"image {annotation.image_path} does not exist"


def duplicate_keys(annotations: list[Annotation]) -> dict[int, str]:
    """{index: message} for annotations whose mask file name (image key) another annotation also has."""
    owners: dict[str, list[int]] = {}
    for i, annotation in enumerate(annotations):
        owners.setdefault(image_key(annotation), []).append(i)
    clashes = {}
    for key, indices in owners.items():
        if len(indices) > 1:
            sources = list(dict.fromkeys(str(annotations[i].source) for i in indices))
            for i in indices:
                clashes[i] = (f"{len(indices)} annotations are for images with the key {key!r}, and each would "
                              f"become {key}.png (in {', '.join(sources)}); rename the images or build the "
                              "exports separately")
    return clashes


# --- one file ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CheckOptions:
    unknown: str = "error"                # "error": unknown class names are errors; "ignore": warnings
    check_images: bool = True             # look at the image (size, readable)
    decode_images: bool = False           # decode it fully (catches truncated files; slower)
    mask_dir: str | None = None           # keep each mask there (kept_mask_path: a build then need not draw again)


def check_file(annotation: Annotation, label_map: LabelMap, options: CheckOptions,
               known_problems: Iterable[str] = (), key: str | None = None) -> FileReport:
    """The report of one annotation; never raises for bad input (a problem is reported instead)."""
    key = image_key(annotation) if key is None else key
    report = FileReport(str(annotation.source), key, _image_label(annotation),
                        int(annotation.width), int(annotation.height), errors=list(known_problems))
    _check_labels(annotation, label_map, options.unknown, report)
    image_name = None if annotation.image_path is None else Path(annotation.image_path).name
    report.errors.extend(_not_text(image_name, annotation.file_name, key))
    if options.check_images and report.image is not None:
        if annotation.image_bytes is None and not is_file(Path(annotation.image_path)):
            missing = _missing_image(annotation)              # said once, also when locate_images has said it
            report.errors.extend([] if missing in report.errors else [missing])
        else:
            _check_image(annotation, options.decode_images, report)
    if not _size_problem(report):
        report.warnings.extend(shape_warnings(annotation))
        report.warnings.extend(_turned_photo_hint(annotation, report))
        _measure(annotation, label_map, report, options.mask_dir)
    return report


def _turned_photo_hint(annotation: Annotation, report: FileReport) -> list[str]:
    """Shapes running outside a photo a viewer shows turned (EXIF): drawn on the photo as stored, perhaps, whose
    mask would not fit the photo as shown (the points-outside warnings alone did not say why)."""
    if report.image is None or not any(OUTSIDE in warning for warning in report.warnings):
        return []
    source = annotation.image_bytes if annotation.image_bytes is not None else Path(annotation.image_path)
    if not is_rotated(source):
        return []
    return ["the photo is stored turned (EXIF orientation) and shapes run outside it as a viewer shows it: were "
            "they drawn on the photo as stored? Their mask would not fit the photo as shown"]


def _not_text(*names: str | None) -> list[str]:
    """A file name that is no UTF-8 text (bytes a file system took, read back as surrogates), which a dataset cannot
    store (TFDS raised a UnicodeEncodeError mid-build)."""
    for name in names:
        try:
            (name or "").encode("utf-8")
        except UnicodeEncodeError:
            shown = (name or "").encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return [f"the file name {shown!r} is not UTF-8 text, which a dataset stores; rename the file"]
    return []


def _image_label(annotation: Annotation) -> str | None:
    if annotation.image_bytes is not None:
        return EMBEDDED
    return str(annotation.image_path) if annotation.image_path is not None else None


def _check_labels(annotation: Annotation, label_map: LabelMap, unknown: str, report: FileReport) -> None:
    errors, warnings = label_problems(annotation, label_map, unknown)
    report.errors.extend(errors)
    report.warnings.extend(warnings)


def label_problems(annotation: Annotation, label_map: LabelMap, unknown: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of what an annotation's shapes become: class names not in the label map (errors, or
    painted with the ignore id), shapes left out for having no area, no shape at all."""
    if unknown not in UNKNOWN_CHOICES:
        raise ValueError(f"unknown must be one of {UNKNOWN_CHOICES}, got {unknown!r}")
    errors, warnings = [], []
    ids = class_ids(annotation, label_map)
    names = sorted({s.label for s in annotation.shapes if not s.ignore and ids[s.label] is None})
    if names and unknown == "error":
        errors.append(f"unknown class name(s) {', '.join(map(repr, names))}: not in the label map "
                      "(add them as classes or aliases, or use --unknown ignore)")
    elif names:
        warnings.append(f"unknown class name(s) {', '.join(map(repr, names))} painted with the ignore id")
    if annotation.no_area:          # a lane drawn as a line was left out, said nowhere
        kinds = collections.Counter(annotation.no_area)
        warnings.append(f"{len(annotation.no_area)} shape(s) without an area left out ("
                        + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
                        + "): only shapes that enclose an area paint pixels")
    if not annotation.shapes:
        warnings.append("no shapes: the whole image gets the fill class")
    return errors, warnings


def _size_problem(report: FileReport) -> bool:
    """True (and an error) when the annotation's own image size cannot be drawn."""
    problem = size_problem(report.width, report.height)
    if problem:
        report.errors.append(problem)
    return problem is not None


def size_problem(width: int, height: int) -> str | None:
    """Why a mask of this size cannot be drawn (not positive, or more pixels than an image may have), or None."""
    if width <= 0 or height <= 0:
        return f"the annotation gives the image size {width}x{height}"
    if width * height > MAX_PIXELS:
        return f"the annotation gives the image size {width}x{height}, more than {MAX_PIXELS} pixels; refused"
    return None


def _check_image(annotation: Annotation, decode: bool, report: FileReport) -> None:
    source = annotation.image_bytes if annotation.image_bytes is not None else Path(annotation.image_path)
    name = EMBEDDED if annotation.image_bytes is not None else Path(annotation.image_path).name
    try:
        width, height = _decoded_size(source, name) if decode else image_size(source, name)
    except LabelFormatError as e:
        report.errors.append(str(e))
        return
    mismatch = size_mismatch(annotation, source, name, (width, height))
    if mismatch:
        report.errors.append(mismatch)
    elif min(width, height) < 2:        # TFDS stores such images, then cannot read them back
        report.errors.append(f"{name} is {width}x{height}: too small for a dataset (2x2 pixels at least)")


def size_mismatch(annotation: Annotation, image, name: str, size: tuple[int, int]) -> str | None:
    """How the image's size as a viewer shows it (`size`, of `image`: a path or bytes) differs from the one the
    annotation gives, or None."""
    if size == (annotation.width, annotation.height):
        return None
    oriented = " (after its EXIF orientation)" if is_rotated(image) else ""
    source = Path(annotation.source)
    if source.suffix.lower() not in IMAGE_SUFFIXES:        # a file of shapes (JSON, XML)
        return f"{name} is {size[0]}x{size[1]}{oriented} but {source.name} says {annotation.width}x{annotation.height}"
    if source.name == name and isinstance(image, Path):      # a mask of the photo's name: their folders tell them apart
        name = f"{image.parent.name}/{name}"
    return (f"{name} is {size[0]}x{size[1]}{oriented} but its mask {source.parent.name}/{source.name} is "
            f"{annotation.width}x{annotation.height}")


def _decoded_size(source: Path | bytes, name: str) -> tuple[int, int]:
    height, width = open_rgb(source, name).shape[:2]
    return width, height


# --- geometry ----------------------------------------------------------------------------------------------------
def shape_warnings(annotation: Annotation) -> list[str]:
    """Self-intersecting rings and points outside the image (the rasterizer reports degenerate shapes)."""
    rings, names, outside = [], [], {}
    for i, shape in enumerate(annotation.shapes):
        if shape.raster is not None:
            continue
        name = f"shape {i} ({shape.label!r})"
        for k, points in enumerate([shape.exterior, *shape.holes]):
            ring = _usable_ring(points, coordinate_limit(annotation.height, annotation.width))
            if ring is None:
                continue
            rings.append(ring)
            names.append(name if k == 0 else f"{name} hole {k - 1}")
            if k == 0:
                outside[len(rings) - 1] = _outside(ring, annotation.width, annotation.height, name)
    found = []
    for r, crossing in enumerate(self_intersections(rings)):
        if crossing is not None:
            a, b, (x, y) = crossing
            found.append(f"{names[r]}: self-intersecting (edges {a} and {b} cross near ({x:.1f}, {y:.1f}))")
        found.extend(outside.get(r, []))
    return found


def _usable_ring(points, limit: float) -> np.ndarray | None:
    """The ring as floats, or None for one the rasterizer skips (and says why): not an (N, 2) list, fewer than 3
    points, or coordinates that are not finite or out of range (which would overflow the tests below)."""
    try:
        ring = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if ring.ndim != 2 or ring.shape[1] != 2 or len(ring) < 3 or not (np.abs(ring) <= limit).all():
        return None
    return ring


OUTSIDE = "points outside the"


def _outside(ring: np.ndarray, width: int, height: int, name: str) -> list[str]:
    low, high = ring.min(axis=0), ring.max(axis=0)
    if high[0] <= 0 or high[1] <= 0 or low[0] >= width or low[1] >= height:
        return []                       # wholly outside: the rasterizer says so
    out = (ring[:, 0] < 0) | (ring[:, 1] < 0) | (ring[:, 0] > width) | (ring[:, 1] > height)
    if not out.any():
        return []
    return [f"{name}: {int(out.sum())} of {len(ring)} {OUTSIDE} {width}x{height} image (clipped)"]


def self_intersection(ring: np.ndarray) -> tuple[int, int, tuple[float, float]] | None:
    """The first pair of non-adjacent edges that cross (edge i joins point i to the next), with the crossing
    point; None for a simple ring. Edges that only touch (a shared point, collinear overlap) are not counted."""
    return self_intersections([ring])[0]


def self_intersections(rings: list[np.ndarray]) -> list[tuple[int, int, tuple[float, float]] | None]:
    """self_intersection of every ring, all rings tested together.

    Candidate pairs are edges whose x-extents overlap: edges sorted by their left end, each edge's candidates are
    a contiguous run, tested in vectorised chunks with the orientation test. Each ring is moved along x (for the
    sorting only) into a range of its own, so that no pair spans two rings."""
    edges = _ring_edges(rings)
    if edges is None:
        return [None] * len(rings)
    start, end, ring, local, count, number, shifted = edges
    left, right = np.minimum(shifted[0], shifted[1]), np.maximum(shifted[0], shifted[1])
    order = np.argsort(left, kind="stable")
    stop = np.searchsorted(left[order], right[order], side="right")
    pairs = np.maximum(stop - np.arange(len(order)) - 1, 0)
    found: list = [None] * len(rings)
    for first, last in _chunks(pairs):
        i, j = _candidate_pairs(order, pairs, first, last)
        far = np.abs(local[i] - local[j])
        keep = (far != 1) & (far != count[i] - 1)      # neighbours share a point: not a crossing
        with np.errstate(over="ignore", invalid="ignore"):     # absurd coordinates: no crossing found, no noise
            _record_crossings(start, end, ring, number, i[keep], j[keep], found)
    return found


def _ring_edges(rings: list[np.ndarray]):
    """Every edge of non-zero length of the rings with at least 4 of them, as flat arrays: start and end points,
    ring, position among its ring's edges, its ring's edge count, its number in the input ring, and the start and
    end x moved into the ring's own x range."""
    parts = []
    offset = 0.0
    for r, points in enumerate(rings):
        following = np.roll(points, -1, axis=0)
        kept = np.flatnonzero(np.any(points != following, axis=1))
        if len(kept) < 4:
            continue
        xs = points[:, 0]
        shift = offset - xs.min()
        offset += float(xs.max() - xs.min()) + 1.0
        parts.append((points[kept], following[kept], np.full(len(kept), r), np.arange(len(kept)),
                      np.full(len(kept), len(kept)), kept, shift))
    if not parts:
        return None
    start, end, ring, local, count, number = (np.concatenate([p[k] for p in parts]) for k in range(6))
    shift = np.concatenate([np.full(len(p[0]), p[6]) for p in parts])
    return start, end, ring, local, count, number, (start[:, 0] + shift, end[:, 0] + shift)


def _candidate_pairs(order, pairs, first, last):
    runs = pairs[first:last]
    mine = np.repeat(np.arange(first, last), runs)
    offset = np.arange(len(mine)) - np.repeat(np.cumsum(runs) - runs, runs)
    return order[mine], order[mine + 1 + offset]


def _record_crossings(start, end, ring, number, i, j, found: list) -> None:
    """Keep, per ring, the crossing pair with the lowest edge number."""
    a, b, c, d = start[i], end[i], start[j], end[j]
    o1, o2 = _orient(a, b, c), _orient(a, b, d)
    o3, o4 = _orient(c, d, a), _orient(c, d, b)
    for k in np.flatnonzero((o1 * o2 < 0) & (o3 * o4 < 0)).tolist():
        e1, e2 = sorted((int(number[i[k]]), int(number[j[k]])))
        r = int(ring[i[k]])
        if found[r] is None or (e1, e2) < found[r][:2]:
            t = o1[k] / (o1[k] - o2[k])                   # where c->d crosses the line through a, b
            point = c[k] + t * (d[k] - c[k])
            found[r] = (e1, e2, (float(point[0]), float(point[1])))


def _chunks(counts: np.ndarray):
    """(first, last) ranges of sorted edges whose candidate pairs add up to about _PAIRS_PER_CHUNK."""
    total = np.cumsum(counts)
    first = 0
    while first < len(counts):
        base = total[first - 1] if first else 0
        last = int(np.searchsorted(total, base + _PAIRS_PER_CHUNK, side="right"))
        last = max(last, first + 1)
        yield first, min(last, len(counts))
        first = last


def _orient(p, q, r) -> np.ndarray:
    """Twice the signed area of triangle p, q, r (per row): > 0 when r lies left of p -> q."""
    return (q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0])


# --- pixels ------------------------------------------------------------------------------------------------------
def _measure(annotation: Annotation, label_map: LabelMap, report: FileReport, mask_dir: str | None) -> None:
    """Rasterize once for the class statistics; the rasterizer's own problems become warnings."""
    try:
        mask, unlabelled, problems = rasterize_with_unlabelled(annotation, label_map)
    except (ValueError, MemoryError) as e:
        report.errors.append(f"cannot rasterize: {e}")
        return
    report.warnings.extend(problems)
    if mask_dir is not None and not _keep_mask(mask, Path(mask_dir), report):
        return
    counts = np.bincount(mask.ravel(), minlength=256)
    report.class_pixels = counts[:label_map.num_classes].tolist()
    report.ignore_pixels = int(counts[label_map.ignore_id])
    report.unlabelled_pixels = unlabelled


def kept_mask_path(mask_dir: Path, key: str) -> Path:
    """Where the mask of the image `key` is kept under mask_dir: a file named by the key's hash, so that keys that
    differ only in case (Frame, frame), which a case-insensitive disk (macOS, Windows) took for one file, or that
    are long, nested or odd, each get a file of their own."""
    return Path(mask_dir) / f"{hashlib.sha256(key.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}.png"


def _keep_mask(mask: np.ndarray, mask_dir: Path, report: FileReport) -> bool:
    """Write the mask at kept_mask_path; False (and an error) where it cannot be, but a full or read-only disk,
    which raises: no fault of the annotation's (a full disk made "16 problem(s) in the annotations")."""
    path = kept_mask_path(mask_dir, report.key)
    try:
        write_bytes(path, mask_png(mask))
    except (OSError, ValueError) as e:
        if getattr(e, "errno", None) in WRITE_ERRORS:
            raise
        report.errors.append(f"cannot keep the mask as {path} ({getattr(e, 'strerror', None) or e})")
        return False
    return True


# --- the whole export --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Report:
    format: str
    source: str
    label_map: LabelMap
    files: list[FileReport]
    unannotated: list[str] = dataclasses.field(default_factory=list)    # images under the export no file labels
    unreadable: list[str] = dataclasses.field(default_factory=list)     # "file: problem" of each file that could
                                                                        # not be read (formats.read_readable)

    @property
    def errors(self) -> list[tuple[str, str]]:
        """(file, problem): the files that could not be read first, then the problems of those that could."""
        return [_file_and_problem(line) for line in self.unreadable] + [
            (f.annotation, e) for f in self.files for e in f.errors]

    @property
    def warnings(self) -> list[tuple[str, str]]:
        """Each file's, then the export's as a whole (`export_warnings`), named by the export's folder."""
        return [(f.annotation, w) for f in self.files for w in f.warnings] + [
            (self.source, w) for w in self.export_warnings()]

    def absent_classes(self) -> list:
        """The label map's classes that no image has a pixel of (none before the masks were measured)."""
        if not any(f.class_pixels for f in self.files):
            return []
        pixels = self.class_pixels()
        return [c for c in self.label_map.classes if not pixels[c.id]]

    def export_warnings(self) -> list[str]:
        """Where at most one class has pixels: a model trained on the export learns nothing (a mask of 0 and 255, a
        binary mask as many tools save it, trained to mIoU 1.0 on its 0s alone, its 255s being the ignore id)."""
        return self._one_class_warnings()

    def notes(self) -> list[str]:
        """Colours of the label map that pictures cannot tell apart (colour_clashes): a note, not a warning, since
        masks, training and scores are the same whatever the colours, and an official palette (Cityscapes' bus and
        train) is not the user's to change: its colour masks would no longer read."""
        return self.label_map.colour_clashes()

    def _one_class_warnings(self) -> list[str]:
        absent = self.absent_classes()
        if not absent or len(absent) < self.label_map.num_classes - 1:
            return []
        found = f"{_no_pixel_of(absent)}: a model trained on this export cannot learn them"
        measured = [f for f in self.files if f.class_pixels]
        ignored = sum(f.ignore_pixels for f in measured)
        told = self.label_map.ignore_values is not None or any(c.values for c in self.label_map.classes)
        if self.format == "masks" and ignored and not told:
            share = 100 * ignored / sum(f.width * f.height for f in measured)
            values = " or ".join(map(str, self.label_map.mask_ignore_values()))
            found += (f"; {share:.1f}% of the pixels are the ignore value ({values}), no class: a binary mask "
                      "saved as 0 and 255 loses its second class (save it as 0 and 1, or list the class's "
                      "\"values\": [255] in the label map)")
        return [found]

    def class_pixels(self, rows=None) -> np.ndarray:
        """Pixels of each class, over every file or the files at `rows` (a split's)."""
        totals = np.zeros(self.label_map.num_classes, np.int64)
        for f in self.files if rows is None else (self.files[i] for i in rows):
            if f.class_pixels:
                totals += np.asarray(f.class_pixels, np.int64)
        return totals

    def class_images(self) -> np.ndarray:
        """Per class, the images it appears in (and the pixels of those images, for the weights)."""
        images = np.zeros(self.label_map.num_classes, np.int64)
        for f in self.files:
            if f.class_pixels:
                images += np.asarray(f.class_pixels) > 0
        return images

    def class_weights(self) -> np.ndarray:
        """The weights training computes from the same masks (`labels.stats`: ignore pixels count nowhere)."""
        counts = (np.asarray(f.class_pixels, np.int64) for f in self.files if f.class_pixels)
        return median_frequency_weights(*sum_image_counts(counts, self.label_map.num_classes))

    def to_dict(self) -> dict:
        return _report_dict(self)

    def text(self, shown: int = _SHOWN) -> str:
        return _report_text(self, shown)


def validate(annotations: list[Annotation], label_map: LabelMap, *, fmt: str = "", source: str | Path = "",
             root: Path | None = None, options: CheckOptions | None = None,
             map_fn: Callable = map, unreadable: list[str] = ()) -> Report:
    """Check every annotation (`map_fn` may be a process pool's imap over `check_job`); when `root` is given, the
    images are looked for under it first (locate_images). `unreadable`: the lines of the export's files that could
    not be read (formats.read_readable), errors of the report with the others'."""
    options = options or CheckOptions()
    keys = [image_key(a) for a in annotations]      # before images are located: a key must not depend on them
    known: dict[int, list[str]] = {}
    for i, message in duplicate_keys(annotations).items():
        known.setdefault(i, []).append(message)
    unannotated = []
    if root is not None and options.check_images:
        index = ImageIndex(Path(root))      # one walk of the export, for both
        for i, message in locate_images(annotations, Path(root), index).items():
            known.setdefault(i, []).append(message)
        if fmt in _IMAGES_BESIDE:
            unread = {Path(_file_and_problem(line)[0]).stem for line in unreadable}     # their photos: not said
            unannotated = [name for name in _unannotated(annotations, index, _photo_folders(fmt, Path(root)))
                           if Path(name).stem not in unread]
    jobs = [(a, label_map, options, known.get(i, []), keys[i]) for i, a in enumerate(annotations)]
    return Report(fmt, str(source), label_map, list(map_fn(check_job, jobs)), unannotated, list(unreadable))


def _file_and_problem(line: str) -> tuple[str, str]:
    """A reader's problem line, "file: problem", as that pair (("", line) where it names no file first)."""
    file, _, problem = line.partition(": ")
    return (file, problem) if problem else ("", line)


# Formats whose exports hold the photos and the annotations only (others keep renders beside them); a mask
# folder's masks are its annotations.
_IMAGES_BESIDE = ("voc", "labelme", "coco", "cvat", "masks")


def _photo_folders(fmt: str, root: Path) -> list[Path] | None:
    """Where a masks export keeps its photos: the image folders of its folder pairs (CamVid's palette look-up
    camvid11_palette.png at its top is no photo of it); None for other formats: anywhere under the export."""
    if fmt != "masks":
        return None
    try:
        return [image_dir.resolve() for image_dir, _ in find_pairs(root) if image_dir is not None]
    except (OSError, LabelFormatError):
        return None


def _unannotated(annotations: list[Annotation], index: ImageIndex, folders: list[Path] | None = None) -> list[str]:
    """Images in the index (in `folders` where given) that no annotation is of: left out of masks and datasets, so
    the report names them. An annotation that embeds its image (LabelMe's imageData) still names the file it was
    made from."""
    per_source = collections.Counter(str(a.source) for a in annotations)
    used = {Path(a.source).resolve() for a in annotations}      # mask files, where masks are the annotations
    for annotation in annotations:
        path = annotation.image_path
        if path is None and annotation.image_bytes is not None:
            found = index.find(annotation, per_source[str(annotation.source)] == 1)
            path = found if isinstance(found, Path) else None
        if path is not None:
            used.add(Path(path).resolve())
    return [path.relative_to(index.root).as_posix() for paths in index.by_name.values() for path in paths
            if path.resolve() not in used and not index.is_mask(path, False)
            and (folders is None or any(path.resolve().is_relative_to(folder) for folder in folders))]


def check_job(job) -> FileReport:
    """check_file on one (annotation, label_map, options, known problems, key) tuple: what a pool maps."""
    return check_file(*job)


# --- output ------------------------------------------------------------------------------------------------------
def _report_dict(report: Report) -> dict:
    pixels, images, weights = report.class_pixels(), report.class_images(), report.class_weights()
    all_pixels = sum(f.width * f.height for f in report.files if f.class_pixels) or 1
    measured = [f for f in report.files if f.unlabelled_pixels is not None]
    return {
        "format": report.format, "source": report.source, "images": len(report.files),
        "errors": len(report.errors), "warnings": len(report.warnings),
        "problems": [{"file": report.source, "key": None, "severity": "warning", "message": m}
                     for m in report.export_warnings()]      # first: a long list of the files' is cut short
        + [{"file": file, "key": None, "severity": "error", "message": m}
           for file, m in map(_file_and_problem, report.unreadable)]
        + [{"file": f.annotation, "key": f.key, "severity": severity, "message": m}
           for f in report.files for severity, messages in (("error", f.errors), ("warning", f.warnings))
           for m in messages],
        "classes": [{"id": c.id, "name": c.name, "pixel_share": float(pixels[c.id] / all_pixels),
                     "images": int(images[c.id]), "weight": float(weights[c.id])}
                    for c in report.label_map.classes],
        "ignore_pixel_share": sum(f.ignore_pixels for f in report.files) / all_pixels,
        "unlabelled_pixel_share": (sum(f.unlabelled_pixels for f in measured) /
                                   (sum(f.width * f.height for f in measured) or 1)) if measured else None,
        "fill_class": _fill_name(report.label_map),
        "files": [{"annotation": f.annotation, "image": f.image, "key": f.key, "width": f.width,
                   "height": f.height, "unlabelled_share": f.unlabelled_share, "errors": f.errors,
                   "warnings": f.warnings} for f in report.files],
        "label_map": report.label_map.to_dict(),
        "unannotated_images": report.unannotated,
        "notes": report.notes(),
    }


def _fill_name(label_map: LabelMap) -> str:
    if label_map.fill_id == label_map.ignore_id:
        return "ignore"
    return label_map.classes[label_map.fill_id].name


def _report_text(report: Report, shown: int) -> str:
    data = report.to_dict()
    lines = [f"validation report: {data['images']} image(s) of {report.format or 'annotations'} from "
             f"{report.source}: {data['errors']} error(s), {data['warnings']} warning(s)"]
    problems = data["problems"]
    shared = _shared_sources(report.files)     # files holding several images: name the image too
    lines += [f"{p['severity']}: {p['file']}" + (f" [{p['key']}]" if p["file"] in shared else "") +
              f": {p['message']}" for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"... and {len(problems) - shown} more problem(s) (all of them are in the --json report)")
    lines += [f"note: {report.source}: {note}" for note in data["notes"]]
    if report.unannotated:
        names = report.unannotated
        lines.append(f"note: {len(names)} image(s) with no annotation, left out: {', '.join(names[:shown])}"
                     + (f" and {len(names) - shown} more" if len(names) > shown else ""))
    lines += _class_table(data)
    absent = report.absent_classes()
    if absent and not report.export_warnings():
        lines.append(f"note: {_no_pixel_of(absent)}: a model trained on this export cannot learn them")
    lines += _unlabelled_lines(data, report.files)
    return "\n".join(lines)


def _no_pixel_of(classes) -> str:
    return f"no image has a pixel of class(es) {', '.join(f'{c.name!r} (id {c.id})' for c in classes)}"


def _shared_sources(files: list[FileReport]) -> set[str]:
    seen, shared = set(), set()
    for f in files:
        (shared if f.annotation in seen else seen).add(f.annotation)
    return shared


def _class_table(data: dict) -> list[str]:
    width = max([len(c["name"]) for c in data["classes"]] + [6])
    lines = ["classes:", f"  {'id':>3} {'name':<{width}} {'pixels':>8} {'images':>7} {'weight':>8}"]
    for c in data["classes"]:
        lines.append(f"  {c['id']:>3} {c['name']:<{width}} {100 * c['pixel_share']:>7.2f}% {c['images']:>7} "
                     f"{c['weight']:>8.3f}")
    lines.append(f"  {'':>3} {'ignore':<{width}} {100 * data['ignore_pixel_share']:>7.2f}%")
    lines.append("  (weight: suggested median-frequency class weight; 0 for a class no image has)")
    return lines


def _unlabelled_lines(data: dict, files: list[FileReport]) -> list[str]:
    measured = sorted((f for f in files if f.unlabelled_share is not None), key=lambda f: -f.unlabelled_share)
    if not measured:
        return []
    if not measured[0].unlabelled_pixels:
        return ["unlabelled pixels: none (the shapes cover every image)"]
    top = ", ".join(f"{f.key} {100 * f.unlabelled_share:.1f}%" for f in measured[:5] if f.unlabelled_pixels)
    return [f"unlabelled pixels (no shape; they get the fill class {data['fill_class']!r}): "
            f"{100 * data['unlabelled_pixel_share']:.2f}% overall; most: {top}"]


def write_json(report: Report, path: str | Path) -> None:
    """The report as JSON, written atomically (streetseg_jax.atomic)."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(report.to_dict(), f, indent=1, allow_nan=False)


def error_listing(report: Report, limit: int = 20) -> str:
    """The errors as one message (for a build that refuses the export)."""
    errors = report.errors
    return (f"{len(errors)} problem(s) in the annotations stop the build:"
            + listing([f"{file}: {message}" for file, message in errors], limit))

