"""Images from other people's exports, opened defensively: paths stay inside the export folder, decompression
bombs are refused, EXIF orientation is applied, and every mode (16-bit, grayscale, palette, RGBA) becomes RGB
explicitly."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from streetseg_jax.labels.shapes import LabelFormatError

# Pillow's default bomb limit (~179 Mpx warns, twice that errors); we refuse at the warning level: a street photo of
# 178 megapixels is already far beyond any camera a labeller uses.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 178_956_970


def resolve_inside(root: Path, relative: str, what: str, source: Path) -> Path:
    """`root / relative`, refusing a path that escapes `root` (absolute paths, `..`, symlinks out)."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise LabelFormatError(f"{source}: {what} {relative!r} points outside the export folder {root}; refused")
    return candidate


def open_rgb(source: Path | bytes, name: str = "") -> np.ndarray:
    """uint8 (H, W, 3), upright as a viewer shows it (EXIF orientation applied)."""
    label = name or str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            if image.width * image.height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}x{image.height}")
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise LabelFormatError(f"{label}: image too large (decompression bomb?) {e}; refused") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise LabelFormatError(f"{label}: unreadable image ({e})") from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """Explicit conversions: 16-bit and 32-bit grayscale are scaled to 8 bits, RGBA is composited on black,
    palette and grayscale are expanded."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return np.repeat((array / peak * 255).round().clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"))


def image_size(source: Path | bytes, name: str = "") -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    label = name or str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{width}x{height}")
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
                return height, width
            return width, height
    except Image.DecompressionBombError as e:
        raise LabelFormatError(f"{label}: image too large (decompression bomb?) {e}; refused") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise LabelFormatError(f"{label}: unreadable image ({e})") from None
