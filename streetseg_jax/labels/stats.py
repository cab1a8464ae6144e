"""Class statistics of a split: pixel counts per class and median-frequency class weights (SegNet's recipe)."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm


def class_pixel_counts(masks, num_classes: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of each class, pixels of the images in which each class appears), over an iterable of masks.

    Values outside 0..num_classes-1 (the ignore id) are not counted.
    """
    masks = tqdm(masks, desc="class statistics", disable=None if progress else True, leave=False)
    return sum_image_counts((np.bincount(np.asarray(m).ravel(), minlength=256)[:num_classes] for m in masks),
                            num_classes)


def sum_image_counts(per_image, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """class_pixel_counts from each image's pixel count per class (labelled pixels only)."""
    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for counts in per_image:
        pixels += counts
        image_pixels += np.where(counts > 0, counts.sum(), 0)
    return pixels, image_pixels


def median_frequency_weights(pixels: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """weight_c = median_f / f_c with f_c = pixels of c / pixels of the images containing c (Eigen & Fergus,
    as SegNet used). A class that never appears gets weight 0 (it cannot be learned from this split anyway)."""
    present = image_pixels > 0
    freq = np.where(present, pixels / np.maximum(image_pixels, 1), 0.0)
    median = np.median(freq[present]) if present.any() else 1.0
    return np.where(present, median / np.maximum(freq, 1e-12), 0.0).astype(np.float32)
