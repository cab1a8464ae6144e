"""The records every label reader produces and the rasterizer consumes.

Coordinates are continuous pixel coordinates: x to the right, y down, origin at the top-left corner of the image,
so pixel (row r, column c) is the unit square [c, c+1) x [r, r+1) and its centre is (c + 0.5, r + 0.5).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from pathlib import Path

import numpy as np

IGNORE_LABEL = "__ignore__"     # a region that counts nowhere, as LabelMe users label it and our exports write it


@dataclasses.dataclass
class Shape:
    """One labelled region: an outer ring, optional holes, and its place in the drawing order. A shape labelled
    IGNORE_LABEL is an ignore region in every format (our CVAT and COCO exports write it so too)."""
    label: str                                # the class name as the tool wrote it
    exterior: np.ndarray                      # (N, 2) float64 x, y
    holes: tuple[np.ndarray, ...] = ()        # each (M, 2) float64 x, y
    z_order: int = 0                          # higher is drawn later (on top); ties keep drawing order
    ignore: bool = False                      # the tool marks this region "ignore" (e.g. LabelMe __ignore__)
    raster: np.ndarray | None = None          # (H, W) bool, for shapes a tool gives as a mask instead of rings

    def __post_init__(self):
        self.ignore = self.ignore or self.label.strip() == IGNORE_LABEL


@dataclasses.dataclass
class Annotation:
    """All shapes of one image, in drawing order."""
    source: Path                              # the annotation file (for messages)
    file_name: str                            # image file name as the annotation names it
    width: int
    height: int
    shapes: list[Shape]
    image_path: Path | None = None            # resolved image file, when known
    image_bytes: bytes | None = None          # the image itself, when the export embeds it (LabelMe imageData)
    key: str | None = None                    # the image's key when its stem alone is not unique ("Train/img0",
                                              # "seq1/frame_001"): see image_key and make_key
    split_key: str | None = None              # what its split is hashed on, when not its key (formats.read)
    split: str | None = None                  # the export's own split of the image (export_split), when it has one
    no_area: list[str] = dataclasses.field(default_factory=list)    # kinds of the shapes left out for having no
                                              # area (LabelMe's line, CVAT's polyline, Labelbox's point), one each


# Split folder and subset names the tools write -> the dataset's split names.
_SPLITS = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
           "validation": "validation", "test": "test", "testing": "test"}


def export_split(name: str | None) -> str | None:
    """The dataset split ('train', 'validation', 'test') of an export's split folder or subset name ('train',
    'val', 'Validation', 'testing' ...); None for any other name (Cityscapes' train_extra, CVAT's 'Default')."""
    return _SPLITS.get((name or "").strip().lower())


class LabelFormatError(ValueError):
    """An annotation file that cannot be read; the message names the file and the problem."""


def listing(lines: list[str], limit: int = 20) -> str:
    """The first `limit` lines, each on an indented line of its own, and how many more there are."""
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "".join(f"\n  {line}" for line in lines[:limit]) + more


def read_each(items, read_one) -> list:
    """`read_one(item)` for every item (an export's files, its annotations); the LabelFormatError of every item that
    fails is collected, and raised as one naming them all (problems_error): an export with two broken files named
    one, then the next once that was mended. Within `collecting_problems()` nothing is raised: the problems go to
    its list and the results of the items that did read come back, for the caller to validate and report with them."""
    results, problems = [], []
    for item in items:
        try:
            results.append(read_one(item))
        except LabelFormatError as e:
            problems.append(str(e))
    collected = _collected.get()
    if collected is not None:
        collected.extend(problems)
    elif problems:
        raise problems_error(problems)
    return results


_collected: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("collected", default=None)


@contextlib.contextmanager
def collecting_problems():
    """A list that read_each appends the problems of the items it cannot read to, instead of raising them: a run
    then reports them with validation's problems of the annotations that did read, not one round after another."""
    problems: list[str] = []
    token = _collected.set(problems)
    try:
        yield problems
    finally:
        _collected.reset(token)


def problems_error(problems: list[str]) -> LabelFormatError:
    """One LabelFormatError of the reading problems: the one, or "N problems in the annotations:" and each."""
    if len(problems) == 1:
        return LabelFormatError(problems[0])
    return LabelFormatError(f"{len(problems)} problems in the annotations:" + listing(problems))


_MAX_KEY_PART = 200     # bytes of one folder or file name in a key (file systems allow 255, and ".png" follows)


def make_key(parts: list[str], where: str) -> str:
    """An image key from folder and file names ("Train", "img0" -> "Train/img0").

    Keys become relative paths of mask files (`<output>/<key>.png`), so every part must be a plain name: not
    empty, not `.` or `..`, without slashes or NUL bytes, and short enough for a file system. Parts come from
    other people's files (a CVAT subset is free text), so anything else is a LabelFormatError naming `where`."""
    for part in parts:
        if part in ("", ".", "..") or any(c in part for c in "/\\\0") or _too_long(part):
            preview = part if len(part) <= 60 else part[:57] + "..."
            raise LabelFormatError(f"{where}: {preview!r} cannot be part of an image key (a folder or file name "
                                   "of the masks written for it)")
    return "/".join(parts)


def _too_long(part: str) -> bool:
    return len(part.encode("utf-8", "replace")) > _MAX_KEY_PART


CIRCLE_TOLERANCE = 0.01     # px between a circle or ellipse and the polygon standing in for it


def circle_vertices(radius: float, fewest: int = 16, most: int = 4096) -> int:
    """Vertices for a polygon within CIRCLE_TOLERANCE px of a circle of `radius` (for an ellipse, its larger
    radius): the sagitta r (1 - cos(pi/n)) ~ r pi^2 / 2n^2, clamped to [fewest, most]."""
    needed = math.pi * math.sqrt(max(radius, 0.0) / (2 * CIRCLE_TOLERANCE))
    # min first: a huge radius makes `needed` infinite, which ceil cannot turn into an int
    return int(max(math.ceil(min(needed, most)), fewest))


def ellipse_ring(cx: float, cy: float, rx: float, ry: float, fewest: int = 16) -> np.ndarray:
    """(n, 2) polygon standing in for an axis-aligned ellipse (a circle when rx == ry): n = circle_vertices of the
    larger radius, each vertex pushed out so the polygon's area is exactly pi * rx * ry (the inscribed n-gon loses
    area; an affine image of a regular n-gon keeps its area ratio)."""
    n = circle_vertices(max(abs(rx), abs(ry)), fewest=fewest)
    scale = math.sqrt(2 * math.pi / (n * math.sin(2 * math.pi / n)))
    angle = np.arange(n) * (2 * np.pi / n)
    return np.stack([cx + scale * rx * np.cos(angle), cy + scale * ry * np.sin(angle)], axis=1)


def image_key(annotation: Annotation) -> str:
    """The key the reader gave the image (Annotation.key), else the image's file stem: from the file the reader
    resolved, else the name the annotation gives, else the annotation file's own stem."""
    if annotation.key:
        return annotation.key
    if annotation.image_path is not None:
        return Path(annotation.image_path).stem
    name = base_name(annotation.file_name)
    return Path(name).stem if name else Path(annotation.source).stem


def base_name(file_name: str | None) -> str:
    """The last part of a file name that may be a path (either slash) or a URL with a query or fragment (a local
    name keeps its `?` and `#`: frame#001.png)."""
    name = file_name or ""
    if "://" in name:
        name = name.split("?")[0].split("#")[0]
    name = name.replace("\\", "/")
    return name.rstrip("/").split("/")[-1]
