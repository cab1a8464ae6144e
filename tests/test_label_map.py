"""The label schema: the seed's classes, JSON round trip, aliases, and clear errors for bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from streetseg_jax.labels.stats import class_pixel_counts, median_frequency_weights
from streetseg_jax.labels.label_map import LabelMap, LabelMapError, default_label_map


def test_default_is_the_seeds_eight_classes():
    lm = default_label_map()
    assert lm.names == ["background", "tree", "landscaping", "road", "sidewalk", "building", "sky", "concrete"]
    assert (lm.ignore_id, lm.fill_id, lm.num_classes) == (255, 0, 8)


def test_json_round_trip_and_the_documented_shape(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"classes": [
        {"id": 1, "name": "road", "color": [128, 64, 128], "aliases": ["street", "Road Surface"]},
        {"id": 0, "name": "sign_symbol", "color": [192, 128, 128]}], "ignore_id": 200, "fill_id": 0}))
    lm = LabelMap.load(path)
    assert lm.names == ["sign_symbol", "road"]  # ordered by id
    assert lm.ignore_id == 200
    assert LabelMap.from_json(lm.to_json()) == lm
    assert lm.palette()[1].tolist() == [128, 64, 128]


@pytest.mark.parametrize("name, expected", [("STREET", 1), ("road_surface", 1), ("road-surface", 1),
                                            (" Sign Symbol ", 0), ("car", None)])
def test_aliases_are_case_and_separator_insensitive(name, expected):
    lm = LabelMap.from_dict({"classes": [
        {"id": 0, "name": "sign_symbol", "color": [1, 2, 3]},
        {"id": 1, "name": "road", "color": [4, 5, 6], "aliases": ["street", "road surface"]}]})
    assert lm.id_of(name) == expected


@pytest.mark.parametrize("data, message", [
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}, {"id": 2, "name": "b", "color": [0, 0, 0]}]},
     "without gaps"),
    ({"classes": [{"id": 0, "name": "Road", "color": [0, 0, 0]}]}, "snake_case"),
    ({"classes": [{"id": 0, "name": "_background_", "color": [0, 0, 0]}]},    # LabelMe's own: the fix is said
     r"""name it 'background' and keep the tool's spelling as an alias, \{"name": "background", "aliases": """
     r"""\["_background_"\], \.\.\.\}"""),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0]}]}, "three integers"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 300]}]}, "three integers"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}], "ignore_id": 0}, "ignore_id"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}], "fill_id": 3}, "fill_id"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0], "aliases": ["x"]},
                  {"id": 1, "name": "b", "color": [0, 0, 0], "aliases": ["X"]}]}, "used by both"),
    ({"classes": [{"id": 0, "name": "car", "color": [0, 0, 0]}, {"id": 1, "name": "car", "color": [1, 1, 1]}]},
     r"'car' is used by both class 0 \('car'\) and class 1 \('car'\)"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}, {"id": 1.7, "name": "b", "color": [1, 1, 1]}]},
     "class 'b': id must be a whole number, got 1.7"),
    ({"classes": [{"id": "0", "name": "a", "color": [0, 0, 0]}]}, "id must be a whole number, got '0'"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0.5, 0]}]}, "color must be a whole number, got 0.5"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}], "ignore_id": True}, "ignore_id must be a whole"),
    ({"classes": []}, "no classes"),
    ({"classes": [{"id": 0, "name": "crack", "color": [0, 0, 0]}]},      # trained to loss 0 and mIoU 1, said nowhere
     r"one class \('crack'\): a label map needs 2 at least.*add a 'background' class"),
    ({"classes": [{"id": i, "name": f"c{i}", "color": [0, 0, i % 256]} for i in range(256)]},
     r"256 classes: a mask holds 255 at most \(ids 0..254, and 255 for the ignore id\)"),
    ({"klasses": []}, r"unknown key 'klasses' \(did you mean 'classes'\?\); a label map's keys are classes, "),
    ({"classes": "a", "_comment": "mine"}, "malformed"),       # a comment key is left alone, not refused
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}], "ignore_ids": 3},  # the default ignore id was used
     r"labels.json: unknown key 'ignore_ids' \(did you mean 'ignore_id'\?\)"),
    ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0], "alias": ["car"]}]},     # car was left unknown
     r"class 'a': unknown key 'alias' \(did you mean 'aliases'\?\); a class's keys are id, name, color, aliases"),
    ({"classes": [{"id": 0, "name": "a", "color": "#ff0000"}]},      # "color must be a whole number, got '#'"
     r"class 'a': color must be a list of three integers 0..255, \[r, g, b\], got '#ff0000'"),
    ({"classes": "a"}, "malformed"),
])
def test_bad_label_maps_say_what_is_wrong(data, message):
    with pytest.raises(LabelMapError, match=message):
        LabelMap.from_dict(data, "labels.json")


def test_bad_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LabelMapError, match="bad.json: not valid JSON"):
        LabelMap.load(bad)
    with pytest.raises(LabelMapError, match="cannot read label map"):
        LabelMap.load(tmp_path / "missing.json")
    text = '{"classes": [{"id": 0, "name": "a", "color": [0, 0, 0], "aliases": ["caf\xe9"]}]}'
    bad.write_bytes(text.encode("latin-1"))
    with pytest.raises(LabelMapError, match="bad.json is not UTF-8 text"):
        LabelMap.load(bad)
    assert LabelMap.from_dict({"classes": [{"id": 0.0, "name": "a", "color": [0, 0, 0]},
                                           {"id": 1, "name": "b", "color": [1, 1, 1]}]}).classes[0].id == 0
    bad.write_text("\ufeff" + default_label_map().to_json(), encoding="utf-8")   # a BOM, as Notepad saves it
    assert LabelMap.load(bad) == default_label_map()


def test_roboflow_classes_csv_is_a_label_map(tmp_path):
    """Roboflow's _classes.csv (pixel value -> class name) was not read: users wrote the same map by hand."""
    path = tmp_path / "_classes.csv"
    path.write_text("Pixel Value, Class\n0, background\n2, Traffic Light\n1, road\n\n")
    lm = LabelMap.load(path)
    assert lm.names == ["background", "road", "traffic_light"] and lm.id_of("Traffic Light") == 2
    assert (lm.fill_id, lm.ignore_id, lm.classes[1].color) == (0, 255, default_label_map().classes[3].color)
    twice = "a pixel value is named twice"
    path.write_text("0, background\n1, road\n")                 # the header left out: the lines say enough
    assert LabelMap.load(path).names == ["background", "road"]
    path.write_text("Pixel Value, Class,\n0, background,\n1, road, x\n255, ignore\n-1, void\n")
    assert LabelMap.load(path).names == ["background", "road"]   # a trailing comma, an extra column, ignore values
    path.write_text("0, background\n255, crack\n")             # a binary mask's: 255 is the crack, not ignore
    crack = LabelMap.load(path)
    assert crack.names == ["background", "crack"] and crack.classes[1].values == (255,)
    assert crack.value_table()[[0, 1, 255]].tolist() == [0, -1, 1]
    path.write_text("0, background\n2, road\n7, car\n")       # values with gaps: each class lists its own
    assert [(c.id, c.values) for c in LabelMap.load(path).classes] == [(0, ()), (1, (2,)), (2, (7,))]
    path.write_text("0, Road\n1, Background\n")               # the first is the fill class, not renamed
    assert [(c.name, c.aliases) for c in LabelMap.load(path).classes] == [("road", ("Road",)),
                                                                          ("background", ("Background",))]
    for text, message in (("Value, Name\n0, background\n", "expected a 'Pixel Value, Class' header"),
                          ("Pixel Value, Class\n0, background\n0, road\n", twice),
                          ("Pixel Value, Class\nzero, background\n", "must be 'pixel value, class name'"),
                          ("Pixel Value, Class\n0, background\n1, Road\n2, road\n", "one class 'road'")):
        path.write_text(text)
        with pytest.raises(LabelMapError, match=f"_classes.csv: .*{message}"):
            LabelMap.load(path)


def test_cvat_labelmap_txt_is_a_label_map(tmp_path):
    """CVAT's Segmentation mask export (and Datumaro's VOC) names its masks' colours in labelmap.txt."""
    path = tmp_path / "labelmap.txt"
    path.write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nRoad:128,64,128::\ncar:::\n\n")
    lm = LabelMap.load(path)
    assert [(c.name, c.color) for c in lm.classes] == [
        ("background", (0, 0, 0)), ("road", (128, 64, 128)), ("car", (0, 128, 0))]    # car: VOC's colour 2
    assert (lm.fill_id, lm.ignore_id, lm.id_of("Road")) == (0, 255, 1)
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\nroad\ncar\n")     # labelme2voc's
    (tmp_path / "map.txt").write_text(default_label_map().to_json())      # a JSON label map named .txt
    assert LabelMap.load(tmp_path / "map.txt") == default_label_map()
    names = LabelMap.load(tmp_path / "labels.txt")           # labelme2voc paints its masks in VOC's colours
    assert [(c.name, c.color) for c in names.classes] == [
        ("background", (0, 0, 0)), ("road", (128, 0, 0)), ("car", (0, 128, 0))]
    assert names.id_of("_background_") == 0
    for text, message in (("# nothing\n", "no classes"), ("background:0,0,0::\nroad:1,2::\n", "'road:1,2::'"),
                          ("background:0,0,0::\nroad:a,b,c::\n", "three values 0..255"),
                          ("background:0,0,0::\nroad:0,0,300::\n", "three values 0..255")):
        path.write_text(text)
        with pytest.raises(LabelMapError, match=f"labelmap.txt: .*{message}"):
            LabelMap.load(path)


def test_median_frequency_weights_follow_segnet():
    masks = [np.array([[0, 0, 0, 1]]), np.array([[0, 2, 2, 255]])]
    pixels, image_pixels = class_pixel_counts(masks, 4)
    assert pixels.tolist() == [4, 1, 2, 0]
    assert image_pixels.tolist() == [7, 4, 3, 0]  # pixels of the images each class appears in (ignore excluded)
    weights = median_frequency_weights(pixels, image_pixels)
    freq = np.array([4 / 7, 1 / 4, 2 / 3])
    np.testing.assert_allclose(weights[:3], np.median(freq) / freq, rtol=1e-6)
    assert weights[3] == 0.0


def test_colours_pictures_cannot_tell_apart_are_named():
    """Two yellows 5 apart, or a class in the grey of ignored pixels, passed without a word; each class colour of a
    starter map stays clear of those the pictures keep."""
    from streetseg_jax.labels.label_map import IGNORE_GREY, starter_label_map

    classes = [{"id": 0, "name": "background", "color": [0, 0, 0]},
               {"id": 1, "name": "sign_back", "color": [220, 220, 0]},
               {"id": 2, "name": "sign_front", "color": [220, 220, 5]},
               {"id": 3, "name": "cone", "color": list(IGNORE_GREY)}]
    assert LabelMap.from_dict({"classes": classes}).colour_clashes() == [
        "class 'sign_back' [220, 220, 0] and class 'sign_front' [220, 220, 5] look alike in pictures: give one "
        "another colour in the label map",
        "class 'cone' [205, 205, 205] and the grey of ignored pixels [205, 205, 205] look alike in pictures: give one "
        "another colour in the label map"]
    assert default_label_map().colour_clashes() == []
    assert starter_label_map([f"n{i}" for i in range(250)]).colour_clashes() == []     # VOC's 63rd is (192,192,192)


def test_keys_of_other_uses_are_left_alone():
    """A comment, or another tool's class fields, in a label map that loaded before typos were refused."""
    data = default_label_map().to_dict()
    data["_comment"] = "ours, from the seed"
    data["classes"][1]["supercategory"] = "nature"
    assert LabelMap.from_dict(data) == default_label_map()


def test_starters_of_a_binary_masks_values_and_colours_keep_both_classes():
    """A binary mask of 0 and 255 (or black and white) is two classes, not one class and ignore (a label map of
    one class is refused)."""
    from streetseg_jax.labels.label_map import starter_of_colours, starter_of_values

    binary = starter_of_values([0, 255])
    assert [(c.name, c.values) for c in binary.classes] == [("class_0", ()), ("class_255", (255,))]
    assert binary.ignore_values == () and binary.value_table()[[0, 255]].tolist() == [0, 1]
    ids = starter_of_values([0, 3, 7, 255])
    assert [(c.name, c.values) for c in ids.classes] == [("class_0", ()), ("class_3", (3,)), ("class_7", (7,))]
    assert ids.value_table()[[0, 3, 7, 255]].tolist() == [0, 1, 2, 255]
    black_and_white = iter([(0, 0, 0), (255, 255, 255)])        # labels classes passes the colours as an iterator
    assert [c.color for c in starter_of_colours(black_and_white).classes] == [(0, 0, 0), (255, 255, 255)]
    assert [c.color for c in starter_of_colours([(9, 9, 9), (255, 255, 255), (0, 0, 0)]).classes] == [
        (9, 9, 9), (0, 0, 0)]


def test_ignore_colors_are_written_only_where_given():
    """A label map without ignore_colors writes what it wrote before (a build's fingerprint hashes it); one with
    them keeps them, and of_ids (a dataset's, a model's) leaves them out with the export's values."""
    assert "ignore_colors" not in default_label_map().to_json()
    data = {**default_label_map().to_dict(), "ignore_colors": [[1, 2, 3], [0, 0, 1]]}
    label_map = LabelMap.from_dict(data)
    assert label_map.ignore_colors == ((1, 2, 3), (0, 0, 1)) and label_map.to_dict() == data
    assert label_map.of_ids() == default_label_map()
    assert default_label_map().mask_ignore_colors() == ((255, 255, 255),)


def test_a_label_map_change_names_each_detail():
    """A rebuild whose map only gained an alias was said as "colours, aliases, fill id or mask values"."""
    from streetseg_jax.labels.label_map import label_map_change

    old = default_label_map().to_dict()
    new = json.loads(json.dumps(old))
    new["classes"][3]["aliases"].append("track")
    new["classes"][5]["aliases"].remove("house")
    new["classes"][6]["color"] = [1, 2, 3]
    new["fill_id"] = 255
    assert label_map_change(old, new) == ("class 'road' gained alias 'track'; class 'building' lost alias 'house'; "
                                          "class 'sky': colour [70, 130, 180] before, [1, 2, 3] now; "
                                          "fill_id 0 before, 255 now")
    new["ignore_values"] = [0]
    assert label_map_change(old, new).endswith("; ignore_values not given before, [0] now")
    reordered = json.loads(json.dumps(old))          # was "no difference", in "changed since the checkpoint (...)"
    reordered["classes"][5]["aliases"].reverse()
    assert label_map_change(old, reordered) == "the order of a class's aliases or values"
