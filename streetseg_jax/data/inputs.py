"""What a street_seg build reads from a labelling-tool export, and what it checks and records before TFDS writes.

    collect()        read the export with its format's reader (labels/formats), find every image, validate
                     everything (labels/validate.py) and assign the splits
    fingerprint()    the build's inputs: every file of the export folder (name, size, content hash), the label map
                     and the options; `changes()` says in words what differs between two fingerprints
    encode_example() the per-image work, run in worker processes: the mask and the image's RGB pixels

Content hashes, not modification times: copying an export (cp, unzip, a cloud sync) changes every mtime without
changing a pixel, and an edit that keeps a file's size and mtime (rsync -t, a tool restoring timestamps) would go
unnoticed. Hashing reads the export once, which is cheap next to decoding its images. Every file under the
folder counts (hidden ones excepted), not only those a reader opened: some readers consult side files
(Mapillary's config, Labelbox masks), and a file that changes without mattering costs one rebuild, not a stale
dataset.

Splits: by a hash of the image key (labels/shapes.image_key: the image's file stem, or `<subset>/<stem>` and
the like where a reader knows stems repeat; the stem where formats.read added folders), so an image keeps its split
when others are added; or from a split file of `split<TAB>key` lines (a plain stem will do for a nested key when no
other image has that stem), which keeps consecutive video frames together.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from streetseg_jax.labels import formats
from streetseg_jax.labels.convert import UnknownLabelsError, annotation_to_mask, find_unknown_labels, read_mask_png
from streetseg_jax.labels.images import files_under, open_photo, open_rgb
from streetseg_jax.labels.label_map import LabelMap, label_map_change
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, base_name, export_split, listing
from streetseg_jax.labels.validate import EMBEDDED, CheckOptions, Report, error_listing, kept_mask_path, validate

SPLIT_NAMES = ("train", "validation", "test")
_POOL_MIN_ITEMS = 32        # below this, starting worker processes costs more than it saves
_LISTED = 10                # names listed per kind of change


class BuildError(ValueError):
    """Input that cannot be built into the dataset; the message says what is wrong and where."""


@dataclasses.dataclass
class ExportPlan:
    """An export read and checked: what the builder turns into examples."""
    format: str
    folder: Path
    annotations: list[Annotation]
    report: Report
    splits: dict[str, list[int]]        # split name -> indices into annotations, by key order
    notes: list[str] = dataclasses.field(default_factory=list)   # e.g. a split left out
    fingerprint: dict | None = None     # of the inputs, when the caller made one already
    mask_dir: Path | None = None        # the masks the validation drew (validate.kept_mask_path)

    def split_items(self, split: str) -> list[tuple[Annotation, str]]:
        return [(self.annotations[i], self.report.files[i].key) for i in self.splits[split]]

    def raise_for_errors(self) -> None:
        """Unknown class names first (one message naming every file), then every other error; where files could
        not be read, every error at once, theirs first."""
        if not self.report.unreadable and any("unknown class name" in e for _, e in self.report.errors):
            unknown = find_unknown_labels(self.annotations, self.report.label_map)
            raise UnknownLabelsError(unknown, self.report.label_map)
        if self.report.errors:
            raise BuildError(error_listing(self.report))


@dataclasses.dataclass(frozen=True)
class SplitRule:
    holdout: str = "validation"         # the split that `fraction` of the images go to
    fraction: float = 0.2
    split_file: Path | None = None      # overrides fraction when given
    by_order: list[str] | None = None   # keys in order: hold out the last images (synthetic scenes) not a hash
    follow_export: bool = False         # the export's own splits (Annotation.split): see assign_splits


# --- collecting --------------------------------------------------------------------------------------------------
def collect(folder: Path, fmt: str, label_map: LabelMap, rule: SplitRule, *, unknown: str = "error",
            map_fn: Callable = map, mask_dir: Path | None = None, files: dict | None = None) -> ExportPlan:
    """Read the export in `folder`, validate it and assign splits; errors are left in the report (see
    ExportPlan.raise_for_errors), so the report can be shown first. With `mask_dir`, the masks the validation
    draws are kept there for the build; with `files` (the fingerprint's: path -> [size, hash]), a photo in two
    splits is warned of."""
    if fmt == formats.AUTO:
        fmt = detect_format(folder)
    annotations, unreadable = read_export(fmt, Path(folder), label_map)
    options = CheckOptions(unknown=unknown, mask_dir=None if mask_dir is None else str(mask_dir))
    report = validate(annotations, label_map, fmt=fmt, source=folder, root=Path(folder), options=options,
                      map_fn=map_fn, unreadable=unreadable)
    for file in report.files:
        if not _is_text(file.key):
            raw = file.key.encode("utf-8", "surrogateescape")
            file.errors.append(f"{raw!r}: the file name is not UTF-8 (another encoding's bytes, as old zip files keep "
                               "them); a dataset keeps names as text: rename it")
    splits, notes = assign_splits([f.key for f in report.files], rule,
                                  [a.split_key or f.key for a, f in zip(annotations, report.files)],
                                  [a.split for a in annotations])
    if files is not None:
        notes += photos_in_two_splits(annotations, [f.key for f in report.files], splits, Path(folder), files)
    notes += unlabelled_splits(splits, report) + unlearnt_classes(splits, report)
    return ExportPlan(fmt, Path(folder), annotations, report, splits, notes, mask_dir=mask_dir)


def unlabelled_splits(splits: dict[str, list[int]], report) -> list[str]:
    """A warning for each split that has no labelled pixel (every one the ignore id): a run refuses to train or
    evaluate on it."""
    return [f"warning: no pixel of the {split} split's {len(rows)} image(s) is labelled (every one is the ignore id "
            f"{report.label_map.ignore_id}): a run refuses to train or evaluate on it; label some, or choose other "
            "splits" for split, rows in splits.items()
            if rows and not any(sum(report.files[i].class_pixels) for i in rows)]


def unlearnt_classes(splits: dict[str, list[int]], report) -> list[str]:
    """A warning for each held-out split with pixels of a class the train split has none of: the model cannot learn
    it, and its IoU there is 0 (or nothing where it is never predicted) whatever the training."""
    if not splits.get("train"):
        return []
    in_train = report.class_pixels(splits["train"])
    found = []
    for split, rows in splits.items():
        held_out = report.class_pixels(rows)
        missing = [c.name for c in report.label_map.classes if held_out[c.id] and not in_train[c.id]]
        if split != "train" and missing:
            found.append(f"warning: the {split} split has pixels of {', '.join(map(repr, missing))}, which no image of "
                         "the train split has: the model cannot learn them, and they score 0 there; move some of "
                         "their images to train (--split_file)")
    return found


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:      # bytes Python kept as lone surrogates
        return False


def photos_in_two_splits(annotations: list[Annotation], keys: list[str], splits: dict[str, list[int]], folder: Path,
                         files: dict) -> list[str]:
    """A warning naming the images whose photo (its bytes, whatever its name) is in another split too: the same
    frame copied into train/ and test/ was built without a word, and the held-out scores then flatter the model."""
    first: dict[str, tuple[str, str]] = {}          # photo hash -> (split, key) where it was seen first
    found = []
    for split, indices in splits.items():
        for i in indices:
            digest = _photo_hash(annotations[i], folder, files)
            seen = first.setdefault(digest, (split, keys[i])) if digest else (split, keys[i])
            if seen[0] != split:
                found.append(f"{seen[1]} ({seen[0]}) and {keys[i]} ({split})")
    if not found:
        return []
    return [f"warning: {len(found)} photo(s) are in two splits, the same bytes under both names, so the held-out "
            f"scores would flatter the model: {_names(found)}"]


def _photo_hash(annotation: Annotation, folder: Path, files: dict) -> str | None:
    if annotation.image_bytes is not None:
        return hashlib.sha256(annotation.image_bytes).hexdigest()[:32]
    if annotation.image_path is None:
        return None
    try:
        relative = Path(annotation.image_path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None
    entry = files.get(relative)
    return entry[1] if entry else None


def detect_format(path: Path) -> str:
    try:
        return formats.detect(path)
    except LabelFormatError as e:
        raise BuildError(str(e)) from None


def read_export(fmt: str, path: Path, label_map: LabelMap) -> tuple[list[Annotation], list[str]]:
    """(the annotations that could be read, the problems of the files that could not): formats.read_readable."""
    try:
        return formats.read_readable(fmt, path, label_map)
    except LabelFormatError as e:
        raise BuildError(str(e)) from None


# --- splits ------------------------------------------------------------------------------------------------------
def assign_splits(keys: list[str], rule: SplitRule, hashed: list[str] | None = None,
                  export: list[str | None] | None = None) -> tuple[dict[str, list[int]], list[str]]:
    """(split -> indices in key order, lines to print: the splits chosen, splits left out as no image falls in them);
    `hashed`: what each key's split is hashed on (default: the key); `export`: each key's split in the export
    (Annotation.split), followed where the rule says so and the export has a train split and a held-out one; an
    image without one (a folder beside train/ valid/ test/) is then drawn by the hash."""
    export = export or [None] * len(keys)
    given = [split for split in export if split]
    counts = ", ".join(f"{name} {given.count(name)}" for name in SPLIT_NAMES if name in given)
    own = rule.follow_export and "train" in given and len(set(given)) > 1        # train + held-out
    hashed = dict(zip(keys, hashed or keys))
    notes = []
    if rule.split_file is not None:
        chosen = read_split_file(Path(rule.split_file), keys)
    elif rule.by_order is not None:
        chosen = _order_split(keys, rule)
    else:
        drawn = {key: rule.holdout if stem_fraction(hashed[key]) < rule.fraction else "train" for key in keys}
        chosen = {key: split or drawn[key] for key, split in zip(keys, export)} if own else drawn
        notes += _split_notes(keys, export, rule, own, counts) + _hash_notes(
            [chosen[key] for key, split in zip(keys, export) if not (own and split)], rule)
    splits: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    for i in sorted(range(len(keys)), key=lambda i: keys[i]):
        splits[chosen[keys[i]]].append(i)
    splits = {name: indices for name, indices in splits.items() if indices}
    expected = {"train", rule.holdout} if rule.split_file is None and not own and rule.fraction > 0 else set()
    if "train" in expected and "train" not in splits and rule.by_order is None:
        raise BuildError(f"the hash of the names put all {len(keys)} image(s) in {rule.holdout} for a fraction of "
                         f"{rule.fraction}, none in train (it is even only over many images): give a smaller "
                         "--val_fraction, or a --split_file that chooses each image's split")
    for name in sorted(expected - set(splits)):
        notes.append(f"warning: no image falls in the {name} split ({len(keys)} images, {rule.holdout} fraction "
                     f"{rule.fraction}); building without it")
    return splits, notes


def _split_notes(keys: list[str], export: list[str | None], rule: SplitRule, own: bool, counts: str) -> list[str]:
    """What became of the export's own splits."""
    unsplit = [key for key, split in zip(keys, export) if not split]
    some = len(keys) - len(unsplit)
    if own:
        rest = (f"; {len(unsplit)} image(s) in none of its split folders ({_names(unsplit)}) are drawn by a hash of "
                f"their name ({rule.holdout} fraction {rule.fraction})") if unsplit else ""
        return [f"note: the export's own splits are kept ({counts}){rest}; --val_fraction or --split_file chooses "
                "others"]
    if some and not rule.follow_export:
        return [f"note: {some} of {len(keys)} image(s) have a split in the export: --val_fraction draws them by a "
                "hash of the names instead"]
    if some:
        return [f"note: the export's own splits ({counts}) are not a train split and a held-out one, so every "
                "image's split is drawn by a hash of its name"]
    return []


def _hash_notes(drawn: list[str], rule: SplitRule) -> list[str]:
    """A note where the hash put a share of the images in the held-out split far from the fraction asked for (it
    spreads evenly only over many images): 4 of 5 for 0.5."""
    held = drawn.count(rule.holdout)
    if not 0 < held < len(drawn) or abs(held / len(drawn) - rule.fraction) <= 0.1:
        return []          # (an empty split has a warning of its own)
    choose = ("a --split_file chooses each image's split" if rule.holdout == "validation" else  # from_annotations
              "--config from_annotations --name NAME --format voc --split_file FILE chooses each image's split")
    return [f"note: the hash of the names put {held} of {len(drawn)} image(s) in {rule.holdout} for a fraction of "
            f"{rule.fraction} (it is even only over many images); {choose}"]


def _order_split(keys: list[str], rule: SplitRule) -> dict[str, str]:
    position = {key: i for i, key in enumerate(rule.by_order)}
    ordered = sorted(keys, key=lambda key: position[key])
    held = int(np.floor(len(keys) * rule.fraction + 0.5))
    return {key: rule.holdout if i >= len(keys) - held else "train" for i, key in enumerate(ordered)}


def stem_fraction(stem: str) -> float:
    """A number in [0, 1) fixed by the stem alone (not Python's hash(), which changes per process)."""
    digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).digest()   # a name not UTF-8 is refused later
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def read_split_file(path: Path, keys: list[str]) -> dict[str, str]:
    """{key: split} from `split<TAB>file stem` lines (a file name with its suffix works too; blank lines and
    lines starting with # are skipped). Every key must be listed; names that match no image are an error too,
    since they usually mean the file was written for another export."""
    chosen: dict[str, str] = {}
    problems: list[str] = []
    known = set(keys)
    by_stem = _keys_by_stem(keys)
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entry = _split_entry(line, known, by_stem)
        if isinstance(entry, str):
            problems.append(f"line {number}: {entry}")
            continue
        split, key = entry
        if chosen.setdefault(key, split) != split:
            problems.append(f"line {number}: {key!r} is in both {chosen[key]} and {split}")
    missing = [key for key in sorted(known) if key not in chosen]
    if missing:
        problems.append(f"{len(missing)} image(s) are in no split: {_names(missing)}")
    if problems:
        raise BuildError(f"split file {path}:" + listing(problems))
    return chosen


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()     # a BOM is not part of the first name
    except (OSError, UnicodeDecodeError) as e:
        raise BuildError(f"cannot read the split file {path}: {getattr(e, 'strerror', None) or e}") from None


def _split_entry(line: str, known: set[str], by_stem: dict[str, list[str]]) -> tuple[str, str] | str:
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) != 2:
        return f"expected 'split<TAB>file stem', got {line.strip()!r}"
    split, name = export_split(parts[0]), parts[1].strip()      # val, valid, Validation: as the split folders
    if split is None:
        return f"split {parts[0].strip()!r} is not one of {', '.join(SPLIT_NAMES)} (or val, valid, testing, ...)"
    key = _key_for(name, known, by_stem)
    if isinstance(key, list):
        return f"{name!r} is the stem of {len(key)} images ({_names(key)}): name one by its folder too"
    if key is None:
        return f"no image with the stem {name!r} in the export"
    return split, key


def _keys_by_stem(keys: list[str]) -> dict[str, list[str]]:
    """The nested keys ("Train/img0") under their last part ("img0")."""
    found: dict[str, list[str]] = {}
    for key in keys:
        if "/" in key:
            found.setdefault(key.rsplit("/", 1)[1], []).append(key)
    return found


def _key_for(name: str, known: set[str], by_stem: dict[str, list[str]]) -> str | list[str] | None:
    """The key a split file line names: the key itself, or its file name (suffix dropped), or a plain stem when
    exactly one nested key ends in it (the nested keys it could be where several do; None where none does)."""
    suffix = Path(name).suffix
    candidates = (name, name[:len(name) - len(suffix)], Path(name).stem)
    for candidate in candidates:
        if candidate in known:
            return candidate
    for candidate in candidates:        # a stem with dots of its own (img.001) is its whole name
        nested = by_stem.get(candidate, [])
        if nested:
            return nested[0] if len(nested) == 1 else sorted(nested)
    return None


def _names(names: list[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


# --- fingerprints ------------------------------------------------------------------------------------------------
def fingerprint(folder: Path, label_map: LabelMap, options: dict, exclude: tuple[Path, ...] = ()) -> dict:
    """{"files": {relative path: [size, sha256 prefix]}, "label_map": ..., "options": ...} (JSON-ready). Files
    under an `exclude` folder inside `folder` are left out (the data dir's own builds, where it lies in the export);
    one that holds `folder` (an export in TFDS's DATA_DIR/downloads/manual) leaves out nothing."""
    folder = Path(folder)
    skip = [s for s in (Path(p).resolve() for p in exclude) if not folder.resolve().is_relative_to(s)]
    files = {}
    for path in files_under(folder, follow_links=True):   # CamVid copies are often linked folders
        relative = path.relative_to(folder)
        if any(path.resolve().is_relative_to(s) for s in skip):
            continue
        files[relative.as_posix()] = [path.stat().st_size, file_hash(path)]
    return {"files": files, "label_map": label_map.to_dict(), "options": options}


def file_hash(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:32]


def changes(old: dict, new: dict) -> list[str]:
    """What differs between two fingerprints, in words (empty when they are the same)."""
    found = _file_changes(old.get("files", {}), new.get("files", {}))
    if old.get("label_map") != new.get("label_map"):
        found.append("the label map changed" + _label_map_change(old.get("label_map"), new.get("label_map")))
    old_options, new_options = (options_without_paths(f.get("options", {})) for f in (old, new))
    for key in sorted(set(old_options) | set(new_options)):
        if old_options.get(key) != new_options.get(key):
            found.append(f"option {key}: {_given(old_options.get(key))} before, {_given(new_options.get(key))} now")
    return found


def _given(value) -> str:
    return "not given" if value is None else repr(value)      # "'by val_fraction' before, None now"


def options_without_paths(options: dict) -> dict:
    """Options as compared: without the split file's path builds before 2026-12-07 recorded (its hash counts)."""
    return {k: v for k, v in options.items() if k != "split_file"}


def _file_changes(old: dict, new: dict) -> list[str]:
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    modified = sorted(name for name in set(old) & set(new) if list(old[name]) != list(new[name]))
    return [f"{len(names)} file(s) {verb}: {_names(names)}"
            for verb, names in (("added", added), ("removed", removed), ("modified", modified)) if names]


def _label_map_change(old: dict | None, new: dict | None) -> str:
    return f" ({label_map_change(old, new)})" if old and new else ""


# --- per-example work (runs in worker processes) -----------------------------------------------------------------
def encode_example(job: tuple[Annotation, str, LabelMap, str, str | None]) -> tuple[str, dict]:
    """(key, TFDS example) for one annotation: the image as uint8 (H, W, 3) RGB pixels and the mask as uint8
    (H, W, 1) class ids, as builder._features stores them; the mask is the one the validation drew into `mask_dir`
    when given. A cut-out photo's fully transparent pixels are no part of it: black in the image, the ignore id in
    the mask, as predict marks them (else a model learns that black is the class drawn there)."""
    annotation, key, label_map, unknown, mask_dir = job
    if mask_dir is not None:
        mask = read_mask_png(kept_mask_path(mask_dir, key))
    else:
        mask = annotation_to_mask(annotation, label_map, unknown=unknown).mask
    image, transparent = image_pixels(annotation)
    height, width = image.shape[:2]
    if (width, height) != (annotation.width, annotation.height):
        raise BuildError(f"{annotation.source}: its image is {width}x{height} once decoded (EXIF orientation "
                         f"applied) but the annotation says {annotation.width}x{annotation.height}")
    if transparent is not None:
        mask = np.where(transparent, label_map.ignore_id, mask).astype(np.uint8)
    return key, {"image": image, "segmentation_mask": mask[..., None],
                 "file_name": example_file_name(annotation, key)}


def example_file_name(annotation: Annotation, key: str) -> str:
    """The image's file name, under the folders of a nested key ("Train/img0" -> "Train/img0.jpg"): names repeat
    across a CVAT project's subsets or a mask export's folders, and the dataset's file names should not."""
    if annotation.image_path is not None:
        name = Path(annotation.image_path).name
    else:
        name = base_name(annotation.file_name) or f"{key.rsplit('/', 1)[-1]}.png"
    return f"{key.rsplit('/', 1)[0]}/{name}" if "/" in key else name


def image_pixels(annotation: Annotation) -> tuple[np.ndarray, np.ndarray | None]:
    """The annotation's image (its file, or the bytes embedded in the annotation) as uint8 (H, W, 3) RGB, and its
    fully transparent pixels (rgb_pixels)."""
    name = EMBEDDED if annotation.image_bytes is not None else str(annotation.image_path)
    try:
        data = annotation.image_bytes if annotation.image_bytes is not None else \
            Path(annotation.image_path).read_bytes()
    except (OSError, TypeError) as e:
        raise BuildError(f"{annotation.source}: cannot read the image {name} "
                         f"({getattr(e, 'strerror', None) or e})") from None
    try:
        return rgb_pixels(data, f"{annotation.source}: image {name}", transparent=True)
    except BuildError as e:     # the validation report before said 0 errors: it read the image's header only
        raise BuildError(f"{e}; the build's check reads images' headers only: `python -m streetseg_jax.labels "
                         "check` decodes every image and names each that fails") from None


def rgb_pixels(data: bytes, name: str, transparent: bool = False):
    """Image file bytes decoded fully (so a truncated or damaged file is refused now, not in training) as uint8
    (H, W, 3) RGB, upright by its EXIF orientation (labels/images.open_rgb); with `transparent`, also its fully
    transparent pixels, (H, W) bool or None (open_photo). `name` says which file in errors."""
    try:
        return open_photo(data, name) if transparent else open_rgb(data, name)
    except LabelFormatError as e:
        raise BuildError(str(e)) from None


# --- worker processes --------------------------------------------------------------------------------------------
class Workers:
    """A process pool, started on the first map over enough items and closed on exit (a context manager)."""

    def __init__(self, num_workers: int | None = None):
        self.num_workers = num_workers or default_workers()
        self._pool = None

    def imap(self, fn: Callable, jobs: list, chunksize: int = 4):
        if self._pool is None and self.num_workers > 1 and len(jobs) >= _POOL_MIN_ITEMS:
            self._pool = pool_context().Pool(min(self.num_workers, len(jobs)), _ignore_ctrl_c)
        if self._pool is None:
            return map(fn, jobs)
        # Chunked here, so that the pool's iterator is the one that can wait with a timeout (chunksize 1).
        chunks = [jobs[i:i + chunksize] for i in range(0, len(jobs), chunksize)]
        return _interrupted_between_results(self._pool.imap(functools.partial(_apply_to_each, fn), chunks))

    def map_fn(self, fn: Callable, jobs: list) -> list:
        return list(self.imap(fn, jobs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _apply_to_each(fn: Callable, chunk: list) -> list:
    return [fn(job) for job in chunk]


def _interrupted_between_results(results):
    """The pool's results, with Ctrl-C (and SIGTERM, which the commands turn into one: cli.stop_on_sigterm) raised
    between them rather than inside the pool's own code: a KeyboardInterrupt raised while the main thread held one
    of the pool's locks (its condition in IMapIterator.next) left the result thread waiting for it, and
    Pool.terminate then waited forever (3 Ctrl-Cs in 50 measured)."""
    received = []
    # SIGTERM only where Python handles it (cli.stop_on_sigterm): JAX's preemption service handles it in C under
    # jax.distributed, which Python sees as SIG_DFL, and putting that "back" removed JAX's handler.
    taken = [signal.SIGINT] + ([signal.SIGTERM] if callable(signal.getsignal(signal.SIGTERM)) else [])
    try:
        previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in taken}
    except ValueError:          # not the main thread: signals are not ours to handle here
        yield from results
        return
    try:
        while True:
            if received:
                raise KeyboardInterrupt(*(["SIGTERM"] if received[0] == signal.SIGTERM else []))
            try:
                chunk = results.next(timeout=0.1)
            except multiprocessing.TimeoutError:
                continue
            except StopIteration:
                return
            yield from chunk
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _ignore_ctrl_c() -> None:
    # Ctrl-C reaches every process of the terminal's group. A worker that died of it while holding the task
    # queue's lock made Pool.terminate wait for that lock forever; the parent alone stops, and terminates them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent()


def end_with_parent() -> None:
    """A worker ends when its parent does, killed or not (Linux): a killed build's workers lived on as orphans,
    asleep for good. It ends on SIGTERM whatever its parent does with one: a forked worker inherited the commands'
    handler (cli.stop_on_sigterm), and caught the SIGTERM of its parent's death and of Pool.terminate."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)      # PR_SET_PDEATHSIG
        if os.getppid() == 1:       # the parent ended before the line above: nothing will come
            os._exit(1)


def default_workers() -> int:
    """One worker process per CPU, or none but this process where they would be spawned for a script of the user's
    (tfds.data_source building a dataset in a script that imported JAX): spawn runs the main script again in each
    worker, and without an `if __name__ == "__main__":` guard that is the script's whole work again. Our commands
    have the guard; num_workers says otherwise."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    ours = spec is not None and spec.name.split(".")[0] == "streetseg_jax"
    if pool_context().get_start_method() == "spawn" and getattr(main, "__file__", None) and not ours:
        return 1
    return os.cpu_count() or 1


def pool_context():
    """fork unless JAX is loaded, else spawn (write_synthetic's pool uses it too).

    fork starts workers in milliseconds and needs no `if __name__ == "__main__"` guard in the caller, but forking
    a process that already runs JAX's threads can deadlock, so such a process gets spawn instead (and then a script
    that builds needs the guard, as every spawn user does)."""
    if "fork" in multiprocessing.get_all_start_methods() and "jax" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")
