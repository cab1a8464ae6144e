"""predict --export: the masks predicted into OUT written as polygons under OUT/<format>/, where people open them in
the labelling tool and correct them, so that a later export never writes over a correction.

OUT/exported.json records the files each export wrote (by their SHA-256, as it writes them; before, the files not
there yet as being written, so that an export stopped halfway counts them as its own): an annotation file that
differs from it (edited in the tool since, or written by something else) is kept, and so are the polygons of its
photos; an image copy the export made of an earlier photo of the same name is replaced with the new photo's, while a
file there that the export did not write stops the command before any work.
"""
from __future__ import annotations

import collections.abc
import hashlib
import json
import sys
import time
import typing
from pathlib import Path

import numpy as np

from streetseg_jax.atomic import write_text
from streetseg_jax.cli import fail
from streetseg_jax.labels import writers
from streetseg_jax.labels.images import IMAGE_SUFFIXES
from streetseg_jax.labels.label_map import EXPORT_LABEL_MAP

RECORD_FILE = "exported.json"
SETTINGS_FILE = "predict.json"          # predict's record of the model and settings its files in OUT come from
SOURCE_KEY = "streetseg_jax source"     # the tEXt chunk of a predicted mask that names its photo
_LABELLERS = (*IMAGE_SUFFIXES, ".json", ".ndjson", ".xml")     # photos, masks and annotation files


class WrittenMasks(collections.abc.Mapping):
    """name -> mask of the items predicted into OUT, read from their mask files when asked for: an export of a
    thousand 12-megapixel photos does not hold their masks in memory at once."""

    def __init__(self, items: list, out_dir: Path):
        self._paths = {item.name: out_dir / f"{item.name}.png" for item in items}

    def __getitem__(self, name: str) -> np.ndarray:
        from streetseg_jax.labels.convert import read_mask_png
        return read_mask_png(self._paths[name])

    def __iter__(self):
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def exportable(items: list, out_dir: Path) -> list:
    """The items whose masks a dataset can hold (2x2 pixels at least: `labels check` refuses smaller), the others
    said and left out of --export, whose polygons are meant to come back as a dataset."""
    from streetseg_jax.labels.images import image_size

    small = [item for item in items if min(image_size(out_dir / f"{item.name}.png")) < 2]
    if small:
        print(f"note: {len(small)} image(s) smaller than 2x2 pixels, which no dataset holds, left out of --export: "
              f"{first_few([item.name for item in small])}", file=sys.stderr)
    return [item for item in items if item not in small]


def check_export(items: list, fmt: str, out_dir: Path) -> None:
    """Before any work: refuse inputs in the folder the export rewrites, names CVAT's XML cannot hold, and files at
    the places of the image copies that the export did not write (the polygons of another photo of that name)."""
    folder = (out_dir / fmt).resolve()
    inside = [str(item.source) for item in items if item.source.is_relative_to(folder)]
    if inside:
        fail(f"{inside[0]} is in {out_dir / fmt}, which --export {fmt} rewrites; copy the images elsewhere to "
             "predict them, or give another --output")
    if fmt == "cvat":
        try:
            writers.check_cvat_names([item.name + item.source.suffix for item in items])
        except ValueError as e:
            fail(f"--export cvat: {e}")
    record = _record(out_dir, fmt)
    kept = _kept(items, fmt, out_dir / fmt, record)
    for item in items:
        copy = writers.image_copy_name(fmt, item.name, item.source)
        if writers.annotation_file_name(fmt, item.name) not in kept and item.source.is_file() and \
                (out_dir / fmt / copy).is_file() and not writers.is_copy_of(item.source, out_dir / fmt / copy) and \
                not _ours(out_dir / fmt, copy, record):
            fail(f"{out_dir / fmt / copy} is not the image {item.source}, nor a copy --export made: the export "
                 f"there holds another photo of that name; give another --output, or move {out_dir / fmt} away")


def export_polygons(items: list, label_map, fmt: str, out_dir: Path, tolerance=None, min_area=None) -> int:
    """The masks of `items` (predicted into OUT) as polygons in OUT/<fmt>/ (a folder of its own: LabelMe lists
    every image in the folder it opens, and the export copies the images beside their annotations), but for the
    annotation files not as an export wrote them, which are kept as they are (said); returns how many images'
    polygons it wrote."""
    folder, record = out_dir / fmt, _record(out_dir, fmt)
    kept = _kept(items, fmt, folder, record)
    if kept:
        _say_kept(sorted(kept), fmt, folder, record)
    items = [item for item in items if writers.annotation_file_name(fmt, item.name) not in kept]
    if not items:
        return 0
    if fmt != "labelme":    # one file for all images: those an earlier export holds stay in it
        items = sorted(items + _exported_before(items, fmt, out_dir, record), key=lambda item: item.name)
    copies = {item.name: writers.image_copy_name(fmt, item.name, item.source) for item in items}
    written = {writers.annotation_file_name(fmt, item.name) for item in items} | set(copies.values())
    if _keeps_label_map(folder, label_map, record):
        written.add(EXPORT_LABEL_MAP)
    # None: being written, ours whatever the bytes say; a file there keeps its record until it is written again
    # (a correction made to it after an export stopped halfway is then seen, not written over).
    _remember(out_dir, fmt, {name: record.get(name) if (folder / name).is_file() else None for name in written})
    for item in items:      # copies of an earlier photo of this name: the new photo's takes their place
        for name in _copies_of(item.name, fmt, record):
            if (folder / name).is_file() and (name != copies[item.name] or not writers.is_copy_of(
                    item.source, folder / name)) and _ours(folder, name, record):
                (folder / name).unlink()
    info = {item.name: {"path": str(item.source)} for item in items}
    kwargs = {name: value for name, value in (("tolerance", tolerance), ("min_area", min_area)) if value is not None}
    recorder = _Recorder(out_dir, fmt)
    try:
        writers.export_predictions(WrittenMasks(items, out_dir), info, label_map, fmt, folder, on_written=recorder,
                                   **kwargs)
    finally:            # stopped or failed on the way: what was written whole is recorded as such
        recorder.flush()
    if EXPORT_LABEL_MAP in written:
        write_text(folder / EXPORT_LABEL_MAP, label_map.to_json())     # the classes, for the way back
    _remember(out_dir, fmt, {name: recorder.hashes.get(name) or _sha256(folder / name)
                             for name in written if (folder / name).is_file()})
    return len(items)


class _Recorder:
    """Records each file an export has written whole by its SHA-256, every second or so (`hashes` keeps them all):
    files recorded as being written until the export's end counted as the export's whatever their bytes, and a
    correction made to one after an export killed on the way was written over by the next export without a word."""

    def __init__(self, out_dir: Path, fmt: str, every_s: float = 1.0):
        self.out_dir, self.fmt, self.every_s = out_dir, fmt, every_s
        self.hashes: dict[str, str] = {}
        self.pending: dict[str, str] = {}
        self.last = time.monotonic()

    def __call__(self, path: Path) -> None:
        name = path.relative_to(self.out_dir / self.fmt).as_posix()
        self.hashes[name] = self.pending[name] = _sha256(path)
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            _remember(self.out_dir, self.fmt, self.pending, forget=False)
        self.pending, self.last = {}, time.monotonic()


def say_which_exports_are_older(out_dir: Path, written: str | None) -> None:
    """An export this run did not write describes masks of an earlier run (another model, perhaps): said, and left
    alone, since people correct predicted polygons in that very folder."""
    for fmt in writers.EXPORT_FORMATS:
        if fmt != written and (out_dir / fmt).is_dir():
            print(f"note: {out_dir / fmt} holds the polygons of an earlier run's masks, not of the masks just written "
                  f"(--export {fmt} writes them again, but for files changed since it wrote them; the folder is left "
                  "as it is)", file=sys.stderr)


def not_predicts(folder: Path, out_dir: Path) -> list[Path]:
    """The files directly in `folder` (OUT, or a folder in it that predict writes into) that look like a
    labeller's (photos, masks, annotation files) and that predict did not write: all but OUT's records
    (predict.json, exported.json), its masks (with their overlays beside them, or naming their photo in a text
    chunk) and the overlays and confidence maps beside them."""
    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.is_dir():
        return []
    settled = (out_dir / SETTINGS_FILE).is_file()
    top = folder.resolve() == out_dir.resolve()
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in _LABELLERS and
                  not path.name.startswith(".") and path.is_file() and not _predicts(path, top, settled))


def _predicts(path: Path, top: bool, settled: bool) -> bool:
    """Whether predict wrote `path` (not_predicts); `settled`: OUT holds predict.json."""
    if top and path.name in (SETTINGS_FILE, RECORD_FILE):
        return True
    for ending in ("_overlay.jpg", "_confidence.png"):
        if path.name.endswith(ending):
            return settled or _predicted_mask(path.with_name(path.name.removesuffix(ending) + ".png"))
    return path.suffix == ".png" and _predicted_mask(path)


def _predicted_mask(path: Path) -> bool:
    """Whether `path` is a mask predict wrote: its overlay lies beside it (a look-up: an OUT of 100,000 masks is not
    opened mask by mask), or its text names the photo it was made from (masks written before 2026-12-06 have none,
    in an OUT with no predict.json)."""
    return path.with_name(f"{path.stem}_overlay.jpg").is_file() or _marked(path)


def _marked(path: Path) -> bool:
    """Whether `path` is a PNG whose text names the photo predict made it from (only its header is read)."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            return SOURCE_KEY in image.info
    except (OSError, ValueError, SyntaxError):
        return False


def first_few(paths: list, limit: int = 5) -> str:
    """The first `limit` of `paths` (file names, or paths as they are given), then ' ...' where there are more."""
    return ", ".join(str(path) for path in paths[:limit]) + (" ..." if len(paths) > limit else "")


class _Exported(typing.NamedTuple):
    source: Path        # the export's copy of the photo
    name: str


def export_in_output(path: Path, fmt: str | None, flag: str = "--input") -> tuple[Path, str | None]:
    """(folder, format) of the export to read where `path` is predict's OUT (it holds exported.json): OUT/<fmt>
    when --export wrote that format there, said on stderr with how many of its annotation files are still as the
    export wrote them (unreviewed), the format taken from it when `fmt` is None or auto;
    a clear exit when OUT holds several exports or none of `fmt`, or files predict did not write at its top level
    (a labeller's export that predict wrote into: reading predict's export alone left them out without a word).
    Any other path comes back as it is."""
    exported = sorted(name for name in _records(path) if (Path(path) / name).is_dir())
    if not exported:
        return path, fmt
    own = not_predicts(Path(path), Path(path))
    if own:
        fail(f"{path} is predict's output, its polygons in {' and '.join(str(Path(path) / n) for n in exported)}, "
             f"but its top level also holds {len(own)} file(s) that predict did not write (an export of their "
             f"own?): {first_few([p.name for p in own], 3)}; give {flag} "
             f"{Path(path) / exported[0]} --format {exported[0]} for predict's polygons, or move predict's files "
             f"out of {path} ({RECORD_FILE}, {SETTINGS_FILE}, {', '.join(f'{name}/' for name in exported)}, its "
             "masks and overlays) to read the others")
    if fmt in (None, "auto") and len(exported) == 1:
        fmt = exported[0]
    if fmt not in exported:
        given = "" if fmt in (None, "auto") else f"; it holds no {fmt} export"
        fail(f"{path} is predict's output: its polygons are in "
             f"{' and '.join(str(Path(path) / name) for name in exported)}{given}; give {flag} "
             f"{Path(path) / exported[0]} --format {exported[0]}")
    print(f"note: {path} is predict's output: reading the {fmt} export in {Path(path) / fmt}", file=sys.stderr)
    _say_unreviewed(Path(path), fmt)
    return Path(path) / fmt, fmt


def _say_unreviewed(out_dir: Path, fmt: str) -> None:
    """Say how many of the annotation files an export wrote into OUT/<fmt> are still as it wrote them (by the
    record's SHA-256): a dataset built from them learns the model's own predictions, not corrections."""
    folder, record = out_dir / fmt, _record(out_dir, fmt)
    exported = sorted(name for name in record if _key(name, fmt) is None and name != EXPORT_LABEL_MAP and
                      (folder / name).is_file())
    unreviewed = [name for name in exported if _ours(folder, name, record)]
    if unreviewed:
        print(f"note: {len(unreviewed)} of {len(exported)} annotation file(s) in {folder} are as predict exported "
              f"them, unreviewed: {first_few(unreviewed)}", file=sys.stderr)


def _exported_before(items: list, fmt: str, out_dir: Path, record: dict) -> list[_Exported]:
    """The images an earlier export into OUT/<fmt> copied (and so holds), other than `items`, whose masks are
    still in OUT at the copy's size: predicting more photos into OUT and exporting them dropped the earlier ones
    from COCO's and CVAT's single annotation file. Those that cannot stay are named."""
    from streetseg_jax.labels.images import image_size

    names, earlier, dropped = {item.name for item in items}, [], []
    for copy in record:
        name = _key(copy, fmt)
        if name is None or name in names or not (out_dir / fmt / copy).is_file():
            continue
        mask = out_dir / f"{name}.png"
        if mask.is_file() and image_size(mask) == image_size(out_dir / fmt / copy):
            earlier.append(_Exported(out_dir / fmt / copy, name))
        else:
            dropped.append(name)
    if dropped:
        print(f"note: {len(dropped)} photo(s) the earlier export in {out_dir / fmt} held are left out of it, their "
              f"masks no longer in {out_dir} (or of another photo's size): {first_few(sorted(dropped))}",
              file=sys.stderr)
    return earlier


def _key(copy: str, fmt: str) -> str | None:
    """The output name whose photo an export's file `copy` is; None for an annotation file."""
    if fmt == "labelme":
        return None if copy.endswith(".json") else Path(copy).with_suffix("").as_posix()
    return Path(copy.removeprefix("images/")).with_suffix("").as_posix() if copy.startswith("images/") else None


def _copies_of(name: str, fmt: str, record: dict) -> list[str]:
    return [copy for copy in record if _key(copy, fmt) == name]


def _keeps_label_map(folder: Path, label_map, record: dict) -> bool:
    """Whether the export writes its label_map.json: not over one changed since an export wrote it (a class a
    labeller added) or one no export recorded (an older export's, which its kept files need), said."""
    path = folder / EXPORT_LABEL_MAP
    if not path.is_file() or _ours(folder, EXPORT_LABEL_MAP, record) or path.read_text() == label_map.to_json():
        return True
    print(f"note: {path} is not as --export wrote it (changed since, or an earlier export's): kept as it is, though "
          f"this model's classes are {', '.join(label_map.names)} (remove it to have this model's written)",
          file=sys.stderr)
    return False


def _say_kept(files: list[str], fmt: str, folder: Path, record: dict) -> None:
    """Say which annotation files are kept: changed since an export wrote them, or with no record that one did."""
    for kept, why in (([n for n in files if n in record], "changed since --export wrote them (corrected?)"),
                      ([n for n in files if n not in record], "with no record that --export wrote them (written by "
                                                             "a version before exported.json, or by another tool)")):
        listed = first_few(kept)
        if kept and fmt == "labelme":
            print(f"note: {len(kept)} annotation file(s) in {folder} {why}, kept as they are, without the new "
                  f"polygons of their photos: {listed} (remove a file to have it written from the masks)",
                  file=sys.stderr)
        elif kept:
            print(f"note: {folder / kept[0]}, {why.replace('them', 'it')}, is kept as it is, without the polygons of "
                  "these photos: --output another folder exports them (or remove it to have it written from the "
                  "masks, losing what was corrected in it)", file=sys.stderr)


def _kept(items: list, fmt: str, folder: Path, record: dict) -> set[str]:
    """The annotation files of `items` in OUT/<fmt> (`folder`) that are not as an export wrote them (`record`)."""
    names = {writers.annotation_file_name(fmt, item.name) for item in items}
    return {name for name in names if (folder / name).is_file() and not _ours(folder, name, record)}


def _ours(folder: Path, name: str, record: dict) -> bool:
    """Whether OUT/<fmt>/name is as an export wrote it: recorded with its bytes' SHA-256, or as being written (an
    export stopped before it recorded what it wrote)."""
    return name in record and (record[name] is None or record[name] == _sha256(folder / name))


def _record(out_dir: Path, fmt: str) -> dict[str, str | None]:
    """file (relative to OUT/<fmt>) -> SHA-256 of what an export wrote there (None: being written); {} where
    nothing readable is."""
    files = _records(out_dir).get(fmt)
    return files if isinstance(files, dict) else {}


def _records(out_dir: Path) -> dict:
    """OUT/exported.json: format -> its export's record; {} where there is none, or none readable."""
    try:
        records = json.loads((Path(out_dir) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _remember(out_dir: Path, fmt: str, files: dict[str, str | None], forget: bool = True) -> None:
    """Record `files` for OUT/<fmt>, forgetting the files no longer there (where `forget`)."""
    record = _records(out_dir)
    before = record.get(fmt)
    merged = {**(before if isinstance(before, dict) else {}), **files}
    record[fmt] = {name: digest for name, digest in merged.items()
                   if not forget or name in files or (out_dir / fmt / name).exists()}
    write_text(out_dir / RECORD_FILE, json.dumps(record, indent=1, sort_keys=True))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
