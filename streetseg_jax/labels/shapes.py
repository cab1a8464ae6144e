"""The records every label reader produces and the rasterizer consumes.

Coordinates are continuous pixel coordinates: x to the right, y down, origin at the top-left corner of the image,
so pixel (row r, column c) is the unit square [c, c+1) x [r, r+1) and its centre is (c + 0.5, r + 0.5).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class Shape:
    """One labelled region: an outer ring, optional holes, and its place in the drawing order."""
    label: str                                # the class name as the tool wrote it
    exterior: np.ndarray                      # (N, 2) float64 x, y
    holes: tuple[np.ndarray, ...] = ()        # each (M, 2) float64 x, y
    z_order: int = 0                          # higher is drawn later (on top); ties keep drawing order
    ignore: bool = False                      # the tool marks this region "ignore" (e.g. LabelMe __ignore__)
    raster: np.ndarray | None = None          # (H, W) bool, for shapes a tool gives as a mask instead of rings


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


class LabelFormatError(ValueError):
    """An annotation file that cannot be read; the message names the file and the problem."""
