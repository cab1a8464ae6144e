"""Segmentation metrics: an on-device confusion matrix, and IoU / accuracy figures computed from it on the host.

The confusion matrix is the only thing the eval loop needs to carry: it is a sum, so batches (and devices) add
up exactly, and every figure below is a function of the finished matrix.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from streetseg_jax import native
from streetseg_jax.labels.label_map import class_id_array


def confusion_matrix(labels, preds, num_classes: int, ignore_id: int) -> jax.Array:
    """int32 (K, K) pixel counts: rows are the true class, columns the predicted class.

    `labels` and `preds` have the same shape (any rank). A pixel counts only when its label is a class
    (0..K-1, so never `ignore_id`) and its prediction is one too: an out-of-range prediction has no column,
    and letting it through would add it to a neighbouring cell of the flattened matrix.

    Host inputs (numpy arrays, lists) must hold whole numbers, each a class id or `ignore_id`: anything else
    (a float mask, a value of no class, which would count nowhere and raise the score) is a ValueError that
    names it. Device arrays (jax.Array, as in the jitted train and eval steps, whose predictions are an argmax
    and whose labels were checked when the dataset was built) are counted as they are, without a look on the
    host; their values of no class count nowhere.

    Counts are exact while a cell stays below 2**31 (int32), e.g. any batch of up to 2**31 - 1 pixels. On a CPU
    our kernel counts (`confusion.cc`), per device where a mesh is set with `jax.sharding.use_abstract_mesh` (as
    the train and eval steps do) and the devices' counts are summed, or on the one device there is; elsewhere
    XLA's bincount.
    """
    return _confusion_matrix(*_checked(labels, preds, num_classes, ignore_id), num_classes, ignore_id)


@functools.partial(jax.jit, static_argnames=("num_classes", "ignore_id"))
def _confusion_matrix(labels: jax.Array, preds: jax.Array, num_classes: int, ignore_id: int) -> jax.Array:
    """confusion_matrix without the look at host inputs' values."""
    if not _kernel_counts_here(labels):
        return _bincount(labels, preds, num_classes, ignore_id)
    rows = [x.reshape(x.shape[0] if x.ndim > 1 else 1, -1) for x in (labels, preds)]

    def local(axes, labels, preds):
        # One row per device: the kernel's cost per row includes its K*K cells.
        counts = _kernel_counts(labels.reshape(1, -1), preds.reshape(1, -1), num_classes, ignore_id)[0]
        return native.sum_over_devices(counts, axes)

    return native.per_device(local, rows, batched=(True, True), batched_out=False)


def image_confusion_matrices(labels, preds, num_classes: int, ignore_id: int) -> jax.Array:
    """int32 (N, K, K): `confusion_matrix` of each of the N images (the first axis) of `labels` and `preds`; host
    inputs are checked as there."""
    return _image_confusion_matrices(*_checked(labels, preds, num_classes, ignore_id), num_classes, ignore_id)


@functools.partial(jax.jit, static_argnames=("num_classes", "ignore_id"))
def _image_confusion_matrices(labels: jax.Array, preds: jax.Array, num_classes: int, ignore_id: int) -> jax.Array:
    if not _kernel_counts_here(labels):
        return jax.vmap(functools.partial(_bincount, num_classes=num_classes, ignore_id=ignore_id))(labels, preds)
    rows = [x.reshape(x.shape[0], -1) for x in (labels, preds)]

    def local(axes, labels, preds):
        return _kernel_counts(labels, preds, num_classes, ignore_id)

    return native.per_device(local, rows, batched=(True, True), batched_out=True)


def _checked(labels, preds, num_classes, ignore_id) -> tuple:
    """The labels and predictions for the jitted counts, or a ValueError that says what is wrong: a float or None
    num_classes (failed deep in JAX), shapes that differ (a broadcast), and host inputs (not a jax.Array: numpy
    arrays, lists) whose values are no class ids (label_map.class_id_array). Device arrays and tracers go as they
    are, with no round trip to the host."""
    if not (isinstance(num_classes, int | np.integer) and not isinstance(num_classes, bool) and num_classes >= 1):
        raise ValueError(f"num_classes must be a whole number >= 1 (label_map.num_classes), got {num_classes!r}")
    if np.shape(labels) != np.shape(preds):
        raise ValueError(f"labels {np.shape(labels)} and predictions {np.shape(preds)} must have the same shape")
    return tuple(x if isinstance(x, jax.Array) else class_id_array(x, num_classes, ignore_id, what)
                 for x, what in ((labels, "labels"), (preds, "predictions")))


def _kernel_counts_here(labels: jax.Array) -> bool:
    """Whether our kernel counts: on a CPU, and where the batch's split is known (a mesh set) or there is nothing
    to split (one device). Without a mesh, arrays sharded over several devices would be gathered to each first."""
    if native.cpu_targets() is None or labels.size == 0:
        return False
    return not jax.sharding.get_abstract_mesh().empty or jax.device_count() == 1


def _kernel_counts(labels, preds, num_classes: int, ignore_id: int) -> jax.Array:
    """int32 (..., K, K) for int (..., pixels) labels and predictions: one matrix per row, by our CPU kernel."""
    out = jax.ShapeDtypeStruct((*labels.shape[:-1], num_classes, num_classes), jnp.int32)
    call = jax.ffi.ffi_call(native.cpu_targets().confusion_counts, out, vmap_method="broadcast_all")
    return call(labels.astype(jnp.int32), preds.astype(jnp.int32), num_classes=np.int64(num_classes),
                ignore_id=np.int64(ignore_id))


def _bincount(labels: jax.Array, preds: jax.Array, num_classes: int, ignore_id: int) -> jax.Array:
    k = num_classes
    # Widen before multiplying: uint8 masks would wrap in K * y.
    labels = labels.astype(jnp.int32)
    preds = preds.astype(jnp.int32)
    valid = (labels != ignore_id) & (labels >= 0) & (labels < k) & (preds >= 0) & (preds < k)
    # Excluded pixels go to the extra bin K*K, never to a negative index: jnp.bincount clips negatives to 0,
    # which would silently count them as (background, background).
    flat_index = jnp.where(valid, k * labels + preds, k * k).ravel()
    # A scatter-add (bincount) beat one-hot matmul formulations on XLA:CPU by >10x (see tools/bench/eval.py).
    counts = jnp.bincount(flat_index, length=k * k + 1)[:-1]
    return counts.reshape(k, k).astype(jnp.int32)


def metrics_from_confusion(conf: np.ndarray, class_names: Sequence[str]) -> dict:
    """IoU and accuracy figures (fractions in [0, 1]) from a (K, K) confusion matrix (rows true, cols predicted).

    Returns {"miou", "iou/<class name>" for each class, "pixel_accuracy", "mean_class_accuracy"}.

    A class absent from both labels and predictions (its row and column are all zero) has no IoU: it is
    reported as None (JSON null) and left out of the mean, as np.nanmean leaves it in the numpy peer
    (peers/miou_numpy.py); setting such NaN IoUs to 0 would drag mIoU down for every class a split happens to
    lack. A class that is only predicted (never in the labels) has IoU 0 and does count.

    mean_class_accuracy is the mean recall (diagonal / row sum) over classes present in the labels.
    A figure with nothing to average (an empty matrix) is None. A matrix of counts or of weights (normalised or
    averaged, float) alike: the figures are ratios.
    """
    conf = np.asarray(conf)
    if conf.dtype.kind not in "uif" or conf.size and conf.min() < 0:
        raise ValueError(f"a confusion matrix holds counts or weights, numbers >= 0; got {conf.dtype}"
                         + (f" down to {conf.min()}" if conf.size and conf.dtype.kind in "uif" else ""))
    conf = conf.astype(np.float64 if conf.dtype.kind == "f" else np.int64)    # a float one was cut to whole numbers
    _check_shape(conf, class_names)
    iou = _class_iou(conf)
    result = {"miou": _mean_or_none(iou)}
    for name, value in zip(class_names, iou):
        result[f"iou/{name}"] = value
    total = conf.sum()
    result["pixel_accuracy"] = float(np.trace(conf) / total) if total else None
    result["mean_class_accuracy"] = _mean_or_none(class_recall(conf))
    return result


def _check_shape(conf: np.ndarray, class_names: Sequence[str]) -> None:
    k = len(class_names)
    if conf.shape != (k, k):
        raise ValueError(f"confusion matrix has shape {conf.shape}, expected ({k}, {k}) for {k} class names")


def _class_iou(conf: np.ndarray) -> list[float | None]:
    """Per-class IoU, None for a class with an empty union (absent from labels and predictions)."""
    true_positive = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - true_positive
    return [float(tp / u) if u else None for tp, u in zip(true_positive, union)]


def class_recall(conf: np.ndarray) -> list[float | None]:
    """Per-class recall, None for a class with no labelled pixels."""
    labelled = conf.sum(axis=1)
    return [float(tp / n) if n else None for tp, n in zip(np.diag(conf), labelled)]


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
