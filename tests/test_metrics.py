"""Tests for streetseg_jax.metrics: the on-device confusion matrix against numpy, and the figures from it."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from streetseg_jax.metrics import confusion_matrix, metrics_from_confusion

from cpu_devices import run_on_cpu_devices


def numpy_confusion(labels, preds, num_classes, ignore_id):
    """Reference: count (label, pred) pairs one class pair at a time, with no index arithmetic to get wrong."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    kept = (labels != ignore_id) & (labels >= 0) & (labels < num_classes)
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for true_class in range(num_classes):
        for pred_class in range(num_classes):
            conf[true_class, pred_class] = np.sum(kept & (labels == true_class) & (preds == pred_class))
    return conf


def random_case(shape, num_classes, ignore_id, seed):
    """Random labels with some ignore pixels and some labels equal to K (out of range), random predictions."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, shape)
    roll = rng.random(shape)
    labels[roll < 0.1] = ignore_id
    labels[(roll >= 0.1) & (roll < 0.15)] = num_classes
    preds = rng.integers(0, num_classes, shape)
    return labels.astype(np.uint8), preds.astype(np.int32)


@pytest.mark.parametrize(
    "shape, num_classes",
    [((7,), 2), ((3, 17, 29), 8), ((2, 33, 65), 12), ((1, 64, 64), 19), ((4, 5, 6), 1)],
)
def test_confusion_matrix_matches_numpy(shape, num_classes):
    labels, preds = random_case(shape, num_classes, ignore_id=255, seed=num_classes)
    conf = confusion_matrix(jnp.asarray(labels), jnp.asarray(preds), num_classes=num_classes, ignore_id=255)
    assert conf.dtype == jnp.int32
    assert conf.shape == (num_classes, num_classes)
    np.testing.assert_array_equal(np.asarray(conf), numpy_confusion(labels, preds, num_classes, 255))


def test_confusion_matrix_negative_ignore_is_not_counted_as_background():
    # With ignore -1, K*y + p is negative; jnp.bincount would clip it to bin 0 = (background, background).
    labels = np.array([[-1, -1, -1, 0], [1, -1, 2, -1]], dtype=np.int32)
    preds = np.array([[0, 0, 1, 0], [1, 0, 2, 2]], dtype=np.int32)
    conf = np.asarray(confusion_matrix(jnp.asarray(labels), jnp.asarray(preds), num_classes=3, ignore_id=-1))
    np.testing.assert_array_equal(conf, np.diag([1, 1, 1]))


def test_confusion_matrix_uint8_labels_do_not_wrap():
    # K * y overflows uint8 for K = 30, y = 29 (870): the labels must be widened before the arithmetic.
    labels = np.array([29, 28, 255], dtype=np.uint8)
    preds = np.array([29, 0, 5], dtype=np.int32)
    conf = np.asarray(confusion_matrix(jnp.asarray(labels), jnp.asarray(preds), num_classes=30, ignore_id=255))
    assert conf.sum() == 2
    assert conf[29, 29] == 1 and conf[28, 0] == 1


def test_confusion_matrix_drops_out_of_range_predictions():
    labels = np.array([0, 1, 1], dtype=np.int32)
    preds = np.array([0, 2, -1], dtype=np.int32)  # 2 would otherwise land in row 2 = (2, 0) of a 2x2 matrix
    conf = np.asarray(confusion_matrix(jnp.asarray(labels), jnp.asarray(preds), num_classes=2, ignore_id=255))
    np.testing.assert_array_equal(conf, [[1, 0], [0, 0]])


def test_confusion_matrix_exact_beyond_float32_precision():
    # 2**24 + 3 pixels of one class: a float32 running count would stop at 2**24.
    count = 2**24 + 3
    labels = jnp.zeros((count,), dtype=jnp.uint8)
    conf = np.asarray(confusion_matrix(labels, labels, num_classes=2, ignore_id=255))
    assert conf[0, 0] == count
    assert conf.sum() == count


def test_metrics_hand_computed():
    # rows true, cols predicted
    conf = np.array([[3, 1, 0],
                     [2, 4, 0],
                     [0, 0, 0]])  # class 2 absent from labels and predictions
    m = metrics_from_confusion(conf, ["road", "car", "bike"])
    # road: tp 3, union 4 + 5 - 3 = 6 -> 1/2; car: tp 4, union 6 + 5 - 4 = 7 -> 4/7
    assert m["iou/road"] == pytest.approx(0.5)
    assert m["iou/car"] == pytest.approx(4 / 7)
    assert m["iou/bike"] is None
    assert m["miou"] == pytest.approx((0.5 + 4 / 7) / 2)
    assert m["pixel_accuracy"] == pytest.approx(7 / 10)
    assert m["mean_class_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert set(m) == {"miou", "iou/road", "iou/car", "iou/bike", "pixel_accuracy", "mean_class_accuracy"}


def test_predicted_only_class_counts_as_zero_iou():
    conf = np.array([[2, 2],
                     [0, 0]])  # class 1 never labelled but predicted twice
    m = metrics_from_confusion(conf, ["a", "b"])
    assert m["iou/a"] == pytest.approx(0.5)
    assert m["iou/b"] == 0.0
    assert m["miou"] == pytest.approx(0.25)
    assert m["mean_class_accuracy"] == pytest.approx(0.5)  # recall over labelled classes only


def test_absent_class_is_null_in_json():
    m = metrics_from_confusion(np.array([[5, 0], [0, 0]]), ["sky", "tree"])
    assert json.loads(json.dumps(m))["iou/tree"] is None
    assert m["miou"] == 1.0


def test_perfect_prediction_gives_one():
    labels, _ = random_case((2, 16, 16), 5, ignore_id=255, seed=1)
    conf = confusion_matrix(jnp.asarray(labels), jnp.asarray(labels), num_classes=5, ignore_id=255)
    m = metrics_from_confusion(np.asarray(conf), [f"c{i}" for i in range(5)])
    assert m["miou"] == 1.0
    assert m["pixel_accuracy"] == 1.0
    assert m["mean_class_accuracy"] == 1.0


def test_empty_matrix_gives_none():
    m = metrics_from_confusion(np.zeros((2, 2), dtype=np.int32), ["a", "b"])
    assert m["miou"] is None and m["pixel_accuracy"] is None and m["mean_class_accuracy"] is None


def test_wrong_class_name_count_is_an_error():
    with pytest.raises(ValueError, match="expected"):
        metrics_from_confusion(np.zeros((3, 3)), ["a", "b"])


SHARDED_SCRIPT = """
import numpy as np, jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from streetseg_jax.metrics import confusion_matrix
mesh = Mesh(np.array(jax.devices()), ("data",))
rng = np.random.default_rng(0)
labels = rng.integers(0, 6, (16, 24, 20)).astype(np.uint8)
labels[:, :3] = 255
preds = rng.integers(0, 5, (16, 24, 20)).astype(np.int32)
shard = NamedSharding(mesh, P("data"))
conf = confusion_matrix(jax.device_put(labels, shard), jax.device_put(preds, shard), num_classes=5, ignore_id=255)
kept = labels < 5
expected = np.bincount(5 * labels[kept].astype(np.int64) + preds[kept], minlength=25).reshape(5, 5)
assert len(jax.devices()) == 8
np.testing.assert_array_equal(np.asarray(conf), expected)
print("ok")
"""


def test_confusion_matrix_on_batch_sharded_over_devices():
    done = run_on_cpu_devices(SHARDED_SCRIPT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
