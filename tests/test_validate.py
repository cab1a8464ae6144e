"""The validation report (labels/validate.py): geometry checks, images, labels, class statistics, output."""
from __future__ import annotations

import io
import json
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streetseg_jax.labels.stats import class_pixel_counts, median_frequency_weights
from streetseg_jax.labels.convert import annotation_to_mask, rasterize_with_unlabelled, read_mask_png
from streetseg_jax.labels.label_map import LabelMap, default_label_map
from streetseg_jax.labels.shapes import Annotation, Shape, image_key
from streetseg_jax.labels.validate import (CheckOptions, check_file, duplicate_keys, kept_mask_path, locate_images,
                                           self_intersection, self_intersections, validate, write_json)

ROAD, SKY, BUILDING = 3, 6, 5


def ring(*points) -> np.ndarray:
    return np.asarray(points, np.float64)


def rect(x0, y0, x1, y1) -> np.ndarray:
    return ring((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def annotation(*shapes, width=40, height=30, source="a.xml", file_name="a.png", **kwargs) -> Annotation:
    return Annotation(Path(source), file_name, width, height, list(shapes), **kwargs)


def save_png(path: Path, width: int, height: int, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (10, 20, 30)).save(path, **save)
    return path


# --- self-intersection -------------------------------------------------------------------------------------------
def brute_force_first_crossing(points: np.ndarray):
    """Every pair of non-adjacent edges, the plain way (the reference for the vectorised check)."""
    n = len(points)
    orient = lambda p, q, r: (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])  # noqa: E731
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            a, b, c, d = points[i], points[(i + 1) % n], points[j], points[(j + 1) % n]
            if orient(a, b, c) * orient(a, b, d) < 0 and orient(c, d, a) * orient(c, d, b) < 0:
                return i, j
    return None


def test_simple_rings_do_not_self_intersect():
    assert self_intersection(rect(0, 0, 10, 10)) is None
    assert self_intersection(np.vstack([rect(0, 0, 10, 10), [[0, 0]]])) is None     # closed explicitly
    assert self_intersection(ring((0, 0), (10, 0), (10, 0), (10, 10), (0, 10))) is None   # repeated point
    # A vertex touching another edge (a keyhole) is not a crossing.
    assert self_intersection(ring((0, 0), (10, 0), (10, 10), (5, 0), (0, 10))) is None


def test_bow_tie_crossing_and_where():
    edges_a, edges_b, (x, y) = self_intersection(ring((0, 0), (10, 10), (10, 0), (0, 10)))
    assert (edges_a, edges_b) == (0, 2) and (x, y) == pytest.approx((5, 5))


def test_vectorised_check_matches_brute_force_on_random_rings():
    rng = np.random.default_rng(0)
    rings = []
    for _ in range(300):
        points = rng.integers(0, 15, (rng.integers(4, 11), 2)).astype(np.float64)
        points = points[np.any(points != np.roll(points, -1, axis=0), axis=1)]
        if len(points) >= 4:
            rings.append(points)
    found = self_intersections(rings)
    for points, crossing in zip(rings, found):
        expected = brute_force_first_crossing(points)
        assert (crossing[:2] if crossing else None) == expected, points.tolist()
    assert 0 < sum(c is not None for c in found) < len(rings)


# --- one file ----------------------------------------------------------------------------------------------------
def test_clean_annotation_has_no_problems(tmp_path):
    image = save_png(tmp_path / "a.png", 40, 30)
    report = check_file(annotation(Shape("road", rect(0, 15, 40, 30)), image_path=image), default_label_map(),
                        CheckOptions())
    assert report.errors == [] and report.warnings == []
    assert report.class_pixels[ROAD] == 600 and report.class_pixels[0] == 600 and report.unlabelled_pixels == 600


def test_geometry_warnings(tmp_path):
    image = save_png(tmp_path / "a.png", 40, 30)
    shapes = [Shape("road", rect(-5, 15, 40, 35)),                         # partly outside
              Shape("sky", ring((0, 0), (10, 10), (10, 0), (0, 10))),      # bow tie
              Shape("sky", ring((1, 1), (5, 5))),                          # two points
              Shape("sky", rect(50, 50, 60, 60))]                          # wholly outside
    report = check_file(annotation(*shapes, image_path=image), default_label_map(), CheckOptions())
    text = "\n".join(report.warnings)
    assert "shape 0 ('road'): 3 of 4 points outside the 40x30 image (clipped)" in text
    assert "shape 1 ('sky'): self-intersecting (edges 0 and 2 cross near (5.0, 5.0))" in text
    assert "shape 2 ('sky'): has fewer than 3 distinct points" in text
    assert "shape 3 ('sky'): lies entirely outside" in text and "shape 3 ('sky'): 4 of" not in text
    assert report.errors == []


def test_shapes_that_later_shapes_cover_entirely_are_named_once_per_image():
    # A fork and two broccoli under a table drawn after them (COCO draws in file order); a car half under the
    # table and a sky square whose edge pixels the table does not take are visible.
    shapes = [Shape("fork", rect(2, 2, 6, 6)), Shape("broccoli", rect(3, 8, 7.5, 12)), Shape("car", rect(0, 0, 40, 4)),
              Shape("broccoli", rect(10, 10, 12, 12)), Shape("sky", rect(25, 5, 35, 15)),
              Shape("table", rect(1.5, 1, 30.5, 20)), Shape("road", rect(0, 20, 40, 30))]
    label_map = LabelMap.from_dict({"classes": [{"id": i, "name": n, "color": [i, i, i]} for i, n in enumerate(
        ["background", "fork", "broccoli", "car", "sky", "table", "road"])]})
    report = check_file(annotation(*shapes), label_map, CheckOptions(check_images=False))
    assert [w for w in report.warnings if "covered" in w] == [
        "3 of 7 shapes are entirely covered by shapes drawn after them and have no pixel in the mask: shape 0 "
        "('fork') under 'table'; shapes 1, 3 ('broccoli') under 'table' (a shape drawn later lies on top: draw the "
        "covered ones later, or cut them out of the shape that covers them)"]
    assert report.class_pixels[1] == report.class_pixels[2] == 0 < report.class_pixels[3]
    alone = check_file(annotation(*shapes[:1], shapes[5]), label_map, CheckOptions(check_images=False))
    assert alone.warnings == ["shape 0 ('fork') is entirely covered by shapes drawn after it ('table'): it has no "
                              "pixel in the mask (a shape drawn later lies on top: draw the covered ones later, or "
                              "cut them out of the shape that covers them)"]
    on_top = check_file(annotation(shapes[5], shapes[0]), label_map, CheckOptions(check_images=False))
    same_class = check_file(annotation(Shape("table", rect(2, 2, 6, 6)), shapes[5]), label_map,
                            CheckOptions(check_images=False))          # the mask loses nothing
    # a car owning no pixel, under a car and a table drawn after it: its class is still there (33 of 40 synthetic
    # scenes were said to hide such shapes)
    still_seen = check_file(annotation(Shape("car", rect(2, 2, 6, 6)), Shape("car", rect(2, 2, 6, 5)),
                                       Shape("table", rect(2, 5, 6, 6))), label_map, CheckOptions(check_images=False))
    assert on_top.warnings == [] and same_class.warnings == [] and still_seen.warnings == []


def test_unknown_labels_are_errors_or_warnings():
    shapes = [Shape("car", rect(0, 0, 5, 5)), Shape("road", rect(0, 5, 40, 30)), Shape("truck", rect(5, 5, 9, 9))]
    options = CheckOptions(check_images=False)
    report = check_file(annotation(*shapes), default_label_map(), options)
    assert report.errors == ["unknown class name(s) 'car', 'truck': not in the label map (add them as classes or "
                             "aliases, or use --unknown ignore)"]
    report = check_file(annotation(*shapes), default_label_map(), CheckOptions(unknown="ignore", check_images=False))
    assert report.errors == [] and "painted with the ignore id" in report.warnings[0]
    assert report.ignore_pixels == 25 + 16       # the car's and the truck's squares


def test_class_colours_that_look_alike_are_a_note_of_the_export_not_a_warning():
    """Cityscapes' official bus [0, 60, 100] and train [0, 80, 100] failed `check --strict`, though only pictures
    are affected, and the mending asked for (another colour) would stop the export's colour masks from reading."""
    classes = [{"id": i, "name": name, "color": color}
               for i, (name, color) in enumerate([("background", [0, 0, 0]), ("road", [220, 220, 0]),
                                                  ("sky", [220, 220, 5])])]
    label_map = LabelMap.from_dict({"classes": classes})
    shapes = [Shape("road", rect(0, 0, 40, 15)), Shape("sky", rect(0, 15, 40, 30))]
    report = validate([annotation(*shapes)], label_map, options=CheckOptions(check_images=False))
    assert report.errors == [] and report.warnings == []
    assert report.notes() == label_map.colour_clashes() != []
    assert report.to_dict()["notes"] == report.notes()
    assert f"note: {report.source}: {label_map.colour_clashes()[0]}" in report.text()


def test_empty_annotation_is_a_warning():
    report = check_file(annotation(), default_label_map(), CheckOptions(check_images=False))
    assert report.warnings == ["no shapes: the whole image gets the fill class"]
    assert report.unlabelled_pixels == 1200


def test_image_size_must_match_after_exif_orientation(tmp_path):
    label_map = default_label_map()
    wrong = save_png(tmp_path / "wrong.png", 41, 30)
    report = check_file(annotation(source="w.xml", image_path=wrong), label_map, CheckOptions())
    assert report.errors == ["wrong.png is 41x30 but w.xml says 40x30"]
    # A JPEG stored 30 wide and 40 high with orientation 6 (rotate 90) shows 40x30: fine for a 40x30 annotation.
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = save_png(tmp_path / "turned.jpg", 30, 40, exif=exif.tobytes())
    assert check_file(annotation(image_path=turned), label_map, CheckOptions()).errors == []
    for decode in (False, True):
        report = check_file(annotation(width=30, height=40, source="t.xml", image_path=turned), label_map,
                            CheckOptions(decode_images=decode))
        assert report.errors == ["turned.jpg is 40x30 (after its EXIF orientation) but t.xml says 30x40"]


def test_shapes_outside_a_turned_photo_say_it_may_have_been_drawn_as_stored(tmp_path):
    """Shapes drawn on the stored photo of one shown turned gave only "points outside ... (clipped)" warnings."""
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = save_png(tmp_path / "turned.jpg", 30, 40, exif=exif.tobytes())     # shown 40x30
    stored = Shape("road", rect(2, 2, 28, 38))      # in the stored 30x40 frame: runs out of the 40x30 one
    report = check_file(annotation(stored, image_path=turned), default_label_map(), CheckOptions())
    assert report.warnings[-1].startswith("the photo is stored turned (EXIF orientation) and shapes run outside it")
    plain = save_png(tmp_path / "plain.jpg", 40, 30)
    report = check_file(annotation(stored, image_path=plain), default_label_map(), CheckOptions())
    assert "points outside" in report.warnings[0] and not any("turned" in w for w in report.warnings)


def test_a_png_whose_exif_comes_after_its_pixels_is_taken_as_stored_everywhere(tmp_path):
    """Such an eXIf chunk turned the decoded photo (build, predict) but not its size as checked or copied."""
    import struct

    from streetseg_jax.labels.images import image_size, is_rotated, open_rgb

    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20)).save(buffer, "PNG", exif=exif.tobytes())
    data, chunks, at = buffer.getvalue(), [], 8
    while at < len(data):
        length, = struct.unpack(">I", data[at:at + 4])
        chunks.append(data[at:at + 12 + length])
        at += 12 + length
    early = [c for c in chunks if c[4:8] == b"eXIf"]
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    late = data[:8] + b"".join(rest[:-1] + early + rest[-1:])          # before IEND, after IDAT
    assert (image_size(data), open_rgb(data).shape[:2], is_rotated(data)) == ((20, 40), (40, 20), True)
    assert (image_size(late), open_rgb(late).shape[:2], is_rotated(late)) == ((40, 20), (20, 40), False)


def test_missing_unreadable_and_truncated_images(tmp_path):
    label_map = default_label_map()
    for decode in (False, True):          # said once, also when locate_images has said it (a known problem)
        gone = f"image {tmp_path / 'gone.png'} does not exist"
        for known in ([], [gone]):
            report = check_file(annotation(image_path=tmp_path / "gone.png"), label_map,
                                CheckOptions(decode_images=decode), known)
            assert report.errors == [gone]
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    report = check_file(annotation(image_path=tmp_path / "junk.png"), label_map, CheckOptions())
    assert "unreadable image" in report.errors[0]
    data = save_png(tmp_path / "full.png", 40, 30).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    # The header is intact, so only a full decode notices that the pixels are missing.
    assert check_file(annotation(image_path=tmp_path / "cut.png"), label_map, CheckOptions()).errors == []
    report = check_file(annotation(image_path=tmp_path / "cut.png"), label_map, CheckOptions(decode_images=True))
    assert "unreadable image" in report.errors[0]


def test_embedded_image_bytes_are_checked():
    buffer = io.BytesIO()
    Image.new("RGB", (40, 31)).save(buffer, format="PNG")
    report = check_file(annotation(image_bytes=buffer.getvalue()), default_label_map(), CheckOptions())
    assert report.image == "<embedded in the annotation>" and "is 40x31 but a.xml says 40x30" in report.errors[0]


def test_absurd_annotation_sizes_are_errors_not_crashes():
    for width, height in ((0, 30), (-4, 30), (100_000, 100_000)):
        report = check_file(annotation(Shape("road", rect(0, 0, 5, 5)), width=width, height=height),
                            default_label_map(), CheckOptions(check_images=False))
        assert report.errors and "the annotation gives the image size" in report.errors[0]


# --- masks and unlabelled pixels ---------------------------------------------------------------------------------
def random_scene(rng, labels=("road", "sky", "building", "car")) -> Annotation:
    shapes = []
    for _ in range(6):
        centre, radius = rng.uniform(0, 40, 2), rng.uniform(3, 15)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        points = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        shapes.append(Shape(str(rng.choice(labels)), points, ignore=bool(rng.random() < 0.1)))
    return annotation(*shapes)


@pytest.mark.parametrize("fill_id, ignore_id", [(0, 255), (2, 255), (255, 255), (0, 3)])
def test_mask_with_unlabelled_is_exactly_annotation_to_mask(fill_id, ignore_id):
    classes = [{"id": i, "name": n, "color": [i, i, i]} for i, n in enumerate(("background", "road", "sky"))]
    label_map = LabelMap.from_dict({"classes": classes, "ignore_id": ignore_id, "fill_id": fill_id})
    rng = np.random.default_rng(fill_id + ignore_id)
    for _ in range(20):
        scene = random_scene(rng, labels=("background", "road", "sky", "car"))
        mask, unlabelled, _ = rasterize_with_unlabelled(scene, label_map)
        np.testing.assert_array_equal(mask, annotation_to_mask(scene, label_map, unknown="ignore").mask)
        assert 0 <= unlabelled <= int((mask == fill_id).sum())


def test_a_shape_marked_ignore_counts_as_the_fill_where_the_fill_is_the_ignore_id():
    """A COCO crowd region of a known class is drawn with the ignore id; where that is also the fill, the build's mask
    (this one) took a shortcut that gave the pixel to road, where to-masks gave it the ignore id."""
    label_map = LabelMap.from_dict({"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                                                {"id": 1, "name": "road", "color": [1, 1, 1]}],
                                    "ignore_id": 255, "fill_id": 255})
    scene = annotation(Shape("background", rect(0, 0, 0.3, 1), ignore=True), Shape("road", rect(0.3, 0, 0.7, 1)),
                       width=1, height=1)
    mask, _, _ = rasterize_with_unlabelled(scene, label_map)
    assert mask.tolist() == annotation_to_mask(scene, label_map, unknown="ignore").mask.tolist() == [[255]]


def test_unlabelled_pixels_are_those_no_shape_claims():
    scene = annotation(Shape("background", rect(0, 0, 40, 10)), Shape("road", rect(0, 20, 40, 30)))
    mask, unlabelled, _ = rasterize_with_unlabelled(scene, default_label_map())
    assert unlabelled == 400 and (mask == 0).sum() == 800      # drawn background is labelled, the gap is not


# --- images, keys ------------------------------------------------------------------------------------------------
def test_image_keys():
    assert image_key(annotation(file_name="https://x.org/a/b/IMG_1.jpg?token=REDACTED")) == "IMG_1"
    assert image_key(annotation(file_name="C:\\labels\\frame_7.png")) == "frame_7"
    assert image_key(annotation(file_name="frames/frame#001.png")) == "frame#001"     # was "frame", as a URL's
    assert image_key(annotation(file_name="what?.jpg")) == "what?"
    assert image_key(annotation(file_name="", source="dir/x.json")) == "x"
    assert image_key(annotation(image_path=Path("/e/images/real.png"))) == "real"


def test_reader_keys_win_and_each_keys_mask_is_kept(tmp_path):
    """A reader that knows stems repeat (CVAT subsets, mask subfolders) sets Annotation.key; the key names the
    kept mask, and two images of one stem in different subsets no longer clash."""
    train = annotation(Shape("road", rect(0, 0, 40, 30)), file_name="img0.jpg", key="Train/img0")
    test = annotation(Shape("sky", rect(0, 0, 40, 30)), file_name="img0.jpg", key="Test/img0")
    assert [image_key(a) for a in (train, test)] == ["Train/img0", "Test/img0"]
    assert duplicate_keys([train, test]) == {} and set(duplicate_keys([train, annotation(file_name="img0.png"),
                                                                        annotation(file_name="x/img0.jpg")])) == {1, 2}
    options = CheckOptions(check_images=False, mask_dir=str(tmp_path / "masks"))
    report = validate([train, test], default_label_map(), options=options)
    assert [f.key for f in report.files] == ["Train/img0", "Test/img0"] and report.errors == []
    kept = {key: read_mask_png(kept_mask_path(tmp_path / "masks", key)) for key in ("Train/img0", "Test/img0")}
    assert (kept["Train/img0"] == 3).all() and (kept["Test/img0"] == 6).all()      # road, sky
    assert len(list((tmp_path / "masks").iterdir())) == 2


def test_absurd_coordinates_are_left_to_the_rasterizer(tmp_path):
    far = annotation(Shape("road", np.array([[-1e308, 0], [1e308, 0], [1e308, 1e308], [0, 1e308]])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no overflow in the self-intersection test
        report = validate([far], default_label_map(), options=CheckOptions(check_images=False))
    assert [w for _, w in report.warnings if "out of range" in w] and report.errors == []


def test_locate_images_by_stem_by_name_and_refusals(tmp_path):
    save_png(tmp_path / "images" / "a.jpg", 4, 4)
    save_png(tmp_path / "images" / "from_coco.png", 4, 4)
    save_png(tmp_path / "x" / "twin.png", 4, 4)
    save_png(tmp_path / "y" / "twin.png", 4, 4)
    save_png(tmp_path.parent / "outside.png", 4, 4)
    annotations = [
        annotation(source=str(tmp_path / "annotations" / "a.xml"), file_name="stale_name.jpg"),   # by stem
        annotation(source=str(tmp_path / "coco.json"), file_name="from_coco.png"),               # by name
        annotation(source=str(tmp_path / "coco.json"), file_name="twin.png"),                    # ambiguous
        annotation(source=str(tmp_path / "b.json"), file_name="../outside.png"),                 # outside
    ]
    missing = locate_images(annotations, tmp_path)
    assert annotations[0].image_path == tmp_path / "images" / "a.jpg"
    assert annotations[1].image_path == tmp_path / "images" / "from_coco.png"
    assert "several images are named 'twin.png': x/twin.png, y/twin.png" in missing[2]
    assert "points outside the export folder" in missing[3] and annotations[3].image_path is None


def save_photo(path: Path, width: int = 40, height: int = 30) -> Path:
    """An RGB image of many colours, as a photo is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def save_mask(path: Path, mode: str = "P", width: int = 16, height: int = 12) -> Path:
    """A label mask of three class ids (palette or greyscale) or three class colours (RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.arange(width * height).reshape(height, width) % 3
    if mode == "RGB":
        Image.fromarray(np.asarray([(128, 64, 128), (70, 70, 70), (0, 0, 142)], np.uint8)[ids]).save(path)
    else:
        Image.fromarray(ids.astype(np.uint8), "L").convert(mode).save(path)
    return path


def test_the_standard_pascal_voc_layout_finds_its_photos(tmp_path):
    """Annotations/, JPEGImages/ and SegmentationClass/: the mask shares each photo's stem, and every file was
    refused as ambiguous."""
    save_photo(tmp_path / "JPEGImages" / "2007_000032.jpg")
    save_mask(tmp_path / "SegmentationClass" / "2007_000032.png")
    save_mask(tmp_path / "SegmentationObject" / "2007_000032.png")
    found = [annotation(source=str(tmp_path / "Annotations" / "2007_000032.xml"), file_name="2007_000032.jpg")]
    assert locate_images(found, tmp_path) == {}
    assert found[0].image_path == tmp_path / "JPEGImages" / "2007_000032.jpg"


@pytest.mark.parametrize("mode", ["P", "L", "RGB"])
def test_a_mask_is_never_taken_for_the_photo(mode, tmp_path):
    """A mask named like the photo, beside the annotation or in a mask folder, was used as the training image
    (check found nothing wrong): beside a photo elsewhere it is passed over, and alone it is no image. (A colour
    mask is told from a photo by decoding it, done only where several files share a stem and none is beside the
    annotation.)"""
    save_photo(tmp_path / "images" / "a.png")
    save_mask(tmp_path / ("annotations" if mode != "RGB" else "renders") / "a.png", mode)   # beside the XML
    save_mask(tmp_path / "masks" / "b.png", mode)             # b's photo is missing
    save_mask(tmp_path / "trainannot" / "c.png", mode)        # so is c's (CamVid's folders)
    found = [annotation(source=str(tmp_path / "annotations" / f"{stem}.xml"), file_name=f"{stem}.png")
             for stem in "abc"]
    missing = locate_images(found, tmp_path)
    assert found[0].image_path == tmp_path / "images" / "a.png"
    assert sorted(missing) == [1, 2] and found[1].image_path is None and found[2].image_path is None
    assert missing[1] == f"no image named b.* or 'b.png' under {tmp_path}"


def test_a_photo_kept_in_a_folder_of_label_masks_is_named_in_the_message(tmp_path):
    """Folders of masks are not searched for photos; a photo kept in one was missing without a reason."""
    save_photo(tmp_path / "labels" / "a.jpg")
    found = [annotation(source=str(tmp_path / "annotations" / "a.xml"), file_name="a.jpg")]
    assert locate_images(found, tmp_path)[0] == (
        f"no image named a.* or 'a.jpg' under {tmp_path} ({Path('labels', 'a.jpg')} looks like a photo, but folders "
        "of label masks are not searched for photos: move the photos to images/)")


def test_a_greyscale_or_palette_photo_is_still_a_photo(tmp_path):
    pixels = np.arange(16 * 12, dtype=np.uint8).reshape(12, 16)       # 192 grey levels
    (tmp_path / "images").mkdir()
    Image.fromarray(pixels, "L").save(tmp_path / "images" / "grey.png")
    Image.fromarray(pixels, "L").convert("P").save(tmp_path / "images" / "palette.png")
    found = [annotation(source=str(tmp_path / f"{stem}.json"), file_name=f"{stem}.png") for stem in ("grey", "palette")]
    assert locate_images(found, tmp_path) == {}


def test_an_image_named_in_another_case_or_unicode_form_is_found(tmp_path):
    # Exports made on Windows name IMG_1.JPG what is img_1.jpg here; macOS zips store café in decomposed form.
    save_png(tmp_path / "img_1.jpg", 4, 4)
    save_png(tmp_path / unicodedata.normalize("NFD", "café.png"), 4, 4)
    annotations = [annotation(source=str(tmp_path / "label_1.json"), file_name="IMG_1.JPG"),
                   annotation(source=str(tmp_path / "label_2.json"),                       # as LabelMe's reader
                              file_name=unicodedata.normalize("NFC", "café.png"),
                              image_path=tmp_path / unicodedata.normalize("NFC", "café.png")),
                   annotation(source=str(tmp_path / "label_3.json"), file_name="gone.jpg",
                              image_path=tmp_path / "gone.jpg")]
    missing = locate_images(annotations, tmp_path)
    assert annotations[0].image_path == tmp_path / "img_1.jpg"
    assert annotations[1].image_path == tmp_path / unicodedata.normalize("NFD", "café.png")
    assert list(missing) == [2] and missing[2] == f"image {tmp_path / 'gone.jpg'} does not exist"


def test_suggested_class_weights_are_the_ones_training_computes_from_the_masks(tmp_path):
    """Ignore pixels count nowhere: the check report counted them in the images' size, and suggested weights
    training does not use."""
    label_map = default_label_map()
    annotations = [annotation(Shape("road", rect(0, 0, 40, 10)), Shape("x", rect(0, 10, 40, 20), ignore=True),
                              source=str(tmp_path / "a.xml"), file_name="a.png"),
                   annotation(Shape("road", rect(0, 0, 40, 5)), Shape("sky", rect(0, 5, 40, 30)),
                              source=str(tmp_path / "b.xml"), file_name="b.png")]
    for stem in ("a", "b"):
        save_png(tmp_path / f"{stem}.png", 40, 30)
    report = validate(annotations, label_map, fmt="voc", source=tmp_path, root=tmp_path)
    masks = [annotation_to_mask(a, label_map, unknown="ignore").mask for a in annotations]
    assert (masks[0] == label_map.ignore_id).sum() == 400
    np.testing.assert_allclose(report.class_weights(), median_frequency_weights(
        *class_pixel_counts(masks, label_map.num_classes)), rtol=1e-6)


def test_duplicate_keys_are_named():
    clashes = duplicate_keys([annotation(source="t/a.xml", file_name="a.jpg"),
                              annotation(source="v/a.xml", file_name="a.png"), annotation(file_name="b.png")])
    assert set(clashes) == {0, 1} and "each would become a.png (in t/a.xml, v/a.xml)" in clashes[0]


# --- the whole report --------------------------------------------------------------------------------------------
def test_report_statistics_text_and_json(tmp_path):
    for stem in ("a", "b"):
        save_png(tmp_path / f"{stem}.png", 40, 30)
    annotations = [
        annotation(Shape("sky", rect(0, 0, 40, 10)), Shape("road", rect(0, 20, 40, 30)),
                   source=str(tmp_path / "a.xml"), file_name="a.png"),
        annotation(Shape("road", rect(0, 0, 40, 30)), Shape("road", rect(0, 0, 2, 1)),
                   Shape("road", ring((0, 0), (9, 9), (9, 0), (0, 9))), Shape("Buildings", rect(0, 0, 20, 30)),
                   source=str(tmp_path / "b.xml"), file_name="b.png"),
    ]
    report = validate(annotations, default_label_map(), fmt="voc", source=tmp_path, root=tmp_path)
    assert report.errors == [] and len(report.warnings) == 2
    pixels = report.class_pixels()
    assert pixels[SKY] == 400 and pixels[BUILDING] == 600 and pixels.sum() == 2400
    assert report.class_images()[ROAD] == 2 and report.class_images()[SKY] == 1
    expected = median_frequency_weights(pixels, np.array([1200, 0, 0, 2400, 0, 1200, 1200, 0]))
    np.testing.assert_allclose(report.class_weights(), expected)
    data = json.loads(json.dumps(report.to_dict()))
    road = next(c for c in data["classes"] if c["name"] == "road")
    assert road["pixel_share"] == pytest.approx((400 + 600) / 2400) and road["images"] == 2
    assert [f["unlabelled_share"] for f in data["files"]] == [pytest.approx(1 / 3), 0.0]
    text = report.text()
    assert "2 image(s) of voc" in text and "0 error(s), 2 warning(s)" in text
    assert "self-intersecting" in text and "road" in text
    assert "shapes 1, 2 ('road') under 'Buildings'" in text
    assert "unlabelled pixels (no shape; they get the fill class 'background'): 16.67% overall; most: a 33.3%" in text
    covered = validate(annotations[1:], default_label_map(), fmt="voc", source=tmp_path, root=tmp_path).text()
    assert "unlabelled pixels: none (the shapes cover every image)" in covered     # not "0.00% overall; most: b 0.0%"
    write_json(report, tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text())["images"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json") == ["report.json"]


def test_listings_show_the_first_lines_and_count_the_rest():
    from streetseg_jax.labels.shapes import listing

    assert listing(["a", "b", "c"], 2) == "\n  a\n  b\n  ... and 1 more"
    assert listing(["a", "b"], 2) == "\n  a\n  b" and listing([]) == ""


def test_kept_masks_of_keys_that_differ_in_case_or_are_long_are_files_of_their_own(tmp_path):
    """On a case-insensitive disk (macOS, Windows) the build kept Frame's and frame's masks as one file, and one
    image got the other's mask."""
    keys = ["Frame", "frame", "CAM/0001", "cam/0001", "日" * 90]
    names = [kept_mask_path(tmp_path, key).name for key in keys]
    assert len({name.lower() for name in names}) == len(keys)
    assert all(kept_mask_path(tmp_path, key).parent == tmp_path and len(name) < 64 for key, name in zip(keys, names))


def test_an_image_whose_file_name_is_not_utf8_is_an_error_not_a_crash_of_the_build(tmp_path):
    """TFDS stores the file name as text: a build raised UnicodeEncodeError mid-way."""
    import os

    folder = os.fsencode(tmp_path)
    Image.new("RGB", (40, 30)).save(os.fsdecode(folder + b"/caf\xe9.png"))
    photo = Path(os.fsdecode(folder + b"/caf\xe9.png"))
    report = check_file(annotation(Shape("road", rect(0, 0, 9, 9)), image_path=photo), default_label_map(),
                        CheckOptions())
    assert report.errors == ["the file name 'caf\ufffd.png' is not UTF-8 text, which a dataset stores; rename the "
                             "file"]
