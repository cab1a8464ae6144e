"""Export: the serialised inference function runs in a process that cannot import this package (nor flax), and
gives the masks `predict` gives."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_predict import make_workdir, random_image, save

from streetseg_jax import export, predict
from streetseg_jax.inference import load_model

LOADER = textwrap.dedent("""
    import sys
    sys.modules["streetseg_jax"] = None     # importing the package (or flax) now fails
    sys.modules["flax"] = None
    import json, zipfile
    import jax, numpy as np
    from PIL import Image

    archive_path, out_path, *image_paths = sys.argv[1:]
    with zipfile.ZipFile(archive_path) as archive:
        exported = jax.export.deserialize(archive.read("model.jaxexport"))
        label_map = json.loads(archive.read("label_map.json"))
    results = {"num_classes": len(label_map["classes"])}
    for path in image_paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        out = exported.call(np.stack([image, image]))      # a batch of two
        results[path] = {"classes": np.asarray(out["classes"]).tolist(),
                         "confidence": np.asarray(out["confidence"]).tolist()}
    json.dump(results, open(out_path, "w"))
""")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("export") / "run")


def run_cli(module, *args) -> int:
    try:
        return module.main([str(a) for a in args])
    except SystemExit as e:
        return e.code


def test_exported_function_matches_predict_without_the_package(workdir, tmp_path):
    images = [save(tmp_path / "in" / "odd.png", random_image(45, 67, seed=5)),
              save(tmp_path / "in" / "wide.png", random_image(32, 96, seed=6))]
    out = tmp_path / "out"
    assert run_cli(predict, "--workdir", workdir, "--input", tmp_path / "in", "--output", out,
                   "--save_confidence") == 0
    archive = tmp_path / "model.zip"
    assert run_cli(export, "--workdir", workdir, "--output", archive) == 0
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["README.txt", "info.json", "label_map.json", "model.jaxexport"]
        info = json.loads(z.read("info.json"))
        readme = z.read("README.txt").decode()
    assert info["input"]["shape"] == ["batch", "height", "width", 3] and info["checkpoint"]["step"] == 1
    # A consumer handed the zip alone learns how to load it, and what predict does that it does not.
    assert "zipfile.ZipFile('model.zip')" in readme and "pip install jax flatbuffers" in readme
    assert "exif_transpose" in readme and "train_image_size" in readme
    size = load_model(workdir, "best").image_size      # None for images of several sizes
    assert info["train_image_size"] == (list(size) if size else None)

    results_path = tmp_path / "results.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", LOADER, archive, results_path, *images], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(results_path.read_text())
    assert results["num_classes"] == 8
    for image in images:
        classes, confidence = np.asarray(results[str(image)]["classes"]), results[str(image)]["confidence"]
        want = np.asarray(Image.open(out / f"{image.stem}.png"))
        np.testing.assert_array_equal(classes[0], want)
        np.testing.assert_array_equal(classes[1], want)
        want_confidence = np.asarray(Image.open(out / f"{image.stem}_confidence.png"), np.int32)
        assert np.abs(np.round(np.asarray(confidence[0]) * 255) - want_confidence).max() <= 1


def test_a_model_evaluated_at_another_scale_needs_fixed_shapes(tmp_path, capsys):
    """By default its training images' size (the default of both shipped configs failed without --height)."""
    import jax

    from streetseg_jax.inference import Predictor, load_model

    workdir = make_workdir(tmp_path / "half", eval_scale=0.5)      # a checkpoint without its images' size
    archive = tmp_path / "half.zip"
    assert run_cli(export, "--workdir", workdir, "--output", archive) == 2
    assert "--height and --width" in capsys.readouterr().err
    sized = make_workdir(tmp_path / "sized", image_size=(36, 52), eval_scale=0.5)
    assert run_cli(export, "--workdir", sized, "--output", archive, "--platforms", "cpu") == 0
    assert "exported for 36x52 images, its training images' size" in capsys.readouterr().err
    with zipfile.ZipFile(archive) as z:
        info = json.loads(z.read("info.json"))
    assert info["input"]["shape"] == ["batch", 36, 52, 3] and info["train_image_size"] == [36, 52]
    assert run_cli(export, "--workdir", workdir, "--output", archive, "--height", 40, "--width", 56,
                   "--outputs", "classes,logits", "--platforms", "cpu") == 0
    with zipfile.ZipFile(archive) as z:
        exported = jax.export.deserialize(z.read("model.jaxexport"))
    image = random_image(40, 56, seed=7)
    out = exported.call(image[None])
    assert set(out) == {"classes", "logits"} and out["logits"].shape == (1, 40, 56, 8)
    predictor = Predictor(load_model(workdir))
    np.testing.assert_array_equal(np.asarray(out["classes"][0]), predictor.predict_one(image).mask)
    np.testing.assert_allclose(np.asarray(out["logits"][0]), predictor.logits(image), atol=1e-5)
    with pytest.raises(ValueError, match="Shape mismatch"):
        exported.call(random_image(48, 56)[None])


def test_test_time_augmentation_follows_the_run_unless_told(tmp_path):
    import jax

    from streetseg_jax.inference import Predictor, load_model

    workdir = make_workdir(tmp_path / "flip", eval_flip_tta=True)
    image = random_image(32, 48, seed=8)
    masks = {flip: Predictor(load_model(workdir), flip_tta=flip).predict_one(image).mask for flip in (True, False)}
    assert (masks[True] != masks[False]).any()      # else the test could not tell whether the flip went in
    assert (Predictor(load_model(workdir)).predict_one(image).mask == masks[True]).all()    # from Python too
    for flags, flip in (((), True), (("--no_flip_tta",), False)):
        archive = tmp_path / f"flip{flip}.zip"
        assert run_cli(export, "--workdir", workdir, "--output", archive, "--platforms", "cpu", *flags) == 0
        with zipfile.ZipFile(archive) as z:
            assert json.loads(z.read("info.json"))["flip_tta"] is flip
            exported = jax.export.deserialize(z.read("model.jaxexport"))
        np.testing.assert_array_equal(np.asarray(exported.call(image[None])["classes"][0]), masks[flip])


def test_an_export_names_its_run_reads_for_everyone_and_is_the_same_bytes_twice(workdir, tmp_path, capsys):
    """info.json named no run (predict.json records the work directory and the weights' fingerprint); the entries
    were rw------- for the account that unzips them; each export of one model gave other bytes (the entries'
    times); an --output that was a zip of photos was replaced, and one named model.onnx written, without a word."""
    import shutil
    run = shutil.copytree(workdir, tmp_path / "run")
    dataset = {"name": "street_seg/synthetic", "version": "2.0.0", "fingerprint": "f00d"}
    (run / "config.json").write_text(json.dumps({"provenance": {"git_commit": "abc123", "dataset": dataset}}))
    first = tmp_path / "a.zip"
    exported = []
    for _ in range(2):
        assert run_cli(export, "--workdir", run, "--output", first, "--checkpoint", "1") == 0
        exported.append(first.read_bytes())
    assert exported[0] == exported[1]
    assert "): step 1; input" in capsys.readouterr().out         # not "step 1 checkpoint, step 1"
    with zipfile.ZipFile(first) as z:
        assert {(entry.external_attr >> 16) & 0o777 for entry in z.infolist()} == {0o644}
        source = json.loads(z.read("info.json"))["run"]
    assert source == {"workdir": str(run.resolve()), "weights": load_model(run, 1).weights_fingerprint(),
                      "git_commit": "abc123", "dataset": dataset}
    photos = tmp_path / "photos.zip"
    with zipfile.ZipFile(photos, "w") as z:
        z.writestr("a.jpg", b"not an export")
    before = photos.read_bytes()
    assert run_cli(export, "--workdir", run, "--output", photos) == 2
    assert run_cli(export, "--workdir", run, "--output", tmp_path / "model.onnx") == 2
    err = capsys.readouterr().err
    assert f"--output {photos} exists and is no export of this package" in err
    assert f"the export is a zip archive; name it so, e.g. {tmp_path / 'model.zip'}" in err
    assert photos.read_bytes() == before and not (tmp_path / "model.onnx").exists()
    assert run_cli(export, "--workdir", run, "--output", first) == 0         # an earlier export is replaced


def test_bad_arguments_fail_cleanly(workdir, tmp_path, capsys):
    archive = tmp_path / "x.zip"
    assert run_cli(export, "--workdir", workdir, "--output", archive, "--height", 64) == 2
    assert run_cli(export, "--workdir", workdir, "--output", archive, "--outputs", "classes,colours") == 2
    assert run_cli(export, "--workdir", tmp_path / "none", "--output", archive) == 2
    assert run_cli(export, "--workdir", workdir, "--output", tmp_path) == 2
    assert run_cli(export, "--workdir", workdir, "--output", archive, "--platforms", "cpu,gpu") == 2
    assert run_cli(export, "--workdir", workdir, "--output", archive, "--platforms", "") == 2
    (tmp_path / "file.zip").write_bytes(b"")
    assert run_cli(export, "--workdir", workdir, "--output", tmp_path / "file.zip" / "x.zip") == 2   # before loading
    err = capsys.readouterr().err
    assert "both --height and --width" in err and "--outputs" in err and f"{tmp_path / 'none'} does not exist" in err
    assert "--platforms 'cpu,gpu': name some of cpu, cuda, rocm, tpu" in err and "--platforms '': name some" in err
    assert f"{tmp_path / 'file.zip'} is a file, not a folder" in err
    assert "is a folder" in err
    assert not archive.exists()
