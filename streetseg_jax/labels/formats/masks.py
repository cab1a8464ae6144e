"""Mask folders: images in one folder, one mask per image in another, matched by file stem.

Layouts recognised in the export folder (or in each of its direct subfolders, e.g. train/ and val/):
    images/ or JPEGImages/  +  masks/, labels/, annotations/, SegmentationClassPNG/ or SegmentationClass/
                                                 (CVAT's Segmentation mask export: its labelmap.txt is a label map)
    <name>/ + <name>annot/                       (SegNet's CamVid: train/ + trainannot/)
    a folder of images with `<stem>_mask.png` beside each    (Roboflow's semantic-segmentation export; its
                                                             _classes.csv is a label map: label_map_of_export)
Passing a mask folder itself (or one mask file) works too; its images are then looked for in the sibling folders
above, or, for Mapillary Vistas' <split>/v2.0/labels/ (a folder in a vN folder), in <split>/images/. Cityscapes'
*_gtFine_labelIds.png masks are not read here (their names do not match their photos', nor their values the label
map's ids): the messages say to read them with --format cityscapes (formats/cityscapes.py). Masks and images are
matched by their path below their folders without the suffix (`masks/a/b.png` goes with `images/a/b.jpg`); a mask
named `<stem>_mask`, `_label`, `_labels` or `_L` also matches `<stem>` (CamVid's original masks are `<stem>_L.png`).

Each image's key (Annotation.key: its mask's name, its split hash) is that path below the folders, prefixed with
the folders above the pair inside the export: `masks/seq1/frame_001.png` -> `seq1/frame_001`, and with split folders
`train/masks/a.png` -> `train/a`, so that `seq1/frame_001` and `seq2/frame_001`, or `a` in train/ and in val/, stay
apart. A mask at the top of its folder, in an export without split folders, keeps its plain stem.

What the pixel values mean, by the mask's PNG mode:
- greyscale (L, 16-bit I): class ids of the label map; 1-bit: 0 and 1, or 0 and 255 where a class of the label map
  has the value 255 (a black-and-white mask of a binary label map);
- palette (P): the palette INDEX is the class id (as VOC and labelme2voc write them), unless each index the mask
  uses has a colour of its own that is a class colour of the label map: then, as for RGB, the colours (an image
  editor that re-saved an RGB mask with a palette of its own order, where the index says nothing). Where most
  indices have class colours, two or more of them another class's than their own and fewer their own, the colours
  are read too, and a colour that is no class's is an error (an editor's palette with a stray, blended colour).
  PASCAL VOC's colour map is read by index where every index is a class id (or ignore), whatever colours the label
  map's classes share with it (CamVid's sky and tree are VOC's colours 7 and 3). A palette's transparent colour is
  ignore, as in RGBA;
- RGB: colours, mapped to ids through the label map's class colours. White (255, 255, 255) is the ignore colour, as
  the label map's own palette draws it, unless a class has that colour; the label map's `ignore_colors` name others
  instead (CamVid's own colour masks draw void black: "ignore_colors": [[0, 0, 0]]). RGBA: fully transparent pixels
  are ignore, any other alpha but opaque is an error.
In id masks, 255 and the label map's ignore id mean ignore; where the export's values are not the class ids (a binary
mask of 0 and 255, ids 0, 3 and 7, 0 for void), the label map's `values` and `ignore_values` say what each stands for
(and the palette's colours are then not looked at). Any other value is an error that names the value and the file,
and so is an unmapped colour. JPEG masks are refused: compression changes the values; GIF masks too (encoders
renumber the palette), and masks of several pages or frames.
Masks are taken as stored (no EXIF rotation): labelling tools write mask pixels upright.

Each mask becomes one raster Shape per class present (label = the class name) and one `ignore` raster Shape; they
cover every pixel exactly once, so convert.annotation_to_mask gives back exactly the mask.
"""
from __future__ import annotations

import collections
import functools
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from streetseg_jax.labels.formats import cityscapes
from streetseg_jax.labels.images import IMAGE_SUFFIXES, MAX_PIXELS, files_under, iter_files, resolve_inside
from streetseg_jax.labels.label_map import voc_color
from streetseg_jax.labels.shapes import (IGNORE_LABEL, Annotation, LabelFormatError, Shape, export_split, make_key,
                                         read_each)

IMAGE_DIRS = ("images", "JPEGImages")
MASK_DIRS = ("masks", "labels", "annotations", "SegmentationClassPNG", "SegmentationClass")
_MASK_SUFFIXES = {".png", ".bmp", ".tif", ".tiff"}
_REFUSED_SUFFIXES = {".jpg", ".jpeg", ".gif"}      # found, to be refused with the reason
_MASK_NAME_ENDINGS = ("_mask", "_labels", "_label", "_L")
BESIDE_ENDING = "_mask"        # a mask kept beside its image: a.jpg and a_mask.png
_ID_MODES = ("L", "1", "I", "I;16", "I;16L", "I;16B", "P")
_TRANSPARENT = 1 << 24          # no packed RGB colour reaches this: marks fully transparent pixels
_VOC_COLOUR_MAP = [voc_color(i) for i in range(255)]


def read(path: Path, label_map) -> list[Annotation]:
    """One annotation per mask file of every image/mask folder pair found under `path` (see the docstring)."""
    path = Path(path)
    if path.is_file():
        return [read_mask(path, label_map, _image_for_file(path))]
    pairs = find_pairs(path)
    if not pairs:
        raise LabelFormatError(f"{path}: no mask folder found; expected images/ (or JPEGImages/) beside one of "
                               f"{', '.join(d + '/' for d in MASK_DIRS)}, or <name>/ beside <name>annot/"
                               + _empty_mask_dirs(path) + cityscapes.label_id_masks_hint(path))
    jobs = []               # one per mask, of every folder pair: the problems of all of them are told at once
    for image_dir, mask_dir in pairs:
        images = _files(image_dir, IMAGE_SUFFIXES) if image_dir else {}
        masks = _files(mask_dir, _MASK_SUFFIXES | _REFUSED_SUFFIXES)
        above = _folders_above(mask_dir, path)
        if image_dir is not None and mask_dir.name == f"{image_dir.name}annot":     # SegNet's train/ + trainannot/
            above = (*above, image_dir.name)        # its folder in the key, as train/ in train/images + train/masks
        if image_dir == mask_dir:         # side by side: the masks are the files named <stem>_mask
            images = {key: p for key, p in images.items() if not key.endswith(BESIDE_ENDING)}
            masks = {key: p for key, p in masks.items() if key.endswith(BESIDE_ENDING)}
            above = mask_dir.relative_to(path).parts if mask_dir.is_relative_to(path) else ()
        split = export_split(above[-1] if above else mask_dir.name.removesuffix("annot"))    # train/masks, valannot
        listed = _image_set_splits(mask_dir.parent) if split is None else {}
        pair = functools.partial(_read_pair_mask, label_map=label_map, images=images, image_dir=image_dir,
                                 above=above, split=split, listed=listed)
        jobs += [functools.partial(pair, key, mask) for key, mask in sorted(masks.items())]
    if not jobs:
        raise LabelFormatError(f"{path}: the mask folders ({', '.join(str(m) for _, m in pairs)}) hold no masks")
    return read_each(jobs, lambda job: job())


def _read_pair_mask(key: str, mask: Path, *, label_map, images: dict[str, Path], image_dir: Path | None,
                    above: tuple[str, ...], split: str | None, listed: dict[str, str]) -> Annotation:
    """One mask of a folder pair, with its image, key (the folders `above` the pair, then its path below them) and
    split (the pair's folder's, else the subset lists' `listed`)."""
    image = _match(key, images, mask, image_dir)
    annotation = read_mask(mask, label_map, image)
    below = image[0].with_suffix("").as_posix() if image else key
    annotation.key = make_key([*above, *below.split("/")], str(mask))
    annotation.split = split or listed.get(below) or listed.get(Path(below).name)
    return annotation


def _image_set_splits(folder: Path) -> dict[str, str]:
    """{image stem: split} from the subset lists of a VOC layout (ImageSets/Segmentation/train.txt, val.txt ...:
    CVAT's Segmentation mask export, PASCAL VOC); lists of no split's name (CVAT's default.txt, VOC's trainval.txt)
    are left out, and so is a stem two splits list."""
    splits: dict[str, set[str]] = {}
    for listing_file in sorted((folder / "ImageSets" / "Segmentation").glob("*.txt")):
        split = export_split(listing_file.stem)
        try:
            lines = listing_file.read_text(encoding="utf-8-sig", errors="replace").splitlines() if split else []
            stems = [line.strip() for line in lines if line.strip()]       # one per line, spaces and all
        except OSError:
            continue
        for stem in stems:
            splits.setdefault(stem, set()).add(split)
    return {stem: named.pop() for stem, named in splits.items() if len(named) == 1}


def looks_like(path: Path) -> bool:
    """An image/mask folder pair (both present) with at least one mask, and no JSON or XML annotation file at the
    top or in the mask folder (a COCO panoptic export also has images and PNG masks, but its segments are in JSON)."""
    path = Path(path)
    if not path.is_dir() or _has_annotation_files(path):
        return False
    return any(i is not None and _has_masks(m, _MASK_SUFFIXES) and not _has_annotation_files(m)
               for i, m in find_pairs(path))


def find_pairs(path: Path) -> list[tuple[Path | None, Path]]:
    """(image folder or None, mask folder) pairs in `path`, else in its direct subfolders; `path` may be a mask
    folder itself."""
    path = Path(path)
    if _is_mask_dir(path):
        return [(_sibling_images(path), path)]
    pairs = _pairs_in(path)
    if not pairs:
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            pairs.extend(_pairs_in(sub))
    return pairs


def read_mask(path: str | Path, label_map, image: tuple[Path, Path] | None = None) -> Annotation:
    """One mask file; `image` is (its path relative to the images folder, the file) when known."""
    path = Path(path)
    ids = mask_ids(path, label_map)
    height, width = ids.shape
    shapes = []
    for value in np.unique(ids).tolist():
        ignore = value == label_map.ignore_id
        name = IGNORE_LABEL if ignore else label_map.classes[value].name
        shapes.append(Shape(name, np.zeros((0, 2)), ignore=ignore, raster=ids == value))
    annotation = Annotation(path, image[0].as_posix() if image else "", width, height, shapes)
    annotation.image_path = image[1] if image else None
    return annotation


def mask_ids(path: Path, label_map) -> np.ndarray:
    """(H, W) uint8 class ids of a mask file, ignore pixels set to the label map's ignore id."""
    mode, pixels, palette, transparent = stored_pixels(path)
    if transparent is not None:             # a palette's transparent colour: ignore, as RGBA's alpha 0
        shown = pixels[~transparent][:1].max(initial=0)        # any index the mask shows stands in for them
        ids = _palette_ids(np.where(transparent, shown, pixels), palette, path, label_map)
        return np.where(transparent, label_map.ignore_id, ids).astype(np.uint8)
    if mode == "P":
        return _palette_ids(pixels, palette, path, label_map)
    if mode == "1":
        return _ids_from_values(np.where(pixels, _white_value(label_map), 0), path, label_map, mode)
    if mode in _ID_MODES:
        return _ids_from_values(pixels.astype(np.int64), path, label_map, mode)
    if mode in ("RGB", "RGBA"):
        return _ids_from_colours(pixels, path, label_map)
    raise LabelFormatError(f"{path}: mask mode {mode} is not supported; use 8-bit greyscale or palette PNGs (class "
                           "ids) or RGB PNGs (class colours)")


# --- what masks hold, for a label map of them ------------------------------------------------------------------------

def survey(path: Path) -> tuple[str, collections.Counter, collections.Counter]:
    """What the masks read() would read hold, with no label map to read them by (`labels classes` makes one of it):
    (kind, {value: pixels}, {value: masks holding it}); kind "values" where they are greyscale or palette masks
    (their pixel values, a palette's indices), "colours" where RGB(A) (packed colours; transparent pixels left out).
    LabelFormatError for masks that cannot be read, and for an export of both kinds."""
    found = read_each(_mask_files(Path(path)), lambda mask: (mask, *_pixel_counts(mask)))
    kinds = collections.Counter(kind for _, kind, _ in found)
    if len(kinds) > 1:
        first = {kind: mask for mask, kind, _ in reversed(found)}
        raise LabelFormatError(f"{path}: {kinds['values']} mask(s) hold pixel values (greyscale or palette, such as "
                               f"{first['values']}) and {kinds['colours']} hold colours (RGB, such as "
                               f"{first['colours']}): "
                               "no label map can be made of both: give --label_map one written by hand (class "
                               "colours for the RGB masks, ids or \"values\" for the others), or save the masks alike")
    pixels, masks = collections.Counter(), collections.Counter()
    for _, _, counts in found:
        pixels.update(counts)
        masks.update(counts.keys())
    return found[0][1], pixels, masks


def _mask_files(path: Path) -> list[Path]:
    """The mask files read() reads at `path` (a mask file itself, or an export of folder pairs)."""
    if path.is_file():
        return [path]
    files = []
    for image_dir, mask_dir in find_pairs(path):
        masks = _files(mask_dir, _MASK_SUFFIXES | _REFUSED_SUFFIXES)
        files += [mask for key, mask in sorted(masks.items())
                  if image_dir != mask_dir or key.endswith(BESIDE_ENDING)]       # side by side: <stem>_mask only
    if not files:
        raise LabelFormatError(f"{path}: no masks found; expected images/ (or JPEGImages/) beside one of "
                               f"{', '.join(d + '/' for d in MASK_DIRS)}, or <name>/ beside <name>annot/")
    return files


def _pixel_counts(path: Path) -> tuple[str, dict[int, int]]:
    """("values", {pixel value: pixels}) of a greyscale or palette mask, ("colours", {packed colour: pixels}) of
    an RGB(A) one; a palette's transparent pixels and RGBA's are left out (ignore, as read() takes them)."""
    mode, pixels, _, transparent = stored_pixels(path)
    if mode in ("RGB", "RGBA"):
        kind, found = "colours", _packed(pixels)
        shown = ~_transparent(pixels, path) if mode == "RGBA" else np.ones(found.shape, bool)
    elif mode in _ID_MODES:
        kind, found = "values", pixels.astype(np.int64)
        shown = ~transparent if transparent is not None else np.ones(found.shape, bool)
    else:
        raise LabelFormatError(f"{path}: mask mode {mode} is not supported; use 8-bit greyscale or palette PNGs "
                               "(class ids) or RGB PNGs (class colours)")
    values, counts = np.unique(found[shown], return_counts=True)
    return kind, dict(zip(values.tolist(), counts.tolist()))


# --- folders ---------------------------------------------------------------------------------------------------------

def _pairs_in(folder: Path) -> list[tuple[Path | None, Path]]:
    children = {p.name: p for p in folder.iterdir() if p.is_dir()}
    image_dir = next((children[n] for n in IMAGE_DIRS if n in children), None)
    mask_dirs = [children[n] for n in MASK_DIRS if n in children and _has_masks(children[n])]
    pairs = [(image_dir, mask_dirs[0])] if mask_dirs else []          # image_dir None: an export without images
    for name in sorted(children):
        if name.endswith("annot") and name[:-len("annot")] in children:
            pairs.append((children[name[:-len("annot")]], children[name]))
    if not pairs and any(p.stem.endswith(BESIDE_ENDING) and p.suffix.lower() in _MASK_SUFFIXES
                         for p in folder.iterdir() if p.is_file()):
        pairs.append((folder, folder))
    return pairs


def _folders_above(mask_dir: Path, export: Path) -> tuple[str, ...]:
    """The folders between the export and the mask folder's parent (a split folder such as train/), if any."""
    parent = mask_dir.parent
    return parent.relative_to(export).parts if parent.is_relative_to(export) else ()


def _empty_mask_dirs(path: Path) -> str:
    """"; masks/ holds no mask image (...)" for the mask folders in `path` or its subfolders that hold none: the
    message said none was found, beside a masks/ of .npy files."""
    parents = [path, *(p for p in path.iterdir() if p.is_dir())]
    folders = [d for parent in parents for d in parent.iterdir() if d.is_dir() and _is_mask_dir(d)]
    said = []
    for folder in (f for f in folders if not _has_masks(f)):
        suffixes = collections.Counter(p.suffix.lower() or "(none)" for p in iter_files(folder))
        found = ", ".join(f"{n} {suffix}" for suffix, n in suffixes.most_common(3)) or "nothing"
        said.append(f"{folder.relative_to(path).as_posix()}/ holds no mask image "
                    f"({'/'.join(s[1:].upper() for s in sorted(_MASK_SUFFIXES))}): it holds {found}")
    return "; " + "; ".join(said) if said else ""


def _is_mask_dir(path: Path) -> bool:
    return path.name in MASK_DIRS or (path.name.endswith("annot") and len(path.name) > len("annot"))


def _sibling_images(mask_dir: Path) -> Path | None:
    """The image folder beside a mask folder, else, for Mapillary Vistas' <split>/v2.0/labels/, its <split>/images/
    (only there: an unrelated images/ two folders up was paired with a mask folder's masks)."""
    names = IMAGE_DIRS + ((mask_dir.name[:-len("annot")],) if mask_dir.name.endswith("annot") else ())
    versioned = re.fullmatch(r"v\d+(\.\d+)*", mask_dir.parent.name)
    near = [mask_dir.parent / n for n in names] + [mask_dir.parent.parent / n for n in IMAGE_DIRS if versioned]
    return next((folder for folder in near if folder.is_dir()), None)


def _has_masks(folder: Path, suffixes: set[str] = _MASK_SUFFIXES | _REFUSED_SUFFIXES) -> bool:
    return any(p.suffix.lower() in suffixes for p in iter_files(folder))


def _has_annotation_files(folder: Path) -> bool:
    return any(p.suffix.lower() in (".json", ".xml", ".ndjson") and not _is_label_list(p) for p in folder.iterdir())


def _is_label_list(path: Path) -> bool:
    """Class lists people keep beside masks (label_map.json, labels.json, classes.json) are no annotations."""
    return any(word in path.stem.lower() for word in ("label", "class", "palette", "color", "colour"))


def _files(folder: Path, suffixes: set[str]) -> dict[str, Path]:
    """Files below `folder` keyed by their relative path without suffix; a key taken twice is an error."""
    found: dict[str, Path] = {}
    for path in files_under(folder):
        if path.suffix.lower() not in suffixes:
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            raise LabelFormatError(f"{folder}: {found[key].name} and {path.name} share a name; which one is meant?")
        found[key] = path
    return found


def _match(key: str, images: dict[str, Path], mask: Path, image_dir: Path | None) -> tuple[Path, Path] | None:
    """(relative path, resolved file) of the image for a mask key (exactly, or without a mask-name ending);
    an image that is a symlink out of its folder is refused."""
    candidates = [key] + [key[:-len(end)] for end in _MASK_NAME_ENDINGS if key.endswith(end)]
    image = next((images[k] for k in candidates if k in images), None)
    if image is None:
        return None
    relative = image.relative_to(image_dir)
    return relative, resolve_inside(image_dir, relative.as_posix(), "image", mask)


def _image_for_file(mask: Path) -> tuple[Path, Path] | None:
    image_dir = _sibling_images(mask.parent)
    return image_dir and _match(mask.stem, _files(image_dir, IMAGE_SUFFIXES), mask, image_dir)


# --- pixel values ----------------------------------------------------------------------------------------------------

def stored_pixels(path: Path) -> tuple[str, np.ndarray, list[int] | None, np.ndarray | None]:
    """The mask's mode, pixels as stored (a palette image gives its indices), palette (r, g, b, r, ...; None but in
    mode P) and a palette's fully transparent pixels (None where it has none); too large (Pillow's bomb limit),
    unreadable or many-paged files are LabelFormatErrors, and so are GIF and JPEG masks."""
    if path.suffix.lower() == ".gif":
        raise LabelFormatError(f"{path}: GIF masks are refused: GIF encoders renumber the palette, so its indices "
                               "are not the class ids; save masks as PNG")
    if path.suffix.lower() in _REFUSED_SUFFIXES:
        raise LabelFormatError(f"{path}: JPEG masks are refused: JPEG compression changes pixel values near every "
                               "edge; save masks as PNG")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)     # MAX_PIXELS decides
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{image.width}x{image.height}")
                if getattr(image, "n_frames", 1) > 1:
                    raise LabelFormatError(f"{path}: the mask has {image.n_frames} pages (frames); a mask is one "
                                           "image of class ids or colours: save each as a PNG of its own")
                palette = image.getpalette() if image.mode == "P" else None
                transparent = (np.asarray(image.convert("RGBA"))[..., 3] == 0
                               if image.mode == "P" and "transparency" in image.info else None)
                return image.mode, np.asarray(image), palette, \
                    transparent if transparent is not None and transparent.any() else None
    except Image.DecompressionBombError as e:
        raise LabelFormatError(f"{path}: mask too large (decompression bomb?) {e}; refused") from None
    except LabelFormatError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise LabelFormatError(f"{path}: " + ("empty file (0 bytes), not a mask image" if _is_empty(path)
                                             else f"unreadable mask image ({e})")) from None


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _white_value(label_map) -> int:
    """The value a 1-bit mask's set pixels stand for: 255 where a class of the label map has that value (white, as
    viewers and Pillow's own conversion read them: a binary mask of 0 and 255), else 1 (ids 0 and 1)."""
    return 255 if 0 <= label_map.value_table()[255] != label_map.ignore_id else 1


def _palette_ids(indices: np.ndarray, palette: list[int] | None, path: Path, label_map) -> np.ndarray:
    """A palette mask's class ids: by its colours or by its indices (the module's docstring says when which)."""
    used = np.unique(indices).tolist() if palette else []
    if palette and not _indices_are_ids(palette, used, label_map):
        if (by_colour := _ids_from_palette(indices, used, palette, label_map)) is not None:
            return by_colour
        if _colours_disagree(used, palette, label_map):
            colours = np.array((palette + [0] * 768)[:768], np.uint8).reshape(256, 3)
            try:
                return _ids_from_colours(colours[indices], path, label_map)
            except LabelFormatError as e:
                raise LabelFormatError(f"{e} (a palette mask whose colours are class colours of classes other than "
                                       "their indices: its indices do not look like class ids, so its colours were "
                                       "read; if they are class ids, give the label map \"ignore_values\" (e.g. "
                                       "[255]), and a palette's colours are not looked at)") from None
    return _ids_from_values(indices.astype(np.int64), path, label_map, "P")


def _indices_are_ids(palette: list[int], used: list[int], label_map) -> bool:
    """Whether a palette mask's indices are the class ids whatever its colours: the label map's `values` or
    `ignore_values` say what each value stands for, or the palette is PASCAL VOC's colour map (labelme2voc's and
    VOC's own masks: index = class id; CamVid's sky and tree are VOC's colours 7 and 3, so the colours were read)
    and every index `used` is a class id or ignore (a label map of a few VOC classes in their VOC colours, person
    and car as classes 1 and 2, reads VOC's indices 15 and 7 by their colours, as before)."""
    if label_map.ignore_values is not None or any(c.values for c in label_map.classes):
        return True
    ids = set(range(label_map.num_classes)) | {255, label_map.ignore_id}
    return _is_voc(palette) and set(used) <= ids


_VOC_CLASSES = 21       # VOC's colour map is known by its first 21 colours (its classes) at least


def _is_voc(palette: list[int]) -> bool:
    """Whether the palette is PASCAL VOC's colour map: every colour it has is VOC's at its index (but 255, which
    tools paint white as often as VOC's cream), and it has VOC's 21 class colours at least."""
    colours = [tuple(palette[3 * i:3 * i + 3]) for i in range(min(len(palette) // 3, 255))]
    return len(colours) >= _VOC_CLASSES and colours == _VOC_COLOUR_MAP[:len(colours)]


def _ids_from_palette(indices: np.ndarray, used: list[int], palette: list[int], label_map) -> np.ndarray | None:
    """Class ids by the palette's colours, where every index `used` (but the ignore values) has a colour of its own
    that is a class colour of the label map; None otherwise (a black-and-white or blank palette among them): the
    index is the class id."""
    table = {colour: i for colour, i in _colour_table(label_map).items() if i != label_map.ignore_id}
    used = [i for i in used if i not in (255, label_map.ignore_id)]
    colours = [_pack(palette[3 * i:3 * i + 3]) if len(palette) >= 3 * i + 3 else None for i in used]
    if len(set(colours)) < len(colours) or any(colour not in table for colour in colours):
        return None
    lookup = np.full(256, label_map.ignore_id, np.uint8)        # 255 and the ignore id stay ignore
    lookup[used] = [table[colour] for colour in colours]
    return lookup[indices]


def _colours_disagree(used: list[int], palette: list[int], label_map) -> bool:
    """Whether most indices `used` have class colours (the label map's palette in an editor's order, with a stray
    colour or two), two or more of them the colours of classes other than their own, and fewer their own class's
    (one such is a coincidence of palettes; a blank palette's black, one class; a few among a tool's own colours
    too)."""
    table = _colour_table(label_map)
    used = [i for i in used if 3 * i + 3 <= len(palette) and i not in (255, label_map.ignore_id)]
    owners = [table.get(_pack(palette[3 * i:3 * i + 3])) for i in used]
    other = {o for i, o in zip(used, owners) if o not in (None, i, label_map.ignore_id)}
    own = sum(o == i for i, o in zip(used, owners))
    coloured = sum(o is not None for o in owners)
    return len(other) >= 2 and len(other) > own and 2 * coloured > len(used)


def _ids_from_values(values: np.ndarray, path: Path, label_map, mode: str) -> np.ndarray:
    """Class ids (or the ignore id) of the label map's `value_table`: a class's values, else its id; 255 and the
    ignore id, or its ignore_values, for no class."""
    inside = (values >= 0) & (values < 1 << 16)
    ids = np.where(inside, label_map.value_table()[np.where(inside, values, 0)], -1)
    bad = ids < 0
    if bad.any():
        unknown = np.unique(values[bad]).tolist()
        raise LabelFormatError(
            f"{path}: {_values_named(values, unknown)} (mode {mode} mask) {'stand' if len(unknown) > 1 else 'stands'} "
            f"for no class of the label map ({_value_ranges(label_map)}) nor for none "
            f"({', '.join(map(str, label_map.mask_ignore_values())) or 'no value'}); a class's \"values\" in the "
            "label map say which values stand for it, e.g. {\"id\": 1, \"name\": \"crack\", \"values\": [255]}, and "
            f"\"ignore_values\" those that stand for none (void), e.g. \"ignore_values\": "
            f"{sorted({*label_map.mask_ignore_values(), unknown[0]})}")
    return ids.astype(np.uint8)


_NAMED = 3        # values outside the label map named with where they are; the rest are listed
_LISTED = 10


def _values_named(values: np.ndarray, bad: list[int]) -> str:
    """"pixel value 9 (2 pixels, first at row 3, column 4)", or several so, then the rest by value alone."""
    said = []
    for value in bad[:_NAMED]:
        row, col = (int(v[0]) for v in np.nonzero(values == value))
        said.append(f"{value} ({int((values == value).sum())} pixels, first at row {row}, column {col})")
    rest = bad[_NAMED:]
    if rest:
        listed = ", ".join(map(str, rest[:_LISTED])) + (", ..." if len(rest) > _LISTED else "")
        said.append(f"{len(rest)} more ({listed})")
    return f"pixel value{'s' if len(bad) > 1 else ''} " + (", ".join(said[:-1]) + " and " + said[-1]
                                                            if len(said) > 1 else said[0])


def _value_ranges(label_map) -> str:
    if not any(c.values for c in label_map.classes):
        return f"0..{label_map.num_classes - 1}"
    return ", ".join(f"{c.name} {'/'.join(map(str, c.values or (c.id,)))}" for c in label_map.classes)


def _ids_from_colours(pixels: np.ndarray, path: Path, label_map) -> np.ndarray:
    packed = _packed(pixels)
    if pixels.shape[-1] == 4:
        packed[_transparent(pixels, path)] = _TRANSPARENT
    table = _colour_table(label_map)
    colours, inverse, counts = np.unique(packed, return_inverse=True, return_counts=True)
    unmapped = {colour: count for colour, count in zip(colours.tolist(), counts.tolist()) if colour not in table}
    if unmapped:
        _unmapped_colour(unmapped, packed, pixels, path, label_map)
    ids = np.array([table[c] for c in colours.tolist()], np.uint8)
    return ids[inverse.reshape(packed.shape)]


def _transparent(pixels: np.ndarray, path: Path) -> np.ndarray:
    alpha = pixels[..., 3]
    partial = (alpha > 0) & (alpha < 255)
    if partial.any():
        row, col = (int(v[0]) for v in np.nonzero(partial))
        raise LabelFormatError(f"{path}: semi-transparent pixels (first at row {row}, column {col}, alpha "
                               f"{int(alpha[row, col])}) have no single colour; use opaque colours, or alpha 0 for "
                               "ignore")
    return alpha == 0


def _colour_owners(label_map) -> dict[tuple[int, ...], list[str]]:
    owners: dict[tuple[int, ...], list[str]] = {}
    for c in label_map.classes:
        owners.setdefault(tuple(c.color), []).append(c.name)
    return owners


def _colour_table(label_map) -> dict[int, int]:
    """Packed colour -> class id. Colours two classes share are left out (an error when a mask uses them); the
    ignore colours (white, or the label map's ignore_colors) and transparency mean ignore."""
    owners = _colour_owners(label_map)
    table = {_pack(c.color): c.id for c in label_map.classes if len(owners[tuple(c.color)]) == 1}
    for colour in label_map.mask_ignore_colors():
        table[_pack(colour)] = label_map.ignore_id
    table[_TRANSPARENT] = label_map.ignore_id
    return table


_SMOOTHED = 8      # more colours than this that are no class's: blended on the way, or another label map's
_NEAR = 40         # a colour this close to a class colour (in every channel) is that colour, changed on the way


def _unmapped_colour(unmapped: dict[int, int], packed: np.ndarray, pixels: np.ndarray, path: Path, label_map) -> None:
    """LabelFormatError naming the first of the colours that are no class's ({packed colour: pixels})."""
    colour = next(iter(unmapped))
    rgb = unpack(colour)
    row, col = (int(v[0]) for v in np.nonzero(packed == colour))
    where = f"{path}: colour {rgb} ({unmapped[colour]} pixels, first at row {row}, column {col})"
    owners = _colour_owners(label_map).get(rgb, [])
    if len(owners) > 1:
        raise LabelFormatError(f"{where} belongs to several classes of the label map ({', '.join(owners)}); give "
                               "each class its own colour")
    grey = bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())
    hint = ("; every pixel is grey: if the values are class ids, save the mask as 8-bit greyscale (mode L)"
            if grey else "")
    if len(unmapped) > _SMOOTHED and not grey:
        hint = f"; {len(unmapped)} colours of this mask are no class's" + (
            ": its edges were blended on the way (JPEG compression, resizing or smoothing, anti-aliased drawing); "
            "export the mask again as PNG, unscaled and drawn without anti-aliasing"
            if _mostly_near(unmapped, label_map) else
            ", most far from every class colour: were the masks drawn with another label map? (--label_map)")
    if not hint:
        hint = (f"; a label map's \"ignore_colors\" names the colours that stand for no class, e.g. "
                f"\"ignore_colors\": [{list(rgb)}]")
    ignore = " or ".join(str(colour) for colour in label_map.mask_ignore_colors()) or "no colour"
    raise LabelFormatError(f"{where} is not the colour of any class in the label map (nor of ignore: {ignore}){hint}")


def _mostly_near(unmapped: dict[int, int], label_map) -> bool:
    """Whether most pixels of the colours that are no class's are near a class colour (JPEG's flat areas, off by
    a few values): a mask changed on the way, not one of another label map (the 4,096 commonest colours looked at)."""
    commonest = sorted(unmapped.items(), key=lambda item: -item[1])[:4096]
    packed = np.array([colour for colour, _ in commonest], np.int64)
    rgb = np.stack(unpack(packed), axis=-1)
    classes = np.array([c.color for c in label_map.classes], np.int64)
    near = (np.abs(rgb[:, None, :] - classes[None, :, :]).max(axis=-1) <= _NEAR).any(axis=-1)
    counts = np.array([count for _, count in commonest])
    return counts[near].sum() * 2 > counts.sum()


def _packed(pixels: np.ndarray) -> np.ndarray:
    """An RGB(A) image's colours as one integer each, as _pack packs one."""
    rgb = pixels[..., :3].astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _pack(colour) -> int:
    r, g, b = (int(v) for v in colour)
    return (r << 16) | (g << 8) | b


def unpack(colour):
    """(r, g, b) of a packed colour (survey's, _pack's), or three arrays of an array of them."""
    return (colour >> 16) & 255, (colour >> 8) & 255, colour & 255
