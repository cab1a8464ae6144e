"""Tests for streetseg_jax.labels.formats.labelme: LabelMe JSON against labelme2voc's own masks, every shape type,
images embedded or referenced, and clear errors for broken files."""
import base64
import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from streetseg_jax.labels.convert import annotation_to_mask
from streetseg_jax.labels.formats import labelme
from streetseg_jax.labels.label_map import ClassInfo, LabelMap, default_label_map
from streetseg_jax.labels.rasterize import coverage
from streetseg_jax.labels import shapes
from streetseg_jax.labels.shapes import LabelFormatError
from streetseg_jax.labels.validate import CheckOptions, check_file

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "annotation-samples" / "labelme"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"LabelMe samples not found at {SAMPLES} "
                                   "(the shared data folder beside the repository)")


# --- helpers ---------------------------------------------------------------------------------------------------------

def write_json(folder: Path, data, name: str = "a.json") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def labelme_file(shapes, **overrides) -> dict:
    data = {"version": "5.7.0", "flags": {}, "shapes": shapes, "imagePath": "a.jpg", "imageData": None,
            "imageHeight": 20, "imageWidth": 30}
    data.update(overrides)
    return data


def shape(label, points, shape_type="polygon", **extra) -> dict:
    return {"label": label, "points": points, "shape_type": shape_type, "group_id": None, "flags": {}, **extra}


def png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def read_one(path: Path):
    annotations = labelme.read(path)
    assert len(annotations) == 1
    return annotations[0]


# --- agreement with labelme2voc on labelme's own examples -----------------------------------------------------------
# The convention difference, in short (details in the labelme module docstring): LabelMe's window shows pixel c as
# [c, c+1) and stores mouse positions in those units, so we take its points as they are. labelme2voc draws with PIL,
# which truncates each vertex to an integer, treats an integer point as a pixel centre, fills the pixels whose centre
# is inside and then paints the 1-pixel outline too. Its shapes are therefore about half a pixel fatter on every
# side, with vertices up to half a pixel away from ours; we decide boundary pixels by covered area. So the masks must
# agree everywhere except on pixels next to a polygon edge.

REFERENCES = {"semantic_segmentation": "SegmentationClass", "instance_segmentation": "SegmentationClass",
              "street_video": "SegmentationClassPNG"}


def label_map_from_class_names(path: Path) -> LabelMap:
    """Class i = line i of labelme2voc's class_names.txt; names sanitised to snake_case, the original as alias."""
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    classes = []
    for i, name in enumerate(names):
        snake = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")   # "_background_", "tv/monitor", "potted plant"
        classes.append(ClassInfo(i, snake, (i, i, i), (name,)))
    return LabelMap(tuple(classes))


def distance_to_edges(px: np.ndarray, py: np.ndarray, rings) -> np.ndarray:
    """Distance from each point to the nearest edge of any ring."""
    best = np.full(px.shape, np.inf)
    for ring in rings:
        for (ax, ay), (bx, by) in zip(ring, np.roll(ring, -1, axis=0)):
            dx, dy = bx - ax, by - ay
            t = np.clip(((px - ax) * dx + (py - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
            best = np.minimum(best, np.hypot(px - ax - t * dx, py - ay - t * dy))
    return best


@needs_samples
@pytest.mark.parametrize("folder", sorted(REFERENCES))
def test_masks_agree_with_labelme2voc(folder):
    label_map = label_map_from_class_names(SAMPLES / folder / "reference_labelme2voc" / "class_names.txt")
    annotations = labelme.read(SAMPLES / folder / "data_annotated", label_map)
    assert annotations
    for annotation in annotations:
        ours = annotation_to_mask(annotation, label_map).mask
        references = SAMPLES / folder / "reference_labelme2voc" / REFERENCES[folder]
        reference = np.asarray(Image.open(references / f"{annotation.source.stem}.png"))
        assert ours.shape == reference.shape
        differ = ours != reference
        assert differ.mean() <= 0.01, f"{annotation.source.name}: {100 * (1 - differ.mean()):.2f}% agree"
        rows, cols = np.nonzero(differ)
        far = distance_to_edges(cols + 0.5, rows + 0.5, [s.exterior for s in annotation.shapes])
        assert far.max() <= 1.5, f"{annotation.source.name}: a difference {far.max():.2f} px from every edge"


@needs_samples
def test_ignore_label_gives_the_ignore_id_like_labelme2voc():
    label_map = label_map_from_class_names(SAMPLES / "semantic_segmentation/reference_labelme2voc/class_names.txt")
    annotation = read_one(SAMPLES / "semantic_segmentation/data_annotated/2011_000003.json")
    assert [s.ignore for s in annotation.shapes] == [False, False, False, False, True]
    mask = annotation_to_mask(annotation, label_map).mask
    reference = np.asarray(Image.open(SAMPLES / "semantic_segmentation/reference_labelme2voc/SegmentationClass/"
                                      "2011_000003.png"))
    both = (mask == 255) & (reference == 255)
    assert both.sum() >= 0.95 * (reference == 255).sum() > 0


@needs_samples
def test_primitives_sample_every_shape_type():
    annotation = read_one(SAMPLES / "primitives" / "primitives.json")
    assert (annotation.width, annotation.height) == (560, 450)
    assert annotation.image_path == (SAMPLES / "primitives" / "primitives.jpg").resolve()
    # line, point and linestrip have no area and are skipped; the rest keep file order.
    assert [s.label for s in annotation.shapes] == ["rectangle", "circle", "rectangle", "polygon", "octagon"]
    rectangle, circle, _, polygon, octagon = annotation.shapes
    np.testing.assert_array_equal(rectangle.exterior, [[32, 35], [132, 35], [132, 135], [32, 135]])
    radius = np.hypot(225 - 195, 125 - 84)
    assert coverage(circle, 450, 560).sum() == pytest.approx(np.pi * radius ** 2, rel=1e-6)
    np.testing.assert_allclose(np.hypot(*(circle.exterior - [195, 84]).T), radius, rtol=1e-3)
    np.testing.assert_array_equal(polygon.exterior, [[69, 318], [45, 403], [173, 406], [198, 321]])
    # The mask is a 100x100 PNG whose top-left pixel is the first point (417.4, 305) -> column 417, row 305.
    raw = json.loads((SAMPLES / "primitives" / "primitives.json").read_text())["shapes"][7]["mask"]
    box = np.asarray(Image.open(io.BytesIO(base64.b64decode(raw)))) != 0
    expected = np.zeros((450, 560), bool)
    expected[305:405, 417:517] = box
    np.testing.assert_array_equal(octagon.raster, expected)
    default = LabelMap(tuple(ClassInfo(i, n, (0, 0, 0)) for i, n in
                             enumerate(["background", "rectangle", "circle", "polygon", "octagon"])))
    mask = annotation_to_mask(annotation, default).mask
    assert np.all(mask[expected] == 4) and mask[85, 80] == 1 and mask[104, 210] == 2


@needs_samples
def test_looks_like_on_samples():
    assert labelme.looks_like(SAMPLES)
    assert labelme.looks_like(SAMPLES / "primitives" / "primitives.json")
    assert not labelme.looks_like(SAMPLES.parent / "coco")
    assert not labelme.looks_like(SAMPLES.parent / "mit_labelme_xml")


# --- shape types on hand-written files -------------------------------------------------------------------------------

def test_polygon_points_are_used_as_they_are(tmp_path):
    annotation = read_one(write_json(tmp_path, labelme_file([shape("road", [[1, 2], [10.5, 2], [10.5, 8]])])))
    np.testing.assert_array_equal(annotation.shapes[0].exterior, [[1, 2], [10.5, 2], [10.5, 8]])
    assert (annotation.width, annotation.height, annotation.file_name) == (30, 20, "a.jpg")


def test_missing_shape_type_means_polygon(tmp_path):
    raw = {"label": "road", "points": [[0, 0], [4, 0], [4, 4]]}              # labelme 3.x files have no shape_type
    annotation = read_one(write_json(tmp_path, labelme_file([raw])))
    assert annotation.shapes[0].exterior.shape == (3, 2)


def test_rectangle_from_corners_in_any_order(tmp_path):
    annotation = read_one(write_json(tmp_path, labelme_file([shape("road", [[12, 9], [2, 3]], "rectangle")])))
    mask = annotation_to_mask(annotation, default_label_map()).mask
    assert (mask == 3).sum() == 10 * 6 and np.all(mask[3:9, 2:12] == 3)


def test_circle_becomes_a_polygon_of_the_circles_area(tmp_path):
    annotation = read_one(write_json(tmp_path, labelme_file([shape("road", [[15, 10], [15, 16]], "circle")])))
    ring = annotation.shapes[0].exterior
    assert len(ring) == shapes.circle_vertices(6.0) >= 16
    assert coverage(annotation.shapes[0], 20, 30).sum() == pytest.approx(np.pi * 36, rel=1e-9)
    assert np.abs(np.hypot(*(ring - [15, 10]).T) - 6).max() < 0.02


def test_circle_vertices_grow_with_the_radius():
    assert shapes.circle_vertices(0.0) == 16
    assert shapes.circle_vertices(10) < shapes.circle_vertices(100) < shapes.circle_vertices(1000) <= 4096
    assert shapes.circle_vertices(3.6e306) == shapes.circle_vertices(1e300) == 4096   # no overflow


def test_a_circle_of_huge_radius_gives_a_mask_or_our_error(tmp_path):
    # found by the fuzz test below: a rim point at 3.6e306 made the vertex count infinite
    path = write_json(tmp_path, labelme_file([shape("road", [[3.6e306, 10], [15, 14]], "circle")]))
    try:
        annotation = read_one(path)
    except LabelFormatError as e:
        assert str(path) in str(e)
        return
    assert annotation_to_mask(annotation, default_label_map()).mask.shape == (annotation.height, annotation.width)


def test_mask_shape_is_placed_at_its_first_point(tmp_path):
    box = np.zeros((4, 5), np.uint8)
    box[1:3, 1:4] = 1
    raw = shape("road", [[20.6, 3.2], [24.6, 6.2]], "mask", mask=png_base64(box))
    annotation = read_one(write_json(tmp_path, labelme_file([raw])))
    raster = annotation.shapes[0].raster
    assert raster.shape == (20, 30) and raster.sum() == 6 and np.all(raster[4:6, 21:24])


def test_mask_shape_partly_outside_the_image_is_clipped(tmp_path):
    raw = shape("road", [[27, 18], [31, 21]], "mask", mask=png_base64(np.ones((4, 5))))
    raster = read_one(write_json(tmp_path, labelme_file([raw]))).shapes[0].raster
    assert raster.sum() == 3 * 2 and np.all(raster[18:, 27:])


def test_shapes_without_area_are_skipped(tmp_path):
    shapes = [shape("road", [[0, 0], [5, 5]], "line"), shape("road", [[1, 1]], "point"),
              shape("road", [[0, 0], [3, 3], [6, 0]], "linestrip"), shape("car", [[0, 0], [4, 0], [4, 4]])]
    annotation = read_one(write_json(tmp_path, labelme_file(shapes)))
    assert [s.label for s in annotation.shapes] == ["car"]
    report = check_file(annotation, default_label_map(), CheckOptions(unknown="ignore", check_images=False))
    assert "3 shape(s) without an area left out (1 line, 1 point, 1 linestrip): only shapes that enclose an area " \
           "paint pixels" in report.warnings                # was left out without a word


def test_ignore_label_marks_the_region_ignore(tmp_path):
    shapes = [shape("road", [[0, 0], [30, 0], [30, 20], [0, 20]], "polygon"),
              shape("__ignore__", [[0, 0], [10, 10]], "rectangle")]
    annotation = read_one(write_json(tmp_path, labelme_file(shapes)))
    assert [s.ignore for s in annotation.shapes] == [False, True]
    mask = annotation_to_mask(annotation, default_label_map()).mask
    assert np.all(mask[:10, :10] == 255) and np.all(mask[10:, :] == 3)


def test_later_shapes_are_drawn_on_top(tmp_path):
    shapes = [shape("road", [[0, 0], [30, 20]], "rectangle"), shape("building", [[5, 5], [10, 10]], "rectangle")]
    mask = annotation_to_mask(read_one(write_json(tmp_path, labelme_file(shapes))), default_label_map()).mask
    assert np.all(mask[5:10, 5:10] == 5) and (mask == 3).sum() == 600 - 25


# --- images -----------------------------------------------------------------------------------------------------------

def test_embedded_image_data_wins(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(buffer, format="PNG")
    data = labelme_file([], imagePath="../../elsewhere.png", imageData=base64.b64encode(buffer.getvalue()).decode())
    annotation = read_one(write_json(tmp_path, data))
    assert annotation.image_bytes == buffer.getvalue() and annotation.image_path is None


def test_image_path_is_relative_to_the_json_file(tmp_path):
    write_json(tmp_path, labelme_file([], imagePath="../images/a.jpg"), "annotations/a.json")
    annotation, = labelme.read(tmp_path)
    assert annotation.image_path == (tmp_path / "images" / "a.jpg").resolve()
    assert annotation.file_name == "../images/a.jpg"


def test_windows_backslashes_in_image_path(tmp_path):
    write_json(tmp_path, labelme_file([], imagePath="..\\images\\a.jpg"), "annotations/a.json")
    assert labelme.read(tmp_path)[0].image_path == (tmp_path / "images" / "a.jpg").resolve()


def test_the_annotations_folder_given_alone_points_to_the_folder_holding_both(tmp_path):
    # LabelMe's --output layout: annotations/a.json names ..\\images\\a.jpg
    write_json(tmp_path, labelme_file([], imagePath="..\\images\\a.jpg"), "annotations/a.json")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 3)).save(tmp_path / "images" / "a.jpg")
    with pytest.raises(LabelFormatError, match=f"give the folder holding both, {re.escape(str(tmp_path.resolve()))}, "
                                                "as --input"):
        labelme.read(tmp_path / "annotations")


@pytest.mark.parametrize("image_path", ["../../secret.jpg", "/etc/passwd", "sub/../../../x.jpg"])
def test_image_path_outside_the_export_folder_is_refused(tmp_path, image_path):
    write_json(tmp_path / "export", labelme_file([], imagePath=image_path), "annotations/a.json")
    with pytest.raises(LabelFormatError, match=r"a\.json: imagePath .* outside the export folder .*refused"):
        labelme.read(tmp_path / "export")


def test_size_from_the_image_when_the_file_does_not_say(tmp_path):
    Image.new("RGB", (7, 5)).save(tmp_path / "a.jpg")
    data = labelme_file([])
    del data["imageHeight"], data["imageWidth"]
    assert (read_one(write_json(tmp_path, data)).width, read_one(tmp_path / "a.json").height) == (7, 5)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size and holds no pixels: enough for a header read, a bomb if decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def test_decompression_bomb_image_is_refused(tmp_path):
    data = labelme_file([], imageData=base64.b64encode(png_header_only(100_000, 100_000)).decode())
    del data["imageHeight"], data["imageWidth"]
    path = write_json(tmp_path, data)
    with pytest.raises(LabelFormatError, match=re.escape(str(path)) + ".*gives no size .*exceeds limit"):
        labelme.read(path)


def test_decompression_bomb_mask_is_refused_before_decoding(tmp_path):
    bomb = base64.b64encode(png_header_only(50_000, 50_000)).decode()
    path = write_json(tmp_path, labelme_file([shape("road", [[0, 0], [3, 3]], "mask", mask=bomb)]))
    with pytest.raises(LabelFormatError, match=re.escape(str(path)) + r".*shapes\[0\] \('road'\): 'mask' is not a"):
        labelme.read(path)


def test_a_photo_of_100_megapixels_is_taken_and_one_beyond_pillows_refusal_is_not():
    """A 99-megapixel photo was refused as a decompression bomb (at Pillow's warning level, 89.5 megapixels)."""
    from streetseg_jax.labels.images import image_size

    assert image_size(png_header_only(10_000, 10_000)) == (10_000, 10_000)
    with pytest.raises(LabelFormatError, match="image too large"):
        image_size(png_header_only(14_000, 14_000))

# --- folders and detection -------------------------------------------------------------------------------------------

def test_folder_is_read_recursively_in_sorted_order_skipping_hidden_folders(tmp_path):
    for name in ("b/2.json", "a/1.json", "c.json", ".ipynb_checkpoints/c-checkpoint.json"):
        write_json(tmp_path, labelme_file([]), name)
    assert [a.source.relative_to(tmp_path).as_posix() for a in labelme.read(tmp_path)] == \
        ["a/1.json", "b/2.json", "c.json"]


def test_other_json_in_the_folder_is_left_out_but_a_broken_labelme_file_is_not(tmp_path):
    write_json(tmp_path, labelme_file([]), "a.json")
    write_json(tmp_path, {"classes": [{"id": 0, "name": "road", "color": [0, 0, 0]}]}, "label_map.json")
    write_json(tmp_path, {"format": "labelme", "files": []}, "check_report.json")
    write_json(tmp_path, [1, 2], "list.json")
    write_json(tmp_path, {"name": "street_seg", "splits": []}, "tfds/street_seg/x/2.0.0/dataset_info.json")
    assert [a.source.name for a in labelme.read(tmp_path)] == ["a.json"]
    Image.new("RGB", (4, 3)).save(tmp_path / "label_map.png")      # a picture of the label map: not its annotation
    assert [a.source.name for a in labelme.read(tmp_path)] == ["a.json"]
    write_json(tmp_path, {"imagePath": "b.jpg"}, "b.json")       # a LabelMe key, but no shapes: an error
    with pytest.raises(LabelFormatError, match=r"b\.json: not a LabelMe file"):
        labelme.read(tmp_path)
    (tmp_path / "b.json").unlink()
    write_json(tmp_path, {}, "c.json")                           # emptied beside its image: it was said only that
    Image.new("RGB", (4, 3)).save(tmp_path / "c.JPG")            # c.JPG had no annotation
    with pytest.raises(LabelFormatError, match=r"c\.json: beside c\.JPG, but not a LabelMe file"):
        labelme.read(tmp_path)


def test_looks_like(tmp_path):
    assert labelme.looks_like(write_json(tmp_path / "yes", labelme_file([])))
    assert labelme.looks_like(tmp_path / "yes")
    assert not labelme.looks_like(write_json(tmp_path / "coco", {"images": [], "annotations": []}))
    assert not labelme.looks_like(write_json(tmp_path / "broken", "{not json"))
    assert not labelme.looks_like(tmp_path / "missing")
    assert not labelme.looks_like(tmp_path / "empty_folder_that_does_not_exist")


# --- errors: the file and the problem --------------------------------------------------------------------------------

BAD_FILES = [
    ("{not json", "not valid JSON"),
    ('{"shapes": [], "imagePath": "a.jpg", "imageHeight": NaN, "imageWidth": 3}', "NaN is not a number"),
    ("[1, 2]", "not a LabelMe file"),
    ({"imagePath": "a.jpg"}, "not a LabelMe file"),
    ({"shapes": {}, "imagePath": "a.jpg"}, "not a LabelMe file"),
    (labelme_file([], imagePath=None), "neither 'imageData' nor 'imagePath'"),
    (labelme_file([], imagePath=7), "'imagePath' must be a string, got int"),
    (labelme_file([], imageData="%%%"), "'imageData' is not valid base64"),
    (labelme_file([], imageData=5), "'imageData' must be a base64 string"),
    (labelme_file([], imageData="", imagePath=None), "neither 'imageData' nor 'imagePath'"),
    (json.dumps(labelme_file([], imageWidth=3)).replace('"imageWidth": 3', '"imageWidth": 1e999'),
     "'imageWidth' must be a positive integer, got inf"),
    (labelme_file([], imageHeight=-4), "'imageHeight' must be a positive integer, got -4"),
    (labelme_file([], imageWidth="30"), "'imageWidth' must be a positive integer, got '30'"),
    (labelme_file([], imageWidth=2.5), "'imageWidth' must be a positive integer"),
    (labelme_file([], imageWidth=True), "'imageWidth' must be a positive integer"),
    (labelme_file([], imageWidth=10 ** 6, imageHeight=10 ** 6), "beyond .* pixels; refused"),
    (labelme_file(["road"]), r"shapes\[0\] must be an object, got str"),
    (labelme_file([{"points": [[0, 0], [1, 0], [1, 1]]}]), r"shapes\[0\] needs a non-empty string 'label'"),
    (labelme_file([shape(3, [[0, 0], [1, 0], [1, 1]])]), r"shapes\[0\] needs a non-empty string 'label', got 3"),
    (labelme_file([shape("road", None)]), r"shapes\[0\] \('road'\): 'points' must be a list of \[x, y\] pairs"),
    (labelme_file([shape("road", [[0, 0, 0]])]), "'points' must be a list of"),
    (labelme_file([shape("road", [["0", 1]])]), "'points' must hold numbers"),
    (labelme_file([shape("road", [[True, 1]])]), "'points' must hold numbers"),
    (json.dumps(labelme_file([shape("road", [[0, 1]])])).replace("[[0, 1]]", "[[1e999, 1]]"), "non-finite"),
    (labelme_file([shape("road", [[10 ** 400, 1]])]), "non-finite"),
    # found by tools/fuzz_readers.py: past 4300 digits Python's json raises a plain ValueError
    (json.dumps(labelme_file([shape("road", [[0, 1]])])).replace("[[0, 1]]", "[[1" + "0" * 5000 + ", 1]]"),
     r"not valid JSON \(an integer has more than 4300 digits"),
    (labelme_file([], imagePath="a" * 300 + ".jpg"), "imagePath .* is not a usable file name"),
    (labelme_file([shape("road", [[0, 0]], "ellipse")]), "unknown shape_type 'ellipse'"),
    (labelme_file([shape("road", [[0, 0], [1, 1], [2, 2]], "rectangle")]), "a rectangle needs 2 points"),
    (labelme_file([shape("road", [[0, 0]], "circle")]), "a circle needs 2 points"),
    (labelme_file([shape("road", [[0, 0], [3, 3]], "mask", mask=None)]), "'mask' must be a base64 string"),
    (labelme_file([shape("road", [[0, 0], [3, 3]], "mask", mask=base64.b64encode(b"no png").decode())]),
     "'mask' is not a readable image"),
    (labelme_file([shape("road", [[0, 0], [3, 3]], "mask", mask=png_base64(np.ones((3, 3))))]),
     "mask PNG is 3x3 but its points span 4x4 pixels"),
    (labelme_file([shape("road", [[0, 0], [99, 3]], "mask", mask=png_base64(np.ones((4, 100))))]),
     "mask box 100x4 does not fit the 30x20 image"),
]


@pytest.mark.parametrize("content,problem", BAD_FILES, ids=[p for _, p in BAD_FILES])
def test_broken_files_raise_an_error_naming_the_file_and_the_problem(tmp_path, content, problem):
    path = write_json(tmp_path, content, "broken.json")
    with pytest.raises(LabelFormatError, match=re.escape(str(path)) + ".*" + problem):
        labelme.read(path)


def test_unreadable_file(tmp_path):
    with pytest.raises(LabelFormatError, match=r"missing\.json: cannot read"):
        labelme.read(tmp_path / "missing.json")


def test_coordinates_out_of_range_are_refused_for_every_format(tmp_path):
    """formats.read refuses coordinates no tool writes (beyond rasterize.coordinate_limit): near 1e308 the
    rasterizer's edge arithmetic would overflow, and far below that lose whole pixels of precision."""
    from streetseg_jax.labels import formats
    from streetseg_jax.labels.rasterize import coordinate_limit
    far = coordinate_limit(20, 30) * 1.01
    path = write_json(tmp_path, labelme_file([shape("road", [[0, 0], [4, 0], [4, 4]]),
                                              shape("car", [[-1e308, 0], [far, 0], [1e308, 1e308]])]))
    assert len(labelme.read(path)[0].shapes) == 2            # the reader itself only checks that they are numbers
    with pytest.raises(LabelFormatError, match=re.escape(str(path)) + r": image a.jpg, shape 1 \('car'\): "
                                               r"coordinate -1e\+308 is out of range"):
        formats.read("labelme", path, default_label_map())
    within = write_json(tmp_path / "ok", labelme_file([shape("road", [[-1e6, 0], [30, 0], [30, 20]])]))
    assert formats.read("labelme", within, default_label_map())[0].shapes[0].exterior[0, 0] == -1e6


def test_deeply_nested_json(tmp_path):
    path = write_json(tmp_path, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(LabelFormatError, match="not valid JSON"):
        labelme.read(path)


# --- fuzzing: a correct mask or our own error, nothing else -----------------------------------------------------------

VALID = json.dumps(labelme_file([
    shape("road", [[0, 0], [30, 0], [30, 20], [0, 20]]),
    shape("car", [[2, 2], [8, 6]], "rectangle"),
    shape("tree", [[15, 10], [15, 14]], "circle"),
    shape("__ignore__", [[20, 3], [23, 5]], "mask", mask=png_base64(np.eye(3, 4))),
    shape("sky", [[1, 1], [3, 3]], "line"),
]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 6), st.text(max_size=6)),
                     min_size=1, max_size=4))
def test_mutated_files_give_a_mask_or_our_error(tmp_path, cuts):
    text = VALID
    for at, length, insert in cuts:
        text = text[:at] + insert + text[at + length:]
    path = write_json(tmp_path, text, "fuzz.json")
    try:
        annotation = read_one(path)
    except LabelFormatError as e:
        assert str(path) in str(e)
        return
    label_map = default_label_map()
    mask = annotation_to_mask(annotation, label_map, unknown="ignore").mask
    assert mask.shape == (annotation.height, annotation.width)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


def value_paths(value, prefix=()):
    """Every path (tuple of keys and indices) to a value inside a JSON structure, the structure itself included."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from value_paths(child, prefix + (key,))


VALID_PATHS = list(value_paths(json.loads(VALID)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(VALID_PATHS[1:]), value=JSON_VALUES)
def test_any_value_replaced_gives_a_mask_or_our_error(tmp_path, where, value):
    data = json.loads(VALID)
    parent = data
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    path = write_json(tmp_path, data, "fuzz.json")
    try:
        annotation = read_one(path)
    except LabelFormatError as e:
        assert str(path) in str(e)
        return
    mask = annotation_to_mask(annotation, default_label_map(), unknown="ignore").mask
    assert mask.shape == (annotation.height, annotation.width)
