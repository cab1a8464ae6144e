"""street_seg/camvid: SegNet's CamVid layout read into train/validation/test, void remapped to the ignore id, and
every missing or mismatched pair refused with the file's name. The real data is used when it is there."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streetseg_jax.data import source
from streetseg_jax.data.build import build
from streetseg_jax.data.__main__ import main as data_main
from streetseg_jax.data.builder import BuildError

REAL_CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
NAMES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian",
         "bicyclist"]
SIZE = (12, 16)     # height, width


def write_pair(folder: Path, split: str, name: str, seed: int, mask_size=SIZE, mask_mode="L") -> None:
    """A random RGB frame and a mask using every value 0..11 (11 = void)."""
    rng = np.random.default_rng(seed)
    (folder / split).mkdir(parents=True, exist_ok=True)
    (folder / f"{split}annot").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(folder / split / name)
    mask = (np.arange(mask_size[0] * mask_size[1]).reshape(mask_size) + seed) % 12
    Image.fromarray(mask.astype(np.uint8)).convert(mask_mode).save(folder / f"{split}annot" / name)


def make_segnet_folder(folder: Path, splits=(("train", 3), ("val", 2), ("test", 2))) -> Path:
    for split, count in splits:
        for i in range(count):
            write_pair(folder, split, f"0001TP_{split}_{i:03d}.png", seed=len(split) * 10 + i)
    return folder


def stored(data_dir: Path, split: str) -> list[dict]:
    split_source, _, _ = source.load_split("street_seg/camvid", split, data_dir)
    return [split_source[i] for i in range(len(split_source))]


# --- building ----------------------------------------------------------------------------------------------------
def test_splits_class_names_and_void_remapped_to_ignore(tmp_path):
    folder = make_segnet_folder(tmp_path / "CamVid")
    result = build("camvid", tmp_path / "tfds", folder)
    assert result.splits == {"train": 3, "validation": 2, "test": 2}
    _, label_map, info = source.load_split("street_seg/camvid", "train", tmp_path / "tfds")
    assert label_map.names == NAMES and label_map.ignore_id == 255
    assert label_map.classes[4].color == (60, 40, 222) and label_map.id_of("SignSymbol") == 6
    assert [c["name"] for c in info.metadata["label_map"]["classes"]] == NAMES     # the names live there
    for split, name in (("train", "train"), ("validation", "val"), ("test", "test")):
        for record in stored(tmp_path / "tfds", split):
            file_name = record["file_name"].decode()
            original = np.asarray(Image.open(folder / f"{name}annot" / file_name))
            mask = record["segmentation_mask"][..., 0]
            np.testing.assert_array_equal(mask, np.where(original == 11, 255, original))
            assert (mask == 255).any() and set(np.unique(mask)) <= set(range(11)) | {255}
            np.testing.assert_array_equal(record["image"], np.asarray(Image.open(folder / name / file_name)))


def test_no_test_folder_no_test_split_and_lists_pick_and_order(tmp_path, capsys):
    folder = make_segnet_folder(tmp_path / "CamVid", splits=(("train", 3), ("val", 2)))
    # SegNet's lists hold absolute paths of another machine: only the base names count.
    (folder / "train.txt").write_text("/SegNet/CamVid/train/0001TP_train_002.png /SegNet/CamVid/trainannot/"
                                      "0001TP_train_002.png\n\n/SegNet/CamVid/train/0001TP_train_000.png "
                                      "/SegNet/CamVid/trainannot/0001TP_train_000.png\n")
    result = build("camvid", tmp_path / "tfds", folder)
    assert result.splits == {"train": 2, "validation": 2}
    names = [r["file_name"].decode() for r in stored(tmp_path / "tfds", "train")]
    assert names == ["0001TP_train_002.png", "0001TP_train_000.png"]
    assert "0001TP_train_001.png" in capsys.readouterr().err     # the unlisted file is named in a warning


def test_rebuild_is_reused_and_options_are_refused(tmp_path):
    folder = make_segnet_folder(tmp_path / "CamVid", splits=(("train", 1), ("val", 1)))
    build("camvid", tmp_path / "tfds", folder)
    assert build("camvid", tmp_path / "tfds", folder).reused
    with pytest.raises(BuildError, match="camvid takes no options"):
        build("camvid", tmp_path / "other", folder, test_fraction=0.3)


# --- errors name the file ----------------------------------------------------------------------------------------
def _remove(path: Path) -> None:
    path.unlink()


BROKEN = {
    "image without annotation": (lambda f: _remove(f / "trainannot" / "0001TP_train_001.png"),
                                 "train/0001TP_train_001.png"),
    "annotation without image": (lambda f: _remove(f / "val" / "0001TP_val_000.png"),
                                 "valannot/0001TP_val_000.png"),
    "size mismatch": (lambda f: write_pair(f, "train", "0001TP_train_001.png", 1, mask_size=(12, 15)),
                      "trainannot/0001TP_train_001.png: annotation is 15x12 but its image"),
    "RGB annotation": (lambda f: write_pair(f, "val", "0001TP_val_001.png", 1, mask_mode="RGB"),
                       "valannot/0001TP_val_001.png: annotation is a mode RGB image"),
    "annotation folder missing": (lambda f: shutil.rmtree(f / "testannot"), "test has no testannot/ folder"),
    "listed file missing": (lambda f: (f / "val.txt").write_text("a/0001TP_val_000.png b/0001TP_val_000.png\n"
                                                                   "a/gone.png b/gone.png\n"),
                            "val.txt line 2 names gone.png"),
    "listed with another frame's annotation": (
        lambda f: (f / "val.txt").write_text("a/0001TP_val_000.png b/0001TP_val_001.png\n"),
        "val.txt line 1 pairs the frame 0001TP_val_000.png with the annotation 0001TP_val_001.png"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_pairs_are_errors_naming_the_file(tmp_path, case):
    folder = make_segnet_folder(tmp_path / "CamVid")
    breaks, message = BROKEN[case]
    breaks(folder)
    with pytest.raises(BuildError, match=message.replace(".", r"\.")):
        build("camvid", tmp_path / "tfds", folder)
    assert not source.is_built("street_seg/camvid", tmp_path / "tfds")


def test_mask_values_beyond_void_are_refused(tmp_path):
    folder = make_segnet_folder(tmp_path / "CamVid", splits=(("train", 1), ("val", 1)))
    Image.fromarray(np.full(SIZE, 12, np.uint8)).save(folder / "trainannot" / "0001TP_train_000.png")
    with pytest.raises(BuildError, match=r"0001TP_train_000\.png: mask values \[12\]"):
        build("camvid", tmp_path / "tfds", folder)
    assert not source.is_built("street_seg/camvid", tmp_path / "tfds")


def test_command_line_reports_errors_without_a_traceback(tmp_path, capsys):
    folder = make_segnet_folder(tmp_path / "CamVid", splits=(("train", 2), ("val", 1)))
    _remove(folder / "trainannot" / "0001TP_train_000.png")
    with pytest.raises(SystemExit) as exit_info:
        data_main(["build", "--config", "camvid", "--manual_dir", str(folder), "--data_dir", str(tmp_path / "d")])
    assert exit_info.value.code == 2
    assert "train/0001TP_train_000.png" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        data_main(["build", "--config", "camvid", "--manual_dir", str(folder), "--label_map", "x.json"])
    assert "--label_map: not read by --config camvid" in capsys.readouterr().err


# --- the real data -----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not (REAL_CAMVID / "train").is_dir(), reason=f"CamVid is not at {REAL_CAMVID} (see README: CamVid)")
def test_real_camvid_builds_with_segnet_counts_and_classes(tmp_path):
    # Building all 468 frames takes about 5 s here: cheap enough to test the real thing end to end.
    result = build("camvid", tmp_path, REAL_CAMVID)
    assert result.splits == {"train": 367, "validation": 101}
    val, label_map, _ = source.load_split("street_seg/camvid", "validation", tmp_path)
    assert label_map.names == NAMES and label_map.palette()[3].tolist() == [128, 64, 128]
    record = val[0]
    assert record["image"].shape == (360, 480, 3)
    original = np.asarray(Image.open(REAL_CAMVID / "valannot" / record["file_name"].decode()))
    np.testing.assert_array_equal(record["segmentation_mask"][..., 0], np.where(original == 11, 255, original))
    names = [Path(line.split()[0]).name for line in (REAL_CAMVID / "val.txt").read_text().splitlines()]
    assert [val[i]["file_name"].decode() for i in (0, 100)] == [names[0], names[100]]
