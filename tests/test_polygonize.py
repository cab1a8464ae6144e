"""Tests for labels.polygonize (masks -> polygons with holes) and labels.writers (LabelMe, COCO, CVAT exports).

The round trip measured everywhere: mask -> mask_to_shapes -> rasterize (the same rasterizer every reader feeds)
-> fraction of pixels equal to the source mask.
"""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from streetseg_jax.labels.convert import annotation_to_mask, read_mask_png, write_mask_png
from streetseg_jax.labels.label_map import ClassInfo, LabelMap, default_label_map
from streetseg_jax.labels.polygonize import DEFAULT_TOLERANCE, IGNORE_LABEL, absorb_small_regions, mask_to_shapes
from streetseg_jax.labels.rasterize import rasterize
from streetseg_jax.labels import writers
from streetseg_jax.labels.shapes import Shape

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"          # see ../shared/data/camvid/SOURCE.md
PREDICTED = ROOT / "tests" / "data" / "predicted_masks"
LM = default_label_map()
BACKGROUND, TREE, GRASS, ROAD, SIDEWALK, BUILDING, SKY, CONCRETE = range(8)
CAMVID_NAMES = "sky building pole road pavement tree sign_symbol fence car pedestrian bicyclist".split()
# CamVid's void (11) becomes the ignore id, and is also the fill: pixels no shape covers are void.
CAMVID_MAP = LabelMap(tuple(ClassInfo(i, n, (20 * i, 10 * i, 5 * i)) for i, n in enumerate(CAMVID_NAMES)),
                      ignore_id=255, fill_id=255)


def shapes_to_mask(shapes, label_map, height, width, holes=True) -> np.ndarray:
    items = [(label_map.ignore_id if s.ignore else label_map.id_of(s.label),
              s if holes else Shape(s.label, s.exterior, (), s.z_order, s.ignore)) for s in shapes]
    return rasterize(items, height, width, label_map.fill_id, label_map.ignore_id).mask


def agreement(mask, label_map=LM, **kwargs) -> float:
    shapes = mask_to_shapes(mask, label_map, **kwargs)
    return float((shapes_to_mask(shapes, label_map, *mask.shape) == mask).mean())


def blob_mask(seed, height=90, width=120, classes=(TREE, GRASS, ROAD, SIDEWALK, BUILDING), smooth=5.0):
    """Smooth random regions of several classes and background (islands, holes, junctions): per pixel, the class
    whose smooth random field (coarse noise, upsampled bicubically) is highest."""
    rng = np.random.default_rng(seed)
    coarse = (max(2, int(height / smooth / 2)), max(2, int(width / smooth / 2)))
    fields = [np.asarray(Image.fromarray(rng.normal(size=coarse).astype(np.float32)).resize((width, height),
                                                                                            Image.BICUBIC))
              for _ in range(len(classes) + 1)]
    return np.array((BACKGROUND,) + tuple(classes), np.uint8)[np.argmax(fields, axis=0)]


def scene_mask(seed, height=360, width=480) -> np.ndarray:
    from streetseg_jax.data.synthetic import generate_scene

    _, objects = generate_scene(seed, height, width)
    items = [(LM.id_of(name), Shape(name, ring)) for name, rings in objects for ring in rings]
    return rasterize(items, height, width, LM.fill_id, LM.ignore_id).mask


def camvid_masks(count):
    """`count` masks spread over CamVid train+val, and the one whose round trip is the worst at the defaults."""
    files = sorted((CAMVID / "trainannot").glob("*.png")) + sorted((CAMVID / "valannot").glob("*.png"))
    if not files:
        pytest.skip(f"CamVid masks not found in {CAMVID}/trainannot and valannot")
    picked = files[::max(1, len(files) // count)][:count] + [f for f in files if f.name == "0016E5_02310.png"]
    for f in picked:
        mask = np.array(Image.open(f))
        mask[mask == 11] = 255
        yield f.name, mask


# --- exactness and structure -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_tolerance_zero_is_exact_on_blobs(seed):
    mask = blob_mask(seed)
    assert agreement(mask, tolerance=0, min_area=0) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_tolerance_zero_is_exact_on_pixel_noise(seed):
    """Independent random pixels: regions touching only at corners everywhere (the 4-connectivity saddles)."""
    mask = np.random.default_rng(seed).choice([BACKGROUND, ROAD, SIDEWALK], size=(24, 31)).astype(np.uint8)
    assert agreement(mask, tolerance=0, min_area=0) == 1.0


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(1, 12), st.sampled_from([0, 2.0]))
def test_random_masks_round_trip(seed, height, width, tolerance):
    """Tiny random masks (every corner a junction or a saddle, nesting everywhere, ignore regions): exact at
    tolerance 0, and at any tolerance the shapes without their holes stack up to the same mask as with them."""
    rng = np.random.default_rng(seed)
    mask = rng.choice(np.array([BACKGROUND, ROAD, SIDEWALK, LM.ignore_id], np.uint8), size=(height, width),
                      p=[0.4, 0.3, 0.2, 0.1])
    shapes = mask_to_shapes(mask, LM, tolerance=tolerance, min_area=0)
    with_holes = shapes_to_mask(shapes, LM, height, width)
    assert (shapes_to_mask(shapes, LM, height, width, holes=False) == with_holes).all()
    if tolerance == 0:
        assert (with_holes == mask).all()


def test_holes_survive_and_hole_contents_follow_their_owner():
    mask = np.full((40, 50), SKY, np.uint8)
    mask[5:35, 5:45] = ROAD
    mask[10:30, 10:40] = BACKGROUND           # a hole of the road, filled with the fill class...
    mask[14:26, 14:36] = BUILDING             # ...around a building...
    mask[18:22, 18:22] = ROAD                 # ...with a road island in a hole of its own
    shapes = mask_to_shapes(mask, LM, tolerance=0, min_area=0)
    road = [s for s in shapes if s.label == "road" and len(s.holes) == 1]
    assert len(road) == 1 and {s.label for s in shapes} == {"sky", "road", "background", "building"}
    for holes in (True, False):               # without holes, the later shapes must cover every hole exactly
        assert (shapes_to_mask(shapes, LM, 40, 50, holes=holes) == mask).all()
    depth = {id(s): s.z_order for s in shapes}
    assert [depth[id(s)] for s in shapes] == sorted(depth[id(s)] for s in shapes)
    simplified = mask_to_shapes(mask, LM)
    assert (shapes_to_mask(simplified, LM, 40, 50, holes=False) == mask).mean() > 0.99


def test_fill_class_is_not_exported_outside_holes():
    mask = np.zeros((30, 30), np.uint8)
    mask[5:25, 5:15] = ROAD
    shapes = mask_to_shapes(mask, LM, min_area=0)
    assert [s.label for s in shapes] == ["road"]
    assert mask_to_shapes(np.zeros((8, 8), np.uint8), LM) == []
    void = LabelMap((ClassInfo(0, "void", (0, 0, 0)), ClassInfo(1, "road", (1, 1, 1))), fill_id=0)
    assert [s.label for s in mask_to_shapes(mask // ROAD, void, min_area=0)] == ["road"]      # background by name


@pytest.mark.parametrize("fmt", writers.EXPORT_FORMATS)
def test_a_fill_that_is_a_real_class_gets_shapes_in_every_export(tmp_path, fmt):
    """CamVid's label map fills with sky: a sky with no shapes was invisible in LabelMe and CVAT, and background to
    any importer without our label map. Read back with another fill, the export still gives the mask."""
    from streetseg_jax.labels import formats

    sky_fill = LabelMap(CAMVID_MAP.classes, ignore_id=255, fill_id=0)
    mask = np.zeros((30, 40), np.uint8)                       # sky
    mask[15:, :] = CAMVID_NAMES.index("road")
    mask[5:10, 10:20] = CAMVID_NAMES.index("building")       # a hole in the sky
    mask[20:25, 5:12] = 0                                     # sky inside the road
    assert [s.label for s in mask_to_shapes(mask, sky_fill, tolerance=0, min_area=0)].count("sky") == 2
    photo = tmp_path / "street.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(photo)
    writers.export_predictions({"street": mask}, {"street": str(photo)}, sky_fill, fmt, tmp_path / "out",
                               tolerance=0, min_area=0)
    (annotation,) = formats.read(fmt, tmp_path / "out", sky_fill)
    assert {s.label for s in annotation.shapes} == {"sky", "road", "building"}
    other_fill = LabelMap(CAMVID_MAP.classes, ignore_id=255, fill_id=255)
    assert (annotation_to_mask(annotation, other_fill).mask == mask).all()
    assert (annotation_to_mask(annotation, sky_fill).mask == mask).all()


def test_simplified_neighbours_share_their_boundary():
    """Each arc is simplified once for both sides: no gaps of fill class open between neighbours."""
    mask = blob_mask(7, classes=(ROAD, SIDEWALK, BUILDING, TREE), smooth=8.0)
    mask[mask == BACKGROUND] = GRASS
    shapes = mask_to_shapes(mask, LM, tolerance=2.0, min_area=0)
    assert BACKGROUND not in shapes_to_mask(shapes, LM, *mask.shape)


def test_ignore_regions_become_ignore_shapes():
    mask = np.full((20, 20), ROAD, np.uint8)
    mask[5:12, 5:12] = LM.ignore_id
    shapes = mask_to_shapes(mask, LM, tolerance=0, min_area=0)
    ignored = [s for s in shapes if s.ignore]
    assert len(ignored) == 1 and ignored[0].label == IGNORE_LABEL
    assert (shapes_to_mask(shapes, LM, 20, 20) == mask).all()


def test_void_in_holes_when_the_fill_is_the_ignore_id(tmp_path):
    """CamVid style: void is both the ignore id and the fill, so void inside a road becomes an ignore shape."""
    from streetseg_jax.labels.formats import labelme

    mask = np.full((30, 40), 255, np.uint8)
    mask[5:25, 5:35] = CAMVID_NAMES.index("road")
    mask[10:20, 10:30] = 255
    mask[13:17, 15:25] = CAMVID_NAMES.index("car")
    shapes = mask_to_shapes(mask, CAMVID_MAP, tolerance=0, min_area=0)
    assert [(s.label, s.ignore) for s in shapes] == [("road", False), (IGNORE_LABEL, True), ("car", False)]
    writers.write_labelme(tmp_path / "a.json", "a.jpg", 30, 40, shapes)
    assert (annotation_to_mask(labelme.read_file(tmp_path / "a.json"), CAMVID_MAP).mask == mask).all()


def test_rectangles_keep_their_corners_and_straight_lines_collapse():
    mask = np.zeros((60, 90), np.uint8)
    mask[10:30, 20:70] = BUILDING
    (building,) = mask_to_shapes(mask, LM)
    assert sorted(map(tuple, building.exterior)) == [(20, 10), (20, 30), (70, 10), (70, 30)]
    rows, cols = np.mgrid[:60, :90]
    mask = np.where(rows + 0.5 < 0.3 * (cols + 0.5) + 12, SKY, ROAD).astype(np.uint8)  # a digital straight line
    sky = next(s for s in mask_to_shapes(mask, LM, tolerance=1.0) if s.label == "sky")
    assert len(sky.exterior) <= 5                      # 3 image corners and the line's two ends
    assert agreement(mask, tolerance=1.0) > 0.99        # the chord runs through edge midpoints, not the true line


def test_tiny_regions_are_absorbed_by_their_main_neighbour():
    mask = np.full((30, 30), ROAD, np.uint8)
    mask[:, 20:] = BUILDING
    mask[10:12, 3] = TREE                     # 2 px inside the road
    mask[20:22, 20] = SIDEWALK                # 2 px on the building's edge: 4 edges on the building, 2 on the road
    shapes = mask_to_shapes(mask, LM, tolerance=0, min_area=8)
    assert sorted(s.label for s in shapes) == ["building", "road"]
    cleaned = absorb_small_regions(mask, 8)
    assert (cleaned[10:12, 3] == ROAD).all() and (cleaned[20:22, 20] == BUILDING).all()
    assert (shapes_to_mask(shapes, LM, 30, 30) == cleaned).all()
    assert len(mask_to_shapes(mask, LM, tolerance=0, min_area=0)) == 4


def test_a_mask_of_only_specks_is_left_alone():
    mask = np.array([[ROAD, TREE], [SKY, GRASS]], np.uint8)
    assert (absorb_small_regions(mask, 16) == mask).all()
    assert len(mask_to_shapes(mask, LM)) == 4


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="neither class ids"):
        mask_to_shapes(np.full((4, 4), 9, np.uint8), LM)
    with pytest.raises(ValueError, match="2-D integer"):
        mask_to_shapes(np.zeros((4, 4, 3), np.uint8), LM)
    with pytest.raises(ValueError, match="tolerance"):
        mask_to_shapes(np.zeros((4, 4), np.uint8), LM, tolerance=-1)


# --- round trip at the defaults ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [(0, 1), (0, 2), (7, 3)])
def test_round_trip_synthetic_scenes(seed):
    assert agreement(scene_mask(seed)) >= 0.99


@pytest.mark.parametrize("seed", range(3))
def test_round_trip_random_blobs(seed):
    assert agreement(blob_mask(seed, 240, 320, smooth=8.0)) >= 0.98


def test_round_trip_camvid_ground_truth():
    results = {name: agreement(mask, CAMVID_MAP) for name, mask in camvid_masks(10)}
    assert min(results.values()) >= 0.98, results


def test_round_trip_real_predictions():
    """Masks a barely trained model predicted (tests/data/predicted_masks/README.md): specks and ragged edges."""
    files = sorted(PREDICTED.glob("*.png"))
    assert files, f"fixtures missing in {PREDICTED}"
    for f in files:
        mask = read_mask_png(f)
        assert agreement(mask) >= 0.98, f.name


def test_round_trip_emulated_noisy_prediction():
    """A scene mask with ragged edges (boundary pixels swapped with neighbours) and 1% salt-and-pepper."""
    rng = np.random.default_rng(3)
    mask = scene_mask((5, 5))
    edge = np.zeros(mask.shape, bool)
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= mask[1:, :] != mask[:-1, :]
    rows, cols = np.nonzero(edge & (rng.random(mask.shape) < 0.5))
    shift = rng.integers(-2, 3, size=(2, len(rows)))
    mask[rows, cols] = mask[np.clip(rows + shift[0], 0, 359), np.clip(cols + shift[1], 0, 479)]
    salt = rng.random(mask.shape) < 0.01
    mask[salt] = rng.integers(0, 8, salt.sum())
    assert agreement(mask) >= 0.98


# --- writers --------------------------------------------------------------------------------------------------------

def nested_mask() -> np.ndarray:
    mask = blob_mask(11, 60, 80)
    mask[20:40, 25:55] = ROAD
    mask[25:35, 30:50] = BACKGROUND           # fill pixels in a hole: LabelMe and CVAT need a shape for them
    mask[28:32, 35:45] = CONCRETE
    return mask


def test_labelme_document(tmp_path):
    mask = nested_mask()
    shapes = mask_to_shapes(mask, LM, tolerance=0, min_area=0)
    path = tmp_path / "a.json"
    writers.write_labelme(path, "a.jpg", 60, 80, shapes)
    doc = json.loads(path.read_text())
    assert set(doc) == {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}
    assert (doc["imagePath"], doc["imageData"], doc["imageHeight"], doc["imageWidth"]) == ("a.jpg", None, 60, 80)
    first = doc["shapes"][0]
    assert first["shape_type"] == "polygon" and first["group_id"] is None and first["flags"] == {}
    assert np.allclose(first["points"], shapes[0].exterior)            # LabelMe canvas coordinates = ours
    assert [s["label"] for s in doc["shapes"]] == [s.label for s in shapes]
    assert list(tmp_path.iterdir()) == [path]                         # no temporary file left behind


def test_labelme_round_trip_through_the_reader(tmp_path):
    from streetseg_jax.labels.formats import labelme

    mask = nested_mask()
    for tolerance, needed in ((0, 1.0), (DEFAULT_TOLERANCE, 0.98)):
        path = tmp_path / f"t{tolerance}.json"
        writers.write_labelme(path, "a.jpg", 60, 80, mask_to_shapes(mask, LM, tolerance, min_area=0))
        result = annotation_to_mask(labelme.read_file(path), LM)
        assert result.problems == [] and (result.mask == mask).mean() >= needed


def test_coco_document_and_round_trip(tmp_path):
    from streetseg_jax.labels.formats import coco

    mask = nested_mask()
    shapes = mask_to_shapes(mask, LM, tolerance=0, min_area=0, fill_shapes=False)
    path = tmp_path / "annotations.json"
    writers.write_coco(path, [("a.jpg", 60, 80, shapes), ("b.jpg", 60, 80, [])], LM)
    doc = json.loads(path.read_text())
    assert [c["id"] for c in doc["categories"]] == [c.id + 1 for c in LM.classes]
    assert [(i["id"], i["file_name"]) for i in doc["images"]] == [(1, "a.jpg"), (2, "b.jpg")]
    kinds = {type(a["segmentation"]).__name__ for a in doc["annotations"]}
    assert kinds == {"list", "dict"}                                  # holed road -> RLE, the rest polygons
    assert all(len(a["bbox"]) == 4 and a["area"] > 0 and a["iscrowd"] == 0 for a in doc["annotations"])
    first, second = coco.read_coco(path)
    assert (annotation_to_mask(first, LM).mask == mask).all()
    assert (annotation_to_mask(second, LM).mask == LM.fill_id).all()


def test_coco_ignore_regions_are_crowds(tmp_path):
    from streetseg_jax.labels.formats import coco

    mask = np.full((20, 20), ROAD, np.uint8)
    mask[4:10, 4:16] = LM.ignore_id
    path = tmp_path / "annotations.json"
    writers.write_coco(path, [("a.jpg", 20, 20, mask_to_shapes(mask, LM, min_area=0))], LM)
    doc = json.loads(path.read_text())
    assert doc["categories"][-1]["name"] == IGNORE_LABEL
    assert sum(a["iscrowd"] for a in doc["annotations"]) == 1
    (annotation,) = coco.read_coco(path)
    assert (annotation_to_mask(annotation, LM).mask == mask).all()


@pytest.mark.parametrize("fmt", ["cvat", "coco"])
def test_ignore_regions_an_export_wrote_read_back_as_ignore(tmp_path, fmt):
    """Our CVAT export's __ignore__ polygons failed `labels check` and `data build` ("not in the label map"), as
    did the COCO export's __ignore__ category once a tool had dropped its iscrowd."""
    from streetseg_jax.labels import formats

    mask = np.full((20, 20), ROAD, np.uint8)
    mask[4:10, 4:16] = LM.ignore_id
    path = tmp_path / ("annotations.xml" if fmt == "cvat" else "annotations.json")
    (writers.write_cvat if fmt == "cvat" else writers.write_coco)(
        path, [("a.jpg", 20, 20, mask_to_shapes(mask, LM, min_area=0))], LM)
    if fmt == "coco":
        doc = json.loads(path.read_text())
        path.write_text(json.dumps({**doc, "annotations": [{**a, "iscrowd": 0} for a in doc["annotations"]]}))
    (annotation,) = formats.read(fmt, tmp_path, LM)
    assert (annotation_to_mask(annotation, LM).mask == mask).all()


def test_cvat_document_and_round_trip(tmp_path):
    from streetseg_jax.labels.formats import cvat

    mask = nested_mask()
    shapes = mask_to_shapes(mask, LM, tolerance=0, min_area=0)
    path = tmp_path / "annotations.xml"
    writers.write_cvat(path, [("a.jpg", 60, 80, shapes)], LM)
    root = ET.parse(path).getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    assert [label.findtext("name") for label in root.iter("label")] == LM.names
    assert root.find("meta/task/labels/label/color").text == "#000000"
    polygons = root.findall("image/polygon")
    assert [p.get("label") for p in polygons] == [s.label for s in shapes]
    assert [int(p.get("z_order")) for p in polygons] == [s.z_order for s in shapes]
    assert max(s.z_order for s in shapes) >= 2                        # concrete in a hole in a hole
    (annotation,) = cvat.read_cvat(path)
    assert (annotation_to_mask(annotation, LM).mask == mask).all()
    with pytest.raises(ValueError, match="CVAT's XML cannot hold file names that are not UTF-8"):
        writers.write_cvat(tmp_path / "latin1.xml", [("caf\udce9.jpg", 60, 80, shapes)], LM)
    assert not (tmp_path / "latin1.xml").exists()


@pytest.mark.parametrize("fmt", writers.EXPORT_FORMATS)
def test_export_predictions_reads_back(tmp_path, fmt):
    from streetseg_jax.labels import formats

    masks, images = {}, {}
    for k, seed in enumerate([(0, 1), (7, 3)]):
        key = f"sub/street_{k}" if k else f"street_{k}"
        masks[key] = scene_mask(seed, 120, 160)
        images[key] = tmp_path / "photos" / f"{key}.JPG"
        images[key].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((120, 160, 3), np.uint8)).save(images[key], format="JPEG")
    out = tmp_path / "out"
    paths = writers.export_predictions(masks, {k: str(v) for k, v in images.items()}, LM, fmt, out)
    assert all(p.is_file() for p in paths) and len(paths) == (2 if fmt == "labelme" else 1)
    annotations = formats.read(fmt, out, LM)
    assert len(annotations) == 2
    for annotation in annotations:
        key = Path(annotation.file_name).with_suffix("").as_posix() if fmt != "labelme" else \
            annotation.source.relative_to(out).with_suffix("").as_posix()
        assert annotation.image_path is not None and annotation.image_path.is_file()
        assert (annotation_to_mask(annotation, LM).mask == masks[key]).mean() >= 0.98
    assert formats.detect(out) == fmt


@pytest.mark.parametrize("fmt", writers.EXPORT_FORMATS)
def test_exports_name_classes_as_the_tool_spelt_them(tmp_path, fmt):
    """A label map made by `labels classes` names a CVAT label 'Road Surface' road_surface (the spelling an alias):
    the exports wrote road_surface, a label the CVAT task it goes back to does not have."""
    from streetseg_jax.labels import formats
    from streetseg_jax.labels.label_map import starter_label_map

    label_map = starter_label_map(["_background_", "Road Surface", "trees", "木"])
    assert [label_map.tool_name(i) for i in range(4)] == ["background", "Road Surface", "trees", "木"]
    assert [default_label_map().tool_name(i) for i in range(8)] == default_label_map().names   # street of road
    mask = np.zeros((40, 60), np.uint8)
    mask[5:20, 5:30], mask[22:38, 10:50], mask[8:30, 40:55] = 1, 2, 3
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "a.png")
    writers.export_predictions({"a": mask}, {"a": str(tmp_path / "a.png")}, label_map, fmt, tmp_path / "out")
    text = (tmp_path / "out" / writers.annotation_file_name(fmt, "a")).read_text(encoding="utf-8")
    written = {"labelme": lambda: {s["label"] for s in json.loads(text)["shapes"]},
               "coco": lambda: {c["name"] for c in json.loads(text)["categories"]} - {"background"},
               "cvat": lambda: {e.get("label") for e in ET.fromstring(text).iter("polygon")}}[fmt]()
    assert written == {"Road Surface", "trees", "木"}
    if fmt == "cvat":      # the task's labels, which CVAT matches the polygons' labels against
        assert [e.text for e in ET.fromstring(text).iter("name")][1:] == ["background", "Road Surface", "trees", "木"]
    annotation, = formats.read(fmt, tmp_path / "out", label_map)
    np.testing.assert_array_equal(annotation_to_mask(annotation, label_map).mask, mask)


def test_export_never_overwrites_another_file(tmp_path):
    photo = tmp_path / "street.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    (tmp_path / "out").mkdir()
    write_mask_png(tmp_path / "out" / "street.png", np.zeros((8, 8), np.uint8), LM)   # a predicted mask's name
    with pytest.raises(FileExistsError, match="export into another folder"):
        writers.export_predictions({"street": np.zeros((8, 8), np.uint8)}, {"street": str(photo)}, LM, "labelme",
                                   tmp_path / "out")
    with pytest.raises(ValueError, match="unknown export format"):
        writers.export_predictions({}, {}, LM, "yolo", tmp_path)


def test_to_masks_cli_reads_a_labelme_export(tmp_path):
    mask = scene_mask((0, 4), 90, 120)
    photo = tmp_path / "street.jpg"
    Image.fromarray(np.zeros((90, 120, 3), np.uint8)).save(photo)
    writers.export_predictions({"street": mask}, {"street": {"path": str(photo)}}, LM, "labelme",
                               tmp_path / "export")
    done = subprocess.run([sys.executable, "-m", "streetseg_jax.labels", "to-masks", "--format", "auto",
                           "--input", str(tmp_path / "export"), "--output", str(tmp_path / "masks")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (read_mask_png(tmp_path / "masks" / "street.png") == mask).mean() >= 0.98
