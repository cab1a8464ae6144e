"""One reader per labelling tool. Each module `formats/<name>.py` provides

    read(path: Path, label_map: LabelMap) -> list[Annotation]   # path: the export folder or one export file
    looks_like(path: Path) -> bool                               # for --format auto

and raises `LabelFormatError` naming the file and the problem for anything it cannot read (every file that fails,
at once: shapes.read_each; `read_readable` below gives them as lines beside the annotations that did read, for the
CLI and the builder to report with validation's problems in one run). The label map is
passed for formats whose files hold ids or colours rather than names (mask PNGs). `read` below also refuses
coordinates no tool writes (not finite, or beyond rasterize.coordinate_limit) for every format in one place.
"""
from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import numpy as np

from streetseg_jax.labels.images import file_ids
from streetseg_jax.labels.rasterize import coordinate_limit
from streetseg_jax.labels.shapes import (Annotation, LabelFormatError, collecting_problems, export_split, image_key,
                                         make_key, problems_error, read_each)

FORMATS = ("voc", "mit_xml", "labelme", "coco", "coco_panoptic", "cvat", "labelbox", "cityscapes", "mapillary",
           "masks")
AUTO = "auto"


def reader(name: str):
    """The module for format `name` (imported on first use, so one broken reader never blocks the others)."""
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)} or auto")
    return importlib.import_module(f"{__name__}.{name}")


def read(name: str, path: Path, label_map) -> list:
    """Every annotation of the export at `path`, in format `name`; LabelFormatError when there is none, or naming
    every file that cannot be read."""
    annotations, problems = read_readable(name, path, label_map)
    if problems:
        raise problems_error(problems)
    return annotations


def read_readable(name: str, path: Path, label_map) -> tuple[list, list[str]]:
    """(the annotations of the export at `path` that could be read, a line naming each file that could not and
    why): a caller validates the first and reports both at once. LabelFormatError where the export as a whole cannot
    be read or holds no annotation."""
    path = Path(path)
    with collecting_problems() as problems:
        try:
            annotations = reader(name).read(path, label_map)
        except LabelFormatError as e:   # the export as a whole: "no CVAT XML here" where every file failed
            raise problems_error(problems or [str(e)]) from None
        if not annotations and not problems:
            raise LabelFormatError(_nothing_read(name, path))
        annotations = read_each(annotations, check_coordinates)
    root = path if path.is_dir() else path.parent
    add_folders_to_clashing_keys(annotations, root)
    add_split_folders(annotations, root)
    return annotations, problems


def add_split_folders(annotations: list[Annotation], root: Path) -> None:
    """An annotation file under a split folder of the export (Roboflow's train/ valid/ test/, or train/ and val/
    made by hand) is in that split, where its reader found none of the tool's own (a CVAT subset)."""
    for annotation in annotations:
        if annotation.split is None:
            try:
                folders = Path(annotation.source).parent.relative_to(root).parts
            except ValueError:
                continue
            named = {split for folder in folders if (split := export_split(folder))}
            annotation.split = named.pop() if len(named) == 1 else None


def add_folders_to_clashing_keys(annotations: list[Annotation], root: Path) -> None:
    """Images of one stem in different folders (cam1/0001.jpg, cam2/0001.jpg) get their folders in their keys
    ("cam1/0001": the paths of their masks); an image whose stem is unique keeps the stem alone, and the split is
    still hashed on the stem (Annotation.split_key), so an image keeps its split when a namesake arrives. The folders
    are the annotation files' under the export where each image has a file of its own (LabelMe), else those of the
    image names (COCO, CVAT). Only images the reader found, each a different file, are told apart so: two
    annotations of one image (a backup copy of its file) are left for validate.duplicate_keys to refuse."""
    groups: dict[str, list[Annotation]] = {}
    for annotation in annotations:
        groups.setdefault(image_key(annotation), []).append(annotation)
    index = None
    for stem, group in groups.items():
        if len(group) < 2 or any(a.key for a in group):
            continue                                          # a reader's own keys (CVAT subsets) stay as given
        paths = [a.image_path for a in group]
        if None in paths:                                     # readers that leave the image to be found (VOC)
            from streetseg_jax.labels.validate import ImageIndex, locate_images     # validate imports formats
            index = index or ImageIndex(root)
            found = [dataclasses.replace(a) for a in group]
            locate_images(found, root, index)
            paths = [a.image_path for a in found]
        if None in paths or len(file_ids(paths)) < len(group):
            continue
        own_files = len({str(a.source) for a in group}) == len(group)
        keys = [_key_with_folders(a, root, own_files) for a in group]
        if None not in keys and len(set(keys)) == len(keys):
            for annotation, key in zip(group, keys):
                annotation.key, annotation.split_key = key, stem


_LAYOUT_FOLDERS = {"annotations", "jpegimages", "images"}    # VOC's and others' own: they tell no images apart


def _key_with_folders(annotation: Annotation, root: Path, from_source: bool) -> str | None:
    if from_source:
        try:
            folders = Path(annotation.source).parent.relative_to(root).parts
        except ValueError:
            return None
    else:
        name = _inside_root((annotation.file_name or "").replace("\\", "/"), root)
        if name is None:
            return None
        folders = tuple(part for part in name.split("/")[:-1] if part not in ("", "."))
    folders = [folder for folder in folders if folder.lower() not in _LAYOUT_FOLDERS]
    try:
        return make_key([*folders, image_key(annotation)], str(annotation.source))
    except LabelFormatError:                                 # ".." or a name no file system takes
        return None


def _inside_root(name: str, root: Path) -> str | None:
    """An image's file name as a path relative to the export folder: an absolute one (some tools write the whole
    path) taken relative to the folder, whose own path must not name the mask; None for a URL, a Windows path on
    another system, or an absolute path outside the export (which the reader has refused already)."""
    if "://" in name or re.match(r"[A-Za-z]:/", name):
        return None
    if not name.startswith("/"):
        return name
    try:
        return Path(name).resolve().relative_to(Path(root).resolve()).as_posix()
    except (OSError, ValueError):
        return None


def check_coordinates(annotation: Annotation) -> Annotation:
    """The annotation; LabelFormatError ("file: image a.jpg, shape 0 ...") for a ring with a coordinate that is not
    finite or lies beyond coordinate_limit: such a shape cannot be drawn, and leaving it out would change the mask
    without anyone being told."""
    limit = coordinate_limit(annotation.height, annotation.width)
    for i, shape in enumerate(annotation.shapes):
        for ring in () if shape.raster is not None else (shape.exterior, *shape.holes):
            points = np.asarray(ring, np.float64)
            bad = ~(np.abs(points) <= limit)                    # NaN compares False: caught as well
            if bad.any():
                image = f"image {annotation.file_name}, " if annotation.file_name else ""
                raise LabelFormatError(f"{annotation.source}: {image}shape {i} ({shape.label!r}): coordinate "
                                       f"{points[bad][0]:g} is out of range (a {annotation.width}x"
                                       f"{annotation.height} image allows at most +-{limit:g})")
    return annotation


def detect(path: Path) -> str:
    """The one format whose reader says the files at `path` look like its own; LabelFormatError when none or
    several do, so that `--format auto` never guesses."""
    path = Path(path)
    if not path.exists():
        raise LabelFormatError(f"{path}: does not exist")
    matches = [name for name in FORMATS if _looks_like(name, path)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LabelFormatError(f"{path}: cannot tell which labelling tool wrote these files (none of "
                               f"{', '.join(FORMATS)} recognises them){_no_images_hint(path)}; pass --format "
                               "explicitly")
    raise LabelFormatError(f"{path}: the files look like several formats ({', '.join(matches)}); pass --format "
                           "with the one you exported")


def _no_images_hint(path: Path) -> str:
    """Where `path` holds mask folders without an image folder beside them (an export saved without its images)."""
    try:
        lone = [mask_dir for image_dir, mask_dir in reader("masks").find_pairs(path) if image_dir is None]
    except (OSError, LabelFormatError):
        return ""
    if not lone:
        return ""
    return (f"; {lone[0]} holds masks but no images/ or JPEGImages/ folder lies beside it (an export saved without "
            "its images?)")


def _nothing_read(fmt: str, path: Path) -> str:
    """The message for a read that found no annotations, naming the format the files look like when another."""
    others = [name for name in FORMATS if name != fmt and _looks_like(name, Path(path))]
    hint = f"; the files look like {' or '.join(others)} (--format {others[0]})" if others else ""
    return f"no {fmt} annotations found in {path}{hint}"


def _looks_like(name: str, path: Path) -> bool:
    # A reader's guess must never stop detection: files from other people can upset any parser, and a reader
    # that cannot even be imported simply does not claim the files.
    try:
        return bool(reader(name).looks_like(path))
    except Exception:   # noqa: BLE001 - see above
        return False
