"""Tests for `python -m streetseg_jax.labels to-masks` and the conversion helpers behind it (labels/convert.py)."""
import base64
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streetseg_jax.labels.__main__ import main
from streetseg_jax.labels.convert import (UnknownLabelsError, annotation_to_mask, find_unknown_labels,
                                          read_mask_png, write_mask_png)
from streetseg_jax.labels.formats.voc import read_voc, write_voc
from streetseg_jax.labels.label_map import LabelMapError, default_label_map
from streetseg_jax.labels.shapes import LabelFormatError

ROOT = Path(__file__).resolve().parents[1]
ROAD, BUILDING, SKY = 3, 5, 6


def rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def write_scene(path: Path, *objects, width=40, height=30):
    write_voc(path, path.with_suffix(".jpg").name, width, height, [(name, [ring]) for name, ring in objects])


@pytest.fixture
def xml_dir(tmp_path) -> Path:
    folder = tmp_path / "xml"
    folder.mkdir()
    write_scene(folder / "street_1.xml", ("sky", rect(0, 0, 40, 12)), ("road", rect(0, 20, 40, 30)),
                ("Buildings", rect(10, 5, 30, 20)))          # an alias, in another case: building
    write_scene(folder / "street_2.xml", ("road", rect(0, 0, 40, 30)))
    return folder


def expected_street_1() -> np.ndarray:
    mask = np.zeros((30, 40), np.uint8)
    mask[:12] = SKY
    mask[20:] = ROAD
    mask[5:20, 10:30] = BUILDING
    return mask


def test_writes_one_mask_per_file_with_the_right_ids(xml_dir, tmp_path, capsys):
    main(["to-masks", "--format", "voc", "--input", str(xml_dir), "--output", str(tmp_path / "masks")])
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["street_1.png", "street_2.png"]
    np.testing.assert_array_equal(read_mask_png(tmp_path / "masks" / "street_1.png"), expected_street_1())
    assert (read_mask_png(tmp_path / "masks" / "street_2.png") == ROAD).all()
    assert "wrote 2 masks" in capsys.readouterr().out


def test_masks_are_palette_pngs_in_label_map_colours(xml_dir, tmp_path):
    main(["to-masks", "--input", str(xml_dir), "--output", str(tmp_path / "masks")])
    with Image.open(tmp_path / "masks" / "street_1.png") as image:
        assert image.mode == "P"
        palette = np.array(image.getpalette()[:24]).reshape(8, 3)
    np.testing.assert_array_equal(palette, default_label_map().palette()[:8])


def test_hyphenated_flag_and_custom_label_map(xml_dir, tmp_path):
    label_map = default_label_map().to_dict()
    label_map["classes"].append({"id": 8, "name": "car", "color": [0, 0, 142]})
    (tmp_path / "cars.json").write_text(json.dumps(label_map))
    write_scene(xml_dir / "street_3.xml", ("road", rect(0, 0, 40, 30)), ("car", rect(4, 4, 8, 8)))
    main(["to-masks", "--input", str(xml_dir), "--output", str(tmp_path / "masks"),
          "--label-map", str(tmp_path / "cars.json")])
    mask = read_mask_png(tmp_path / "masks" / "street_3.png")
    assert (mask[4:8, 4:8] == 8).all() and (mask == 8).sum() == 16


def test_unknown_names_are_all_listed_with_their_files_and_nothing_is_written(xml_dir, tmp_path, capsys):
    write_scene(xml_dir / "street_3.xml", ("car", rect(0, 0, 5, 5)), ("truck", rect(5, 5, 9, 9)))
    write_scene(xml_dir / "street_4.xml", ("car", rect(0, 0, 5, 5)))
    with pytest.raises(SystemExit) as exit_info:
        main(["to-masks", "--input", str(xml_dir), "--output", str(tmp_path / "masks")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    car_line = next(line for line in err.splitlines() if "'car'" in line)
    assert "street_3.xml" in car_line and "street_4.xml" in car_line
    truck_line = next(line for line in err.splitlines() if "'truck'" in line)
    assert "street_3.xml" in truck_line and "street_4.xml" not in truck_line
    assert "Traceback" not in err
    assert not (tmp_path / "masks").exists()


def test_unknown_ignore_paints_the_ignore_id(xml_dir, tmp_path):
    write_scene(xml_dir / "street_3.xml", ("road", rect(0, 0, 40, 30)), ("car", rect(4, 4, 8, 8)))
    main(["to-masks", "--input", str(xml_dir), "--output", str(tmp_path / "masks"), "--unknown", "ignore"])
    mask = read_mask_png(tmp_path / "masks" / "street_3.png")
    assert (mask[4:8, 4:8] == 255).all() and (mask == 255).sum() == 16


def test_malformed_xml_names_the_file_and_leaves_no_mask(xml_dir, tmp_path, capsys):
    (xml_dir / "street_9.xml").write_text("<annotation><size><width>40</width>")
    with pytest.raises(SystemExit) as exit_info:
        main(["to-masks", "--input", str(xml_dir), "--output", str(tmp_path / "masks")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "street_9.xml" in err and "malformed XML" in err and "Traceback" not in err
    assert not (tmp_path / "masks").exists() or not any((tmp_path / "masks").iterdir())


def test_entity_expansion_is_refused(xml_dir, tmp_path, capsys):
    laughs = "\n".join(f'  <!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    (xml_dir / "laughs.xml").write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE annotation [\n  <!ENTITY lol0 "lol">\n{laughs}\n]>\n'
        "<annotation><filename>&lol9;</filename><size><width>4</width><height>4</height></size></annotation>\n")
    with pytest.raises(SystemExit):
        main(["to-masks", "--input", str(xml_dir), "--output", str(tmp_path / "masks")])
    err = capsys.readouterr().err
    assert "laughs.xml" in err and "unsafe XML" in err
    assert not (tmp_path / "masks").exists()


def test_degenerate_shapes_are_warnings_not_errors(xml_dir, tmp_path, capsys):
    write_scene(xml_dir / "street_3.xml", ("road", rect(0, 0, 40, 30)), ("sky", [(0, 0), (5, 5), (10, 10)]))
    main(["to-masks", "--input", str(xml_dir), "--output", str(tmp_path / "masks")])
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "street_3.xml" in captured.err and "zero area" in captured.err
    assert " 1 warning(s))" in captured.out and "problems" not in captured.out
    assert (read_mask_png(tmp_path / "masks" / "street_3.png") == ROAD).all()


def test_missing_input_and_empty_folder_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["to-masks", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "masks")])
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main(["to-masks", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "masks")])
    assert capsys.readouterr().err == f"error: no voc annotations found in {tmp_path / 'empty'}\n"
    coco = sample_exports.write_export("coco", tmp_path / "coco")       # the wrong --format: the right one named
    with pytest.raises(SystemExit):
        main(["to-masks", "--format", "labelme", "--input", str(coco), "--output", str(tmp_path / "masks")])
    assert capsys.readouterr().err == \
        f"error: no labelme annotations found in {coco}; the files look like coco (--format coco)\n"


def test_module_entry_point_runs(xml_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "streetseg_jax.labels", "to-masks", "--input", str(xml_dir),
                          "--output", str(tmp_path / "masks")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "wrote 2 masks" in out.stdout
    np.testing.assert_array_equal(read_mask_png(tmp_path / "masks" / "street_1.png"), expected_street_1())


# --- convert.py directly -------------------------------------------------------------------------------------------

KILL_AT_THIRD_MASK = """
import os, signal, sys
from streetseg_jax.labels import __main__ as labels
original, written = labels.write_mask_png, []
def write_then_die(*args, **kwargs):
    original(*args, **kwargs)
    written.append(args[0])
    if len(written) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
labels.write_mask_png = write_then_die
labels.main(sys.argv[1:])
"""


def test_a_to_masks_killed_on_the_way_leaves_no_output_that_looks_whole(xml_dir, tmp_path, monkeypatch):
    """Killed part way, to-masks left a folder of some of the masks, unmarked, which looked like the whole output."""
    from streetseg_jax.labels import __main__ as labels_main

    for i in range(3, 8):
        write_scene(xml_dir / f"street_{i}.xml", ("road", rect(0, 0, 40, 30)))
    output = tmp_path / "out" / "masks"
    argv = ["to-masks", "--input", str(xml_dir), "--output", str(output)]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_THIRD_MASK, *argv], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert not output.exists()
    left, = output.parent.iterdir()                 # hidden: no reader of the folder takes it for masks
    assert left.name.startswith(".masks.incomplete@") and len(list(left.glob("*.png"))) == 3
    main(argv)                                      # the rerun writes them all, and clears what the killed one left
    assert sorted(p.name for p in output.parent.iterdir()) == ["masks"] and len(list(output.glob("*.png"))) == 7
    (output / "notes.txt").write_text("mine")
    calls = []
    def fail_at_third(path, *args):                 # an error on the way into an existing output: it stays as it was
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        write_mask_png(path, *args)
    monkeypatch.setattr(labels_main, "write_mask_png", fail_at_third)
    before = {p.name: p.stat().st_mtime_ns for p in output.iterdir()}
    with pytest.raises(SystemExit):
        main(argv)
    assert {p.name: p.stat().st_mtime_ns for p in output.iterdir()} == before
    assert sorted(p.name for p in output.parent.iterdir()) == ["masks"]
    monkeypatch.undo()
    main(argv)                                      # into an existing folder: its other files stay
    assert (output / "notes.txt").read_text() == "mine" and len(list(output.glob("*.png"))) == 7


def test_find_unknown_labels_and_annotation_to_mask(xml_dir):
    write_scene(xml_dir / "street_3.xml", ("road", rect(0, 0, 40, 30)), ("car", rect(4, 4, 8, 8)))
    annotations = [read_voc(p) for p in sorted(xml_dir.glob("*.xml"))]
    assert find_unknown_labels(annotations, default_label_map()) == {"car": [str(xml_dir / "street_3.xml")]}
    with pytest.raises(UnknownLabelsError, match="'car' in .*street_3.xml"):
        annotation_to_mask(annotations[2], default_label_map())
    result = annotation_to_mask(annotations[2], default_label_map(), unknown="ignore")
    assert (result.mask[4:8, 4:8] == 255).all() and result.problems == []


def test_write_mask_png_round_trip_leaves_no_temporary_files(tmp_path):
    mask = np.random.default_rng(0).integers(0, 8, (17, 23)).astype(np.uint8)
    mask[0, 0] = 255
    write_mask_png(tmp_path / "m.png", mask, default_label_map())
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m.png"), mask)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half a file")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        write_mask_png(tmp_path / "m.png", np.zeros((4, 4), np.uint8), default_label_map())
    assert list(tmp_path.iterdir()) == []


def test_read_mask_png_refuses_colour_images(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode RGB"):
        read_mask_png(tmp_path / "rgb.png")


# --- every format, --format auto, image stems ----------------------------------------------------------------------
sys.path.insert(0, str(ROOT / "tools"))
import sample_exports  # noqa: E402


@pytest.mark.parametrize("fmt", sample_exports.FORMATS)
def test_every_format_gives_the_same_mask_named_after_the_image(fmt, tmp_path, capsys):
    export = sample_exports.write_export(fmt, tmp_path / "export")
    main(["to-masks", "--format", fmt, "--input", str(export), "--output", str(tmp_path / "masks")])
    stem = "street_1_leftImg8bit" if fmt == "cityscapes" else "street_1"     # Cityscapes' image file name
    assert [p.name for p in (tmp_path / "masks").iterdir()] == [f"{stem}.png"]
    np.testing.assert_array_equal(read_mask_png(tmp_path / "masks" / f"{stem}.png"), sample_exports.expected_mask())
    assert "wrote 1 masks" in capsys.readouterr().out


def copied_from_a_mac(export: Path) -> None:
    """What a Mac leaves in a copied or zipped folder: ._ companions beside every file, .DS_Store, and an editor's
    hidden copies."""
    for path in [p for p in export.rglob("*") if p.is_file()]:
        (path.parent / f"._{path.name}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
        (path.parent / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        hidden = path.parent / ".ipynb_checkpoints"
        hidden.mkdir(exist_ok=True)
        (hidden / path.name).write_bytes(b"broken copy")


@pytest.mark.parametrize("fmt", sample_exports.FORMATS)
def test_hidden_files_are_left_out_of_every_format(fmt, tmp_path, capsys):
    export = sample_exports.write_export(fmt, tmp_path / "export")
    copied_from_a_mac(export)
    main(["to-masks", "--format", "auto", "--input", str(export), "--output", str(tmp_path / "masks")])
    assert f"detected format: {fmt}" in capsys.readouterr().out
    (mask,) = (tmp_path / "masks").iterdir()
    np.testing.assert_array_equal(read_mask_png(mask), sample_exports.expected_mask())


def test_to_masks_warns_of_an_annotation_whose_image_shows_another_size(tmp_path, capsys):
    export = sample_exports.write_export("labelme", tmp_path / "export")     # 40x30, says the JSON
    exif = Image.Exif()
    exif[0x0112] = 6                      # stored 40x30 but shown turned: 30x40, as the labelling tool showed it
    Image.new("RGB", (40, 30)).save(export / "street_1.jpg", exif=exif)
    (export / "street_1.png").unlink()
    document = json.loads((export / "street_1.json").read_text())
    document["imagePath"] = "street_1.jpg"
    (export / "street_1.json").write_text(json.dumps(document))
    main(["to-masks", "--format", "labelme", "--input", str(export), "--output", str(tmp_path / "masks")])
    out = capsys.readouterr()
    assert "street_1.jpg is 30x40 (after its EXIF orientation) but street_1.json says 40x30: the mask will not fit it" \
        in out.err
    assert "wrote 1 masks" in out.out


def test_to_masks_refuses_masks_that_differ_only_in_case_on_a_disk_where_case_does_not_count(tmp_path, capsys,
                                                                                               monkeypatch):
    """Frame.jpg's and frame.jpg's masks became one file on macOS and Windows."""
    from streetseg_jax.labels import __main__ as labels_main
    export = sample_exports.write_export("labelme", tmp_path / "export")
    for name in ("Frame", "frame"):
        shutil.copy(export / "street_1.png", export / f"{name}.png")
        document = json.loads((export / "street_1.json").read_text())
        (export / f"{name}.json").write_text(json.dumps({**document, "imagePath": f"{name}.png"}))
    argv = ["to-masks", "--format", "labelme", "--input", str(export), "--output", str(tmp_path / "masks")]
    main(argv)                                      # this disk tells them apart: written
    assert (tmp_path / "masks" / "Frame.png").exists() and (tmp_path / "masks" / "frame.png").exists()
    monkeypatch.setattr(labels_main, "case_insensitive", lambda folder: True)      # as a macOS disk answers
    with pytest.raises(SystemExit):
        main([*argv[:-1], str(tmp_path / "masks2")])
    assert "Frame.png and frame.png" in capsys.readouterr().err and not (tmp_path / "masks2").exists()


@pytest.mark.parametrize("fmt", ["voc", "mit_xml", "labelme", "cvat", "cityscapes"])
def test_every_broken_file_of_an_export_is_named_at_once(fmt, tmp_path, capsys):
    """Only the first broken file was named: mended, the next stopped the check, one run at a time."""
    export = sample_exports.write_export(fmt, tmp_path / "export")
    original, = [p for p in export.rglob("*") if p.suffix in (".xml", ".json")]
    broken = []
    for name in ("broken_a", "broken_b"):
        path = original.with_name(original.name.replace(sample_exports.STEM, name) if sample_exports.STEM in
                                  original.name else name + original.suffix)     # CVAT's annotations.xml
        path.write_text(original.read_text()[:len(original.read_text()) // 2])     # cut off mid-file
        broken.append(path)
    with pytest.raises(SystemExit):
        main(["to-masks", "--format", fmt, "--input", str(export), "--output", str(tmp_path / "masks")])
    err = capsys.readouterr().err
    assert err.startswith("error: 2 problems in the annotations:\n"), err
    assert all(f"\n  {path}: " in err for path in broken), err
    with pytest.raises(SystemExit, match="1"):
        main(["check", "--format", fmt, "--input", str(export)])
    captured = capsys.readouterr()
    assert all(f"\nerror: {path}: " in captured.out for path in broken), captured.out
    assert "check failed: 2 error(s)" in captured.err, captured.err


def test_an_export_whose_every_file_is_broken_names_those_files_alone(tmp_path, capsys):
    """With every CVAT XML broken, the reader's "no CVAT XML in this folder", which follows from them, was said as a
    third problem, and it was not true."""
    export = tmp_path / "cv"
    export.mkdir()
    for name in ("a.xml", "b.xml"):
        (export / name).write_text("<annotations><image")
    with pytest.raises(SystemExit):
        main(["to-masks", "--format", "cvat", "--input", str(export), "--output", str(tmp_path / "masks")])
    err = capsys.readouterr().err
    assert err.startswith("error: 2 problems in the annotations:\n") and "no CVAT XML" not in err, err


def test_a_mask_folder_names_masks_without_photos_and_photos_without_masks(tmp_path, capsys):
    """A mask without its photo was taken as its own photo, and a photo without its mask was dropped unsaid."""
    export = sample_exports.write_export("masks", tmp_path / "export")
    shutil.copy(export / "masks" / f"{sample_exports.STEM}.png", export / "masks" / "no_photo.png")
    Image.new("RGB", (8, 6)).save(export / "images" / "no_mask.jpg")
    with pytest.raises(SystemExit, match="1"):
        main(["check", "--format", "masks", "--input", str(export)])
    out = capsys.readouterr().out
    assert f"error: {export / 'masks' / 'no_photo.png'}: no image named no_photo.* under {export}" in out, out
    assert "note: 1 image(s) with no annotation, left out: images/no_mask.jpg" in out, out


def mask_export_with_every_kind_of_problem(export: Path) -> dict[str, str]:
    """A mask folder with two masks that cannot be read and three problems validation finds; {what: its words}."""
    (export / "images").mkdir(parents=True)
    (export / "masks").mkdir()
    for stem, size in (("good", (8, 6)), ("bad_value", (8, 6)), ("jpeg", (8, 6)), ("sized", (10, 6)),
                       ("no_mask", (8, 6))):
        Image.new("RGB", size).save(export / "images" / f"{stem}.jpg")
    for stem in ("good", "sized", "no_photo"):
        Image.fromarray(np.full((6, 8), ROAD, np.uint8), "L").save(export / "masks" / f"{stem}.png")
    Image.fromarray(np.full((6, 8), 9, np.uint8), "L").save(export / "masks" / "bad_value.png")
    Image.new("L", (8, 6)).save(export / "masks" / "jpeg.jpg")
    return {"value": f"{export / 'masks' / 'bad_value.png'}: pixel value 9",
            "jpeg": f"{export / 'masks' / 'jpeg.jpg'}: JPEG masks are refused",
            "size": f"{export / 'masks' / 'sized.png'}: ", "no photo": f"{export / 'masks' / 'no_photo.png'}: no image",
            "no mask": "images/no_mask.jpg"}


def test_reading_errors_and_validations_problems_come_in_one_run(tmp_path, capsys):
    """A mask that could not be read stopped every command before validation looked at the masks that read: their
    problems (a mask sized unlike its photo, a mask without its photo) came up only in the run after the mend."""
    from streetseg_jax.data.build import build
    from streetseg_jax.data.inputs import BuildError

    said = mask_export_with_every_kind_of_problem(tmp_path / "export")
    with pytest.raises(SystemExit, match="1"):
        main(["check", "--format", "masks", "--input", str(tmp_path / "export")])
    captured = capsys.readouterr()
    assert "error: check failed: 4 error(s)" in captured.err, captured.err
    assert all(f"error: {words}" in captured.out for what, words in said.items() if what != "no mask"), captured.out
    assert "10x6" in captured.out and f"left out: {said['no mask']}" in captured.out, captured.out
    with pytest.raises(SystemExit):
        main(["to-masks", "--format", "masks", "--input", str(tmp_path / "export"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "2 problems in the annotations" in err, err
    assert said["value"] in err and said["jpeg"] in err and f"warning: {said['size']}" in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(BuildError) as error:
        build("from_annotations", tmp_path / "tfds", tmp_path / "export", name="mine", format="masks",
              log=lambda line: None)
    assert all(said[what] in str(error.value) for what in ("value", "jpeg", "size", "no photo")), error.value
    assert not (tmp_path / "tfds" / "street_seg" / "mine").exists()


def test_classes_lists_the_exports_names_and_writes_a_label_map_the_export_checks_against(tmp_path, capsys):
    """Every real export failed against the 8 street classes, and a label map had to be written by hand."""
    export = sample_exports.write_export("labelme", tmp_path / "export")
    document = json.loads((export / "street_1.json").read_text())
    for shape, label in zip(document["shapes"], ["Sky", "Traffic Light", "_background_"]):
        shape["label"] = label
    (export / "street_1.json").write_text(json.dumps(document))
    with pytest.raises(SystemExit):                   # against the 8 street classes
        main(["check", "--format", "labelme", "--input", str(export)])
    capsys.readouterr()
    label_map = tmp_path / "labels.json"
    main(["classes", "--format", "labelme", "--input", str(export), "--output", str(label_map)])
    out = capsys.readouterr().out
    assert re.search(r"'Traffic Light' +1 image\(s\) +1 shape\(s\)  -> not in the label map", out), out
    assert re.search(r"'Sky' +1 image\(s\) +1 shape\(s\)  -> class 6 'sky'", out), out
    # The arrows are the label map in use, whose sky is 6; the file written has ids of its own (sky 1): said so.
    assert "each -> the class it becomes with the label map in use" in out
    assert "with ids of its own in that order, not those after the arrows" in out
    written = json.loads(label_map.read_text())
    assert [(c["name"], c["aliases"]) for c in written["classes"]] == [
        ("background", ["_background_"]), ("sky", ["Sky"]), ("traffic_light", ["Traffic Light"])]
    assert written["classes"][1]["color"] == list(default_label_map().classes[6].color)   # the seed's sky
    main(["check", "--format", "labelme", "--input", str(export), "--label_map", str(label_map)])
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):                   # an edited map is never overwritten
        main(["classes", "--format", "labelme", "--input", str(export), "--output", str(label_map)])
    assert "exists" in capsys.readouterr().err and json.loads(label_map.read_text()) == written


def test_classes_says_which_names_it_merged_and_numbers_unspellable_ones_by_id(tmp_path, capsys):
    """9 names printed, 7 classes written, nothing said; and 木, class 6 here, was named class_8."""
    export = sample_exports.write_export("labelme", tmp_path / "export")
    document = json.loads((export / "street_1.json").read_text())
    shape = document["shapes"][0]
    names = ["Straße", "strasse", "traffic light", "Traffic Light", "road", "car", "木", "tree", "Tree"]
    document["shapes"] = [{**shape, "label": name} for name in names]
    (export / "street_1.json").write_text(json.dumps(document))
    main(["classes", "--format", "labelme", "--input", str(export), "--output", str(tmp_path / "map.json")])
    out = capsys.readouterr().out
    assert ("note: names merged into one class, being one name in snake_case (each kept as an alias; give one a "
            "class of its own in the label map where they differ): 'Straße', 'strasse' -> 'strasse'; 'Traffic "
            "Light', 'traffic light' -> 'traffic_light'; 'Tree', 'tree' -> 'tree'") in out
    written = json.loads((tmp_path / "map.json").read_text())
    assert [c["name"] for c in written["classes"]] == ["background", "strasse", "traffic_light", "tree", "car", "road",
                                                       "class_6"]
    assert written["classes"][6]["aliases"] == ["木"]


def test_shapes_without_a_class_name_get_no_class_of_their_own(tmp_path, capsys):
    """A CVAT shape with an empty label became a class named 'class', and check then passed it as one."""
    export = sample_exports.write_export("cvat", tmp_path / "export")
    xml = export / "annotations.xml"
    xml.write_text(xml.read_text().replace('label="building"', 'label=""'))
    label_map = tmp_path / "labels.json"
    main(["classes", "--format", "cvat", "--input", str(export), "--output", str(label_map)])
    assert "note: 1 shape(s) in 1 image(s) have no class name" in capsys.readouterr().out
    written = json.loads(label_map.read_text())
    assert sorted(c["name"] for c in written["classes"]) == ["background", "road", "sky"]
    with pytest.raises(SystemExit):
        main(["check", "--format", "cvat", "--input", str(export), "--label_map", str(label_map)])
    assert "unknown class name(s) '': not in the label map" in capsys.readouterr().out


def test_starter_label_maps_fold_spellings_and_keep_names_apart():
    from streetseg_jax.labels.label_map import snake_case, starter_label_map

    assert [snake_case(n) for n in ("Traffic Light", "_background_", "3d-box", "Café", "!!", "Straße")] == [
        "traffic_light", "background", "class_3d_box", "cafe", "", "strasse"]      # ß was dropped: 'strae'
    spellings = starter_label_map(["car", "Road", "road", "traffic-light", "Traffic Light", "traffic.light", "car!",
                                   "unlabeled", "!!", "Vegetation", "tree", "other", "道路", "建物"])
    assert [(c.id, c.name, c.aliases) for c in spellings.classes] == [     # names one snake_case spelling are one
        (0, "background", ("unlabeled",)), (1, "car", ("car!",)), (2, "road", ("Road",)),
        (3, "traffic_light", ("traffic-light", "Traffic Light", "traffic.light")), (4, "class_4", ("!!",)),
        (5, "vegetation", ("Vegetation",)), (6, "tree", ()), (7, "other", ()),      # 'other': no background
        (8, "class_8", ("道路",)), (9, "class_9", ("建物",))]      # each named by its id, not merged
    assert len({c.color for c in spellings.classes}) == spellings.num_classes     # vegetation and tree: the seed's
    with pytest.raises(LabelMapError, match="300 classes: a mask holds 255 at most"):
        starter_label_map([f"n{i}" for i in range(299)])


def test_images_without_annotations_are_named_in_the_check(tmp_path, capsys):
    export = sample_exports.write_export("labelme", tmp_path / "export")
    for name in ("forgotten.jpg", "later/also.png"):
        (export / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 6)).save(export / name)
    main(["check", "--format", "labelme", "--input", str(export), "--json", str(tmp_path / "check.json")])
    assert "note: 2 image(s) with no annotation, left out: forgotten.jpg, later/also.png" in capsys.readouterr().out
    assert json.loads((tmp_path / "check.json").read_text())["unannotated_images"] == ["forgotten.jpg",
                                                                                      "later/also.png"]
    embedded = sample_exports.write_export("labelme", tmp_path / "embedded")     # LabelMe's default: imageData
    document = json.loads((embedded / "street_1.json").read_text())
    document["imageData"] = base64.b64encode((embedded / "street_1.png").read_bytes()).decode()
    (embedded / "street_1.json").write_text(json.dumps(document))
    main(["check", "--format", "labelme", "--input", str(embedded)])
    assert "no annotation" not in capsys.readouterr().out      # the file it was made from is its image


@pytest.mark.parametrize("fmt", sample_exports.FORMATS)
def test_auto_detects_every_format_and_says_so(fmt, tmp_path, capsys):
    export = sample_exports.write_export(fmt, tmp_path / "export")
    main(["to-masks", "--format", "auto", "--input", str(export), "--output", str(tmp_path / "masks")])
    assert f"detected format: {fmt}" in capsys.readouterr().out


def test_auto_refuses_to_guess(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("nothing a labelling tool wrote")
    with pytest.raises(SystemExit) as exit_info:
        main(["to-masks", "--format", "auto", "--input", str(tmp_path / "notes"), "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "cannot tell which labelling tool" in err and "--format" in err
    from streetseg_jax.labels import formats
    monkeypatch.setattr(formats, "_looks_like", lambda name, path: name in ("coco", "labelme"))
    with pytest.raises(SystemExit):
        main(["check", "--format", "auto", "--input", str(tmp_path / "notes")])
    assert "look like several formats (labelme, coco)" in capsys.readouterr().err


def test_masks_take_the_image_stem_and_clashes_are_refused(tmp_path, capsys):
    folder = tmp_path / "xml"
    folder.mkdir()
    write_voc(folder / "export_17.xml", "IMG_0042.jpg", 40, 30, [("road", [rect(0, 0, 40, 30)])])
    main(["to-masks", "--input", str(folder), "--output", str(tmp_path / "masks")])
    assert [p.name for p in (tmp_path / "masks").iterdir()] == ["IMG_0042.png"]
    write_voc(folder / "export_18.xml", "other/IMG_0042.png", 40, 30, [("sky", [rect(0, 0, 40, 30)])])
    with pytest.raises(SystemExit):
        main(["to-masks", "--input", str(folder), "--output", str(tmp_path / "masks2")])
    err = capsys.readouterr().err
    assert "would write the same mask file" in err and "export_17.xml" in err and "export_18.xml" in err
    assert not (tmp_path / "masks2").exists()


def test_voc_images_of_one_name_in_split_folders_keep_their_folders(tmp_path, capsys):
    """train/a.xml and valid/a.xml, each beside its own a.jpg, were refused as one mask file: VOC's reader leaves
    the image to be found, and annotations without their images were never told apart."""
    from PIL import Image

    export = tmp_path / "export"
    for split, top in (("train", 10), ("valid", 14)):
        (export / split).mkdir(parents=True)
        Image.new("RGB", (40, 30), (10, 20, 30)).save(export / split / "a.jpg")
        write_voc(export / split / "a.xml", "a.jpg", 40, 30, [("road", [rect(0, top, 40, 30)])])
    main(["to-masks", "--format", "auto", "--input", str(export), "--output", str(tmp_path / "masks")])
    for split, top in (("train", 10), ("valid", 14)):
        assert (read_mask_png(tmp_path / "masks" / split / "a.png") == ROAD).sum() == 40 * (30 - top)
    voc = tmp_path / "voc"                                    # VOC's layout in each split folder
    for split in ("train", "valid"):
        for folder in ("JPEGImages", "Annotations"):
            (voc / split / folder).mkdir(parents=True)
        Image.new("RGB", (40, 30)).save(voc / split / "JPEGImages" / "a.jpg")
        write_voc(voc / split / "Annotations" / "a.xml", "a.jpg", 40, 30, [("road", [rect(0, 10, 40, 30)])])
    main(["to-masks", "--format", "voc", "--input", str(voc), "--output", str(tmp_path / "voc_masks")])
    assert sorted(p.relative_to(tmp_path / "voc_masks").as_posix() for p in (tmp_path / "voc_masks").rglob("*.png")) \
        == ["train/a.png", "valid/a.png"]
    backup = export / "train" / "backup" / "a.xml"            # a second annotation of train's image: refused
    backup.parent.mkdir()
    write_voc(backup, "../a.jpg", 40, 30, [("road", [rect(0, 0, 40, 30)])])
    with pytest.raises(SystemExit):
        main(["to-masks", "--format", "auto", "--input", str(export), "--output", str(tmp_path / "again")])
    assert "3 annotations are for images with the key 'a'" in capsys.readouterr().err


def test_images_of_one_name_in_different_folders_keep_their_folders(tmp_path, capsys):
    export = tmp_path / "export"
    for folder in ("cam1", "cam2", "cam3/day2", "cam4"):
        sample_exports.write_export("labelme", export / folder)
    solo = export / "cam4" / "street_1.json"                  # a stem of its own: its mask keeps the stem alone
    solo.with_name("solo.json").write_text(solo.read_text().replace("street_1.png", "solo.png"))
    solo.unlink()
    (export / "cam4" / "street_1.png").rename(export / "cam4" / "solo.png")
    main(["to-masks", "--format", "labelme", "--input", str(export), "--output", str(tmp_path / "masks")])
    written = sorted(p.relative_to(tmp_path / "masks").as_posix() for p in (tmp_path / "masks").rglob("*.png"))
    assert written == ["cam1/street_1.png", "cam2/street_1.png", "cam3/day2/street_1.png", "solo.png"]
    backup = export / "cam1" / "backup" / "street_1.json"     # a second annotation of cam1's image: refused
    backup.parent.mkdir()
    backup.write_text((export / "cam1" / "street_1.json").read_text().replace('"street_1.png"', '"../street_1.png"'))
    with pytest.raises(SystemExit):
        main(["to-masks", "--format", "labelme", "--input", str(export), "--output", str(tmp_path / "again")])
    assert "4 annotations are for images with the key 'street_1'" in capsys.readouterr().err
    backup.unlink()
    coco = json.loads((sample_exports.write_export("coco", tmp_path / "coco") / "annotations.json").read_text())
    second = json.loads(json.dumps(coco["images"][0]))
    coco["images"][0]["file_name"], second["file_name"], second["id"] = "a\\street_1.png", "b/street_1.png", 2
    coco["images"].append(second)
    coco["annotations"] += [{**a, "id": a["id"] + 100, "image_id": 2} for a in coco["annotations"]]
    (tmp_path / "coco" / "annotations.json").write_text(json.dumps(coco))
    for folder in ("a", "b"):                  # images found where the names say: told apart by their folders
        (tmp_path / "coco" / "images" / folder).mkdir()
        shutil.copy(tmp_path / "coco" / "images" / "street_1.png", tmp_path / "coco" / "images" / folder)
    main(["to-masks", "--format", "coco", "--input", str(tmp_path / "coco"), "--output", str(tmp_path / "m2")])
    assert sorted(p.relative_to(tmp_path / "m2").as_posix() for p in (tmp_path / "m2").rglob("*.png")) == \
        ["a/street_1.png", "b/street_1.png"]
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m2" / "b" / "street_1.png"),
                                  sample_exports.expected_mask())


def test_an_absolute_coco_file_name_inside_the_export_keys_the_mask_by_its_folders_there(tmp_path, capsys):
    """Some tools write the image's whole path as file_name: its folders from / on became the mask's path
    (OUT/tmp/.../cam1/street_1.png); now only those below the export count, and a path outside it is refused."""
    export = tmp_path / "coco"
    coco = json.loads((sample_exports.write_export("coco", export) / "annotations.json").read_text())
    for folder in ("cam1", "cam2"):
        (export / "images" / folder).mkdir()
        shutil.copy(export / "images" / "street_1.png", export / "images" / folder)
    second = {**coco["images"][0], "file_name": "cam2/street_1.png", "id": 2}
    coco["images"][0]["file_name"] = str(export / "images" / "cam1" / "street_1.png")
    coco["images"].append(second)
    coco["annotations"] += [{**a, "id": a["id"] + 100, "image_id": 2} for a in coco["annotations"]]
    (export / "annotations.json").write_text(json.dumps(coco))
    main(["to-masks", "--format", "coco", "--input", str(export), "--output", str(tmp_path / "m")])
    assert sorted(p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*.png")) == \
        ["cam1/street_1.png", "cam2/street_1.png"]
    coco["images"][0]["file_name"] = str(tmp_path / "elsewhere" / "cam1" / "street_1.png")
    (export / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(SystemExit):
        main(["to-masks", "--format", "coco", "--input", str(export), "--output", str(tmp_path / "m2")])
    assert "' points outside the export folder" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["labelme", "coco"])
def test_masks_never_overwrite_the_exports_png_photos(fmt, tmp_path, capsys):
    export = sample_exports.write_export(fmt, tmp_path / "export")
    photo = next(export.rglob("street_1.png"))
    before = photo.read_bytes()
    with pytest.raises(SystemExit):
        main(["to-masks", "--format", fmt, "--input", str(export), "--output", str(photo.parent)])
    assert "would overwrite the export's own files" in capsys.readouterr().err and photo.read_bytes() == before
    for _ in range(2):                       # masks beside the export, written again over themselves
        main(["to-masks", "--format", fmt, "--input", str(export), "--output", str(export / "masks")])
    np.testing.assert_array_equal(read_mask_png(export / "masks" / "street_1.png"), sample_exports.expected_mask())


# --- check ---------------------------------------------------------------------------------------------------------
def test_check_prints_the_report_and_writes_json(tmp_path, capsys):
    export = sample_exports.write_export("labelme", tmp_path / "export")
    main(["check", "--format", "labelme", "--input", str(export), "--json", str(tmp_path / "report.json")])
    out = capsys.readouterr().out
    assert "validation report: 1 image(s) of labelme" in out and "0 error(s), 0 warning(s)" in out
    assert "building" in out and "unlabelled pixels" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["errors"] == 0 and report["images"] == 1 and report["files"][0]["key"] == "street_1"
    shares = {c["name"]: c["pixel_share"] for c in report["classes"]}
    expected = sample_exports.expected_mask()
    assert shares["road"] == pytest.approx((expected == ROAD).mean())


def test_check_exit_codes_errors_warnings_and_strict(tmp_path, capsys):
    export = sample_exports.write_export("labelme", tmp_path / "export")
    document = json.loads((export / "street_1.json").read_text())
    document["shapes"].append({"label": "road", "points": [[0, 0], [9, 9], [9, 0], [0, 9]],
                               "shape_type": "polygon"})
    (export / "street_1.json").write_text(json.dumps(document))
    main(["check", "--format", "labelme", "--input", str(export)])          # a warning: still exit 0
    assert "warning: " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--format", "labelme", "--input", str(export), "--strict"])
    assert exit_info.value.code == 1 and "1 warning(s) (--strict)" in capsys.readouterr().err
    Image.new("RGB", (41, 30)).save(export / "street_1.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--format", "labelme", "--input", str(export)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 1 and "street_1.png is 41x30 but street_1.json says 40x30" in captured.out
    assert "check failed: 1 error(s)" in captured.err and "Traceback" not in captured.err


def test_check_unknown_labels(xml_dir, capsys):
    write_scene(xml_dir / "street_3.xml", ("car", rect(0, 0, 5, 5)))
    with pytest.raises(SystemExit):
        main(["check", "--input", str(xml_dir)])
    assert "unknown class name(s) 'car'" in capsys.readouterr().out
    with pytest.raises(SystemExit):     # the images of the VOC scenes are missing: errors either way
        main(["check", "--input", str(xml_dir), "--unknown", "ignore"])
    out = capsys.readouterr().out
    assert "'car' painted with the ignore id" in out and "no image named" in out


def test_absurd_image_sizes_are_refused_with_a_message(tmp_path, capsys):
    folder = tmp_path / "xml"
    folder.mkdir()
    write_voc(folder / "huge.xml", "huge.jpg", 10 ** 6, 10 ** 6, [("road", [rect(0, 0, 5, 5)])])
    with pytest.raises(SystemExit):
        main(["to-masks", "--input", str(folder), "--output", str(tmp_path / "masks")])
    err = capsys.readouterr().err
    assert "huge.xml: the annotation gives the image size 1000000x1000000" in err and "Traceback" not in err


@pytest.mark.parametrize("width, problem", [
    ("1e309", "<size><width>/<height> must be whole numbers, got '1e309', '30'"),     # was an OverflowError
    ("40.5", "must be whole numbers"),
    ("99999999999999999999", "x30: too large"),
    ("-40", "image size -40x30, which is not positive"),
])
def test_voc_sizes_are_checked(tmp_path, width, problem):
    path = tmp_path / "a.xml"
    write_scene(path, ("road", rect(0, 0, 40, 30)))
    path.write_text(path.read_text().replace("<width>40</width>", f"<width>{width}</width>"))
    with pytest.raises(LabelFormatError, match=re.escape(f"{path}: ") + ".*" + re.escape(problem)):
        read_voc(path)


@pytest.mark.parametrize("size", ["", "<size><width>0</width><height>0</height></size>"])
def test_a_voc_file_without_its_size_takes_the_images(tmp_path, size):
    path = tmp_path / "Annotations" / "a.xml"
    path.parent.mkdir()
    write_scene(path, ("road", rect(0, 0, 40, 30)))
    path.write_text(re.sub(r"<size>.*</size>", size, path.read_text(), flags=re.S))
    with pytest.raises(LabelFormatError, match=r"no <size><width>/<height>, and no image a\.jpg beside it"):
        read_voc(path)
    (tmp_path / "JPEGImages").mkdir()
    Image.new("RGB", (52, 31)).save(tmp_path / "JPEGImages" / "a.png")    # VOC layout; by the XML stem
    annotation = read_voc(path)
    assert (annotation.width, annotation.height) == (52, 31)


def test_coordinates_out_of_range_are_an_error_not_a_wrong_mask(tmp_path, capsys):
    """Near 1e308 the rasterizer's arithmetic overflowed into a wrong mask (with only a numpy warning); such
    coordinates are now refused by formats.read, and skipped with a problem by the rasterizer itself."""
    folder = tmp_path / "xml"
    folder.mkdir()
    write_scene(folder / "far.xml", ("road", [(-1e308, 0), (1e308, 0), (1e308, 1e308)]))
    with pytest.raises(SystemExit):
        main(["to-masks", "--input", str(folder), "--output", str(tmp_path / "masks")])
    err = capsys.readouterr().err
    assert "far.xml: image far.jpg, shape 0 ('road'): coordinate -1e+308 is out of range" in err
    assert "Traceback" not in err and not (tmp_path / "masks").exists()
    export = sample_exports.write_export("labelme", tmp_path / "labelme")     # its photos beside the JSON files
    annotation, = export.glob("*.json")
    data = json.loads(annotation.read_text())
    data["shapes"][0]["points"][0] = [1e308, 0]
    annotation.write_text(json.dumps(data))
    with pytest.raises(SystemExit):
        main(["check", "--format", "labelme", "--input", str(export)])
    out = capsys.readouterr().out          # the photo of a file that could not be read is no photo left unlabelled
    assert f"error: {annotation}: image " in out and "with no annotation" not in out, out
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no overflow on the way
        result = annotation_to_mask(read_voc(folder / "far.xml"), default_label_map())
    assert (result.mask == 0).all() and "out of range" in result.problems[0]


def test_an_exports_own_label_map_is_read_where_none_is_given(tmp_path, capsys):
    """predict --export writes the run's label_map.json into the export: a model's polygons, corrected in the tool,
    came back against the seed's 8 classes ('pole: unknown class name')."""
    from streetseg_jax.data.__main__ import main as data_main
    from streetseg_jax.labels.label_map import ClassInfo, LabelMap

    export = sample_exports.write_export("labelme", tmp_path / "export")
    classes = [ClassInfo(i, name, (i, 2 * i, 3 * i)) for i, name in enumerate(
        ["background", "pole", *[n for n, _ in sample_exports.SCENE if n not in ("background", "pole")]])]
    (export / "label_map.json").write_text(LabelMap(tuple(classes)).to_json())
    document = json.loads((export / "street_1.json").read_text())
    document["shapes"][0]["label"] = "pole"
    (export / "street_1.json").write_text(json.dumps(document))
    main(["check", "--format", "auto", "--input", str(export)])
    out = capsys.readouterr()
    assert f"note: the label map is the export's {export / 'label_map.json'}" in out.err and "0 error(s)" in out.out
    with pytest.raises(SystemExit):
        main(["check", "--format", "auto", "--input", str(export), "--label_map", str(tmp_path / "none.json")])
    good = (export / "label_map.json").read_text()
    (export / "label_map.json").write_text(good.replace('"color": [\n    0,', '"color": [\n    300,', 1))
    with pytest.raises(SystemExit):     # ours, broken by hand: it was passed over for the seed's classes
        main(["check", "--format", "auto", "--input", str(export)])
    assert "color must be three integers 0..255" in capsys.readouterr().err
    (export / "label_map.json").write_text('{"road": 1, "pole": 2}')      # another tool's: not a map of ours
    main(["check", "--format", "auto", "--input", str(export), "--unknown", "ignore"])
    assert "note: the label map is the export's" not in capsys.readouterr().err
    (export / "label_map.json").write_text(good)
    data_main(["build", "--config", "from_annotations", "--name", "back", "--manual_dir", str(export), "--format",
               "auto", "--data_dir", str(tmp_path / "tfds")])
    assert f"note: the label map is the export's {export / 'label_map.json'}" in capsys.readouterr().err


def test_check_never_writes_its_json_over_the_export_or_the_label_map(tmp_path, capsys):
    """`--json` over a label map (or a COCO export's own JSON) overwrote it without a word."""
    export = sample_exports.write_export("labelme", tmp_path / "export")
    label_map = tmp_path / "labels.json"
    label_map.write_text(default_label_map().to_json())
    for target in (label_map, export / "street_1.json", export / "street_1.png"):       # a photo too
        before = target.read_bytes()
        with pytest.raises(SystemExit):
            main(["check", "--format", "labelme", "--input", str(export), "--label_map", str(label_map),
                  "--json", str(target)])
        assert "it would be overwritten" in capsys.readouterr().err and target.read_bytes() == before
    for _ in range(2):      # a new file there (the second time, its own report of before): written
        main(["check", "--format", "labelme", "--input", str(export), "--json", str(export / "report.json")])
        assert json.loads((export / "report.json").read_text())["format"] == "labelme"


def test_roboflows_classes_csv_is_the_label_map_where_none_is_given(tmp_path, capsys):
    """Roboflow's semantic-segmentation export names its masks' pixel values in _classes.csv, one in each split
    folder; they were read against the seed's 8 classes (a mask's 2 became 'landscaping')."""
    from PIL import Image

    from streetseg_jax.data.__main__ import main as data_main
    from streetseg_jax.data.source import label_map_of, open_built
    from streetseg_jax.labels.label_map import LabelMap

    export = tmp_path / "export"
    for split, value in (("train", 2), ("valid", 1), ("test", 2)):
        (export / split).mkdir(parents=True)
        Image.new("RGB", (8, 6), (90, 40, 10)).save(export / split / f"{split}_1.jpg")
        Image.new("L", (8, 6), value).save(export / split / f"{split}_1_mask.png")
        (export / split / "_classes.csv").write_text("Pixel Value, Class\n0, background\n1, road\n2, Car\n")
    main(["check", "--format", "auto", "--input", str(export)])
    out = capsys.readouterr()
    assert f"note: the label map is the export's {export / 'test' / '_classes.csv'}" in out.err
    assert "0 error(s)" in out.out
    main(["to-masks", "--format", "auto", "--input", str(export), "--output", str(tmp_path / "masks")])
    assert np.unique(read_mask_png(tmp_path / "masks" / "train" / "train_1.png")).tolist() == [2]
    data_main(["build", "--config", "from_annotations", "--name", "robo", "--manual_dir", str(export), "--format",
               "auto", "--data_dir", str(tmp_path / "tfds")])
    built = open_built("street_seg/robo", tmp_path / "tfds")
    assert label_map_of(built.info, tmp_path / "tfds").names == ["background", "road", "car"]
    assert built.info.splits["test"].num_examples == 1
    # labels classes --output wrote the classes renumbered by use (car 1, road 2): the masks hold the list's ids
    main(["classes", "--format", "auto", "--input", str(export), "--output", str(tmp_path / "map.json")])
    assert LabelMap.load(tmp_path / "map.json") == LabelMap.load(export / "train" / "_classes.csv")
    (export / "valid" / "_classes.csv").write_text("Pixel Value, Class\n0, background\n1, car\n2, road\n")
    with pytest.raises(SystemExit):     # only test/'s list was read: valid's masks would have been scored wrong
        data_main(["build", "--config", "from_annotations", "--name", "two", "--manual_dir", str(export),
                   "--format", "auto", "--data_dir", str(tmp_path / "tfds")])
    assert (f"{export / 'test' / '_classes.csv'} and {export / 'valid' / '_classes.csv'} list different classes "
            "(background, road, car against background, car, road)") in capsys.readouterr().err
    (export / "test" / "_classes.csv").write_text("Pixel Value, Class\n0, background\n0, road\n")
    with pytest.raises(SystemExit):
        main(["check", "--format", "auto", "--input", str(export)])
    assert "_classes.csv: a pixel value is named twice in [0, 0]" in capsys.readouterr().err


def test_masks_read_as_the_seeds_classes_say_so(tmp_path, capsys):
    """Id masks with no label map anywhere were read as the seed's classes without a word (a road of 1 became
    'tree' in the report), where data build refuses them."""
    from PIL import Image

    export = tmp_path / "export"
    (export / "images").mkdir(parents=True)
    (export / "masks").mkdir()
    Image.new("RGB", (8, 6)).save(export / "images" / "a.jpg")
    Image.new("L", (8, 6), 1).save(export / "masks" / "a.png")
    main(["check", "--format", "auto", "--input", str(export)])
    assert "note: the masks' values are read as the seed's classes (background, tree," in capsys.readouterr().err
    (tmp_path / "mine.json").write_text(default_label_map().to_json())
    main(["check", "--format", "auto", "--input", str(export), "--label_map", str(tmp_path / "mine.json")])
    assert "note:" not in capsys.readouterr().err
    Image.new("L", (8, 6), 9).save(export / "masks" / "a.png")        # where it matters most: the read fails
    with pytest.raises(SystemExit):
        main(["check", "--format", "auto", "--input", str(export)])
    assert "note: the masks' values are read as the seed's classes" in capsys.readouterr().err


def mask_export(root: Path, masks_by_stem: dict) -> Path:
    """root/images/<stem>.jpg and root/masks/<stem>.png of each mask image given."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, mask in masks_by_stem.items():
        Image.new("RGB", mask.size).save(root / "images" / f"{stem}.jpg")
        mask.save(root / "masks" / f"{stem}.png")
    return root


def test_classes_of_rgb_masks_without_a_label_map_lists_their_colours_and_writes_a_map_of_them(tmp_path, capsys):
    """labels classes read RGB masks with the seed's classes and failed: 'colour (60, 40, 222) ... is not the colour
    of any class in the label map', where it promises a label map to start from."""
    from streetseg_jax.labels.formats import masks
    from streetseg_jax.labels.label_map import LabelMap

    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[:] = (60, 40, 222)
    rgb[:2] = (10, 200, 30)
    rgb[5, :2] = (255, 255, 255)                # white: ignore, as the reader takes it
    export = mask_export(tmp_path / "export", {"a": Image.fromarray(rgb, "RGB"),
                                               "b": Image.new("RGB", (8, 6), (10, 200, 30))})
    main(["classes", "--format", "masks", "--input", str(export), "--output", str(tmp_path / "c.json")])
    out = capsys.readouterr().out
    assert re.search(r"colour \(10, 200, 30\)\s+2 mask\(s\)\s+66\.7% of the pixels\s+-> class 0 'class_0'", out)
    assert re.search(r"colour \(60, 40, 222\)\s+1 mask\(s\)\s+31\.2% of the pixels\s+-> class 1 'class_1'", out)
    assert re.search(r"colour \(255, 255, 255\)\s+1 mask\(s\)\s+2\.1% of the pixels\s+-> ignore", out)
    written = json.loads((tmp_path / "c.json").read_text())
    assert [(c["name"], c["color"]) for c in written["classes"]] == [("class_0", [10, 200, 30]),
                                                                    ("class_1", [60, 40, 222])]
    label_map = LabelMap.load(tmp_path / "c.json")
    main(["check", "--format", "masks", "--input", str(export), "--label_map", str(tmp_path / "c.json")])
    ids = masks.mask_ids(export / "masks" / "a.png", label_map)
    assert ids[0, 0] == 0 and ids[3, 3] == 1 and ids[5, 0] == 255


@pytest.mark.parametrize("values", [(0, 1, 2), (0, 3, 7)])
def test_classes_of_id_masks_without_a_label_map_lists_their_values_and_writes_a_map_of_them(tmp_path, capsys,
                                                                                             values):
    """labels classes named an id mask's values with the seed's 8 class names (3 'road', 7 'concrete'), as if the
    export had used them."""
    from streetseg_jax.labels.formats import masks
    from streetseg_jax.labels.label_map import LabelMap

    stored = np.full((6, 8), values[0], np.uint8)
    stored[:3], stored[5, :4], stored[0, 0] = values[1], values[2], 255
    export = mask_export(tmp_path / "export", {"a": Image.fromarray(stored, "L")})
    main(["classes", "--format", "auto", "--input", str(export), "--output", str(tmp_path / "c.json")])
    out = capsys.readouterr().out
    assert "seed" not in out and "road" not in out
    assert re.search(rf"value {values[1]}\s+1 mask\(s\)\s+47\.9% of the pixels\s+-> class 1 'class_{values[1]}'", out)
    assert re.search(r"value 255\s+1 mask\(s\)\s+2\.1% of the pixels\s+-> ignore", out)
    written = json.loads((tmp_path / "c.json").read_text())
    assert [c["name"] for c in written["classes"]] == [f"class_{v}" for v in values]
    assert [c.get("values") for c in written["classes"]] == (
        [None] * 3 if values == (0, 1, 2) else [None, [3], [7]])
    main(["check", "--format", "masks", "--input", str(export), "--label_map", str(tmp_path / "c.json")])
    ids = masks.mask_ids(export / "masks" / "a.png", LabelMap.load(tmp_path / "c.json"))
    assert ids.tolist() == np.select([stored == v for v in (*values, 255)], [0, 1, 2, 255]).tolist()


def test_cvats_labelmap_txt_is_the_label_map_where_none_is_given(tmp_path, capsys):
    """CVAT's Segmentation mask export: RGB masks in SegmentationClass/, their colours named in labelmap.txt; the
    colours were looked up in the seed's 8 classes ('colour (250, 170, 30) is no class's')."""
    from PIL import Image

    export = tmp_path / "export"
    (export / "JPEGImages").mkdir(parents=True)
    (export / "SegmentationClass").mkdir()
    (export / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                         "traffic light:250,170,30::\nroad:128,64,128::\n")
    Image.new("RGB", (8, 6), (90, 40, 10)).save(export / "JPEGImages" / "a.jpg")
    mask = np.zeros((6, 8, 3), np.uint8)
    mask[:3], mask[3:] = (250, 170, 30), (128, 64, 128)
    Image.fromarray(mask).save(export / "SegmentationClass" / "a.png")
    main(["to-masks", "--format", "auto", "--input", str(export), "--output", str(tmp_path / "masks")])
    assert f"note: the label map is the export's {export / 'labelmap.txt'}" in capsys.readouterr().err
    main(["check", "--format", "masks", "--input", str(export / "SegmentationClass")])      # the mask folder itself
    assert f"note: the label map is the export's {export / 'labelmap.txt'}" in capsys.readouterr().err
    expected = np.repeat([1, 2], 3)[:, None].repeat(8, 1)
    np.testing.assert_array_equal(read_mask_png(tmp_path / "masks" / "a.png"), expected)


def test_labelme2voc_class_names_txt_is_the_label_map_where_none_is_given(tmp_path, capsys):
    """labelme2voc's output (paletted masks in SegmentationClassPNG/, names in class_names.txt): a mask's 2 was
    the seed's 'landscaping'."""
    from PIL import Image

    export = tmp_path / "voc"
    (export / "JPEGImages").mkdir(parents=True)
    (export / "SegmentationClassPNG").mkdir()
    (export / "class_names.txt").write_text("_background_\nroad\ncar\n")
    Image.new("RGB", (8, 6), (90, 40, 10)).save(export / "JPEGImages" / "a.jpg")
    mask = Image.fromarray(np.repeat([0, 2], 3)[:, None].repeat(8, 1).astype(np.uint8), "L").convert("P")
    mask.save(export / "SegmentationClassPNG" / "a.png")
    main(["classes", "--format", "auto", "--input", str(export)])
    out = capsys.readouterr()
    assert f"note: the label map is the export's {export / 'class_names.txt'}" in out.err
    assert "'car'" in out.out and "-> class 2 'car'" in out.out
    for drawn in ("SegmentationClassVisualization", "SegmentationObjectVisualization"):    # its pictures of them
        (export / drawn).mkdir()
        Image.new("RGB", (8, 6)).save(export / drawn / "a.jpg")
    main(["check", "--format", "auto", "--input", str(export)])
    assert "with no annotation" not in "".join(capsys.readouterr())


def test_classes_follow_labelme2voc_labels_txt(tmp_path, capsys):
    """labelme2voc numbers classes as labels.txt lists them; the starter map numbered them by use, so masks people
    already had disagreed with the ones it made."""
    from streetseg_jax.labels.label_map import LabelMap

    export = sample_exports.write_export("labelme", tmp_path / "project" / "data_annotated")
    (tmp_path / "project" / "labels.txt").write_text("__ignore__\n_background_\nroad\nunlabeled\nbuilding\nsky\n"
                                                     "bicycle\n")
    main(["classes", "--format", "auto", "--input", str(export), "--output", str(tmp_path / "map.json")])
    assert f"note: the classes in the order of {tmp_path / 'project' / 'labels.txt'}" in capsys.readouterr().out
    written = LabelMap.load(tmp_path / "map.json")     # 'unlabeled' is a class of its own there, not background
    assert written.names == ["background", "road", "unlabeled", "building", "sky", "bicycle"]


def test_check_to_masks_and_build_take_labelme2voc_labels_txt_as_the_label_map(tmp_path, capsys):
    """labels classes numbered the classes by labels.txt, but check, to-masks and data build ignored it (the seed's
    classes: unknown names, or "needs --label_map"): all of them read it now, and say so."""
    from streetseg_jax.cli import export_label_map

    export = sample_exports.write_export("labelme", tmp_path / "project" / "data_annotated")
    labels = tmp_path / "project" / "labels.txt"
    labels.write_text("__ignore__\n_background_\nroad\ntrack\nbuilding\nsky\n")
    main(["check", "--format", "auto", "--input", str(tmp_path / "project")])
    out = capsys.readouterr()
    assert f"note: the label map is the export's {labels}" in out.err and "0 error(s)" in out.out
    main(["to-masks", "--format", "labelme", "--input", str(export), "--output", str(tmp_path / "masks")])
    assert f"note: the label map is the export's {labels}" in capsys.readouterr().err
    renumbered = np.arange(256, dtype=np.uint8)
    renumbered[[3, 5, 6]] = [1, 3, 4]            # the seed's road, building and sky are labels.txt's 1, 3 and 4
    np.testing.assert_array_equal(read_mask_png(tmp_path / "masks" / "street_1.png"),
                                  renumbered[sample_exports.expected_mask()])
    assert export_label_map(export) == export_label_map(tmp_path / "project") == labels     # what data build asks


def test_check_of_predicts_output_folder_reads_the_label_map_of_its_export(tmp_path, capsys):
    """predict --export labelme writes OUT/labelme/ with the run's label_map.json; check --input OUT detected the
    LabelMe files there but read them with the seed's classes ("unknown class name(s) 'track'" for every file)."""
    from streetseg_jax.labels import writers
    from streetseg_jax.labels.label_map import LabelMap

    track = LabelMap.from_dict({"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                                            {"id": 1, "name": "track", "color": [200, 0, 0]}]})
    mask = np.zeros((12, 16), np.uint8)
    mask[4:10, 2:12] = 1
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / "a.jpg")
    out = tmp_path / "out"
    writers.export_predictions({"a": mask}, {"a": str(tmp_path / "a.jpg")}, track, "labelme", out / "labelme")
    (out / "labelme" / "label_map.json").write_text(track.to_json())        # as predict writes it
    main(["check", "--format", "auto", "--input", str(out)])
    captured = capsys.readouterr()
    assert f"note: the label map is the export's {out / 'labelme' / 'label_map.json'}" in captured.err
    assert "0 error(s)" in captured.out and "track" in captured.out
    (out / "coco").mkdir()                          # another run's export beside it, of other classes: refused
    (out / "coco" / "label_map.json").write_text(default_label_map().to_json())
    with pytest.raises(SystemExit):
        main(["check", "--format", "labelme", "--input", str(out)])
    assert "differ: give --input the one export folder, or --label_map" in capsys.readouterr().err


def test_to_masks_warns_of_what_check_warns_of(tmp_path, capsys):
    """A self-intersecting polygon: check warned, to-masks said '0 problems'."""
    export = sample_exports.write_export("labelme", tmp_path / "export")
    document = json.loads((export / "street_1.json").read_text())
    document["shapes"][0]["points"] = [[0, 0], [40, 12], [40, 0], [0, 12]]          # a bow tie
    (export / "street_1.json").write_text(json.dumps(document))
    main(["to-masks", "--format", "labelme", "--input", str(export), "--output", str(tmp_path / "masks")])
    out = capsys.readouterr()
    assert f"warning: {export / 'street_1.json'}: shape 0 ('sky'): self-intersecting" in out.err
    assert "(3 shapes, 1 warning(s))" in out.out
    # A class the label map lacks, painted ignore, and a line: check warned of both, to-masks of neither.
    document["shapes"][1]["label"] = "track"
    document["shapes"].append({"label": "road", "points": [[0, 0], [5, 5]], "shape_type": "line"})
    (export / "street_1.json").write_text(json.dumps(document))
    main(["to-masks", "--format", "labelme", "--input", str(export), "--output", str(tmp_path / "again"),
          "--unknown", "ignore"])
    out = capsys.readouterr()
    assert "unknown class name(s) 'track' painted with the ignore id" in out.err
    assert "1 shape(s) without an area left out (1 line)" in out.err and "(3 shapes, 3 warning(s))" in out.out
