"""`build --config from_annotations`: every format to a street_seg dataset, splits, the report printed first,
the input fingerprint (no-op, refusal naming the change, --overwrite), and all-or-nothing writing."""
from __future__ import annotations

import base64
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import textwrap
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streetseg_jax.data import build as data_build, source
from streetseg_jax.data.builder import BuildError, UnknownLabelsError
from streetseg_jax.data import inputs
from streetseg_jax.data.inputs import stem_fraction
from streetseg_jax.labels import formats
from streetseg_jax.labels.convert import annotation_to_mask
from streetseg_jax.labels.label_map import ClassInfo, LabelMap, default_label_map
from streetseg_jax.labels.shapes import Annotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sample_exports  # noqa: E402

W, H = 40, 30


def labelme_export(folder: Path, stems: list[str], embed: bool = False, labels=("sky", "road")) -> Path:
    """One PNG + LabelMe JSON per stem: a sky band over a road whose edge moves with the image's index."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stems))
    for i, stem in enumerate(stems):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(buffer, format="PNG")
        if not embed:
            (folder / f"{stem}.png").write_bytes(buffer.getvalue())
        shapes = [{"label": labels[0], "points": [[0, 0], [40, 0], [40, 8.5 + i % 5], [0, 10]],
                   "shape_type": "polygon"},
                  {"label": labels[1], "points": [[0, 18], [40, 17.25], [40, 30], [0, 30]], "shape_type": "polygon"}]
        document = {"version": "5.5.0", "shapes": shapes, "imagePath": f"{stem}.png", "imageHeight": H,
                    "imageWidth": W, "imageData": base64.b64encode(buffer.getvalue()).decode() if embed else None}
        (folder / f"{stem}.json").write_text(json.dumps(document))
    return folder


def label_map_file(tmp_path: Path) -> str:
    path = tmp_path / "labels.json"
    path.write_text(default_label_map().to_json())
    return str(path)


def build(tmp_path: Path, export: Path, name: str = "streets", fmt: str = "labelme", **options):
    logged: list[str] = []
    result = data_build.build("from_annotations", tmp_path / "tfds", export, name=name, format=fmt,
                              label_map=options.pop("label_map", label_map_file(tmp_path)), log=logged.append,
                              **options)
    return result, "\n".join(logged)


def records(tmp_path: Path, split: str, name: str = "streets") -> dict[str, dict]:
    split_source, _, _ = source.load_split(f"street_seg/{name}", split, tmp_path / "tfds")
    return {r["file_name"].decode(): r for r in (split_source[i] for i in range(len(split_source)))}


# --- building ----------------------------------------------------------------------------------------------------
def test_labelme_export_to_dataset_with_validation_split(tmp_path):
    stems = [f"frame_{i:03d}" for i in range(12)]
    export = labelme_export(tmp_path / "export", stems)
    result, log = build(tmp_path, export, val_fraction=0.3)
    held_out = {s for s in stems if stem_fraction(s) < 0.3}
    assert 0 < len(held_out) < len(stems), "pick stems that land in both splits"
    assert result.splits == {"train": 12 - len(held_out), "validation": len(held_out)} and not result.reused
    assert log.startswith("validation report: 12 image(s) of labelme") and "0 error(s)" in log
    label_map = default_label_map()
    for split in ("train", "validation"):
        for name, record in records(tmp_path, split).items():
            assert (Path(name).stem in held_out) == (split == "validation")
            annotation = formats.read("labelme", export / f"{Path(name).stem}.json", label_map)[0]
            np.testing.assert_array_equal(record["segmentation_mask"][..., 0],
                                          annotation_to_mask(annotation, label_map).mask)
            np.testing.assert_array_equal(record["image"], np.asarray(Image.open(export / name)))
    info = source.load_split("street_seg/streets", "train", tmp_path / "tfds")[2]
    assert info.metadata["options"]["format"] == "labelme" and info.metadata["label_map"] == label_map.to_dict()
    assert sorted(info.metadata["fingerprint"]["files"]) == sorted(p.name for p in export.iterdir())


def test_another_project_opens_a_dataset_of_an_export_by_name(tmp_path, monkeypatch):
    """tfds.builder("street_seg/NAME") fell back to TFDS's read-only builder: '~' in data_dir found nothing ('config
    NAME not found', with an empty list of close names), and options in the name raised a TypeError."""
    import tensorflow_datasets as tfds

    build(tmp_path, labelme_export(tmp_path / "export", [f"frame_{i:03d}" for i in range(6)]), val_fraction=0.3)
    monkeypatch.setenv("HOME", str(tmp_path))
    by_name = tfds.builder("street_seg/streets", data_dir="~/tfds")
    assert Path(by_name.data_dir) == tmp_path / "tfds" / "street_seg" / "streets" / "2.0.0"
    assert len(by_name.as_data_source(split="train")) == len(records(tmp_path, "train"))
    assert len(tfds.data_source("street_seg/streets/format=labelme", split="validation",
                                data_dir="~/tfds")) == len(records(tmp_path, "validation"))
    with pytest.raises(ValueError, match="val_fraction: a dataset's splits are chosen when it is built"):
        tfds.data_source("street_seg/streets/val_fraction=0.3", split="validation", data_dir="~/tfds")
    plain = tfds.builder("street_seg/streets", data_dir=str(tmp_path / "tfds"))     # TFDS's read-only builder
    assert len(plain.as_data_source(split="train")) == len(records(tmp_path, "train"))
    with pytest.raises(ValueError, match="was built with format='labelme', not format='coco'"):
        tfds.data_source("street_seg/streets/format=coco", split="train", data_dir="~/tfds")
    with pytest.raises(ValueError, match=f"street_seg/others is not built in {tmp_path / 'tfds'}: build it from its "
                                         "export .python -m streetseg_jax.data build --config from_annotations "
                                         "--name others"):
        tfds.builder("street_seg/others", data_dir="~/tfds")
    with pytest.raises(ValueError, match="street_seg/street is not built .*: did you mean street_seg/streets\\? Else"):
        tfds.builder("street_seg/street", data_dir="~/tfds")
    with pytest.raises(ValueError, match="format: only a dataset built from an export takes this, not synthetic"):
        tfds.builder("street_seg/synthetic/format=coco", data_dir="~/tfds")


@pytest.mark.parametrize("fmt", sample_exports.FORMATS)
def test_every_format_builds(fmt, tmp_path):
    export = sample_exports.write_export(fmt, tmp_path / "export")
    result, log = build(tmp_path, export, name=f"from_{fmt}", fmt="auto", val_fraction=0.0)
    assert result.splits == {"train": 1} and f"detected format: {fmt}" in log
    (record,) = records(tmp_path, "train", f"from_{fmt}").values()
    np.testing.assert_array_equal(record["segmentation_mask"][..., 0], sample_exports.expected_mask())
    assert record["image"].shape == (H, W, 3)


def test_embedded_images_and_image_conversions(tmp_path):
    export = labelme_export(tmp_path / "export", ["a", "b", "c", "d", "e", "f", "g"], embed=True)
    exif = Image.Exif()
    exif[0x0112] = 6                                  # stored 30 wide, 40 high; shown turned by 90 degrees
    rotated = np.random.default_rng(1).integers(0, 256, (W, H, 3), dtype=np.uint8)
    Image.fromarray(rotated).save(export / "b.jpg", exif=exif.tobytes(), quality=100)
    Image.fromarray(np.arange(H * W, dtype=np.uint16).reshape(H, W) * 50).save(export / "c.png")   # 16-bit grey
    Image.new("RGBA", (W, H), (200, 100, 50, 255)).save(export / "d.png")
    Image.new("P", (W, H), 3).save(export / "e.png")
    Image.fromarray(rotated).save(export / "f.tif", tiffinfo={0x0112: 6})   # Pillow turns TIFFs itself: not twice
    Image.fromarray(np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W), "F").save(export / "g.tif")
    for stem, image in (("b", "b.jpg"), ("c", "c.png"), ("d", "d.png"), ("e", "e.png"), ("f", "f.tif"),
                        ("g", "g.tif")):
        document = json.loads((export / f"{stem}.json").read_text())
        document.update(imagePath=image, imageData=None)
        (export / f"{stem}.json").write_text(json.dumps(document))
    build(tmp_path, export, val_fraction=0.0)
    stored = records(tmp_path, "train")
    assert sorted(stored) == ["a.png", "b.jpg", "c.png", "d.png", "e.png", "f.tif", "g.tif"]
    for record in stored.values():
        assert record["image"].dtype == np.uint8 and record["image"].shape == (H, W, 3)
    upright = np.asarray(Image.open(export / "b.jpg").transpose(Image.Transpose.ROTATE_270))
    assert np.abs(stored["b.jpg"]["image"].astype(int) - upright).max() <= 0   # decoded once, stored losslessly
    assert (stored["d.png"]["image"] == (200, 100, 50)).all()
    assert stored["c.png"]["image"][..., 0].max() > 0
    np.testing.assert_array_equal(stored["f.tif"]["image"], np.rot90(rotated, -1))
    assert stored["g.tif"]["image"].min() == 0 and stored["g.tif"]["image"].max() == 255   # 0..1 was black


def test_a_truncated_image_fails_the_build_saying_what_finds_every_such_file(tmp_path):
    """The report said 0 errors (it reads headers), then the write failed on the first truncated photo: which
    command finds them all?"""
    export = labelme_export(tmp_path / "export", ["a", "b"])
    data = (export / "b.png").read_bytes()
    (export / "b.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(BuildError, match=r"b\.png.*reads images' headers only: `python -m streetseg_jax\.labels "
                                         r"check` decodes every image"):
        build(tmp_path, export, val_fraction=0.0)
    assert not (tmp_path / "tfds" / "street_seg" / "streets").exists()


# --- splits ------------------------------------------------------------------------------------------------------
def test_split_file_assigns_splits_and_is_checked(tmp_path, monkeypatch):
    stems = [f"video_{i:02d}" for i in range(6)]
    export = labelme_export(tmp_path / "export", stems)
    split_file = tmp_path / "splits.tsv"
    split_file.write_text("\ufefftrain\tvideo_00\ntrain\tvideo_01\ntrain\tvideo_02\n"    # a BOM, as Notepad saves it
                          "val\tvideo_03.png\nValidation\tvideo_04\ntest\tvideo_05\n", encoding="utf-8")
    result, _ = build(tmp_path, export, split_file=str(split_file))
    assert result.splits == {"train": 3, "validation": 2, "test": 1}
    assert sorted(records(tmp_path, "test")) == ["video_05.png"]
    # The same file named otherwise is the same build (its path was recorded, and the rebuild refused).
    monkeypatch.chdir(tmp_path)
    again, _ = build(tmp_path, export, split_file="splits.tsv")
    assert again.path == result.path and again.reused
    metadata = result.path / "metadata.json"           # a build before then: the path recorded
    recorded = json.loads(metadata.read_text())
    for options in (recorded["options"], recorded["fingerprint"]["options"]):
        options["split_file"] = "elsewhere/splits.tsv"
    metadata.write_text(json.dumps(recorded))
    assert build(tmp_path, export, split_file=str(split_file))[0].reused
    for text, message in [("train\tvideo_00\n", "5 image(s) are in no split: video_01, video_02"),
                          ("train video_00\n", "line 1: expected 'split<TAB>file stem'"),
                          ("holdout\tvideo_00\n", "line 1: split 'holdout' is not one of"),
                          ("train\tvideo_77\n", "line 1: no image with the stem 'video_77'"),
                          ("train\tvideo_00\ntest\tvideo_00\n", "line 2: 'video_00' is in both train and test")]:
        split_file.write_text(text)
        with pytest.raises(BuildError, match=re.escape(message)):
            build(tmp_path, export, name="other", split_file=str(split_file))
        assert not source.is_built("street_seg/other", tmp_path / "tfds")


CVAT_PROJECT = ROOT.parent / "shared" / "data" / "annotation-samples" / "cvat" / "datumaro_fixture" / "for_images" / \
    "export_project"


@pytest.mark.skipif(not CVAT_PROJECT.is_dir(), reason=f"CVAT sample not found at {CVAT_PROJECT}")
def test_cvat_project_export_with_repeated_names_builds(tmp_path):
    """img0.jpg and img1.jpg are in each of the sample's Test, Train and Validation subsets: all six images reach
    the dataset, told apart by their subset."""
    label_map = LabelMap((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "label1", (255, 0, 0))))
    (tmp_path / "cvat_labels.json").write_text(label_map.to_json())
    result, _ = build(tmp_path, CVAT_PROJECT, fmt="cvat", val_fraction=0.0,
                      label_map=str(tmp_path / "cvat_labels.json"))
    assert result.splits == {"train": 6}
    assert sorted(records(tmp_path, "train")) == [f"{subset}/img{i}.jpg" for subset in ("Test", "Train", "Validation")
                                                  for i in (0, 1)]


@pytest.mark.skipif(not CVAT_PROJECT.is_dir(), reason=f"CVAT sample not found at {CVAT_PROJECT}")
def test_an_exports_own_splits_are_kept_unless_a_fraction_is_given(tmp_path):
    """A CVAT project's Train, Validation and Test subsets went into train and validation by a hash, silently."""
    label_map = LabelMap((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "label1", (255, 0, 0))))
    (tmp_path / "cvat_labels.json").write_text(label_map.to_json())
    result, log = build(tmp_path, CVAT_PROJECT, fmt="cvat", label_map=str(tmp_path / "cvat_labels.json"))
    assert result.splits == {"train": 2, "validation": 2, "test": 2}
    assert "note: the export's own splits are kept (train 2, validation 2, test 2)" in log
    for split, subset in (("train", "Train"), ("validation", "Validation"), ("test", "Test")):
        assert sorted(records(tmp_path, split)) == [f"{subset}/img0.jpg", f"{subset}/img1.jpg"]


def mask_export(folder: Path, splits: dict[str, list[str]]) -> Path:
    """images/ + masks/ in a folder per split (train/, val/ ...), one 8x6 image and mask per stem."""
    for split, stems in splits.items():
        for stem in stems:
            for kind in ("images", "masks"):
                (folder / split / kind).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 6), (90, 40, 10)).save(folder / split / "images" / f"{stem}.png")
            Image.new("L", (8, 6), 3).save(folder / split / "masks" / f"{stem}.png")
    return folder


def test_split_folders_of_a_mask_export_are_kept_and_a_fraction_hashes_them(tmp_path):
    export = mask_export(tmp_path / "export", {"train": ["a", "b", "c"], "val": ["d"], "testing": ["e"]})
    result, log = build(tmp_path, export, fmt="masks")
    assert result.splits == {"train": 3, "validation": 1, "test": 1}, log
    assert sorted(records(tmp_path, "validation")) == ["val/d.png"]
    result, log = build(tmp_path, export, name="hashed", fmt="masks", val_fraction=0.0)
    assert result.splits == {"train": 5}
    assert "note: 5 of 5 image(s) have a split in the export: --val_fraction draws them by a hash" in log


def split_folder_export(fmt: str, folder: Path, splits=("train", "valid", "test")) -> Path:
    """Roboflow's layout: the tool's export once per split folder, each image named after its split."""
    for split in splits:
        sample_exports.write_export(fmt, folder / split)
        for path in sorted((folder / split).rglob("*")):
            if path.is_file() and path.suffix in (".json", ".xml", ".ndjson"):
                path.write_text(path.read_text().replace(sample_exports.STEM, f"{split}_image"))
            if path.is_file() and path.stem == sample_exports.STEM:
                path.rename(path.with_name(f"{split}_image{path.suffix}"))
    return folder


@pytest.mark.parametrize("fmt", ["voc", "mit_xml", "labelme", "coco", "coco_panoptic", "cvat"])
def test_split_folders_give_the_splits_in_every_format(fmt, tmp_path):
    """Roboflow's train/ valid/ test/ were hashed into train and validation (and a COCO export so laid out was not
    found at all: its JSONs are in the split folders)."""
    export = split_folder_export(fmt, tmp_path / "export")
    assert formats.detect(export) == fmt
    annotations = formats.read(fmt, export, default_label_map())
    assert sorted((Path(a.file_name).stem, a.split) for a in annotations) == [
        ("test_image", "test"), ("train_image", "train"), ("valid_image", "validation")]


def test_a_roboflow_coco_export_builds_with_its_splits(tmp_path):
    export = split_folder_export("coco", tmp_path / "export")
    result, log = build(tmp_path, export, fmt="auto")
    assert result.splits == {"train": 1, "validation": 1, "test": 1}, log
    assert "note: the export's own splits are kept (train 1, validation 1, test 1)" in log
    assert list(records(tmp_path, "validation")) == ["valid_image.png"]


def test_images_outside_the_split_folders_are_hashed_and_the_others_keep_their_splits(tmp_path):
    """One folder beside train/ val/ test/ threw every image's split away: the test split was gone."""
    export = mask_export(tmp_path / "export", {"train": ["a", "b"], "val": ["d"], "test": ["e"], "extra": ["c", "f"]})
    result, log = build(tmp_path, export, fmt="masks")
    drawn = {stem: "validation" if stem_fraction(f"extra/{stem}") < 0.2 else "train" for stem in "cf"}
    expected = {"train": ["train/a", "train/b"], "validation": ["val/d"], "test": ["test/e"]}
    for stem, split in drawn.items():
        expected[split].append(f"extra/{stem}")
    assert {split: sorted(Path(name).with_suffix("").as_posix() for name in records(tmp_path, split))
            for split in result.splits} == {split: sorted(keys) for split, keys in expected.items()}, log
    assert ("note: the export's own splits are kept (train 2, validation 1, test 1); 2 image(s) in none of its split "
            "folders (extra/c, extra/f) are drawn by a hash of their name (validation fraction 0.2)") in log


def test_a_photo_in_two_splits_is_warned_of(tmp_path):
    """The same frame copied into train/ and test/ was built without a word."""
    export = tmp_path / "export"
    labelme_export(export / "train", ["a", "b", "c"])
    labelme_export(export / "val", ["d"])
    (export / "test").mkdir()
    for suffix in (".png", ".json"):
        shutil.copy(export / "train" / f"a{suffix}", export / "test" / f"a{suffix}")
    result, log = build(tmp_path, export)
    assert result.splits == {"train": 3, "validation": 1, "test": 1}, log
    assert ("warning: 1 photo(s) are in two splits, the same bytes under both names, so the held-out scores would "
            "flatter the model: train/a (train) and test/a (test)") in log
    assert "photo(s) are in two splits" not in build(tmp_path, export / "train", name="train_only")[1]


def test_a_hash_far_from_the_fraction_asked_for_is_said():
    keys = ["a", "b", "c", "d", "e"]
    splits, notes = inputs.assign_splits(keys, inputs.SplitRule(fraction=0.5))
    held = len(splits.get("validation", []))
    assert abs(held / 5 - 0.5) > 0.1 and 0 < held < 5, "pick names that the hash spreads unevenly"
    assert notes == [f"note: the hash of the names put {held} of 5 image(s) in validation for a fraction of 0.5 (it is "
                     "even only over many images); a --split_file chooses each image's split"]
    _, notes = inputs.assign_splits(keys, inputs.SplitRule("test", fraction=0.5))     # voc_polygons takes no file
    assert notes[0].endswith("images); --config from_annotations --name NAME --format voc --split_file FILE "
                             "chooses each image's split")


def test_an_export_whose_splits_hold_nothing_out_is_hashed_and_says_so(tmp_path):
    """A train/ folder alone made a dataset with no validation split, so training stopped later."""
    export = mask_export(tmp_path / "export", {"train": ["a", "b", "c", "d", "e", "f"]})
    result, log = build(tmp_path, export, fmt="masks")
    assert set(result.splits) == {"train", "validation"}, log
    assert ("note: the export's own splits (train 6) are not a train split and a held-out one, so every image's split "
            "is drawn by a hash of its name") in log


def test_nested_keys_in_split_files_and_file_names(tmp_path):
    """Keys with a folder (a CVAT project's Train/img0) are named in full in a split file, or by their plain stem
    when no other image has it; the dataset's file names keep the folder, so repeated names stay apart."""
    keys = ["Train/img0", "Test/img0", "Train/img1", "plain"]
    split_file = tmp_path / "splits.tsv"
    split_file.write_text("train\tTrain/img0\ntest\tTest/img0.jpg\ntrain\timg1\nvalidation\tplain.png\n")
    assert inputs.read_split_file(split_file, keys) == {"Train/img0": "train", "Test/img0": "test",
                                                        "Train/img1": "train", "plain": "validation"}
    split_file.write_text("train\timg0\n")                      # two keys end in img0: which one is meant?
    with pytest.raises(BuildError, match="'img0' is the stem of 2 images \\(Test/img0, Train/img0\\): name one by "
                                         "its folder too"):
        inputs.read_split_file(split_file, keys)
    split_file.write_text("train\timg.001\ntest\tother.png\n")   # a stem with a dot (it was "no image")
    assert inputs.read_split_file(split_file, ["cam1/img.001", "cam2/other"]) == {"cam1/img.001": "train",
                                                                                  "cam2/other": "test"}
    split_file.write_text("train\tnowhere\n")
    with pytest.raises(BuildError, match="no image with the stem 'nowhere'"):
        inputs.read_split_file(split_file, ["cam2/other"])
    image = Annotation(Path("a.xml"), "img0.jpg", 4, 4, [], image_path=tmp_path / "images" / "Test" / "img0.jpg")
    assert inputs.example_file_name(image, "Test/img0") == "Test/img0.jpg"
    assert inputs.example_file_name(image, "img0") == "img0.jpg"
    assert inputs.example_file_name(Annotation(Path("m.png"), "", 4, 4, []), "seq1/frame_001") == "seq1/frame_001.png"


# --- fingerprint -------------------------------------------------------------------------------------------------
def test_unchanged_inputs_are_a_no_op_and_changes_are_named(tmp_path):
    export = labelme_export(tmp_path / "export", ["a", "b", "c"])
    build(tmp_path, export)
    again, log = build(tmp_path, export)
    assert again.reused and log == ""
    changes = [
        (lambda: (export / "b.json").write_text((export / "b.json").read_text().replace("17.25", "17.5")),
         "1 file(s) modified: b.json"),
        (lambda: labelme_export(tmp_path / "extra", ["d"]) and [p.rename(export / p.name)
                                                                for p in (tmp_path / "extra").iterdir()],
         "2 file(s) added: d.json, d.png"),
        (lambda: [(export / name).unlink() for name in ("a.json", "a.png")], "2 file(s) removed: a.json, a.png"),
    ]
    for change, message in changes:
        change()
        with pytest.raises(BuildError, match="--overwrite") as caught:
            build(tmp_path, export)
        assert message in str(caught.value), str(caught.value)
        # A rebuild in place leaves the runs trained on the old build nothing to be evaluated or resumed on.
        assert "or build it under another --data_dir to keep this build" in str(caught.value)
        build(tmp_path, export, overwrite=True)
        assert build(tmp_path, export)[0].reused
    with pytest.raises(BuildError, match="option val_fraction: 0.2 before, 0.5 now"):
        build(tmp_path, export, val_fraction=0.5)
    other_map = default_label_map().to_dict()
    other_map["classes"][6]["aliases"] = ["heaven"]
    (tmp_path / "other.json").write_text(json.dumps(other_map))
    with pytest.raises(BuildError, match="the label map changed"):
        build(tmp_path, export, label_map=str(tmp_path / "other.json"))


def test_a_data_dir_given_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    export = labelme_export(tmp_path / "home" / "export", ["a", "b"])
    result = data_build.build("from_annotations", "~/tfds", "~/export", name="tilde", format="labelme",
                              label_map=label_map_file(tmp_path), val_fraction=0.0, log=lambda message: None)
    assert result.path.is_relative_to(tmp_path / "home" / "tfds") and not (tmp_path / "~").exists()
    assert export.is_dir()


def test_the_fingerprint_follows_linked_folders_once(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "0001.png").write_bytes(b"mask one")
    export = tmp_path / "export"
    export.mkdir()
    (export / "trainannot").symlink_to(tmp_path / "real", target_is_directory=True)    # as CamVid copies are kept
    (export / "loop").symlink_to(export, target_is_directory=True)                    # a cycle: read once
    (export / ".hidden").mkdir()
    (export / ".hidden" / "x").write_bytes(b"left out")
    before = inputs.fingerprint(export, default_label_map(), {})
    assert sorted(before["files"]) == ["trainannot/0001.png"]
    (tmp_path / "real" / "0001.png").write_bytes(b"mask two")
    after = inputs.fingerprint(export, default_label_map(), {})
    assert inputs.changes(before, after) == ["1 file(s) modified: trainannot/0001.png"]


# --- errors and atomic writing -----------------------------------------------------------------------------------
def test_errors_stop_the_build_after_the_report(tmp_path):
    export = labelme_export(tmp_path / "export", ["a", "b"], labels=("sky", "lamppost"))
    logged = []
    with pytest.raises(UnknownLabelsError, match="lamppost"):
        data_build.build("from_annotations", tmp_path / "tfds", export, name="streets", format="labelme",
                         label_map=label_map_file(tmp_path), log=logged.append)
    assert "unknown class name(s) 'lamppost'" in logged[0]
    Image.new("RGB", (W + 1, H)).save(export / "b.png")
    with pytest.raises(BuildError, match="b.png is 41x30 but b.json says 40x30"):
        build(tmp_path, export, unknown="ignore")
    assert not (tmp_path / "tfds").exists()     # the data dir it made on the way is gone too


def truncate_pixels(path: Path) -> None:
    """Keep the header (size still readable) but cut the pixel data: only a full decode notices."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_images_a_side_of_one_pixel_are_refused(tmp_path):
    # TFDS writes a 1xN image, then fails to read it back ("Shapes (2,) and (3,) are incompatible" in training).
    export = tmp_path / "export"
    for name, (w, h) in {"thin": (2, 1), "small": (2, 2)}.items():
        for folder, image in (("images", Image.new("RGB", (w, h), (9, 9, 9))),
                              ("masks", Image.fromarray(np.full((h, w), 3, np.uint8)))):
            (export / folder).mkdir(parents=True, exist_ok=True)
            image.save(export / folder / f"{name}.png")
    with pytest.raises(BuildError, match="thin.png is 2x1: too small for a dataset"):
        build(tmp_path, export, fmt="masks", val_fraction=0.0)
    (export / "images" / "thin.png").unlink()
    (export / "masks" / "thin.png").unlink()
    build(tmp_path, export, fmt="masks", val_fraction=0.0)
    assert records(tmp_path, "train")["small.png"]["image"].shape == (2, 2, 3)     # the smallest that reads back


def test_a_failure_found_late_leaves_no_dataset(tmp_path):
    stems = [f"frame_{i:02d}" for i in range(8)]
    export = labelme_export(tmp_path / "export", stems)
    truncate_pixels(export / "frame_06.png")
    with pytest.raises(BuildError, match="frame_06"):
        build(tmp_path, export, val_fraction=0.0)
    assert not (tmp_path / "tfds").exists()     # nor TFDS's scaffolding (downloads/, .config/) in it


def test_a_failed_overwrite_keeps_the_previous_dataset(tmp_path):
    export = labelme_export(tmp_path / "export", ["a", "b", "c"])
    build(tmp_path, export, val_fraction=0.0)
    before = records(tmp_path, "train")
    truncate_pixels(export / "c.png")
    with pytest.raises(BuildError, match="c.png"):
        build(tmp_path, export, val_fraction=0.0, overwrite=True)
    after = records(tmp_path, "train")
    assert sorted(after) == sorted(before)
    np.testing.assert_array_equal(after["c.png"]["image"], before["c.png"]["image"])
    assert [p.name for p in (tmp_path / "tfds" / "street_seg" / "streets").iterdir()] == ["2.0.0"]
    assert (tmp_path / "tfds" / "street_seg" / ".config").is_dir()     # there before the failed build: kept


def test_a_build_in_another_file_format_is_not_handed_back(tmp_path, monkeypatch):
    export = labelme_export(tmp_path / "export", ["a", "b"])
    build(tmp_path, export, val_fraction=0.0)
    monkeypatch.setattr(data_build, "_check_file_format", lambda *args: None)    # tfrecord needs TensorFlow to write
    with pytest.raises(BuildError, match="file format: array_record on disk, tfrecord asked for"):
        build(tmp_path, export, val_fraction=0.0, file_format="tfrecord")


def test_an_overwrite_replaces_only_the_version_it_builds(tmp_path):
    export = labelme_export(tmp_path / "export", ["a", "b"])
    build(tmp_path, export, val_fraction=0.0)
    config_dir = tmp_path / "tfds" / "street_seg" / "streets"
    shutil.copytree(config_dir / "2.0.0", config_dir / "1.0.0")         # as a build of an older version stays
    build(tmp_path, export, val_fraction=0.0, overwrite=True)
    assert sorted(p.name for p in config_dir.iterdir()) == ["1.0.0", "2.0.0"]


def test_names_and_options_are_checked(tmp_path):
    export = labelme_export(tmp_path / "export", ["a"])
    with pytest.raises(BuildError, match=r"a\.json is a file; pass --manual_dir EXPORT_FOLDER"):
        build(tmp_path, export / "a.json")
    (tmp_path / "tfds").write_text("")
    with pytest.raises(BuildError, match="--data_dir .*tfds is a file, not a folder"):
        build(tmp_path, export)
    (tmp_path / "tfds").unlink()
    for name in ("synthetic", "voc_polygons", "../up", ""):
        with pytest.raises(BuildError, match="dataset name"):
            build(tmp_path, export, name=name)
    with pytest.raises(BuildError, match="not both"):
        build(tmp_path, export, val_fraction=0.1, split_file="x.tsv")
    with pytest.raises(BuildError, match="val_fraction must be in"):
        build(tmp_path, export, val_fraction=1.5)


def test_images_of_one_name_in_two_folders_share_the_split_of_their_name(tmp_path):
    stems = [f"frame_{i:02d}" for i in range(12)]
    for camera in ("cam1", "cam2"):
        labelme_export(tmp_path / "export" / camera, stems)
    build(tmp_path, tmp_path / "export", val_fraction=0.5)
    split_of = {name: split for split in ("train", "validation") for name in records(tmp_path, split)}
    assert len(split_of) == 24
    for stem in stems:          # as the stem alone would be: a namesake arriving later moves nothing
        expected = "validation" if stem_fraction(stem) < 0.5 else "train"
        assert split_of[f"cam1/{stem}.png"] == split_of[f"cam2/{stem}.png"] == expected
    assert set(split_of.values()) == {"train", "validation"}


def test_many_images_through_worker_processes(tmp_path):
    stems = [f"f{i:03d}" for i in range(40)]      # enough for the build to start worker processes
    export = labelme_export(tmp_path / "export", stems)
    build(tmp_path, export, name="pooled", num_workers=2, val_fraction=0.0)
    label_map = default_label_map()
    stored = records(tmp_path, "train", "pooled")
    assert len(stored) == 40
    for name, record in stored.items():
        annotation = formats.read("labelme", export / f"{Path(name).stem}.json", label_map)[0]
        np.testing.assert_array_equal(record["segmentation_mask"][..., 0],
                                      annotation_to_mask(annotation, label_map).mask)


_CTRL_C_SCRIPT = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)      # a test runner's child may have inherited SIG_IGN
from streetseg_jax.data.inputs import Workers
with Workers(2) as workers:
    for i, _ in enumerate(workers.imap(abs, list(range(10**6)), chunksize=1)):   # workers busy on the task queue
        if i == 2000:
            print("running", flush=True)
"""


def test_ctrl_c_stops_the_worker_processes_promptly():
    """Ctrl-C reaches the terminal's whole process group; a worker that died of it holding the task queue's lock
    made closing the pool wait forever, and so did a KeyboardInterrupt raised in the parent inside the pool's own
    code (about one Ctrl-C in three): each try has that chance."""
    for _ in range(6):
        process = subprocess.Popen([sys.executable, "-c", _CTRL_C_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert process.stdout.readline() == "running\n", process.stderr.read()
            os.killpg(process.pid, signal.SIGINT)
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        assert process.returncode != 0 and err.rstrip().endswith("KeyboardInterrupt")


def test_cli_reports_ctrl_c_and_sigterm_in_one_line(tmp_path):
    """A SIGTERM ended the build without a word (Ctrl-C said so)."""
    for raised, code, by in [("KeyboardInterrupt", 130, "Ctrl-C"), ("KeyboardInterrupt('SIGTERM')", 143, "SIGTERM")]:
        script = ("import runpy, sys\nfrom streetseg_jax.data import build\n"
                  f"def interrupted(*args, **kwargs):\n    raise {raised}\n"
                  "build.build = interrupted\n"
                  f"sys.argv = ['data', 'build', '--config', 'synthetic', '--data_dir', {str(tmp_path)!r}]\n"
                  "runpy.run_module('streetseg_jax.data', run_name='__main__')\n")
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == code and done.stderr.strip() == \
            f"stopped by {by}: the dataset was not built (a build is written whole or not at all)"


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied"),
                                          (errno.ENOSPC, "No space left on device")])
def test_cli_names_the_path_a_disk_refused_in_one_line(code, reason, monkeypatch, tmp_path, capsys):
    """A read-only --data_dir printed a traceback (a test cannot make a read-only disk as root: the refusal is
    raised as the OS raises it)."""
    from streetseg_jax import cli
    from streetseg_jax.data.__main__ import main

    def refused(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "downloads"))
    monkeypatch.setattr(data_build, "build", refused)
    monkeypatch.setattr(cli, "stop_on_sigterm", lambda: None)      # pytest's own signal handlers stay
    with pytest.raises(SystemExit) as exit_info:
        cli.run_command(lambda: main(["build", "--config", "synthetic", "--data_dir", str(tmp_path)]), "")
    assert exit_info.value.code == 2 and capsys.readouterr().err == f"error: {tmp_path / 'downloads'}: {reason}\n"


def test_cli_leaves_other_os_errors_to_their_traceback(monkeypatch, tmp_path):
    from streetseg_jax.data.__main__ import main

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(tmp_path / "x"))
    monkeypatch.setattr(data_build, "build", broken)
    with pytest.raises(OSError, match="Input/output error"):
        main(["build", "--config", "synthetic", "--data_dir", str(tmp_path)])


# --- the command line --------------------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streetseg_jax.data", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_cli_prints_the_report_then_builds_then_reuses(tmp_path):
    export = labelme_export(tmp_path / "export", ["a", "b", "c"])
    args = ["build", "--config", "from_annotations", "--name", "cli", "--manual_dir", str(export), "--format",
            "auto", "--label_map", label_map_file(tmp_path), "--data_dir", str(tmp_path / "tfds")]
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.index("detected format: labelme") < out.stdout.index("validation report") \
        < out.stdout.index("street_seg/cli built in")
    again = run_cli(*args)
    assert again.returncode == 0 and "already built, inputs unchanged" in again.stdout
    (export / "a.json").write_text((export / "a.json").read_text().replace("17.25", "16"))
    changed = run_cli(*args)
    assert changed.returncode == 2 and "1 file(s) modified: a.json" in changed.stderr
    assert "Traceback" not in changed.stderr
    for out in (out, changed):      # stderr is a pipe here, as a log file: no bars of cursor escapes
        assert "\r" not in out.stderr and "\x1b[" not in out.stderr


def test_cli_builds_the_synthetic_data_without_progress_bars_into_a_log(tmp_path):
    """Its TFDS bars (and "Shuffling .../incomplete..." lines) reached a log file as lines of cursor escapes; so
    did main's build of the default dataset on first use, the README's first command."""
    out = run_cli("build", "--config", "synthetic", "--num_images", "4", "--height", "32", "--width", "48",
                  "--data_dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "\x1b[" not in out.stderr and "Shuffling" not in out.stderr, out.stderr


def test_cli_flag_errors(tmp_path):
    out = run_cli("build", "--config", "from_annotations", "--data_dir", str(tmp_path))
    assert out.returncode == 2 and "needs --name, --manual_dir, --format, --label_map" in out.stderr
    out = run_cli("build", "--config", "synthetic", "--data_dir", str(tmp_path), "--name", "x")
    assert out.returncode == 2 and "--name: not read by --config synthetic" in out.stderr
    out = run_cli("build", "--config", "from_annotations", "--val_fraction", "0.1", "--split_file", "s.tsv")
    assert out.returncode == 2 and "not allowed with argument" in out.stderr
    out = run_cli("build", "--config", "synthetic", "--data_dir", str(tmp_path), "--num_workers", "-3")
    assert out.returncode == 2 and "--num_workers must be 1 or more, got -3" in out.stderr
    out = run_cli("build", "--config", "voc_polygons", "--manual_dir", str(tmp_path), "--unknown", "ignore")
    assert out.returncode == 2 and "--config from_annotations --name NAME --format voc --unknown ignore" in out.stderr
    # The synthetic scenes' classes are fixed: a label map lacking some is refused before any scene is drawn.
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                                               {"id": 1, "name": "street", "color": [9, 9, 9], "aliases": ["road"]}]}))
    out = run_cli("build", "--config", "synthetic", "--data_dir", str(tmp_path / "tfds"), "--label_map", str(partial))
    assert out.returncode == 2 and f"{partial} lacks tree, landscaping, sidewalk, building, sky, concrete" in out.stderr
    assert not (tmp_path / "tfds").exists()


def test_an_export_in_the_default_manual_folder_is_fingerprinted(tmp_path):
    """An export in DATA_DIR/downloads/manual (TFDS's default) was left out of its own fingerprint with the data dir:
    a relabelled mask was never noticed, the old build handed back."""
    data_dir = tmp_path / "tfds"
    export = mask_export(data_dir / "downloads" / "manual", {"train": ["a", "b"], "val": ["c"]})
    options = dict(name="manual", format="masks", label_map=label_map_file(tmp_path), log=lambda message: None)
    assert not data_build.build("from_annotations", data_dir, None, **options).reused
    Image.new("L", (8, 6), 5).save(export / "train" / "masks" / "a.png")
    with pytest.raises(BuildError, match="1 file\\(s\\) modified: train/masks/a.png"):
        data_build.build("from_annotations", data_dir, None, **options)


def test_a_val_fraction_given_is_not_answered_with_the_exports_own_splits(tmp_path):
    """val_fraction=0.2 asked of a build that had followed the export's splits was recorded as the default's 0.2, and
    the export's splits were handed back as if hashed."""
    export = mask_export(tmp_path / "export", {"train": list("abcdef"), "val": list("ghi")})
    result, _ = build(tmp_path, export, fmt="masks")
    assert result.splits == {"train": 6, "validation": 3}
    with pytest.raises(BuildError, match="option splits: not given before, 'by val_fraction' now"):
        build(tmp_path, export, fmt="masks", val_fraction=0.2)
    result, _ = build(tmp_path, export, fmt="masks", val_fraction=0.2, overwrite=True)
    assert sum(result.splits.values()) == 9 and result.splits != {"train": 6, "validation": 3}
    assert build(tmp_path, export, fmt="masks", val_fraction=0.2)[0].reused


def test_a_file_name_that_is_not_utf8_is_refused_by_name(tmp_path):
    """A Latin-1 file name (an old zip's) ended the build in a UnicodeEncodeError traceback."""
    export = mask_export(tmp_path / "export", {"train": ["plain"]})
    latin = os.fsdecode(b"caf\xe9.png")
    for kind in ("images", "masks"):
        shutil.copy(export / "train" / kind / "plain.png", export / "train" / kind / latin)
    with pytest.raises(BuildError, match=r"b'train/caf\\xe9': the file name is not UTF-8 .*: rename it"):
        build(tmp_path, export, fmt="masks")


def test_a_split_with_no_labelled_pixel_is_warned_of_at_build_time(tmp_path):
    """Such a split built without a word; a run then refuses it (run._load) only when it starts."""
    export = mask_export(tmp_path / "export", {"train": ["a", "b"], "val": ["c"]})
    Image.new("L", (8, 6), 255).save(export / "val" / "masks" / "c.png")
    result, log = build(tmp_path, export, fmt="masks")
    assert result.splits == {"train": 2, "validation": 1}
    assert ("warning: no pixel of the validation split's 1 image(s) is labelled (every one is the ignore id 255): a run "
            "refuses to train or evaluate on it; label some, or choose other splits") in log.splitlines(), log
    assert "no pixel of the train split" not in log


def binary_export(folder: Path, stems: list[str], foreground: int) -> Path:
    """images/ + masks/ of a crack (a band of `foreground`) on background 0."""
    for i, stem in enumerate(stems):
        mask = np.zeros((H, W), np.uint8)
        mask[5 + i % 3:9 + i % 3] = foreground
        for sub, array in (("images", np.dstack([mask] * 3)), ("masks", mask)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / sub / f"{stem}.png")
    return folder


def test_a_class_no_image_has_is_said_and_binary_masks_of_0_and_255_are_named(tmp_path, capsys):
    """Masks of 0 and 255, as many tools save a binary mask, trained to mIoU 1.0 on the 0s alone: 255 is the ignore
    id, and nothing said that no pixel was a crack."""
    from streetseg_jax.labels.__main__ import main as labels_main

    labels = tmp_path / "crack.json"
    labels.write_text(json.dumps({"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                                              {"id": 1, "name": "crack", "color": [255, 0, 0]}]}))
    check = ["check", "--format", "masks", "--label_map", str(labels), "--strict", "--input"]
    with pytest.raises(SystemExit) as refused:
        labels_main([*check, str(binary_export(tmp_path / "saved_255", ["a", "b"], 255))])
    out = capsys.readouterr().out
    assert refused.value.code == 1 and "0 error(s), 1 warning(s)" in out
    assert re.search(r"no image has a pixel of class\(es\) 'crack' \(id 1\): a model trained on this export cannot "
                     r"learn them; \d+\.\d% of the pixels are the ignore value \(255\), no class: a binary mask saved "
                     r"as 0 and 255 loses its second class \(save it as 0 and 1, or list the class's \"values\": \[255\] "
                     r"in the label map\)", out)
    crack = json.loads(labels.read_text())
    crack["classes"][1]["values"] = [255]           # what the export's 255s stand for
    (tmp_path / "crack_255.json").write_text(json.dumps(crack))
    labels_main([*check[:4], str(tmp_path / "crack_255.json"), *check[5:], str(tmp_path / "saved_255")])
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out
    labels_main([*check, str(binary_export(tmp_path / "saved_1", ["a", "b"], 1))])
    out = capsys.readouterr().out
    assert "0 error(s), 0 warning(s)" in out and "no image has a pixel" not in out
    labels.write_text(json.dumps({"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                                              {"id": 1, "name": "crack", "color": [255, 0, 0]},
                                              {"id": 2, "name": "pothole", "color": [0, 0, 255]}]}))
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(tmp_path / "saved_1" / "masks" / "c.png")   # ignore too
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "saved_1" / "images" / "c.png")
    labels_main([*check, str(tmp_path / "saved_1")])        # a class of the taxonomy unused here: a note
    out = capsys.readouterr().out
    assert "0 error(s), 0 warning(s)" in out
    assert "note: no image has a pixel of class(es) 'pothole' (id 2): a model trained on this export cannot learn " \
           "them" in out


def test_a_class_of_a_held_out_split_that_train_lacks_is_warned_of(tmp_path):
    export = binary_export(tmp_path / "export", ["a", "b", "c"], 1)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(export / "masks" / "a.png")    # train: background alone
    Image.fromarray(np.zeros((H, W), np.uint8)).save(export / "masks" / "b.png")
    split_file = tmp_path / "splits.txt"
    split_file.write_text("train\ta\ntrain\tb\nvalidation\tc\n")
    labels = tmp_path / "crack.json"
    labels.write_text(json.dumps({"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                                              {"id": 1, "name": "crack", "color": [255, 0, 0]}]}))
    _, logged = build(tmp_path, export, fmt="masks", label_map=str(labels), split_file=str(split_file))
    assert "warning: the validation split has pixels of 'crack', which no image of the train split has: the model " \
           "cannot learn them, and they score 0 there; move some of their images to train (--split_file)" in logged


def test_a_hash_that_leaves_train_empty_is_refused(tmp_path):
    """Three images, all hashed into validation: a dataset of nothing to train on was built with a warning, and the
    run then pointed at training on the validation images."""
    stems = [s for s in (f"img{i}" for i in range(200)) if stem_fraction(s) < 0.5][:3]
    export = labelme_export(tmp_path / "export", stems)
    with pytest.raises(BuildError, match=r"the hash of the names put all 3 image\(s\) in validation for a fraction "
                                         r"of 0.5, none in train .*smaller --val_fraction, or a --split_file"):
        build(tmp_path, export, val_fraction=0.5)
    assert not (tmp_path / "tfds" / "street_seg" / "streets").exists()


def test_a_dataset_carries_the_label_map_of_its_ids_however_the_export_stored_them(tmp_path):
    """Masks of 0 and 255 read with a class's values [255], and masks of 0 and 1: the same ids, and one label map (a
    run on the one refused to resume on the other, evaluate to score it, as 'another label map')."""
    crack = {"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                         {"id": 1, "name": "crack", "color": [255, 0, 0]}]}
    (tmp_path / "ids.json").write_text(json.dumps(crack))
    crack["classes"][1]["values"] = [255]
    (tmp_path / "values.json").write_text(json.dumps(crack))
    built = {}
    for name, foreground, labels in (("ids", 1, "ids.json"), ("values", 255, "values.json")):
        export = binary_export(tmp_path / name, ["a", "b"], foreground)
        build(tmp_path, export, name=name, fmt="masks", label_map=str(tmp_path / labels), val_fraction=0.0)
        split, label_map, _ = source.load_split(f"street_seg/{name}", "train", tmp_path / "tfds")
        built[name] = (label_map, [split[i]["segmentation_mask"].max() for i in range(len(split))])
    assert built["ids"] == built["values"] and built["ids"][1] == [1, 1]
    assert "values" not in json.dumps(built["values"][0].to_dict())
    again, _ = build(tmp_path, tmp_path / "values", name="values", fmt="masks", label_map=str(tmp_path / "values.json"),
                     val_fraction=0.0)
    assert again.reused


def test_a_cut_out_photos_transparent_pixels_are_ignored_in_the_dataset(tmp_path):
    """predict marks a cut-out's transparent pixels as no photo; the build kept them black with the class drawn
    over them, teaching a model that black is that class."""
    export = labelme_export(tmp_path / "export", ["cut"])
    rgba = np.dstack([np.asarray(Image.open(export / "cut.png")), np.full((H, W), 255, np.uint8)])
    rgba[20:, :10, 3] = 0                                   # a transparent corner of the road
    Image.fromarray(rgba).save(export / "cut.png")
    build(tmp_path, export, val_fraction=0.0)
    record = records(tmp_path, "train")["cut.png"]
    mask, image = record["segmentation_mask"][..., 0], record["image"]
    assert (mask[20:, :10] == default_label_map().ignore_id).all() and (image[20:, :10] == 0).all()
    assert (mask[20:, 10:] == default_label_map().id_of("road")).all()


def test_two_builds_of_the_same_export_are_the_same_files(tmp_path):
    """Each build serialized its examples' features in another order (a protobuf map): the same data had other
    bytes, so its fingerprint called a rebuild other data, refusing a resume and naming evaluate's results apart."""
    export = labelme_export(tmp_path / "export", [f"frame_{i}" for i in range(6)])
    folders = []
    for name in ("one", "two"):             # two processes: the order was fixed within one
        out = run_cli("build", "--config", "from_annotations", "--name", "streets", "--manual_dir", str(export),
                      "--format", "labelme", "--label_map", label_map_file(tmp_path), "--data_dir", str(tmp_path / name))
        assert out.returncode == 0, out.stderr
        folders.append(source.dataset_dir("street_seg/streets", tmp_path / name))
    assert source.dataset_fingerprint(folders[0]) == source.dataset_fingerprint(folders[1])


def test_the_pool_takes_sigterm_only_where_python_handles_it():
    """Under jax.distributed JAX's preemption service handles SIGTERM in C (SIG_DFL to Python): the pool put SIG_DFL
    "back" after a build, removing JAX's handler, so a preemption killed process 0 outright."""
    import signal

    from streetseg_jax.data import inputs

    class Results:          # the pool's results, looking at the SIGTERM handler while they are read
        seen = []

        def next(self, timeout):
            self.seen.append(signal.getsignal(signal.SIGTERM))
            raise StopIteration

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        list(inputs._interrupted_between_results(Results()))
        assert Results.seen[-1] == signal.SIG_DFL == signal.getsignal(signal.SIGTERM)      # left alone
        def mine(signum, frame):        # as cli.stop_on_sigterm's
            pass
        signal.signal(signal.SIGTERM, mine)
        list(inputs._interrupted_between_results(Results()))
        assert Results.seen[-1] not in (mine, signal.SIG_DFL) and signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_worker_ends_on_sigterm_whatever_handler_its_parent_had():
    """The commands turn SIGTERM into a KeyboardInterrupt (cli.stop_on_sigterm), and forked workers inherited that
    handler: the SIGTERM their killed parent's death sends them (and the one Pool.terminate sends) was caught, and
    a killed build's workers lived on, the next build hanging in CI."""
    script = textwrap.dedent("""
        import os, signal, time
        from concurrent.futures import ProcessPoolExecutor
        from streetseg_jax.cli import stop_on_sigterm
        from streetseg_jax.data.inputs import end_with_parent, pool_context

        stop_on_sigterm()
        with ProcessPoolExecutor(1, mp_context=pool_context(), initializer=end_with_parent) as pool:
            worker = pool.submit(os.getpid).result()
            os.kill(worker, signal.SIGTERM)
            time.sleep(2)
            try:
                os.kill(worker, 0)
                print("alive")
            except ProcessLookupError:
                print("ended")
            os._exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ended", done.stdout + done.stderr
