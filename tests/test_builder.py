"""The street_seg builder, data/build.py and data/source.py: features, metadata, masks, determinism, splits,
errors, and reading the built dataset from a process that has never heard of streetseg_jax."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streetseg_jax.atomic import machine_lock
from streetseg_jax.data import source
from streetseg_jax.data.build import build
from streetseg_jax.data.builder import BuildError, UnknownLabelsError
from streetseg_jax.data.inputs import stem_fraction as _stem_fraction
from streetseg_jax.data.synthetic import png_bytes, write_synthetic
from streetseg_jax.labels.convert import annotation_to_mask
from streetseg_jax.labels.formats.voc import read_voc, write_voc
from streetseg_jax.labels.images import open_rgb
from streetseg_jax.labels.label_map import LabelMap, default_label_map
from streetseg_jax.labels.convert import mask_png

ROOT = Path(__file__).resolve().parents[1]
SIZE = dict(height=96, width=128)
NUM_IMAGES = 10


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("tfds")
    build("synthetic", data_dir, num_images=NUM_IMAGES, **SIZE)
    return data_dir


def records(data_dir: Path, split: str, dataset: str = "street_seg/synthetic") -> list[dict]:
    split_source, _, _ = source.load_split(dataset, split, data_dir)
    return [split_source[i] for i in range(len(split_source))]


# --- synthetic ---------------------------------------------------------------------------------------------------
def test_synthetic_features_metadata_and_splits(synthetic_dir):
    train, label_map, info = source.load_split("street_seg/synthetic", "train", synthetic_dir)
    assert {name: split.num_examples for name, split in info.splits.items()} == {"train": 8, "test": 2}
    assert label_map == default_label_map()
    assert info.metadata["label_map"] == default_label_map().to_dict()
    record = train[0]
    assert record["image"].dtype == np.uint8 and record["image"].shape == (96, 128, 3)
    assert record["segmentation_mask"].dtype == np.uint8 and record["segmentation_mask"].shape == (96, 128, 1)
    assert record["file_name"].decode().startswith("street_")


def test_synthetic_masks_and_images_match_the_source_files(synthetic_dir, tmp_path):
    write_synthetic(tmp_path, num_images=NUM_IMAGES, seed=0, **SIZE)
    label_map = default_label_map()
    stored = records(synthetic_dir, "train") + records(synthetic_dir, "test")
    assert len(stored) == NUM_IMAGES
    for record in stored:
        name = record["file_name"].decode()
        annotation = read_voc(tmp_path / "annotations" / Path(name).with_suffix(".xml"))
        expected = annotation_to_mask(annotation, label_map).mask
        np.testing.assert_array_equal(record["segmentation_mask"][..., 0], expected)
        np.testing.assert_array_equal(record["image"], np.asarray(Image.open(tmp_path / "images" / name)))


def test_synthetic_split_is_the_first_80_percent(synthetic_dir):
    names = sorted(r["file_name"].decode() for r in records(synthetic_dir, "test"))
    assert names == ["street_0009.png", "street_0010.png"]


def test_building_twice_gives_identical_examples(synthetic_dir, tmp_path):
    build("synthetic", tmp_path, num_images=NUM_IMAGES, **SIZE)
    for split in ("train", "test"):
        for first, second in zip(records(synthetic_dir, split), records(tmp_path, split), strict=True):
            assert first["file_name"] == second["file_name"]
            np.testing.assert_array_equal(first["image"], second["image"])
            np.testing.assert_array_equal(first["segmentation_mask"], second["segmentation_mask"])


def test_reuse_is_reported_and_other_options_are_refused(synthetic_dir):
    assert build("synthetic", synthetic_dir, num_images=NUM_IMAGES, **SIZE).reused
    with pytest.raises(BuildError, match="--overwrite"):
        build("synthetic", synthetic_dir, num_images=NUM_IMAGES + 1, **SIZE)


def test_a_synthetic_build_in_another_file_format_is_a_message(synthetic_dir, monkeypatch):
    # tfrecord needs TensorFlow to write
    monkeypatch.setattr("streetseg_jax.data.build._check_file_format", lambda *args: None)
    with pytest.raises(BuildError, match="file format: array_record on disk, tfrecord asked for; pass --overwrite"):
        build("synthetic", synthetic_dir, num_images=NUM_IMAGES, file_format="tfrecord", **SIZE)


def test_a_dataset_not_where_the_run_says_names_the_flags_that_find_it_elsewhere(tmp_path):
    """A data folder moved after training: evaluate offered only to build a new 500-scene dataset there."""
    with pytest.raises(source.DatasetNotFoundError, match=r"(?s)Build it with:\n  python -m streetseg_jax\.data build "
                                                          r"--config synthetic.*--data_dir WHERE \(evaluate, report\), "
                                                          r"--config\.data_dir=WHERE \(main\)"):
        source.load_split("street_seg/synthetic", "train", tmp_path / "moved_away")


def test_a_tfrecord_build_opens_by_name_and_training_says_it_reads_array_record(synthetic_dir, tmp_path):
    """tfds.load of a --file_format tfrecord build failed ("File format is already set to FileFormat.TFRECORD. Got
    FileFormat.ARRAY_RECORD"), and main, evaluate and report on it printed TFDS's NotImplementedError traceback.
    (A tfrecord build's record, made from ours: writing one needs TensorFlow.)"""
    import shutil

    import tensorflow_datasets as tfds

    shutil.copytree(synthetic_dir / "street_seg", tmp_path / "street_seg")
    (info,) = (tmp_path / "street_seg" / "synthetic").glob("*/dataset_info.json")
    info.write_text(info.read_text().replace('"array_record"', '"tfrecord"'))
    assert tfds.builder("street_seg/synthetic", data_dir=tmp_path).info.file_format.value == "tfrecord"
    with pytest.raises(source.DatasetNotFoundError, match=r"is a tfrecord build, which tf\.data reads \(tfds\.load\); "
                                                          r"training, evaluate.*--file_format array_record"):
        source.load_split("street_seg/synthetic", "train", tmp_path)
    assert tfds.builder("street_seg/synthetic", data_dir=tmp_path / "none").info.file_format.value == "array_record"


def test_a_full_disk_or_another_machines_build_is_said_in_a_line(tmp_path, monkeypatch):
    """A full disk while the masks were kept made "16 problem(s) in the annotations" (one per image); while the
    scenes or records were written, a nameless "[Errno 28]" or the record writer's 50-line RuntimeError."""
    import errno

    from streetseg_jax.data.build import _failures_said
    from streetseg_jax.labels import validate

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(validate, "write_bytes", full)
    with pytest.raises(OSError, match=f"^cannot write {re.escape(str(tmp_path))}: No space left on device$"):
        build("synthetic", tmp_path, num_images=4, height=32, width=48, num_workers=1)
    assert not (tmp_path / "street_seg" / "synthetic").exists()
    with pytest.raises(BuildError, match="another build of this dataset into .* finished first"):
        with _failures_said(tmp_path):       # TFDS's, renaming its build into a place another machine's took
            raise FileExistsError("Cannot rename a/incomplete.X_2.0.0. Destination a/2.0.0 already exists.")
    for error in (OSError(errno.ENOSPC, "No space left on device"),
                  RuntimeError('Failed to finalize writing of split "train": write() failed: No space left on device')):
        with pytest.raises(OSError, match=f"^cannot write {re.escape(str(tmp_path))}: No space left on device$"):
            with _failures_said(tmp_path):
                raise error


def test_a_failed_synthetic_overwrite_keeps_the_build_it_was_to_replace(tmp_path, monkeypatch):
    from streetseg_jax.data.builder import StreetSeg

    build("synthetic", tmp_path, num_images=NUM_IMAGES, **SIZE)
    before = [r["file_name"] for r in records(tmp_path, "train")]

    def interrupted(self, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(StreetSeg, "download_and_prepare", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build("synthetic", tmp_path, overwrite=True, num_images=NUM_IMAGES + 2, **SIZE)
    assert [r["file_name"] for r in records(tmp_path, "train")] == before
    assert sorted(p.name for p in (tmp_path / "street_seg" / "synthetic").iterdir()) == ["2.0.0"]


def test_a_killed_rebuild_is_put_back_and_what_killed_builds_left_is_swept(tmp_path):
    """SIGKILL during --overwrite left the dataset in .replaced-*, hidden from every reader, and killed builds left
    TFDS's incomplete.* and our scratch folders (80 MB and more each) for good."""
    build("synthetic", tmp_path, num_images=NUM_IMAGES, **SIZE)
    before = [r["file_name"] for r in records(tmp_path, "train")]
    config_dir = tmp_path / "street_seg" / "synthetic"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = f"@{socket.gethostname()}@{int(dead.stdout)}@"                # a process that has ended, on this machine
    (config_dir / "2.0.0").rename(config_dir / f".replaced-2.0.0{gone}")  # as a kill mid-rebuild leaves it
    leftovers = [config_dir / "incomplete.ABC123_2.0.0", tmp_path / "downloads" / f"street_seg_synthetic_{gone}x1",
                 tmp_path / "downloads" / f"street_seg_masks_{gone}x2", tmp_path / f".street_seg_masks_{gone}x3"]
    alive = f"@{socket.gethostname()}@{os.getpid()}@"                 # a build under way, which takes no lock
    running = [config_dir / "incomplete.XYZ789_2.0.0", tmp_path / "downloads" / f"street_seg_masks_{alive}x4",
               tmp_path / "downloads" / "street_seg_masks_x5"]        # no owner: kept, to be safe
    for folder in leftovers + running:
        folder.mkdir(parents=True)
        (folder / "scene.png").write_bytes(b"left behind")
    hours_ago = time.time() - 7 * 3600
    for path in (leftovers[0], leftovers[0] / "scene.png"):
        os.utime(path, (hours_ago, hours_ago))
    said = []
    result = build("synthetic", tmp_path, num_images=NUM_IMAGES, log=said.append, **SIZE)
    assert result.reused and [r["file_name"] for r in records(tmp_path, "train")] == before
    assert said == [f"put back {config_dir / '2.0.0'}: an interrupted rebuild had moved it aside",
                    f"note: {running[0]} (0 MB) is a build TFDS has not finished: a build killed on the way, or one "
                    "under way on another machine; it is removed once untouched for 6 hours, or remove it yourself "
                    "where no other build writes here"]
    assert not any(folder.exists() for folder in leftovers) and all(folder.exists() for folder in running)


def test_other_projects_opening_it_by_name_get_what_they_ask_for(synthetic_dir, tmp_path, monkeypatch):
    """tfds.builder("street_seg/synthetic/num_images=1000") handed back a build of 10 scenes without a word, and
    data_dir="~/tfds" built the default dataset into a folder named '~' in the current one."""
    import tensorflow_datasets as tfds

    assert len(tfds.data_source("street_seg/synthetic", split="train", data_dir=str(synthetic_dir))) == 8
    asked = tfds.builder(f"street_seg/synthetic/num_images=1000,height={SIZE['height']}", data_dir=str(synthetic_dir))
    with pytest.raises(ValueError, match="was built with num_images=10, not num_images=1000; open it without"):
        asked.as_data_source(split="train")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert Path(tfds.builder("street_seg/synthetic", data_dir="~/tfds").data_dir).is_relative_to(tmp_path / "tfds")
    (tmp_path / "built").symlink_to(synthetic_dir, target_is_directory=True)
    assert len(source.load_split("street_seg/synthetic", "train", "~/built")[0]) == 8     # "not built in ~/built"


def swapped_label_map(path: Path, recolour: bool = False) -> str:
    """The seed's classes with road (id 3) and sky (id 6) swapped; or, recoloured, the seed's own ids."""
    data = default_label_map().to_dict()
    for c in data["classes"]:
        if recolour:
            c["color"] = [255 - v for v in c["color"]]
        elif c["name"] in ("road", "sky"):
            c["id"] = 9 - c["id"]
    path.write_text(json.dumps(data))
    return str(path)


def test_a_label_map_option_that_is_not_the_builds_is_refused(synthetic_dir, tmp_path):
    """label_map= was ignored against a build: the data read as ever while the builder's label map and the mask's
    doc named sky where the masks hold road."""
    import tensorflow_datasets as tfds

    swapped = tfds.builder("street_seg/synthetic", data_dir=str(synthetic_dir),
                           label_map=swapped_label_map(tmp_path / "swapped.json"))
    for read in (lambda: swapped.as_data_source(split="train"), swapped.download_and_prepare):
        with pytest.raises(ValueError, match=r"was built with another label map: ids 0\.\. are background, tree, "
                                             r"landscaping, road, .* there, background, tree, landscaping, sky, .* in "
                                             r".*swapped\.json; open it without label_map"):
            read()
    recoloured = tfds.builder("street_seg/synthetic", data_dir=str(synthetic_dir),       # the same ids and names
                              label_map=swapped_label_map(tmp_path / "recoloured.json", recolour=True))
    assert len(recoloured.as_data_source(split="train")) == 8


def test_a_build_opened_by_name_names_its_own_classes(tmp_path, monkeypatch):
    """Opened by our builder ('~' in data_dir, options in the name), a build of other classes than the seed's said
    the seed's 8 in builder.label_map and the mask feature's doc, where its metadata and features.json said its own."""
    import tensorflow_datasets as tfds

    make_voc_folder(tmp_path / "export", ["a", "b", "c"], subfolders=False)
    (tmp_path / "labels.json").write_text(street_label_map().to_json())
    for config, name in (("from_annotations", "mine"), ("voc_polygons", None)):
        build(config, tmp_path / "tfds", tmp_path / "export", name=name, label_map=str(tmp_path / "labels.json"),
              **({"format": "voc"} if name else {}))
    monkeypatch.setenv("HOME", str(tmp_path))
    for dataset, data_dir in (("street_seg/mine", "~/tfds"), ("street_seg/mine/format=voc", str(tmp_path / "tfds")),
                              ("street_seg/voc_polygons", str(tmp_path / "tfds")),
                              ("street_seg/voc_polygons/test_fraction=0.2", "~/tfds")):
        builder = tfds.builder(dataset, data_dir=data_dir)
        assert builder.label_map == street_label_map(), dataset
        doc = builder.info.features["segmentation_mask"].doc.desc
        assert doc.startswith("class ids 0..2 (void, road, sky); 255 = ignore"), (dataset, doc)
        assert len(builder.as_data_source(split="train")) > 0
    swapped = swapped_label_map(tmp_path / "swapped.json")      # to build, no label map is still the seed's
    build("synthetic", tmp_path / "synthetic", num_images=2, label_map=swapped, **SIZE)
    assert tfds.builder("street_seg/synthetic", data_dir=str(tmp_path / "synthetic")).label_map.names[3] == "sky"
    with pytest.raises(BuildError, match="was built with another label map; pass --overwrite to rebuild it"):
        build("synthetic", tmp_path / "synthetic", num_images=2, **SIZE)


def test_a_read_builds_nothing_beside_another_build(synthetic_dir, tmp_path):
    """download_and_prepare (which tfds.data_source calls) with options other than the build's did nothing, and read
    later; a failed one left empty folders in the data dir."""
    import tensorflow_datasets as tfds

    asked = tfds.builder(f"street_seg/synthetic/num_images={NUM_IMAGES + 1}", data_dir=str(synthetic_dir))
    with pytest.raises(ValueError, match=f"was built with num_images={NUM_IMAGES}, not num_images={NUM_IMAGES + 1}"):
        asked.download_and_prepare()
    tfds.builder("street_seg/synthetic", data_dir=str(synthetic_dir)).download_and_prepare()   # the build: reused
    with pytest.raises(ValueError, match="street_seg/voc_polygons is not built in "):
        tfds.data_source("street_seg/voc_polygons", split="train", data_dir=str(tmp_path / "tfds"))
    assert not (tmp_path / "tfds").exists()


def test_an_unbuilt_dataset_of_a_manual_dir_says_how_to_build_it(tmp_path, capsys):
    """tfds.data_source('street_seg/camvid') printed 'writing street_seg/camvid ...', then TFDS's 'Manual directory
    ... does not exist or is empty' and every config's instructions."""
    import tensorflow_datasets as tfds

    data_dir = tmp_path / "tfds"
    with pytest.raises(ValueError, match=re.escape(
            f"street_seg/camvid is not built in {data_dir}: build it (python -m streetseg_jax.data build --config "
            f"camvid --data_dir {data_dir} --manual_dir SEGNET_CAMVID_FOLDER), or pass its folder as download_config="
            "tfds.download.DownloadConfig(manual_dir=DIR)") + "$"):
        tfds.data_source("street_seg/camvid", split="train", data_dir=str(data_dir))
    assert "writing" not in capsys.readouterr().err and not data_dir.exists()


def test_a_misspelt_option_in_a_name_is_named_with_the_options_there_are(tmp_path):
    """TFDS's TypeError 'DatasetBuilder.__init__() got an unexpected keyword argument 'num_image'' before."""
    import tensorflow_datasets as tfds

    with pytest.raises(ValueError, match=r"num_image: no option of street_seg; did you mean num_images\? \(its "
                                         r"options: num_images, height, width, seed, test_fraction, label_map, "
                                         r"format, unknown\)"):
        tfds.data_source("street_seg/synthetic/num_image=40", split="train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"zzz: no option of street_seg \(its options: num_images, "):
        tfds.builder("street_seg/synthetic/zzz=1", data_dir=str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_the_info_names_no_page_that_does_not_exist(synthetic_dir, tmp_path):
    import tensorflow_datasets as tfds

    assert tfds.builder("street_seg/synthetic", data_dir=str(synthetic_dir)).info.homepage is None
    assert tfds.builder("street_seg/camvid", data_dir=str(tmp_path)).info.homepage is None


def test_reading_an_unbuilt_dataset_says_how_to_build_it_and_a_fresh_build_warns_of_nothing(tmp_path, caplog):
    """builder.as_data_source() on a data dir without the build gave {} (no splits, no word); every fresh build
    logged TFDS's 'Variant folder ... has no dataset_info.json' first."""
    import tensorflow_datasets as tfds

    from streetseg_jax.data.builder import StreetSeg, from_annotations_config
    data_dir = tmp_path / "tfds"
    with pytest.raises(ValueError, match=f"street_seg/synthetic is not built in {data_dir}: call download_and_"
                                         r"prepare\(\) first, or build it \(python -m streetseg_jax.data build "
                                         "--config synthetic"):
        tfds.builder("street_seg/synthetic", data_dir=str(data_dir)).as_data_source()
    with pytest.raises(ValueError, match=f"--config from_annotations --name mine --data_dir {data_dir} --manual_dir "
                                         r"EXPORT_FOLDER --format FORMAT --label_map LABEL_MAP.json\)$"):
        StreetSeg(config=from_annotations_config("mine", format="auto"), data_dir=str(data_dir)).as_data_source()
    caplog.clear()
    build("synthetic", data_dir, num_images=2, height=32, width=48)
    assert not [r.getMessage() for r in caplog.records if "Variant folder" in r.getMessage()]


def test_two_builds_into_one_fresh_data_dir_take_turns(tmp_path):
    """Both built the dataset, and the second failed renaming its copy into place (FileExistsError). The test holds
    the build lock until both builds wait for it, so they meet whatever the machine's load (a loaded CI machine
    once started the second only after the first, of a second, had ended)."""
    pytest.importorskip("fcntl", reason="builds take turns through a POSIX record lock")
    args = ["build", "--config", "synthetic", f"--data_dir={tmp_path}", "--num_images", "4", "--height", "48",
            "--width", "64"]
    with machine_lock("build", tmp_path, when_busy=lambda: None):      # released at its end: the two build in turn
        procs = [subprocess.Popen([sys.executable, "-m", "streetseg_jax.data", *args], cwd=ROOT, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        deadline = threading.Timer(240, lambda: [p.kill() for p in procs])     # a build that never says it waits
        deadline.start()                                                         # fails the test, not hangs it
        heads = [_lines_until(p.stdout, "under way; waiting for it to end") for p in procs]
        deadline.cancel()
    outs = [(head + out, err) for head, (out, err) in zip(heads, (p.communicate(timeout=300) for p in procs))]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("under way; waiting for it to end" in out for out, _ in outs), outs
    assert sum("already built" in out for out, _ in outs) == 1, outs


def _lines_until(stream, text: str) -> str:
    """What a process printed up to and including the first line holding text (all of it, if it ended first)."""
    lines = []
    for line in stream:
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def test_a_build_killed_with_its_workers_running_holds_nothing_up(tmp_path):
    """kill -9 of a build left its forked workers alive for good, holding the build lock: every later build into
    that data dir waited forever."""
    args = [sys.executable, "-m", "streetseg_jax.data", "build", "--config", "synthetic", f"--data_dir={tmp_path}",
            "--num_images", "200", "--height", "240", "--width", "320"]
    proc = subprocess.Popen(args, cwd=ROOT, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for line in proc.stderr:
        if "synthetic scenes" in line:          # the workers are drawing
            break
    time.sleep(1)
    proc.kill()
    proc.wait(timeout=60)
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and "waiting for it to end" not in out.stdout, out.stdout + out.stderr


# --- voc_polygons ------------------------------------------------------------------------------------------------
def street_label_map() -> LabelMap:
    return LabelMap.from_dict({"classes": [
        {"id": 0, "name": "void", "color": [0, 0, 0]},
        {"id": 1, "name": "road", "color": [128, 64, 128], "aliases": ["street"]},
        {"id": 2, "name": "sky", "color": [70, 130, 180]},
    ], "ignore_id": 255, "fill_id": 0})


def make_voc_folder(folder: Path, stems: list[str], subfolders: bool, labels=("sky", "street")) -> None:
    """Tiny images (one JPEG) with a sky polygon over a road polygon."""
    image_dir, xml_dir = (folder / "images", folder / "annotations") if subfolders else (folder, folder)
    image_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, stem in enumerate(stems):
        suffix = ".jpg" if i == 0 else ".png"
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(image_dir / f"{stem}{suffix}")
        horizon = 8.5 + i
        write_voc(xml_dir / f"{stem}.xml", f"{stem}{suffix}", 32, 24, [
            (labels[0], [[(0, 0), (32, 0), (32, horizon), (0, horizon + 2)]]),
            (labels[1], [[(0, 14), (32, 12.3), (32, 24), (0, 24)]]),
        ])


@pytest.mark.parametrize("subfolders", [True, False])
def test_voc_polygons_masks_labels_and_hash_split(tmp_path, subfolders):
    stems = [f"frame_{i:02d}" for i in range(8)]
    make_voc_folder(tmp_path / "export", stems, subfolders)
    (tmp_path / "labels.json").write_text(street_label_map().to_json())
    result = build("voc_polygons", tmp_path / "tfds", tmp_path / "export", test_fraction=0.4,
                          label_map=str(tmp_path / "labels.json"))
    expected_test = {s for s in stems if _stem_fraction(s) < 0.4}
    assert 0 < len(expected_test) < len(stems), "pick stems that land in both splits"
    assert result.splits == {"train": len(stems) - len(expected_test), "test": len(expected_test)}
    _, label_map, info = source.load_split("street_seg/voc_polygons", "test", tmp_path / "tfds")
    assert label_map == street_label_map() and label_map.names == ["void", "road", "sky"]
    stored = {r["file_name"].decode(): r for split in ("train", "test")
              for r in records(tmp_path / "tfds", split, "street_seg/voc_polygons")}
    assert {Path(n).stem for n in records_names(tmp_path / "tfds", "test")} == expected_test
    xml_dir = tmp_path / "export" / ("annotations" if subfolders else "")
    image_dir = tmp_path / "export" / ("images" if subfolders else "")
    for name, record in stored.items():
        expected = annotation_to_mask(read_voc(xml_dir / Path(name).with_suffix(".xml")), label_map).mask
        np.testing.assert_array_equal(record["segmentation_mask"][..., 0], expected)
        np.testing.assert_array_equal(record["image"], np.asarray(Image.open(image_dir / name).convert("RGB")))
    assert set(np.unique(stored["frame_03.png"]["segmentation_mask"])) == {0, 1, 2}


def records_names(data_dir: Path, split: str) -> list[str]:
    return [r["file_name"].decode() for r in records(data_dir, split, "street_seg/voc_polygons")]


def test_unknown_labels_are_named_with_their_files_before_writing(tmp_path):
    make_voc_folder(tmp_path / "export", ["a"], subfolders=False, labels=("unicorn", "road"))
    make_voc_folder(tmp_path / "export2", ["b"], subfolders=False, labels=("sky", "dragon"))
    for path in (tmp_path / "export2").iterdir():
        path.rename(tmp_path / "export" / path.name)
    with pytest.raises(UnknownLabelsError) as caught:
        build("voc_polygons", tmp_path / "tfds", tmp_path / "export")
    message = str(caught.value)
    assert all(part in message for part in ("unicorn", "dragon", "a.xml", "b.xml"))
    assert not source.is_built("street_seg/voc_polygons", tmp_path / "tfds")


def test_image_size_mismatch_is_a_clear_error(tmp_path):
    make_voc_folder(tmp_path / "export", ["a", "b"], subfolders=True)
    Image.new("RGB", (40, 24)).save(tmp_path / "export" / "images" / "b.png")
    with pytest.raises(BuildError, match=r"b.png is 40x24 but b.xml says 32x24"):
        build("voc_polygons", tmp_path / "tfds", tmp_path / "export")


# --- opening -----------------------------------------------------------------------------------------------------
def test_missing_dataset_names_the_build_command(tmp_path):
    with pytest.raises(source.DatasetNotFoundError) as caught:
        source.load_split("street_seg/synthetic", "train", tmp_path)
    assert f"python -m streetseg_jax.data build --config synthetic --data_dir {tmp_path}" in str(caught.value)
    assert not source.is_built("street_seg/synthetic", tmp_path)


def test_unknown_split_lists_the_available_ones(synthetic_dir):
    with pytest.raises(source.UnknownSplitError, match="it has: train, test"):
        source.load_split("street_seg/synthetic", "validation", synthetic_dir)
    split_source, _, _ = source.load_split("street_seg/synthetic", "train[:3]+test", synthetic_dir)
    assert len(split_source) == 5


# --- on disk: raw pixels since 2.0.0; 1.0.0 (PNG) datasets still read ------------------------------------------
def test_images_and_masks_round_trip_exactly_as_raw_pixels(tmp_path):
    """Noise (incompressible) of an odd size, an RGBA PNG and a JPEG: the stored pixels are the decoded file's to the
    bit, and the features are raw uint8 bytes, not PNG."""
    rng = np.random.default_rng(7)
    export, height, width = tmp_path / "export", 23, 37
    export.mkdir()
    written = {}
    for name, mode in (("noise.png", "RGB"), ("alpha.png", "RGBA"), ("photo.jpg", "RGB")):
        written[name] = rng.integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
        Image.fromarray(written[name], mode).save(export / name)
        write_voc(export / f"{Path(name).stem}.xml", name, width, height, [
            ("sky", [[(0, 0), (width, 0), (width, 9.3), (0, 11.7)]]), ("road", [[(3, 14), (30, 12.5), (20, 23)]])])
    build("voc_polygons", tmp_path / "tfds", export, test_fraction=0.0)
    path = source.dataset_dir("street_seg/voc_polygons", tmp_path / "tfds")
    features = json.loads((path / "features.json").read_text())["featuresDict"]["features"]
    for feature, channels in (("image", "3"), ("segmentation_mask", "1")):
        assert features[feature]["pythonClassName"] == "tensorflow_datasets.core.features.tensor_feature.Tensor"
        assert features[feature]["tensor"] == {"dtype": "uint8", "encoding": "bytes",
                                               "shape": {"dimensions": ["-1", "-1", channels]}}
    stored = {r["file_name"].decode(): r for r in records(tmp_path / "tfds", "train", "street_seg/voc_polygons")}
    assert sorted(stored) == sorted(written) and path.name == "2.0.0"
    np.testing.assert_array_equal(stored["noise.png"]["image"], written["noise.png"])
    for name, record in stored.items():
        assert record["image"].dtype == np.uint8 and record["image"].shape == (height, width, 3)
        np.testing.assert_array_equal(record["image"], open_rgb(export / name))
        expected = annotation_to_mask(read_voc(export / f"{Path(name).stem}.xml"), default_label_map()).mask
        assert set(np.unique(expected)) == {0, 3, 6}
        if written[name].shape[-1] == 4:        # fully transparent pixels are no part of the photo: ignored
            expected = np.where(written[name][..., 3] == 0, default_label_map().ignore_id, expected)
        np.testing.assert_array_equal(record["segmentation_mask"], expected[..., None])


def legacy_features(label_map: LabelMap):
    """The features of version 1.0.0: PNG, the mask a LabeledImage carrying the class names."""
    import tensorflow_datasets as tfds
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8, encoding_format="png"),
        "segmentation_mask": tfds.features.LabeledImage(labels=label_map.names, shape=(None, None, 1),
                                                        dtype=np.uint8, encoding_format="png"),
        "file_name": tfds.features.Text(),
    })


def as_png(encode_example):
    """The per-image work of version 1.0.0: PNG bytes (what tfds.features.Image stores without TensorFlow)."""
    def encode_as_png(job):
        key, example = encode_example(job)
        return key, {**example, "image": png_bytes(example["image"]),
                     "segmentation_mask": mask_png(example["segmentation_mask"][..., 0])}
    return encode_as_png


def test_a_version_1_png_dataset_still_reads_and_a_build_writes_version_2_beside_it(tmp_path):
    import tensorflow_datasets as tfds

    from streetseg_jax.data import builder, inputs
    make_voc_folder(tmp_path / "export", ["a", "b", "c"], subfolders=False)
    data_dir = tmp_path / "tfds"
    with pytest.MonkeyPatch.context() as patch:     # the builder as it was at 1.0.0 (one process: nothing pickled)
        patch.setattr(builder.StreetSeg, "VERSION", tfds.core.Version("1.0.0"))
        patch.setattr(builder, "_features", legacy_features)
        patch.setattr(inputs, "encode_example", as_png(inputs.encode_example))
        build("voc_polygons", data_dir, tmp_path / "export", test_fraction=0.0, num_workers=1)
    old_dir = source.dataset_dir("street_seg/voc_polygons", data_dir)
    assert old_dir.name == "1.0.0" and '"png"' in (old_dir / "features.json").read_text()
    old = {r["file_name"].decode(): r for r in records(data_dir, "train", "street_seg/voc_polygons")}
    result = build("voc_polygons", data_dir, tmp_path / "export", test_fraction=0.0)
    assert not result.reused and result.path.name == "2.0.0"        # the 1.0.0 build is not reused
    new = {r["file_name"].decode(): r for r in records(data_dir, "train", "street_seg/voc_polygons")}
    still = {r["file_name"].decode(): r for r in records(data_dir, "train", "street_seg/voc_polygons:1.0.0")}
    assert sorted(old) == sorted(new) == sorted(still) == ["a.jpg", "b.png", "c.png"]
    for name, record in new.items():
        for before in (old[name], still[name]):
            for feature in ("image", "segmentation_mask"):
                assert before[feature].dtype == record[feature].dtype == np.uint8
                np.testing.assert_array_equal(before[feature], record[feature])
    assert build("voc_polygons", data_dir, tmp_path / "export", test_fraction=0.0).reused


def test_a_run_beside_a_version_1_synthetic_build_builds_version_2_with_its_options(tmp_path, capsys):
    """main said a 1.0.0 build of 4 scenes was 'not in' the data dir and built the default 500 scenes at 360x480;
    tfds.data_source (which downloads and prepares first) quietly built those 500 scenes and read them."""
    import tensorflow_datasets as tfds

    from streetseg_jax import main
    from streetseg_jax.data import builder, inputs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builder.StreetSeg, "VERSION", tfds.core.Version("1.0.0"))
        patch.setattr(builder, "_features", legacy_features)
        patch.setattr(inputs, "encode_example", as_png(inputs.encode_example))
        build("synthetic", tmp_path, num_images=4, height=48, width=64, num_workers=1)
    for download in (False, True):
        with pytest.raises(ValueError, match="at version 1.0.0 only, not 2.0.0: open it as street_seg/synthetic:1.0.0"):
            tfds.data_source("street_seg/synthetic", split="train", data_dir=str(tmp_path), download=download)
    assert source.built_versions(tmp_path / "street_seg" / "synthetic") == ["1.0.0"]
    assert len(tfds.data_source("street_seg/synthetic:1.0.0", split="train", data_dir=str(tmp_path))) > 0
    main._build_synthetic("street_seg/synthetic", str(tmp_path))
    assert "street_seg/synthetic 1.0.0 in" in capsys.readouterr().out
    info = source.open_built("street_seg/synthetic:2.0.0", tmp_path).info
    assert sum(split.num_examples for split in info.splits.values()) == 4
    assert (info.metadata["options"]["height"], info.metadata["options"]["width"]) == (48, 64)


# --- without streetseg_jax, without TensorFlow ------------------------------------------------------------------
def readme_snippet(data_dir: Path) -> str:
    """README's "Using the dataset from another project" code, reading `data_dir` for ~/tensorflow_datasets."""
    text = (ROOT / "README.md").read_text().split("## Using the dataset from another project", 1)[1]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    return code.replace("~/tensorflow_datasets", str(data_dir))


CHECKS = textwrap.dedent("""
    import json, sys
    other = tfds.data_source("street_seg/synthetic:2.0.0", split="train", data_dir=sys.argv[1])   # README's "or"
    plain = tfds.data_source("street_seg/synthetic", split="train", data_dir=sys.argv[1])   # TFDS's read-only builder
    print(json.dumps({
        "label_map": label_map, "names": [c["name"] for c in label_map["classes"]], "train": len(train),
        "other": len(other), "plain": len(plain), "image": [example["image"].dtype.name, *example["image"].shape],
        "mask": [example["segmentation_mask"].dtype.name, *example["segmentation_mask"].shape],
        "file_name": example["file_name"].decode(),
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "streetseg_jax")),
    }))
""")


def test_other_projects_read_it_without_streetseg_jax_or_tensorflow(synthetic_dir, tmp_path):
    out = subprocess.run([sys.executable, "-c", readme_snippet(synthetic_dir) + CHECKS, str(synthetic_dir)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["label_map"] == default_label_map().to_dict() and seen["names"] == default_label_map().names
    assert seen["train"] == seen["other"] == seen["plain"] == 8
    assert seen["image"] == ["uint8", 96, 128, 3] and seen["mask"] == ["uint8", 96, 128, 1]
    assert seen["file_name"].startswith("street_") and seen["modules"] == []


def test_a_script_without_a_main_guard_that_imported_jax_builds_by_name_once(tmp_path):
    """Its build's workers were spawned (JAX loaded: no fork), and each ran the whole script again."""
    script = tmp_path / "mine.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import jax
        import tensorflow_datasets as tfds
        import streetseg_jax.data.builder
        print("the script runs", file=sys.stderr)
        print(len(tfds.data_source("street_seg/synthetic/num_images=6,height=40,width=48", split="train",
                                   data_dir={str(tmp_path / "tfds")!r})))
    """))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.split() == ["5"], out.stderr
    assert out.stderr.count("the script runs") == 1


CLI = textwrap.dedent("""
    import runpy, sys
    sys.argv = ["streetseg_jax.data", *sys.argv[1:]]
    try:
        runpy.run_module("streetseg_jax.data", run_name="__main__")
    finally:
        print("tensorflow imported:", "tensorflow" in sys.modules)
""")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_builds_without_tensorflow(tmp_path):
    out = run_cli("build", "--config", "synthetic", f"--data-dir={tmp_path}", "--num-images", "4",
                  "--height", "64", "--width", "80")
    assert out.returncode == 0, out.stderr
    assert "street_seg/synthetic built in" in out.stdout and "train: 3 examples" in out.stdout
    assert "test: 1 examples" in out.stdout and str(tmp_path / "street_seg" / "synthetic") in out.stdout
    assert "tensorflow imported: False" in out.stdout


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    (tmp_path / "empty").mkdir()
    out = run_cli("build", "--config", "voc_polygons", "--data_dir", str(tmp_path), "--manual_dir",
                  str(tmp_path / "empty"))
    assert out.returncode == 2 and "error: voc_polygons reads your images + VOC XML" in out.stderr
    assert "Traceback" not in out.stderr


def test_worker_processes_give_the_same_examples(tmp_path):
    small = dict(num_images=32, height=48, width=64)    # 32: enough for the builder to start worker processes
    build("synthetic", tmp_path / "pool", num_workers=2, **small)
    build("synthetic", tmp_path / "inline", num_workers=1, **small)
    for split in ("train", "test"):
        for first, second in zip(records(tmp_path / "pool", split), records(tmp_path / "inline", split), strict=True):
            assert first["file_name"] == second["file_name"]
            np.testing.assert_array_equal(first["segmentation_mask"], second["segmentation_mask"])
            np.testing.assert_array_equal(first["image"], second["image"])


def test_rasterizer_problems_are_printed_as_warnings(tmp_path, capsys):
    make_voc_folder(tmp_path / "export", ["a", "b"], subfolders=False)
    write_voc(tmp_path / "export" / "b.xml", "b.png", 32, 24, [("road", [[(1, 1), (5, 5)]])])   # two points
    build("voc_polygons", tmp_path / "tfds", tmp_path / "export")
    assert "b.xml" in capsys.readouterr().err.split("warning: ", 1)[1]


# --- voc_polygons goes through the export checks of from_annotations ----------------------------------------------
def test_voc_polygons_records_its_inputs_and_names_what_changed(tmp_path, capsys):
    make_voc_folder(tmp_path / "export", ["a", "b"], subfolders=True)
    build("voc_polygons", tmp_path / "tfds", tmp_path / "export")
    assert "validation report: 2 image(s) of voc" in capsys.readouterr().err
    assert build("voc_polygons", tmp_path / "tfds", tmp_path / "export").reused
    write_voc(tmp_path / "export" / "annotations" / "b.xml", "b.png", 32, 24, [("road", [[(0, 0), (32, 0), (32, 24)]])])
    with pytest.raises(BuildError, match=r"1 file\(s\) modified: annotations/b.xml"):
        build("voc_polygons", tmp_path / "tfds", tmp_path / "export")
    result = build("voc_polygons", tmp_path / "tfds", tmp_path / "export", overwrite=True)
    assert not result.reused and sum(result.splits.values()) == 2


def test_missing_user_dataset_names_the_from_annotations_command(tmp_path):
    with pytest.raises(source.DatasetNotFoundError) as caught:
        source.load_split("street_seg/my_streets", "train", tmp_path)
    assert "--config from_annotations --name my_streets" in str(caught.value)


def test_the_builder_used_directly_reads_checks_and_fingerprints_the_export(tmp_path):
    import tensorflow_datasets as tfds

    from streetseg_jax.data.builder import StreetSeg
    make_voc_folder(tmp_path / "export", ["a", "b", "c"], subfolders=False)
    builder = StreetSeg(config="voc_polygons", data_dir=str(tmp_path / "tfds"), test_fraction=0.0)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "export")))
    info = source.load_split("street_seg/voc_polygons", "train", tmp_path / "tfds")[2]
    assert info.splits["train"].num_examples == 3
    assert sorted(info.metadata["fingerprint"]["files"]) == ["a.jpg", "a.xml", "b.png", "b.xml", "c.png", "c.xml"]


def test_versions_are_ordered_by_number_not_as_text(tmp_path):
    config_dir = tmp_path / "street_seg" / "synthetic"
    for version in ("10.0.0", "2.0.0", "2.1.0", "3.0.0"):
        (config_dir / version).mkdir(parents=True)
        if version != "3.0.0":        # a build cut short: no dataset_info.json
            for name in ("dataset_info.json", "features.json"):
                (config_dir / version / name).write_text("{}")
    assert source.built_versions(config_dir) == ["2.0.0", "2.1.0", "10.0.0"]
    assert source.dataset_dir("street_seg/synthetic", tmp_path) == config_dir / "10.0.0"
