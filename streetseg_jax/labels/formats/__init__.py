"""One reader per labelling tool. Each module `formats/<name>.py` provides

    read(path: Path, label_map: LabelMap) -> list[Annotation]   # path: the export folder or one export file
    looks_like(path: Path) -> bool                               # for --format auto

and raises `LabelFormatError` naming the file and the problem for anything it cannot read. The label map is
passed for formats whose files hold ids or colours rather than names (mask PNGs).
"""
from __future__ import annotations

import importlib
from pathlib import Path

FORMATS = ("voc", "mit_xml", "labelme", "coco", "coco_panoptic", "cvat", "labelbox", "cityscapes", "mapillary",
           "masks")


def reader(name: str):
    """The module for format `name` (imported on first use, so one broken reader never blocks the others)."""
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)} or auto")
    return importlib.import_module(f"{__name__}.{name}")


def read(name: str, path: Path, label_map) -> list:
    return reader(name).read(Path(path), label_map)
