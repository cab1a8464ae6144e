"""Tests for labels/formats/masks.py: mask folders (class-id, palette and colour PNGs) read back exactly.

The round trip mask file -> Annotation -> convert.annotation_to_mask must give back exactly the stored ids (ignore
values as the label map's ignore id). Real samples: labelme2voc's palette masks (VOC class indices, 255 = ignore) and
SegNet's CamVid greyscale masks (11 = void).
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streetseg_jax.labels.convert import annotation_to_mask
from streetseg_jax.labels.formats import masks
from streetseg_jax.labels.label_map import ClassInfo, LabelMap, default_label_map
from streetseg_jax.labels.shapes import LabelFormatError
from streetseg_jax.labels.shapes import image_key
from streetseg_jax.labels.validate import duplicate_keys

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LABELME = DATA / "annotation-samples" / "labelme" / "semantic_segmentation"
CAMVID = DATA / "camvid"
COCO = DATA / "annotation-samples" / "coco" / "coco2017_subset"

LABEL_MAP = default_label_map()          # 0 background .. 7 concrete, ignore 255


def random_ids(seed: int, height: int = 12, width: int = 16, ignore: bool = True) -> np.ndarray:
    ids = np.random.default_rng(seed).integers(0, LABEL_MAP.num_classes, (height, width)).astype(np.uint8)
    if ignore:
        ids[0, :3] = 255
    return ids


def save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def export(root: Path, ids: np.ndarray, stem: str = "frame_001", mask_dir: str = "masks",
           image_dir: str = "images", mode: str = "L") -> Path:
    """root/<image_dir>/<stem>.jpg and root/<mask_dir>/<stem>.png holding `ids` in the given PNG mode."""
    height, width = ids.shape
    save(root / image_dir / f"{stem}.jpg", Image.new("RGB", (width, height), (90, 90, 90)))
    return save(root / mask_dir / f"{stem}.png", encode(ids, mode))


def encode(ids: np.ndarray, mode: str) -> Image.Image:
    if mode == "L":
        return Image.fromarray(ids, "L")
    if mode == "P":                       # a palette unrelated to the label map's colours: only indices count
        image = Image.fromarray(ids, "L").convert("P")
        image.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)])
        return image
    return Image.fromarray(LABEL_MAP.palette()[ids], "RGB")      # the ignore id's colour is white


def round_trip(annotation) -> np.ndarray:
    return annotation_to_mask(annotation, LABEL_MAP).mask


# --- the three kinds of mask ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["L", "P", "RGB"])
def test_round_trip_is_exact(tmp_path, mode):
    ids = random_ids(1)
    mask_path = export(tmp_path, ids, mode=mode)
    (annotation,) = masks.read(tmp_path, LABEL_MAP)
    assert annotation.source == mask_path
    assert (annotation.width, annotation.height) == (16, 12)
    assert annotation.file_name == "frame_001.jpg"
    assert annotation.image_path == (tmp_path / "images" / "frame_001.jpg").resolve()
    present = [LABEL_MAP.names[i] for i in np.unique(ids) if i != 255]
    assert [s.label for s in annotation.shapes] == present + ["__ignore__"]
    assert annotation.shapes[-1].ignore
    np.testing.assert_array_equal(round_trip(annotation), ids)


def test_a_palette_of_the_label_maps_colours_in_its_own_order_is_read_by_colour(tmp_path):
    """An RGB mask re-saved by an image editor as a palette image keeps its colours, in the editor's order: the
    indices were taken for class ids and sky became background without a word."""
    ids = random_ids(2, ignore=False)
    rgb = encode(ids, "RGB")
    editor = rgb.quantize(colors=256, method=Image.Quantize.MAXCOVERAGE)     # an order of its own
    assert not np.array_equal(np.asarray(editor), ids)                         # the indices say nothing
    export(tmp_path / "a", ids, mode="RGB")
    save(tmp_path / "a" / "masks" / "frame_001.png", editor)
    (annotation,) = masks.read(tmp_path / "a", LABEL_MAP)
    np.testing.assert_array_equal(round_trip(annotation), ids)
    export(tmp_path / "b", ids, mode="P")       # colours that are mostly no class's: the index is the class id
    np.testing.assert_array_equal(round_trip(masks.read(tmp_path / "b", LABEL_MAP)[0]), ids)


@pytest.mark.parametrize("palette", [[0, 0, 0, 255, 255, 255], [0] * 768], ids=["black_and_white", "blank"])
def test_palettes_that_name_no_classes_leave_the_index_the_class_id(tmp_path, palette):
    """A black-and-white palette (a 1-bit indexed PNG, GIMP's) made every index-1 pixel ignore (white), and a blank
    one made every pixel background, once palettes were read by colour."""
    ids = np.where(random_ids(3, ignore=False) > 3, 1, 0).astype(np.uint8)
    if len(palette) > 6:                    # a 2-colour palette is a 1-bit PNG: indices 0 and 1 only
        ids[0, :3] = (3, 6, 255)
    image = Image.fromarray(ids, "L").convert("P")
    image.putpalette(palette)
    export(tmp_path, ids, mode="L")
    save(tmp_path / "masks" / "frame_001.png", image)
    np.testing.assert_array_equal(round_trip(masks.read(tmp_path, LABEL_MAP)[0]), ids)


def test_a_palette_of_class_colours_but_one_stray_colour_is_an_error_naming_it(tmp_path):
    """An editor's palette of sky, road and building colours at indices 0, 1, 2 and a blended grey at 3 was read by
    index (sky became background, road tree, building landscaping) without a word."""
    colour = {c.name: tuple(c.color) for c in LABEL_MAP.classes}
    indices = np.zeros((12, 16), np.uint8)
    indices[6:], indices[:3, :4], indices[5, 2:6] = 1, 2, 3
    export(tmp_path, indices)
    image = Image.fromarray(indices, "P")
    image.putpalette([*colour["sky"], *colour["road"], *colour["building"], 100, 100, 100])
    save(tmp_path / "masks" / "frame_001.png", image)
    with pytest.raises(LabelFormatError, match=r"colour \(100, 100, 100\) \(4 pixels.*its indices do not look "
                                               r"like class ids.*\"ignore_values\""):
        masks.read(tmp_path, LABEL_MAP)


CAMVID_COLOURS = {"sky": (128, 128, 128), "building": (128, 0, 0), "pole": (192, 192, 128), "road": (128, 64, 128),
                  "pavement": (60, 40, 222), "tree": (128, 128, 0), "sign_symbol": (192, 128, 128),
                  "fence": (64, 64, 128), "car": (64, 0, 128), "pedestrian": (64, 64, 0), "bicyclist": (0, 128, 192)}


def camvid_label_map() -> LabelMap:
    """CamVid's 11 classes in their own colours: sky's and tree's are PASCAL VOC's colours 7 and 3."""
    return LabelMap(tuple(ClassInfo(i, n, c) for i, (n, c) in enumerate(CAMVID_COLOURS.items())))


def voc_colour_map() -> list[int]:
    """PASCAL VOC's 256-colour palette, as labelme2voc and VOC's own masks carry it."""
    def bits(i, channel):
        return sum(((i >> (3 * j + channel)) & 1) << (7 - j) for j in range(8))
    return [bits(i, channel) for i in range(256) for channel in range(3)]


def test_a_voc_palette_mask_is_read_by_index_whatever_the_label_maps_colours(tmp_path):
    """labelme2voc's masks (index = class id, VOC's colour map) read with CamVid's label map: indices 3 and 7 have
    the colours of tree and sky, so the colours were read, and black (index 0) was refused as no class's."""
    ids = np.random.default_rng(7).integers(0, 11, (12, 16)).astype(np.uint8)
    ids[0, :3] = 255
    export(tmp_path, ids)
    image = Image.fromarray(ids, "P")
    image.putpalette(voc_colour_map())
    save(tmp_path / "masks" / "frame_001.png", image)
    label_map = camvid_label_map()
    (annotation,) = masks.read(tmp_path, label_map)
    np.testing.assert_array_equal(annotation_to_mask(annotation, label_map).mask, ids)


def test_a_label_map_of_a_few_voc_classes_in_their_voc_colours_reads_voc_masks_by_colour(tmp_path):
    """A label map keeping VOC's colours for a subset of its classes (person and car as classes 1 and 2) read VOC
    masks by their colours; reading every VOC palette by index refused indices 7 and 15 as no class's."""
    voc = voc_colour_map()
    colour = lambda index: tuple(voc[3 * index:3 * index + 3])    # noqa: E731
    label_map = LabelMap((ClassInfo(0, "background", colour(0)), ClassInfo(1, "person", colour(15)),
                          ClassInfo(2, "car", colour(7))))
    indices = np.zeros((12, 16), np.uint8)
    indices[2:6, 2:6], indices[7:10, 8:14] = 15, 7
    export(tmp_path, indices)
    image = Image.fromarray(indices, "P")
    image.putpalette(voc)
    save(tmp_path / "masks" / "frame_001.png", image)
    (annotation,) = masks.read(tmp_path, label_map)
    np.testing.assert_array_equal(annotation_to_mask(annotation, label_map).mask,
                                  np.select([indices == 15, indices == 7], [1, 2], 0))


def test_a_palette_that_shares_a_few_class_colours_is_read_by_index(tmp_path):
    """A tool's palette of its own (not VOC's) where 2 of 11 indices happen to have other classes' colours: the
    colours were read and the other 9 refused."""
    ids = np.random.default_rng(8).integers(0, 11, (12, 16)).astype(np.uint8)
    export(tmp_path, ids)
    palette = [v for i in range(256) for v in (i, 255 - i, (i * 7) % 256)]
    palette[3 * 3:3 * 3 + 3], palette[3 * 7:3 * 7 + 3] = CAMVID_COLOURS["tree"], CAMVID_COLOURS["sky"]
    image = Image.fromarray(ids, "P")
    image.putpalette(palette)
    save(tmp_path / "masks" / "frame_001.png", image)
    label_map = camvid_label_map()
    (annotation,) = masks.read(tmp_path, label_map)
    np.testing.assert_array_equal(annotation_to_mask(annotation, label_map).mask, ids)


def test_a_palettes_transparent_colour_is_ignore_as_in_rgba(tmp_path):
    """Pixels a viewer shows transparent (PNG's tRNS) were read as class 0 (background)."""
    ids = np.where(random_ids(4, ignore=False) > 3, 2, 1).astype(np.uint8)
    ids[:4, :5] = 0
    export(tmp_path, ids)
    image = Image.fromarray(ids, "P")
    image.putpalette([v for i in range(256) for v in (i, i, i)])
    image.save(tmp_path / "masks" / "frame_001.png", transparency=0)
    np.testing.assert_array_equal(round_trip(masks.read(tmp_path, LABEL_MAP)[0]), np.where(ids == 0, 255, ids))


def test_a_one_bit_masks_white_is_255_where_the_label_map_has_that_value(tmp_path):
    """A black-and-white 1-bit mask of a binary label map ("crack": values [255]) was read as 0 and 1, and the
    error suggested the label map it had; with plain ids it stays 0 and 1."""
    binary = LabelMap((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "crack", (255, 0, 0), values=(255,))),
                      ignore_values=())
    crack = random_ids(5, ignore=False) > 5
    export(tmp_path, crack.astype(np.uint8))
    save(tmp_path / "masks" / "frame_001.png", Image.fromarray(crack))
    assert Image.open(tmp_path / "masks" / "frame_001.png").mode == "1"
    for label_map in (binary, LABEL_MAP):
        np.testing.assert_array_equal(annotation_to_mask(masks.read(tmp_path, label_map)[0], label_map).mask,
                                      crack.astype(np.uint8))


@pytest.mark.parametrize("kind", ["gif", "pages", "empty"])
def test_gif_many_paged_and_empty_masks_are_refused_in_words(tmp_path, kind):
    """A GIF's encoder renumbers the palette (ids 3, 5, 6 came back 0, 1, 2: road became background); a TIFF's
    pages after the first were dropped; an empty mask was 'cannot identify image file'."""
    ids = np.where(random_ids(6, ignore=False) > 3, 5, 3).astype(np.uint8)
    export(tmp_path, ids)
    (tmp_path / "masks" / "frame_001.png").unlink()
    if kind == "gif":
        Image.fromarray(ids, "L").save(tmp_path / "masks" / "frame_001.gif")
    elif kind == "pages":
        Image.fromarray(ids).save(tmp_path / "masks" / "frame_001.tif", save_all=True,
                                  append_images=[Image.fromarray(ids)])
    else:
        (tmp_path / "masks" / "frame_001.png").touch()
    said = {"gif": "GIF masks are refused: GIF encoders renumber the palette", "pages": "the mask has 2 pages",
            "empty": r"frame_001.png: empty file \(0 bytes\), not a mask image"}[kind]
    with pytest.raises(LabelFormatError, match=said):
        masks.read(tmp_path / "masks", LABEL_MAP)


def test_ignore_id_and_255_both_mean_ignore(tmp_path):
    label_map = LabelMap(LABEL_MAP.classes, ignore_id=200)
    ids = random_ids(2, ignore=False)
    ids[1, 1], ids[2, 2] = 200, 255
    export(tmp_path, ids)
    (annotation,) = masks.read(tmp_path, label_map)
    expected = np.where(ids == 255, 200, ids)
    np.testing.assert_array_equal(annotation_to_mask(annotation, label_map).mask, expected)


def test_rgba_transparent_is_ignore_and_bilevel_masks(tmp_path):
    ids = random_ids(3, ignore=False)
    rgba = np.dstack([LABEL_MAP.palette()[ids], np.full(ids.shape, 255, np.uint8)])
    rgba[5, 5, 3] = 0
    save(tmp_path / "masks" / "a.png", Image.fromarray(rgba, "RGBA"))
    save(tmp_path / "masks" / "b.png", Image.fromarray(ids % 2 == 1).convert("1"))
    a, b = masks.read(tmp_path / "masks", LABEL_MAP)
    expected = ids.copy()
    expected[5, 5] = 255
    np.testing.assert_array_equal(round_trip(a), expected)
    np.testing.assert_array_equal(round_trip(b), ids % 2)


def test_sixteen_bit_class_ids(tmp_path):
    ids = random_ids(4, ignore=False)
    save(tmp_path / "masks" / "a.png", Image.fromarray(ids.astype(np.uint16)))
    (annotation,) = masks.read(tmp_path / "masks" / "a.png", LABEL_MAP)
    np.testing.assert_array_equal(round_trip(annotation), ids)


# --- errors ----------------------------------------------------------------------------------------------------------

def test_value_outside_the_label_map_is_named(tmp_path):
    ids = random_ids(5)
    ids[3, 4] = 9
    path = export(tmp_path, ids)
    with pytest.raises(LabelFormatError) as error:
        masks.read(tmp_path, LABEL_MAP)
    message = str(error.value)
    assert str(path) in message and "pixel value 9" in message and "row 3, column 4" in message


def test_every_value_outside_the_label_map_is_named_with_both_hints(tmp_path):
    """A mask holding 11 and 20 named 11 alone (the least); mended, 20 came up on the next run. The hint named a
    class's "values" but not "ignore_values", which says a value stands for no class (CamVid's void 11)."""
    ids = random_ids(5)
    ids[:2, :2], ids[5, 6], ids[7, 8:10], ids[9, 9], ids[10, 10] = 11, 20, 30, 40, 50
    export(tmp_path, ids)
    with pytest.raises(LabelFormatError) as error:
        masks.read(tmp_path, LABEL_MAP)
    message = str(error.value)
    assert ("pixel values 11 (4 pixels, first at row 0, column 0), 20 (1 pixels, first at row 5, column 6), 30 (2 "
            "pixels, first at row 7, column 8) and 2 more (40, 50) (mode L mask) stand for no class") in message
    assert '"ignore_values": [11, 255]' in message and '"values"' in message


def test_unmapped_colour_is_named(tmp_path):
    rgb = LABEL_MAP.palette()[random_ids(6)]
    rgb[2, 7] = (1, 2, 3)
    path = save(tmp_path / "masks" / "a.png", Image.fromarray(rgb, "RGB"))
    with pytest.raises(LabelFormatError) as error:
        masks.read(tmp_path, LABEL_MAP)
    assert str(path) in str(error.value) and "colour (1, 2, 3)" in str(error.value)
    assert "blended" not in str(error.value)


def test_ignore_colors_name_the_colours_of_no_class_in_rgb_masks(tmp_path):
    """CamVid's own colour masks draw void black: only white could mean ignore, "ignore_values": [0] was refused
    ('mask value 0 stands for sky'), and the message pointed nowhere."""
    data = {"classes": [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(CAMVID_COLOURS.items())]}
    rgb = np.array(list(CAMVID_COLOURS.values()), np.uint8)[random_ids(9, ignore=False)]
    rgb[0, :3] = (0, 0, 0)
    path = save(tmp_path / "masks" / "a.png", Image.fromarray(rgb, "RGB"))
    with pytest.raises(LabelFormatError, match=r'colour \(0, 0, 0\) .* \(nor of ignore: \(255, 255, 255\)\); a label '
                                               r'map\'s "ignore_colors" names .*"ignore_colors": \[\[0, 0, 0\]\]'):
        masks.read(path, camvid_label_map())
    label_map = LabelMap.from_dict({**data, "ignore_colors": [[0, 0, 0]]})
    ids = masks.mask_ids(path, label_map)
    assert ids[0, :3].tolist() == [255] * 3 and (ids[1:] < 11).all()
    rgb[0, 3] = (255, 255, 255)                 # white is a colour of no class's now: its listing replaces white
    save(path, Image.fromarray(rgb, "RGB"))
    with pytest.raises(LabelFormatError, match=r"colour \(255, 255, 255\) .* \(nor of ignore: \(0, 0, 0\)\)"):
        masks.mask_ids(path, label_map)


def test_mapillary_label_masks_find_their_photos_one_folder_up(tmp_path):
    """Mapillary Vistas keeps <split>/v2.0/labels/0.png and <split>/images/0.jpg: 'no image named 0.*' without
    saying where it had looked."""
    export(tmp_path / "val", random_ids(1), stem="0", mask_dir="v2.0/labels")
    (annotation,) = masks.read(tmp_path / "val" / "v2.0" / "labels", LABEL_MAP)
    assert annotation.image_path == (tmp_path / "val" / "images" / "0.jpg").resolve()
    np.testing.assert_array_equal(round_trip(annotation), random_ids(1))


def test_cityscapes_label_id_masks_are_sent_to_the_cityscapes_reader(tmp_path):
    """gtFine/*_gtFine_labelIds.png with leftImg8bit/ photos: 'no mask folder found', not saying what reads them
    (the Cityscapes reader's tests read them)."""
    save(tmp_path / "gtFine" / "val" / "ulm" / "ulm_000001_000019_gtFine_labelIds.png", encode(random_ids(1), "L"))
    save(tmp_path / "leftImg8bit" / "val" / "ulm" / "ulm_000001_000019_leftImg8bit.png", Image.new("RGB", (16, 12)))
    with pytest.raises(LabelFormatError, match=r"holds 1 Cityscapes \*_gtFine_labelIds.png mask\(s\): read them with "
                                               "--format cityscapes"):
        masks.read(tmp_path, LABEL_MAP)


def test_detection_of_masks_without_images_says_so(tmp_path):
    """A CVAT export saved without its images: 'cannot tell which labelling tool wrote these files' alone."""
    from streetseg_jax.labels import formats

    save(tmp_path / "SegmentationClass" / "a.png", encode(random_ids(1), "RGB"))
    with pytest.raises(LabelFormatError, match="SegmentationClass holds masks but no images/ or JPEGImages/ folder"):
        formats.detect(tmp_path)


def test_a_mask_folder_of_no_mask_images_says_what_it_holds(tmp_path):
    """masks/ of .npy arrays beside images/: 'no mask folder found', with masks/ right there."""
    save(tmp_path / "images" / "a.jpg", Image.new("RGB", (4, 4)))
    (tmp_path / "masks").mkdir()
    for stem in "ab":
        np.save(tmp_path / "masks" / f"{stem}.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(LabelFormatError, match=r"no mask folder found; .*; masks/ holds no mask image "
                                               r"\(BMP/PNG/TIF/TIFF\): it holds 2 \.npy$"):
        masks.read(tmp_path, LABEL_MAP)


def test_a_mask_of_another_size_than_its_photo_names_both_folders(tmp_path, capsys):
    """'transposed.png is 80x64 but transposed.png says 64x80': the photo and its mask share their name."""
    from streetseg_jax.labels.__main__ import main

    save(tmp_path / "images" / "transposed.png", Image.new("RGB", (80, 64)))
    save(tmp_path / "masks" / "transposed.png", encode(random_ids(3, height=80, width=64), "L"))
    with pytest.raises(SystemExit):
        main(["check", "--format", "masks", "--input", str(tmp_path)])
    assert "images/transposed.png is 80x64 but its mask masks/transposed.png is 64x80" in capsys.readouterr().out
    from streetseg_jax.labels.shapes import Annotation, Shape
    from streetseg_jax.labels.validate import size_mismatch

    raster = [Shape("road", np.zeros((0, 2)), raster=np.ones((80, 64), bool))]
    coco = Annotation(tmp_path / "instances_default.json", "a.jpg", 64, 80, raster)     # RLE masks in a JSON file
    assert size_mismatch(coco, tmp_path / "a.jpg", "a.jpg", (80, 64)) == \
        "a.jpg is 80x64 but instances_default.json says 64x80"
    mask = Annotation(tmp_path / "masks" / "a.png", "a.jpg", 64, 80, raster)
    assert size_mismatch(mask, tmp_path / "a.jpg", "a.jpg", (80, 64)) == \
        "a.jpg is 80x64 but its mask masks/a.png is 64x80"


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_values_in_the_label_map_say_what_an_exports_mask_values_stand_for(tmp_path, mode):
    """A binary mask of 0 and 255, ids 0, 3 and 7, 0 for void: the label map's values and ignore_values read them
    (they stood for ignore, or were refused, and the only way round was dummy classes)."""
    stored = np.array([[0, 3, 7, 255], [7, 3, 0, 0]], np.uint16 if mode == "I;16" else np.uint8)
    label_map = LabelMap.from_dict({"classes": [
        {"id": 0, "name": "background", "color": [0, 0, 0], "values": [3]},
        {"id": 1, "name": "crack", "color": [255, 0, 0], "values": [7, 255]}], "ignore_values": [0]})
    save(tmp_path / "images" / "a.jpg", Image.new("RGB", (4, 2)))
    save(tmp_path / "masks" / "a.png", Image.fromarray(stored))
    (annotation,) = masks.read(tmp_path, label_map)
    np.testing.assert_array_equal(annotation_to_mask(annotation, label_map).mask, [[255, 0, 1, 1], [1, 0, 255, 255]])
    assert LabelMap.from_dict(label_map.to_dict()) == label_map
    assert "values" not in json.dumps(LABEL_MAP.to_dict())          # label maps without them read and write as before
    stored[1, 1] = 1                                # its id, but no value of it
    save(tmp_path / "masks" / "a.png", Image.fromarray(stored))
    with pytest.raises(LabelFormatError, match=r"pixel value 1 .* stands for no class of the label map "
                                               r"\(background 3, crack 7/255\) nor for none \(0\); a class's "
                                               r'"values" in the label map say'):
        masks.read(tmp_path, label_map)


def test_values_decide_over_a_palettes_colours(tmp_path):
    """A palette mask whose indices have class colours is read by colour, unless the label map gives values."""
    colours = {"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                           {"id": 1, "name": "crack", "color": [255, 0, 0]}]}
    image = Image.fromarray(np.array([[3, 3, 7, 255]], np.uint8), "P")
    image.putpalette([0, 0, 0] * 3 + [255, 0, 0] + [0, 0, 0] * 252)      # 3 red (crack), 7 black (background)
    save(tmp_path / "images" / "a.jpg", Image.new("RGB", (4, 1)))
    save(tmp_path / "masks" / "a.png", image)
    by_colour = LabelMap.from_dict(colours)
    (annotation,) = masks.read(tmp_path, by_colour)
    assert annotation_to_mask(annotation, by_colour).mask.tolist() == [[1, 1, 0, 255]]
    colours["classes"][0]["values"], colours["classes"][1]["values"] = [3], [7]
    by_value = LabelMap.from_dict(colours)
    (annotation,) = masks.read(tmp_path, by_value)
    assert annotation_to_mask(annotation, by_value).mask.tolist() == [[0, 0, 1, 255]]


@pytest.mark.parametrize("data, message", [
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0], "values": [5]},
                  {"id": 1, "name": "b", "color": [1, 1, 1], "values": [5]}]}, "mask value 5 stands for both 'a' and 'b'"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]},
                  {"id": 1, "name": "b", "color": [1, 1, 1], "values": [0]}]}, "mask value 0 stands for both 'a' and 'b'"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}, {"id": 1, "name": "b", "color": [1, 1, 1]}],
      "ignore_values": [1]}, "mask value 1 stands for 'b' and is in ignore_values too .*\"ignore_colors\""),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}, {"id": 1, "name": "b", "color": [1, 1, 1]}],
      "ignore_colors": [[1, 1, 1]]}, r"colour \[1, 1, 1\] is the colour of class 'b' and in ignore_colors too"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}, {"id": 1, "name": "b", "color": [1, 1, 1]}],
      "ignore_colors": [0, 0, 0]}, r"ignore_colors: 0 must be a list of three integers"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}, {"id": 1, "name": "b", "color": [1, 1, 1]}],
      "ignore_colors": [[0, 0, 256]]}, r"ignore_colors: \[0, 0, 256\] must be three integers 0..255"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0], "values": 5},
                  {"id": 1, "name": "b", "color": [1, 1, 1]}]}, "values must be a list of pixel values"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0], "values": [70000]},
                  {"id": 1, "name": "b", "color": [1, 1, 1]}]}, "values must be pixel values 0..65535"),
])
def test_values_that_stand_for_two_things_are_refused(data, message):
    from streetseg_jax.labels.label_map import LabelMapError

    with pytest.raises(LabelMapError, match=message):
        LabelMap.from_dict(data)


def test_the_problems_of_every_folder_are_told_at_once(tmp_path):
    """Only the first split folder's bad masks were listed: mended, the next folder's came up."""
    for split in ("test", "train"):
        export(tmp_path / split, random_ids(1), mode="RGB")
        grey = Image.fromarray(random_ids(2, ignore=False), "L").convert("RGB")
        save(tmp_path / split / "masks" / "frame_001.png", grey)
    with pytest.raises(LabelFormatError, match="2 problems in the annotations") as error:
        masks.read(tmp_path, LABEL_MAP)
    assert all(str(tmp_path / split / "masks" / "frame_001.png") in str(error.value) for split in ("test", "train"))


def test_a_mask_blended_on_the_way_says_so(tmp_path):
    """A PNG mask that had been through JPEG was named by one odd colour, as if one pixel were wrong."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(LABEL_MAP.palette()[random_ids(6, ignore=False)], "RGB").resize((64, 48)).save(buffer, "JPEG")
    save(tmp_path / "masks" / "a.png", Image.open(buffer))
    with pytest.raises(LabelFormatError, match=r"colours of this mask are no class's: its edges were blended"):
        masks.read(tmp_path, LABEL_MAP)
    other = LabelMap(tuple(ClassInfo(i, f"c{i}", (20 * i + 7, 255 - 20 * i, 100)) for i in range(12)))
    ids = np.random.default_rng(0).integers(0, 12, (12, 16))
    save(tmp_path / "masks" / "a.png", Image.fromarray(other.palette()[ids], "RGB"))
    with pytest.raises(LabelFormatError, match=r"far from every class colour: were the masks drawn with another"):
        masks.read(tmp_path, LABEL_MAP)                # a clean mask of another label map: nothing was blended


def test_grey_rgb_mask_gets_a_hint(tmp_path):
    ids = random_ids(7, ignore=False)
    path = save(tmp_path / "masks" / "a.png", Image.fromarray(ids, "L").convert("RGB"))
    with pytest.raises(LabelFormatError, match="save the mask as 8-bit greyscale") as error:
        masks.read(tmp_path, LABEL_MAP)
    assert str(path) in str(error.value)


def test_shared_colour_is_ambiguous(tmp_path):
    classes = LABEL_MAP.classes[:-1] + (ClassInfo(7, "concrete", LABEL_MAP.classes[6].color),)
    rgb = LABEL_MAP.palette()[random_ids(8, ignore=False)]
    path = save(tmp_path / "masks" / "a.png", Image.fromarray(rgb, "RGB"))
    with pytest.raises(LabelFormatError, match="several classes") as error:
        masks.read(tmp_path, LabelMap(classes))
    assert str(path) in str(error.value) and "sky, concrete" in str(error.value)


@pytest.mark.parametrize("name, image, problem", [
    ("a.jpg", Image.new("L", (4, 4)), "JPEG masks are refused"),
    ("a.png", Image.new("LA", (4, 4)), "mode LA"),
    ("a.png", Image.fromarray(np.full((4, 4, 4), 128, np.uint8), "RGBA"), "semi-transparent"),
])
def test_unusable_mask_files(tmp_path, name, image, problem):
    path = save(tmp_path / "masks" / name, image)
    with pytest.raises(LabelFormatError, match=problem) as error:
        masks.read(tmp_path, LABEL_MAP)
    assert str(path) in str(error.value)


def test_unreadable_and_missing(tmp_path):
    path = tmp_path / "masks" / "a.png"
    path.parent.mkdir()
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(LabelFormatError, match="unreadable") as error:
        masks.read(tmp_path, LABEL_MAP)
    assert str(path) in str(error.value)
    (tmp_path / "other").mkdir()
    with pytest.raises(LabelFormatError, match="no mask folder"):
        masks.read(tmp_path / "other", LABEL_MAP)


def test_image_symlinked_out_of_the_export_is_refused(tmp_path):
    outside = save(tmp_path / "elsewhere" / "secret.png", Image.new("RGB", (16, 12)))
    export(tmp_path / "export", random_ids(9))
    target = tmp_path / "export" / "images" / "frame_001.jpg"
    target.unlink()
    os.symlink(outside, target)
    with pytest.raises(LabelFormatError, match="outside the export folder .* through a link .*copy the files"):
        masks.read(tmp_path / "export", LABEL_MAP)


# --- layouts ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image_dir, mask_dir", [
    ("images", "masks"), ("images", "labels"), ("images", "annotations"), ("JPEGImages", "SegmentationClass"),
    ("JPEGImages", "SegmentationClassPNG"), ("train", "trainannot"),
])
def test_layouts(tmp_path, image_dir, mask_dir):
    export(tmp_path, random_ids(10), image_dir=image_dir, mask_dir=mask_dir)
    assert masks.looks_like(tmp_path)
    for path in (tmp_path, tmp_path / mask_dir, tmp_path / mask_dir / "frame_001.png"):
        (annotation,) = masks.read(path, LABEL_MAP)
        assert annotation.image_path == (tmp_path / image_dir / "frame_001.jpg").resolve()


def test_split_folders_nested_names_and_mask_suffixes(tmp_path):
    export(tmp_path / "train", random_ids(11), stem="seq1/frame_001")
    export(tmp_path / "val", random_ids(12), stem="frame_009")
    (tmp_path / "val" / "masks" / "frame_009.png").rename(tmp_path / "val" / "masks" / "frame_009_L.png")
    annotations = masks.read(tmp_path, LABEL_MAP)
    assert [a.file_name for a in annotations] == ["seq1/frame_001.jpg", "frame_009.jpg"]
    assert all(a.image_path.is_file() for a in annotations)


def test_keys_keep_nested_and_split_folders_apart(tmp_path):
    """Stems repeat across subfolders (seq1/frame_001, seq2/frame_001) and split folders (a in train/ and val/):
    each image's key is its path below the mask folder, after the folders above the pair, so no two masks of the
    export are written to one file. A mask at the top of a single pair keeps its plain stem."""
    for folder in ("seq1", "seq2"):
        export(tmp_path / "nested", random_ids(20), stem=f"{folder}/frame_001")
    export(tmp_path / "nested", random_ids(21), stem="top")
    keys = [image_key(a) for a in masks.read(tmp_path / "nested", LABEL_MAP)]
    assert keys == ["seq1/frame_001", "seq2/frame_001", "top"]
    export(tmp_path / "splits" / "train", random_ids(22), stem="a")
    export(tmp_path / "splits" / "val", random_ids(23), stem="a")
    (tmp_path / "splits" / "val" / "masks" / "a.png").rename(tmp_path / "splits" / "val" / "masks" / "a_L.png")
    annotations = masks.read(tmp_path / "splits", LABEL_MAP)
    assert [image_key(a) for a in annotations] == ["train/a", "val/a"] and duplicate_keys(annotations) == {}
    (annotation,) = masks.read(tmp_path / "splits" / "val" / "masks", LABEL_MAP)     # the mask folder itself
    assert image_key(annotation) == "a"
    for split in ("train", "val"):      # SegNet's layout: both were "a", refused as duplicates
        export(tmp_path / "segnet", random_ids(24), stem="a", image_dir=split, mask_dir=f"{split}annot")
    annotations = masks.read(tmp_path / "segnet", LABEL_MAP)
    assert [(image_key(a), a.split) for a in annotations] == [("train/a", "train"), ("val/a", "validation")]


def test_mask_without_image_and_duplicate_names(tmp_path):
    save(tmp_path / "masks" / "lonely.png", Image.fromarray(random_ids(13)))
    (tmp_path / "images").mkdir()
    (annotation,) = masks.read(tmp_path, LABEL_MAP)
    assert annotation.image_path is None and annotation.file_name == ""
    save(tmp_path / "images" / "lonely.jpg", Image.new("RGB", (16, 12)))
    save(tmp_path / "images" / "lonely.png", Image.new("RGB", (16, 12)))
    with pytest.raises(LabelFormatError, match="share a name"):
        masks.read(tmp_path, LABEL_MAP)


def test_looks_like_refuses_other_exports(tmp_path):
    assert not masks.looks_like(tmp_path)
    export(tmp_path, random_ids(14))
    (tmp_path / "label_map.json").write_text("{}")
    assert masks.looks_like(tmp_path)                   # a label list beside the masks is fine
    (tmp_path / "panoptic.json").write_text("{}")
    assert not masks.looks_like(tmp_path)               # COCO panoptic: images/ + masks/ + its JSON


@pytest.mark.skipif(not COCO.is_dir(), reason=f"COCO sample not found at {COCO}")
def test_looks_like_is_false_for_the_coco_panoptic_sample():
    assert not masks.looks_like(COCO)


# --- real samples ----------------------------------------------------------------------------------------------------

def voc_label_map() -> LabelMap:
    names = ("background aeroplane bicycle bird boat bottle bus car cat chair cow dining_table dog horse motorbike "
             "person potted_plant sheep sofa train tv_monitor").split()
    return LabelMap(tuple(ClassInfo(i, n, (i, i, i)) for i, n in enumerate(names)))


@pytest.mark.skipif(not LABELME.is_dir(), reason=f"labelme sample not found at {LABELME}")
def test_labelme2voc_palette_masks(tmp_path):
    """labelme2voc's own reference masks (palette PNGs, 255 = __ignore__) laid out as VOC: JPEGImages/ +
    SegmentationClass/."""
    references = sorted((LABELME / "reference_labelme2voc" / "SegmentationClass").glob("*.png"))
    for folder in ("JPEGImages", "SegmentationClass"):
        (tmp_path / folder).mkdir()
    for reference in references:
        shutil.copy(LABELME / "data_annotated" / f"{reference.stem}.jpg", tmp_path / "JPEGImages")
        shutil.copy(reference, tmp_path / "SegmentationClass")
    label_map = voc_label_map()
    assert masks.looks_like(tmp_path)
    annotations = masks.read(tmp_path, label_map)
    assert len(annotations) == len(references) == 3
    for annotation, reference in zip(annotations, references):
        expected = np.asarray(Image.open(reference))
        assert annotation.image_path.stem == reference.stem
        np.testing.assert_array_equal(annotation_to_mask(annotation, label_map).mask, expected)
    assert [s.label for s in annotations[0].shapes] == ["background", "bottle", "person", "__ignore__"]


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid not found at {CAMVID}")
def test_camvid_greyscale_masks(tmp_path):
    """SegNet's CamVid layout (train/ + trainannot/), 11 = void as the label map's ignore id."""
    stems = ["0001TP_006690", "0016E5_00390"]
    for stem in stems:
        for folder in ("train", "trainannot"):
            (tmp_path / folder).mkdir(exist_ok=True)
            shutil.copy(CAMVID / folder / f"{stem}.png", tmp_path / folder)
    names = "sky building pole road pavement tree sign_symbol fence car pedestrian bicyclist".split()
    label_map = LabelMap(tuple(ClassInfo(i, n, (i, i, i)) for i, n in enumerate(names)), ignore_id=11)
    annotations = masks.read(tmp_path, label_map)
    assert [a.image_path.name for a in annotations] == [f"{s}.png" for s in stems]
    for annotation in annotations:
        np.testing.assert_array_equal(annotation_to_mask(annotation, label_map).mask,
                                      np.asarray(Image.open(annotation.source)))


def test_a_picture_beside_the_image_folders_is_no_unannotated_photo(tmp_path):
    """CamVid's camvid11_palette.png at the export's top was listed as an image with no annotation."""
    from streetseg_jax.labels.validate import CheckOptions, validate

    export(tmp_path, random_ids(1))
    save(tmp_path / "palette.png", Image.new("RGB", (16, 12)))
    save(tmp_path / "images" / "unlabelled.jpg", Image.new("RGB", (16, 12)))
    report = validate(masks.read(tmp_path, LABEL_MAP), LABEL_MAP, fmt="masks", source=tmp_path, root=tmp_path,
                      options=CheckOptions())
    assert report.unannotated == ["images/unlabelled.jpg"]


def test_voc_image_sets_give_the_splits(tmp_path):
    """CVAT's Segmentation mask export lists its subsets in ImageSets/Segmentation/<subset>.txt: they were not read,
    and the val images were hashed into train."""
    for i in range(4):
        export(tmp_path, random_ids(i), stem=f"frame_{i}", image_dir="JPEGImages", mask_dir="SegmentationClass")
    sets = tmp_path / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\ufeffframe_0\r\nframe_1 \r\n", encoding="utf-8")     # Notepad's BOM and lines
    (sets / "val.txt").write_text("frame_2\n")
    (sets / "trainval.txt").write_text("frame_0\nframe_1\nframe_2\n")     # VOC's: no split of its own
    (sets / "default.txt").write_text("frame_3\n")                          # CVAT's: hashed as before
    read = masks.read(tmp_path, LABEL_MAP)
    assert [(a.key, a.split) for a in read] == [("frame_0", "train"), ("frame_1", "train"),
                                                ("frame_2", "validation"), ("frame_3", None)]


def test_masks_beside_their_images_in_split_folders(tmp_path):
    """Roboflow's semantic-segmentation export: a.jpg beside a_mask.png in train/, valid/ and test/, class names in
    _classes.csv; it was not recognised ('no mask folder found')."""
    from streetseg_jax.labels import formats

    for split, stem, value in (("train", "a", 3), ("valid", "a", 6), ("test", "c", 1)):
        save(tmp_path / split / f"{stem}.jpg", Image.new("RGB", (8, 6), (90, 40, 10)))
        save(tmp_path / split / f"{stem}_mask.png", Image.new("L", (8, 6), value))
        (tmp_path / split / "_classes.csv").write_text("Pixel Value, Class\n0, background\n")
    assert formats.detect(tmp_path) == "masks"
    read = sorted(formats.read("masks", tmp_path, default_label_map()), key=image_key)
    assert [(image_key(a), a.split, a.image_path.name) for a in read] == [
        ("test/c", "test", "c.jpg"), ("train/a", "train", "a.jpg"), ("valid/a", "validation", "a.jpg")]
    assert [int(annotation_to_mask(a, default_label_map()).mask.max()) for a in read] == [1, 3, 6]


def test_to_masks_never_writes_over_or_beside_the_masks_it_reads(tmp_path, capsys):
    """`to-masks --output` the export's mask folder replaced the user's RGB masks with palette PNGs, and wrote
    x.png beside the mask x.tif, after which the export could not be read ("share a name; which one is meant?")."""
    from streetseg_jax.labels.__main__ import main

    rgb = export(tmp_path, random_ids(1), "rgb", mode="RGB")
    tif = save(tmp_path / "masks" / "tif.tif", encode(random_ids(2), "L"))
    save(tmp_path / "images" / "tif.jpg", Image.new("RGB", (16, 12)))
    before = {path: path.read_bytes() for path in (rgb, tif)}
    with pytest.raises(SystemExit):
        main(["to-masks", "--format", "masks", "--input", str(tmp_path), "--output", str(tmp_path / "masks")])
    err = capsys.readouterr().err
    assert "would overwrite the export's own files" in err and f"{rgb}\n" in err
    assert str(tmp_path / "masks" / "tif.png") in err
    assert sorted((tmp_path / "masks").iterdir()) == sorted(before)
    assert all(path.read_bytes() == data for path, data in before.items())
    main(["to-masks", "--format", "masks", "--input", str(tmp_path), "--output", str(tmp_path / "ids")])
    assert sorted(p.name for p in (tmp_path / "ids").iterdir()) == ["rgb.png", "tif.png"]
    with pytest.raises(SystemExit):             # beside the photos rgb.jpg and tif.jpg: "share a name" next time
        main(["to-masks", "--format", "masks", "--input", str(tmp_path), "--output", str(tmp_path / "images")])
    assert str(tmp_path / "images" / "rgb.png") in capsys.readouterr().err
    assert sorted(p.suffix for p in (tmp_path / "images").iterdir()) == [".jpg", ".jpg"]


def test_only_mapillarys_versioned_label_folder_finds_photos_one_folder_up(tmp_path):
    """Any mask folder given as --input had its masks paired with an unrelated images/ two folders up."""
    save(tmp_path / "images" / "x.jpg", Image.new("RGB", (16, 12)))
    save(tmp_path / "sub" / "work" / "x.png", encode(random_ids(1), "L"))
    (alone,) = masks.read(tmp_path / "sub" / "work" / "x.png", LABEL_MAP)
    assert alone.image_path is None
    save(tmp_path / "val" / "images" / "y.jpg", Image.new("RGB", (16, 12)))
    save(tmp_path / "val" / "v2.0" / "labels" / "y.png", encode(random_ids(2), "L"))
    (annotation,) = masks.read(tmp_path / "val" / "v2.0" / "labels", LABEL_MAP)
    assert annotation.image_path == tmp_path / "val" / "images" / "y.jpg"
