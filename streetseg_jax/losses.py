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
    truth = (labels[:, None] == jnp.arange(num_classes)) & valid[:, None]          # (N, K)
    # Ignored pixels get error 0 and no foreground: sorted last, they change no class's Jaccard steps before them.
    errors = jnp.where(valid[:, None], jnp.abs(truth.astype(jnp.float32) - probs), 0.0)
    neg_sorted, fg_sorted = jax.lax.sort((-errors.T, truth.T.astype(jnp.float32)), dimension=1, num_keys=1)
    losses = jnp.sum(-neg_sorted * jax.lax.stop_gradient(_jaccard_steps(fg_sorted)), axis=1)   # (K,)
    present = jnp.any(truth, axis=0)
    return jnp.sum(jnp.where(present, losses, 0.0)) / jnp.maximum(jnp.sum(present), 1)


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
