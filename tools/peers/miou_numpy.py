"""Peer: the seed's host-side mIoU, a numpy bincount confusion matrix (reimplemented here for benchmarks).

The seed flattens `pred + K * label` and counts it with np.bincount; it has no ignore handling (its labels
never hold an ignore id) and averages IoU with nanmean. tools/bench/eval.py times its confusion matrix against ours.

usage: python tools/peers/miou_numpy.py [NUM_IMAGES H W CLASSES]
"""
from __future__ import annotations

import sys
import time

import numpy as np


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows true, cols predicted; labels and preds must already lie in 0..K-1."""
    flat_index = (preds + num_classes * labels).ravel()
    return np.bincount(flat_index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """The seed's whole metric: confusion matrix, then nanmean of per-class IoU."""
    conf = confusion(labels, preds, num_classes)
    true_positive = np.diag(conf)
    false_positive = conf.sum(0) - true_positive
    false_negative = conf.sum(1) - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = true_positive / (true_positive + false_positive + false_negative)
    return float(np.nanmean(iou))


def main(argv: list[str]) -> None:
    n, h, w, k = [int(x) for x in (argv[:4] if len(argv) > 3 else (64, 360, 480, 12))]
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, k, (n, h, w)), rng.integers(0, k, (n, h, w))
    miou(labels, preds, k)  # warm-up
    repeats = 5
    start = time.perf_counter()
    for _ in range(repeats):
        miou(labels, preds, k)
    seconds = (time.perf_counter() - start) / repeats
    print(f"numpy bincount mIoU: {n * h * w / seconds / 1e6:.1f} Mpixel/s")


if __name__ == "__main__":
    main(sys.argv[1:])
