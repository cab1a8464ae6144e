"""Seeded synthetic street scenes: the project's embedded default dataset (no downloads).

A scene is laid out in a road-aligned world frame (u: metres to the right of the camera, z: metres ahead, up: metres
above the ground) and projected through a pinhole camera whose horizon height, vanishing point, focal length, eye
height and road curvature are random. What comes out is a list of labelled polygons in drawing order (later ones on
top), and the image is painted FROM exactly those polygons (same vertices after clipping and rounding, same order),
2x supersampled, so any rasterizer that reads the written XML agrees with the picture. Windows, lane markings, roofs
and other details are painted inside their object's polygons and never change a label.

Colours are drawn per instance from ranges that overlap between classes on purpose (grey roads, barriers, skies and
buildings; green buildings, lawns and trees), and global lighting, casts, shadows and haze vary per image: a model
has to use shape and context, not a colour lookup. The layout stays consistent (sky above the horizon, the road
below it, sidewalks beside the road, buildings beyond), so the task is learnable.

Classes are the seed's (labels.label_map.default_label_map()): background, tree, landscaping, road, sidewalk,
building, sky, concrete. Image i of `write_synthetic(out_dir, seed=s)` (file street_{i:04d}, i from 1) is
`generate_scene((s, i))`, so any one image can be regenerated on its own.
"""
from __future__ import annotations

import colorsys
import dataclasses
import functools
import os
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from streetseg_jax.data.inputs import default_workers, end_with_parent, pool_context
from streetseg_jax.labels.formats.voc import write_voc
from streetseg_jax.labels.validate import self_intersection

Objects = list[tuple[str, list[np.ndarray]]]

SUPERSAMPLE = 2      # the id map is drawn at 2x and averaged (2x2 is assumed by _base_colors and _paint_ids)
Z_FAR = 250.0        # metres; ground bands end here, a few pixels below the horizon
MAX_STYLES = 255     # style ids live in an 8-bit id map; 0 is the empty canvas

# Painter's order for standing objects (within the part of the scene beyond a bridge, and within the part before it):
# whole groups back to front, as they stand from the kerb outward, then far to near within a group.
BUILDINGS, WALLS, ROADSIDE, BARRIERS, VEHICLES = range(5)

# Colour families: (weight, hue range, saturation range, value range), hue in turns. Ranges overlap between
# classes on purpose, so that colour alone cannot tell road from concrete or a lawn from a tree.
_FAMILIES = {
    "sky": [(5, (0.54, 0.62), (0.2, 0.65), (0.7, 1.0)), (3, (0, 1), (0, 0.08), (0.5, 0.92)),
            (1, (0.02, 0.12), (0.15, 0.5), (0.7, 1.0))],
    "road": [(6, (0, 1), (0, 0.08), (0.2, 0.55)), (1, (0.05, 0.12), (0.1, 0.25), (0.3, 0.55)),
             (1, (0.55, 0.65), (0.05, 0.15), (0.3, 0.5)), (1, (0, 1), (0, 0.05), (0.55, 0.75))],
    "sidewalk": [(4, (0, 1), (0, 0.08), (0.4, 0.85)), (2, (0.07, 0.13), (0.1, 0.3), (0.5, 0.85)),
                 (1, (0.0, 0.04), (0.3, 0.6), (0.4, 0.7)), (0.5, (0.2, 0.4), (0.05, 0.2), (0.4, 0.6))],
    "kerb": [(1, (0, 1), (0, 0.06), (0.6, 0.95))],
    "building": [(3, (0, 1), (0, 0.08), (0.3, 0.9)), (3, (0.03, 0.14), (0.15, 0.5), (0.35, 0.9)),
                 (1, (0.0, 0.04), (0.4, 0.7), (0.3, 0.6)), (1.5, (0.2, 0.45), (0.15, 0.5), (0.3, 0.75)),
                 (1.5, (0.5, 0.7), (0.1, 0.45), (0.35, 0.85))],
    "roof": [(2, (0, 1), (0, 0.1), (0.15, 0.45)), (2, (0.0, 0.05), (0.35, 0.7), (0.3, 0.55)),
             (1, (0.5, 0.65), (0.1, 0.3), (0.3, 0.5))],
    "concrete": [(5, (0, 1), (0, 0.08), (0.4, 0.88)), (2, (0.08, 0.14), (0.08, 0.25), (0.5, 0.85)),
                 (0.5, (0.25, 0.4), (0.05, 0.2), (0.45, 0.7))],
    "tree": [(6, (0.2, 0.4), (0.3, 0.8), (0.18, 0.55)), (1, (0.05, 0.14), (0.4, 0.8), (0.35, 0.7)),
             (1, (0.15, 0.25), (0.2, 0.5), (0.3, 0.5))],
    "grass": [(6, (0.17, 0.33), (0.3, 0.75), (0.3, 0.7)), (1.5, (0.08, 0.14), (0.25, 0.5), (0.4, 0.65)),
              (1, (0.05, 0.09), (0.4, 0.7), (0.2, 0.4))],
    "trunk": [(2, (0.04, 0.1), (0.2, 0.6), (0.15, 0.4)), (1, (0, 1), (0, 0.1), (0.2, 0.5))],
    "car": [(3, (0, 1), (0, 0.1), (0.1, 0.95)), (4, (0, 1), (0.4, 0.9), (0.3, 0.9))],
    "pole": [(3, (0, 1), (0, 0.1), (0.15, 0.7)), (1, (0.25, 0.45), (0.3, 0.6), (0.15, 0.4))],
    "sign": [(2, (0.0, 0.02), (0.7, 0.9), (0.6, 0.9)), (2, (0.58, 0.65), (0.6, 0.9), (0.4, 0.8)),
             (1, (0.3, 0.4), (0.6, 0.9), (0.3, 0.6)), (1, (0, 1), (0, 0.05), (0.85, 1.0))],
    "dirt": [(2, (0.06, 0.12), (0.2, 0.5), (0.3, 0.6)), (2, (0, 1), (0, 0.08), (0.3, 0.6))],
    "window": [(3, (0.5, 0.65), (0.05, 0.35), (0.1, 0.45)), (2, (0, 1), (0, 0.05), (0.05, 0.3)),
               (1, (0.1, 0.15), (0.2, 0.5), (0.6, 0.95))],
    "marking": [(4, (0, 1), (0, 0.05), (0.75, 1.0)), (1, (0.12, 0.16), (0.6, 0.9), (0.7, 1.0))],
}

_CUMULATIVE = {name: np.cumsum([o[0] for o in options]) for name, options in _FAMILIES.items()}


# --- camera and world-to-image geometry ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Camera:
    width: int
    height: int
    horizon: float    # image y of the horizon
    vx: float         # image x of the vanishing point of the straight road
    focal: float      # pixels
    eye: float        # camera height above the ground, metres
    curve: float      # lateral drift of the road per square metre of depth (a bend)

    def project(self, u, z, up=0.0) -> np.ndarray:
        """Image (x, y) of world points; u, z and up broadcast against each other."""
        z = np.asarray(z, float)
        x = self.vx + self.focal * (u + self.curve * z * z) / z
        y = self.horizon + self.focal * (self.eye - np.asarray(up, float)) / z
        x, y = x + 0.0 * y, y + 0.0 * x            # broadcast both; cheaper than np.broadcast_arrays for tiny arrays
        out = np.empty(x.shape + (2,))
        out[..., 0], out[..., 1] = x, y
        return out

    def depths(self, z0: float, z1: float, n: int) -> np.ndarray:
        """Depth samples along a line on the road: the two ends when the road is straight (lines stay lines),
        else n depths spaced evenly in log depth (image y goes as 1/z)."""
        return z0 * (z1 / z0) ** np.linspace(0.0, 1.0, n if self.curve else 2)

    @property
    def z_bottom(self) -> float:
        """Depth where the ground meets the bottom edge of the image."""
        return self.focal * self.eye / (self.height - self.horizon)

    def pixels(self, metres: float, z: float) -> float:
        return self.focal * metres / z


def _camera(rng, height: int, width: int, kind: str) -> Camera:
    horizon = height * rng.uniform(0.3, 0.55)
    focal = width * rng.uniform(0.55, 1.0)
    eye = rng.uniform(1.3, 2.0) if kind != "highway" else rng.uniform(1.5, 3.0)
    drift = width * rng.uniform(-0.3, 0.3) if rng.random() < 0.4 else 0.0   # x shift of the far road
    return Camera(width, height, horizon, width * rng.uniform(0.3, 0.7), focal, eye, drift / (focal * Z_FAR))


def _strip(cam: Camera, u0: float, u1: float, z0: float, z1: float, n: int = 12, up0: float = 0.0,
           up1: float | None = None) -> np.ndarray:
    """The strip between two lines running along the road, at (u0, height up0) and (u1, height up1): a band of
    ground, a roof slope, a seam along a wall."""
    zs = cam.depths(z0, z1, n)
    up = np.repeat([up0, up0 if up1 is None else up1], len(zs))
    return cam.project(np.repeat([u0, u1], len(zs)), np.concatenate([zs, zs[::-1]]), up)


def _long_box(cam: Camera, u_in: float, u_out: float, z0: float, z1: float, wall: float,
              ridge_u: float | None = None, ridge_up=None, n: int = 6) -> tuple[np.ndarray, float]:
    """Outline of a box running along the road (building, barrier, hedge): its face toward the camera's line of
    sight at u_in, its near end at z0, and its top (or a roof ridge at ridge_u) where the camera sees it.

    Image y does not depend on u here, so higher points always sit higher in the image at the same depth: the
    silhouette is the bottom of the inner face, the far top corner, the top (ridge) line back to the near end, and
    the near end's outer corners. Where the road bends the far end round until the camera sees the box's other
    face, that outline crosses itself: the box is then cut short at the last depth where it does not. Returns the
    outline and the depth where the box ends (paints on the box must stop there too).
    """
    if ridge_u is None:   # a flat top shows from above only when it is below the eye
        ridge_u, ridge_up = (u_out if wall < cam.eye else u_in), wall
    while True:
        zs = cam.depths(z0, z1, n)
        k = len(zs)
        u = np.concatenate([np.full(k, u_in), [u_in], np.full(k, ridge_u), [u_out, u_out]])
        z = np.concatenate([zs, [z1], zs[::-1], [z0, z0]])
        up = np.concatenate([np.zeros(k), [wall], np.full(k, ridge_up), [wall, 0.0]])
        outline = _dedupe(cam.project(u, z, up))
        if k < 3 or self_intersection(outline) is None:
            return outline, z1
        z1 = float(zs[-2])


def _face_quads(cam: Camera, u: float, z0, z1, up0, up1) -> np.ndarray:
    """(n, 4, 2) quads on the plane u = const (a facade), one per row of the z0, z1, up0, up1 arrays."""
    z0, z1, up0, up1 = np.broadcast_arrays(z0, z1, up0, up1)
    return cam.project(u, np.stack([z0, z1, z1, z0], axis=1), np.stack([up0, up0, up1, up1], axis=1))


def _blob(center, rx: float, ry: float, rng, n: int = 16, rough: float = 0.12) -> np.ndarray:
    """A rough ellipse (tree canopy, bush, cloud); its radius stays within (1 - rough, 1 + rough) of the ellipse."""
    angles = np.linspace(0.0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi / n)
    radius = 1.0 + rng.uniform(-rough, rough, n)
    return np.asarray(center) + np.stack([rx * radius * np.cos(angles), ry * radius * np.sin(angles)], -1)


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (monotone chain), used for cars: the silhouette of a box with a narrower cabin on top."""
    pts = sorted(map(tuple, np.round(points, 6)))
    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]
    return np.array(half(pts) + half(pts[::-1]))


def _dedupe(poly: np.ndarray) -> np.ndarray:
    """Drop vertices equal to the one before them (cyclically)."""
    if len(poly) < 2:
        return poly
    keep = np.empty(len(poly), bool)
    keep[1:] = np.any(poly[1:] != poly[:-1], axis=1)
    keep[0] = np.any(poly[0] != poly[-1])
    return poly[keep] if keep.any() else poly[:1]


# --- styles and the scene under construction -------------------------------------------------------------------
@dataclasses.dataclass
class _Style:
    """How the pixels of one polygon (or a family of paint polygons) are coloured."""
    color: np.ndarray          # RGB, 0..255 floats
    fine: float = 3.0          # amplitude of per-pixel grain
    coarse: float = 0.0        # amplitude of blotchy noise (foliage, stains)
    grad_x: float = 0.0        # relative brightness change across the image width
    grad_y: float = 0.0
    ground: bool = False       # receives cast shadows


@dataclasses.dataclass
class _Item:
    """One labelled object: parts (label polygons, each with its style) and image-only paints inside them."""
    name: str
    parts: list[tuple[np.ndarray, int]]
    paints: list[tuple[np.ndarray, int]] = dataclasses.field(default_factory=list)
    group: int = BUILDINGS     # standing objects: BUILDINGS ... VEHICLES, or -1 for a bridge
    depth: float = 0.0         # metres; standing objects are drawn far to near within a group


class _Scene:
    """Everything a scene is made of while it is being built."""

    def __init__(self, rng, cam: Camera, kind: str):
        self.rng, self.cam, self.kind = rng, cam, kind
        self.styles: list[_Style] = [_Style(np.zeros(3))]
        self.flat: list[_Item] = []        # sky, ground and what lies on it, in drawing order
        self.standing: list[_Item] = []    # sorted back to front before drawing
        self.shadows: list[np.ndarray] = []
        self.sky_color = np.zeros(3)
        self.visibility = rng.uniform(150.0, 700.0)   # metres; haze pulls far colours toward the sky
        self.bridge_z = np.inf                        # depth of an overpass, if any
        self.sun: tuple[float, float, float] | None = None
        self.road_style = 0

    def color(self, family: str) -> np.ndarray:
        options = _FAMILIES[family]
        cumulative = _CUMULATIVE[family]
        pick = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        _, *ranges = options[min(pick, len(options) - 1)]
        h, s, v = (self.rng.uniform(*r) for r in ranges)
        return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0

    def style(self, color, depth: float | None = None, **texture) -> int:
        if depth is not None:
            haze = 1.0 - np.exp(-depth / self.visibility)
            color = (1 - haze) * np.asarray(color) + haze * self.sky_color
        self.styles.append(_Style(np.asarray(color, float), **texture))
        if len(self.styles) > MAX_STYLES + 1:
            raise RuntimeError("synthetic scene needs more than 255 styles")
        return len(self.styles) - 1

    def shade(self, color, lo: float, hi: float) -> np.ndarray:
        """The same colour, lighter or darker (trim, roofs, leaf clusters)."""
        return np.clip(np.asarray(color) * self.rng.uniform(lo, hi), 0, 255)

    def grad(self, scale: float = 0.15) -> dict:
        return {"grad_x": self.rng.uniform(-scale, scale), "grad_y": self.rng.uniform(-scale, scale)}


@dataclasses.dataclass
class _Road:
    left: float                           # u of the left road edge (kerb line)
    right: float
    lanes: list[tuple[float, float]]      # (u0, u1) per lane, left to right
    median: tuple[float, float] | None    # (u0, u1) of a median between two lanes
    oncoming: int                         # lanes with index < oncoming carry traffic toward the camera


@dataclasses.dataclass
class _Side:
    sign: int                             # -1 left of the road, +1 right
    edge: float                           # u of the road edge on this side
    bands: dict                           # name -> (d0, d1): offsets outward from the road edge
    outer: float                          # offset of the outer edge of the last band

    def u(self, offset: float) -> float:
        return self.edge + self.sign * offset


# --- sky, ground and the far horizon -----------------------------------------------------------------------------
def _add_sky(scene: _Scene) -> None:
    cam, rng = scene.cam, scene.rng
    color = scene.color("sky")
    scene.sky_color = color
    sky = scene.style(color, fine=1.5, coarse=rng.uniform(0, 4), grad_x=rng.uniform(-0.1, 0.1),
                      grad_y=rng.uniform(0.0, 0.35))
    rect = np.array([[0, 0], [cam.width, 0], [cam.width, cam.horizon], [0, cam.horizon]], float)
    item = _Item("sky", [(rect, sky)])
    cloud = scene.style(np.clip(color * 0.3 + rng.uniform(150, 250), 0, 255), fine=1.5, coarse=rng.uniform(4, 12))
    for _ in range(rng.integers(0, 5)):
        rx = cam.width * rng.uniform(0.05, 0.2)
        ry = rx * rng.uniform(0.15, 0.4)
        cy = rng.uniform(0.05, 0.8) * cam.horizon
        if cy + 1.2 * ry < cam.horizon - 2:      # paints stay inside the sky polygon
            item.paints.append((_blob((rng.uniform(0, cam.width), cy), rx, ry, rng, 14, 0.2), cloud))
    scene.flat.append(item)


def _add_ground(scene: _Scene) -> None:
    cam, rng = scene.cam, scene.rng
    name, family = ("landscaping", "grass") if rng.random() < 0.55 else ("background", "dirt")
    style = scene.style(scene.color(family), fine=rng.uniform(4, 10), coarse=rng.uniform(3, 10), ground=True)
    rect = np.array([[0, cam.horizon], [cam.width, cam.horizon], [cam.width, cam.height], [0, cam.height]], float)
    scene.flat.append(_Item(name, [(rect, style)]))


def _add_far_horizon(scene: _Scene) -> None:
    """A distant skyline and/or tree line sitting on the horizon, hazy like far things are."""
    cam, rng = scene.cam, scene.rng
    if rng.random() < 0.5:
        style = scene.style(scene.color("building"), depth=rng.uniform(200, 800), fine=2)
        scene.flat.append(_Item("building", [(_skyline(cam, rng), style)]))
    if rng.random() < 0.4:
        style = scene.style(scene.color("tree"), depth=rng.uniform(150, 600), fine=4, coarse=6)
        scene.flat.append(_Item("tree", [(_tree_line(cam, rng), style)]))


def _skyline(cam: Camera, rng) -> np.ndarray:
    x, end = cam.width * rng.uniform(-0.1, 0.4), cam.width * rng.uniform(0.6, 1.1)
    base = cam.horizon + 1.0
    points = [(x, base)]
    while x < end and len(points) < 36:
        top = cam.horizon - cam.height * rng.uniform(0.01, 0.12)
        points += [(x, top), (x := x + cam.width * rng.uniform(0.02, 0.08), top)]
    points.append((x, base))
    return np.array(points, float)


def _tree_line(cam: Camera, rng) -> np.ndarray:
    xs = np.linspace(cam.width * rng.uniform(-0.1, 0.3), cam.width * rng.uniform(0.7, 1.1), 24)
    tops = cam.horizon - cam.height * (0.015 + 0.04 * rng.random(24))
    return np.concatenate([np.stack([xs, tops], -1), [[xs[-1], cam.horizon + 1.0], [xs[0], cam.horizon + 1.0]]])


# --- the road and what lies beside it ------------------------------------------------------------------------------
def _plan_road(rng, kind: str) -> _Road:
    n = int(rng.integers(3, 7) if kind == "highway" else rng.integers(2, 5))
    width = rng.uniform(3.0, 3.8)
    median_at = int(rng.integers(1, n)) if n > 1 and rng.random() < {"highway": 0.6, "urban": 0.3}.get(kind, 0.1) else 0
    median_w = rng.uniform(0.6, 1.2) if rng.random() < 0.6 else rng.uniform(1.5, 4.0)
    edges, u = [], 0.0
    for i in range(n):
        if i == median_at and median_at:
            u += median_w
        edges.append((u, u + width))
        u += width
    own = edges[int(rng.integers(0, n))]
    shift = -(own[0] + width * rng.uniform(0.35, 0.65))      # the camera drives in one of the lanes
    lanes = [(a + shift, b + shift) for a, b in edges]
    median = (lanes[median_at - 1][1], lanes[median_at][0]) if median_at else None
    oncoming = median_at if median_at else n // 2
    return _Road(lanes[0][0], lanes[-1][1], lanes, median, oncoming)


def _add_road(scene: _Scene, road: _Road) -> None:
    cam, rng = scene.cam, scene.rng
    z0 = cam.z_bottom * 0.8
    style = scene.style(scene.color("road"), fine=rng.uniform(4, 10), coarse=rng.uniform(2, 8), ground=True,
                        **scene.grad(0.2))
    scene.road_style = style
    item = _Item("road", [(_strip(cam, road.left, road.right, z0, Z_FAR), style)])
    item.paints = _road_markings(scene, road, z0)
    if rng.random() < 0.3:
        item.paints += _patches(scene, road, z0)
    scene.flat.append(item)


def _road_markings(scene: _Scene, road: _Road, z0: float) -> list:
    cam, rng = scene.cam, scene.rng
    if rng.random() < 0.1:
        return []
    paint = scene.style(scene.color("marking") * rng.uniform(0.6, 1.0), fine=3, ground=True)
    shapes, w = [], rng.uniform(0.1, 0.2)
    for (_, boundary), _next in zip(road.lanes[:-1], road.lanes[1:]):
        if road.median and boundary == road.median[0]:
            continue                                     # the median replaces the dashed line
        period, dash = rng.uniform(8, 14), rng.uniform(2, 4)
        starts = np.arange(z0 + rng.uniform(0, period), 90.0, period)
        shapes += list(_ground_quads(cam, boundary - w / 2, boundary + w / 2, starts, starts + dash))
    if rng.random() < 0.6:   # solid edge lines
        shapes += [_strip(cam, u, u + w, z0, 120.0, 10) for u in (road.left + 0.3, road.right - 0.3 - w)]
    if rng.random() < 0.25:
        shapes += _crosswalk(cam, road, rng.uniform(1.5, 3) * cam.z_bottom)
    return [(shape, paint) for shape in shapes]


def _ground_quads(cam: Camera, u0: float, u1: float, z0, z1) -> np.ndarray:
    z0, z1 = np.broadcast_arrays(np.atleast_1d(np.asarray(z0, float)), np.atleast_1d(np.asarray(z1, float)))
    return cam.project(np.array([u0, u1, u1, u0]), np.stack([z0, z0, z1, z1], axis=1))


def _crosswalk(cam: Camera, road: _Road, z: float) -> list:
    lefts = np.arange(road.left + 0.5, road.right - 0.9, 1.0)
    return [_ground_quads(cam, u, u + 0.5, z, z + 3.0)[0] for u in lefts]


def _patches(scene: _Scene, road: _Road, z0: float) -> list:
    """Darker or lighter asphalt repairs: texture the model must not mistake for another class."""
    cam, rng = scene.cam, scene.rng
    style = scene.style(scene.shade(scene.styles[scene.road_style].color, 0.6, 1.3), fine=4, coarse=4, ground=True)
    paints = []
    for _ in range(rng.integers(1, 4)):
        u = rng.uniform(road.left + 0.2, road.right - 2.5)
        z = rng.uniform(z0, 40)
        paints.append((_ground_quads(cam, u, u + rng.uniform(0.8, 2.3), z, z + rng.uniform(1, 6))[0], style))
    return paints


def _plan_side(rng, kind: str) -> list[tuple[str, str, str, float]]:
    """Bands outward from the road edge: (band name, class, colour family, width in metres)."""
    if kind == "urban":
        bands = [("kerb", "sidewalk", "kerb", rng.uniform(0.15, 0.3))]
        if rng.random() < 0.3:
            bands.append(("verge", "landscaping", "grass", rng.uniform(0.8, 2.0)))
        if rng.random() < 0.9:
            bands.append(("walk", "sidewalk", "sidewalk", rng.uniform(2.5, 6.0)))
        return bands
    if kind == "suburban":
        return [("kerb", "sidewalk", "kerb", rng.uniform(0.15, 0.3)),
                ("verge", "landscaping", "grass", rng.uniform(1.0, 4.0)),
                ("walk", "sidewalk", "sidewalk", rng.uniform(1.2, 2.5)),
                ("lawn", "landscaping", "grass", rng.uniform(3.0, 12.0))]
    bands = [("shoulder", "road", "road", rng.uniform(0.5, 3.0)), ("verge", "landscaping", "grass", rng.uniform(3, 10))]
    if rng.random() < 0.5:
        bands += [("walk", "sidewalk", "sidewalk", rng.uniform(1.5, 3.0)),
                  ("lawn", "landscaping", "grass", rng.uniform(2.0, 10.0))]
    return bands


# Grain and blotch amplitudes per kind of band: grass is rough, paving smooth (texture, unlike colour, is a cue
# that the classes keep).
_BAND_TEXTURE = {"grass": ((8, 16), (6, 14)), "sidewalk": ((2, 6), (0, 4)), "kerb": ((2, 4), (0, 2)),
                 "road": ((4, 10), (2, 8))}


def _add_side(scene: _Scene, road: _Road, sign: int, shared: dict) -> _Side:
    cam, rng = scene.cam, scene.rng
    side = _Side(sign, road.left if sign < 0 else road.right, {}, 0.0)
    z0 = cam.z_bottom * 0.8
    for band, name, family, width in _plan_side(rng, scene.kind):
        d0, d1 = side.outer, side.outer + width
        side.bands[band], side.outer = (d0, d1), d1
        color = shared.get(family) if family in shared and rng.random() < 0.7 else scene.color(family)
        fine, coarse = _BAND_TEXTURE[family]
        style = scene.style(color, fine=rng.uniform(*fine), coarse=rng.uniform(*coarse), ground=True,
                            **scene.grad(0.15))
        item = _Item(name, [(_strip(cam, side.u(d0), side.u(d1), z0, Z_FAR), style)])
        if band == "walk" and rng.random() < 0.85:
            item.paints = _slab_joints(scene, side, d0, d1, z0, color)
        scene.flat.append(item)
    return side


def _slab_joints(scene: _Scene, side: _Side, d0: float, d1: float, z0: float, color) -> list:
    cam, rng = scene.cam, scene.rng
    style = scene.style(scene.shade(color, 0.6, 0.85), fine=2, ground=True)
    starts = np.arange(z0 + rng.uniform(0, 2), 45.0, rng.uniform(1.5, 3.0))
    quads = _ground_quads(cam, side.u(d0 + 0.02), side.u(d1 - 0.02), starts, starts + 0.1)   # inset: stay inside
    return [(q, style) for q in quads]


# --- buildings ---------------------------------------------------------------------------------------------------
def _z_ranges(scene: _Scene, z0: float, z1: float) -> list[tuple[float, float]]:
    """Split a long object at a bridge, so that painter's order can put one part behind it and one in front."""
    zb = scene.bridge_z
    if z0 < zb < z1:
        return [(z0, zb), (zb, z1)]
    return [(z0, z1)]


def _add_buildings(scene: _Scene, side: _Side) -> None:
    cam, rng = scene.cam, scene.rng
    setback = {"urban": (0.0, 1.5), "suburban": (0.0, 2.0), "highway": (5.0, 30.0)}[scene.kind]
    face = side.outer + rng.uniform(*setback)
    z, z_end = cam.z_bottom * rng.uniform(0.4, 1.3), rng.uniform(60.0, 170.0)
    count = 0
    while z < z_end and count < 7:
        length = rng.uniform(6.0, 30.0) if scene.kind != "suburban" else rng.uniform(8.0, 16.0)
        if rng.random() < (0.2 if scene.kind == "urban" else 0.5):
            z += rng.uniform(3.0, 15.0)                                  # a gap between buildings
        for a, b in _z_ranges(scene, z, z + length):
            _add_building(scene, side, face + rng.uniform(0, 0.6) * (scene.kind != "urban"), a, b)
        z, count = z + length, count + 1


def _add_building(scene: _Scene, side: _Side, face: float, z0: float, z1: float) -> None:
    cam, rng = scene.cam, scene.rng
    wall = rng.uniform(*{"urban": (6.0, 35.0), "suburban": (4.0, 8.0), "highway": (5.0, 25.0)}[scene.kind])
    u_in, u_out = side.u(face), side.u(face + rng.uniform(8.0, 20.0))
    color = scene.color("building")
    style = scene.style(color, depth=z0, fine=rng.uniform(1, 6), coarse=rng.uniform(0, 6), **scene.grad(0.2))
    n = max(3, min(8, int((z1 - z0) / 4)))
    if scene.kind == "suburban" and rng.random() < 0.7:      # a house with a gabled roof
        ridge_u, ridge_up = (u_in + u_out) / 2, wall + rng.uniform(1.5, 4.0)
        outline, z1 = _long_box(cam, u_in, u_out, z0, z1, wall, ridge_u, ridge_up, n)
        item = _Item("building", [(outline, style)])
        roof = _strip(cam, u_in, ridge_u, z0, z1, n, wall, ridge_up)
        item.paints.append((roof, scene.style(scene.color("roof"), depth=z0, fine=3, coarse=4)))
    else:
        outline, z1 = _long_box(cam, u_in, u_out, z0, z1, wall, n=n)
        item = _Item("building", [(outline, style)])
    item.group, item.depth = BUILDINGS, z0
    item.paints += _windows(scene, u_in, u_out, z0, z1, wall, color)
    scene.standing.append(item)
    _add_building_shadow(scene, u_in, z0, z1, wall)


def _windows(scene: _Scene, u_in: float, u_out: float, z0: float, z1: float, wall: float, wall_color) -> list:
    """A grid of windows on the facade along the road and on the near end, inside the wall (below its top)."""
    cam, rng = scene.cam, scene.rng
    if rng.random() < 0.1:
        return []
    floor, spacing = rng.uniform(2.8, 3.6), rng.uniform(1.8, 4.0)
    win_h, win_w = floor * rng.uniform(0.4, 0.65), spacing * rng.uniform(0.35, 0.7)
    sills = 0.9 + np.arange(int((wall - 0.8) / floor)) * floor
    sill, start = (a.ravel() for a in np.meshgrid(sills, _window_starts(z0 + 0.5, z1 - 0.5, spacing, win_w)))
    side = _face_quads(cam, u_in, start, start + win_w, sill, sill + win_h)
    across = _window_starts(min(u_in, u_out) + 0.5, max(u_in, u_out) - 0.5, spacing, win_w)
    sill, start = (a.ravel() for a in np.meshgrid(sills, across))
    ends = np.stack([start, start + win_w, start + win_w, start], axis=1)
    front = cam.project(ends, z0, np.stack([sill, sill, sill + win_h, sill + win_h], axis=1))
    quads = np.concatenate([side, front])
    quads = quads[np.abs(quads[:, 2, 1] - quads[:, 1, 1]) >= 2.0][:120]   # skip windows too small to see
    glass = scene.color("window") if rng.random() < 0.8 else scene.shade(wall_color, 0.4, 0.7)
    style = scene.style(glass, depth=z0, fine=2, coarse=rng.uniform(0, 6))
    return [(q, style) for q in quads]


def _window_starts(lo: float, hi: float, spacing: float, width: float) -> np.ndarray:
    """Left edges of as many windows as fit between lo and hi, centred."""
    count = int((hi - lo) / spacing)
    return lo + (hi - lo - (count - 1) * spacing - width) / 2 + np.arange(count) * spacing


def _add_building_shadow(scene: _Scene, u: float, z0: float, z1: float, wall: float) -> None:
    """Buildings on the sun's side throw a shadow band onto the ground toward the road."""
    sun = scene.sun
    if sun is None or np.sign(u) != -sun[0]:
        return
    cam, reach = scene.cam, min(wall * sun[1], 40.0)
    zs = cam.depths(z0, z1, 6)
    inner = cam.project(u, zs, 0.0)
    outer = cam.project(u + sun[0] * reach, zs[::-1] + sun[2] * reach, 0.0)
    scene.shadows.append(np.concatenate([inner, outer]))


# --- trees, poles, clutter beside the road -------------------------------------------------------------------------
def _tree_spots(scene: _Scene, side: _Side) -> list[tuple[float, float]]:
    """(offset from the road edge, depth) of trees on this side."""
    rng, cam = scene.rng, scene.cam
    band = next((side.bands[b] for b in ("verge", "walk", "lawn") if b in side.bands), None)
    if band is None or rng.random() < 0.3:
        return []
    lo, hi = band
    offset = (lo + hi) / 2 if hi - lo < 3 else rng.uniform(lo + 0.7, hi - 0.7)
    spacing = rng.uniform(7.0, 16.0)
    zs = np.arange(cam.z_bottom * rng.uniform(0.7, 1.5), 90.0, spacing)[:6]
    return [(offset + rng.uniform(-0.2, 0.2), z + rng.uniform(-1, 1)) for z in zs]


def _add_trees(scene: _Scene, side: _Side) -> None:
    rng = scene.rng
    foliage = scene.color("tree")
    trunk = scene.style(scene.color("trunk"), fine=4, coarse=4)
    for offset, z in _tree_spots(scene, side):
        leaves = foliage if rng.random() < 0.6 else scene.color("tree")
        _add_tree(scene, side.u(offset), z, leaves, trunk)


def _add_tree(scene: _Scene, u: float, z: float, leaves, trunk_style: int) -> None:
    cam, rng = scene.cam, scene.rng
    r = rng.uniform(1.5, 4.0)
    ry = r * rng.uniform(0.8, 1.3)
    trunk_h = rng.uniform(1.5, 3.5)
    centre = cam.project(u, z, trunk_h + 0.8 * ry)
    rx_px, ry_px = cam.pixels(r, z), cam.pixels(ry, z)
    half = rng.uniform(0.1, 0.22)
    trunk = _upright(cam, u - half, u + half, z, 0.0, trunk_h + 0.5 * ry)   # reaches into the canopy: no gap
    conifer = rng.random() < 0.15
    canopy = _conifer(centre, rx_px * 0.8, ry_px * 1.3, rng) if conifer else _blob(centre, rx_px, ry_px, rng, 16, 0.14)
    style = scene.style(leaves, depth=z, fine=rng.uniform(6, 12), coarse=rng.uniform(10, 25), **scene.grad(0.2))
    item = _Item("tree", [(trunk, trunk_style), (canopy, style)], group=ROADSIDE, depth=z)
    if not conifer:
        item.paints = _leaf_clusters(scene, centre, rx_px, ry_px, leaves, z)
    scene.standing.append(item)
    _add_tree_shadow(scene, u, z, r, trunk_h)


def _add_tree_shadow(scene: _Scene, u: float, z: float, r: float, trunk_h: float) -> None:
    """The canopy's shadow on the ground, a little to the side of the trunk."""
    if scene.sun is None:
        return
    direction, reach, drift = scene.sun
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    radius = 0.8 * r * scene.rng.uniform(0.85, 1.15, 12)
    offset = min(reach * trunk_h, 2.5)
    ground = (u + direction * offset + radius * np.cos(angles), z + drift * offset + radius * np.sin(angles))
    if np.all(ground[1] > 0.5):
        scene.shadows.append(scene.cam.project(*ground))


def _conifer(centre, rx: float, ry: float, rng) -> np.ndarray:
    """A tiered triangle: zig-zag sides narrowing to a tip."""
    tiers = int(rng.integers(3, 6))
    ys = np.linspace(centre[1] - ry, centre[1] + ry, tiers + 1)
    right = [(centre[0], ys[0])]
    for k in range(1, tiers + 1):
        width = rx * k / tiers
        right += [(centre[0] + width, ys[k]), (centre[0] + width * 0.55, ys[k])] if k < tiers else \
                 [(centre[0] + width, ys[k])]
    right = np.array(right)
    left = right[1:][::-1] * [-1, 1] + [2 * centre[0], 0]
    return np.concatenate([right, left])


def _leaf_clusters(scene: _Scene, centre, rx: float, ry: float, leaves, z: float) -> list:
    """Lighter and darker clumps inside the canopy (centre within 0.45 R, radius 0.35 R: inside its 0.86 R)."""
    rng = scene.rng
    if rx < 8:                        # too small for clumps to show
        return []
    styles = [scene.style(scene.shade(leaves, lo, hi), depth=z, fine=8, coarse=15)
              for lo, hi in ((0.6, 0.8), (1.1, 1.4))]
    paints = []
    for k in range(int(rng.integers(2, 6))):
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.45)
        c = np.asarray(centre) + [rx * dist * np.cos(angle), ry * dist * np.sin(angle)]
        size = rng.uniform(0.2, 0.35)
        paints.append((_blob(c, rx * size, ry * size, rng, 10, 0.05), styles[k % 2]))
    return paints


def _add_poles(scene: _Scene, side: _Side) -> None:
    cam, rng = scene.cam, scene.rng
    if rng.random() < 0.25:
        return
    kinds = ["lamp", "sign", "utility"] if scene.kind == "suburban" else ["lamp", "sign"]
    color = scene.color("pole")
    style = scene.style(color, fine=2, **scene.grad(0.2))
    offset = min(side.outer, rng.uniform(0.4, 1.0))
    spacing = rng.uniform(15.0, 35.0)
    for z in np.arange(cam.z_bottom * rng.uniform(0.8, 2.0), 70.0, spacing)[:4]:
        kind = kinds[int(rng.integers(len(kinds)))]
        _add_pole(scene, side, side.u(offset), z, kind, style)


def _add_pole(scene: _Scene, side: _Side, u: float, z: float, kind: str, style: int) -> None:
    cam, rng = scene.cam, scene.rng
    height = {"lamp": rng.uniform(6, 9), "sign": rng.uniform(2.2, 3.2), "utility": rng.uniform(8, 11)}[kind]
    half = {"lamp": 0.09, "sign": 0.05, "utility": 0.14}[kind]
    parts = [(_upright(cam, u - half, u + half, z, 0.0, height), style)]
    if kind == "lamp":
        arm = rng.uniform(1.2, 2.5) * -side.sign
        parts.append((_upright(cam, min(u, u + arm), max(u, u + arm), z, height - 0.15, height), style))
        head = u + arm
        parts.append((_upright(cam, head - 0.35, head + 0.35, z, height - 0.35, height - 0.05), style))
    elif kind == "sign":
        panel = scene.style(scene.color("sign"), fine=2)
        size = rng.uniform(0.5, 0.9)
        parts.append((_upright(cam, u - size / 2, u + size / 2, z, height - 0.1, height + size - 0.1), panel))
    else:
        parts.append((_upright(cam, u - 1.0, u + 1.0, z, height - 0.8, height - 0.65), style))
    scene.standing.append(_Item("background", parts, group=ROADSIDE, depth=z))


def _upright(cam: Camera, u0: float, u1: float, z: float, up0: float, up1: float) -> np.ndarray:
    """A rectangle facing the camera at depth z."""
    return cam.project(np.array([u0, u1, u1, u0]), z, np.array([up0, up0, up1, up1]))


def _add_clutter(scene: _Scene, side: _Side) -> None:
    """Bins, boxes and people on the sidewalk: small background objects."""
    cam, rng = scene.cam, scene.rng
    if "walk" not in side.bands or rng.random() < 0.4:
        return
    lo, hi = side.bands["walk"]
    for _ in range(int(rng.integers(1, 4))):
        z, u = rng.uniform(cam.z_bottom * 1.1, 40.0), side.u(rng.uniform(lo + 0.3, hi - 0.3))
        style = scene.style(scene.color("car"), depth=z, fine=3, **scene.grad(0.2))
        if rng.random() < 0.4:
            parts = _person(cam, u, z, rng)
        else:
            half, height = rng.uniform(0.15, 0.75), rng.uniform(0.5, 1.2)
            parts = [_upright(cam, u - half, u + half, z, 0.0, height)]
        scene.standing.append(_Item("background", [(p, style) for p in parts], group=ROADSIDE, depth=z))


def _person(cam: Camera, u: float, z: float, rng) -> list[np.ndarray]:
    """A tapered body and a head."""
    tall, half = rng.uniform(1.55, 1.9), rng.uniform(0.2, 0.28)
    shoulders = 0.82 * tall
    body = cam.project(u + half * np.array([-0.7, 0.7, 1.0, -1.0]), z, np.array([0.0, 0.0, shoulders, shoulders]))
    head = cam.project(u, z, 0.91 * tall)
    radius = cam.pixels(0.1 * tall, z)
    return [body, _blob(head, radius, radius * 1.15, rng, 10, 0.05)]


def _add_hedge_or_wall(scene: _Scene, side: _Side) -> None:
    """A hedge (landscaping) or a concrete wall along the outer edge of the sidewalk or lawn."""
    cam, rng = scene.cam, scene.rng
    anchor = side.bands.get("lawn") or side.bands.get("walk")
    if anchor is None or rng.random() < 0.55:
        return
    hedge = rng.random() < {"urban": 0.2, "suburban": 0.6, "highway": 0.3}[scene.kind]
    height = rng.uniform(0.6, 1.6) if hedge else rng.uniform(0.5, 2.5)
    d = anchor[1] - 0.8 if hedge else anchor[1] - 0.3
    z0 = cam.z_bottom * rng.uniform(0.6, 1.5)
    color = scene.color("tree" if hedge else "concrete")
    for a, b in _z_ranges(scene, z0, z0 + rng.uniform(10, 60)):
        style = scene.style(color, depth=a, fine=8 if hedge else 4, coarse=12 if hedge else 5, **scene.grad(0.15))
        outline, _ = _long_box(cam, side.u(d), side.u(anchor[1]), a, b, height, n=8)
        scene.standing.append(_Item("landscaping" if hedge else "concrete", [(outline, style)], group=WALLS, depth=a))


# --- concrete: barriers, medians, bridges ------------------------------------------------------------------------
def _add_barriers(scene: _Scene, road: _Road) -> None:
    cam, rng = scene.cam, scene.rng
    chance = {"highway": 0.85, "urban": 0.15, "suburban": 0.05}[scene.kind]
    borrowed = rng.random() < 0.05                     # as grey as the road: only shape tells them apart
    color = scene.styles[scene.road_style].color * rng.uniform(1.0, 1.4) if borrowed else scene.color("concrete")
    for sign, edge in ((-1, road.left), (1, road.right)):
        if rng.random() > chance:
            continue
        z0, z1 = cam.z_bottom * rng.uniform(0.5, 1.5), rng.uniform(50.0, 200.0)
        height = rng.uniform(0.8, 1.2)
        for a, b in _z_ranges(scene, z0, z1):
            _add_long_concrete(scene, edge - sign * 0.6, edge, a, b, height, color)


def _add_long_concrete(scene: _Scene, u_in: float, u_out: float, z0: float, z1: float, height: float,
                       color) -> None:
    cam, rng = scene.cam, scene.rng
    face = scene.shade(color, 0.6, 0.95)                # vertical faces get less light than the top
    style = scene.style(face, depth=z0, fine=rng.uniform(3, 7), coarse=rng.uniform(2, 8), **scene.grad(0.15))
    outline, z1 = _long_box(cam, u_in, u_out, z0, z1, height, n=10)
    item = _Item("concrete", [(outline, style)], group=BARRIERS, depth=z0)
    if height < cam.eye:                                # a lit top and a seam along the face show the box's form
        top = _strip(cam, u_in, u_out, z0, z1, 10, height)
        item.paints.append((top, scene.style(scene.shade(color, 1.0, 1.25), depth=z0, fine=3)))
        seam = rng.uniform(0.2, 0.5) * height
        band = _strip(cam, u_in, u_in, z0, z1, 10, seam, seam + 0.06 * height)
        item.paints.append((band, scene.style(scene.shade(face, 0.6, 0.8), depth=z0, fine=2)))
    scene.standing.append(item)


def _add_median(scene: _Scene, road: _Road) -> None:
    if road.median is None:
        return
    cam, rng = scene.cam, scene.rng
    a, b = road.median
    u_in, u_out = (a, b) if a > 0 else (b, a)         # the face toward the camera's line of sight
    z0 = cam.z_bottom * 0.8
    if b - a < 1.4:
        for za, zb in _z_ranges(scene, z0, rng.uniform(80, 200)):
            _add_long_concrete(scene, u_in, u_out, za, zb, rng.uniform(0.3, 1.1), scene.color("concrete"))
        return
    grass = scene.style(scene.color("grass"), fine=8, coarse=8, ground=True)
    scene.flat.append(_Item("landscaping", [(_strip(cam, a, b, z0, Z_FAR), grass)]))
    kerb = scene.color("concrete")
    for edge, sign in ((a, 1), (b, -1)):
        for za, zb in _z_ranges(scene, z0, Z_FAR * 0.6):
            inner, outer = sorted((edge, edge + sign * 0.25), key=abs)     # inner faces the camera's line of sight
            _add_long_concrete(scene, inner, outer, za, zb, rng.uniform(0.15, 0.3), kerb)


def _plan_bridge(scene: _Scene) -> None:
    chance = {"highway": 0.45, "urban": 0.2, "suburban": 0.1}[scene.kind]
    if scene.rng.random() < chance:
        scene.bridge_z = scene.rng.uniform(2.0, 6.0) * scene.cam.z_bottom + 10.0


def _add_bridge(scene: _Scene, road: _Road) -> None:
    if not np.isfinite(scene.bridge_z):
        return
    cam, rng = scene.cam, scene.rng
    z, depth = scene.bridge_z, rng.uniform(8.0, 14.0)
    clear, thick = rng.uniform(4.5, 7.0), rng.uniform(1.0, 2.5)
    top = cam.project(0.0, z, clear + thick)[1]
    bottom = cam.project(0.0, z + depth, clear)[1]
    front = cam.project(0.0, z, clear)[1]
    x0, x1 = -20.0, cam.width + 20.0
    color = scene.color("concrete")
    deck = np.array([[x0, top], [x1, top], [x1, bottom], [x0, bottom]])
    style = scene.style(color, depth=z, fine=4, coarse=6, **scene.grad(0.1))
    underside = scene.style(scene.shade(color, 0.35, 0.6), depth=z, fine=3, coarse=4)
    item = _Item("concrete", [(deck, style)], group=-1, depth=z)
    item.paints.append((np.array([[x0, front], [x1, front], [x1, bottom], [x0, bottom]]), underside))
    pillar_at = [road.left - 1.5, road.right + 1.5] + ([sum(road.median) / 2] if road.median else [])
    for u in pillar_at:
        w = rng.uniform(0.6, 1.2) / 2
        item.parts.append((_upright(cam, u - w, u + w, z + depth / 2, 0.0, clear), style))
    scene.standing.append(item)


# --- vehicles ----------------------------------------------------------------------------------------------------
def _add_cars(scene: _Scene, road: _Road) -> None:
    cam, rng = scene.cam, scene.rng
    count = int(rng.integers(*{"urban": (1, 6), "suburban": (0, 4), "highway": (2, 7)}[scene.kind]))
    taken: list[tuple[int, float]] = []
    wheel = scene.style(np.full(3, rng.uniform(10, 40)), fine=2)
    for _ in range(count * 3):
        if len(taken) == count:
            break
        lane = int(rng.integers(len(road.lanes)))
        z = rng.uniform(cam.z_bottom * 1.2, 70.0)
        if any(lane == k and abs(z - zk) < 9.0 for k, zk in taken):
            continue
        taken.append((lane, z))
        a, b = road.lanes[lane]
        centre = (a + b) / 2 + rng.uniform(-0.3, 0.3)
        if abs(centre) < 1.0 and z < 2.0 * cam.z_bottom:
            z += 2.0 * cam.z_bottom                       # keep the lane ahead of the camera open near by
        _add_car(scene, centre, z, lane < road.oncoming, wheel)


def _add_car(scene: _Scene, u: float, z: float, oncoming: bool, wheel: int) -> None:
    cam, rng = scene.cam, scene.rng
    width, height, length, cabin = [(1.75, 1.45, 4.5, True), (1.9, 1.8, 4.8, True), (2.0, 2.3, 5.2, False),
                                    (2.5, 3.2, 11.0, False)][rng.choice(4, p=[0.5, 0.25, 0.15, 0.1])]
    width *= rng.uniform(0.95, 1.05)
    body_top = height * (0.55 if cabin else 0.95)
    inset = (0.42 * width, z + 0.25 * length, z + 0.8 * length) if cabin else (width / 2, z, z + length)
    corners = [(uu, zz, up) for uu in (u - width / 2, u + width / 2) for zz in (z, z + length) for up in (0, body_top)]
    corners += [(uu, zz, height) for uu in (u - inset[0], u + inset[0]) for zz in inset[1:]]
    pts = cam.project(*np.array(corners).T)
    color = scene.color("car")
    style = scene.style(color, depth=z, fine=2, **scene.grad(0.2))
    item = _Item("background", [(_hull(pts), style)], group=VEHICLES, depth=z)
    item.paints = _car_details(scene, u, z, width, height, length, cabin, oncoming, wheel)
    scene.standing.append(item)
    scene.shadows.append(_ground_quads(scene.cam, u - width / 2 - 0.1, u + width / 2 + 0.1, z - 0.1, z + length)[0])


def _car_details(scene: _Scene, u, z, width, height, length, cabin, oncoming, wheel) -> list:
    """Wheels, lights and a rear or front window, all on faces that the hull contains."""
    cam = scene.cam
    glass_z, glass_half = (z + 0.25 * length, 0.38 * width) if cabin else (z, width / 2 - 0.15)
    low, high = (0.6 * height, 0.92 * height) if cabin else (0.55 * height, 0.85 * height)
    glass = scene.style(scene.color("window") * 0.7, fine=2)
    lights = scene.style(np.array([250, 250, 230.0]) if oncoming else np.array([200, 30, 30.0]), fine=2)
    lamp_up = 0.4 * height if cabin else 0.2 * height
    paints = [(_upright(cam, u - glass_half, u + glass_half, glass_z, low, high), glass)]
    for inner, outer in ((u - width / 2 + 0.4, u - width / 2 + 0.1), (u + width / 2 - 0.4, u + width / 2 - 0.1)):
        lo, hi = sorted((inner, outer))
        paints.append((_upright(cam, lo, hi, z, 0.0, 0.35), wheel))
        paints.append((_upright(cam, lo, hi, z, lamp_up, lamp_up + 0.15), lights))
    return paints


# --- assembling a scene: order, clip, round ----------------------------------------------------------------------
def _plan_sun(rng) -> tuple[float, float, float] | None:
    """(lateral direction the shadows fall, shadow length per metre of height, depth drift) or None if overcast."""
    if rng.random() < 0.45:
        return None
    return float(rng.choice([-1.0, 1.0])), rng.uniform(0.4, 1.5), rng.uniform(-0.5, 0.5)


def _shared_colors(scene: _Scene) -> dict:
    """Per scene, some classes borrow another's colour: a sidewalk as grey as the road, a verge like the trees."""
    rng, shared = scene.rng, {}
    road = scene.styles[scene.road_style].color
    if rng.random() < 0.05:
        shared["sidewalk"] = road * rng.uniform(0.95, 1.3)
    if rng.random() < 0.05:
        shared["grass"] = scene.color("tree")
    return shared


def _build(rng, height: int, width: int) -> _Scene:
    kind = ("urban", "suburban", "highway")[rng.choice(3, p=[0.5, 0.3, 0.2])]
    scene = _Scene(rng, _camera(rng, height, width, kind), kind)
    scene.sun = _plan_sun(rng)
    _add_sky(scene)
    _add_ground(scene)
    _add_far_horizon(scene)
    road = _plan_road(rng, kind)
    _plan_bridge(scene)
    _add_road(scene, road)
    shared = _shared_colors(scene)
    sides = [_add_side(scene, road, sign, shared) for sign in (-1, 1)]
    _add_median(scene, road)
    _add_bridge(scene, road)
    for side in sides:
        for add in (_add_buildings, _add_hedge_or_wall, _add_trees, _add_poles, _add_clutter):
            add(scene, side)
    _add_barriers(scene, road)
    _add_cars(scene, road)
    return scene


def _drawing_order(scene: _Scene) -> list[_Item]:
    """Flat things in the order they were laid, then standing things back to front: whatever is beyond the bridge,
    the bridge, then the rest; within each, buildings before roadside objects before barriers before vehicles."""
    def key(item: _Item):
        if item.group < 0:
            return (1, -1, 0.0)
        return (0 if item.depth >= scene.bridge_z else 1, item.group, -item.depth)
    return scene.flat + sorted(scene.standing, key=key)


def _clip(poly: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sutherland-Hodgman against the image rectangle, one half-plane at a time, vectorised over the vertices."""
    low, high = poly.min(axis=0), poly.max(axis=0)
    if low[0] >= 0 and low[1] >= 0 and high[0] <= width and high[1] <= height:
        return poly
    for axis, limit, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):
        if len(poly) == 0:
            break
        v = poly[:, axis] - limit if keep_below else limit - poly[:, axis]     # <= 0 means inside
        inside = v <= 0
        if inside.all():
            continue
        nxt, v_next = np.concatenate([poly[1:], poly[:1]]), np.concatenate([v[1:], v[:1]])
        crossing = inside != (v_next <= 0)
        t = np.where(crossing, v / np.where(crossing, v - v_next, 1.0), 0.0)
        cut = poly + t[:, None] * (nxt - poly)
        cut[:, axis] = limit
        both = np.stack([poly, cut], axis=1)
        poly = both[np.stack([inside, crossing], axis=1)]
    return poly


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:]) + x[-1] * y[0] - y[-1] * x[0]))


def _finish(items: list[_Item], width: int, height: int) -> tuple[Objects, list[tuple[np.ndarray, int]]]:
    """Clip and round the label polygons; return the objects and the list of (polygon, style) to paint in order."""
    objects, strokes = [], []
    for item in items:
        kept = []
        for poly, style in item.parts:
            poly = _dedupe(np.round(_clip(np.asarray(poly, float), width, height), 2))
            if len(poly) >= 3 and _area(poly) > 0.01:
                kept.append(poly)
                strokes.append((poly, style))
        if kept:
            objects.append((item.name, kept))
            strokes += item.paints
    return objects, strokes


# --- painting ----------------------------------------------------------------------------------------------------
def _paint_ids(strokes, height: int, width: int) -> np.ndarray:
    """Style id per supersampled pixel.

    PIL truncates vertices to integers and fills polygons boundary included, so it overfills by up to a subpixel
    on the left and top; scaling without the usual half-subpixel shift splits that overfill evenly between the
    sides. Checked against labels/rasterize.py at 360x480: the majority class of each pixel's subpixels equals the
    label on ~99.3% of pixels, the rest being edge pixels, which the image blends anyway.
    """
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    for poly, style in strokes:
        draw.polygon((np.asarray(poly, float) * SUPERSAMPLE).ravel().tolist(), fill=int(style))
    return np.asarray(canvas)


def _base_colors(ids: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean flat colour of each pixel's 2x2 subpixels, and the style of its top-left subpixel (for texture and
    shading). np.take, not fancy indexing: several times faster for a small table."""
    dominant = np.ascontiguousarray(ids[::2, ::2])
    base = np.take(colors, dominant.astype(np.intp), axis=0)
    pairs = ids.view(np.uint16)                     # two horizontal neighbours per element
    top, bottom = pairs[0::2], pairs[1::2]
    edge = (top != bottom) | ((top & 255) != (top >> 8))
    if edge.any():     # only edge pixels need the average; elsewhere all subpixels agree
        subs = [ids[i::2, j::2][edge] for i in range(2) for j in range(2)]
        base[edge] = np.mean([np.take(colors, sub, axis=0) for sub in subs], axis=0)
    return base, dominant


def _noise(rng, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel grain in [-1, 1] and a smooth blotchy field of unit-ish amplitude: random windows of fields made
    once per process (fresh fields for every scene would cost ~5% of the scene's time)."""
    fine, coarse = _noise_bank(height, width)
    y0, x0, y1, x1 = (int(v) for v in rng.integers(0, [height, width, height, width]))
    return fine[y0:y0 + height, x0:x0 + width], coarse[y1:y1 + height, x1:x1 + width]


@functools.lru_cache(maxsize=4)
def _noise_bank(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise fields twice the image's size, from a fixed seed, so scenes stay reproducible in any process."""
    rng = np.random.default_rng(0x5EED)
    fine = rng.random((2 * height, 2 * width), dtype=np.float32) * 2.0 - 1.0
    cell = 6
    small = rng.standard_normal((2 * height // cell + 2, 2 * width // cell + 2)).astype(np.float32)
    coarse = np.asarray(Image.fromarray(small, mode="F").resize((2 * width, 2 * height), Image.BILINEAR))
    return fine, coarse


def _render(scene: _Scene, strokes, height: int, width: int) -> np.ndarray:
    """(flat colour x gain + texture), with the global light folded into per-style tables so that few operations
    run over every pixel, and only two over all three channels."""
    rng = scene.rng
    tables = _light_tables(scene)
    base, dom = _base_colors(_paint_ids(strokes, height, width), tables["color"])
    index = dom.astype(np.intp)                  # np.take would convert a uint8 index on every call
    xn = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    yn = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    fine, coarse = _noise(rng, height, width)
    gain = tables["brightness"] + np.take(tables["slope_x"], index) * xn + np.take(tables["slope_y"], index) * yn
    if scene.shadows:
        gain *= _shadow_factor(scene, np.take(tables["ground"], index), height, width)
    offset = np.take(tables["fine"], index) * fine + np.take(tables["coarse"], index) * coarse
    base *= gain[..., None]
    base += offset[..., None]
    return np.clip(base, 0, 255, out=base).astype(np.uint8)


def _light_tables(scene: _Scene) -> dict[str, np.ndarray]:
    """Per-style colour, brightness slopes and texture amplitudes with the scene's lighting folded in: a colour
    cast, a global brightness, and a brightness ramp across the frame (low sun, lens falloff)."""
    rng, styles = scene.rng, scene.styles
    brightness = rng.uniform(0.65, 1.25)
    ramp_x, ramp_y = rng.uniform(-0.2, 0.2), rng.uniform(-0.15, 0.15)
    column = lambda name: np.array([getattr(s, name) for s in styles], np.float32)
    cast = (1.0 + rng.uniform(-0.12, 0.12, 3)).astype(np.float32)
    return {"color": np.array([s.color for s in styles], np.float32) * cast,
            "brightness": np.float32(brightness),
            "slope_x": column("grad_x") * brightness + ramp_x, "slope_y": column("grad_y") * brightness + ramp_y,
            "fine": column("fine") * brightness, "coarse": column("coarse") * brightness,
            "ground": np.array([s.ground for s in styles], bool)}


def _shadow_factor(scene: _Scene, ground: np.ndarray, height: int, width: int) -> np.ndarray:
    """1 in the light, `strength` where a cast shadow falls on the ground (standing things stay lit)."""
    strength = scene.rng.uniform(0.45, 0.75) if scene.sun is not None else scene.rng.uniform(0.75, 0.9)
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for poly in scene.shadows:
        draw.polygon(np.asarray(poly, float).ravel().tolist(), fill=1)
    shadowed = (np.asarray(mask) > 0) & ground
    return np.where(shadowed, np.float32(strength), np.float32(1.0))


# --- public API --------------------------------------------------------------------------------------------------
def generate_scene(seed, height: int = 360, width: int = 480) -> tuple[np.ndarray, Objects]:
    """The uint8 (H, W, 3) image and its objects in drawing order: [(class name, [(N, 2) x, y polygon, ...]), ...].

    `seed` is anything np.random.default_rng takes: an int, or a sequence such as (base_seed, index).
    """
    rng = np.random.default_rng(seed)
    scene = _build(rng, height, width)
    objects, strokes = _finish(_drawing_order(scene), width, height)
    return _render(scene, strokes, height, width), objects


def write_synthetic(out_dir, num_images: int = 100, seed: int = 0, height: int = 360, width: int = 480,
                    num_workers: int | None = None) -> list[str]:
    """Write images/street_0001.png ... and annotations/street_0001.xml (the seed's VOC polygon format).

    Image i is generate_scene((seed, i)), so the files are byte-identical from run to run whatever the number of
    worker processes (default: one per CPU; 1 writes in this process). Returns the file stems in order.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), seed, i, height, width) for i in range(1, num_images + 1)]
    workers = min(num_workers or default_workers(), max(1, num_images))
    if workers <= 1:
        return [_write_one(job) for job in jobs]
    # An executor, not multiprocessing.Pool: if workers cannot start it raises BrokenProcessPool instead of hanging.
    context = pool_context()
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=end_with_parent) as pool:
            try:
                return list(pool.map(_write_one, jobs))
            except KeyboardInterrupt:
                # Ctrl-C, SIGTERM: the scenes queued are not drawn, and the one each worker draws is waited for
                # (a scene, not a chunk of 31: 15 s), so that no worker writes into the folder once the build has
                # removed it (shutdown without waiting, the scratch folder came back with a scene in it).
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    except BrokenProcessPool as e:
        raise RuntimeError(f"write_synthetic: its {context.get_start_method()} worker processes died; with JAX "
                           "loaded they are spawned, which needs the calling script's code under "
                           "`if __name__ == '__main__':` (or pass num_workers=1)") from e


def _write_one(job) -> str:
    out_dir, seed, index, height, width = job
    image, objects = generate_scene((seed, index), height, width)
    stem = f"street_{index:04d}"
    out = Path(out_dir)
    png, xml = out / "images" / f"{stem}.png", out / "annotations" / f"{stem}.xml"
    tmp_png, tmp_xml = png.with_name(f".{stem}.png.tmp"), xml.with_name(f".{stem}.xml.tmp")
    tmp_png.write_bytes(png_bytes(image))
    write_voc(tmp_xml, png.name, width, height, objects)
    os.replace(tmp_png, png)                 # atomic: a reader never sees half a file
    os.replace(tmp_xml, xml)
    return stem


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB uint8 image as PNG: every row 'Up'-filtered, then Huffman-only deflate.

    PIL's encoder tries all five PNG filters on every row and takes ~10 ms for a noisy 480x360 image; one fixed
    filter in numpy and zlib's Huffman-only strategy take ~4 ms for files ~15% larger. Any PNG reader decodes it.
    """
    height, width, _ = image.shape
    flat = image.reshape(height, 3 * width)
    rows = np.empty((height, 1 + 3 * width), np.uint8)
    rows[:, 0] = 2                                     # filter type 2 (Up): each byte minus the byte above it
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)      # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", packer.compress(rows.tobytes()) + packer.flush()) + _png_chunk(b"IEND", b""))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

