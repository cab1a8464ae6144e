"""The synthetic street scenes: determinism, files, class coverage, and that colour alone cannot label them."""
import io

import numpy as np
import pytest
from PIL import Image

from streetseg_jax.data import synthetic
from streetseg_jax.data.synthetic import generate_scene, write_synthetic
from streetseg_jax.labels.formats.voc import read_voc
from streetseg_jax.labels.label_map import default_label_map
from streetseg_jax.labels.rasterize import rasterize
from streetseg_jax.labels.shapes import Shape
from streetseg_jax.labels.validate import self_intersection

LABELS = default_label_map()
H, W = 90, 120          # small scenes keep the tests fast; the geometry scales with the size


def label_mask(objects, height, width) -> np.ndarray:
    """The label mask the dataset builder will make: the project's rasterizer, later polygons on top."""
    shapes = [(LABELS.id_of(name), Shape(name, poly)) for name, polygons in objects for poly in polygons]
    result = rasterize(shapes, height, width)
    assert result.problems == []                    # no degenerate or off-image shapes
    return result.mask


@pytest.fixture(scope="module")
def scenes():
    """(image, objects, mask) for 40 seeds."""
    out = []
    for seed in range(40):
        image, objects = generate_scene(seed, H, W)
        out.append((image, objects, label_mask(objects, H, W)))
    return out


def test_same_seed_same_scene_and_different_seeds_differ():
    image_a, objects_a = generate_scene(7, H, W)
    image_b, objects_b = generate_scene(7, H, W)
    assert np.array_equal(image_a, image_b)
    assert [name for name, _ in objects_a] == [name for name, _ in objects_b]
    for (_, polys_a), (_, polys_b) in zip(objects_a, objects_b):
        assert all(np.array_equal(p, q) for p, q in zip(polys_a, polys_b))
    image_c, objects_c = generate_scene(8, H, W)
    assert not np.array_equal(image_a, image_c)
    image_d, _ = generate_scene((7, 1), H, W)          # seed sequences work too
    assert not np.array_equal(image_a, image_d)


def test_image_and_polygons_are_well_formed(scenes):
    for image, objects, _ in scenes:
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert 10 <= len(objects) <= 60
        for name, polygons in objects:
            assert LABELS.id_of(name) is not None, name
            for poly in polygons:
                assert poly.ndim == 2 and poly.shape[1] == 2 and 3 <= len(poly) <= 60
                assert np.all(poly >= 0) and np.all(poly[:, 0] <= W) and np.all(poly[:, 1] <= H)


def test_no_outline_crosses_itself():
    """`labels check --strict` passes on our own scenes: where the road bends a barrier's far end round, its outline
    crossed itself (the first three default-size scenes of write_synthetic each had one)."""
    for index in (1, 2, 3):
        _, objects = generate_scene((0, index), 360, 480)
        crossing = [(name, self_intersection(poly)) for name, polygons in objects for poly in polygons]
        assert [(name, where) for name, where in crossing if where is not None] == [], index


def test_default_size_scene_has_a_plausible_number_of_objects():
    image, objects = generate_scene(0)
    assert image.shape == (360, 480, 3)
    assert 15 <= len(objects) <= 60


def test_every_class_appears_and_most_scenes_hold_the_street_classes(scenes):
    present = np.array([[(mask == k).any() for k in range(LABELS.num_classes)] for _, _, mask in scenes])
    assert present[:12].any(axis=0).all(), "every class appears within a dozen scenes"
    for name in ("road", "sky", "building", "sidewalk"):
        assert present[:, LABELS.id_of(name)].mean() >= 0.75, name
    assert present[:, LABELS.id_of("concrete")].mean() >= 0.3


def test_layout_is_consistent_sky_above_road(scenes):
    sky, road = LABELS.id_of("sky"), LABELS.id_of("road")
    for _, _, mask in scenes:
        rows = np.arange(H)[:, None]
        if (mask == sky).any() and (mask == road).any():
            assert rows.repeat(W, 1)[mask == sky].mean() < rows.repeat(W, 1)[mask == road].mean()


def test_class_colours_vary_between_scenes(scenes):
    """The mean colour of a class changes a lot from scene to scene: instances get their own colours."""
    for name in ("road", "building", "sky", "tree", "sidewalk"):
        k = LABELS.id_of(name)
        means = np.array([image[mask == k].mean(axis=0) for image, _, mask in scenes if (mask == k).sum() > 50])
        assert len(means) >= 10, name
        assert means.std(axis=0).max() > 15.0, (name, means.std(axis=0))


def test_colour_alone_cannot_label_the_scenes(scenes):
    """A colour lookup (best class per quantised colour, learnt on 30 scenes) does badly on 10 others, and many
    colours are shared between classes: the model must use shape and context."""
    def codes(image):
        q = image // 32
        return (q[..., 0].astype(int) * 8 + q[..., 1]) * 8 + q[..., 2]
    k = LABELS.num_classes
    table = np.zeros((512, k))
    for image, _, mask in scenes[:30]:
        np.add.at(table, (codes(image).ravel(), mask.ravel()), 1)
    shared = (table > 0.1 * table.sum(axis=1, keepdims=True)).sum(axis=1) >= 2
    assert (table[shared].sum() / table.sum()) > 0.3, "colours shared by two classes cover many pixels"
    confusion = np.zeros((k, k))
    for image, _, mask in scenes[30:]:
        np.add.at(confusion, (mask.ravel(), table.argmax(axis=1)[codes(image)].ravel()), 1)
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    assert np.nanmean(iou) < 0.4, iou


def test_image_is_painted_from_the_returned_polygons():
    """The label polygons are painted into the image in the returned order, with the same vertices, and the class
    painted at each pixel is the label there except along edges (at 180x240, where edges are few enough)."""
    height, width = 2 * H, 2 * W
    for seed in range(3):
        scene = synthetic._build(np.random.default_rng(seed), height, width)
        items = synthetic._drawing_order(scene)
        objects, strokes = synthetic._finish(items, width, height)
        stroke_ids = [id(poly) for poly, _ in strokes]
        positions = [stroke_ids.index(id(poly)) for _, polys in objects for poly in polys]
        assert positions == sorted(positions)
        class_of_style = np.zeros(256, np.uint8)
        for item in items:
            for _, style in item.parts + item.paints:
                class_of_style[style] = LABELS.id_of(item.name)
        subpixels = class_of_style[synthetic._paint_ids(strokes, height, width)].reshape(height, 2, width, 2)
        votes = np.stack([(subpixels == k).sum(axis=(1, 3)) for k in range(LABELS.num_classes)], axis=-1)
        agree = votes.argmax(axis=-1) == label_mask(objects, height, width)
        assert agree.mean() > 0.97, agree.mean()


def test_write_synthetic_files_parse_back_and_match_generate_scene(tmp_path):
    stems = write_synthetic(tmp_path, num_images=3, seed=5, height=H, width=W, num_workers=1)
    assert stems == ["street_0001", "street_0002", "street_0003"]
    for index, stem in enumerate(stems, start=1):
        image, objects = generate_scene((5, index), H, W)
        png = Image.open(tmp_path / "images" / f"{stem}.png")
        assert png.mode == "RGB" and np.array_equal(np.asarray(png), image)
        annotation = read_voc(tmp_path / "annotations" / f"{stem}.xml")
        assert (annotation.width, annotation.height, annotation.file_name) == (W, H, f"{stem}.png")
        flat = [(name, poly) for name, polys in objects for poly in polys]
        assert [s.label for s in annotation.shapes] == [name for name, _ in flat]
        for shape, (_, poly) in zip(annotation.shapes, flat):
            np.testing.assert_allclose(shape.exterior, poly, atol=1e-9)
        read_back = rasterize([(LABELS.id_of(s.label), s) for s in annotation.shapes], H, W).mask
        assert np.array_equal(read_back, label_mask(objects, H, W))
    assert not list(tmp_path.rglob("*.tmp"))


def test_write_synthetic_with_workers_gives_identical_bytes(tmp_path):
    write_synthetic(tmp_path / "a", num_images=4, seed=2, height=H, width=W, num_workers=1)
    write_synthetic(tmp_path / "b", num_images=4, seed=2, height=H, width=W, num_workers=2)
    for path in sorted((tmp_path / "a").rglob("street_*")):
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert path.read_bytes() == twin.read_bytes(), path.name


def test_png_bytes_decode_exactly():
    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(synthetic.png_bytes(image)))), image)
