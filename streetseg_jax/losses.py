"""Segmentation losses over logits (B, H, W, K) and integer labels (B, H, W) in which `ignore_id` marks pixels that
count nowhere.

`loss_fn(name, ...)` builds what the train step minimises:
    cross_entropy          weighted softmax cross-entropy (PyTorch's weighted-mean convention)
    cross_entropy+dice     plus the soft Dice loss, 1 - mean over classes of 2|P*Y| / (|P| + |Y|), over the batch
    cross_entropy+lovasz   plus the Lovasz-softmax loss (Berman, Rannen Triki & Blaschko, CVPR 2018), a convex
                           surrogate of 1 - IoU, per image and averaged over the classes present in its labels

Dice and Lovasz are computed per batch and per image respectively, never per device, so the loss (and the train
step) is the same however the batch is sharded.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

LOSSES = ("cross_entropy", "cross_entropy+dice", "cross_entropy+lovasz")


def valid_labels(labels, num_classes: int, ignore_id: int):
    """(int32 labels with ignored pixels set to class 0, bool mask of the pixels that count)."""
    labels = labels.astype(jnp.int32)
    valid = (labels != ignore_id) & (labels >= 0) & (labels < num_classes)
    return jnp.where(valid, labels, 0), valid


def cross_entropy_sums(logits, labels, class_weights, ignore_id: int):
    """(weighted sum of per-pixel cross-entropy, sum of weights) over valid pixels; ignore pixels weigh 0.

    The mean is sum / weight, PyTorch's weighted-mean convention; sums (not means) so they add across batches.
    """
    safe, valid = valid_labels(labels, logits.shape[-1], ignore_id)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    weights = jnp.where(valid, class_weights[safe], 0.0)
    return jnp.sum(weights * ce), jnp.sum(weights)


def dice_loss(logits, labels, ignore_id: int, smooth: float = 1.0):
    """1 - mean over classes of (2 sum(p * y) + s) / (sum(p) + sum(y) + s) over the batch's valid pixels.

    A class absent from both labels and predictions scores (0 + s) / (0 + s) = 1 and costs nothing.
    """
    num_classes = logits.shape[-1]
    safe, valid = valid_labels(labels, num_classes, ignore_id)
    mask = valid[..., None].astype(jnp.float32)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * mask
    truth = jax.nn.one_hot(safe, num_classes) * mask
    axes = tuple(range(probs.ndim - 1))
    overlap = jnp.sum(probs * truth, axis=axes)
    sizes = jnp.sum(probs, axis=axes) + jnp.sum(truth, axis=axes)
    return 1.0 - jnp.mean((2.0 * overlap + smooth) / (sizes + smooth))


def lovasz_softmax_loss(logits, labels, ignore_id: int):
    """Mean over images of the Lovasz-softmax loss over the classes present in that image's labels."""
    num_classes = logits.shape[-1]
    safe, valid = valid_labels(labels, num_classes, ignore_id)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    flat = lambda x: x.reshape(x.shape[0], -1, *x.shape[3:])  # noqa: E731 - (B, H, W, ...) -> (B, HW, ...)
    per_image = jax.vmap(_lovasz_one_image, in_axes=(0, 0, 0, None))
    return jnp.mean(per_image(flat(probs), flat(safe), flat(valid), num_classes))


def _lovasz_one_image(probs, labels, valid, num_classes: int):
    """probs (N, K), labels (N,), valid (N,) -> the loss averaged over the classes present among valid pixels."""
    truth = ((labels[:, None] == jnp.arange(num_classes)) & valid[:, None]).T                  # (K, N)
    # Ignored pixels get error 0 and no foreground: sorted last, they change no class's Jaccard steps before them.
    errors = jnp.where(valid[None, :], jnp.abs(truth.astype(jnp.float32) - probs.T), 0.0)       # (K, N)
    order = jax.lax.stop_gradient(descending_order(errors))
    errors_sorted = jnp.take_along_axis(errors, order, axis=1)
    fg_sorted = jnp.take_along_axis(truth, order, axis=1).astype(jnp.float32)
    losses = jnp.sum(errors_sorted * _jaccard_steps(fg_sorted), axis=1)                       # (K,)
    present = jnp.any(truth, axis=1)
    return jnp.sum(jnp.where(present, losses, 0.0)) / jnp.maximum(jnp.sum(present), 1)


_MAX_PACKED_INDEX_BITS = 20  # beyond 2**20 pixels an image, errors would keep fewer than 11 bits in the key


def descending_order(errors):
    """Per row of `errors` (rows, N) in [0, 1]: the column indices in decreasing order of error.

    The Lovasz loss sorts every class's errors of every image, and XLA:CPU sorts several operands (key, payload,
    the index that differentiation adds) about 5x slower than one int32 operand. So each error is quantised to the
    bits the index leaves free of 31, at most 23 (17 bits, steps of 1/131071, for an 80x112 crop; 13 for 360x480), and
    packed above its index in one int32 key: one sort gives the order, ties broken by index. Swapping two errors
    closer than one step changes the loss by less than that step. Rows over 2**20 long sort exactly (argsort).
    """
    n = errors.shape[-1]
    index_bits = max(1, (n - 1).bit_length())
    if index_bits > _MAX_PACKED_INDEX_BITS:
        return jnp.argsort(-errors, axis=-1, stable=True).astype(jnp.int32)
    # At most 23 bits: float32 then holds (1 - e) * levels exactly enough never to round past levels (and overflow).
    levels = (1 << min(31 - index_bits, 23)) - 1
    rank = jnp.round((1.0 - jnp.clip(errors, 0.0, 1.0)) * levels).astype(jnp.int32)  # small rank = large error
    keys = (rank << index_bits) | jnp.arange(n, dtype=jnp.int32)
    return jax.lax.sort(keys, dimension=keys.ndim - 1) & ((1 << index_bits) - 1)


def _jaccard_steps(fg_sorted):
    """Gradient of the Lovasz extension of the Jaccard loss at errors sorted in decreasing order (rows: classes)."""
    total = jnp.sum(fg_sorted, axis=1, keepdims=True)
    intersection = total - jnp.cumsum(fg_sorted, axis=1)
    union = total + jnp.cumsum(1.0 - fg_sorted, axis=1)
    jaccard = 1.0 - intersection / union
    return jnp.concatenate([jaccard[:, :1], jnp.diff(jaccard, axis=1)], axis=1)


def loss_fn(name: str, class_weights, ignore_id: int) -> Callable:
    """`(logits, labels) -> scalar loss` for one of LOSSES."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}")
    class_weights = jnp.asarray(class_weights, jnp.float32)
    extra = {"cross_entropy": None, "cross_entropy+dice": dice_loss,
             "cross_entropy+lovasz": lovasz_softmax_loss}[name]

    def loss(logits, labels):
        total, weight = cross_entropy_sums(logits, labels, class_weights, ignore_id)
        value = total / jnp.maximum(weight, 1e-6)
        return value if extra is None else value + extra(logits, labels, ignore_id)

    return loss
