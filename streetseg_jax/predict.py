"""Predict masks for your own photos: `python -m streetseg_jax.predict --workdir DIR --input PATH... --output OUT`.

PATH may be an image file, a folder (searched recursively for JPEG, PNG, WebP, TIFF and BMP files, into linked
folders too; hidden ones left out) or a glob. For each image it writes, at the image's own resolution and
orientation (EXIF applied):
    OUT/<name>.png             class ids as an 8-bit palette PNG in the label map's colours
    OUT/<name>_overlay.jpg     the image blended with the class colours, each class region outlined in white,
                               titled with the run, checkpoint and step, with a legend (a photo narrower than
                               the legend's 240 px enlarged by a whole factor)
    OUT/<name>_confidence.png  (--save_confidence) the winning class's softmax probability x 255 (white: sure;
                               the floor is 255/K for K classes; black, 0, at transparent pixels: no photo)
where <name> is the file's stem, or its path relative to the folder it was found in. Fully transparent pixels
(a cut-out PNG) are no part of the photo: the ignore id in the mask, confidence 0. Two inputs that would write
the same file, an output that would overwrite an input, or an OUT holding photos, masks or annotation files that
predict did not write (a labelling tool's export: predict's files would join them, and `labels` and `data build`
would then take the folder for predict's output), stop the run before any work. Unreadable images are
listed at the end and skipped; the exit status is 1 when any failed. --export labelme|coco|cvat also writes the
masks as editable polygons under OUT/<format>/ (from the mask files, so that it never holds every mask at once),
with the run's label_map.json, which `labels` and `data build` read there for the way back. Corrections live there:
an annotation file changed since an export wrote it is never written over (OUT/exported.json records what each
export wrote; see streetseg_jax.predict_export), and an export a run did not rewrite is named as older than the
masks.
Ctrl-C stops after the files being written are whole; --skip_existing then leaves out the images already done
with the same model and settings: OUT/predict.json records them (the checkpoint, a fingerprint of its weights, the
TTA, resize and window settings), and files older than the settings in it are predicted again, as is a mask that
does not name that very photo (each mask records its photo's path, size and time in a PNG text chunk).

A photo much larger or smaller than the images the model was trained on (its shorter side over 1.5 times theirs,
or under 2/3) is first resized so that its shorter side is theirs (--resize auto, the default; none keeps every
photo's size, a number from 0.05 to 4 resizes every photo by it): a model shows objects 8x larger than any it
learned, as a 12-megapixel photo shows them to a model of CamVid frames, as something else. The mask still comes at
the photo's own size.

Images larger than --window (network pixels, default 512x512; smaller where its logits at the photo's resolution
would pass 256 MiB, as a model that sees photos much reduced would have them) are predicted in overlapping windows
whose logits are blended (--overlap, default 0.25); flip TTA (averaging with the mirror image) follows the run's
eval_flip_tta unless --flip_tta or --no_flip_tta says otherwise; the network sees images at the training config's
eval_scale, as evaluation does, and at its eval_extra_scales too (multi-scale TTA) unless --extra_scales says
otherwise. See streetseg_jax.inference.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import glob
import itertools
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from streetseg_jax.atomic import NO_ROOM, WRITE_ERRORS, atomic_file, machine_lock, save_image
from streetseg_jax.cli import (ArgumentParser, add_checkpoint_flag, add_extra_scales_flag, add_flip_tta_flags,
                               check_workdir, disk_refusal, fail, normalise_argv, quiet_libraries, run_command,
                               stopped_by)
from streetseg_jax.labels.formats.masks import BESIDE_ENDING
from streetseg_jax.labels.images import IMAGE_SUFFIXES, files_under
from streetseg_jax.labels.label_map import EXPORT_LABEL_MAP
from streetseg_jax.labels.shapes import listing
from streetseg_jax.labels.writers import EXPORT_FORMATS
from streetseg_jax.predict_export import (SETTINGS_FILE, SOURCE_KEY, check_export, export_polygons, exportable,
                                         first_few, not_predicts, say_which_exports_are_older)

_READ_AHEAD = 4        # images decoded ahead of the model
_WRITES_PENDING = 4    # images being encoded and written behind it


@dataclasses.dataclass(frozen=True)
class Item:
    source: Path
    name: str          # output path under OUT without suffix, e.g. "street/img_001"

    def outputs(self, confidence: bool) -> list[str]:
        names = [f"{self.name}.png", f"{self.name}_overlay.jpg"]
        return names + [f"{self.name}_confidence.png"] if confidence else names


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
def collect_inputs(paths: Iterable[str], out_dir: Path) -> list[Item]:
    """Items for files, folders (recursive: the image files, leaving out hidden ones and anything inside OUT) and
    globs, first-seen order."""
    items, missing = [], []
    for text in paths:
        path = Path(text)
        matches = [path] if path.exists() else [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        if not matches:
            missing.append(text)
        for match in matches:
            items.extend(_folder_items(match, out_dir) if match.is_dir() else [Item(match, match.stem)])
    if missing:
        fail("no such file or folder, and no glob match: " + ", ".join(missing))
    unique = list(dict.fromkeys(Item(_real(i.source), i.name) for i in items))
    if not unique:
        fail(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(paths)}")
    return unique


def _real(path: Path) -> Path:
    """The file `path` names, links resolved; a link to nothing stays itself, for its failure to name it."""
    return path.absolute() if path.is_symlink() and not path.exists() else path.resolve()


def _folder_items(folder: Path, out_dir: Path) -> list[Item]:
    out_dir = out_dir.resolve()
    if folder.resolve() == out_dir:
        fail(f"the input folder {folder} is the output folder: its photos could not be told from the predictions "
             "written there; give another --output")
    skipped = out_dir if out_dir.is_relative_to(folder.resolve()) else None
    found, others = [], collections.Counter()
    for path in files_under(folder, follow_links=True):   # a linked folder of photos is the user's, as its files
        if skipped and path.resolve().is_relative_to(skipped):   # a previous run's OUT must not become input
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(Item(path, path.relative_to(folder).with_suffix("").as_posix()))
        else:
            others[path.suffix.lower() or "(no suffix)"] += 1
    if others:
        print(f"note: {folder}: {sum(others.values())} file(s) that are not images left out ("
              + ", ".join(f"{n} {suffix}" for suffix, n in others.most_common()) + ")", file=sys.stderr)
    photos = {(item.source.parent, item.source.stem) for item in found}
    masks = [item for item in found if item.source.stem.endswith(BESIDE_ENDING)
             and (item.source.parent, item.source.stem.removesuffix(BESIDE_ENDING)) in photos]
    if masks:               # Roboflow's export: a_mask.png beside a.jpg, the label of the photo, not a photo
        names = ", ".join(m.source.name for m in masks[:3]) + (", ..." if len(masks) > 3 else "")
        print(f"note: {folder}: {len(masks)} label mask(s) beside their photos left out ({names})", file=sys.stderr)
    left_out = set(masks)
    return [item for item in found if item not in left_out]


def check_collisions(items: list[Item], confidence: bool, out_dir: Path) -> None:
    """Refuse, before any work, an output file that is one of the inputs (x.png's mask is OUT/x.png) and two
    different inputs that would write the same output file, names that differ only in case included where the
    output's disk does not tell them apart (B.JPG and b.jpg write one file on macOS and Windows)."""
    from streetseg_jax.labels.images import case_insensitive, file_ids

    sources = file_ids(item.source for item in items)
    writer: dict[str, tuple[str, Path]] = {}
    clashes, case_only = [], []
    for item in items:
        for name in item.outputs(confidence):
            if file_ids([out_dir / name]) & sources:     # by file, not name: IMG.PNG is img.png on some disks
                fail(f"{out_dir / name} is an input: its prediction would overwrite it; give another --output")
            first, source = writer.setdefault(name.casefold(), (name, item.source))
            if source != item.source:
                clash = f"{name if first == name else f'{first} and {name}'}: {source} and {item.source}"
                (clashes if first == name else case_only).append(clash)
    if case_only and case_insensitive(out_dir):
        clashes += [f"{clash} (one file here, where case does not count)" for clash in case_only]
    if clashes:
        fail(f"{len(clashes)} output file(s) would be written by two inputs:" + listing(clashes, 10) +
             "\nrename the inputs, give the folder above them (its sub-folders are kept in the outputs' names: "
             "cam1/0001.png), or predict them into separate outputs")


def check_output(items: list[Item], out_dir: Path, export: bool = False) -> None:
    """Refuse, before any work, an OUT whose folders that predict writes into hold files it did not write that look
    like a labeller's (photos, masks, annotation files: predict_export.not_predicts), but for the inputs: its files
    joined a labelling tool's export (and a hand-made mask of a photo's name was written over), and `labels` and
    `data build` then read the folder as predict's output, leaving out the labeller's files. With `export`, inputs
    at OUT's top level are refused too: `labels` and `data build` could not tell them from a labeller's files."""
    sources = {item.source for item in items}
    inside = sorted(source for source in sources if source.parent == _real(out_dir))
    if export and inside:
        fail(f"--input photos lie in --output {out_dir}: {first_few([path.name for path in inside], 3)}; with "
             "--export, labels and data build reading it could not tell them from a labelling tool's files: move "
             "them, or give another --output")
    folders = sorted({out_dir, *((out_dir / item.name).parent for item in items)})
    found = [path for folder in folders for path in not_predicts(folder, out_dir) if _real(path) not in sources]
    if found:
        fail(f"--output {out_dir} holds {len(found)} file(s) that predict did not write, photos, masks or annotation "
             f"files (a labelling tool's export?): {first_few([path.relative_to(out_dir) for path in found], 3)}; "
             "predict's files would join them (or write over them), and labels and data build would then read the "
             "folder as predict's output; give another --output")


def read_images(items: list[Item], failures: list) -> Iterator[tuple[Item, np.ndarray, np.ndarray | None]]:
    """(item, uint8 RGB image, its transparent pixels or None) in order, decoded a few images ahead in threads;
    unreadable ones go to failures."""
    from streetseg_jax.labels.images import open_photo
    from streetseg_jax.labels.shapes import LabelFormatError

    remaining = iter(items)
    with ThreadPoolExecutor(2) as pool:
        first = itertools.islice(remaining, _READ_AHEAD)
        queue = collections.deque((i, pool.submit(open_photo, i.source)) for i in first)
        while queue:
            item, future = queue.popleft()
            following = next(remaining, None)
            if following is not None:
                queue.append((following, pool.submit(open_photo, following.source)))
            try:
                yield item, *future.result()
            except (LabelFormatError, OSError) as e:
                failures.append((item.source, str(e)))


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------
def write_outputs(item: Item, image: np.ndarray, prediction, out_dir: Path, label_map, confidence: bool,
                  title: str | None = None) -> None:
    from streetseg_jax.labels.convert import write_mask_png
    from streetseg_jax.visualize import overlay

    base = out_dir / item.name
    base.parent.mkdir(parents=True, exist_ok=True)
    write_mask_png(f"{base}.png", prediction.mask, label_map, {SOURCE_KEY: source_mark(item.source)})
    shown = overlay(image, prediction.mask, label_map, ignored="transparent: no photo",   # the ignore id's pixels
                    title=title)
    save_image(shown, f"{base}_overlay.jpg", quality=90)
    if confidence:
        grey = np.round(prediction.confidence * 255).clip(0, 255).astype(np.uint8)
        save_image(Image.fromarray(grey), f"{base}_confidence.png")


def remove_stale_confidence(todo: list[Item], items: list[Item], out_dir: Path) -> None:
    """Without --save_confidence, an earlier run's OUT/<name>_confidence.png of an image predicted again would sit
    beside a mask it does not describe: removed, unless another input writes that very file (a photo named
    b_confidence.png beside b.jpg: its mask was deleted)."""
    written = {name for item in items for name in item.outputs(False)}
    for item in todo:
        stale = f"{item.name}_confidence.png"
        if stale not in written:
            (out_dir / stale).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunResult:
    written: list[Item]          # items whose files are all written
    seconds: float
    failures: list               # (source, reason)
    resized: list[str] = dataclasses.field(default_factory=list)   # the names of the photos the network saw resized


class Stopped(Exception):
    """A run stopped by Ctrl-C or SIGTERM (`interrupt`) or by an output no image can be written to (`error`: a full
    disk, a read-only folder); `written` items are complete (the writes under way were finished first)."""

    def __init__(self, written: list[Item], failures: list, error: OSError | None = None,
                 interrupt: KeyboardInterrupt | None = None):
        super().__init__(f"{len(written)} written")
        self.written, self.failures, self.error, self.interrupt = written, failures, error, interrupt


def predict_all(predictor, items: list[Item], out_dir: Path, confidence: bool, progress=None,
                title: str | None = None) -> RunResult:
    """Predict every item and write its files; reading, the model and writing overlap; `title` above each overlay
    (overlay_title). Ctrl-C, or a full disk, raises Stopped once the writes under way are done."""
    failures, written, resized = [], [], []
    start = time.perf_counter()
    stream = ((read, read[1]) for read in read_images(items, failures))
    ignore_id = predictor.trained.label_map.ignore_id
    with ThreadPoolExecutor(2) as pool:
        pending = collections.deque()
        try:
            for (item, image, transparent), prediction in predictor.predict(stream):
                if prediction.resized:
                    resized.append(item.name)
                if transparent is not None:     # no part of the photo: no class, no confidence
                    prediction.mask[transparent], prediction.confidence[transparent] = ignore_id, 0.0
                pending.append((item, pool.submit(write_outputs, item, image, prediction, out_dir,
                                                  predictor.trained.label_map, confidence, title)))
                while len(pending) > _WRITES_PENDING:
                    _finish_write(*pending.popleft(), written, failures, progress)
            while pending:
                _finish_write(*pending.popleft(), written, failures, progress)
        except (KeyboardInterrupt, OSError) as e:
            while pending:
                with contextlib.suppress(OSError):
                    _finish_write(*pending.popleft(), written, failures, None)
            if isinstance(e, OSError):
                raise Stopped(written, failures, error=e) from None
            raise Stopped(written, failures, interrupt=e) from None
    if progress is not None:
        progress.update(len(items) - progress.n)
    return RunResult(written, time.perf_counter() - start, failures, resized)


def _finish_write(item: Item, future, written: list, failures: list, progress) -> None:
    try:
        future.result()
        written.append(item)
    except OSError as e:
        if e.errno in WRITE_ERRORS:      # no later image would be written either
            raise
        failures.append((item.source, f"could not write outputs: {e}"))
    finally:
        if progress is not None:
            progress.update(1)


def mask_marks(items: list[Item], out_dir: Path) -> dict[Item, str | None]:
    """The photo each item's mask in OUT records (SOURCE_KEY; None: it records none, written by a version before
    2026-12-07); items without a readable mask are left out. Each mask is opened once."""
    marks = {}
    for item in items:
        try:
            with Image.open(out_dir / f"{item.name}.png") as mask:
                marks[item] = mask.text.get(SOURCE_KEY)
        except (OSError, ValueError, SyntaxError):      # missing, or unreadable: predicted again
            pass
    return marks


def already_predicted(items: list[Item], out_dir: Path, confidence: bool, since: float,
                      marks: dict[Item, str | None]) -> list[Item]:
    """Items whose files are all in OUT, newer than the image and than `since`, and whose mask records that very
    image (`marks`: mask_marks) (--skip_existing): every file is written whole (atomic), so one that is there is
    complete. Another photo of the same name (another folder predicted into OUT, its files' times kept by a copy) is
    predicted again."""
    def done(item: Item) -> bool:
        if marks.get(item) is None:
            return False
        try:
            made = min((out_dir / name).stat().st_mtime for name in item.outputs(confidence))
            return made >= max(item.source.stat().st_mtime, since) and marks[item] == source_mark(item.source)
        except OSError:                                 # a file missing: predicted again
            return False
    return [item for item in items if done(item)]


def source_mark(photo: Path) -> str:
    """The photo a mask is predicted from: its path (bytes that are not UTF-8 escaped: a PNG's text holds only
    UTF-8), size and modification time."""
    stat = photo.stat()
    path = os.fsencode(photo.resolve()).decode("utf-8", "backslashreplace")
    return f"{path} {stat.st_size} {stat.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------------------------
# What made OUT's files
# ---------------------------------------------------------------------------------------------------------------
_COMPARED = ("weights", "flip_tta", "scales", "resize", "window", "overlap")    # what changes a prediction


def settings_of(predictor, workdir: str) -> dict:
    """The model and settings a prediction depends on; `weights` fingerprints the checkpoint itself (a run
    trained again from scratch reaches the same step with other weights)."""
    t = predictor.trained
    return {"workdir": str(Path(workdir).resolve()), "checkpoint": t.source, "step": t.step,
            "weights": t.weights_fingerprint(), "flip_tta": predictor.flip_tta, "scales": list(predictor.scales),
            "resize": predictor.resize, "window": list(predictor.window), "overlap": predictor.overlap}


def record_settings(out_dir: Path, settings: dict) -> tuple[float, dict | None]:
    """(since, earlier): records `settings` in OUT/predict.json unless the same ones are there already, and
    returns the time they were first recorded (by OUT's own clock: the file's mtime), and what was recorded
    before where it differs (None where it is the same, {} where nothing readable was). Files older than `since`
    were made with other settings, or with unknown ones."""
    import json

    path = out_dir / SETTINGS_FILE
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = {}
    if not isinstance(earlier, dict):
        earlier = {}
    same = earlier and all(earlier.get(key) == settings[key] for key in _COMPARED)
    first = path.stat() if same else None
    if earlier != settings:     # other settings, or the same weights under another name (a copied run, best = step N)
        with atomic_file(path, "w") as f:
            json.dump(settings, f, indent=1)
    if first is not None:       # the same settings: their time is still the first recording's
        os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
        return first.st_mtime, None
    return path.stat().st_mtime, earlier


def _changed(earlier: dict, now: dict) -> str:
    """What differs, in words: 'step 650 of RUN -> step 1300 of RUN', 'resize auto -> none'."""
    def model(s):
        return f"step {s.get('step')} of {s.get('workdir')} (weights {s.get('weights')})"
    parts = [f"{model(earlier)} -> {model(now)}"] if earlier.get("weights") != now["weights"] else []
    parts += [f"{key} {earlier.get(key)} -> {now[key]}" for key in _COMPARED[1:] if earlier.get(key) != now[key]]
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m streetseg_jax.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="training work directory (holds checkpoints/)")
    parser.add_argument("--input", required=True, nargs="+", help="image files, folders or globs")
    parser.add_argument("--output", required=True, help="folder for masks, overlays and confidence maps")
    add_checkpoint_flag(parser)
    parser.add_argument("--save_confidence", action="store_true",
                        help="also write <name>_confidence.png: greyscale, the predicted class's softmax probability "
                             "times 255 (white: certain; never darker than 255/K for K classes, where the model "
                             "cannot tell them apart, but black, 0, where a cut-out's pixels are transparent: no "
                             "part of the photo)")
    add_flip_tta_flags(parser, "average with the mirror image's prediction")
    add_extra_scales_flag(parser)
    parser.add_argument("--resize", type=_resize, default="auto",
                        help="auto (default): a photo whose shorter side is over 1.5x or under 2/3 of the training "
                             "images' is resized to theirs first; none: every photo at its own size; a number from "
                             "0.05 to 4: every photo resized by it. Masks always come at the photo's own size")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="windows per model call, at most (default 8; fewer where their logits would pass 256 "
                             "MiB); on a CPU the calls are split over one XLA device per core, as many as divide it")
    parser.add_argument("--window", type=_window, default=None,
                        help="window in network pixels, N or HxW (default 512x512; smaller where its logits would "
                             "pass 256 MiB)")
    parser.add_argument("--overlap", type=_overlap, default=None,
                        help="window overlap fraction, at least 0 and below 0.5 (default 0.25)")
    parser.add_argument("--skip_existing", action="store_true",
                        help="leave out images whose files are already in --output, newer than the image and made "
                             "from it by the same model and settings (OUTPUT/predict.json records them), to go on "
                             "after an interrupted run; --export still covers them all")
    parser.add_argument("--export", choices=EXPORT_FORMATS, help="also write the masks as polygons for this tool")
    parser.add_argument("--tolerance", type=_tolerance, default=None,
                        help="polygon simplification in pixels, 0 or more (--export; default 0.5)")
    parser.add_argument("--min_area", type=_min_area, default=None,
                        help="regions of fewer pixels are painted over by their neighbours' class before tracing, "
                             "no shape of their own (--export; default 4; 16-64 for a noisy model's specks; "
                             "--tolerance 0 --min_area 0 gives every pixel back exactly)")
    return parser.parse_args(argv)


def _window(text: str) -> tuple[int, int]:
    try:
        sides = [int(v) for v in text.lower().split("x")]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) < 16:
        raise argparse.ArgumentTypeError(f"window must be N or HxW with sides of at least 16, got {text!r}")
    return (sides[0], sides[-1])


def _resize(text: str) -> str | float:
    if text in ("auto", "none"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.05 <= value <= 4:       # inf crashed, 1e-9 drew a 1x1 network input
        raise argparse.ArgumentTypeError(f"resize must be auto, none or a factor from 0.05 to 4, got {text!r}")
    return value


def _overlap(text: str) -> float:
    value = _number(text, "overlap")
    if not 0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"overlap must be at least 0 and below 0.5, got {text!r}")
    return value


def _tolerance(text: str) -> float:
    value = _number(text, "tolerance")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"tolerance must be 0 or more pixels, got {text!r}")
    return value


def _min_area(text: str) -> float:
    value = _number(text, "min_area")
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"min_area must be 0 or more pixels, got {text!r}")
    return value


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    for flag in ("tolerance", "min_area"):
        if getattr(args, flag) is not None and not args.export:
            fail(f"--{flag} shapes the polygons of --export; give --export labelme|coco|cvat too")
    check_workdir(args.workdir)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--output {out_dir} is a file, not a folder")
    items = collect_inputs(args.input, out_dir)
    check_collisions(items, args.save_confidence, out_dir)
    check_output(items, out_dir, export=bool(args.export))
    if args.export:
        check_export(items, args.export, out_dir)
    # One predict at a time writes into a folder on this machine: a second one, with other settings, left masks of
    # the first under the second's settings record, and --skip_existing then kept them as the second's.
    with machine_lock("predict", out_dir, lambda: fail(f"another predict is writing into {out_dir}; wait for it to "
                                                       "end, or give another --output")):
        return _predict(args, items, out_dir)


def _predict(args: argparse.Namespace, items: list[Item], out_dir: Path) -> int:
    predictor = _predictor(args)
    done = _done_before(items, out_dir, predictor, args)
    skipped = frozenset(done)
    todo = [item for item in items if item not in skipped]
    if not args.save_confidence:
        remove_stale_confidence(todo, items, out_dir)
    try:
        result = _run(predictor, todo, out_dir, args) if todo else RunResult([], 0.0, [])
    except Stopped as e:
        _list_failures(e.failures)
        if e.error:
            what, code = f"error: {e.error}", 2
        else:
            by, code = stopped_by(e.interrupt)
            what = f"stopped by {by}"
        print(f"\n{what}: {len(e.written)} of {len(todo)} image(s) written, each whole; the same command with "
              "--skip_existing predicts the rest" + (" once there is room" if e.error is not None else ""),
              file=sys.stderr)
        return code
    finished = frozenset(done + result.written)
    exported = exportable([item for item in items if item in finished], out_dir) if args.export else []
    if exported:
        try:
            count = export_polygons(exported, predictor.trained.label_map, args.export, out_dir, args.tolerance,
                                      args.min_area)
        except KeyboardInterrupt as e:
            by, code = stopped_by(e)
            print(f"\nstopped by {by} while writing the polygons; every image's files are written: the same command "
                  "with --skip_existing writes the polygons", file=sys.stderr)
            return code
        except OSError as e:    # a full disk: the masks are whole, the polygons are not all written
            refused = disk_refusal(e)
            if refused is None:
                raise
            once = "once there is room" if e.errno in NO_ROOM else "once it can write there"
            print(f"error: {refused}: every image's masks and overlays are written, the polygons not all: the same "
                  f"command with --skip_existing writes them {once}", file=sys.stderr)
            return 2
        if count:
            print(f"polygons for {count} image(s) in {args.export} format: {out_dir / args.export} (with the run's "
                  f"{EXPORT_LABEL_MAP}, which labels check and data build read there)")
    if result.written:
        say_which_exports_are_older(out_dir, args.export)
    if result.resized and args.resize == "auto":
        height, width = predictor.trained.image_size
        print(f"{len(result.resized)} photo(s) were resized for the network so that their shorter side is the "
              f"training images' ({min(height, width)} px): {first_few(result.resized)}; their masks are at their own "
              "size (--resize none keeps every photo's size)")
    return _summary(result, out_dir)


def _done_before(items: list[Item], out_dir: Path, predictor, args) -> list[Item]:
    """Records this run's settings in OUT (creating it) and returns the items --skip_existing leaves out: those
    whose files were made with these settings."""
    settings = settings_of(predictor, args.workdir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        since, earlier = record_settings(out_dir, settings)
    except OSError as e:
        fail(f"cannot write into --output {out_dir}: {e.strerror or e}")
    if not args.skip_existing:
        return []
    marks = mask_marks(items, out_dir)
    made_before = already_predicted(items, out_dir, args.save_confidence, 0.0, marks) if earlier is not None else []
    if made_before:
        how = f"with another model or other settings ({_changed(earlier, settings)})" if earlier else \
            f"with settings {out_dir / SETTINGS_FILE} does not record"
        print(f"note: the files of {len(made_before)} image(s) in {out_dir} were made {how}: they are predicted "
              "again", file=sys.stderr)
    done = already_predicted(items, out_dir, args.save_confidence, since, marks)
    if done:
        print(f"{len(done)} of {len(items)} image(s) already predicted in {out_dir}: skipped (--skip_existing)",
              file=sys.stderr)
    unmarked = [item for item in items if item in marks and marks[item] is None]
    if unmarked:
        print(f"note: {len(unmarked)} mask(s) in {out_dir} do not record which photo they were predicted from "
              "(written by a version before 2026-12-07): they are predicted again", file=sys.stderr)
    return done


def _predictor(args):
    from streetseg_jax import inference, sharding
    from streetseg_jax.evaluator import apply_tta_flags

    if args.batch_size < 1:
        fail(f"--batch_size must be at least 1, got {args.batch_size}")
    sharding.split_cpu_into_cores(args.batch_size)
    try:
        trained = inference.load_model(args.workdir, args.checkpoint, say=lambda m: print(m, file=sys.stderr))
        flip_tta = apply_tta_flags(trained.config, args.flip_tta, args.extra_scales)
        return inference.Predictor(trained, window=args.window or inference.DEFAULT_WINDOW,
                                   overlap=inference.DEFAULT_OVERLAP if args.overlap is None else args.overlap,
                                   batch_size=args.batch_size, flip_tta=flip_tta, resize=args.resize)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))


def _run(predictor, items: list[Item], out_dir: Path, args) -> RunResult:
    from tqdm import tqdm

    t = predictor.trained
    print(f"model: {args.workdir} ({t.source} checkpoint, step {t.step}), {len(items)} image(s)", file=sys.stderr)
    if args.resize == "auto" and t.image_size is None:
        print("note: this run's checkpoint does not record the size of its training images (it predates that), so "
              "photos are not resized to it; --resize F resizes them by F", file=sys.stderr)
    with tqdm(total=len(items), unit="image", file=sys.stderr, disable=None) as progress:
        return predict_all(predictor, items, out_dir, args.save_confidence, progress,
                           overlay_title(args.workdir, t))


def overlay_title(workdir, trained) -> str:
    """What an overlay is of, as training's overlays say it: "run b60ce, best checkpoint (step 60)"."""
    source, step = trained.source, trained.step
    which = f"checkpoint {source}" if source == f"step {step}" else f"{source} checkpoint (step {step})"
    return f"run {Path(workdir).resolve().name}, {which}"


def _summary(result: RunResult, out_dir: Path) -> int:
    rate = len(result.written) / max(result.seconds, 1e-9)
    print(f"predicted {len(result.written)} image(s) in {result.seconds:.1f} s ({rate:.2f} images/s, compiling for "
          f"each image size and writing the files included; tools/benchmark.py predict times the network) into "
          f"{out_dir}" if result.seconds else f"nothing left to predict into {out_dir}")
    _list_failures(result.failures)
    return 1 if result.failures else 0


def _list_failures(failures: list) -> None:
    if failures:
        print(f"{len(failures)} input(s) failed and were skipped:", file=sys.stderr)
    for source, reason in failures:
        shown = reason if reason.startswith(str(source)) else f"{source}: {reason}"
        print(f"  {shown}", file=sys.stderr)


if __name__ == "__main__":
    quiet_libraries()
    run_command(main, "no image was written")     # stopped while loading or compiling: predicting says itself
