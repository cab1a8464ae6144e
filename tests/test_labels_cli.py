"""Tests for `python -m streetseg_jax.labels to-masks` and the conversion helpers behind it (labels/convert.py)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streetseg_jax.labels.__main__ import main
from streetseg_jax.labels.convert import (UnknownLabelsError, annotation_to_mask, find_unknown_labels,
                                          read_mask_png, write_mask_png)
from streetseg_jax.labels.formats.voc import read_voc, write_voc
from streetseg_jax.labels.label_map import default_label_map

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
    assert "1 problems" in captured.out
    assert (read_mask_png(tmp_path / "masks" / "street_3.png") == ROAD).all()


def test_missing_input_and_empty_folder_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["to-masks", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "masks")])
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main(["to-masks", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "masks")])
    assert "no *.xml files" in capsys.readouterr().err


def test_module_entry_point_runs(xml_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "streetseg_jax.labels", "to-masks", "--input", str(xml_dir),
                          "--output", str(tmp_path / "masks")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "wrote 2 masks" in out.stdout
    np.testing.assert_array_equal(read_mask_png(tmp_path / "masks" / "street_1.png"), expected_street_1())


# --- convert.py directly -------------------------------------------------------------------------------------------

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
