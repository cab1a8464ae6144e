"""One reader per labelling tool. Each module `formats/<name>.py` provides

    read(path: Path, label_map: LabelMap) -> list[Annotation]   # path: the export folder or one export file
    looks_like(path: Path) -> bool                               # for --format auto

and raises `LabelFormatError` naming the file and the problem for anything it cannot read. The label map is
passed for formats whose files hold ids or colours rather than names (mask PNGs).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from streetseg_jax.labels.shapes import LabelFormatError

FORMATS = ("voc", "mit_xml", "labelme", "coco", "coco_panoptic", "cvat", "labelbox", "cityscapes", "mapillary",
           "masks")
AUTO = "auto"


def reader(name: str):
    """The module for format `name` (imported on first use, so one broken reader never blocks the others)."""
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)} or auto")
    return importlib.import_module(f"{__name__}.{name}")


def read(name: str, path: Path, label_map) -> list:
    return reader(name).read(Path(path), label_map)


def available() -> list[str]:
    """The formats whose reader module is present (all of them once every reader is written)."""
    here = Path(__file__).parent
    return [name for name in FORMATS if (here / f"{name}.py").is_file()]


def detect(path: Path) -> str:
    """The one format whose reader says the files at `path` look like its own; LabelFormatError when none or
    several do, so that `--format auto` never guesses."""
    path = Path(path)
    if not path.exists():
        raise LabelFormatError(f"{path}: does not exist")
    matches = [name for name in available() if _looks_like(name, path)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LabelFormatError(f"{path}: cannot tell which labelling tool wrote these files (none of "
                               f"{', '.join(available())} recognises them); pass --format explicitly")
    raise LabelFormatError(f"{path}: the files look like several formats ({', '.join(matches)}); pass --format "
                           "with the one you exported")


def _looks_like(name: str, path: Path) -> bool:
    # A reader's guess must never stop detection: files from other people can upset any parser, and a reader
    # that cannot even be imported simply does not claim the files.
    try:
        return bool(reader(name).looks_like(path))
    except Exception:   # noqa: BLE001 - see above
        return False
