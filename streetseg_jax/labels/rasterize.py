"""Polygons to a class-id mask, anti-aliased by coverage (never by averaging ids).

Pixel convention (the one in labels/shapes.py): x right, y down, origin at the image's top-left corner; pixel
(row r, column c) is the square [c, c+1) x [r, r+1) with centre (c + 0.5, r + 0.5).

How a pixel gets its class:
  1. Each shape's exact coverage of each pixel (the fraction of the pixel's area inside the shape, holes cut out)
     is computed analytically: every ring edge is cut where it crosses a pixel row or column, each piece adds its
     signed trapezoid area to an accumulation buffer, and a running sum along each row turns that into coverage
     (the method font rasterizers use). Inside means an odd winding number (the even-odd rule of PIL, which
     labelme2voc and Cityscapes' scripts draw with, of pycocotools and of Qt's canvas in LabelMe): a polygon that
     runs round a region twice, as a hole drawn through a slit (a keyhole) does, leaves it out. A pixel partly
     covered twice and partly not at all is approximated, as in font rasterizers.
  2. Shapes are stacked in drawing order: a stable sort by z_order (higher on top), ties keep list order (later on
     top). Going from the top shape down, each shape claims min(its coverage, what is still unclaimed) of a pixel;
     that is exact when the shapes above a pixel either cover all of it or none of what this shape covers there
     (a car over a road, two regions sharing an edge), and close to it otherwise.
  3. Each pixel takes the class with the largest claimed area; the unclaimed remainder counts for fill_id. Ties go
     to the upper shape, and a shape beats the fill on a tie.
Only pixels that some shape covers partly need steps 2-3 in full: fully covered pixels are painted back to front,
and the partly covered ones (a few percent of a street scene) are then settled from sparse lists.

Nothing outside the image counts: coordinates may lie outside it and are clipped. Coordinates further out than
`coordinate_limit` (a million pixels beyond any image) are refused as "out of range" and their shape skipped: no
labelling tool writes them, and the edge arithmetic below, exact to about 1e-10 px inside that range, would lose
whole pixels of precision beyond it and overflow near 1e308. Clipping such rings first would need exact arithmetic
to stay correct, for coordinates that only a corrupt file holds; the readers refuse them before they get here
(formats.read), so this is the rasterizer's own guard for callers that build Shapes themselves.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from streetseg_jax.labels.shapes import Shape

# Coverage is fixed point: _ONE is a whole pixel. y is rounded to 1/_ONE of a pixel before pieces' heights are taken,
# so heights telescope along every edge, each row of a closed ring sums to exactly zero, and a fully covered pixel
# comes out exactly _ONE. Integer running sums are also several times faster than float ones.
_ONE = 2 ** 40


@dataclasses.dataclass
class RasterResult:
    mask: np.ndarray          # (H, W) uint8 class ids
    problems: list[str]       # shapes that were skipped or are suspicious (one message each), shapes that later
                              # ones cover entirely (one message for them all)


@dataclasses.dataclass
class _Drawable:
    """One shape on its way to the mask."""
    class_id: int
    name: str                                   # "shape 3 ('road')", for messages
    index: int = 0                              # position in the items given
    exterior: np.ndarray | None = None          # (N, 2) float64
    holes: list = dataclasses.field(default_factory=list)
    raster: np.ndarray | None = None            # (h, w) bool over `box`, for mask-given shapes
    box: tuple[int, int, int, int] = (0, 0, 0, 0)   # pixels [x0, x1) x [y0, y1), inside the image
    block: int = -1                             # start of this shape's block in the flat coverage buffer


def rasterize(items: Sequence[tuple[int, Shape]], height: int, width: int,
              fill_id: int = 0, ignore_id: int = 255, report_covered: bool = False) -> RasterResult:
    """Draw (class_id, Shape) items into an (height, width) uint8 mask; shapes marked `ignore` get ignore_id.

    Degenerate shapes (fewer than 3 distinct points, zero area, non-finite coordinates), shapes with coordinates
    beyond coordinate_limit and shapes wholly outside the image are skipped and reported in `problems`; nothing
    here raises for bad geometry. With `report_covered` (labels check), so are shapes whose class has no pixel left
    where they lie, covered by shapes drawn after them.
    """
    _check_ids(height, width, fill_id, ignore_id, items)
    problems: list[str] = []
    drawables = _drawables(items, height, width, ignore_id, problems)
    flat = _coverage_buffer(drawables)
    mask, owner = _composite(drawables, flat, height, width, fill_id)
    if report_covered:
        problems.extend(_covered_problem(drawables, flat, mask, owner, [shape for _, shape in items]))
    return RasterResult(mask, problems)


def coverage(shape: Shape, height: int, width: int) -> np.ndarray:
    """Exact (H, W) float64 fraction of each pixel's area inside `shape` (holes cut out); zeros if degenerate."""
    out = np.zeros((height, width))
    for d in _drawables([(1, shape)], height, width, 1, []):
        x0, y0, x1, y1 = d.box
        out[y0:y1, x0:x1] = d.raster if d.raster is not None else _view(_coverage_buffer([d]), d) / _ONE
    return out


def coordinate_limit(height: int, width: int) -> float:
    """The largest |x| or |y| drawn for an image of this size: far beyond any outline a tool makes, and small enough
    that every cut of an edge along a pixel row or column stays exact to about 1e-10 px."""
    return 16.0 * max(height, width) + 1e6


def _check_ids(height: int, width: int, fill_id: int, ignore_id: int, items) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"mask size must be positive, got {height}x{width}")
    for name, value in (("fill_id", fill_id), ("ignore_id", ignore_id), *(("class id", c) for c, _ in items)):
        if not 0 <= int(value) <= 255:
            raise ValueError(f"{name} {value} does not fit a uint8 mask (0..255)")


# --- checking shapes ------------------------------------------------------------------------------------------------

def _drawables(items, height: int, width: int, ignore_id: int, problems: list[str]) -> list[_Drawable]:
    """The drawable shapes in drawing order (stable sort by z_order); the others are reported in `problems`."""
    candidates = []
    for i in sorted(range(len(items)), key=lambda i: items[i][1].z_order):   # sorted() is stable
        class_id, shape = items[i]
        d = _Drawable(ignore_id if shape.ignore else int(class_id), f"shape {i} ({shape.label!r})", i)
        if shape.raster is not None:
            if _set_raster(d, shape.raster, height, width, problems):
                candidates.append(d)
        else:
            d.exterior, d.holes = shape.exterior, list(shape.holes)
            candidates.append(d)
    bounds = _check_rings([d for d in candidates if d.raster is None], coordinate_limit(height, width), problems)
    kept = []
    for d in candidates:
        if d.raster is None and d.exterior is not None and not _set_box(d, bounds[id(d)], height, width, problems):
            d.exterior = None
        if d.raster is not None or d.exterior is not None:
            kept.append(d)
    return kept


def _check_rings(drawables: list[_Drawable], limit: float, problems: list[str]) -> dict:
    """Replace every ring by a float64 array, or drop it (exterior -> None) with a message saying why.

    Returns the exteriors' bounds (xmin, ymin, xmax, ymax) keyed by id() of their drawable.
    """
    checked = [(d, k, *_as_ring(points)) for d in drawables for k, points in enumerate([d.exterior, *d.holes])]
    rings = [ring for _, _, ring, why in checked if not why]
    measured = iter(_ring_problems(rings, limit) if rings else [])
    bounds = {}
    for d, k, ring, why in checked:                    # in drawing order, so the messages are too
        ring_bounds = None
        if not why:
            why, ring_bounds = next(measured)
        if why:
            _drop_ring(d, k, why, problems)
        elif k == 0:
            d.exterior, bounds[id(d)] = ring, ring_bounds
        else:
            d.holes[k - 1] = ring
    for d in drawables:
        d.holes = [h for h in d.holes if h is not None]
    return bounds


def _drop_ring(d: _Drawable, k: int, why: str, problems: list[str]) -> None:
    if k == 0:
        if d.exterior is not None:
            problems.append(f"{d.name}: {why}; skipped")
        d.exterior = None
    else:
        if d.exterior is not None:                     # no second message about a shape already skipped
            problems.append(f"{d.name}: hole {k - 1}: {why}; hole ignored")
        d.holes[k - 1] = None


def _as_ring(points) -> tuple[np.ndarray | None, str]:
    ring = np.asarray(points, dtype=np.float64)
    if ring.ndim != 2 or ring.shape[1] != 2:
        return None, f"points must be an (N, 2) array of x, y, got shape {ring.shape}"
    if len(ring) < 3:
        return None, f"has fewer than 3 distinct points ({len(ring)} given)"
    return ring, ""


def _ring_problems(rings: list[np.ndarray], limit: float) -> list[tuple[str, list[float]]]:
    """Per ring, why it cannot be drawn ('' when it can) and its bounds; all rings are measured at once."""
    lengths = np.array([len(r) for r in rings])
    points = np.concatenate(rings)
    starts = np.cumsum(lengths) - lengths
    finite = np.logical_and.reduceat(np.isfinite(points).all(axis=1), starts)
    far = np.maximum.reduceat(np.abs(points).max(axis=1), starts)       # NaN (not finite) is reported first
    nxt = points[_following(lengths)]
    with np.errstate(invalid="ignore", over="ignore"):
        area = np.add.reduceat(points[:, 0] * nxt[:, 1] - nxt[:, 0] * points[:, 1], starts)
    bounds = np.concatenate([np.minimum.reduceat(points, starts), np.maximum.reduceat(points, starts)], axis=1)
    return [(_ring_problem(ring, ok, f, a, limit), b)
            for ring, ok, f, a, b in zip(rings, finite.tolist(), far.tolist(), area.tolist(), bounds.tolist())]


def _ring_problem(ring: np.ndarray, finite: bool, far: float, area: float, limit: float) -> str:
    if not finite:
        return "has non-finite coordinates"
    if far > limit:
        return f"has a coordinate out of range ({far:g}; at most {limit:g} is drawn)"
    return _flat_problem(ring) if area == 0.0 else ""


def _flat_problem(ring: np.ndarray) -> str:
    """Rare path for a ring of zero net area: degenerate, or a symmetric figure 8 (which is drawn)."""
    if len(np.unique(ring, axis=0)) < 3:
        return f"has fewer than 3 distinct points ({len(ring)} given)"
    d = ring - ring[0]
    far = d[np.argmax((d * d).sum(axis=1))]
    if np.abs(d[:, 0] * far[1] - d[:, 1] * far[0]).max() <= 1e-12 * float(far @ far):
        return "has zero area (all points on one line)"
    return ""


def _set_box(d: _Drawable, bounds: list[float], height: int, width: int, problems: list[str]) -> bool:
    """Pixel box of the exterior clipped to the image; False (and a message) when that is empty."""
    xmin, ymin, xmax, ymax = bounds
    x0, x1 = max(0, math.floor(xmin)), min(width, math.ceil(xmax))
    y0, y1 = max(0, math.floor(ymin)), min(height, math.ceil(ymax))
    if x0 >= x1 or y0 >= y1:
        problems.append(f"{d.name}: lies entirely outside the {width}x{height} image; skipped")
        return False
    d.box = (x0, y0, x1, y1)
    return True


def _set_raster(d: _Drawable, raster, height: int, width: int, problems: list[str]) -> bool:
    raster = np.asarray(raster, dtype=bool)
    if raster.shape != (height, width):
        problems.append(f"{d.name}: raster mask is {raster.shape}, the image is {(height, width)}; skipped")
        return False
    rows, cols = np.flatnonzero(raster.any(axis=1)), np.flatnonzero(raster.any(axis=0))
    if len(rows) == 0:
        problems.append(f"{d.name}: raster mask is empty; skipped")
        return False
    d.box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    d.raster = raster[d.box[1]:d.box[3], d.box[0]:d.box[2]]
    return True


# --- exact coverage -------------------------------------------------------------------------------------------------
# Every polygon shape owns an (h, w + 1) block of one flat buffer over its box, the extra column catching the parts
# of edges right of the box; blocks of holes follow all the shapes' blocks. Every row of a closed ring's
# accumulation sums to zero, so one running sum over the whole buffer equals a separate one per row and per block.

def _coverage_buffer(drawables: list[_Drawable]) -> np.ndarray:
    """Flat int64 buffer with every polygon shape's coverage (0.._ONE, holes cut) in its block."""
    polygons = [d for d in drawables if d.raster is None]
    layers = [([d.exterior], d.box) for d in polygons] + [(d.holes, d.box) for d in polygons if d.holes]
    if not layers:
        return np.zeros(0, np.int64)
    sizes = [(y1 - y0) * (x1 - x0 + 1) for x0, y0, x1, y1 in (box for _, box in layers)]
    offsets = np.cumsum([0] + sizes)
    boxes = np.array([box for _, box in layers], dtype=np.float64).T
    index, weight = _accumulation(*_edges([rings for rings, _ in layers]), boxes, offsets[:-1])
    flat = np.zeros(int(offsets[-1]) + 1, np.int64)    # + 1: pieces right of the last box spill a zero there
    np.add.at(flat, index, weight)
    np.cumsum(flat, out=flat)
    np.abs(flat, out=flat)
    # Even-odd for each shape's outline: coverage folds the winding number w into [0, 1] (|w| mod 2, mirrored),
    # so a ring that loops twice round a region (a keyhole drawn without reversing) leaves it a hole, as PIL,
    # pycocotools and Qt fill it. Holes stay a union: two that overlap, or one listed twice, cut once.
    shapes = flat[:offsets[len(polygons)]]
    np.remainder(shapes, 2 * _ONE, out=shapes)
    np.minimum(shapes, 2 * _ONE - shapes, out=shapes)
    np.minimum(flat, _ONE, out=flat)
    for d, start in zip(polygons, offsets.tolist()):
        d.block = start
    _cut_holes([d for d in polygons if d.holes], flat, offsets[len(polygons):].tolist())
    return flat[:offsets[len(polygons)]]


def _cut_holes(holed: list[_Drawable], flat: np.ndarray, hole_starts: list[int]) -> None:
    for d, start in zip(holed, hole_starts):
        x0, y0, x1, y1 = d.box
        holes = flat[start:start + (y1 - y0) * (x1 - x0 + 1)].reshape(y1 - y0, x1 - x0 + 1)
        view = _view(flat, d)
        np.maximum(view - holes[:, :-1], 0, out=view)


def _view(flat: np.ndarray, d: _Drawable) -> np.ndarray:
    """The (h, w) part of `flat` (or a same-shaped array) holding shape d's coverage."""
    x0, y0, x1, y1 = d.box
    return flat[d.block:d.block + (y1 - y0) * (x1 - x0 + 1)].reshape(y1 - y0, x1 - x0 + 1)[:, :-1]


def _following(lengths: np.ndarray) -> np.ndarray:
    """Index of the next point of each point in concatenated rings; each ring closes back to its first point."""
    ends = np.cumsum(lengths)
    following = np.arange(1, int(ends[-1]) + 1)
    following[ends - 1] = ends - lengths
    return following


def _edges(ring_groups: list[list[np.ndarray]]):
    """x0, y0, x1, y1 and owning group (layer) index of every ring edge."""
    rings = [ring for group in ring_groups for ring in group]
    lengths = np.array([len(ring) for ring in rings])
    points = np.concatenate(rings)
    following = _following(lengths)
    x, y = points[:, 0].copy(), points[:, 1].copy()
    ring_owner = np.repeat(np.arange(len(ring_groups)), [len(group) for group in ring_groups])
    return x, y, x[following], y[following], np.repeat(ring_owner, lengths)


def _accumulation(x0, y0, x1, y1, owner, boxes, offsets):
    """Flat buffer indices and weights of every edge piece's signed area contribution."""
    left, top, right, bottom = boxes
    y0, x0, y1, x1, (owner,) = _cut(y0, x0, y1, x1, (owner,), top, bottom)
    row = np.floor(0.5 * (y0 + y1))
    keep = (row >= top[owner]) & (row < bottom[owner])  # pieces above or below the box add nothing inside it
    x0, y0, x1, y1, owner, row = x0[keep], y0[keep], x1[keep], y1[keep], owner[keep], row[keep]
    line = offsets[owner] + (row - top[owner]) * (right[owner] - left[owner] + 1)
    x0, y0, x1, y1, (owner, line) = _cut(x0, y0, x1, y1, (owner, line), left, right)
    xmid = 0.5 * (x0 + x1)
    col = np.floor(xmid)
    inside = xmid - col                                 # how far into its pixel the piece sits
    width = right[owner] - left[owner]
    col -= left[owner]
    inside[(col < 0) | (col >= width)] = 0.0            # left of the box: counts fully; right of it: column w
    np.clip(col, 0, width, out=col)
    dy = np.rint(y1 * _ONE).astype(np.int64) - np.rint(y0 * _ONE).astype(np.int64)
    right_part = np.rint(dy * inside).astype(np.int64)
    index = (line + col).astype(np.intp)
    # A piece in pixel c covers dy * (1 - inside) of c and all of every pixel to its right (row sums do the rest).
    return np.concatenate([index, index + 1]), np.concatenate([dy - right_part, right_part])


def _cut(a0, b0, a1, b1, carried: tuple, low, high):
    """Split segments (a0, b0) -> (a1, b1) wherever `a` crosses an integer in [low, high] of the segment's owner.

    `carried` holds per-segment arrays, the owner index first; each is repeated for the pieces of its segment.
    """
    owner = carried[0]
    first = np.maximum(np.floor(np.minimum(a0, a1)) + 1, low[owner])
    last = np.minimum(np.ceil(np.maximum(a0, a1)) - 1, high[owner])
    count = np.maximum(last - first + 1, 0).astype(np.intp)
    total = int(count.sum())
    if total == 0:
        return a0, b0, a1, b1, carried
    segment = np.repeat(np.arange(len(a0)), count)
    step = np.arange(total) - (np.cumsum(count) - count)[segment]
    at = np.where((a1 > a0)[segment], first[segment] + step, last[segment] - step)   # in order along the segment
    cut_b = b0[segment] + (at - a0[segment]) * ((b1 - b0)[segment] / (a1 - a0)[segment])
    first_piece = np.cumsum(count + 1) - (count + 1)   # segment i becomes p0 -> cut_1 -> ... -> cut_count -> p1
    ending_at_cut = segment + np.arange(total)
    a0, a1 = _join(a0, at, a1, first_piece, count, ending_at_cut)
    b0, b1 = _join(b0, cut_b, b1, first_piece, count, ending_at_cut)
    return a0, b0, a1, b1, tuple(np.repeat(c, count + 1) for c in carried)


def _join(v0, cut, v1, first_piece, count, ending_at_cut):
    """Start and end values of every piece, from segment start values, cut values and segment end values."""
    starts, ends = np.empty(len(v0) + len(cut)), np.empty(len(v0) + len(cut))
    starts[first_piece] = v0
    starts[ending_at_cut + 1] = cut
    ends[ending_at_cut] = cut
    ends[first_piece + count] = v1
    return starts, ends


# --- stacking -------------------------------------------------------------------------------------------------------

def _composite(drawables: list[_Drawable], flat: np.ndarray, height: int, width: int,
               fill_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The mask, and per pixel the level of the shape whose class it took (0: the fill)."""
    top = _paint_full(drawables, flat, height, width)
    classes = np.array([fill_id] + [d.class_id for d in drawables], np.uint8)   # by level; 0 is the fill
    mask = np.take(classes, top)
    pixel, level, cover = _partial_pixels(drawables, flat, top, width)
    _settle(mask.reshape(-1), top.reshape(-1), classes, pixel, level, cover)
    return mask, top


def _paint_full(drawables: list[_Drawable], flat: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per pixel, the level (drawing position from 1) of the topmost shape covering all of it; 0 where none does."""
    top = np.zeros((height, width), np.int32)
    full = flat == _ONE
    for level, d in enumerate(drawables, start=1):
        x0, y0, x1, y1 = d.box
        np.copyto(top[y0:y1, x0:x1], level, where=d.raster if d.raster is not None else _view(full, d))
    return top


def _partial_pixels(drawables, flat, top, width):
    """Image pixel index, drawing position and coverage of every partly covered pixel above its `top` shape."""
    polygons = [(level, d) for level, d in enumerate(drawables, start=1) if d.raster is None]
    if not polygons:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
    entry = np.flatnonzero((flat > 0) & (flat < _ONE))
    starts = np.array([d.block for _, d in polygons])
    table = np.array([(level, d.box[0], d.box[1], d.box[2] - d.box[0]) for level, d in polygons]).T
    owner = np.searchsorted(starts, entry, side="right") - 1
    level, x0, y0, w = table[:, owner]
    row, col = np.divmod(entry - starts[owner], w + 1)
    pixel = (y0 + row) * width + x0 + col
    keep = col < w                                     # the extra column is no pixel
    keep[keep] = level[keep] > top.reshape(-1)[pixel[keep]]   # hidden under a fully covering shape above
    return pixel[keep], level[keep], flat[entry[keep]] / _ONE


def _settle(mask, top, classes, pixel, level, cover) -> None:
    """Give partly covered pixels the class that claims most of them (see the module docstring), and set `top`
    (flat) there to the level of the shape that won (its pixel's owner; used as scratch space meanwhile).
    """
    if len(pixel) == 0:
        return
    base = top[pixel]
    alone = _alone(top, pixel)                         # one partial shape over the base: the usual case at an edge
    top[pixel] = base
    wins = alone & (cover >= 0.5)
    mask[pixel[wins]] = classes[level[wins]]
    top[pixel[wins]] = level[wins]
    if not alone.all():
        _settle_stacks(mask, top, base[~alone], classes, pixel[~alone], level[~alone], cover[~alone])


def _alone(scratch: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """True for entries whose pixel occurs once in `pixel` (cheaper than counting into a fresh image-sized array)."""
    entry = np.arange(len(pixel), dtype=scratch.dtype)
    scratch[pixel] = entry                             # the last write to a pixel wins...
    last = scratch[pixel]
    scratch[pixel[::-1]] = entry[::-1]                 # ...so writing in reverse order leaves the first
    return (last == entry) & (scratch[pixel] == entry)


def _settle_stacks(mask, top, base, classes, pixel, level, cover) -> None:
    """Pixels with several partial shapes: claim from the top down, sum per class, take the largest."""
    order = np.lexsort((-level, pixel))
    pixel, level, cover, base = pixel[order], level[order], cover[order], base[order]
    starts_group = np.concatenate([[True], pixel[1:] != pixel[:-1]])
    first = np.flatnonzero(starts_group)
    group = np.cumsum(starts_group) - 1
    covered = np.cumsum(cover)
    covered -= (covered - cover)[first][group]         # coverage from the top of this pixel's stack down
    share = np.clip(1.0 - (covered - cover), 0, 1) - np.clip(1.0 - covered, 0, 1)
    last = np.append(first[1:], len(pixel)) - 1
    base = base[first]                                 # the fully covering shape (or 0: the fill) under the stack
    group = np.concatenate([group, np.arange(len(first))])
    level = np.concatenate([level, base])
    share = np.concatenate([share, np.clip(1.0 - covered[last], 0, 1)])
    mask[pixel[first]], top[pixel[first]] = _largest_claim(group, classes[level], share, level)


def _largest_claim(group, class_id, share, level) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the class with the largest summed share (ties go to the class with the higher drawing level), and
    the highest level of that class in the group."""
    key = group * 256 + class_id
    order = np.lexsort((-level, key))                  # within one (group, class), the highest level first
    key, share, level = key[order], share[order], level[order]
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    total, top_level, owner = np.add.reduceat(share, first), level[first], key[first] // 256
    best = np.lexsort((top_level, total, owner))       # per group ascending; its last entry wins
    best = best[np.append(owner[best][1:] != owner[best][:-1], True)]
    return (key[first][best] % 256).astype(np.uint8), top_level[best]


# --- hidden shapes --------------------------------------------------------------------------------------------------
_HIDDEN_LISTED = 5      # groups of hidden shapes named in one message


def _covered_problem(drawables: list[_Drawable], flat: np.ndarray, mask: np.ndarray, owner: np.ndarray,
                     shapes) -> list[str]:
    """One message naming the shapes whose class has no pixel of the mask where they lie because shapes of other
    classes drawn after them took them all (a fork under the dining table drawn after it), grouped by class and by
    what covers them; a shape under others of its own class loses the mask nothing. Costs one count over the owner
    map, and a look at the pixels of the shapes that own none."""
    owned = np.bincount(owner.ravel(), minlength=len(drawables) + 1) > 0
    groups: dict[tuple, list[int]] = {}
    for level in (np.flatnonzero(~owned[1:]) + 1).tolist():
        d = drawables[level - 1]
        x0, y0, x1, y1 = d.box
        footprint = d.raster if d.raster is not None else _view(flat, d) > 0
        if (mask[y0:y1, x0:x1][footprint] == d.class_id).any():
            continue
        over = np.unique(owner[y0:y1, x0:x1][footprint])
        later = [drawables[o - 1].index for o in over.tolist() if o > level and drawables[o - 1].class_id != d.class_id]
        if later:
            covers = tuple(dict.fromkeys(shapes[i].label for i in later))
            groups.setdefault((shapes[d.index].label, covers), []).append(d.index)
    if not groups:
        return []
    total = sum(len(indices) for indices in groups.values())
    if total == 1:
        (label, covers), (index,) = next(iter(groups.items()))
        found = (f"shape {index} ({label!r}) is entirely covered by shapes drawn after it "
                 f"({', '.join(map(repr, covers))}): it has no pixel in the mask")
    else:
        parts = [f"{'shape' if len(indices) == 1 else 'shapes'} {_numbers(indices)} ({label!r}) under "
                 f"{', '.join(map(repr, covers))}" for (label, covers), indices in groups.items()][:_HIDDEN_LISTED]
        more = f"; and {len(groups) - _HIDDEN_LISTED} more group(s)" if len(groups) > _HIDDEN_LISTED else ""
        found = (f"{total} of {len(shapes)} shapes are entirely covered by shapes drawn after them and have no pixel "
                 f"in the mask: {'; '.join(parts)}{more}")
    return [found + " (a shape drawn later lies on top: draw the covered ones later, or cut them out of the shape "
            "that covers them)"]


def _numbers(indices: list[int], shown: int = 10) -> str:
    listed = ", ".join(map(str, indices[:shown]))
    return listed + (f" and {len(indices) - shown} more" if len(indices) > shown else "")
