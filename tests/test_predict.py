"""Prediction: loading a work directory, tiled and batched inference, and the predict command's files and errors.

The work directories are written directly through `checkpoint.Checkpoints` from a freshly initialised tiny model
(the same files training writes), so these tests need neither a dataset nor a training run.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_config

from streetseg_jax import predict
from streetseg_jax.labels import images as label_images
from streetseg_jax.labels.label_map import default_label_map


def make_workdir(path: Path, best: bool = True, image_size=None, **config_overrides) -> Path:
    """A work directory holding a latest checkpoint (step 2) and, with `best`, a best one (step 1).

    Overrides may change anything but config.model (the state is made once per session: compiling its
    initialisation is the slow part on a loaded machine)."""
    from streetseg_jax.checkpoint import Checkpoints

    config = tiny_config()
    for key, value in config_overrides.items():
        setattr(config, key, value)
    label_map = default_label_map()
    meta = {"label_map": label_map.to_dict(), "config": config.to_dict()}
    if image_size is not None:      # runs before this session's change did not record it
        meta["image_size"] = list(image_size)
    checkpoints = Checkpoints(path, async_save=False)
    if best:
        checkpoints.save_best(1, fresh_state(), {"iterator": {}}, meta, miou=0.5)
    checkpoints.save(2, fresh_state(), {"iterator": {}}, meta)
    checkpoints.close()
    return path


@functools.cache
def fresh_state():
    from streetseg_jax import sharding, train

    config = tiny_config()
    mesh = sharding.make_mesh(jax.devices()[:1])
    return train.init_state(config, default_label_map().num_classes, train.make_optimizer(config), mesh)[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("predict") / "run")


@pytest.fixture(scope="module")
def trained(workdir):
    from streetseg_jax.inference import load_model
    return load_model(workdir, "best")


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random colours, so the model's outputs vary across the image."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def save(path: Path, array: np.ndarray, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **params)
    return path


def run_predict(*args) -> int:
    try:
        return predict.main([str(a) for a in args])
    except SystemExit as e:
        return e.code


# --- loading ------------------------------------------------------------------------------------------------------
def test_load_model_best_latest_step_and_fallback(tmp_path, workdir, capsys):
    from streetseg_jax.inference import load_model

    assert load_model(workdir, "best").step == 1
    assert load_model(workdir, "latest").step == 2
    assert load_model(workdir, "2").step == 2
    said = []
    no_best = tmp_path / "no_best"
    shutil.copytree(workdir / "checkpoints" / "latest", no_best / "checkpoints" / "latest")
    loaded = load_model(no_best, "best", say=said.append)
    assert loaded.step == 2 and loaded.source == "latest" and "no best checkpoint" in said[0]
    assert loaded.label_map == default_label_map() and loaded.config.model.depth == 2
    with pytest.raises(FileNotFoundError, match="step 7"):
        load_model(workdir, 7)
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        load_model(tmp_path, "best")
    said.clear()      # a run that has not saved yet: one message saying so, for every choice of checkpoint
    (tmp_path / "unsaved" / "checkpoints").mkdir(parents=True)
    for which in ("best", "latest"):
        with pytest.raises(FileNotFoundError, match="holds no checkpoint yet"):
            load_model(tmp_path / "unsaved", which, say=said.append)
    assert said == []


# --- windows and blending -----------------------------------------------------------------------------------------
def test_windows_cover_the_image_and_weights_cross_fade():
    from streetseg_jax.inference import edge_weights, window_origins

    assert window_origins(100, 128, 0.25) == [0]
    for length, tile in ((131, 64), (1500, 96), (1024, 512)):
        origins = window_origins(length, tile, 0.25)
        assert origins[0] == 0 and origins[-1] + tile == length
        assert all(b - a <= tile - 0.25 * tile for a, b in zip(origins, origins[1:]))
        total = np.zeros(length)
        for start, weight in zip(origins, edge_weights(origins, tile)):
            total[start:start + tile] += weight
        np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert (edge_weights([0], 64)[0] == 1).all()


def test_one_window_equals_whole_image_prediction(trained):
    from streetseg_jax.evaluator import predict_logits
    from streetseg_jax.inference import Predictor

    image = random_image(97, 131)
    whole = np.asarray(jax.jit(lambda x: predict_logits(trained.model(), x))(image[None]))[0]
    tiled = Predictor(trained, window=(256, 256)).logits(image)
    assert tiled.shape == (97, 131, trained.label_map.num_classes)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


@pytest.mark.parametrize("size", [(40, 56), (37, 53)])
def test_prediction_at_eval_scale_matches_evaluation(trained, size):
    from streetseg_jax.evaluator import predict_logits
    from streetseg_jax.inference import Predictor, upsample_bilinear

    config = trained.config.copy_and_resolve_references()
    config.eval_scale = 0.5
    half = dataclasses.replace(trained, config=config)
    image = random_image(*size, seed=8)
    want = np.asarray(predict_logits(half.model(), image[None], 0.5))[0]
    np.testing.assert_allclose(Predictor(half).logits(image), want, atol=1e-4)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 19, 27, 5))
    for height, width in ((38, 54), (41, 60), (19, 27)):
        np.testing.assert_allclose(upsample_bilinear(x, height, width),
                                   jax.image.resize(x, (2, height, width, 5), "bilinear"), atol=1e-4)


def test_multi_scale_tta_averages_the_logits_of_every_scale_in_prediction_and_evaluation(trained):
    from streetseg_jax import sharding
    from streetseg_jax.evaluator import Evaluator, predict_logits
    from streetseg_jax.inference import Predictor

    config = trained.config.copy_and_resolve_references()
    config.eval_scale, config.eval_extra_scales, config.eval_batch_size = 0.5, (1.0,), 1
    both = dataclasses.replace(trained, config=config)
    model, image = both.model(), random_image(40, 56, seed=9)[None]
    logits = {s: np.asarray(predict_logits(model, image, s))[0] for s in (0.5, 1.0)}
    mirrored = {s: np.asarray(predict_logits(model, image[:, :, ::-1], s))[0, :, ::-1] for s in (0.5, 1.0)}
    want = (logits[0.5] + logits[1.0]) / 2
    np.testing.assert_allclose(Predictor(both).logits(image[0]), want, atol=1e-4)
    np.testing.assert_allclose(Predictor(both, flip_tta=True).logits(image[0]),
                               sum(logits.values()) / 4 + sum(mirrored.values()) / 4, atol=1e-4)
    # From Python as with --extra_scales (a TypeError before): none, or others than the run's
    np.testing.assert_allclose(Predictor(both, extra_scales=()).logits(image[0]), logits[0.5], atol=1e-4)
    only_half = dataclasses.replace(trained, config=config.copy_and_resolve_references())
    only_half.config.eval_extra_scales = ()
    np.testing.assert_allclose(Predictor(only_half, extra_scales=[1]).logits(image[0]), want, atol=1e-4)
    for bad in ("0.5", 0.5, (0,), ("x",), (50,)):
        with pytest.raises(ValueError, match=r"extra_scales must be numbers in \(0, 8\]"):
            Predictor(both, extra_scales=bad)
    # evaluation predicts what prediction does
    evaluator = Evaluator(both.graphdef, sharding.make_mesh(jax.local_devices()[:1]), both.label_map, config)
    np.testing.assert_array_equal(evaluator.predict(both.params, both.model_state, image)[0], want.argmax(-1))


def test_photos_far_from_the_training_size_are_seen_at_its_scale_and_answered_at_their_own(trained):
    """A 4x larger photo showed the network objects 4x larger than any it learned (a 12-megapixel photo and a
    CamVid model: 8x): it is resized to the training images' area first, its logits resized back to it."""
    from streetseg_jax.inference import Predictor, resize_image, resize_logits

    model = dataclasses.replace(trained, image_size=(48, 64))
    photo = random_image(192, 256, seed=3)
    auto = Predictor(model, window=(256, 256))
    assert auto.input_size(192, 256) == (48, 64) and auto.input_size(60, 80) == (60, 80)   # 1.25x: within 1.5x
    assert auto.input_size(20, 30) == (48, 72)                      # small ones grow: the shorter side is 48
    assert auto.input_size(100, 800) == (48, 384)                   # a panorama: its height, not its pixel count
    assert auto.input_size(1, 3000) == (2, 4554)                    # a strip: to 1.5² x their area (48x144000)
    as_trained = Predictor(model, window=(256, 256), resize="none").logits(resize_image(photo, (48, 64)))
    logits = auto.logits(photo)
    assert logits.shape == (192, 256, model.label_map.num_classes)
    np.testing.assert_allclose(logits, resize_logits(as_trained, 192, 256), atol=1e-4)
    prediction = auto.predict_one(photo)
    assert prediction.mask.shape == (192, 256) and auto.resized == 2 and prediction.resized
    assert not Predictor(model, window=(256, 256), resize="none").predict_one(photo).resized
    assert (prediction.mask == logits.argmax(-1)).mean() > 0.999
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(prediction.confidence, (softmax / softmax.sum(-1, keepdims=True)).max(-1), atol=1e-4)
    same = random_image(60, 80, seed=4)
    np.testing.assert_array_equal(auto.logits(same), Predictor(trained, window=(256, 256)).logits(same))
    small = random_image(20, 30, seed=5)                          # enlarged for the network, answered at 20x30
    small_logits = auto.logits(small)
    assert small_logits.shape == (20, 30, model.label_map.num_classes)
    assert (auto.predict_one(small).mask == small_logits.argmax(-1)).mean() > 0.99
    assert Predictor(trained).input_size(192, 256) == (192, 256)      # an older checkpoint: no size recorded
    assert Predictor(model, resize=0.5).input_size(60, 80) == (30, 40)


def test_logits_shrunk_to_a_small_photo_keep_thin_classes():
    """Two taps per pixel skipped whole rows past 2x: a class on every third row vanished from a 3x smaller mask."""
    from streetseg_jax.inference import classes_at

    logits = np.zeros((60, 80, 2), np.float32)
    logits[..., 0], logits[::3, :, 1] = 1.0, 5.0        # class 1 on one row in three, far more sure there
    mask, confidence = classes_at(logits, 20, 27)
    assert mask.shape == confidence.shape == (20, 27) and (mask == 1).all()
    grown, _ = classes_at(logits, 120, 160, rows=7)       # enlarging, in blocks of rows: two taps, as evaluation
    assert grown.shape == (120, 160) and 0 < grown.mean() < 1


def test_windows_per_call_are_limited_by_the_memory_of_their_logits(trained):
    """Eight 2048x2048 windows (a 12-megapixel photo at eval_scale 0.25) with flip and multi-scale TTA took 14 GB."""
    from streetseg_jax.inference import Predictor

    predictor = Predictor(trained, batch_size=8, flip_tta=True)
    assert predictor._calls_of((2048, 2048)) == 1     # on one device: one each on 8 was 8 times the budget
    assert predictor._calls_of((96, 128)) == 8
    predictor._dispatch(random_image(96, 128)[None]).block_until_ready()
    assert list(predictor._on) == [1]                 # a window alone: no window of padding on another device
    # At eval_scale 0.06 a window was 8534 image pixels: a 48-megapixel photo one window, 24 GB. It is made smaller
    # until its logits fit.
    small_scale = dataclasses.replace(trained, config=trained.config.copy_and_resolve_references())
    small_scale.config.eval_scale = 0.06
    tiny = Predictor(small_scale, flip_tta=True)
    height, width = tiny.tile_for(6000, 8000)
    assert height * width * tiny._pixel_bytes <= 256 * 2**20 < height * width * tiny._pixel_bytes * 1.01 and \
        abs(height / width - 6000 / 8000) < 0.01
    tiny._devices = 8       # the window, and so the masks, do not depend on the machine's cores
    assert tiny.tile_for(6000, 8000) == (height, width)
    assert tiny.tile_for(300, 400) == (300, 400) == Predictor(trained).tile_for(300, 400)


def test_overlays_keep_the_folders_of_nested_file_names(trained, tmp_path):
    """Images of one name in two folders (Train/img0.jpg, Test/img0.jpg: nested keys) get an overlay each; names of
    a dataset built elsewhere that lead out of the folder stay in it (an overlay replaced a file outside the run),
    and a name given twice does not overwrite the first."""
    from streetseg_jax import sharding
    from streetseg_jax.evaluator import Evaluator

    config = trained.config.copy_and_resolve_references()
    config.eval_batch_size = 1
    evaluator = Evaluator(trained.graphdef, sharding.make_mesh(jax.local_devices()[:1]), trained.label_map, config)
    mask = np.zeros((32, 48, 1), np.uint8)
    source = [{"image": random_image(32, 48, seed=i), "segmentation_mask": mask, "file_name": name.encode()}
              for i, name in enumerate(["Train/img0.jpg", "Test/img0.jpg", "plain.png", str(tmp_path / "keep.jpg"),
                                        "../../escaped.jpg", "plain.png"])]
    out = tmp_path / "run" / "overlays"
    evaluator.write_overlays(trained.params, trained.model_state, source, out, 6, "step 2")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == [
        "run/overlays/Test/img0.png", "run/overlays/Train/img0.png", "run/overlays/escaped.png",
        "run/overlays/keep.png", "run/overlays/plain.png", "run/overlays/plain_5.png"]


def test_large_image_runs_in_tiles_and_window_interiors_equal_the_whole_image(trained):
    from streetseg_jax.evaluator import predict_logits
    from streetseg_jax.inference import Blender, Predictor

    image = random_image(1100, 1500, seed=1)
    predictor = Predictor(trained, window=(192, 192), batch_size=8)
    prediction = predictor.predict_one(image)
    assert prediction.mask.shape == prediction.confidence.shape == (1100, 1500)
    assert prediction.mask.max() < trained.label_map.num_classes
    assert 0 < prediction.confidence.min() and prediction.confidence.max() <= 1
    blender = Blender(1100, 1500, (192, 192), 0.25, 8)
    assert len(blender.windows()) == 88 and blender.band_shape == (192, 1500, 8)   # one band, not the image
    tiled = predictor.logits(image)
    whole = np.asarray(predict_logits(trained.model(), image[None]))[0]
    np.testing.assert_array_equal(tiled.argmax(-1), prediction.mask)
    # The tiny U-Net sees about 27 pixels each way: farther than that from a window's inner edges, a window's
    # logits are the whole image's, and blending must keep them so.
    far = ~near_inner_edges(1100, 192, 40)[:, None] & ~near_inner_edges(1500, 192, 40)[None, :]
    assert far.sum() > 20_000
    np.testing.assert_allclose(tiled[far], whole[far], atol=1e-4)
    assert np.abs(tiled - whole).mean() < 0.2 * np.abs(whole).mean()


def near_inner_edges(length: int, tile: int, margin: int) -> np.ndarray:
    from streetseg_jax.inference import window_origins

    near = np.zeros(length, bool)
    for start in window_origins(length, tile, 0.25):
        for edge in (start, start + tile):
            if 0 < edge < length:
                near[max(0, edge - margin):edge + margin] = True
    return near


def test_batches_across_images_match_one_by_one(trained):
    from streetseg_jax.inference import Predictor

    images = {f"im{i}": random_image(40 + 7 * (i % 2), 64, seed=i) for i in range(5)}
    predictor = Predictor(trained, window=(256, 256), batch_size=4)
    together = dict(predictor.predict(images.items()))
    assert sorted(together) == sorted(images)
    for key, image in images.items():
        alone = predictor.predict_one(image)
        np.testing.assert_array_equal(together[key].mask, alone.mask)
        np.testing.assert_allclose(together[key].confidence, alone.confidence, atol=1e-5)


def test_an_input_that_fails_comes_after_the_answers_to_the_images_before_it(trained):
    """5 good images and then an error in the input gave no answer at all: they waited in a partial batch."""
    from streetseg_jax.inference import Predictor

    def photos():
        for i in range(5):
            yield f"im{i}", random_image(40, 64, seed=i)
        raise OSError("the network drive went away")

    predictor, answered = Predictor(trained, window=(256, 256), batch_size=8), []
    with pytest.raises(OSError, match="network drive"):
        for key, _ in predictor.predict(photos()):
            answered.append(key)
    assert sorted(answered) == [f"im{i}" for i in range(5)]
    with pytest.raises(TypeError, match=r"takes \(key, image\) pairs, got ndarray \(40, 64, 3\); for one image, "
                                        r"predict_one\(image\)"):
        list(predictor.predict([random_image(40, 64)]))      # "too many values to unpack"


def test_images_of_many_sizes_do_not_all_wait_for_the_end(trained):
    from streetseg_jax.inference import MAX_PARTIAL_BATCHES, Predictor

    read = []

    def images():
        for i in range(MAX_PARTIAL_BATCHES + 2):     # each its own window shape, none fills a batch
            read.append(i)
            yield i, random_image(20 + i, 30, seed=i)

    returned_after = {}
    for key, prediction in Predictor(trained, window=(256, 256), batch_size=8).predict(images()):
        returned_after[key] = len(read)
        assert prediction.mask.shape == (20 + key, 30)
    assert sorted(returned_after) == list(range(MAX_PARTIAL_BATCHES + 2))
    assert returned_after[0] < len(read)


def test_flip_tta_averages_the_mirror(trained):
    from streetseg_jax.inference import Predictor

    image = random_image(48, 72, seed=3)
    plain = Predictor(trained, window=(256, 256))
    mirrored = plain.logits(np.ascontiguousarray(image[:, ::-1]))[:, ::-1]
    tta = Predictor(trained, window=(256, 256), flip_tta=True).logits(image)
    np.testing.assert_allclose(tta, (plain.logits(image) + mirrored) / 2, atol=1e-5)
    assert not np.allclose(tta, plain.logits(image), atol=1e-3)


def test_predictors_of_one_model_share_what_they_compiled(workdir, trained):
    """Each Predictor once compiled the network anew (3-7 s on a CPU), a notebook cell run again included."""
    from streetseg_jax.inference import Predictor, load_model

    first = Predictor(trained, batch_size=4)._on_devices(1)[0]
    assert Predictor(trained, window=64, overlap=0.25)._on_devices(1)[0] is first
    assert Predictor(load_model(workdir, "best"))._on_devices(1)[0] is first
    assert Predictor(trained, flip_tta=not Predictor(trained).flip_tta)._on_devices(1)[0] is not first


def test_overlays_blend_half_and_half_and_enlarge_thumbnails():
    from streetseg_jax.visualize import EDGE_COLOR, class_edges, overlay

    label_map = default_label_map()
    image, mask = random_image(30, 300), np.full((30, 300), 3, np.uint8)
    mask[:, 150:] = 6
    wide = np.asarray(overlay(image, mask, label_map))
    want = (image.astype(int) + label_map.palette()[mask]) / 2
    edges = class_edges(mask)                       # the outline between the classes: column 150
    assert edges[:, 150].all() and edges.sum() == 30 and (wide[:30][edges] == EDGE_COLOR).all()
    assert wide.shape[1] == 300 and np.abs(wide[:30][~edges].astype(int) - want[~edges]).max() <= 1
    tiny = np.asarray(overlay(image[:16, :16], mask[:16, :16], label_map))     # a 16x16 photo: 15x, 240 px wide
    assert tiny.shape[1] == 240 and (tiny[:240:15, :240:15] == tiny[14:240:15, 14:240:15]).all()
    np.testing.assert_allclose(tiny[:240:15, :240:15], want[:16, :16], atol=1)
    tall = overlay(np.zeros((1800, 60, 3), np.uint8), np.full((1800, 60), 3, np.uint8), label_map)
    assert tall.width == 240 and tall.height < 1900         # a 60x1800 strip was enlarged 4x, to 240x7200


def test_overlays_show_ignored_pixels_in_the_legends_grey():
    """A cut-out photo's transparent pixels (black, the ignore id) blended to a darker grey than the legend's."""
    from streetseg_jax.visualize import IGNORE_GREY, overlay

    label_map = default_label_map()
    mask = np.full((300, 300), 3, np.uint8)
    mask[:100] = label_map.ignore_id
    out = np.asarray(overlay(np.zeros((300, 300, 3), np.uint8), mask, label_map))
    assert (out[:100] == IGNORE_GREY).all() and (out[100:300] != IGNORE_GREY).any(axis=-1).all()


@pytest.mark.parametrize("image, said", [
    (np.zeros((0, 10, 3), np.uint8), "uint8 (0, 10, 3): an empty image"),
    (np.zeros((20, 30), np.uint8), "a grey image: np.repeat(image[..., None], 3, axis=-1), or streetseg_jax.labels."
                                   "images.to_rgb(PIL.Image.fromarray(image))"),
    (np.zeros((20, 30, 1), np.uint8), "a grey image: np.repeat(image, 3, axis=-1)"),
    (np.zeros((20, 30, 4), np.uint8), "an RGBA image: streetseg_jax.labels.images.to_rgb"),
    (np.zeros((3, 20, 30), np.uint8), "channels first (C, H, W): image.transpose(1, 2, 0)"),
    (np.full((20, 30, 3), 0.5), "float64 values 0.5..0.5: scale them to 0..255 and make them uint8"),
    (np.full((20, 30, 3), 4000, np.uint16), "uint16 values 4000..4000: scale them to 0..255"),
    (np.ones((20, 30, 3), bool), "a bool array: image.astype(np.uint8) * 255"),
    (np.zeros(5, np.uint8), "uint8 (5,): streetseg_jax.labels.images.open_photo(path) reads a photo"),
    # PIL.Image.fromarray takes neither: their values first, then the shape (a TypeError when followed before)
    (np.zeros((20, 30, 4), np.float32), "float32 values 0..0: scale them to 0..255 and make them uint8, e.g. (image "
                                        "* 255).round().astype(np.uint8) for floats 0..1, (image >> 8).astype(np.uint8)"
                                        " for 16-bit ones; then, an RGBA image: "),
    (np.zeros((20, 30), np.int64), "int64 values 0..0: scale them to 0..255 and make them uint8"),
])
def test_images_of_the_wrong_kind_are_told_what_to_do_by_case(image, said):
    """Every one of them was told that open_photo(path) reads a photo."""
    from streetseg_jax.visualize import overlay

    with pytest.raises(ValueError, match=re.escape(said)):
        overlay(image, np.zeros(image.shape[:2], np.uint8), default_label_map())


def test_overlays_refuse_masks_of_no_class():
    """A mask of 9s with 8 classes came back as the photo untinted, with an empty legend; 300 was an IndexError."""
    from streetseg_jax.visualize import overlay

    label_map, image = default_label_map(), random_image(20, 30)
    stray = label_map.num_classes + 1
    for bad, said in ((np.full((20, 30), stray, np.uint8), f"values {stray} in the mask are no class id"),
                      (np.full((20, 30), 300), "values 300 in the mask are no class id"),
                      (np.full((20, 30), -1), "values -1 in the mask are no class id"),
                      (np.full((20, 30), 0.5), "the mask must hold class ids, whole numbers, got float64")):
        with pytest.raises(ValueError, match=said):
            overlay(image, bad, label_map)
    assert overlay(image, np.ones((20, 30), bool), label_map).size == overlay(image, np.ones((20, 30), np.uint8),
                                                                                 label_map).size


def test_library_calls_with_the_wrong_things_say_what_to_pass(trained):
    """From a notebook: what a user passes by mistake is named with what to pass instead (a path for the model, a
    string for flip_tta, an empty or grey image, a dataset's (H, W, 1) mask, a dataset's label map as a dict)."""
    from streetseg_jax.inference import Predictor
    from streetseg_jax.visualize import comparison, overlay

    with pytest.raises(TypeError, match=r"TrainedModel \(inference.load_model\(workdir\)\), got str"):
        Predictor("runs/default")
    with pytest.raises(TypeError, match="flip_tta must be True, False or None"):
        Predictor(trained, flip_tta="no")
    predictor = Predictor(trained, window=64)
    assert predictor.window == (64, 64)
    for bad in (dict(window=(512,)), dict(window=(1, 2, 3)), dict(window=math.inf), dict(batch_size=2.5),
                dict(batch_size="8"), dict(resize=True), dict(resize=math.inf), dict(overlap="0.2")):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):        # IndexError, TypeError or
            Predictor(trained, **bad)                                               # taken before
    assert Predictor(trained, resize=np.float32(2), batch_size=np.int64(4)).resize == 2     # refused before
    for bad in (np.zeros((0, 10, 3), np.uint8), np.zeros((20, 30), np.uint8), np.zeros((20, 30, 3), np.float32)):
        with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\) RGB image, got .*: (an empty|a grey|float)"):
            predictor.predict_one(bad)
    label_map, image = default_label_map(), random_image(20, 30)
    mask = np.full((20, 30, 1), 3, np.uint8)
    np.testing.assert_array_equal(np.asarray(overlay(image, mask, label_map)),
                                  np.asarray(overlay(image, mask[..., 0], label_map)))
    with pytest.raises(ValueError, match=r"the mask is \(20, 29\), the image \(20, 30\)"):
        overlay(image, mask[:, :29], label_map)
    with pytest.raises(TypeError, match=r"streetseg_jax\.labels\.label_map\.LabelMap\.from_dict"):
        overlay(image, mask, label_map.to_dict())
    from streetseg_jax.labels.images import open_photo
    with pytest.raises(TypeError, match="open_photo reads a file .*, not a PIL image"):     # no attribute 'read'
        open_photo(Image.fromarray(image))
    # comparison takes what overlay takes (a dataset's mask, a PIL image): numpy's concatenate errors before
    np.testing.assert_array_equal(np.asarray(comparison(Image.fromarray(image), mask, mask[..., 0], label_map, "x")),
                                  np.asarray(comparison(image, mask[..., 0], mask[..., 0], label_map, "x")))
    with pytest.raises(ValueError, match=r"the mask is \(20, 29\), the image \(20, 30\)"):
        comparison(image, mask, mask[:, :29], label_map, "x")


# --- the command --------------------------------------------------------------------------------------------------
def test_outputs_at_input_resolution_for_odd_sizes_and_exif(workdir, tmp_path):
    inputs = tmp_path / "in"
    save(inputs / "odd.jpg", random_image(37, 53))
    save(inputs / "tall.png", random_image(61, 29, seed=2))
    exif = Image.Exif()
    exif[0x0112] = 6                        # stored 40 high x 70 wide; shown rotated: 70 high x 40 wide
    save(inputs / "rotated.jpg", random_image(40, 70, seed=4), exif=exif)
    out = tmp_path / "out"
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--save-confidence") == 0
    palette = default_label_map().palette()
    for name, (height, width) in {"odd": (37, 53), "tall": (61, 29), "rotated": (70, 40)}.items():
        mask = Image.open(out / f"{name}.png")
        assert mask.mode == "P" and mask.size == (width, height)
        assert np.asarray(mask).max() < 8
        np.testing.assert_array_equal(np.asarray(mask.getpalette()[:24]).reshape(8, 3), palette[:8])
        overlay = Image.open(out / f"{name}_overlay.jpg")
        # The legend below; a narrow image is enlarged by a whole factor, so that the class names stay whole.
        assert overlay.format == "JPEG" and overlay.width == width * -(-240 // width) and overlay.height > height
        confidence = Image.open(out / f"{name}_confidence.png")
        assert confidence.mode == "L" and confidence.size == (width, height)


def test_folders_keep_their_structure_and_outputs_inside_are_skipped(workdir, tmp_path, capsys):
    inputs = tmp_path / "photos"
    for rel in ("a.jpg", "street/b.JPG", "street/night/c.png", "d.webp", "e.tif"):
        save(inputs / rel, random_image(32, 48))
    # Not photos: a text file, a macOS ._ companion and .DS_Store, an editor's hidden copy of a photo.
    (inputs / "notes.txt").write_text("not an image, not picked up from a folder")
    (inputs / "._a.jpg").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (inputs / ".DS_Store").write_bytes(b"Bud1")
    save(inputs / ".ipynb_checkpoints" / "a-checkpoint.png", random_image(32, 48))
    save(tmp_path / "elsewhere" / "f.jpg", random_image(32, 48))
    (inputs / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)   # was skipped silently
    save(inputs / "street" / "night" / "c_mask.png", random_image(32, 48))      # c's label (Roboflow's): not a photo
    out = inputs / "predicted"
    for _ in range(2):                      # the second run must not read the first run's outputs
        assert run_predict("--workdir", workdir, "--input", inputs, "--output", out) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "a_overlay.jpg", "d.png", "d_overlay.jpg", "e.png", "e_overlay.jpg", "linked/f.png",
                       "linked/f_overlay.jpg", "predict.json", "street/b.png", "street/b_overlay.jpg",
                       "street/night/c.png", "street/night/c_overlay.jpg"]
    err = capsys.readouterr().err
    assert f"note: {inputs}: 1 file(s) that are not images left out (1 .txt)" in err
    assert f"note: {inputs}: 1 label mask(s) beside their photos left out (c_mask.png)" in err


def test_a_link_to_a_photo_that_is_gone_is_a_failure_that_says_so(workdir, tmp_path, capsys):
    inputs = tmp_path / "photos"
    save(inputs / "a.jpg", random_image(32, 48))
    (inputs / "b.jpg").symlink_to(tmp_path / "unmounted" / "b.jpg")        # was left out silently
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "1 input(s) failed" in err
    assert f"{inputs / 'b.jpg'}: a link to {tmp_path / 'unmounted' / 'b.jpg'}, which does not exist" in err
    assert (tmp_path / "out" / "a.png").exists()


def test_globs_and_duplicate_output_names(workdir, tmp_path, capsys, monkeypatch):
    save(tmp_path / "one" / "x.jpg", random_image(32, 32))
    save(tmp_path / "two" / "x.png", random_image(32, 32))
    out = tmp_path / "out"
    code = run_predict("--workdir", workdir, "--input", tmp_path / "one" / "x.jpg", tmp_path / "two" / "*.png",
                       "--output", out)
    assert code == 2 and "written by two inputs" in capsys.readouterr().err
    assert not out.exists()
    assert run_predict("--workdir", workdir, "--input", tmp_path / "t*" / "*.png", "--output", out) == 0
    assert (out / "x.png").exists()
    assert run_predict("--workdir", workdir, "--input", tmp_path / "nothing*.jpg", "--output", out) == 2
    assert "no glob match" in capsys.readouterr().err
    save(tmp_path / "cases" / "B.JPG", random_image(32, 32))         # one output file on macOS and Windows,
    save(tmp_path / "cases" / "b.jpg", random_image(32, 32))         # two on this disk: written
    assert run_predict("--workdir", workdir, "--input", tmp_path / "cases", "--output", tmp_path / "o2") == 0
    assert (tmp_path / "o2" / "B.png").exists() and (tmp_path / "o2" / "b.png").exists()
    monkeypatch.setattr(label_images, "case_insensitive", lambda folder: True)      # as a macOS disk answers
    assert run_predict("--workdir", workdir, "--input", tmp_path / "cases", "--output", tmp_path / "o3") == 2
    assert "B.png and b.png: " in capsys.readouterr().err and not (tmp_path / "o3").exists()
    monkeypatch.undo()
    assert not label_images.case_insensitive(tmp_path / "new" / "folder") and not list(tmp_path.glob(".case-probe-*"))


def test_the_command_resizes_photos_far_from_the_training_size_and_says_so(workdir, tmp_path, capsys):
    sized = make_workdir(tmp_path / "sized", image_size=(24, 32))
    inputs = tmp_path / "in"
    save(inputs / "big.jpg", random_image(96, 128))
    save(inputs / "near.jpg", random_image(30, 40, seed=1))
    from streetseg_jax.inference import load_model
    assert load_model(sized).image_size == (24, 32)
    assert run_predict("--workdir", sized, "--input", inputs, "--output", tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert "1 photo(s) were resized for the network so that their shorter side is the training images' (24 px): " \
        "big; their masks" in out, out
    with Image.open(tmp_path / "a" / "big.png") as mask:
        assert mask.size == (128, 96)
    assert run_predict("--workdir", sized, "--input", inputs, "--output", tmp_path / "b", "--resize", "none") == 0
    assert "resized" not in capsys.readouterr().out
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", tmp_path / "c") == 0
    assert "does not record the size of its training images" in capsys.readouterr().err
    assert run_predict("--workdir", sized, "--input", inputs, "--output", tmp_path / "d", "--resize", "0") == 2
    assert "resize must be auto, none or a factor from 0.05 to 4" in capsys.readouterr().err
    assert run_predict("--workdir", sized, "--input", inputs, "--output", tmp_path / "d", "--resize", "inf") == 2


def test_ctrl_c_keeps_the_images_written_and_skip_existing_goes_on_from_there(workdir, tmp_path, monkeypatch,
                                                                           capsys):
    """Ctrl-C printed a 59-line traceback, and a second run predicted everything again."""
    from streetseg_jax import inference

    inputs, out = tmp_path / "in", tmp_path / "out"
    for i in range(6):
        save(inputs / f"p{i}.jpg", random_image(24, 32, seed=i))
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")      # read first, listed when stopped
    predict_all_of = inference.Predictor.predict

    def interrupted_after_three(self, items, why=None):
        for n, pair in enumerate(predict_all_of(self, items)):
            if n == 3:
                raise KeyboardInterrupt(*([why] if why else []))
            yield pair
    monkeypatch.setattr(inference.Predictor, "predict", functools.partialmethod(interrupted_after_three,
                                                                                 why="SIGTERM"))
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", tmp_path / "o", "--batch_size", "1") == 143
    assert "stopped by SIGTERM: 3 of 7 image(s) written, each whole" in capsys.readouterr().err    # as main says
    monkeypatch.setattr(inference.Predictor, "predict", interrupted_after_three)
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--batch_size", "1") == 130
    err = capsys.readouterr().err
    assert "stopped by Ctrl-C: 3 of 7 image(s) written, each whole" in err and "Traceback" not in err
    assert "1 input(s) failed and were skipped" in err and "broken.jpg" in err
    first = {path.name: path.stat().st_mtime_ns for path in out.iterdir() if path.name != predict.SETTINGS_FILE}
    assert len(first) == 6 and all(name.endswith((".png", "_overlay.jpg")) for name in first)  # no temporary files
    monkeypatch.undo()
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--skip_existing",
                       "--export", "coco") == 1                      # broken.jpg still fails
    assert "3 of 7 image(s) already predicted" in capsys.readouterr().err
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in first.items())
    assert len(list(out.glob("p?.png"))) == 6
    exported = json.loads((out / "coco" / "annotations.json").read_text())
    assert len(exported["images"]) == 6          # the skipped images' masks are read back for the export


def test_skip_existing_redoes_a_mask_of_another_photo_of_the_same_name(workdir, tmp_path, capsys):
    """day2/IMG_0001.jpg predicted into the OUT of day1/IMG_0001.jpg, its time kept older by a copy, was skipped:
    OUT kept day1's mask."""
    out = tmp_path / "out"
    save(tmp_path / "day1" / "IMG_0001.jpg", random_image(24, 32, seed=1))
    save(tmp_path / "day2" / "IMG_0001.jpg", random_image(24, 32, seed=2))
    os.utime(tmp_path / "day2" / "IMG_0001.jpg", ns=(0, 0))
    assert run_predict("--workdir", workdir, "--input", tmp_path / "day1", "--output", out) == 0
    with Image.open(out / "IMG_0001.png") as mask:
        assert mask.text[predict.SOURCE_KEY].startswith(f"{(tmp_path / 'day1' / 'IMG_0001.jpg').resolve()} ")
    capsys.readouterr()
    assert run_predict("--workdir", workdir, "--input", tmp_path / "day2", "--output", out, "--skip_existing") == 0
    assert "already predicted" not in capsys.readouterr().err
    with Image.open(out / "IMG_0001.png") as mask:
        assert mask.text[predict.SOURCE_KEY].startswith(f"{(tmp_path / 'day2' / 'IMG_0001.jpg').resolve()} ")
    # A mask of a version that did not mark its photo is predicted again, and said so (it was done without a word).
    with Image.open(out / "IMG_0001.png") as mask:
        mask.load()
        Image.fromarray(np.asarray(mask)).save(out / "IMG_0001.png")        # as before: no text chunk
    assert run_predict("--workdir", workdir, "--input", tmp_path / "day2", "--output", out, "--skip_existing") == 0
    assert "note: 1 mask(s) in" in capsys.readouterr().err


def test_skip_existing_redoes_what_another_model_or_other_settings_made(workdir, tmp_path, capsys):
    """--skip_existing kept masks of whichever checkpoint and options had made them, mixing two models in one
    folder without a word."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        save(inputs / f"p{i}.jpg", random_image(24, 32, seed=i))

    def mtimes():
        return {path.name: path.stat().st_mtime_ns for path in out.glob("p[0-9]*")}

    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out) == 0
    recorded = json.loads((out / predict.SETTINGS_FILE).read_text())
    assert recorded["step"] > 0 and len(recorded["weights"]) == 16 and recorded["resize"] == "auto"
    first = mtimes()
    capsys.readouterr()
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--skip_existing") == 0
    said = capsys.readouterr()
    assert "3 of 3 image(s) already predicted" in said.err and mtimes() == first
    assert f"nothing left to predict into {out}" in said.out and "model:" not in said.err    # no empty progress bar

    # Other settings: every image again, saying why; then the new settings are the folder's.
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--skip_existing",
                       "--resize", "2") == 0
    err = capsys.readouterr().err
    assert "the files of 3 image(s)" in err and "resize auto -> 2.0" in err and "they are predicted again" in err
    second = mtimes()
    assert all(second[name] > first[name] for name in first)
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--skip_existing",
                       "--resize", "2") == 0
    assert "3 of 3 image(s) already predicted" in capsys.readouterr().err and mtimes() == second

    # The same weights under another name (a copy of the run): the record names it, the files stay.
    (out / predict.SETTINGS_FILE).write_text(json.dumps({**json.loads((out / predict.SETTINGS_FILE).read_text()),
                                                         "workdir": "/old/copy", "checkpoint": "step 3"}))
    os.utime(out / predict.SETTINGS_FILE, ns=(0, 0))        # recorded before every file in the folder
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--skip_existing",
                       "--resize", "2") == 0
    assert "3 of 3 image(s) already predicted" in capsys.readouterr().err and mtimes() == second
    assert json.loads((out / predict.SETTINGS_FILE).read_text())["workdir"] == str(Path(workdir).resolve())
    assert (out / predict.SETTINGS_FILE).stat().st_mtime_ns == 0

    # Another model (weights with another fingerprint), and a folder whose record is missing.
    (out / predict.SETTINGS_FILE).write_text(json.dumps({**recorded, "resize": 2.0, "weights": "0" * 16}))
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--skip_existing",
                       "--resize", "2") == 0
    err = capsys.readouterr().err
    assert f"(weights {'0' * 16}) -> step {recorded['step']}" in err and "already predicted" not in err
    (out / predict.SETTINGS_FILE).unlink()
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--skip_existing",
                       "--resize", "2") == 0
    assert "does not record: they are predicted again" in capsys.readouterr().err


def test_a_mask_predicted_again_loses_the_confidence_map_of_an_earlier_run(workdir, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    save(inputs / "p.jpg", random_image(24, 32))
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--save_confidence") == 0
    assert (out / "p_confidence.png").exists()
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--resize", "2") == 0
    assert (out / "p.png").exists() and not (out / "p_confidence.png").exists()
    save(inputs / "p_confidence.png", random_image(24, 32))        # a photo of that name: its mask was deleted
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--export", "labelme") == 0
    assert (out / "p.png").exists() and (out / "p_confidence.png").exists()
    assert (out / "labelme" / "p_confidence.json").exists()


def test_a_full_disk_stops_the_run_at_once_saying_what_is_written(workdir, tmp_path, monkeypatch, capsys):
    """Each image after the disk filled up was listed as a failure of its own (39 lines for 39 images)."""
    import errno

    inputs, out = tmp_path / "in", tmp_path / "out"
    for i in range(6):
        save(inputs / f"p{i}.jpg", random_image(24, 32, seed=i))
    write, calls = predict.write_outputs, []

    def disk_full_after_two(item, *args):
        calls.append(item)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, f"cannot write {out / item.name}.png: No space left on device")
        write(item, *args)
    monkeypatch.setattr(predict, "write_outputs", disk_full_after_two)
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--batch_size", "1") == 2
    err = capsys.readouterr().err
    assert "No space left on device: 2 of 6 image(s) written, each whole; the same command with --skip_existing " \
           "predicts the rest once there is room" in err, err
    assert "failed and were skipped" not in err and len(list(out.glob("p?.png"))) == 2
    from streetseg_jax.labels import writers                  # the disk fills up while the polygons are written

    def full(path, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(writers, "write_labelme", full)
    monkeypatch.setattr(predict, "write_outputs", write)
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--skip_existing", "--export",
                       "labelme") == 2
    assert "No space left on device: every image's masks and overlays are written, the polygons not all: the same " \
           "command with --skip_existing writes them once there is room" in capsys.readouterr().err


def test_transparent_pixels_get_no_class(workdir, tmp_path):
    """A cut-out photo's transparent half was composited on black and labelled tree and road."""
    rgba = np.dstack([random_image(24, 32), np.full((24, 32), 255, np.uint8)])
    rgba[:, :16, 3] = 0
    save(tmp_path / "in" / "cut.png", rgba)
    out = tmp_path / "out"
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--save_confidence") == 0
    with Image.open(out / "cut.png") as mask, Image.open(out / "cut_confidence.png") as confidence:
        mask, confidence = np.asarray(mask), np.asarray(confidence)
    assert (mask[:, :16] == default_label_map().ignore_id).all() and (confidence[:, :16] == 0).all()
    assert (mask[:, 16:] != default_label_map().ignore_id).all() and (confidence[:, 16:] > 0).all()


def test_the_readmes_python_gives_what_predict_writes(tmp_path, monkeypatch, capsys):
    """README's "From Python" code, run as written on a run that evaluated with flip TTA, a cut-out photo turned
    by its EXIF: the mask it paints is the one predict writes, and it scores it."""
    readme = (ROOT / "README.md").read_text().split("## From Python", 1)[1]
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    run = make_workdir(tmp_path / "runs" / "default", eval_flip_tta=True)
    rgba = np.dstack([random_image(24, 32, seed=5), np.full((24, 32), 255, np.uint8)])
    rgba[:, :10, 3] = 0
    exif = Image.Exif()
    exif[0x0112] = 6                        # shown turned: 32 high, 24 wide
    save(tmp_path / "photo.png", rgba, exif=exif)
    truth = np.full((32, 24), 3, np.uint8)
    save(tmp_path / "photo_mask.png", truth)
    assert run_predict("--workdir", run, "--input", tmp_path / "photo.png", "--output", tmp_path / "out") == 0
    with Image.open(tmp_path / "out" / "photo.png") as written:
        written = np.asarray(written)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    namespace = {}
    exec(code.replace('"photo.jpg"', '"photo.png"'), namespace)
    np.testing.assert_array_equal(namespace["mask"], written)
    assert written.shape == (32, 24) and (written == default_label_map().ignore_id).any()
    scored = written != default_label_map().ignore_id
    counts = np.bincount(truth[scored].astype(int) * 8 + written[scored], minlength=64).reshape(8, 8)
    assert float(capsys.readouterr().out) == pytest.approx(
        namespace["metrics"].metrics_from_confusion(counts, default_label_map().names)["miou"])
    assert (tmp_path / "overlay.png").is_file()


def test_unreadable_inputs_are_listed_and_the_rest_written(workdir, tmp_path, capsys):
    inputs = tmp_path / "in"
    save(inputs / "good.jpg", random_image(30, 40))
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (inputs / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    assert run_predict("--workdir", workdir, "--input", inputs, "--output", out, "--batch_size", "2") == 1
    err = capsys.readouterr().err
    assert "2 input(s) failed" in err and "broken.jpg" in err and "Traceback" not in err
    assert "empty.png: empty file (0 bytes), not an image" in err
    assert (out / "good.png").exists() and not (out / "broken.png").exists()


def test_a_damaged_checkpoint_is_named_in_one_line(workdir, tmp_path, capsys):
    damaged = shutil.copytree(workdir, tmp_path / "run")
    state = damaged / "checkpoints" / "best" / "1" / "state"
    for path in [p for p in state.rglob("*") if p.is_file()]:
        path.unlink()
    save(tmp_path / "a.jpg", random_image(16, 16))
    assert run_predict("--workdir", damaged, "--input", tmp_path / "a.jpg", "--output", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "the checkpoint of step 1 (best) cannot be read: damaged or incomplete?" in err, err
    assert len(err.strip().splitlines()) == 1
    from streetseg_jax import evaluate
    with pytest.raises(SystemExit):                 # evaluate and report: a traceback
        evaluate.main(["--workdir", str(damaged)])
    assert "cannot be read: damaged or incomplete?" in capsys.readouterr().err
    cut = shutil.copytree(workdir, tmp_path / "cut")      # the arrays' files cut short: tensorstore's bare Exception
    for path in [p for p in (cut / "checkpoints" / "best" / "1" / "state").rglob("*") if p.is_file() and
                 p.parent.name == "d"]:
        os.truncate(path, 10)
    assert run_predict("--workdir", cut, "--input", tmp_path / "a.jpg", "--output", tmp_path / "o2") == 2
    assert "the checkpoint of step 1 (best) cannot be read: damaged or incomplete?" in capsys.readouterr().err


def test_a_damaged_checkpoint_loaded_from_python_says_one_error_not_hundreds(workdir, tmp_path):
    """From a notebook, orbax's reads cut short printed 150 to 450 "Event loop is closed" tracebacks, after the
    ValueError too; the commands' quiet_libraries hid them."""
    damaged = shutil.copytree(workdir, tmp_path / "run")
    shutil.rmtree(damaged / "checkpoints" / "latest" / "2" / "state" / "d")
    script = (f"import time\nfrom streetseg_jax import inference\ntry:\n    inference.load_model({str(damaged)!r}, "
              "'latest')\nexcept ValueError as e:\n    print(e)\ntime.sleep(1)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "the checkpoint of step 2 (latest) cannot be read" in done.stdout, done.stderr
    assert "Event loop is closed" not in done.stderr and done.returncode == 0, done.stderr
    from streetseg_jax.inference import load_model
    hook = sys.unraisablehook
    load_model(workdir, "latest")
    assert sys.unraisablehook is hook           # a notebook's hook as it was, where nothing failed


def test_load_model_errors_fit_python_and_point_at_the_work_directory(workdir, tmp_path):
    """The cause was cut at 200 characters in the middle of a path, the way out was a flag ('--checkpoint latest'),
    and a checkpoint's own folder was asked whether it is a training work directory."""
    from streetseg_jax.inference import load_model

    damaged = shutil.copytree(workdir, tmp_path / ("a_long_folder_name_" * 6) / "run")
    shutil.rmtree(damaged / "checkpoints" / "best" / "1" / "state" / "d")
    with pytest.raises(ValueError, match=r"another checkpoint \('best', 'latest' or a step\) may be whole$") as e:
        load_model(damaged)
    assert f"{damaged / 'checkpoints' / 'best' / '1' / 'state'}/\"" in str(e.value)      # the path whole
    for inside in (workdir / "checkpoints" / "best" / "1", workdir / "checkpoints"):
        with pytest.raises(FileNotFoundError, match=f"pass the run's work directory {re.escape(str(workdir))} "):
            load_model(inside)
    runs = tmp_path / "checkpoints" / "run1"            # a folder of runs named checkpoints: no run's own
    runs.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no checkpoints/ folder; is it a training work directory"):
        load_model(runs)


def test_a_stop_while_a_checkpoint_is_read_is_a_stop_and_a_damaged_ones_reason_is_plain():
    """A SIGTERM while export read the checkpoint, which orbax's reads ended with another error, was said as a
    damaged checkpoint (exit 2, not 143); a file cut short ended its reason with 'See full TensorStore details:
    <bound method pybind11_...>'."""
    import signal

    from streetseg_jax import cli
    from streetseg_jax.inference import _damaged

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with _damaged(Path("run"), 4, "best"):
            try:
                cli._interrupt(signal.SIGTERM, None)
            except KeyboardInterrupt:
                raise RuntimeError("Event loop is closed") from None     # as orbax's cancelled reads end
    with pytest.raises(ValueError, match=r"\(DATA_LOSS: cut short \[source locations='x'\]\); another") as e:
        with _damaged(Path("run"), 4, "best"):
            raise Exception("DATA_LOSS: cut short [source locations='x'] See full TensorStore details: <bound method "
                            "pybind11_detail_function_record.spec of TensorStore({)")
    assert "pybind11" not in str(e.value)


def test_missing_workdir_and_bad_flags_fail_cleanly(tmp_path, capsys):
    save(tmp_path / "a.jpg", random_image(16, 16))
    assert run_predict("--workdir", tmp_path / "nope", "--input", tmp_path / "a.jpg", "--output", tmp_path) == 2
    assert f"{tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert run_predict("--workdir", tmp_path, "--input", tmp_path / "a.jpg", "--output", tmp_path / "o") == 2
    assert "no checkpoints" in capsys.readouterr().err
    out = tmp_path / "out"
    assert run_predict("--workdir", tmp_path, "--input", tmp_path, "--output", out, "--window", "3") == 2
    for flag, value, message in (("--overlap", "0.5", "overlap must be at least 0 and below 0.5"),
                                 ("--overlap", "a", "overlap must be a number"),
                                 ("--tolerance", "-1", "tolerance must be 0 or more pixels"),
                                 ("--min_area", "nan", "min_area must be 0 or more pixels")):
        assert run_predict("--workdir", tmp_path, "--input", tmp_path, "--output", out, flag, value) == 2
        assert message in capsys.readouterr().err


def test_inputs_are_never_overwritten_and_the_output_must_be_a_folder(workdir, tmp_path, capsys):
    photo = save(tmp_path / "photos" / "street.png", random_image(24, 32))
    before = photo.read_bytes()
    assert run_predict("--workdir", workdir, "--input", photo, "--output", photo.parent) == 2
    assert "street.png is an input: its prediction would overwrite it" in capsys.readouterr().err
    assert run_predict("--workdir", workdir, "--input", photo.parent, "--output", photo.parent) == 2
    assert "is the output folder" in capsys.readouterr().err
    assert photo.read_bytes() == before and sorted(photo.parent.iterdir()) == [photo]
    assert run_predict("--workdir", workdir, "--input", photo.parent, "--output", tmp_path) == 0   # OUT above
    assert (tmp_path / "street.png").exists() and photo.read_bytes() == before
    assert run_predict("--workdir", workdir, "--input", photo, "--output", photo) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err


def test_a_labellers_export_or_hand_mask_in_the_output_is_refused_and_predicts_own_files_are_not(workdir, tmp_path,
                                                                                                   capsys):
    """predict --output a labeller's LabelMe export wrote its files beside the hand-labelled ones (labels and data
    build then read only predict's export there), and a hand-made mask of a photo's name was written over."""
    photo = save(tmp_path / "in" / "a.jpg", random_image(24, 32))
    export = tmp_path / "export"
    save(export / "b.jpg", random_image(24, 32, 2))
    (export / "b.json").write_text("{}")
    before = sorted(export.iterdir())
    assert run_predict("--workdir", workdir, "--input", photo, "--output", export, "--export", "labelme") == 2
    assert (f"--output {export} holds 2 file(s) that predict did not write, photos, masks or annotation files (a "
            "labelling tool's export?): b.jpg, b.json; ") in capsys.readouterr().err
    assert sorted(export.iterdir()) == before
    hand = save(tmp_path / "masks" / "a.png", np.zeros((24, 32), np.uint8))
    assert run_predict("--workdir", workdir, "--input", photo, "--output", hand.parent) == 2
    assert "holds 1 file(s) that predict did not write" in capsys.readouterr().err
    assert np.asarray(Image.open(hand)).max() == 0 and sorted(hand.parent.iterdir()) == [hand]
    # Its own files from an earlier run (an older version's unmarked mask too), an export with a correction,
    # notes and hidden files are no labeller's: predicting again goes on.
    out = tmp_path / "out"
    save(tmp_path / "in" / "sub" / "c.png", random_image(24, 32, 3))
    command = ["--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", "labelme",
               "--save_confidence"]
    assert run_predict(*command) == 0
    (out / "labelme" / "a.json").write_text((out / "labelme" / "a.json").read_text().replace('"label"', '"label" ', 1))
    with Image.open(out / "sub" / "c.png") as mask:
        Image.fromarray(np.asarray(mask)).save(out / "sub" / "c.png")       # as before masks named their photo
    (out / "notes.txt").write_text("checked a")
    (out / ".DS_Store").write_bytes(b"Bud1")
    assert run_predict(*command) == 0
    save(out / "sub" / "d.png", random_image(24, 32, 4))        # a photo where predict writes c's files: refused
    assert run_predict(*command) == 2 and "holds 1 file(s)" in capsys.readouterr().err
    (out / "sub" / "d.png").unlink()        # ... but not an input's: the photos it predicts are no labeller's files
    assert run_predict("--workdir", workdir, "--input", save(out / "d.jpg", random_image(24, 32, 4)), "--output",
                       out) == 0
    # ... unless exported: labels and data build would take it for a labeller's file beside predict's export
    assert run_predict("--workdir", workdir, "--input", out / "d.jpg", "--output", out, "--export", "labelme") == 2
    assert f"--input photos lie in --output {out}: d.jpg; with --export" in capsys.readouterr().err
    older = tmp_path / "older"         # an OUT written before predict.json and masks that name their photo
    older.mkdir()
    for name in ("a.png", "a_overlay.jpg"):
        shutil.copy(out / name, older / name)
    with Image.open(older / "a.png") as mask:
        Image.fromarray(np.asarray(mask)).save(older / "a.png")
    assert run_predict("--workdir", workdir, "--input", photo, "--output", older) == 0


def test_export_flag_hands_the_masks_to_the_writers(workdir, tmp_path, monkeypatch, capsys):
    """... all but a 1x1 photo's, which `labels check` refuses on the way back (too small for a dataset)."""
    from streetseg_jax.labels import writers

    calls = []
    monkeypatch.setattr(writers, "export_predictions", lambda masks, info, label_map, fmt, out_dir, **kw:
                        calls.append((dict(masks), info, label_map, fmt, Path(out_dir), kw)))
    save(tmp_path / "in" / "sub" / "a.jpg", random_image(24, 40))
    save(tmp_path / "in" / "dot.png", random_image(1, 1))
    out = tmp_path / "out"
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", "labelme") == 0
    (masks, info, label_map, fmt, out_dir, kwargs), = calls
    assert list(masks) == ["sub/a"] and masks["sub/a"].shape == (24, 40) and masks["sub/a"].dtype == np.uint8
    assert info["sub/a"]["path"].endswith("a.jpg") and fmt == "labelme" and out_dir == out / "labelme"
    assert list(kwargs) == ["on_written"] and (out / "dot.png").is_file()     # the defaults: no tolerance given
    assert "1 image(s) smaller than 2x2 pixels, which no dataset holds, left out of --export: dot" in \
        capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--tolerance", "--min_area"])
def test_polygon_flags_without_export_are_refused(flag, workdir, tmp_path, capsys):
    save(tmp_path / "in" / "a.jpg", random_image(24, 40))
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", tmp_path / "out", flag, "1") == 2
    assert f"{flag} shapes the polygons of --export; give --export" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_min_area_chooses_which_specks_get_shapes_and_zero_gives_every_pixel_back(workdir, tmp_path):
    """polygonize's doc advised min_area 16-64 for a noisy model's specks, but predict could not pass it, nor 0
    for an exact round trip (--tolerance 0 alone still painted over regions under 4 pixels)."""
    from streetseg_jax.labels.__main__ import main as labels_main
    from streetseg_jax.labels.convert import read_mask_png

    save(tmp_path / "in" / "a.jpg", random_image(48, 64, 3))
    shapes = {}
    for min_area in ("0", "64"):
        out = tmp_path / f"out{min_area}"
        assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", "labelme",
                           "--tolerance", "0", "--min_area", min_area) == 0
        shapes[min_area] = len(json.loads((out / "labelme" / "a.json").read_text())["shapes"])
    labels_main(["to-masks", "--input", str(tmp_path / "out0"), "--output", str(tmp_path / "back")])
    np.testing.assert_array_equal(read_mask_png(tmp_path / "back" / "a.png"),
                                  read_mask_png(tmp_path / "out0" / "a.png"))
    assert shapes["64"] < shapes["0"]


def test_export_flag_writes_an_annotation_file(workdir, tmp_path):
    save(tmp_path / "in" / "a.jpg", random_image(48, 64))
    out = tmp_path / "out"
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", "coco") == 0
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == ["a.jpg"]
    # The run's classes go with the polygons: a CamVid model's 'pole' came back as an unknown class.
    from streetseg_jax.inference import load_model
    assert (out / "coco" / "label_map.json").read_text() == load_model(workdir, "best").label_map.to_json()


def test_labels_check_and_data_build_read_the_export_in_predicts_output(workdir, tmp_path, capsys):
    """`labels check --format auto --input OUT` could not tell the format of predict's OUT holding OUT/coco, and
    without --format it read OUT as VOC: "no voc annotations found"."""
    from streetseg_jax.data.__main__ import check_flags, make_parser as data_parser
    from streetseg_jax.labels.__main__ import main as labels_main
    save(tmp_path / "in" / "a.jpg", random_image(48, 64))
    out = tmp_path / "out"
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", "coco") == 0
    capsys.readouterr()
    for fmt in ([], ["--format", "auto"], ["--format", "coco"]):
        labels_main(["check", "--input", str(out), *fmt])
        captured = capsys.readouterr()
        assert f"note: {out} is predict's output: reading the coco export in {out / 'coco'}" in captured.err
        assert f"1 image(s) of coco from {out / 'coco'}: 0 error(s)" in captured.out
    with pytest.raises(SystemExit):
        labels_main(["check", "--input", str(out), "--format", "labelme"])
    assert (f"its polygons are in {out / 'coco'}; it holds no labelme export; give --input {out / 'coco'} "
            "--format coco") in capsys.readouterr().err
    args = data_parser().parse_args(["build", "--config", "from_annotations", "--name", "x", "--manual_dir", str(out)])
    check_flags(args)
    assert (args.manual_dir, args.format) == (str(out / "coco"), "coco")
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", "labelme") == 0
    with pytest.raises(SystemExit):
        labels_main(["check", "--input", str(out)])
    assert f"its polygons are in {out / 'coco'} and {out / 'labelme'}; give --input" in capsys.readouterr().err


def test_a_labellers_files_beside_predicts_export_are_named_not_left_out(workdir, tmp_path, capsys):
    """A labeller's export that predict (before it refused) wrote into was read as predict's output: labels and
    data build read predict's uncorrected polygons alone, leaving out the hand-labelled files, --format or not."""
    from streetseg_jax.data.__main__ import check_flags, make_parser as data_parser
    from streetseg_jax.labels.__main__ import main as labels_main
    save(tmp_path / "in" / "a.jpg", random_image(48, 64))
    out = tmp_path / "out"
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", "labelme") == 0
    save(out / "b.jpg", random_image(48, 64, 2))
    (out / "b.json").write_text("{}")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        labels_main(["check", "--input", str(out), "--format", "labelme"])
    assert (f"error: {out} is predict's output, its polygons in {out / 'labelme'}, but its top level also holds 2 "
            "file(s) that predict did not write (an export of their own?): b.jpg, b.json; give --input "
            f"{out / 'labelme'} --format labelme for predict's polygons, or move predict's files out of {out} "
            "(exported.json, predict.json, labelme/, its masks and overlays) to read the others") in \
        capsys.readouterr().err
    args = data_parser().parse_args(["build", "--config", "from_annotations", "--name", "x", "--manual_dir", str(out),
                                     "--format", "labelme"])
    with pytest.raises(SystemExit):
        check_flags(args)
    assert f"give --manual_dir {out / 'labelme'} --format labelme" in capsys.readouterr().err


def test_reading_predicts_export_says_which_files_are_still_unreviewed(workdir, tmp_path, capsys):
    """A dataset built from predict's output learnt its uncorrected predictions without a word."""
    from streetseg_jax.labels.__main__ import main as labels_main
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        save(tmp_path / "in" / f"{name}.jpg", random_image(24, 32, seed))
    out = tmp_path / "out"
    assert run_predict(*export_again(workdir, tmp_path, "labelme")) == 0
    corrected = json.loads((out / "labelme" / "a.json").read_text())
    (out / "labelme" / "a.json").write_text(json.dumps({**corrected, "shapes": corrected["shapes"][:1]}))
    capsys.readouterr()
    labels_main(["check", "--input", str(out)])
    assert (f"note: 2 of 3 annotation file(s) in {out / 'labelme'} are as predict exported them, unreviewed: b.json, "
            "c.json\n") in capsys.readouterr().err


def test_an_export_older_than_the_masks_is_said_and_kept(workdir, tmp_path, capsys):
    """Predicting again into the folder without --export left the polygons of the earlier masks beside the new
    ones without a word (people correct those polygons in place: they are not removed)."""
    save(tmp_path / "in" / "a.jpg", random_image(48, 64))
    out = tmp_path / "out"
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", "coco") == 0
    assert "polygons of an earlier run" not in capsys.readouterr().err
    exported = (out / "coco" / "annotations.json").read_bytes()
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out) == 0
    assert (f"note: {out / 'coco'} holds the polygons of an earlier run's masks, not of the masks just written "
            "(--export coco writes them again, but for files changed since it wrote them; the folder is left as it "
            "is)") in capsys.readouterr().err
    assert (out / "coco" / "annotations.json").read_bytes() == exported
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--skip_existing") == 0
    assert "polygons of an earlier run" not in capsys.readouterr().err    # nothing written: it still matches


def export_again(workdir, tmp_path, fmt) -> list:
    """predict's arguments for TMP/in into TMP/out with --export fmt, to run again and again."""
    return ["--workdir", workdir, "--input", tmp_path / "in", "--output", tmp_path / "out", "--skip_existing",
            "--export", fmt]


def test_an_annotation_corrected_since_the_export_is_never_written_over(workdir, tmp_path, capsys):
    """Predicting a new photo into the folder again (--skip_existing --export) wrote every annotation file again
    from the masks: the corrections made in LabelMe were lost without a word."""
    for name, seed in (("a", 1), ("b", 2)):
        save(tmp_path / "in" / f"{name}.jpg", random_image(24, 32, seed))
    out, command = tmp_path / "out", export_again(workdir, tmp_path, "labelme")
    assert run_predict(*command) == 0
    corrected = json.loads((out / "labelme" / "a.json").read_text())
    corrected["shapes"] = corrected["shapes"][:1]
    (out / "labelme" / "a.json").write_text(json.dumps(corrected))
    b_before = (out / "labelme" / "b.json").read_bytes()
    save(tmp_path / "in" / "c.jpg", random_image(24, 32, 3))
    capsys.readouterr()
    assert run_predict(*command) == 0
    out_text, err = capsys.readouterr()
    assert json.loads((out / "labelme" / "a.json").read_text()) == corrected
    assert (out / "labelme" / "b.json").read_bytes() == b_before and (out / "labelme" / "c.json").is_file()
    assert f"1 annotation file(s) in {out / 'labelme'} changed since --export wrote them" in err and "a.json" in err
    assert "polygons for 2 image(s) in labelme format" in out_text
    (out / "labelme" / "a.json").unlink()           # removed: written again from the mask
    assert run_predict(*command) == 0 and json.loads((out / "labelme" / "a.json").read_text()) != corrected
    assert "not as --export wrote" not in capsys.readouterr().err


def test_an_export_stopped_before_it_recorded_its_files_writes_them_again(workdir, tmp_path, monkeypatch, capsys):
    """Files an export wrote but had not recorded yet (stopped by Ctrl-C) were taken as corrected, and never
    written again."""
    from streetseg_jax import predict_export

    save(tmp_path / "in" / "a.jpg", random_image(24, 32, 1))
    command = export_again(workdir, tmp_path, "labelme")
    remember, calls = predict_export._remember, []

    def stopped(*args, forget=True):
        calls.append(args)
        if len(calls) == 2:         # the files are written, their hashes not yet recorded
            raise KeyboardInterrupt
        remember(*args, forget=forget)
    monkeypatch.setattr(predict_export._Recorder, "flush", lambda self: None)      # records nothing on the way
    monkeypatch.setattr(predict_export, "_remember", stopped)
    assert run_predict(*command) == 130 and (tmp_path / "out" / "labelme" / "a.json").is_file()
    monkeypatch.undo()
    capsys.readouterr()
    assert run_predict(*command) == 0
    out, err = capsys.readouterr()
    assert "not as --export wrote" not in err and "polygons for 1 image(s)" in out


def test_a_file_an_export_stopped_later_had_written_and_a_labeller_corrected_is_kept(workdir, tmp_path, monkeypatch,
                                                                                       capsys):
    """An export killed after writing some files recorded them as being written, its own whatever their bytes: a
    correction made to one of them afterwards was written over by the next export without a word."""
    from streetseg_jax import predict_export

    for name, seed in (("a", 1), ("b", 2)):
        save(tmp_path / "in" / f"{name}.jpg", random_image(24, 32, seed))
    command = export_again(workdir, tmp_path, "labelme")
    remember = predict_export._remember

    def killed_at_the_end(*args, forget=True):
        if forget and args[2] and all(digest is not None for digest in args[2].values()):   # the final record
            raise KeyboardInterrupt
        remember(*args, forget=forget)
    monkeypatch.setattr(predict_export._Recorder.__init__, "__defaults__", (0.0,))    # records each file at once
    monkeypatch.setattr(predict_export, "_remember", killed_at_the_end)
    assert run_predict(*command) == 130
    monkeypatch.undo()
    corrected = tmp_path / "out" / "labelme" / "a.json"
    corrected.write_text(corrected.read_text().replace('"label": "', '"label": "corrected_', 1))
    capsys.readouterr()
    assert run_predict(*command) == 0
    assert '"label": "corrected_' in corrected.read_text()
    assert "changed since --export wrote them (corrected?), kept as they are" in capsys.readouterr().err


def test_an_export_with_no_record_and_a_label_map_a_labeller_changed_are_kept(workdir, tmp_path, capsys):
    """A label_map.json with a class a labeller added was replaced by the model's (labels check then refused the
    class); files no record says an export wrote (an export by an earlier version) are kept and said so."""
    save(tmp_path / "in" / "a.jpg", random_image(24, 32, 1))
    out, command = tmp_path / "out", export_again(workdir, tmp_path, "labelme")
    assert run_predict(*command) == 0
    label_map = json.loads((out / "labelme" / "label_map.json").read_text())
    label_map["classes"].append({"id": len(label_map["classes"]), "name": "person", "color": [200, 0, 0]})
    (out / "labelme" / "label_map.json").write_text(json.dumps(label_map))
    (out / "exported.json").unlink()        # as an export before the record was kept
    save(tmp_path / "in" / "b.jpg", random_image(24, 32, 2))
    capsys.readouterr()
    assert run_predict(*command) == 0
    err = capsys.readouterr().err
    assert json.loads((out / "labelme" / "label_map.json").read_text()) == label_map
    assert f"{out / 'labelme' / 'label_map.json'} is not as --export wrote it" in err
    assert "1 annotation file(s) in" in err and "with no record that --export wrote them" in err
    assert (out / "labelme" / "b.json").is_file()


def test_a_corrected_coco_file_is_kept_whole(workdir, tmp_path, capsys):
    save(tmp_path / "in" / "a.jpg", random_image(24, 32))
    out, command = tmp_path / "out", export_again(workdir, tmp_path, "coco")
    assert run_predict(*command) == 0
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    coco["annotations"] = coco["annotations"][:1]
    (out / "coco" / "annotations.json").write_text(json.dumps(coco))
    save(tmp_path / "in" / "b.jpg", random_image(24, 32, 2))
    assert run_predict(*command) == 0
    assert json.loads((out / "coco" / "annotations.json").read_text()) == coco
    assert "annotations.json" in capsys.readouterr().err and not (out / "coco" / "images" / "b.jpg").exists()


@pytest.mark.parametrize("fmt", ["coco", "cvat"])
def test_photos_predicted_into_the_folder_later_join_the_earlier_ones_in_the_export(fmt, workdir, tmp_path, capsys):
    """COCO's and CVAT's one annotation file held the last command's photos alone: the earlier photos' copies
    stayed beside it without annotations, and a dataset built from the folder lost them."""
    from streetseg_jax.labels import formats

    for name, seed in (("a", 1), ("b", 2)):
        photo = save(tmp_path / name / f"{name}.jpg", random_image(24, 32, seed))
        assert run_predict("--workdir", workdir, "--input", photo, "--output", tmp_path / "out", "--export",
                           fmt) == 0
    from streetseg_jax.inference import load_model
    annotations = formats.read(fmt, tmp_path / "out" / fmt, load_model(workdir, "best").label_map)
    assert sorted(Path(a.file_name).name for a in annotations) == ["a.jpg", "b.jpg"]
    # a's mask now of another photo (predicted without --export): its copy no longer matches it, and it is named
    save(tmp_path / "a" / "a.jpg", random_image(40, 56, 3))
    assert run_predict("--workdir", workdir, "--input", tmp_path / "a" / "a.jpg", "--output", tmp_path / "out") == 0
    capsys.readouterr()
    assert run_predict("--workdir", workdir, "--input", tmp_path / "b" / "b.jpg", "--output", tmp_path / "out",
                       "--export", fmt) == 0
    assert "1 photo(s) the earlier export" in capsys.readouterr().err
    annotations = formats.read(fmt, tmp_path / "out" / fmt, load_model(workdir, "best").label_map)
    assert [Path(a.file_name).name for a in annotations] == ["b.jpg"]


def test_a_photo_replaced_under_its_name_is_exported_again(workdir, tmp_path, capsys):
    """The export's copy of the earlier photo stopped the command after all the predicting, with a traceback,
    the export half written, and so again on every run."""
    photo = save(tmp_path / "in" / "a.png", random_image(24, 32, 1))
    command = ["--workdir", workdir, "--input", photo, "--output", tmp_path / "out", "--skip_existing", "--export",
               "labelme"]
    assert run_predict(*command) == 0
    save(photo, random_image(40, 56, 2))
    assert run_predict(*command) == 0
    written = json.loads((tmp_path / "out" / "labelme" / "a.json").read_text())
    assert (written["imageHeight"], written["imageWidth"]) == (40, 56)
    assert (tmp_path / "out" / "labelme" / "a.png").read_bytes() == photo.read_bytes()
    photo.unlink()                  # now a JPEG of that name: the export's PNG copy goes (LabelMe lists every image)
    save(photo.with_suffix(".jpg"), random_image(40, 56, 3))
    command[command.index(photo)] = photo.with_suffix(".jpg")
    assert run_predict(*command) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "labelme").iterdir()) == ["a.jpg", "a.json", "label_map.json"]


def test_a_file_the_export_did_not_write_at_an_image_copys_place_is_refused_before_predicting(workdir, tmp_path,
                                                                                          capsys):
    photo = save(tmp_path / "in" / "a.png", random_image(24, 32, 1))
    other = save(tmp_path / "out" / "labelme" / "a.png", random_image(24, 32, 2))
    assert run_predict("--workdir", workdir, "--input", photo, "--output", tmp_path / "out", "--export",
                       "labelme") == 2
    err = capsys.readouterr().err
    assert f"{other} is not the image {photo}, nor a copy --export made" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "a.png").exists()


def test_exports_hold_turned_photos_upright_like_their_annotations(workdir, tmp_path):
    """A photo stored 64 wide x 48 high and shown turned (EXIF 6) was copied as stored, under annotations of a
    48-wide, 64-high image: a loader that ignores EXIF laid the polygons over it sideways."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = random_image(48, 64)
    save(tmp_path / "in" / "p.jpg", stored, exif=exif, quality=95)
    out = tmp_path / "out"
    for _ in range(2):              # the second export finds its own upright copy and leaves it
        assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export",
                           "coco") == 0
    image, = json.loads((out / "coco" / "annotations.json").read_text())["images"]
    with Image.open(out / "coco" / "images" / "p.jpg") as copied:
        assert copied.size == (image["width"], image["height"]) == (48, 64)
        assert copied.getexif().get(0x0112, 1) == 1
        pixels = np.asarray(copied, np.float32)
    def error(turned):
        return np.abs(pixels - turned).mean()
    assert error(np.rot90(stored, -1)) < 5 and error(np.rot90(stored, 1)) > 20    # clockwise, as a viewer shows it


@pytest.mark.parametrize("fmt", predict.EXPORT_FORMATS)
def test_exports_of_one_name_in_two_folders_read_back_as_the_masks(fmt, workdir, tmp_path):
    from streetseg_jax.labels.__main__ import main as labels_main
    from streetseg_jax.labels.convert import read_mask_png
    from streetseg_jax.labels.polygonize import DEFAULT_MIN_AREA, absorb_small_regions

    for folder, seed in (("cam1", 1), ("cam2", 2)):
        save(tmp_path / "in" / folder / "x.jpg", random_image(48, 64, seed))
    out = tmp_path / "out"
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", fmt,
                       "--tolerance", "0") == 0
    labels_main(["to-masks", "--format", fmt, "--input", str(out / fmt), "--output", str(tmp_path / "back")])
    shown = [absorb_small_regions(np.asarray(Image.open(out / folder / "x.png")), DEFAULT_MIN_AREA)
             for folder in ("cam1", "cam2")]
    assert not np.array_equal(*shown)
    for folder, expected in zip(("cam1", "cam2"), shown):     # at tolerance 0 the exact outlines of what is shown
        np.testing.assert_array_equal(read_mask_png(tmp_path / "back" / folder / "x.png"), expected)
    exported = sorted((out / fmt).rglob("*"))      # predicting the export's images into it again would rewrite it
    assert run_predict("--workdir", workdir, "--input", out / fmt, "--output", out, "--export", fmt) == 2
    assert sorted((out / fmt).rglob("*")) == exported


def test_cvat_export_refuses_file_names_that_are_not_utf8_before_predicting(workdir, tmp_path, capsys):
    name = os.fsdecode(b"caf\xe9.jpg")                # a Latin-1 name, kept by Python as a lone surrogate
    try:
        save(tmp_path / "in" / name, random_image(24, 32))
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "out"
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", "cvat") == 2
    assert "CVAT's XML cannot hold file names that are not UTF-8" in capsys.readouterr().err and not out.exists()
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", out, "--export", "labelme") == 0


def test_a_second_predict_into_a_folder_in_use_is_refused(workdir, tmp_path):
    """A second predict (other settings) into one folder left the first's masks under the second's settings
    record, and --skip_existing then kept them as the second's."""
    import subprocess
    import sys

    pytest.importorskip("fcntl", reason="predicts take turns through a POSIX record lock")
    from streetseg_jax.atomic import machine_lock

    save(tmp_path / "in" / "a.png", random_image(32, 48))
    out = tmp_path / "out"
    (tmp_path / "tmp_a").mkdir()    # two users of other TMPDIRs each took the lock, and their masks mixed
    holder = subprocess.Popen([sys.executable, "-c", "import time\n"
                               "from streetseg_jax.atomic import machine_lock\n"
                               f"with machine_lock('predict', {str(out)!r}, lambda: None):\n"
                               "    print('held', flush=True)\n    time.sleep(60)\n"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path / "tmp_a")})
    try:
        assert holder.stdout.readline() == "held\n"
        second = subprocess.run([sys.executable, "-m", "streetseg_jax.predict", "--workdir", str(workdir), "--input",
                                 str(tmp_path / "in"), "--output", str(out)], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2 and second.stderr.strip() == \
        f"error: another predict is writing into {out}; wait for it to end, or give another --output"
    assert not out.exists()
    with machine_lock("predict", out, when_busy=pytest.fail):     # free once the first has ended
        pass


def test_a_checkpoint_a_running_save_removes_while_it_is_read_is_not_called_damaged(workdir, tmp_path, monkeypatch):
    """`--checkpoint latest` read while the run saved (keep_checkpoints=1) said "damaged or incomplete?" of a
    checkpoint that had only been rotated away; read again, the new latest loads."""
    from streetseg_jax.checkpoint import Checkpoints
    from streetseg_jax.inference import load_model

    run = shutil.copytree(workdir, tmp_path / "run")
    restore = Checkpoints.restore

    def rotated_away(self, which, template):
        latest = run / "checkpoints" / "latest"
        if (latest / "2").exists():     # the run's next save comes, and rotates this one away
            (latest / "2").rename(latest / "3")
            raise Exception("NOT_FOUND: Error opening \"zarr\" driver: .zarray")    # tensorstore's own kind
        return restore(self, which, template)
    monkeypatch.setattr(Checkpoints, "restore", rotated_away)
    assert load_model(run, "latest").step == 3
    # orbax removes a replaced step's items one by one: half removed, the step is still there (1 call in 5 failed)
    half = shutil.copytree(workdir, tmp_path / "half")

    def half_removed(self, which, template):
        latest = half / "checkpoints" / "latest"
        if not (latest / "3").exists():
            shutil.copytree(latest / "2", latest / "3")
            shutil.rmtree(latest / "2" / "data")
            raise ValueError("Item \"data\" was not found in the checkpoint. Available items: ['state']")
        return restore(self, which, template)
    monkeypatch.setattr(Checkpoints, "restore", half_removed)
    assert load_model(half, "latest").step == 3
    with pytest.raises(ValueError, match="the checkpoint of step 2 .* damaged or incomplete"):
        load_model(half, 2)     # asked for by number: no other to read
    monkeypatch.setattr(Checkpoints, "restore", lambda self, which, template: (_ for _ in ()).throw(
        Exception("NOT_FOUND: .zarray")))
    with pytest.raises(ValueError, match="the checkpoint of step 1 .* cannot be read: damaged or incomplete"):
        load_model(run, "best")     # still there: damaged indeed


def test_overlay_names_never_repeat_or_leave_the_folder():
    from streetseg_jax.evaluator import overlay_name

    used = set()
    names = [overlay_name(name, i, used).as_posix() for i, name in enumerate(
        ["a_2.jpg", "a.jpg", "a.png", "/etc/a.jpg", "../../x.jpg", "..", "", "sub/b.jpg"])]
    assert len(set(names)) == len(names) and not any(n.startswith(("/", "..")) for n in names), names
    assert names[:2] == ["a_2.png", "a.png"] and names[-1] == "sub/b.png"


def test_the_confidence_help_says_transparent_pixels_are_black(capsys):
    """The help said a confidence map is never darker than 255/K, yet a cut-out's transparent pixels are 0 in it."""
    from streetseg_jax.predict import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "never darker than 255/K for K classes" in help_text
    assert "but black, 0, where a cut-out's pixels are transparent" in help_text
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().replace("#", " ").split())
    assert "never darker than 255/K for K classes, but black at a cut-out's transparent pixels" in readme


def test_overlays_are_titled_with_the_run_checkpoint_and_step(workdir, tmp_path, monkeypatch):
    """Training's overlays say their run, split and step; predict's said nothing of the model that drew them."""
    from streetseg_jax import visualize

    titles, draw = [], visualize.overlay
    monkeypatch.setattr(visualize, "overlay", lambda *args, **kwargs: titles.append(kwargs["title"]) or draw(
        *args, **kwargs))
    save(tmp_path / "in" / "p.jpg", random_image(24, 32))
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", tmp_path / "out") == 0
    step = json.loads((tmp_path / "out" / predict.SETTINGS_FILE).read_text())["step"]
    assert titles == [f"run {workdir.name}, best checkpoint (step {step})"]
    assert run_predict("--workdir", workdir, "--input", tmp_path / "in", "--output", tmp_path / "out2",
                       "--checkpoint", str(step)) == 0
    assert titles[1] == f"run {workdir.name}, checkpoint step {step}"
    # A long run name on a small photo is wrapped onto more lines, not cut off at the picture's edge.
    image, mask = np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64), np.uint8)
    one, long = (visualize.overlay(image, mask, default_label_map(), title=title) for title in
                 ("run a", "run 2025-01-17_camvid_unet_lovasz, best checkpoint (step 12000)"))
    assert long.width == one.width and long.height > one.height
