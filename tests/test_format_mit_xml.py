"""Tests for streetseg_jax.labels.formats.mit_xml: the MIT LabelMe web tool's XML, its <segm> masks and parts, and
refusal of unsafe or broken XML with an error naming the file."""
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from streetseg_jax.labels.convert import annotation_to_mask
from streetseg_jax.labels.formats import mit_xml, voc
from streetseg_jax.labels.label_map import ClassInfo, LabelMap, default_label_map
from streetseg_jax.labels.shapes import LabelFormatError

FIXTURE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "annotation-samples" / "mit_labelme_xml" /
           "datumaro_fixture")
needs_fixture = pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"MIT LabelMe sample not found at {FIXTURE} "
                                   "(the shared data folder beside the repository)")


# --- helpers ---------------------------------------------------------------------------------------------------------

def polygon_xml(points) -> str:
    return "<polygon>" + "".join(f"<pt><x>{x}</x><y>{y}</y></pt>" for x, y in points) + "</polygon>"


def object_xml(name, points=None, *, id=None, deleted=0, ispartof="", hasparts="", extra="") -> str:
    geometry = polygon_xml(points) if points is not None else ""
    ident = f"<id>{id}</id>" if id is not None else ""
    return (f"<object><name>{name}</name><deleted>{deleted}</deleted>{ident}{geometry}{extra}"
            f"<parts><hasparts>{hasparts}</hasparts><ispartof>{ispartof}</ispartof></parts></object>")


def annotation_xml(*objects, filename="a.jpg", folder="", size=(20, 30)) -> str:
    imagesize = f"<imagesize><nrows>{size[0]}</nrows><ncols>{size[1]}</ncols></imagesize>" if size else ""
    return (f"<annotation><filename>{filename}</filename><folder>{folder}</folder>{imagesize}"
            + "".join(objects) + "</annotation>")


def write(folder: Path, text: str, name: str = "a.xml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def read_one(path: Path):
    annotations = mit_xml.read(path)
    assert len(annotations) == 1
    return annotations[0]


SQUARE = [(1, 1), (5, 1), (5, 5), (1, 5)]


# --- the datumaro fixture --------------------------------------------------------------------------------------------

@needs_fixture
@pytest.mark.parametrize("where", [".", "Annotations", "Annotations/subset1/img1.xml"])
def test_fixture(where):
    annotation = read_one(FIXTURE / where)
    assert (annotation.file_name, annotation.width, annotation.height) == ("img1.png", 102, 77)
    assert annotation.image_path == (FIXTURE / "Images" / "subset1" / "img1.png").resolve()
    assert [s.label for s in annotation.shapes] == ["window", "license plate", "o1", "q1", "b1", "m1", "hg"]
    window, plate, o1, *_ = annotation.shapes
    np.testing.assert_array_equal(window.exterior, [[43, 34], [45, 34], [45, 37], [43, 37]])
    np.testing.assert_array_equal(o1.exterior[:2], [[30, 12], [42, 21]])
    # <segm> masks: full-image RGBA PNGs, anti-aliased; any non-zero channel counts (datumaro reads them so too).
    expected_plate = np.zeros((77, 102), bool)
    expected_plate[67:69, 58:63] = True
    np.testing.assert_array_equal(plate.raster, expected_plate)
    m1 = annotation.shapes[5].raster
    png = np.asarray(Image.open(FIXTURE / "Masks" / "subset1" / "img1_mask_5.png"))
    np.testing.assert_array_equal(m1, png.any(axis=2))
    assert m1.sum() == 130


@needs_fixture
def test_fixture_rasterizes_with_a_label_map():
    names = ["window", "license plate", "o1", "q1", "b1", "m1", "hg"]
    label_map = LabelMap(tuple(ClassInfo(i + 1, re.sub(r"\W+", "_", n), (0, 0, 0)) for i, n in enumerate(names))
                         + (ClassInfo(0, "background", (0, 0, 0)),))
    annotation = read_one(FIXTURE)
    mask = annotation_to_mask(annotation, label_map).mask
    assert mask[35, 44] == 1 and mask[67, 60] == 2
    assert mask[25, 35] == 4                        # q1 is a part of o1: drawn after (over) it
    assert mask[27, 64] == 7                        # hg is a part of m1 (a mask): drawn over it


@needs_fixture
def test_looks_like_on_samples():
    assert mit_xml.looks_like(FIXTURE)
    assert mit_xml.looks_like(FIXTURE / "Annotations" / "subset1" / "img1.xml")
    assert not voc.looks_like(FIXTURE)
    samples = FIXTURE.parents[1]
    assert not mit_xml.looks_like(samples / "cvat")
    assert not mit_xml.looks_like(samples / "labelme")


# --- hand-written files ----------------------------------------------------------------------------------------------

def test_points_are_used_as_they_are(tmp_path):
    annotation = read_one(write(tmp_path, annotation_xml(object_xml("road", [(1.5, 2), (10, 2), (10, 8.25)]))))
    np.testing.assert_array_equal(annotation.shapes[0].exterior, [[1.5, 2], [10, 2], [10, 8.25]])
    assert (annotation.width, annotation.height) == (30, 20)
    assert annotation.image_path == (tmp_path / "a.jpg").resolve()    # no Annotations folder: beside the XML


def test_standard_layout_finds_images_and_masks_by_folder(tmp_path):
    mask = np.zeros((20, 30, 4), np.uint8)
    mask[2:4, 3:6] = (0, 0, 153, 153)
    (tmp_path / "Masks" / "street").mkdir(parents=True)
    Image.fromarray(mask).save(tmp_path / "Masks" / "street" / "m.png")
    segm = object_xml("car", extra="<segm><mask>m.png</mask></segm>")
    write(tmp_path, annotation_xml(segm, folder="street"), "Annotations/street/a.xml")
    annotation, = mit_xml.read(tmp_path)
    assert annotation.image_path == (tmp_path / "Images" / "street" / "a.jpg").resolve()
    assert annotation.shapes[0].raster.sum() == 6 and np.all(annotation.shapes[0].raster[2:4, 3:6])


def test_deleted_objects_are_skipped(tmp_path):
    xml = annotation_xml(object_xml("road", SQUARE, deleted=1), object_xml("car", SQUARE), object_xml("x", deleted=1))
    assert [s.label for s in read_one(write(tmp_path, xml)).shapes] == ["car"]


def test_parts_are_drawn_after_their_whole(tmp_path):
    xml = annotation_xml(
        object_xml("wheel", SQUARE, id=0, ispartof="2"),       # a part listed before its whole
        object_xml("road", SQUARE, id=1),
        object_xml("car", SQUARE, id=2, hasparts="0,3"),
        object_xml("door", SQUARE, id=3),                      # named only by the whole's <hasparts>
        object_xml("handle", SQUARE, id=4, ispartof="3"),      # a part of a part
        object_xml("sky", SQUARE, id=5))
    labels = [s.label for s in read_one(write(tmp_path, xml)).shapes]
    assert labels == ["road", "car", "wheel", "door", "handle", "sky"]


def test_part_cycles_and_dangling_links_keep_file_order(tmp_path):
    xml = annotation_xml(object_xml("a", SQUARE, id=0, ispartof="1"), object_xml("b", SQUARE, id=1, ispartof="0"),
                         object_xml("c", SQUARE, id=2, ispartof="9"), object_xml("d", SQUARE, id=3, ispartof="3"),
                         object_xml("e", SQUARE, id=4, deleted=1), object_xml("f", SQUARE, id=5, ispartof="4"))
    assert [s.label for s in read_one(write(tmp_path, xml)).shapes] == ["a", "b", "c", "d", "f"]


def test_missing_ids_count_objects(tmp_path):
    xml = annotation_xml(object_xml("wheel", SQUARE, ispartof="1"), object_xml("car", SQUARE))
    assert [s.label for s in read_one(write(tmp_path, xml)).shapes] == ["car", "wheel"]


def test_long_part_chain(tmp_path):
    objects = [object_xml(f"o{i}", SQUARE, id=i, ispartof=str(i + 1) if i < 2999 else "") for i in range(3000)]
    shapes = read_one(write(tmp_path, annotation_xml(*objects))).shapes
    assert [s.label for s in shapes] == [f"o{i}" for i in reversed(range(3000))]


def test_size_from_the_image_when_imagesize_is_empty(tmp_path):
    Image.new("RGB", (7, 5)).save(tmp_path / "a.jpg")
    annotation = read_one(write(tmp_path, annotation_xml(object_xml("road", SQUARE), size=None)))
    assert (annotation.width, annotation.height) == (7, 5)


def test_mask_beside_the_xml_without_the_standard_layout(tmp_path):
    Image.fromarray(np.eye(20, 30, dtype=np.uint8) * 255).save(tmp_path / "m.png")
    xml = annotation_xml(object_xml("car", extra="<segm><mask>m.png</mask></segm>"))
    assert read_one(write(tmp_path, xml)).shapes[0].raster.sum() == 20


def test_polygon_wins_over_segm_and_an_empty_polygon_is_left_to_the_rasterizer(tmp_path):
    xml = annotation_xml(object_xml("car", SQUARE, extra="<segm><mask>missing.png</mask></segm>"),
                         object_xml("road", []))
    annotation = read_one(write(tmp_path, xml))
    assert annotation.shapes[0].raster is None and annotation.shapes[1].exterior.shape == (0, 2)
    problems = annotation_to_mask(annotation, LabelMap(default_label_map().classes
                                                       + (ClassInfo(8, "car", (1, 1, 1)),))).problems
    assert len(problems) == 1 and "fewer than 3" in problems[0]


def test_looks_like(tmp_path):
    assert mit_xml.looks_like(write(tmp_path / "yes", annotation_xml(object_xml("road", SQUARE))))
    assert mit_xml.looks_like(tmp_path / "yes")
    labelbox_voc = ("<annotation><size><width>3</width><height>3</height></size><object><name>road</name>"
                    "<polygon><x1>0</x1><y1>0</y1></polygon></object></annotation>")
    assert not mit_xml.looks_like(write(tmp_path / "voc", labelbox_voc))
    assert not mit_xml.looks_like(write(tmp_path / "cvat", "<annotations><image/></annotations>"))
    assert not mit_xml.looks_like(write(tmp_path / "broken", "<annotation>"))
    assert not mit_xml.looks_like(tmp_path / "missing")


# --- unsafe and broken files -----------------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotation><filename>a.jpg</filename><object><name>&lol3;</name></object></annotation>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<annotation><filename>&secret;</filename></annotation>"""

BAD_FILES = [
    (BILLION_LAUGHS, r"refused unsafe XML \(DTDForbidden"),
    (EXTERNAL_ENTITY, r"refused unsafe XML"),
    ("<annotation><filename>a.jpg</filename>", "malformed XML"),
    ("", "malformed XML"),
    ("<annotations/>", "root element is <annotations>, expected <annotation>"),
    (annotation_xml(filename=""), "no <filename>"),
    (annotation_xml(size=None), "no <imagesize>, and the image gives no size"),
    (annotation_xml(size=("x", 3)), r"<imagesize><nrows> must be a positive integer, got 'x'"),
    (annotation_xml(size=(0, 3)), r"<imagesize><nrows> must be a positive integer, got '0'"),
    (annotation_xml(size=(10 ** 6, 10 ** 6)), "beyond .* pixels; refused"),
    (annotation_xml(size=("1e309", 3)), r"<imagesize><nrows> must be a positive integer, got '1e309'"),
    (annotation_xml(filename="a" * 300 + ".jpg"), r"image <filename> 'aaaa.*' is not a usable file name \(too long\)"),
    (annotation_xml(object_xml("car", extra="<segm><mask>" + "m" * 300 + "</mask></segm>")),
     r"<mask> 'mmm.*' is not a usable file name \(too long\)"),
    (annotation_xml(object_xml("", SQUARE)), "object 1 has no <name>"),
    (annotation_xml(object_xml("road")), r"object 1 \('road'\) has neither <polygon> nor <segm>"),
    (annotation_xml(object_xml("road", [(1, "one")])), r"object 1 \('road'\): point 1: <y> is not a number: 'one'"),
    (annotation_xml(object_xml("road", [(1, "inf")])), r"point 1: <y> is not finite"),
    (annotation_xml("<object><name>road</name><polygon><pt><x>1</x></pt></polygon></object>"),
     r"<y> is not a number: None"),
    (annotation_xml(object_xml("road", SQUARE, deleted="yes")), r"<deleted> must be 0 or 1, got 'yes'"),
    (annotation_xml(object_xml("road", SQUARE, hasparts="1;2")), r"<hasparts> must hold object ids"),
    (annotation_xml(object_xml("road", SQUARE, id="first")), r"<id> must hold object ids"),
    (annotation_xml(object_xml("car", extra="<segm></segm>")), r"<segm> has no <mask> file name"),
    (annotation_xml(object_xml("car", extra="<segm><mask>nope.png</mask></segm>")), r"mask .*nope\.png cannot be read"),
    (annotation_xml(filename="../../etc/passwd"), r"image <filename> '\.\./\.\./etc/passwd' points outside the "
                                                  "export folder .*; refused"),
    (annotation_xml(filename="/etc/passwd"), r"points outside the export folder"),
    (annotation_xml(object_xml("car", extra="<segm><mask>../../../m.png</mask></segm>")),
     r"<mask> '\.\./\.\./\.\./m\.png' points outside the export folder"),
]


@pytest.mark.parametrize("text,problem", BAD_FILES, ids=[p for _, p in BAD_FILES])
def test_broken_files_raise_an_error_naming_the_file_and_the_problem(tmp_path, text, problem):
    path = write(tmp_path / "export", text, "broken.xml")
    with pytest.raises(LabelFormatError, match=re.escape(str(path)) + ".*" + problem):
        mit_xml.read(tmp_path / "export")


def test_folder_escaping_the_export_folder_is_refused(tmp_path):
    path = write(tmp_path / "export", annotation_xml(folder="../../.."), "Annotations/x/a.xml")
    with pytest.raises(LabelFormatError, match=re.escape(str(path)) + r".*in <folder> '\.\./\.\./\.\.' points outside"):
        mit_xml.read(tmp_path / "export")


def test_mask_of_the_wrong_size_is_refused_before_decoding(tmp_path):
    Image.new("L", (3000, 3000)).save(tmp_path / "m.png")
    path = write(tmp_path, annotation_xml(object_xml("car", extra="<segm><mask>m.png</mask></segm>")))
    problem = r".*mask .*m\.png is 3000x3000, the image is 30x20"
    with pytest.raises(LabelFormatError, match=re.escape(str(path)) + problem):
        mit_xml.read(path)


def test_unreadable_mask(tmp_path):
    (tmp_path / "m.png").write_bytes(b"not a png")
    path = write(tmp_path, annotation_xml(object_xml("car", extra="<segm><mask>m.png</mask></segm>")))
    with pytest.raises(LabelFormatError, match=re.escape(str(path)) + r".*mask .*m\.png cannot be read"):
        mit_xml.read(path)


# --- fuzzing: a correct mask or our own error, nothing else -----------------------------------------------------------

VALID = annotation_xml(object_xml("road", [(0, 0), (30, 0), (30, 20), (0, 20)], id=0, hasparts="1"),
                       object_xml("car", [(2, 2), (8.5, 2), (8.5, 6)], id=1, ispartof="0"),
                       object_xml("tree", SQUARE, id=2, deleted=1))


MUTATIONS = ["", "<", ">", "/", "1", "-", "e9", "<pt>", "</x>", "&", ",", "x", "<!DOCTYPE a>", "1e400", "nan",
             "99999999999999999999", "<id>0</id>", "<ispartof>1</ispartof>", "<segm><mask>a.xml</mask></segm>"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 6),
                               st.sampled_from(MUTATIONS)),
                     min_size=1, max_size=4))
def test_mutated_files_give_a_mask_or_our_error(tmp_path, cuts):
    text = VALID
    for at, length, insert in cuts:
        text = text[:at] + insert + text[at + length:]
    path = write(tmp_path, text, "fuzz.xml")
    try:
        annotation = read_one(path)
    except LabelFormatError as e:
        assert str(path) in str(e)
        return
    mask = annotation_to_mask(annotation, default_label_map(), unknown="ignore").mask
    assert mask.shape == (annotation.height, annotation.width)
