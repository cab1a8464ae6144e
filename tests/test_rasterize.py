"""Tests for streetseg_jax.labels.rasterize: exact coverage, majority by area, stacking order, holes, clipping."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streetseg_jax.labels.rasterize import coordinate_limit, coverage, rasterize
from streetseg_jax.labels.shapes import Shape

ROAD, SIDEWALK, BUILDING = 3, 4, 5


def box(x0, y0, x1, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def star_polygon(rng, centre, radius, vertices) -> np.ndarray:
    """Simple (non-self-intersecting) polygon: sorted angles around a centre, radii 50-100% of `radius`."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * rng.uniform(0.5, 1.0, vertices)
    return np.asarray(centre) + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def shoelace(ring) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


# --- an independent reference: clip the polygon to each pixel square (Sutherland-Hodgman) and measure the area -------

def clip_to_square(points, x0, y0, x1, y1):
    for axis, limit, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        out = []
        for a, b in zip(points, points[1:] + points[:1]):
            a_in = (a[axis] >= limit) if keep_above else (a[axis] <= limit)
            b_in = (b[axis] >= limit) if keep_above else (b[axis] <= limit)
            if a_in:
                out.append(a)
            if a_in != b_in:
                t = (limit - a[axis]) / (b[axis] - a[axis])
                out.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
        points = out
        if not points:
            return []
    return points


def reference_coverage(ring, height, width) -> np.ndarray:
    points = [tuple(p) for p in ring]
    out = np.zeros((height, width))
    for r in range(height):
        for c in range(width):
            clipped = clip_to_square(points, c, r, c + 1, r + 1)
            out[r, c] = shoelace(np.array(clipped)) if len(clipped) >= 3 else 0.0
    return out


# --- exact coverage --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_coverage_equals_clipped_area_per_pixel(seed):
    rng = np.random.default_rng(seed)
    ring = star_polygon(rng, rng.uniform(-4, 28, 2), rng.uniform(3, 18), int(rng.integers(3, 16)))
    if seed % 2:
        ring = ring[::-1]                                  # orientation must not matter
    got = coverage(Shape("x", ring), 20, 24)
    np.testing.assert_allclose(got, reference_coverage(ring, 20, 24), atol=1e-9)


def test_square_on_pixel_edges_rasterizes_exactly():
    result = rasterize([(ROAD, Shape("road", box(10, 5, 20, 17)))], 30, 40)
    expected = np.zeros((30, 40), np.uint8)
    expected[5:17, 10:20] = ROAD
    np.testing.assert_array_equal(result.mask, expected)
    assert result.problems == []


def test_pixel_takes_the_class_only_when_it_covers_at_least_half():
    # x from 2.5 (pixel 2 half covered: the shape wins the tie) to 7.4 (pixel 7 40% covered: fill).
    mask = rasterize([(1, Shape("a", box(2.5, 0, 7.4, 3)))], 3, 10).mask
    assert mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0]


# A hard per-pixel decision rounds every boundary pixel by up to half a pixel, so a small jagged polygon's pixel
# count scatters around its area (std ~0.35% at 400-2000 px, unbiased); the coverage itself is exact.

def random_inside_polygon(rng, size, radius, vertices):
    return star_polygon(rng, rng.uniform(radius, size - radius, 2), radius, vertices)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), vertices=st.integers(5, 40), radius=st.floats(12, 45))
def test_class_area_matches_polygon_area(seed, vertices, radius):
    ring = random_inside_polygon(np.random.default_rng(seed), 100, radius, vertices)
    area = shoelace(ring)
    assert coverage(Shape("tree", ring), 100, 100).sum() == pytest.approx(area, rel=1e-9)
    if area >= 400:
        pixels = (rasterize([(2, Shape("tree", ring))], 100, 100).mask == 2).sum()
        assert abs(pixels - area) <= (0.01 if area >= 2000 else 0.025) * area


def test_class_area_matches_polygon_area_seeded():
    rng = np.random.default_rng(7)
    errors, areas, pixels = [], [], []
    while len(areas) < 150:
        ring = random_inside_polygon(rng, 100, rng.uniform(11.3, 45), int(rng.integers(5, 41)))
        area = shoelace(ring)
        if area >= 400:
            count = (rasterize([(6, Shape("sky", ring))], 100, 100).mask == 6).sum()
            errors.append(abs(count - area) / area)
            areas.append(area)
            pixels.append(count)
    errors, areas = np.array(errors), np.array(areas)
    assert (errors[areas >= 2000] <= 0.01).all()
    assert np.mean(errors <= 0.01) >= 0.95 and errors.max() <= 0.025
    assert abs(sum(pixels) / areas.sum() - 1) <= 0.002          # no bias: rounding goes both ways


# --- what may appear where -------------------------------------------------------------------------------------------

def random_scene(rng, count, height, width):
    items = []
    for k in range(count):
        radius = rng.uniform(3, width / 3)
        ring = star_polygon(rng, rng.uniform((0, 0), (width, height)), radius, int(rng.integers(5, 20)))
        items.append((int(rng.integers(0, 6)), Shape("region", ring, z_order=int(rng.integers(0, 3)))))
    return items


@pytest.mark.parametrize("seed", range(4))
def test_every_label_comes_from_a_shape_covering_that_pixel(seed):
    rng = np.random.default_rng(seed)
    items = random_scene(rng, 15, 48, 64)
    mask = rasterize(items, 48, 64, fill_id=7).mask
    allowed = np.zeros((256, 48, 64), bool)
    allowed[7] = True
    for class_id, shape in items:
        allowed[class_id] |= coverage(shape, 48, 64) > 0
    assert np.take_along_axis(allowed, mask[None].astype(np.intp), 0).all()


def plain_rule(items, height, width, fill_id=0):
    """The module docstring's rule written plainly: claim top-down, sum per class, largest wins (upper on ties)."""
    order = sorted(range(len(items)), key=lambda i: items[i][1].z_order)
    unclaimed = np.ones((height, width))
    claimed, highest = {}, {}
    for level, i in reversed(list(enumerate(order))):
        class_id, shape = items[i]
        cover = coverage(shape, height, width)
        share = np.minimum(np.where(cover > 1 - 1e-9, 1.0, np.where(cover < 1e-9, 0.0, cover)), unclaimed)
        unclaimed -= share
        claimed[class_id] = claimed.get(class_id, 0) + share
        highest[class_id] = np.where((share > 0) & (highest.get(class_id, -1) < 0), level, highest.get(class_id, -1))
    claimed[fill_id] = claimed.get(fill_id, 0) + unclaimed
    highest.setdefault(fill_id, np.full((height, width), -1))
    ids = list(claimed)
    totals = np.stack([claimed[c] for c in ids])
    levels = np.where(totals == totals.max(axis=0), np.stack([highest[c] for c in ids]), -2)
    ranked = np.sort(totals, axis=0)
    return np.array(ids, np.uint8)[levels.argmax(axis=0)], ranked[-1] - ranked[-2]


@pytest.mark.parametrize("seed", range(3))
def test_fast_path_matches_the_plain_rule(seed):
    rng = np.random.default_rng(100 + seed)
    items = random_scene(rng, 14, 40, 56)
    mask = rasterize(items, 40, 56).mask
    expected, margin = plain_rule(items, 40, 56)
    clear = margin > 1e-9                                # exact ties may break either way in floating point
    np.testing.assert_array_equal(mask[clear], expected[clear])


def test_coverage_beats_id_averaging_at_a_road_building_edge():
    # Road below a slanted line, building above it: they share the edge exactly.
    road = np.array([[0, 12.3], [40, 7.9], [40, 20], [0, 20]])
    building = np.array([[0, 0], [40, 0], [40, 7.9], [0, 12.3]])
    result = rasterize([(ROAD, Shape("road", road)), (BUILDING, Shape("building", building))], 20, 40)
    assert set(np.unique(result.mask).tolist()) == {ROAD, BUILDING}   # averaging 3 and 5 would give sidewalk=4
    road_share = coverage(Shape("road", road), 20, 40)
    clear = np.abs(road_share - 0.5) > 1e-9
    np.testing.assert_array_equal((result.mask == ROAD)[clear], (road_share > 0.5)[clear])
    assert SIDEWALK not in result.mask


# --- stacking, holes, clipping, ignore -------------------------------------------------------------------------------

def test_later_shape_wins_on_overlap():
    items = [(1, Shape("a", box(0, 0, 10, 10))), (2, Shape("b", box(5, 0, 15, 10)))]
    mask = rasterize(items, 10, 20).mask
    assert (mask[:, 0:5] == 1).all() and (mask[:, 5:15] == 2).all() and (mask[:, 15:] == 0).all()


def test_z_order_overrides_drawing_order():
    items = [(1, Shape("a", box(0, 0, 10, 10), z_order=2)), (2, Shape("b", box(5, 0, 15, 10), z_order=1))]
    mask = rasterize(items, 10, 20).mask
    assert (mask[:, 0:10] == 1).all() and (mask[:, 10:15] == 2).all()


def test_equal_z_order_keeps_list_order():
    items = [(1, Shape("a", box(0, 0, 10, 10), z_order=1)), (2, Shape("b", box(5, 0, 15, 10), z_order=1)),
             (3, Shape("c", box(0, 0, 20, 10), z_order=0))]
    mask = rasterize(items, 10, 20).mask
    assert (mask[:, 0:5] == 1).all() and (mask[:, 5:15] == 2).all() and (mask[:, 15:] == 3).all()


def test_holes_are_cut_out_and_show_what_lies_below():
    ground = (ROAD, Shape("road", box(0, 0, 30, 30)))
    ring = (BUILDING, Shape("building", box(5, 5, 25, 25), holes=(box(10, 10, 20, 20),)))
    mask = rasterize([ground, ring], 30, 30).mask
    assert (mask[10:20, 10:20] == ROAD).all()
    assert (mask[5:25, 5:10] == BUILDING).all() and (mask[5:10, 5:25] == BUILDING).all()
    assert (mask[:5] == ROAD).all()
    assert (mask == BUILDING).sum() == 20 * 20 - 10 * 10


def test_slanted_hole_area():
    outer = np.array([[2.2, 1.7], [58.1, 4.4], [55.3, 47.9], [3.4, 44.2]])
    hole = np.array([[15.5, 12.5], [40.2, 15.1], [30.7, 35.3]])
    mask = rasterize([(1, Shape("a", outer, holes=(hole,)))], 50, 60).mask
    area = shoelace(outer) - shoelace(hole)
    assert abs((mask == 1).sum() - area) <= 0.01 * area


def test_points_outside_the_image_are_clipped():
    items = [(1, Shape("a", box(-10, -7, 15, 8))), (2, Shape("b", np.array([[25, 2], [300, 2], [25, 900]])))]
    mask = rasterize(items, 20, 30).mask
    assert (mask[:8, :15] == 1).all() and (mask[8:, :15] == 0).all() and (mask[:8, 15:25] == 0).all()
    expected = coverage(items[1][1], 20, 30) >= 0.5
    np.testing.assert_array_equal(mask == 2, expected)
    assert (mask[2:, 25:] == 2).all() and (mask[:2] != 2).all()
    np.testing.assert_allclose(coverage(items[0][1], 20, 30).sum(), 15 * 8)


def test_degenerate_polygons_are_reported_and_skipped():
    items = [
        (1, Shape("line", np.array([[0, 0], [5, 5], [10, 10]]))),
        (2, Shape("two points", np.array([[1, 1], [6, 2], [1, 1]]))),
        (3, Shape("too short", np.array([[1, 1], [6, 2]]))),
        (4, Shape("not a number", np.array([[1, 1], [np.nan, 2], [5, 5]]))),
        (5, Shape("far away", box(100, 100, 120, 120))),
        (6, Shape("good", box(2, 2, 8, 8))),
    ]
    result = rasterize(items, 10, 10)
    assert (result.mask[2:8, 2:8] == 6).all() and (result.mask == 6).sum() == 36
    assert len(result.problems) == 5
    for index, (_, shape) in enumerate(items[:5]):
        assert any(p.startswith(f"shape {index} ({shape.label!r})") for p in result.problems)
    assert "zero area" in result.problems[0] and "fewer than 3 distinct points" in result.problems[1]


def test_coordinates_out_of_range_are_skipped_without_overflow():
    """Near 1e308 the edge cuts overflowed (inf, then a wrong mask with a numpy warning); beyond coordinate_limit
    a ring is skipped and reported, as a non-finite one is. Far outside but within the limit still draws exactly."""
    limit = coordinate_limit(10, 10)
    huge = np.array([[-1e308, -1e308], [1e308, 1e308], [0, 5]])
    items = [(1, Shape("huge", huge)), (2, Shape("past", box(0, 0, 5, limit * 1.01))),
             (3, Shape("hole", box(0, 0, 10, 10), holes=(huge,))), (4, Shape("far", box(-limit, 6, 10, 10)))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = rasterize(items, 10, 10)
    assert (result.mask[:6] == 3).all() and (result.mask[6:] == 4).all()
    assert [p.split(":")[0] for p in result.problems] == ["shape 0 ('huge')", "shape 1 ('past')", "shape 2 ('hole')"]
    assert all("out of range" in p for p in result.problems)


def test_degenerate_hole_is_reported_and_the_shape_still_drawn():
    shape = Shape("road", box(0, 0, 10, 10), holes=(np.array([[2, 2], [4, 4]]),))
    result = rasterize([(ROAD, shape)], 10, 10)
    assert (result.mask == ROAD).all()
    assert result.problems and "hole 0" in result.problems[0]


def test_figure_eight_is_drawn_not_reported():
    bowtie = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], np.float64)   # zero net area, but not degenerate
    result = rasterize([(1, Shape("bowtie", bowtie))], 10, 10)
    assert result.problems == []
    cover = coverage(Shape("bowtie", bowtie), 10, 10)
    assert cover.sum() == pytest.approx(50)                 # both lobes, 25 px each
    np.testing.assert_array_equal(result.mask == 1, cover >= 0.5)


@pytest.mark.parametrize("inner_reversed", [False, True])
def test_a_keyhole_leaves_its_hole_whichever_way_the_hole_runs(inner_reversed):
    # LabelMe users draw a hole by a slit: out round the square, in to the hole, round it, back. Run the same way
    # as the outside it has winding number 2: PIL (labelme2voc), pycocotools and Qt all leave it a hole.
    outer, inner = box(10, 10, 40, 40), box(20, 20, 30, 30)
    inner = inner[::-1] if inner_reversed else inner
    ring = np.concatenate([outer, outer[:1], inner, inner[:1]])
    mask = rasterize([(ROAD, Shape("road", ring))], 50, 50).mask
    assert (mask[20:30, 20:30] == 0).all()
    assert (mask[10:40, 10:40] == ROAD).sum() == 30 * 30 - 10 * 10
    from PIL import Image, ImageDraw
    drawn = Image.new("L", (50, 50))
    ImageDraw.Draw(drawn).polygon([tuple(p) for p in ring], fill=ROAD)
    assert (np.asarray(drawn)[21:29, 21:29] == 0).all()      # PIL's own fill, away from its edge convention


def test_overlapping_holes_and_a_hole_listed_twice_cut_their_union():
    holes = [box(10, 10, 30, 30), box(20, 20, 40, 40), box(10, 10, 30, 30)]
    mask = rasterize([(ROAD, Shape("road", box(0, 0, 50, 50), holes=holes))], 50, 50).mask
    union = np.zeros((50, 50), bool)
    union[10:30, 10:30] = union[20:40, 20:40] = True
    np.testing.assert_array_equal(mask == ROAD, ~union)


def test_ignore_shapes_get_the_ignore_id():
    items = [(ROAD, Shape("road", box(0, 0, 20, 10))), (BUILDING, Shape("__ignore__", box(5, 0, 10, 10), ignore=True))]
    mask = rasterize(items, 10, 20, ignore_id=250).mask
    assert (mask[:, 5:10] == 250).all() and (mask[:, :5] == ROAD).all() and (mask[:, 10:] == ROAD).all()


def test_raster_shapes_are_stacked_like_polygons():
    blob = np.zeros((10, 20), bool)
    blob[2:6, 3:15] = True
    items = [(ROAD, Shape("road", box(0, 0, 20, 10))), (2, Shape("grass", np.zeros((0, 2)), raster=blob)),
             (BUILDING, Shape("building", box(10, 0, 20, 10)))]
    mask = rasterize(items, 10, 20).mask
    assert (mask[2:6, 3:10] == 2).all() and (mask[:, 10:] == BUILDING).all() and (mask[7:, :10] == ROAD).all()


def test_fill_id_and_bad_ids():
    assert (rasterize([], 4, 5, fill_id=9).mask == 9).all()
    with pytest.raises(ValueError, match="uint8"):
        rasterize([(256, Shape("a", box(0, 0, 2, 2)))], 4, 5)
