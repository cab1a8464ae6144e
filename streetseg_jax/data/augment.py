"""Label-safe augmentation on the host, in numpy and PIL, driven by an explicit `np.random.Generator`.

Geometry (scale, crop, flip) is applied to image and mask alike; the mask is only ever resampled with
NEAREST, so no pixel gets an id that was not in the input (averaging ids would invent classes along
edges). Photometric jitter touches the image only.

Speed: scale and crop are done in one PIL call: the crop window is mapped back to the source image and
only that region is resized (`Image.resize(box=...)`), so a 1.5x zoom costs no more than the crop.
Brightness, contrast, saturation and hue are all linear in RGB, so they are composed into one 3x3
matrix plus offset and applied in a single PIL pass.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

# Rec. 601 luma weights (what PIL's "L" conversion uses): the grey that saturation blends towards.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What `augment` does. Jitter strengths of zero switch that jitter off.

    base_scale: fixed resize factor applied first (0.5 trains at half resolution).
    scale_range: the random scale multiplier is drawn uniformly from this range.
    crop_size: (height, width) of every output; smaller scaled images are padded.
    flip: random horizontal flip with probability 1/2.
    brightness, contrast, saturation: factors drawn from [1 - s, 1 + s].
    hue: rotation of the colour wheel by up to +-hue turns (0.5 = half a turn).
    pad_color: image colour where the scaled image does not fill the crop (the mask there is ignore).
    """
    base_scale: float = 1.0
    scale_range: tuple[float, float] = (1.0, 1.0)
    crop_size: tuple[int, int] = (256, 256)
    flip: bool = True
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    pad_color: tuple[int, int, int] = (0, 0, 0)


@dataclasses.dataclass(frozen=True)
class _AxisPlan:
    """Along one axis: which source span is resized to how many pixels, placed where in the crop."""
    src_start: float
    src_stop: float
    out_size: int
    offset: int


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
            ignore_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Randomly scale, crop (padding the mask with `ignore_id`), flip and colour-jitter one example.

    image: uint8 (H, W, 3); mask: uint8 (H, W) or (H, W, 1). Returns uint8 (h, w, 3) and uint8 (h, w)
    with (h, w) = cfg.crop_size. The result is a function of the inputs and the generator's state only.
    """
    mask = mask.reshape(mask.shape[:2])
    scale = cfg.base_scale * rng.uniform(*cfg.scale_range)
    rows = _plan_axis(image.shape[0], scale, cfg.crop_size[0], rng)
    cols = _plan_axis(image.shape[1], scale, cfg.crop_size[1], rng)
    flip = cfg.flip and rng.random() < 0.5
    image_part = _resample(Image.fromarray(image), rows, cols, Image.Resampling.BILINEAR, flip)
    mask_part = _resample(Image.fromarray(mask), rows, cols, Image.Resampling.NEAREST, flip)
    image_part = _jitter(image_part, rng, cfg)
    out_image = np.empty((*cfg.crop_size, 3), np.uint8)
    out_image[...] = cfg.pad_color
    out_mask = np.full(cfg.crop_size, ignore_id, np.uint8)
    window = (slice(rows.offset, rows.offset + rows.out_size), slice(cols.offset, cols.offset + cols.out_size))
    out_image[window] = np.asarray(image_part)
    out_mask[window] = np.asarray(mask_part)
    return out_image, out_mask


def _plan_axis(size: int, scale: float, crop: int, rng: np.random.Generator) -> _AxisPlan:
    """Random crop window along one axis of the image scaled by `scale`, expressed in source pixels."""
    scaled = max(1, round(size * scale))
    ratio = scaled / size  # the exact scale after rounding, so image and mask agree to the pixel
    if scaled >= crop:
        start = int(rng.integers(0, scaled - crop + 1))
        return _AxisPlan(start / ratio, (start + crop) / ratio, crop, 0)
    # Smaller than the crop: keep all of it and place it at a random offset inside the padded crop.
    offset = int(rng.integers(0, crop - scaled + 1))
    return _AxisPlan(0.0, float(size), scaled, offset)


def _resample(img: Image.Image, rows: _AxisPlan, cols: _AxisPlan, method, flip: bool) -> Image.Image:
    box = (cols.src_start, rows.src_start, cols.src_stop, rows.src_stop)
    out = img.resize((cols.out_size, rows.out_size), method, box=box)
    # Flipping the placed part rather than the whole crop is the same distribution: the offset is random.
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else out


def _jitter(image: Image.Image, rng: np.random.Generator, cfg: AugmentConfig) -> Image.Image:
    """Brightness, contrast, saturation and hue as one affine map of RGB; a no-op when all are zero."""
    if not (cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue):
        return image
    mean_grey = float(np.asarray(image.convert("L")).mean())
    matrix, offset = _colour_transform(rng, cfg, mean_grey)
    # PIL applies a 3x4 colour matrix in C, rounding and clipping to uint8: ~5x faster than numpy here.
    return image.convert("RGB", tuple(np.concatenate([matrix, offset[:, None]], axis=1).ravel().tolist()))


def _colour_transform(rng: np.random.Generator, cfg: AugmentConfig, mean_grey: float):
    """(3x3 matrix, 3-offset) applying brightness, then contrast, then saturation, then hue."""
    b = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    s = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    turn = rng.uniform(-cfg.hue, cfg.hue)
    eye = np.eye(3, dtype=np.float32)
    to_grey = np.outer(np.ones(3, np.float32), _LUMA)  # every channel becomes the luma
    # Brightness scales; contrast then blends towards the mean grey of the brightened image.
    matrix = (c * b) * eye
    offset = np.full(3, (1 - c) * b * mean_grey, np.float32)
    sat = s * eye + (1 - s) * to_grey
    matrix, offset = sat @ matrix, sat @ offset
    rot = _hue_rotation(2 * np.pi * turn)
    return (rot @ matrix).astype(np.float32), (rot @ offset).astype(np.float32)


def _hue_rotation(angle: float) -> np.ndarray:
    """Rotation of RGB about the grey axis (1, 1, 1): a linear stand-in for an HSV hue shift."""
    axis = np.full(3, 1 / np.sqrt(3), np.float32)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], np.float32)
    return (np.cos(angle) * np.eye(3) + np.sin(angle) * cross
            + (1 - np.cos(angle)) * np.outer(axis, axis)).astype(np.float32)
