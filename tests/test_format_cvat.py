"""Tests for labels/formats/cvat.py: CVAT for images 1.1 XML (task and project exports, polygons, boxes, ellipses,
masks in CVAT's RLE, z_order), and its refusals (malformed XML, bad points, bad RLE, DTDs, escaping names)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streetseg_jax.labels.convert import annotation_to_mask
from streetseg_jax.labels.formats import cvat
from streetseg_jax.labels.label_map import ClassInfo, LabelMap, default_label_map
from streetseg_jax.labels.rasterize import coverage
from streetseg_jax.labels.shapes import LabelFormatError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLE = DATA / "annotation-samples" / "cvat" / "datumaro_fixture" / "for_images"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"CVAT sample export not found at {SAMPLE}")

ROAD, SIDEWALK, BUILDING, TREE = 3, 4, 5, 1


def write_xml(folder: Path, images: str, name: str = "annotations.xml") -> Path:
    path = folder / name
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'
                    f'  <meta><task><name>t</name></task></meta>\n{images}\n</annotations>\n')
    return path


def fixture_label_map() -> LabelMap:
    return LabelMap((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "label1", (255, 0, 0)),
                     ClassInfo(2, "label2", (0, 255, 0))))


# --- the real sample exports ------------------------------------------------------------------------------------------

@needs_sample
def test_sample_task_export():
    annotations = cvat.read(SAMPLE / "export_task" / "train.xml", None)
    assert [(a.file_name, a.width, a.height) for a in annotations] == [("img0.jpg", 8, 8), ("img1.jpg", 10, 10)]
    box = annotations[0].shapes                       # <box> kept, <polyline> skipped
    assert [(s.label, s.z_order) for s in box] == [("label1", 1)]
    np.testing.assert_array_equal(box[0].exterior, [[0, 2], [4, 2], [4, 4], [0, 4]])
    assert [s.label for s in annotations[1].shapes] == [""]   # the fixture's unlabelled polygon; <points> skipped
    for a in annotations:
        assert a.image_path == (SAMPLE / "export_task" / "images" / a.file_name).resolve()
    mask = annotation_to_mask(annotations[0], fixture_label_map()).mask
    expected = np.zeros((8, 8), np.uint8)
    expected[2:4, 0:4] = 1
    np.testing.assert_array_equal(mask, expected)


@needs_sample
def test_sample_project_export_reads_every_subset():
    annotations = cvat.read(SAMPLE / "export_project", None)
    assert len(annotations) == 6
    subsets = [a.image_path.parent.name for a in annotations]
    assert subsets == ["Test", "Test", "Train", "Train", "Validation", "Validation"]
    for a in annotations:
        with Image.open(a.image_path) as image:
            assert image.size == (a.width, a.height)
        assert all(s.label == "label1" for s in a.shapes)


@needs_sample
def test_sample_project_export_keys_keep_subsets_apart(tmp_path, capsys):
    """The project export has img0.jpg and img1.jpg in each of Test, Train and Validation: keyed by their stems,
    the masks would overwrite each other; keyed `<subset>/<stem>` they land in one folder per subset."""
    from streetseg_jax.labels.__main__ import main
    from streetseg_jax.labels.shapes import image_key
    from streetseg_jax.labels.validate import duplicate_keys
    annotations = cvat.read(SAMPLE / "export_project", None)
    keys = [image_key(a) for a in annotations]
    assert keys == ["Test/img0", "Test/img1", "Train/img0", "Train/img1", "Validation/img0", "Validation/img1"]
    assert duplicate_keys(annotations) == {}
    assert all(image_key(a) == Path(a.file_name).stem for a in cvat.read(SAMPLE / "export_task", None))
    label_map = tmp_path / "labels.json"
    label_map.write_text(fixture_label_map().to_json())
    main(["to-masks", "--format", "cvat", "--input", str(SAMPLE / "export_project"), "--output",
          str(tmp_path / "masks"), "--label_map", str(label_map)])
    written = sorted(p.relative_to(tmp_path / "masks").as_posix() for p in (tmp_path / "masks").rglob("*.png"))
    assert written == [f"{key}.png" for key in keys]


@needs_sample
def test_looks_like_on_samples():
    assert cvat.looks_like(SAMPLE / "export_task")
    assert cvat.looks_like(SAMPLE / "export_project")
    assert cvat.looks_like(SAMPLE / "export_project" / "annotations.xml")
    assert not cvat.looks_like(DATA / "annotation-samples" / "mapillary_vistas_v2")


def test_looks_like_refuses_other_xml(tmp_path):
    (tmp_path / "a.xml").write_text("<annotation><object><polygon><x1>0</x1></polygon></object></annotation>")
    assert not cvat.looks_like(tmp_path)
    assert not cvat.looks_like(tmp_path / "missing")


# --- hand-written exports ---------------------------------------------------------------------------------------------

def test_z_order_overrides_document_order(tmp_path):
    path = write_xml(tmp_path, '''
  <image id="0" name="street.png" width="8" height="6">
    <box label="building" xtl="0" ytl="0" xbr="4" ybr="3" occluded="1" z_order="2"/>
    <polygon label="road" points="0,0;8,0;8,6;0,6" z_order="0"/>
    <polyline label="road" points="0,0;8,6"/>
    <polygon label="sidewalk" points="2,2;8,2;8,6;2,6" z_order="1"/>
    <mask label="tree" rle="1, 3" left="6" top="4" width="2" height="2" z_order="1"/>
    <points label="road" points="1,1"/>
    <tag label="daytime"/>
  </image>''')
    (annotation,) = cvat.read(path, None)
    assert [s.label for s in annotation.shapes] == ["building", "road", "sidewalk", "tree"]   # document order
    assert annotation.no_area == ["polyline", "points"]          # said by check (test_format_labelme)
    expected = np.full((6, 8), ROAD, np.uint8)
    expected[2:, 2:] = SIDEWALK
    expected[0:3, 0:4] = BUILDING           # first in the file, but the highest z_order
    expected[4, 7] = expected[5, 6] = expected[5, 7] = TREE   # same z_order as the sidewalk, later in the file
    np.testing.assert_array_equal(annotation_to_mask(annotation, default_label_map()).mask, expected)


def test_decode_rle_hand_computed():
    # runs 2 background, 3 set, 4 background, 1 set, 2 background over 4 x 3, row by row:
    # 0 0 1 1 / 1 0 0 0 / 0 1 0 0
    np.testing.assert_array_equal(cvat.decode_rle("2, 3, 4, 1, 2", 4, 3),
                                  [[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(cvat.decode_rle("0,2,2", 2, 2), [[1, 1], [0, 0]])   # starts with a set pixel


def test_decode_rle_documentation_example():
    """The mask of CVAT's XML format page (13 x 15 at 707, 888). Read row by row from a background run it is one
    filled blob, every row a single run; any other reading (column-major, foreground first) tears it apart."""
    rle = "3, 5, 7, 7, 5, 9, 3, 11, 2, 11, 2, 12, 1, 12, 1, 26, 1, 12, 1, 12, 2, 11, 3, 9, 5, 7, 7, 5, 3"
    picture = """
        ...#####.....
        ..#######....
        .#########...
        ###########..
        ###########..
        ############.
        ############.
        #############
        #############
        .############
        .############
        ..###########
        ...#########.
        ....#######..
        .....#####...""".split()
    expected = np.array([[c == "#" for c in row] for row in picture])
    np.testing.assert_array_equal(cvat.decode_rle(rle, 13, 15), expected)


def test_mask_is_placed_and_clipped(tmp_path):
    path = write_xml(tmp_path, '''
  <image id="0" name="a.png" width="5" height="4">
    <mask label="road" rle="0, 9" left="3" top="2" width="3" height="3"/>
  </image>''')
    (annotation,) = cvat.read(path, None)
    expected = np.zeros((4, 5), bool)
    expected[2:4, 3:5] = True               # the box's last column and row fall outside the image
    np.testing.assert_array_equal(annotation.shapes[0].raster, expected)


def test_rotated_box_and_ellipse(tmp_path):
    path = write_xml(tmp_path, '''
  <image id="0" name="a.png" width="40" height="40">
    <box label="road" xtl="10" ytl="18" xbr="30" ybr="22" rotation="90"/>
    <ellipse label="road" cx="20" cy="20" rx="12" ry="6" rotation="30"/>
  </image>''')
    box, ellipse = cvat.read(path, None)[0].shapes
    np.testing.assert_allclose(box.exterior, [[22, 10], [22, 30], [18, 30], [18, 10]], atol=1e-9)
    assert coverage(ellipse, 40, 40).sum() == pytest.approx(np.pi * 12 * 6, rel=1e-9)


@pytest.mark.parametrize("rx", ["1e300", "1.7e308"])
def test_an_ellipse_of_huge_radius_gives_a_mask_or_our_error(tmp_path, rx):
    # the vertex count once overflowed: ceil() of an infinite count
    path = write_xml(tmp_path, f'''
  <image id="0" name="a.png" width="40" height="40">
    <ellipse label="road" cx="20" cy="20" rx="{rx}" ry="6"/>
  </image>''')
    try:
        annotation = cvat.read(path, None)[0]
    except LabelFormatError as e:
        assert str(path) in str(e)
        return
    assert annotation_to_mask(annotation, default_label_map()).mask.shape == (40, 40)


def test_folder_reads_every_cvat_file_and_skips_other_xml(tmp_path):
    write_xml(tmp_path, '<image id="0" name="a.png" width="4" height="4"/>', "one.xml")
    write_xml(tmp_path, '<image id="0" name="b.png" width="4" height="4"/>', "two.xml")
    (tmp_path / "voc.xml").write_text("<annotation><filename>c.png</filename></annotation>")
    assert [a.file_name for a in cvat.read(tmp_path, None)] == ["a.png", "b.png"]
    assert all(a.image_path is None for a in cvat.read(tmp_path, None))     # an export without its images


# --- refusals ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("images, problem", [
    ('<image id="0" name="a.png" width="4" height="4"><polygon label="r" points="1,2;3"/></image>', "bad points"),
    ('<image id="0" name="a.png" width="4" height="4"><polygon label="r" points="1,2;x,4;5,6"/></image>',
     "not a number"),
    ('<image id="0" name="a.png" width="4" height="4"><polygon label="r" points="1,2;nan,4;5,6"/></image>',
     "not finite"),
    ('<image id="0" name="a.png" width="4" height="4"><polygon label="r"/></image>', "no points"),
    ('<image id="0" name="a.png" width="4" height="4"><polygon points="0,0;1,0;1,1"/></image>', "no label"),
    ('<image id="0" name="a.png" width="4" height="4"><box label="r" xtl="0" ytl="0" xbr="2"/></image>', "ybr"),
    ('<image id="0" name="a.png" width="4" height="4">'
     '<mask label="r" rle="3, 4" left="0" top="0" width="2" height="2"/></image>', "add up to 7"),
    ('<image id="0" name="a.png" width="4" height="4">'
     '<mask label="r" rle="1, a" left="0" top="0" width="2" height="2"/></image>', "integers"),
    ('<image id="0" name="a.png" width="4" height="4">'
     '<mask label="r" rle="5, -1" left="0" top="0" width="2" height="2"/></image>', "negative"),
    ('<image id="0" name="a.png" width="4" height="4"><box label="r" xtl="0" ytl="0" xbr="2" ybr="2" '
     'z_order="top"/></image>', "z_order"),
    ('<image id="0" name="a.png" height="4"/>', "width"),
    ('<image id="0" name="a.png" width="0" height="4"/>', "not positive"),
    ('<image id="0" name="a.png" width="100000" height="100000"/>', "too large"),
    ('<image id="0" name="../../outside.png" width="4" height="4"/>', "outside the export folder"),
    ('<image id="0" name="a.png" width="1e309" height="4"/>', "is not an integer"),
    ('<image id="0" name="a.png" width="99999999999999999999" height="4"/>', "too large"),
    ('<image id="0" name="' + "a" * 300 + '.png" width="4" height="4"/>', "not a usable file name (too long)"),
    ('<image id="0" name="a.png" subset="../up" width="4" height="4"/>', "cannot be part of an image key"),
    ('<track id="0" label="car"><box frame="0" xtl="0" ytl="0" xbr="1" ybr="1" outside="0"/></track>', "video"),
])
def test_bad_content_names_the_file(tmp_path, images, problem):
    path = write_xml(tmp_path, images)
    with pytest.raises(LabelFormatError) as error:
        cvat.read(path, None)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_malformed_xml_names_the_file(tmp_path):
    path = tmp_path / "annotations.xml"
    path.write_text("<annotations><image id='0' name='a.png' width='4' height='4'></annotations>")
    with pytest.raises(LabelFormatError, match="malformed XML") as error:
        cvat.read(path, None)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("doctype", [
    # billion laughs: ten levels of ten entities each would expand to 10**9 "lol"s
    '<!DOCTYPE lolz [<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)) + "]>",
    '<!DOCTYPE a [<!ENTITY secret SYSTEM "file:///etc/passwd">]>',
])
def test_dtds_and_entities_are_refused(tmp_path, doctype):
    path = tmp_path / "annotations.xml"
    path.write_text(f'<?xml version="1.0"?>\n{doctype}\n<annotations><image id="0" name="&lol9;" width="4" '
                    'height="4"/></annotations>')
    with pytest.raises(LabelFormatError, match="refused unsafe XML") as error:
        cvat.read(path, None)
    assert str(path) in str(error.value)


def test_folder_without_cvat_xml_and_zip_are_refused(tmp_path):
    with pytest.raises(LabelFormatError, match="no CVAT XML"):
        cvat.read(tmp_path, None)
    with pytest.raises(LabelFormatError, match="extract"):
        cvat.read(tmp_path / "task.zip", None)
