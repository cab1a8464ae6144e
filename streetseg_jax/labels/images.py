"""Images from other people's exports, opened defensively: paths stay inside the export folder, decompression
bombs are refused, EXIF orientation is applied, and every mode (16-bit, grayscale, palette, RGBA) becomes RGB
explicitly."""
from __future__ import annotations

import errno
import fnmatch
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from streetseg_jax.labels.shapes import LabelFormatError

# Pillow warns of a possible decompression bomb beyond 89.5 megapixels and refuses twice that; we take images up to
# its refusal (a 100-megapixel medium-format photo is a photo; at 89.5 one was refused) and refuse beyond.
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
# Photo files we look for in folders (an image named explicitly may be any format Pillow reads).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class OutsideExportError(LabelFormatError):
    """A file name from an export that leads out of the export folder."""


def resolve_inside(root: Path, relative: str, what: str, source: Path | str, written: str | None = None) -> Path:
    """`root / relative`, refusing a path that escapes `root` (absolute paths, `..`, symlinks out) with
    OutsideExportError, and a name no file can have (a NUL byte, a part too long for the file system) with
    LabelFormatError: both come from files other people wrote, and must not reach the user as an OSError. The
    errors quote `written`, the name as the export has it, where `relative` is made of more."""
    shown = _short(relative if written is None else written)
    try:
        root = Path(root).resolve()
        candidate = (root / relative).resolve()
    except (OSError, ValueError) as e:
        raise LabelFormatError(f"{source}: {what} {shown} is not a usable file name ({_reason(e)})") \
            from None
    if not candidate.is_relative_to(root):
        through_link = Path(os.path.normpath(root / relative)).is_relative_to(root)
        why = (f" through a link (to {candidate}): links out of an export are not followed, so that an export made "
               "elsewhere cannot pull other files of this machine into a dataset; copy the files into the export"
               if through_link else "")
        raise OutsideExportError(f"{source}: {what} {shown} points outside the export folder {root}"
                                 f"{why}; refused")
    if _too_long(candidate):
        raise LabelFormatError(f"{source}: {what} {shown} is not a usable file name (too long)")
    return candidate


def files_under(folder: Path, pattern: str = "*", follow_links: bool = False) -> list[Path]:
    """The files below `folder` whose names match `pattern` (case-sensitive, like Path.rglob), sorted. Hidden
    files and folders are left out: macOS's ._IMG.jpg companions and .DS_Store, editors' .ipynb_checkpoints,
    version control. With `follow_links`, folders that are links are followed too, each real folder once. A link
    to a file that is gone is listed as the file it was: reading it says so, rather than its leaving silently."""
    return sorted(iter_files(folder, pattern, follow_links))


def iter_files(folder: Path, pattern: str = "*", follow_links: bool = False) -> Iterator[Path]:
    """files_under's files as the walk finds them, unsorted: for a question the first match answers."""
    seen = set()
    for root, dirs, names in os.walk(folder, followlinks=follow_links):
        real = os.path.realpath(root)
        dirs[:] = [] if real in seen else [d for d in dirs if not d.startswith(".")]
        if real not in seen:
            seen.add(real)
            yield from (path for path in (Path(root) / name for name in names
                                          if not name.startswith(".") and fnmatch.fnmatchcase(name, pattern))
                        if path.is_file() or path.is_symlink() and not path.exists())


def case_insensitive(folder: Path) -> bool:
    """Whether names that differ only in case are one file in `folder` (macOS and Windows disks): a probe file in
    its nearest existing folder tells; where none can be made, they are taken to be one."""
    existing = next(parent for parent in (folder, *folder.absolute().parents) if parent.is_dir())
    try:
        fd, probe = tempfile.mkstemp(prefix=".case-probe-", dir=existing)
    except OSError:
        return True
    os.close(fd)
    try:
        return Path(probe).with_name(Path(probe).name.swapcase()).exists()
    finally:
        os.unlink(probe)


def is_file(path: Path) -> bool:
    """Path.is_file that says False, not raises, for any path the file system cannot even look up."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def file_ids(paths) -> set[tuple[int, int]]:
    """(device, inode) of each path that is a file: one file under two names (a case-insensitive file system, a
    link) has one id. Paths that are not files are left out."""
    ids = set()
    for path in paths:
        try:
            status = os.stat(path)
        except (OSError, TypeError, ValueError):
            continue
        ids.add((status.st_dev, status.st_ino))
    return ids


def _too_long(path: Path) -> bool:
    # resolve() does not mind a part longer than the file system allows; the first stat of it raises ENAMETOOLONG.
    try:
        path.stat()
    except OSError as e:
        return e.errno == errno.ENAMETOOLONG
    return False


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _short(text, limit: int = 80) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def check_size(width: int, height: int, where: str) -> tuple[int, int]:
    """(width, height) of the image an annotation describes, refused unless both are positive and the mask (which
    is allocated before anything else is looked at) stays within MAX_PIXELS; readers parse the numbers first."""
    size = f"{_number(width)}x{_number(height)}"
    if width <= 0 or height <= 0:
        raise LabelFormatError(f"{where}: the annotation gives the image size {size}, which is not positive")
    if width * height > MAX_PIXELS:
        raise LabelFormatError(f"{where}: the annotation gives the image size {size}: too large, beyond the pixel "
                               f"limit of {MAX_PIXELS} pixels; refused")
    return width, height


def _number(value: int) -> str:
    # A JSON integer may have thousands of digits; a message needs only to say it is huge.
    text = str(value)
    return text if len(text) <= 20 else f"{text[:6]}...({len(text)} digits)"


def open_rgb(source: Path | bytes, name: str = "") -> np.ndarray:
    """uint8 (H, W, 3), upright as a viewer shows it (EXIF orientation applied)."""
    return open_photo(source, name)[0]


def open_photo(source: Path | bytes, name: str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """(open_rgb's image, its fully transparent pixels as an (H, W) bool array, or None for an image without
    transparency): what the RGB image shows black there is no part of the photo. `source`: a path, bytes or a
    binary file; LabelFormatError for a file that is no image, or too large."""
    if isinstance(source, Image.Image):     # "'JpegImageFile' object has no attribute 'read'"
        raise TypeError("open_photo reads a file (a path, bytes or a binary file), not a PIL image: "
                        "ImageOps.exif_transpose(image).convert('RGB') and np.asarray it")
    label = name or str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)     # MAX_PIXELS decides
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            if image.width * image.height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}x{image.height}")
            if orientation(image) != 1:     # read before the pixels, as image_size does: a PNG's eXIf after them
                image = ImageOps.exif_transpose(image)      # is no part of it there, nor here
            return to_rgb(image), _transparent(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise LabelFormatError(f"{label}: image too large (decompression bomb?) {e}; refused") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise _unreadable(label, source, e) from None


def rgb_array(image) -> np.ndarray:
    """`image` (an array, or a PIL RGB image) as a uint8 (H, W, 3) array; a ValueError that says what to pass for
    anything else, by its case (an empty, grey, RGBA, channels-first, float, 16-bit or bool array)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8 or not image.size:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}: {_rgb_advice(image)}")
    return image


def _rgb_advice(image: np.ndarray) -> str:
    """What to do with an array rgb_array refuses, by its case: its values first (to uint8), then its shape."""
    if not image.size:
        return "an empty image, with no pixels to predict or draw"
    shape = _shape_advice(image)
    if image.dtype == np.uint8:
        return shape or ("streetseg_jax.labels.images.open_photo(path) reads a photo as predict does (RGB, turned "
                         "upright as its EXIF says, and which pixels are transparent)")
    if image.dtype == bool:
        values = "a bool array: image.astype(np.uint8) * 255"
    else:
        values = (f"{image.dtype} values {np.nanmin(image):g}..{np.nanmax(image):g}: scale them to 0..255 and make "
                  "them uint8, e.g. (image * 255).round().astype(np.uint8) for floats 0..1, (image >> 8).astype("
                  "np.uint8) for 16-bit ones")
    return values + (f"; then, {shape}" if shape else "")


def _shape_advice(image: np.ndarray) -> str | None:
    """How to make a uint8 array of this shape (H, W, 3); None where it is that already, or nothing tells."""
    converts = "streetseg_jax.labels.images.to_rgb(PIL.Image.fromarray(image)) converts it as predict reads a photo"
    if image.ndim == 3 and image.shape[-1] == 1:
        return "a grey image: np.repeat(image, 3, axis=-1)"
    if image.ndim == 2:
        return f"a grey image: np.repeat(image[..., None], 3, axis=-1), or {converts}"
    if image.ndim == 3 and image.shape[-1] == 4:
        return f"an RGBA image: {converts} (composited on black), or image[..., :3] drops the alpha"
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] != 3:
        return "channels first (C, H, W): image.transpose(1, 2, 0) puts them last"
    return None


def to_rgb(image: Image.Image) -> np.ndarray:
    """Explicit conversions: 16-bit, 32-bit and float grayscale are scaled to 8 bits, RGBA is composited on black,
    palette and grayscale are expanded."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.nan_to_num(np.asarray(image, np.float64))
        return np.repeat((array / _peak(image.mode, array) * 255).round().clip(0, 255).astype(np.uint8)[..., None],
                         3, axis=-1)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"))


def _peak(mode: str, array: np.ndarray) -> float:
    """The value white has in a grey image of `mode`: 65535 for 16 bits; for 32-bit and float ones (which say no
    range) the least of 1 (a float image of 0..1), 255, 65535 that holds every value, else the image's largest
    (Pillow's own conversion clips: 0..1 became black, 32-bit values beyond 255 white)."""
    if mode.startswith("I;16"):
        return 65535.0
    largest = float(array.max(initial=0))
    return next((peak for peak in ((1.0,) if mode == "F" else ()) + (255.0, 65535.0) if largest <= peak), largest)


def _transparent(image: Image.Image) -> np.ndarray | None:
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return None
    transparent = np.asarray(image.convert("RGBA"))[..., 3] == 0
    return transparent if transparent.any() else None


def image_size(source, name: str = "") -> tuple[int, int]:
    """(width, height) as a viewer shows the image (EXIF orientation applied), from the file's header; `source` is
    a path, bytes or a binary file.

    A PNG's EXIF counts only when it comes before the pixels: Pillow would decode the whole file to look for it
    after them (a dataset build's full decode still catches a size that changes then)."""
    label = name or str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)     # MAX_PIXELS decides
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                width, height = _stored_size(image)
                if width * height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{width}x{height}")
                turned = orientation(image) in (5, 6, 7, 8)     # rotated by 90 or 270 degrees
        return (height, width) if turned else (width, height)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise LabelFormatError(f"{label}: image too large (decompression bomb?) {e}; refused") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise _unreadable(label, source, e) from None


def _stored_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the pixels as the file stores them: a TIFF's from its tags, since Pillow turns TIFFs
    upright itself and from Pillow 11 says their upright size before the pixels are read (turned twice, a TIFF of
    orientation 6 was taken as 96x128 where it shows 128x96)."""
    if image.format == "TIFF":
        width, height = image.tag_v2.get(256), image.tag_v2.get(257)
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return image.size


def _unreadable(label: str, source, error: Exception) -> LabelFormatError:
    path = Path(source) if isinstance(source, (str, Path)) else None
    if path is not None and path.is_symlink() and not path.exists():
        return LabelFormatError(f"{label}: a link to {os.readlink(path)}, which does not exist")
    if isinstance(error, FileNotFoundError):
        return LabelFormatError(f"{label}: image does not exist")
    empty = len(source) == 0 if isinstance(source, bytes) else path is not None and path.is_file() and \
        path.stat().st_size == 0
    return LabelFormatError(f"{label}: " + ("empty file (0 bytes), not an image" if empty
                                            else f"unreadable image ({error})"))


def orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: as stored); a broken EXIF block reads as 1, as viewers show such a file."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        return int(image.getexif().get(0x0112, 1))
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1


def is_rotated(source) -> bool:
    """Whether a viewer shows the image turned or flipped from how it is stored (False for unreadable files)."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return orientation(image) != 1
    except (OSError, ValueError, SyntaxError):
        return False
