"""Tests for labels/formats/cityscapes.py and mapillary.py: polygon JSON per image, drawing in file order.

No real Cityscapes polygon file is public outside the registration wall, so the Cityscapes tests use hand-made files
laid out like the dataset (gtFine/<split>/<city>/..., leftImg8bit/<split>/<city>/...). Mapillary is tested on
Datumaro's Vistas v2.0 fixture and on hand-made files in the real dataset's spelling.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from streetseg_jax.labels import formats
from streetseg_jax.labels.convert import UnknownLabelsError, annotation_to_mask
from streetseg_jax.labels.formats import cityscapes, mapillary
from streetseg_jax.labels.label_map import ClassInfo, LabelMap, default_label_map
from streetseg_jax.labels.shapes import LabelFormatError

sys.path.insert(0, str(ROOT / "tools"))
import sample_exports  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VISTAS = DATA / "annotation-samples" / "mapillary_vistas_v2" / "datumaro_fixture"
needs_vistas = pytest.mark.skipif(not VISTAS.is_dir(), reason=f"Mapillary Vistas sample not found at {VISTAS}")

STREET = LabelMap((ClassInfo(0, "unlabeled", (0, 0, 0)), ClassInfo(1, "road", (128, 64, 128)),
                   ClassInfo(2, "sidewalk", (244, 35, 232)), ClassInfo(3, "car", (0, 0, 142)),
                   ClassInfo(4, "building", (70, 70, 70)), ClassInfo(5, "bird", (165, 42, 42), ("separator",))))
UNLABELED, ROAD, SIDEWALK, CAR, BUILDING = range(5)
STEM = "aachen_000000_000019"


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_image(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height)).save(path)
    return path


def cityscapes_objects():
    """A 16 x 8 street: road below, sidewalk on the right, a car group, a deleted building, a licence plate."""
    return [
        {"label": "road", "polygon": [[0, 4], [16, 4], [16, 8], [0, 8]], "deleted": 0, "verified": 1,
         "date": "12-Jan-2015 10:00:00", "user": "annotator", "id": 0},
        {"label": "sidewalk", "polygon": [[12, 4], [16, 4], [16, 8], [12, 8]]},
        {"label": "cargroup", "polygon": [[2, 5], [6, 5], [6, 7], [2, 7]]},
        {"label": "building", "polygon": [[0, 0], [16, 0], [16, 8], [0, 8]], "deleted": 1},
        {"label": "license plate", "polygon": [[3, 6], [5, 6], [5, 7], [3, 7]]},
    ]


def cityscapes_export(root: Path, objects=None) -> Path:
    """root/gtFine/train/aachen/<stem>_gtFine_polygons.json and its leftImg8bit image."""
    write_image(root / "leftImg8bit" / "train" / "aachen" / f"{STEM}_leftImg8bit.png", 16, 8)
    return write_json(root / "gtFine" / "train" / "aachen" / f"{STEM}_gtFine_polygons.json",
                      {"imgHeight": 8, "imgWidth": 16, "objects": cityscapes_objects() if objects is None else objects})


# --- Cityscapes ------------------------------------------------------------------------------------------------------

def test_cityscapes_export(tmp_path):
    json_path = cityscapes_export(tmp_path)
    (annotation,) = cityscapes.read(tmp_path, STREET)
    assert annotation.source == json_path
    assert (annotation.width, annotation.height) == (16, 8)
    assert annotation.file_name == f"{STEM}_leftImg8bit.png"
    assert annotation.image_path == (tmp_path / "leftImg8bit" / "train" / "aachen" / annotation.file_name).resolve()
    # the deleted building and the licence plate are not drawn; cargroup is drawn as car
    assert [s.label for s in annotation.shapes] == ["road", "sidewalk", "car"]
    expected = np.full((8, 16), UNLABELED, np.uint8)
    expected[4:, :] = ROAD
    expected[4:, 12:] = SIDEWALK             # later in the file: on top of the road
    expected[5:7, 2:6] = CAR
    np.testing.assert_array_equal(annotation_to_mask(annotation, STREET).mask, expected)


def test_cityscapes_group_label_kept_when_the_label_map_knows_it(tmp_path):
    cityscapes_export(tmp_path)
    label_map = LabelMap(STREET.classes[:3] + (ClassInfo(3, "car", (0, 0, 142), ("cargroup",)),) + STREET.classes[4:])
    (annotation,) = cityscapes.read(tmp_path, label_map)
    assert [s.label for s in annotation.shapes] == ["road", "sidewalk", "cargroup"]
    label_map = LabelMap(STREET.classes + (ClassInfo(6, "license_plate", (0, 0, 90)),))
    (annotation,) = cityscapes.read(tmp_path, label_map)
    assert [s.label for s in annotation.shapes][-1] == "license plate"


def test_cityscapes_one_file_any_folder_and_fine_before_coarse(tmp_path):
    json_path = cityscapes_export(tmp_path)
    coarse = write_json(tmp_path / "gtCoarse" / "train" / "aachen" / f"{STEM}_gtCoarse_polygons.json",
                        {"imgHeight": 8, "imgWidth": 16, "objects": []})
    assert [a.source for a in cityscapes.read(tmp_path, STREET)] == [json_path]
    assert [a.source for a in cityscapes.read(tmp_path / "gtFine" / "train", STREET)] == [json_path]
    (alone,) = cityscapes.read(json_path, STREET)
    assert alone.image_path is not None
    (coarse_only,) = cityscapes.read(tmp_path / "gtCoarse", STREET)
    assert coarse_only.source == coarse and coarse_only.shapes == []


def test_cityscapes_image_beside_the_json_or_missing(tmp_path):
    json_path = write_json(tmp_path / f"{STEM}_gtFine_polygons.json", {"imgHeight": 8, "imgWidth": 16, "objects": []})
    assert cityscapes.read(json_path, STREET)[0].image_path is None
    image = write_image(tmp_path / f"{STEM}_leftImg8bit.png", 16, 8)
    assert cityscapes.read(json_path, STREET)[0].image_path == image.resolve()


def test_cityscapes_looks_like(tmp_path):
    assert not cityscapes.looks_like(tmp_path)
    cityscapes_export(tmp_path)
    assert cityscapes.looks_like(tmp_path)
    assert not mapillary.looks_like(tmp_path)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"imgWidth": 16, "objects": []}', "imgHeight"),
    ('{"imgWidth": 16.5, "imgHeight": 8, "objects": []}', "imgWidth"),
    ('{"imgWidth": 0, "imgHeight": 8, "objects": []}', "not positive"),
    ('{"imgWidth": 100000, "imgHeight": 100000, "objects": []}', "too large"),
    ('{"imgWidth": 16, "imgHeight": 8, "objects": {}}', "'objects' must be a list"),
    ('{"imgWidth": 16, "imgHeight": 8, "objects": [{"polygon": [[0, 0], [1, 0], [1, 1]]}]}', "no 'label'"),
    ('{"imgWidth": 16, "imgHeight": 8, "objects": [{"label": "road", "polygon": [[0, 0, 1]]}]}', "[x, y]"),
    ('{"imgWidth": 16, "imgHeight": 8, "objects": [{"label": "road", "polygon": [["0", "1"]]}]}', "[x, y]"),
    ('{"imgWidth": 16, "imgHeight": 8, "objects": [{"label": "road", "polygon": [[true, 1]]}]}', "[x, y]"),
    ('{"imgWidth": 16, "imgHeight": 8, "objects": [{"label": "road", "polygon": [[NaN, 1]]}]}', "not finite"),
    ('{"imgWidth": 16, "imgHeight": 8, "objects": [{"label": "road", "polygon": [[1e999, 1]]}]}', "not finite"),
    ('{"imgWidth": 16, "imgHeight": 8, "objects": [{"label": "road", "polygon": [[1' + "0" * 400 + ', 1]]}]}',
     "not finite"),
    # found by tools/fuzz_readers.py: Python's json raises a plain ValueError past 4300 digits
    ('{"imgWidth": 16, "imgHeight": 8, "objects": [{"label": "road", "polygon": [[1' + "0" * 5000 + ', 1]]}]}',
     "not valid JSON (an integer has more than 4300 digits"),
    ('{"imgWidth": 1' + "0" * 5000 + ', "imgHeight": 8, "objects": []}', "4300 digits"),
    ('{"imgWidth": 1e308, "imgHeight": 1e308, "objects": []}', "too large"),
    ('{"imgWidth": 16, "imgHeight": 8, "objects": [' + "[" * 100_000, "nested too deeply"),
])
def test_cityscapes_bad_files_name_the_file(tmp_path, content, problem):
    path = tmp_path / f"{STEM}_gtFine_polygons.json"
    path.write_text(content)
    with pytest.raises(LabelFormatError) as error:
        cityscapes.read(tmp_path, STREET)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_cityscapes_empty_folder(tmp_path):
    with pytest.raises(LabelFormatError, match="no Cityscapes"):
        cityscapes.read(tmp_path, STREET)


def label_ids_export(root: Path, ids: np.ndarray, kind: str = "labelIds") -> Path:
    """root/gtFine/train/aachen/<stem>_gtFine_<kind>.png holding `ids`, and its leftImg8bit photo."""
    write_image(root / "leftImg8bit" / "train" / "aachen" / f"{STEM}_leftImg8bit.png", ids.shape[1], ids.shape[0])
    path = root / "gtFine" / "train" / "aachen" / f"{STEM}_gtFine_{kind}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8), "L").save(path)
    return path


def street_label_ids() -> np.ndarray:
    """An 8 x 16 labelIds mask: unlabeled (0) above, road (7) below, sidewalk (8) and a polegroup (18) on it."""
    ids = np.zeros((8, 16), np.uint8)
    ids[4:] = 7
    ids[4:, 12:] = 8
    ids[5:7, 2:6] = 18
    return ids


def test_cityscapes_label_id_masks_are_read_by_their_names(tmp_path):
    """A Cityscapes package with the *_gtFine_labelIds.png masks alone was refused (read the polygons beside them,
    which it did not have)."""
    path = label_ids_export(tmp_path, street_label_ids())
    poles = LabelMap((*STREET.classes, ClassInfo(6, "pole", (153, 153, 153))))
    assert formats.detect(tmp_path) == "cityscapes"
    (annotation,) = formats.read("cityscapes", tmp_path, poles)
    assert annotation.source == path and annotation.split == "train"
    photo = tmp_path / "leftImg8bit" / "train" / "aachen" / f"{STEM}_leftImg8bit.png"
    assert annotation.image_path == photo.resolve()
    assert [s.label for s in annotation.shapes] == ["unlabeled", "road", "sidewalk", "pole"]    # polegroup: its base
    expected = np.full((8, 16), UNLABELED, np.uint8)
    expected[4:], expected[4:, 12:], expected[5:7, 2:6] = ROAD, SIDEWALK, 6
    np.testing.assert_array_equal(annotation_to_mask(annotation, poles).mask, expected)
    with pytest.raises(UnknownLabelsError, match="'pole'"):         # as a polygon of a class the map does not know
        annotation_to_mask(cityscapes.read(path, STREET)[0], STREET)
    mask = annotation_to_mask(cityscapes.read(path, STREET)[0], STREET, unknown="ignore").mask
    assert (mask[5:7, 2:6] == STREET.ignore_id).all() and (mask[4, :12] == ROAD).all()


def test_cityscapes_polygons_are_read_before_their_label_id_masks_and_train_ids_never(tmp_path):
    label_ids_export(tmp_path / "trainIds", street_label_ids(), kind="trainIds")
    with pytest.raises(LabelFormatError, match=r"no Cityscapes .* not \*_trainIds.png"):
        cityscapes.read(tmp_path / "trainIds", STREET)
    label_ids_export(tmp_path, np.full((8, 16), 26, np.uint8))
    json_path = cityscapes_export(tmp_path)
    (annotation,) = cityscapes.read(tmp_path, STREET)
    assert annotation.source == json_path and [s.label for s in annotation.shapes] == ["road", "sidewalk", "car"]


def test_cityscapes_label_id_mask_of_no_label_id_names_the_file(tmp_path):
    ids = street_label_ids()
    ids[0, 0] = 40
    path = label_ids_export(tmp_path, ids)
    with pytest.raises(LabelFormatError, match=r"pixel value\(s\) 40 are no Cityscapes label id") as error:
        cityscapes.read(tmp_path, STREET)
    assert str(path) in str(error.value)


# --- Mapillary Vistas ------------------------------------------------------------------------------------------------

@needs_vistas
def test_vistas_sample():
    annotations = mapillary.read(VISTAS, STREET)
    assert [(a.source.parent.parent.parent.name, a.file_name) for a in annotations] == [
        ("train", "2.jpg"), ("val", "0.jpg"), ("val", "1.jpg")]
    for a in annotations:
        assert (a.width, a.height) == (5, 5)                      # from the misspelt "heigth"
        assert a.image_path == (a.source.parents[2] / "images" / a.file_name).resolve()
    first = annotations[1].shapes[0]                               # [[0, 0, 1, 0, 2, 0, 2, 4, 0, 4]]: one flat list
    np.testing.assert_array_equal(first.exterior, [[0, 0], [1, 0], [2, 0], [2, 4], [0, 4]])
    # "animal--bird" is unknown to the label map, but config_v2.0.json calls it "Bird", which the label map knows;
    # the separator's readable name "Separator" is an alias of bird here; the bicycle stays unknown as written.
    assert [s.label for s in annotations[2].shapes] == ["object--vehicle--bicycle", "Separator",
                                                        "object--vehicle--bicycle"]
    assert [s.label for s in annotations[1].shapes] == ["Bird", "Separator"]


@needs_vistas
def test_vistas_sample_mask_and_looks_like():
    annotation = mapillary.read(VISTAS / "val" / "v2.0" / "polygons" / "0.json", STREET)[0]
    mask = annotation_to_mask(annotation, STREET).mask
    expected = np.zeros((5, 5), np.uint8)
    expected[0:4, 0:2] = expected[0:4, 3:4] = 5
    np.testing.assert_array_equal(mask, expected)
    assert mapillary.looks_like(VISTAS) and mapillary.looks_like(VISTAS / "val" / "v2.0" / "polygons")
    assert not cityscapes.looks_like(VISTAS)


def test_vistas_real_spelling_and_drawing_order(tmp_path):
    split = tmp_path / "training"
    write_image(split / "images" / "street.jpg", 10, 6)
    write_json(split / "v2.0" / "polygons" / "street.json", {"width": 10, "height": 6, "objects": [
        {"id": 0, "label": "construction--flat--road", "polygon": [[0, 3], [10, 3], [10, 6], [0, 6]]},
        {"id": 1, "label": "construction--flat--sidewalk", "polygon": [7, 3, 10, 3, 10, 6, 7, 6]},
        {"id": 2, "label": "object--vehicle--car", "polygon": [[1, 2], [4, 2], [4, 5], [1, 5]]},
    ]})
    write_json(tmp_path / "config_v2.0.json", {"labels": [
        {"name": "construction--flat--road", "readable": "Road", "color": [128, 64, 128]},
        {"name": "construction--flat--sidewalk", "readable": "Sidewalk", "color": [244, 35, 232]},
        {"name": "object--vehicle--car", "readable": "Car", "color": [0, 0, 142]}]})
    (annotation,) = mapillary.read(tmp_path, STREET)
    assert [s.label for s in annotation.shapes] == ["Road", "Sidewalk", "Car"]
    assert annotation.image_path == (split / "images" / "street.jpg").resolve()
    expected = np.zeros((6, 10), np.uint8)
    expected[3:, :] = ROAD
    expected[3:, 7:] = SIDEWALK
    expected[2:5, 1:4] = CAR
    np.testing.assert_array_equal(annotation_to_mask(annotation, STREET).mask, expected)


def test_vistas_without_config_or_images(tmp_path):
    write_json(tmp_path / "polygons" / "a.json", {"width": 4, "height": 4, "objects": [
        {"label": "construction--flat--road", "polygon": [[0, 0], [4, 0], [4, 4]]}]})
    (annotation,) = mapillary.read(tmp_path, STREET)
    assert annotation.shapes[0].label == "construction--flat--road"     # reported as unknown downstream
    assert annotation.image_path is None and annotation.file_name == "a.jpg"


@pytest.mark.parametrize("content, problem", [
    ("{oops", "not valid JSON"),
    ('{"height": 4, "objects": []}', "'width'"),
    ('{"width": 4, "height": 4}', "'objects' must be a list"),
    ('{"width": 4, "height": 4, "objects": ["road"]}', "JSON object"),
    ('{"width": 4, "height": 4, "objects": [{"label": 3, "polygon": []}]}', "no 'label'"),
    ('{"width": 4, "height": 4, "objects": [{"label": "road", "polygon": [0, 0, 1, 0, 1]}]}', "x, y numbers"),
    ('{"width": 4, "height": 4, "objects": [{"label": "road", "polygon": "0 0 1 0 1 1"}]}', "x, y numbers"),
    ('{"width": 4, "height": 4, "objects": [{"label": "road", "polygon": [[0, 0, 1], [1, 0]]}]}', "x, y numbers"),
    ('{"width": 4, "height": 4, "objects": [{"label": "road", "polygon": [[0, "a"], [1, 0]]}]}', "[x, y]"),
    ('{"width": 4, "height": 4, "objects": [{"label": "road", "polygon": [0, 1' + "0" * 5000 + ']}]}', "4300 digits"),
    ('{"width": 4, "heigth": 4' + "0" * 9 + ', "objects": []}', "too large"),
    ('{"width": 4, "height": Infinity, "objects": []}', "Infinity is not a number JSON allows"),
])
def test_vistas_bad_files_name_the_file(tmp_path, content, problem):
    path = tmp_path / "polygons" / "a.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(LabelFormatError) as error:
        mapillary.read(tmp_path, STREET)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_vistas_empty_folder(tmp_path):
    with pytest.raises(LabelFormatError, match="no Mapillary"):
        mapillary.read(tmp_path, STREET)
    assert not mapillary.looks_like(tmp_path)


@pytest.mark.parametrize("fmt, folder, expected", [
    ("cityscapes", "train", "train"), ("cityscapes", "val", "validation"), ("cityscapes", "train_extra", None),
    ("mapillary", "train", "train"), ("mapillary", "validation", "validation"), ("mapillary", "testing", "test"),
])
def test_the_split_folder_is_the_images_split(fmt, folder, expected, tmp_path):
    """A data build keeps an export's own splits (data/inputs.assign_splits): each reader says each image's."""
    export = sample_exports.write_export(fmt, tmp_path / "export")
    split_dir = next(p for p in export.rglob("train") if p.is_dir())
    if folder != "train":
        shutil.move(split_dir, split_dir.with_name(folder))
        if fmt == "cityscapes":
            shutil.move(export / "leftImg8bit" / "train", export / "leftImg8bit" / folder)
    annotation, = formats.read(fmt, export, default_label_map())
    assert annotation.split == expected
