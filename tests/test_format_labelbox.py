"""Labelbox reader: legacy v1 JSON and Export v2 NDJSON, real samples, hand-written files, malformed files."""
from __future__ import annotations

import copy
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streetseg_jax.labels.convert import annotation_to_mask
from streetseg_jax.labels.formats import labelbox
from streetseg_jax.labels.label_map import ClassInfo, LabelMap
from streetseg_jax.labels.shapes import Annotation, LabelFormatError

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "annotation-samples" / "labelbox"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"annotation samples not found at {SAMPLES}")
LABEL_MAP = LabelMap((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "road", (1, 1, 1)),
                      ClassInfo(2, "car", (2, 2, 2)), ClassInfo(3, "tree", (3, 3, 3))))
W, H = 12, 8


def _mask(annotation: Annotation) -> np.ndarray:
    return annotation_to_mask(annotation, LABEL_MAP).mask


def _image(path: Path, width: int = W, height: int = H) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 90, 90)).save(path)


def _binary_png(path: Path, rows: slice, cols: slice, width: int = W, height: int = H) -> None:
    pixels = np.zeros((height, width), np.uint8)
    pixels[rows, cols] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _pts(*xy) -> list[dict]:
    return [{"x": x, "y": y} for x, y in zip(xy[::2], xy[1::2])]


def _v1_rows() -> list[dict]:
    objects = [
        {"featureId": "f-road", "title": "Road", "value": "road", "polygon": _pts(0, 4, 12, 4, 12, 8, 0, 8),
         "instanceURI": "https://api.labelbox.com/masks/feature/f-road?token=x"},
        {"featureId": "f-car", "title": "Car", "value": "car", "bbox": {"top": 3, "left": 2, "height": 3, "width": 4}},
        {"featureId": "f-line", "title": "Road", "value": "road", "line": _pts(0, 0, 5, 5)},
        {"featureId": "f-point", "title": "Car", "value": "car", "point": {"x": 1, "y": 1}},
        {"featureId": "f-tree", "title": "Tree", "value": "tree",
         "instanceURI": "https://api.labelbox.com/masks/feature/f-tree?token=x"}]
    return [{"ID": "l1", "External ID": "street_001.jpg", "Labeled Data": "https://x/street_001.jpg",
             "Skipped": False, "Label": {"objects": objects, "classifications": []}},
            {"ID": "l2", "External ID": "street_002.jpg", "Labeled Data": "https://x/2.jpg", "Skipped": True,
             "Label": {}},
            {"ID": "l3", "External ID": "street_003", "Labeled Data": "https://x/3.jpg", "Label": {"objects": []}}]


def _v1_export(tmp_path: Path, rows=None) -> Path:
    _image(tmp_path / "images" / "street_001.jpg")
    _image(tmp_path / "street_003.png")                      # External ID without extension: found by stem
    _binary_png(tmp_path / "masks" / "f-tree.png", slice(0, 2), slice(8, 12))
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_v1_rows() if rows is None else rows))
    return path


def _v2_row(name: str, objects: list | None, project: str = "p1", width: int = W, height: int = H) -> dict:
    labels = [] if objects is None else [{"id": "l", "annotations": {"objects": objects, "classifications": []}}]
    return {"data_row": {"id": f"dr-{name}", "external_id": name, "row_data": f"https://storage.example/{name}"},
            "media_attributes": {"height": height, "width": width, "mime_type": "image/jpeg"},
            "projects": {project: {"name": "streets", "labels": labels}}}


def _v2_objects() -> list[dict]:
    return [
        {"feature_id": "g-road", "name": "road", "annotation_kind": "ImagePolygon",
         "polygon": _pts(0, 4, 12, 4, 12, 8, 0, 8)},
        {"feature_id": "g-car", "name": "car", "annotation_kind": "ImageBoundingBox",
         "bounding_box": {"top": 3, "left": 2, "height": 3, "width": 4}},
        {"feature_id": "g-pt", "name": "car", "annotation_kind": "ImagePoint", "point": {"x": 3, "y": 3}},
        {"feature_id": "g-tree", "name": "tree", "annotation_kind": "ImageSegmentationMask",
         "mask": {"url": "https://api.labelbox.com/api/v1/projects/p1/annotations/g-tree/index/1/mask"}},
        {"feature_id": "g-tree2", "name": "tree", "annotation_kind": "ImageSegmentationMask",
         "composite_mask": {"url": "https://api.labelbox.com/api/v1/tasks/t/masks/m/index/1",
                            "color_rgb": [0, 200, 10]}}]


def _v2_export(tmp_path: Path, rows=None) -> Path:
    _image(tmp_path / "street_001.jpg")
    _binary_png(tmp_path / "masks" / "g-tree.png", slice(0, 2), slice(8, 12))
    composite = np.zeros((H, W, 3), np.uint8)
    composite[0:2, 0:3] = (0, 200, 10)
    composite[0:2, 3:5] = (200, 0, 0)                         # another object's colour: not this one's
    Image.fromarray(composite).save(tmp_path / "masks" / "street_001.png")
    rows = [_v2_row("street_001.jpg", _v2_objects()), _v2_row("street_009.jpg", None)] if rows is None else rows
    path = tmp_path / "export.ndjson"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return path


def _expected_mask() -> np.ndarray:
    expected = np.zeros((H, W), np.uint8)
    expected[4:, :] = 1               # road polygon
    expected[3:6, 2:6] = 2            # car box on top
    expected[0:2, 8:12] = 3           # tree mask
    return expected


# --- v1 -------------------------------------------------------------------------------------------------------------

def test_v1_polygons_boxes_and_local_masks(tmp_path):
    path = _v1_export(tmp_path)
    first, third = labelbox.read(path, LABEL_MAP)               # the skipped row is left out
    assert (first.file_name, first.width, first.height) == ("street_001.jpg", W, H)
    assert first.image_path == (tmp_path / "images" / "street_001.jpg").resolve()
    assert [s.label for s in first.shapes] == ["Road", "Car", "Tree"]      # line and point cover nothing
    assert first.no_area == ["line", "point"]                               # said by check
    assert np.array_equal(_mask(first), _expected_mask())
    assert third.image_path == (tmp_path / "street_003.png").resolve() and third.shapes == []
    assert labelbox.read(tmp_path, LABEL_MAP)[0].shapes[0].label == "Road"   # a folder works too


def test_v1_needs_the_local_image_for_its_size(tmp_path):
    path = _v1_export(tmp_path)
    (tmp_path / "images" / "street_001.jpg").unlink()
    with pytest.raises(LabelFormatError, match=r"data row 0 \(street_001.jpg\): Labelbox v1 exports record no image "
                                               r"size and the image 'street_001.jpg' is not in"):
        labelbox.read(path, LABEL_MAP)
    rows = _v1_rows()
    rows[0]["Media Attributes"] = {"width": W, "height": H, "mimeType": "image/jpeg"}
    assert labelbox.read(_v1_export(tmp_path / "sized", rows), LABEL_MAP)[0].width == W


def test_v1_mask_without_a_local_file_says_where_to_put_it(tmp_path):
    path = _v1_export(tmp_path)
    (tmp_path / "masks" / "f-tree.png").unlink()
    with pytest.raises(LabelFormatError, match=r"object 4: the segmentation mask could not be loaded: .*need "
                                               r"credentials.* save it as .*masks/f-tree.png"):
        labelbox.read(path, LABEL_MAP)


@needs_samples
def test_v1_real_export(tmp_path):
    """The real v1 export (a Kobe street photo known by URL only): with the image and the one segmentation mask
    saved locally it reads 4 boxes, 1 mask and 2 polygons; the point and the 2 polylines cover nothing."""
    shutil.copy(SAMPLES / "v1_json_export_image.json", tmp_path)
    path = tmp_path / "v1_json_export_image.json"
    with pytest.raises(LabelFormatError, match="record no image size"):
        labelbox.read(path, None)
    _image(tmp_path / "images" / "2560px-Kitano_Street_Kobe01s5s4110.jpg", 2560, 1920)
    with pytest.raises(LabelFormatError, match="masks/ckr2k459500063h69uiumklz0.png"):
        labelbox.read(path, None)
    _binary_png(tmp_path / "masks" / "ckr2k459500063h69uiumklz0.png", slice(0, 100), slice(0, 100), 2560, 1920)
    (annotation,) = labelbox.read(tmp_path, None)
    assert [s.label for s in annotation.shapes] == ["bounding_box"] * 4 + ["segmentation"] + ["polygon"] * 2
    box = annotation.shapes[0].exterior
    assert box.min(axis=0).tolist() == [965, 1333] and box.max(axis=0).tolist() == [965 + 594, 1333 + 186]
    assert annotation.shapes[4].raster.sum() == 100 * 100


# --- v2 -------------------------------------------------------------------------------------------------------------

def test_v2_polygons_boxes_and_masks(tmp_path):
    path = _v2_export(tmp_path)
    (annotation,) = labelbox.read(path, LABEL_MAP)              # the row with no label yet is left out
    assert (annotation.file_name, annotation.width, annotation.height) == ("street_001.jpg", W, H)
    assert annotation.image_path == (tmp_path / "street_001.jpg").resolve()
    expected = _expected_mask()
    expected[0:2, 0:3] = 3                                     # the composite mask's pixels of this colour only
    assert np.array_equal(_mask(annotation), expected) and annotation.no_area == ["point"]


def test_v2_projects_and_first_label(tmp_path):
    row = _v2_row("street_001.jpg", _v2_objects()[:1])
    row["projects"]["p1"]["labels"].append({"annotations": {"objects": _v2_objects()[1:2]}})   # a second labeller
    row["projects"]["p2"] = {"labels": [{"annotations": {"objects": _v2_objects()[1:2]}}]}
    path = _v2_export(tmp_path, [row])
    assert [s.label for s in labelbox.read(path, None)[0].shapes] == ["road", "car"]
    assert [s.label for s in labelbox.read(path, None, project="p1")[0].shapes] == ["road"]
    assert labelbox.read(path, None, project="p3") == []


@needs_samples
def test_v2_real_excerpt_reads_sizes_and_no_shapes():
    """The real v2 excerpt holds classifications only: five labelled rows, sizes from media_attributes."""
    annotations = labelbox.read(SAMPLES / "export_v2_excerpt.ndjson", None)
    assert [(a.width, a.height) for a in annotations] == [(390, 325), (264, 266), (254, 339), (336, 346), (367, 381)]
    assert all(a.shapes == [] and a.image_path is None for a in annotations)
    assert annotations[0].file_name == "bdabc5cfa3eb4d16ace5af44cbc0cf9d_vexcel"    # global_key: no external_id


@needs_samples
def test_detection_of_the_samples():
    assert labelbox.looks_like(SAMPLES / "v1_json_export_image.json")
    assert labelbox.looks_like(SAMPLES / "export_v2_excerpt.ndjson")
    assert not labelbox.looks_like(SAMPLES / "ndjson_import_image.json")
    with pytest.raises(LabelFormatError, match="annotation-import .* not an export"):
        labelbox.read(SAMPLES / "ndjson_import_image.json", None)
    coco = SAMPLES.parent / "coco" / "coco2017_subset" / "instances.json"
    assert not labelbox.looks_like(coco)


# --- malformed files -------------------------------------------------------------------------------------------------

def test_bad_json_names_the_file_and_line(tmp_path):
    v1 = tmp_path / "a" / "export.json"
    v1.parent.mkdir()
    v1.write_text('[{"Labeled Data": "x", "Label": {"objects": [')
    with pytest.raises(LabelFormatError, match=rf"{re.escape(str(v1))}: not valid JSON"):
        labelbox.read(v1, None)
    v2 = _v2_export(tmp_path / "b")
    v2.write_text(v2.read_text() + '{"data_row": {"id": 1}, "projects": \n')
    with pytest.raises(LabelFormatError, match=rf"{re.escape(str(v2))} line 4: not valid JSON"):
        labelbox.read(v2, None)


@pytest.mark.parametrize("change, message", [
    (lambda o: o[0].update(polygon=[{"x": 1}]), "object 0: polygon must be a list of {'x': number, 'y': number}"),
    (lambda o: o[1].update(bounding_box={"top": 1, "left": 1, "height": 2}), "object 1: box must have numeric top"),
    (lambda o: o[0].pop("name"), "object 0: has no class name (name or value)"),
    (lambda o: o.append({"name": "road", "annotation_kind": "ImageSomething"}), "object 5 ('road'): has no polygon"),
    (lambda o: o[4]["composite_mask"].update(color_rgb=[0, 300, 0]), "composite_mask.color_rgb must be [r, g, b]"),
    (lambda o: o[3].update(feature_id="g-gone"), "object 3: the segmentation mask could not be loaded"),
    (lambda o: o.append("road"), "object 5: must be a JSON object"),
])
def test_malformed_v2_objects(tmp_path, change, message):
    objects = _v2_objects()
    change(objects)
    path = _v2_export(tmp_path, [_v2_row("street_001.jpg", objects)])
    with pytest.raises(LabelFormatError, match=re.escape(message)) as error:
        labelbox.read(path, None)
    assert str(error.value).startswith(f"{path} line 1 (street_001.jpg): ")


def test_wrong_sizes_and_escaping_names_are_refused(tmp_path):
    path = _v2_export(tmp_path, [_v2_row("street_001.jpg", _v2_objects(), width=W + 1)])
    with pytest.raises(LabelFormatError, match=r"mask g-tree.png is 12x8, the image is 13x8"):
        labelbox.read(path, None)
    path = _v2_export(tmp_path, [_v2_row("street_001.jpg", [], width=0)])
    with pytest.raises(LabelFormatError, match="image size must be positive whole numbers"):
        labelbox.read(path, None)
    path = _v2_export(tmp_path, [_v2_row("../../etc/passwd", [])])
    with pytest.raises(LabelFormatError, match="points outside the export folder"):
        labelbox.read(path, None)
    path = _v2_export(tmp_path, [{"data_row": {"id": "x"}, "projects": []}])
    with pytest.raises(LabelFormatError, match="line 1: 'projects' must be an object keyed by project id"):
        labelbox.read(path, None)


def test_fuzz_findings_are_our_errors(tmp_path):
    """What tools/fuzz_readers.py found: a 5000-digit integer (Python's json raises a plain ValueError), an
    external_id too long for a file name (OSError from the image lookup), sizes past the pixel limit."""
    v2 = _v2_export(tmp_path / "digits", [_v2_row("street_001.jpg", [])])
    v2.write_text(v2.read_text().replace('"height": 8', '"height": 8' + "0" * 5000))
    with pytest.raises(LabelFormatError, match=rf"{re.escape(str(v2))} line 1: not valid JSON .*4300 digits"):
        labelbox.read(v2, None)
    v1 = _v1_export(tmp_path / "digits_v1")
    v1.write_text(v1.read_text().replace('"top": 3', '"top": 3' + "0" * 5000))
    with pytest.raises(LabelFormatError, match=rf"{re.escape(str(v1))}: not valid JSON .*4300 digits"):
        labelbox.read(v1, None)
    for name, problem in (("street_001.jpg" * 30, "too long"), ("street\0.jpg", "embedded null byte"),
                          ("9" * 400, "too long")):
        path = _v2_export(tmp_path / "names", [_v2_row(name, [])])
        with pytest.raises(LabelFormatError, match=rf"line 1 \(.*\): image .* is not a usable file name .*{problem}"):
            labelbox.read(path, None)
    path = _v2_export(tmp_path / "huge", [_v2_row("street_001.jpg", [], width=10 ** 6, height=10 ** 6)])
    with pytest.raises(LabelFormatError, match="line 1 .*image size 1000000x1000000: too large"):
        labelbox.read(path, None)


def test_mutated_exports_give_masks_or_our_error(tmp_path):
    """A small fuzz run over both formats: any outcome but a mask or LabelFormatError is a bug."""
    rng = random.Random(0)
    v1_rows, v2_rows = _v1_rows(), [_v2_row("street_001.jpg", _v2_objects())]
    for trial in range(120):
        folder = tmp_path / str(trial)
        rows = copy.deepcopy(v1_rows if trial % 2 else v2_rows)
        for _ in range(rng.randint(1, 3)):
            _mutate(rows, rng)
        path = _v1_export(folder, rows) if trial % 2 else _v2_export(folder, rows)
        try:
            for annotation in labelbox.read(path, None):
                annotation_to_mask(annotation, LABEL_MAP, unknown="ignore")
        except LabelFormatError:
            pass


_ODD_VALUES = [None, -1, 0, 2 ** 70, 1.5, float("inf"), "", "x", "../x", [], [{}], {}, {"x": 1}, True]


def _mutate(node, rng: random.Random) -> None:
    """Replace one value somewhere inside `node` by an odd one (or drop a key)."""
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = rng.choice(keys)
        if isinstance(node[key], (dict, list)) and node[key] and rng.random() < 0.75:
            node = node[key]
            continue
        if isinstance(node, dict) and rng.random() < 0.2:
            del node[key]
        else:
            node[key] = copy.deepcopy(rng.choice(_ODD_VALUES))
        return
