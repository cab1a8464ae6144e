"""COCO instances and COCO panoptic readers: real samples, hand-written edge cases, malformed files."""
from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from streetseg_jax.labels.convert import annotation_to_mask, rasterize_with_unlabelled
from streetseg_jax.labels.formats import coco, coco_panoptic
from streetseg_jax.labels.label_map import ClassInfo, LabelMap, starter_label_map
from streetseg_jax.labels.rasterize import coverage, rasterize
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, Shape

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "annotation-samples"
COCO = SAMPLES / "coco"
LABELME = SAMPLES / "labelme" / "instance_segmentation"
needs_samples = pytest.mark.skipif(not COCO.is_dir(), reason=f"annotation samples not found at {COCO}")
# pycocotools 2.0.x under numpy 2 warns about its own array protocol on every decode; nothing here can act on it.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _coco(annotations, width=10, height=8, categories=None, images=None) -> dict:
    return {"images": images or [{"id": 1, "file_name": "a.jpg", "width": width, "height": height}],
            "categories": categories or [{"id": 1, "name": "road"}, {"id": 2, "name": "car"}],
            "annotations": annotations}


def _square(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _mask(annotation: Annotation, names=("background", "road", "car")) -> np.ndarray:
    label_map = LabelMap(tuple(ClassInfo(i, n, (i, i, i)) for i, n in enumerate(names)))
    return annotation_to_mask(annotation, label_map).mask


def _grow(mask: np.ndarray) -> np.ndarray:
    """`mask` and its 8 neighbours."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.any([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)


def _union(shapes: list[Shape], height: int, width: int) -> np.ndarray:
    return rasterize([(1, s) for s in shapes], height, width).mask == 1


# --- real samples -----------------------------------------------------------------------------------------------------

@needs_samples
def test_rle_decodes_exactly_as_pycocotools(tmp_path):
    """Every uncompressed RLE of rle.json, and the same RLEs written compressed, decode bit for bit as pycocotools."""
    data = json.loads((COCO / "coco2017_subset" / "rle.json").read_text())
    rles = [a for a in data["annotations"] if isinstance(a["segmentation"], dict)]
    assert len(rles) == 10
    compressed = json.loads(json.dumps(data))
    for a in compressed["annotations"]:
        if isinstance(a["segmentation"], dict):
            h, w = a["segmentation"]["size"]
            a["segmentation"]["counts"] = coco_mask.frPyObjects(a["segmentation"], h, w)["counts"].decode()
    for path in (COCO / "coco2017_subset" / "rle.json", _write(tmp_path / "compressed.json", compressed)):
        by_name = {a.file_name: a for a in coco.read(path, None, crowd="class")}
        images = {i["id"]: i["file_name"] for i in data["images"]}
        for a in rles:
            h, w = a["segmentation"]["size"]
            expected = coco_mask.decode(coco_mask.frPyObjects(a["segmentation"], h, w)).astype(bool)
            rasters = [s.raster for s in by_name[images[a["image_id"]]].shapes if s.raster is not None]
            assert any(r.shape == expected.shape and np.array_equal(r, expected) for r in rasters)


@needs_samples
def test_crowd_regions_are_ignored_by_default_and_drawn_underneath():
    annotations = coco.read(COCO / "coco2017_subset" / "rle.json", None)
    crowd = [s for a in annotations for s in a.shapes if s.raster is not None]
    assert len(crowd) == 10 and all(s.ignore and s.z_order == -1 for s in crowd)
    for a in annotations:               # drawing order: every crowd region before the single objects
        orders = [s.z_order for s in a.shapes]
        assert orders == sorted(orders)
    kept = coco.read(COCO / "coco2017_subset" / "rle.json", None, crowd="class")
    assert not any(s.ignore for a in kept for s in a.shapes)


@needs_samples
def test_polygons_agree_with_pycocotools_rasterisation():
    """pycocotools fills a pixel when its centre is inside; we give it to the class covering most of it. With the
    same corner-origin convention the two differ only on pixels an edge crosses, and as often one way as the
    other (a half-pixel offset between conventions would show as a one-sided difference all along the outline)."""
    path = COCO / "coco2017_subset" / "instances.json"
    data = json.loads(path.read_text())
    sizes = {i["id"]: (i["height"], i["width"]) for i in data["images"]}
    ours_only = theirs_only = object_pixels = 0
    for ann in data["annotations"]:
        h, w = sizes[ann["image_id"]]
        theirs = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(ann["segmentation"], h, w))).astype(bool)
        shapes = [Shape("x", np.asarray(p, float).reshape(-1, 2)) for p in ann["segmentation"]]
        ours = _union(shapes, h, w)
        partial = np.zeros((h, w), bool)
        for s in shapes:
            c = coverage(s, h, w)
            partial |= (c > 0) & (c < 1)
        assert not np.any((ours != theirs) & ~partial)       # every difference is on an edge pixel
        ours_only += int((ours & ~theirs).sum())
        theirs_only += int((theirs & ~ours).sum())
        object_pixels += int(theirs.sum())
    assert (ours_only + theirs_only) / object_pixels < 0.002   # measured: 1347 of 1,464,655 (0.09%)
    assert abs(ours_only - theirs_only) < 0.1 * (ours_only + theirs_only)   # measured: 675 vs 672


@needs_samples
def test_the_samples_shapes_painted_over_by_later_annotations_are_named():
    """COCO draws in file order: in the real sample a fork and a bowl lie wholly under the dining table listed
    after them, and 8 broccoli under their bowl; each image gets one message naming them."""
    found = {}
    for name in ("instances.json", "rle.json"):
        for annotation in coco.read(COCO / "coco2017_subset" / name, None):
            label_map = starter_label_map(sorted({s.label for s in annotation.shapes}))
            problems = rasterize_with_unlabelled(annotation, label_map)[2]     # as labels check draws it
            covered = [p for p in problems if "entirely covered" in p]
            if covered:
                found[Path(annotation.file_name).stem] = covered
    assert sorted(found) == ["000000141328", "000000385029"] and all(len(v) == 1 for v in found.values())
    assert "shape 0 ('fork') under 'dining table'" in found["000000385029"][0]
    assert "8 of 16 shapes are entirely covered" in found["000000141328"][0]
    assert "shapes 0, 2, 4, 5, 6, 7, 10, 11 ('broccoli') under 'bowl'" in found["000000141328"][0]


@needs_samples
def test_instances_sample_reads_with_names_and_images():
    annotations = coco.read(COCO / "coco2017_subset" / "instances.json", None)
    assert len(annotations) == 10 and sum(len(a.shapes) for a in annotations) >= 62
    assert all(a.image_path is not None and a.image_path.parent.name == "images" for a in annotations)
    labels = {s.label for a in annotations for s in a.shapes}
    assert {"car", "person"} <= labels
    first = annotations[0]
    assert (first.file_name, first.width, first.height) == ("000000458755.jpg", 640, 480)


@needs_samples
def test_coco_polygons_agree_with_the_same_labelme_polygons():
    """labelme2coco made annotations.json from the LabelMe JSON in labelme/instance_segmentation: the COCO polygons
    and the LabelMe points (read here by hand, `__ignore__` left out as labelme2coco does) give the same mask, and
    that mask agrees with labelme2voc's own reference masks on >= 99% of the non-ignore pixels, the rest on pixels
    an edge crosses (labelme fills every pixel its outline touches; we give a pixel to the class covering most)."""
    names = (LABELME / "reference_labelme2voc" / "class_names.txt").read_text().splitlines()
    label_map = LabelMap(tuple(ClassInfo(i, re.sub(r"[^a-z0-9]+", "_", n.lower()).strip("_"), (i, i, i), (n,))
                               for i, n in enumerate(names)))
    annotations = coco.read(COCO / "labelme2coco_instances", None)
    assert len(annotations) == 3 and all(a.image_path is not None for a in annotations)
    for a in annotations:
        stem = Path(a.file_name).stem
        ours = annotation_to_mask(a, label_map).mask
        labelme = json.loads((LABELME / "data_annotated" / f"{stem}.json").read_text())
        shapes = [Shape(s["label"], np.asarray(s["points"], float)) for s in labelme["shapes"]
                  if s["label"] != "__ignore__"]
        same = Annotation(Path(f"{stem}.json"), stem, labelme["imageWidth"], labelme["imageHeight"], shapes)
        assert np.array_equal(ours, annotation_to_mask(same, label_map).mask)
        reference = np.asarray(Image.open(LABELME / "reference_labelme2voc" / "SegmentationClass" / f"{stem}.png"))
        valid = reference != 255
        assert (ours == reference)[valid].mean() >= 0.99          # measured 99.45% .. 99.67%
        edges = np.zeros(ours.shape, bool)
        for s in shapes:
            c = coverage(s, a.height, a.width)
            edges |= (c > 0) & (c < 1)
        assert not np.any((ours != reference) & valid & ~_grow(edges))


@needs_samples
def test_panoptic_sample_segments_match_segments_info():
    path = COCO / "coco2017_subset" / "panoptic.json"
    data = json.loads(path.read_text())
    annotations = coco_panoptic.read(path, None)
    assert len(annotations) == 20
    names = {c["id"]: c["name"] for c in data["categories"]}
    for entry, annotation in zip(data["annotations"], annotations):
        assert annotation.image_path is not None and annotation.image_path.stem == Path(entry["file_name"]).stem
        assert [s.label for s in annotation.shapes] == [names[s["category_id"]] for s in entry["segments_info"]]
        assert [int(s.raster.sum()) for s in annotation.shapes] == [s["area"] for s in entry["segments_info"]]
        assert sum(s.raster.astype(int) for s in annotation.shapes).max() == 1   # segments never overlap


@needs_samples
def test_looks_like_tells_instances_from_panoptic():
    assert coco.looks_like(COCO / "coco2017_subset" / "instances.json")
    assert not coco.looks_like(COCO / "coco2017_subset" / "panoptic.json")
    assert coco_panoptic.looks_like(COCO / "coco2017_subset" / "panoptic.json")
    with pytest.raises(LabelFormatError, match="this is a COCO panoptic file"):
        coco.read(COCO / "coco2017_subset" / "panoptic.json", None)
    assert not coco_panoptic.looks_like(COCO / "coco2017_subset" / "rle.json")
    assert coco.looks_like(COCO / "labelme2coco_instances")
    assert not coco.looks_like(LABELME / "data_annotated")


# --- hand-written edge cases ------------------------------------------------------------------------------------------

def test_several_rings_are_parts_not_holes(tmp_path):
    outer, inner, apart = _square(1, 1, 7, 7), _square(3, 3, 5, 5), _square(8, 1, 10, 3)
    path = _write(tmp_path / "c.json", _coco([{"id": 1, "image_id": 1, "category_id": 1,
                                               "segmentation": [outer, inner, apart]}]))
    (annotation,) = coco.read(path, None)
    assert len(annotation.shapes) == 3 and all(not s.holes for s in annotation.shapes)
    mask = _mask(annotation)
    assert (mask[1:7, 1:7] == 1).all() and (mask[1:3, 8:10] == 1).all()    # the inner square is not cut out
    assert mask.sum() == 36 + 4


def test_later_annotations_on_top_and_crowds_underneath(tmp_path):
    crowd_rle = {"size": [8, 10], "counts": [0, 80]}           # the whole image, drawn first whatever its place
    path = _write(tmp_path / "c.json", _coco([
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [_square(0, 0, 6, 8)]},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [_square(4, 0, 10, 8)]},
        {"id": 3, "image_id": 1, "category_id": 2, "iscrowd": 1, "segmentation": crowd_rle}]))
    mask = _mask(coco.read(path, None)[0])
    assert (mask[:, :4] == 1).all() and (mask[:, 4:] == 2).all()   # car (later) over road; the crowd shows nowhere
    holey = _write(tmp_path / "h.json", _coco([
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [_square(0, 0, 6, 8)]},
        {"id": 3, "image_id": 1, "category_id": 2, "iscrowd": 1, "segmentation": crowd_rle}]))
    mask = _mask(coco.read(holey, None)[0])
    assert (mask[:, :6] == 1).all() and (mask[:, 6:] == 255).all()
    assert (_mask(coco.read(holey, None, crowd="class")[0])[:, 6:] == 2).all()


def test_column_major_rle_and_bbox_fallback(tmp_path):
    """COCO RLE runs go down columns; an empty segmentation with a bbox is drawn as the box."""
    rle = {"size": [8, 10], "counts": [8 * 2 + 3, 2, 80 - 21]}   # column 2, rows 3-4
    path = _write(tmp_path / "c.json", _coco([
        {"id": 1, "image_id": 1, "category_id": 2, "segmentation": rle},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [], "bbox": [6, 2, 3, 4]}]))
    mask = _mask(coco.read(path, None)[0])
    expected = np.zeros((8, 10), np.uint8)
    expected[3:5, 2] = 2
    expected[2:6, 6:9] = 1
    assert np.array_equal(mask, expected)


def test_images_without_annotations_and_string_ids(tmp_path):
    images = [{"id": "a", "file_name": "a.jpg", "width": 4, "height": 4},
              {"id": "b", "file_name": "b.jpg", "width": 4, "height": 4}]
    path = _write(tmp_path / "c.json", _coco([{"id": 1, "image_id": "b", "category_id": 1,
                                               "segmentation": [_square(0, 0, 4, 4)]}], images=images))
    a, b = coco.read(path, None)
    assert (a.file_name, len(a.shapes), b.file_name, len(b.shapes)) == ("a.jpg", 0, "b.jpg", 1)


def test_coco_json_names_give_their_images_split(tmp_path):
    """COCO's own instances_train2017.json and instances_val2017.json: the dataset's train and validation."""
    for name, split in (("instances_train2017", "train"), ("instances_val2017", "validation"),
                        ("panoptic_test2017", "test"), ("instances_extra2017", None), ("_annotations.coco", None)):
        path = _write(tmp_path / "annotations" / f"{name}.json", _coco([]))
        assert [a.split for a in coco.read(path, None)] == [split], name


def test_image_files_found_in_coco_layouts_and_escapes_refused(tmp_path):
    Image.new("RGB", (10, 8)).save(tmp_path / "val2017.jpg")
    (tmp_path / "val2017").mkdir()
    Image.new("RGB", (10, 8)).save(tmp_path / "val2017" / "a.jpg")
    path = _write(tmp_path / "annotations" / "instances_val2017.json", _coco([]))
    (annotation,) = coco.read(path, None)                       # export folder: the parent of annotations/
    assert annotation.image_path == (tmp_path / "val2017" / "a.jpg").resolve()
    assert coco.read(tmp_path, None)[0].image_path == annotation.image_path
    missing = _write(tmp_path / "m" / "c.json", _coco([], images=[{"id": 1, "file_name": "nowhere.jpg",
                                                                   "width": 4, "height": 4}]))
    assert coco.read(missing, None)[0].image_path is None
    for bad in ("../val2017.jpg", "/etc/passwd"):
        escape = _write(tmp_path / "e" / "c.json", _coco([], images=[{"id": 1, "file_name": bad,
                                                                      "width": 4, "height": 4}]))
        with pytest.raises(LabelFormatError, match=f"file_name '{bad}' points outside the export folder"):
            coco.read(escape, None)                             # as written ('./../val2017.jpg' was quoted)


def test_panoptic_hand_written(tmp_path):
    ids = np.zeros((4, 6), np.int64)
    ids[:, :3] = 7                        # road
    ids[:2, 3:] = 300 + 256 * 256 * 2     # car, an id needing all three channels
    ids[2:, 3:] = 9                       # crowd of cars
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    (tmp_path / "panoptic_x").mkdir()
    Image.fromarray(rgb).save(tmp_path / "panoptic_x" / "a.png")
    segments = [{"id": 7, "category_id": 1, "iscrowd": 0}, {"id": 300 + 131072, "category_id": 2, "iscrowd": 0},
                {"id": 9, "category_id": 2, "iscrowd": 1}]
    data = _coco([{"image_id": 1, "file_name": "a.png", "segments_info": segments}], width=6, height=4)
    path = _write(tmp_path / "panoptic_x.json", data)
    (annotation,) = coco_panoptic.read(tmp_path, None)
    expected = np.array([[1, 1, 1, 2, 2, 2]] * 2 + [[1, 1, 1, 255, 255, 255]] * 2, np.uint8)
    assert np.array_equal(_mask(annotation), expected)
    segments.pop(0)                                            # id 7 is in the PNG but no longer listed
    _write(path, data)
    with pytest.raises(LabelFormatError, match=r"panoptic_x.json: annotation 0: the PNG holds segment id\(s\) \[7\]"):
        coco_panoptic.read(path, None)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][0].update(file_name="gone.png"), "panoptic PNG 'gone.png' not found"),
    (lambda d: d["images"][0].update(width=5), "a.png is 6x4, the image is 5x4"),
    (lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99), "category_id 99 is not in"),
    (lambda d: d["annotations"][0].update(image_id=5), "image_id 5 is not in images"),
    (lambda d: d["annotations"][0].update(file_name="grey.png"), "grey.png is a L image; segment-id PNGs are RGB"),
])
def test_panoptic_malformed(tmp_path, change, message):
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((4, 6, 3), 1, np.uint8)).save(tmp_path / "masks" / "a.png")   # id 1 + 256 + 65536
    Image.fromarray(np.full((4, 6), 1, np.uint8)).save(tmp_path / "masks" / "grey.png")
    data = _coco([{"image_id": 1, "file_name": "a.png",
                   "segments_info": [{"id": 1 + 256 + 65536, "category_id": 1}]}], width=6, height=4)
    change(data)
    path = _write(tmp_path / "p.json", data)
    with pytest.raises(LabelFormatError, match=re.escape(message)) as error:
        coco_panoptic.read(path, None)
    assert str(path) in str(error.value)


def test_detection_of_hand_written_files(tmp_path):
    empty = _write(tmp_path / "a" / "instances.json", _coco([]))          # no annotation, so no "segmentation"
    assert coco.looks_like(empty) and coco.looks_like(tmp_path / "a") and not coco_panoptic.looks_like(empty)
    with pytest.raises(LabelFormatError, match="this is a COCO instances file"):
        coco_panoptic.read(_write(tmp_path / "i.json", _one()), None)
    labelme_like = _write(tmp_path / "b" / "x.json", {"shapes": [], "imagePath": "x.jpg", "imageHeight": 4})
    assert not coco.looks_like(labelme_like) and not coco_panoptic.looks_like(tmp_path / "b")
    for k in range(coco.DETECT_MOST_FILES):                                 # a folder of one file per image
        _write(tmp_path / "b" / f"{k}.json", _coco([]))
    assert not coco.looks_like(tmp_path / "b")


# --- malformed instances files ----------------------------------------------------------------------------------------

def _one(**fields) -> dict:
    return _coco([{"id": 5, "image_id": 1, "category_id": 1, "segmentation": [_square(0, 0, 2, 2)], **fields}])


@pytest.mark.parametrize("data, message", [
    (_one(image_id=42), "annotation 0 (id 5): image_id 42 is not in images"),
    (_one(category_id=9), "annotation 0 (id 5): category_id 9 is not in categories"),
    (_one(segmentation={"size": [4, 4], "counts": [16]}), "RLE size [4, 4] is not the image's [height, width] [8, 10]"),
    (_one(segmentation={"size": [8, 10], "counts": [70, 20]}), "RLE runs add up to 90 pixels, the image has 80"),
    (_one(segmentation={"size": [8, 10], "counts": [-1, 81]}), "RLE counts must be non-negative integers"),
    (_one(segmentation={"size": [8, 10], "counts": "0c"}), "compressed RLE counts are malformed"),
    (_one(segmentation={"size": [8, 10], "counts": "P1"}), "RLE runs add up to"),
    (_one(segmentation={"size": [8, 10], "counts": "\u00e9"}), "invalid character"),
    (_one(segmentation=[[0, 0, 1, 0, 1]]), "polygon 0 has an odd number of coordinates (5)"),
    (_one(segmentation=[[0, 0, "a", 1, 2, 2]]), "polygon 0 must be a flat list of numbers"),
    (_one(segmentation="road"), "segmentation must be a list of polygons or an RLE object"),
    (_coco([], images=[{"id": 1, "file_name": "a.jpg", "width": 0, "height": 8}]), "width and height must be"),
    (_coco([], images=[{"id": 1, "file_name": "a.jpg", "width": 10 ** 6, "height": 10 ** 6}]), "pixel limit"),
    (_coco([], categories=[{"id": 1, "name": "road"}, {"id": 1, "name": "car"}]), "id 1 is used twice"),
    ({"images": [], "annotations": [], "categories": {}}, "'categories' must be a list"),
])
def test_malformed_files_name_the_file_and_the_problem(tmp_path, data, message):
    path = _write(tmp_path / "bad.json", data)
    with pytest.raises(LabelFormatError, match=re.escape(message)) as error:
        coco.read_coco(path)
    assert str(error.value).startswith(str(path))


def test_compressed_counts_are_read_as_pycocotools_reads_them():
    """Our check of a compressed RLE string parses it exactly as pycocotools does, so a string that passes it
    decodes to those runs, and a damaged one is refused before pycocotools' C decoder sees it."""
    rng = random.Random(1)
    height, width = 7, 9
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, height * width), rng.randint(0, 12)))
        runs = np.diff([0, *cuts, height * width]).tolist()
        text = coco_mask.frPyObjects({"size": [height, width], "counts": runs}, height, width)["counts"].decode()
        assert coco._string_counts(text, "x") == runs
        damaged = list(text)
        damaged[rng.randrange(len(damaged))] = chr(rng.randint(48, 111))
        damaged = "".join(damaged)
        try:
            mask = coco.decode_rle({"size": [height, width], "counts": damaged}, height, width, "x")
        except LabelFormatError:
            continue
        runs = coco._string_counts(damaged, "x")
        expected = coco_mask.decode(coco_mask.frPyObjects({"size": [height, width], "counts": runs}, height, width))
        assert np.array_equal(mask, expected.astype(bool))


def test_bad_json_and_no_coco_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [], "annotations": [ {"segmentation": ')
    with pytest.raises(LabelFormatError, match=rf"{re.escape(str(path))}: not valid JSON"):
        coco.read_coco(path)
    with pytest.raises(LabelFormatError, match="no COCO instances JSON"):
        coco.read(tmp_path / "empty_folder_or_missing", None)


@pytest.mark.parametrize("text, message", [
    ('{"images": [{"id": 1, "width": 1' + "0" * 5000 + '}]}', "an integer has more than 4300 digits"),
    ('{"images": [], "annotations": [], "categories": [], "x": NaN}', "NaN is not a number JSON allows"),
    ('{"images": ' + "[" * 100_000, "nested too deeply"),
    (b'{"images": "\xff"}', "can't decode byte 0xff"),
])
def test_unusable_json_is_our_error(tmp_path, text, message):
    """Python's json raises ValueError (not JSONDecodeError) for integers past 4300 digits, and RecursionError for
    deep nesting; the shared loader (labels/jsonio.py) turns every such failure into our error."""
    path = tmp_path / "bad.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    for read in (coco.read_coco, coco_panoptic.read_panoptic):
        with pytest.raises(LabelFormatError, match=rf"{re.escape(str(path))}: not valid JSON.*{re.escape(message)}"):
            read(path)


def test_polygon_coordinates_must_be_finite(tmp_path):
    path = tmp_path / "inf.json"
    path.write_text(json.dumps(_one()).replace("[0, 0, 2, 0", "[1e999, 0, 2, 0"))
    with pytest.raises(LabelFormatError, match="polygon 0 must be a flat list of numbers"):
        coco.read_coco(path)


@pytest.mark.parametrize("name, problem", [("a.jpg" * 100, "too long"), ("a\0.jpg", "embedded null byte")])
def test_unusable_file_names_are_our_error(tmp_path, name, problem):
    """A file_name no file system takes (a part past 255 bytes, a NUL byte) used to escape as OSError/ValueError
    from the image lookup; images.resolve_inside refuses it for every reader."""
    image = {"id": 1, "file_name": name, "width": 10, "height": 8}
    path = _write(tmp_path / "bad.json", _coco([], images=[image]))
    with pytest.raises(LabelFormatError, match=rf"bad.json: image file_name .* is not a usable file name.*{problem}"):
        coco.read_coco(path)
    panoptic = _coco([{"image_id": 1, "file_name": name, "segments_info": []}])
    with pytest.raises(LabelFormatError, match=f"panoptic PNG file_name .* is not a usable file name.*{problem}"):
        coco_panoptic.read_panoptic(_write(tmp_path / "panoptic.json", panoptic))


def test_mutated_files_give_masks_or_our_error(tmp_path):
    """A small fuzz run (the benchmark-style script runs many more): any outcome but a mask or LabelFormatError
    is a bug."""
    base = _coco([
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [_square(0, 0, 6, 8), _square(7, 1, 9, 3)]},
        {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 1, "segmentation": {"size": [8, 10], "counts": [5, 75]}},
        {"id": 3, "image_id": 1, "category_id": 2, "segmentation": {"size": [8, 10], "counts": "j035000n0"}},
        {"id": 4, "image_id": 1, "category_id": 2, "segmentation": [], "bbox": [1, 1, 2, 2]}])
    label_map = LabelMap((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "road", (1, 1, 1))))
    base_masks = [annotation_to_mask(a, label_map, unknown="ignore").mask
                  for a in coco.read_coco(_write(tmp_path / "base.json", base))]
    assert len(base_masks) == 1 and base_masks[0].any()        # the unmutated file is valid
    rng = random.Random(0)
    for trial in range(150):
        data = json.loads(json.dumps(base))
        for _ in range(rng.randint(1, 3)):
            _mutate(data, rng)
        path = _write(tmp_path / f"m{trial}.json", data)
        try:
            for annotation in coco.read_coco(path):
                annotation_to_mask(annotation, label_map, unknown="ignore")
        except LabelFormatError:
            pass


_ODD_VALUES = [None, -1, 0, 1, 2 ** 70, 1.5, float("nan"), "", "x", "0c", [], [1], {}, {"size": [8, 10]}, True]


def _mutate(node, rng: random.Random) -> None:
    """Replace one value somewhere inside `node` by an odd one (or drop a key)."""
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = rng.choice(keys)
        if isinstance(node[key], (dict, list)) and node[key] and rng.random() < 0.7:
            node = node[key]
            continue
        if isinstance(node, dict) and rng.random() < 0.2:
            del node[key]
        else:
            node[key] = copy.deepcopy(rng.choice(_ODD_VALUES))   # shared lists would grow into cycles
        return
