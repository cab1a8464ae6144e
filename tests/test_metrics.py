"""Tests for streetseg_jax.metrics: the on-device confusion matrix against numpy, and the figures from it."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from streetseg_jax import metrics, native
from streetseg_jax.metrics import confusion_matrix, image_confusion_matrices, metrics_from_confusion

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


@pytest.fixture
def xla_counts(monkeypatch):
    """The confusion matrices counted by XLA's bincount, as on a GPU or without a C++ compiler."""
    monkeypatch.setattr(native, "cpu_targets", lambda: None)
    jax.clear_caches()   # traces made with the kernel must not be reused
    yield
    jax.clear_caches()


def test_confusion_matrix_is_counted_by_our_kernel_on_cpu():
    # Every other test here would pass on the fallback too: make sure the CPU path is the kernel.
    from streetseg_jax import sharding

    x = jnp.zeros((2, 8, 8), jnp.int32)
    with jax.sharding.use_abstract_mesh(sharding.make_mesh().abstract_mesh):   # however many devices this worker has
        hlo = metrics._confusion_matrix.lower(x, x, num_classes=3, ignore_id=255).as_text()
    assert native.targets().confusion_counts in hlo


@pytest.mark.parametrize("num_classes, ignore_id", [(8, 255), (12, -1), (5, 3)])
def test_xla_fallback_counts_as_the_kernel(num_classes, ignore_id):
    labels, preds = random_case((3, 31, 45), num_classes, ignore_id % 256, seed=7)
    labels = labels.astype(np.int32)
    labels[0, 0, 0] = -7                            # negative labels and predictions count nowhere
    preds[1, 0, :3] = [-1, num_classes, 1000]
    ours = confusion_matrix(jnp.asarray(labels), jnp.asarray(preds), num_classes=num_classes, ignore_id=ignore_id)
    xla = metrics._bincount(jnp.asarray(labels), jnp.asarray(preds), num_classes, ignore_id)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(xla))
    np.testing.assert_array_equal(np.asarray(ours), numpy_confusion(labels, preds, num_classes, ignore_id))


@pytest.mark.parametrize("counted_by", ["kernel", "xla"])
def test_image_confusion_matrices_are_each_images_own(counted_by, request):
    if counted_by == "xla":
        request.getfixturevalue("xla_counts")
    labels, preds = random_case((5, 19, 23), 6, 255, seed=3)
    per_image = np.asarray(image_confusion_matrices(jnp.asarray(labels), jnp.asarray(preds), 6, 255))
    assert per_image.shape == (5, 6, 6) and per_image.dtype == np.int32
    for image in range(5):
        np.testing.assert_array_equal(per_image[image], numpy_confusion(labels[image], preds[image], 6, 255))


def test_confusion_matrix_refuses_different_shapes():
    # A broadcast would count a (H, W) prediction once for every label image without a word.
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(jnp.zeros((2, 4, 4), jnp.uint8), jnp.zeros((4, 4), jnp.int32), num_classes=2, ignore_id=255)
    with pytest.raises(ValueError, match="same shape"):
        image_confusion_matrices(jnp.zeros((2, 4, 4)), jnp.zeros((2, 4, 5)), num_classes=2, ignore_id=255)
    for wrong in (8.0, None, "8", True, 0):          # failed deep in JAX's shape code
        with pytest.raises(ValueError, match=r"num_classes must be a whole number >= 1 \(label_map.num_classes\)"):
            confusion_matrix(jnp.zeros((4, 4), jnp.uint8), jnp.zeros((4, 4), jnp.uint8), wrong, 255)
    # Python lists, as a notebook has them ('list' object has no attribute 'shape')
    assert np.asarray(confusion_matrix([[0, 1]], [[0, 0]], 2, 255)).tolist() == [[1, 0], [1, 0]]


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


def test_host_inputs_of_no_class_are_refused_not_dropped():
    """A prediction of 9 (no class, not ignore) counted nowhere: mIoU 1.0 instead of 0.75, without a word."""
    labels, preds = np.array([[0, 1], [2, 3]], np.uint8), np.array([[0, 9], [2, 3]], np.uint8)
    for count in (confusion_matrix, image_confusion_matrices):
        with pytest.raises(ValueError, match=r"values 9 in predictions are no class id \(0..3\) nor the ignore id 255: "
                                             r"map an export's values .*LabelMap.value_table\(\)"):
            count(labels, preds, 4, 255)
        with pytest.raises(ValueError, match=r"values -3, 4 in labels are no class id \(0..3\) nor the ignore id 255"):
            count([[0, -3, 4, 255]], [[0, 1, 2, 3]], 4, 255)
    ok = np.array([[0, 1], [255, 3]], np.int32)          # the ignore id, in labels and predictions alike
    assert np.asarray(confusion_matrix(ok, ok, 4, 255)).trace() == 3
    assert np.asarray(confusion_matrix(labels == 1, labels == 1, 2, 255)).tolist() == [[3, 0], [0, 1]]   # bool
    # Device arrays (as the jitted steps pass them) are counted as they are: no look on the host.
    conf = np.asarray(confusion_matrix(jnp.asarray(labels), jnp.asarray(preds), 4, 255))
    assert conf.trace() == 3 and conf.sum() == 3


def test_float_host_masks_are_refused_not_truncated():
    """[[0.2, 1.7], [2.5, 3.9]] was cut to [[0, 1], [2, 3]]: a perfect diagonal."""
    floats = np.array([[0.2, 1.7], [2.5, 3.9]])
    with pytest.raises(ValueError, match=r"labels must hold class ids, whole numbers, got float64 values 0.2..3.9 "
                                         r"\(a float mask would be cut"):
        confusion_matrix(floats, np.array([[0, 1], [2, 3]], np.uint8), 4, 255)
    with pytest.raises(ValueError, match="predictions must hold class ids, whole numbers, got float32"):
        image_confusion_matrices(np.zeros((1, 2), np.uint8), np.zeros((1, 2), np.float32), 4, 255)


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


def test_a_matrix_of_weights_gives_the_figures_of_its_counts():
    """A normalised (float) matrix was cut to whole numbers: [[0.5, 0.5], [0, 1]] gave IoU None for a, mIoU 1."""
    counts = np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    names = ["road", "car", "bike"]
    assert metrics_from_confusion(counts / counts.sum(), names) == pytest.approx(metrics_from_confusion(counts, names))
    with pytest.raises(ValueError, match="numbers >= 0; got int64 down to -1"):
        metrics_from_confusion(np.array([[1, -1], [0, 1]]), ["a", "b"])


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
from streetseg_jax.metrics import _confusion_matrix, confusion_matrix, image_confusion_matrices
mesh = Mesh(np.array(jax.devices()), ("data",))
rng = np.random.default_rng(0)
labels = rng.integers(0, 6, (16, 24, 20)).astype(np.uint8)
labels[:, :3] = 255
preds = rng.integers(0, 5, (16, 24, 20)).astype(np.int32)
shard = NamedSharding(mesh, P("data"))
on_devices = jax.device_put(labels, shard), jax.device_put(preds, shard)
kept = labels < 5
expected = np.bincount(5 * labels[kept].astype(np.int64) + preds[kept], minlength=25).reshape(5, 5)
assert len(jax.devices()) == 8
# Without the mesh, the split is unknown: XLA's bincount counts each device's part (the kernel would gather first).
hlo = _confusion_matrix.lower(*on_devices, num_classes=5, ignore_id=255).compile().as_text()
assert "all-gather" not in hlo and "streetseg_confusion_counts" not in hlo, hlo
np.testing.assert_array_equal(np.asarray(confusion_matrix(*on_devices, num_classes=5, ignore_id=255)), expected)
# With the mesh set, as the train and eval steps set it, each device counts its own images: no gather.
with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    hlo = _confusion_matrix.lower(*on_devices, num_classes=5, ignore_id=255).compile().as_text()
    conf = confusion_matrix(*on_devices, num_classes=5, ignore_id=255)
    per_image = image_confusion_matrices(*on_devices, num_classes=5, ignore_id=255)
assert "all-gather" not in hlo and "streetseg_confusion_counts" in hlo, hlo
np.testing.assert_array_equal(np.asarray(conf), expected)
np.testing.assert_array_equal(np.asarray(per_image).sum(0), expected)
assert per_image.sharding.spec == P("data"), per_image.sharding
print("ok")
"""


def test_confusion_matrix_on_batch_sharded_over_devices():
    done = run_on_cpu_devices(SHARDED_SCRIPT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
