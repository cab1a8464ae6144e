"""Label tools: turn a labelling tool's export into masks, or check it first.

    python -m streetseg_jax.labels to-masks --format FORMAT --input PATH --output DIR [--label_map FILE]
                                            [--unknown error|ignore]
    python -m streetseg_jax.labels check --format FORMAT --input PATH [--label_map FILE] [--json OUT.json]
                                         [--strict] [--unknown error|ignore]
    python -m streetseg_jax.labels classes --format FORMAT --input PATH [--label_map FILE] [--output MAP.json]

FORMAT is one of voc, mit_xml, labelme, coco, coco_panoptic, cvat, labelbox, cityscapes, mapillary, masks, or auto
(detected from the files, and said). to-masks reads every annotation first and stops on unreadable files, unknown
class names (unless --unknown ignore) or two annotations of one image key before writing anything, naming every
such problem in one message (check's report, too, lists the files that could not be read with the problems of
those that could, and a build refuses the export with all of them); it then writes, into a hidden folder that
becomes --output (or whose masks move into it) once every mask is written (a run killed on the way leaves none),
one palette PNG mask per image, named after the image's key: its file stem, or where stems repeat in an export a
path such as Train/img0 (a CVAT project's subset) or seq1/frame_001 (a mask folder's subfolder), written in
subfolders of the output. check prints the validation report (labels/validate.py) and exits non-zero when it finds
errors, or warnings with --strict. classes lists the class names the export uses (images and shapes of each) and
which class of the label map each one becomes; --output writes a label map of the export's own classes to start
from (labels/label_map.starter_label_map). Masks with no label map (none given or in the export) name no classes:
classes lists the pixel values (greyscale and palette masks) or colours (RGB masks) they hold, with their share of
the pixels, and --output writes a label map of them that reads the export (starter_of_values, starter_of_colours).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
from pathlib import Path

from tqdm import tqdm

from streetseg_jax import atomic
from streetseg_jax.cli import ArgumentParser, disk_refusal, export_label_map, fail, normalise_argv, run_command
from streetseg_jax.labels import formats
from streetseg_jax.labels.formats import labelme, masks
from streetseg_jax.labels.convert import (UNKNOWN_CHOICES, UnknownLabelsError, annotation_to_mask,
                                          find_unknown_labels, write_mask_png)
from streetseg_jax.labels.images import IMAGE_SUFFIXES, case_insensitive, file_ids, image_size
from streetseg_jax.labels.label_map import (LabelMap, LabelMapError, default_label_map, label_map_of_export,
                                           starter_label_map, starter_of_colours, starter_of_values)
from streetseg_jax.labels.shapes import Annotation, LabelFormatError, image_key, listing, problems_error
from streetseg_jax.labels.validate import (CheckOptions, duplicate_keys, label_problems, locate_images, shape_warnings,
                                           size_mismatch, size_problem, validate, write_json)

FORMAT_CHOICES = (*formats.FORMATS, formats.AUTO)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m streetseg_jax.labels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    to_masks = commands.add_parser("to-masks", aliases=["to_masks"],
                                   help="rasterize annotations into palette PNG class-id masks")
    _common_arguments(to_masks)
    to_masks.add_argument("--output", required=True, type=Path, help="folder for the masks (<image key>.png)")
    check = commands.add_parser("check", help="validation report: problems per file, class shares, weights")
    _common_arguments(check)
    check.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    check.add_argument("--strict", action="store_true", help="exit non-zero on warnings too")
    classes = commands.add_parser("classes", help="the class names an export uses, and a label map of them")
    _common_arguments(classes, unknown=False)
    classes.add_argument("--output", type=Path, help="write a label map of the export's classes to this new file")
    return parser


def _common_arguments(parser: argparse.ArgumentParser, unknown: bool = True) -> None:
    parser.add_argument("--format", choices=FORMAT_CHOICES,
                        help="the labelling tool's export format, or auto to detect it (default: voc; for predict's "
                        "--output, the export it wrote there)")
    parser.add_argument("--input", required=True, type=Path, help="the export folder (or one export file)")
    parser.add_argument("--label_map", type=Path, help="label map JSON, or a tool's class list (CVAT's labelmap.txt, "
                        "labelme2voc's class_names.txt, Roboflow's _classes.csv) (default: the export's "
                        "label_map.json where it has one, as predict --export writes it, else its class list, else a "
                        "label_map.json in a folder inside it (predict's OUT/labelme/), else labelme2voc's labels.txt "
                        "beside it or one folder up, else the built-in 8 street classes)")
    if unknown:
        parser.add_argument("--unknown", choices=UNKNOWN_CHOICES, default="error",
                            help="class names not in the label map: an error (default), or painted with the ignore id")


# --- reading -----------------------------------------------------------------------------------------------------
def read_export(fmt: str, path: Path, label_map: LabelMap,
                seed_map: bool = False) -> tuple[str, list[Annotation], list[str]]:
    """(the format, the annotations of the export that could be read, a line for each file that could not:
    formats.read_readable); a clear exit for a missing or empty export, or one that cannot be read as a whole.
    `seed_map`: the label map is the seed's for want of another (said before masks are read with it)."""
    if not path.exists():
        fail(f"input {path} does not exist")
    try:
        if fmt == formats.AUTO:
            fmt = formats.detect(path)
            print(f"detected format: {fmt} ({path})")
        if fmt == "masks" and seed_map:        # ids mean nothing without their names: said, as the export's are
            print(f"note: the masks' values are read as the seed's classes ({', '.join(label_map.names)}), no "
                  "label map being given or found in the export; --label_map names the export's", file=sys.stderr)
        annotations, problems = formats.read_readable(fmt, path, label_map)
    except (LabelFormatError, UnknownLabelsError) as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001 - a reader bug still reaches the user as a message, not a traceback
        fail(f"the {fmt} reader failed on {path} ({type(e).__name__}: {e}); this is a bug in streetseg_jax, "
             "please report it with the file")
    return fmt, annotations, problems


def read_with_label_map(args: argparse.Namespace) -> tuple[LabelMap, str, list[Annotation], list[str]]:
    """The label map (--label_map, else the export's own: cli.export_label_map, else the seed's classes), and the
    export read with it: (label map, format, annotations, problems of the files that could not be read: read_export);
    `args.label_map_read` is the label map's file (None: the seed's)."""
    from streetseg_jax.predict_export import export_in_output
    args.input, args.format = export_in_output(args.input, args.format)
    path = args.label_map if args.label_map is not None else export_label_map(args.input)
    args.label_map_read = path
    try:
        label_map = default_label_map() if path is None else LabelMap.load(path)
    except LabelMapError as e:
        fail(str(e))
    return label_map, *read_export(args.format or "voc", args.input, label_map, seed_map=path is None)


# --- to-masks ----------------------------------------------------------------------------------------------------
def to_masks(args: argparse.Namespace) -> None:
    label_map, fmt, annotations, unreadable = read_with_label_map(args)
    located = [dataclasses.replace(a) for a in annotations]     # keys are the annotations' as read: copies
    locate_images(located, args.input if args.input.is_dir() else args.input.parent)
    for mismatch in sizes_unlike_the_images(located):
        print(f"warning: {mismatch}", file=sys.stderr)
    unread = [str(problems_error(unreadable))] if unreadable else []
    refusals = unread + refusals_of(args, annotations, located, label_map)
    if refusals:
        fail("\n".join(refusals))
    try:
        problems = write_masks(annotations, label_map, args.output)
    except (OSError, ValueError) as e:     # ValueError: a key no file system takes (a NUL byte in a stem)
        fail(f"cannot write masks to {args.output}: {getattr(e, 'strerror', None) or e}")
    problems += [f"{a.source}: {warning}" for a in annotations       # as check says them
                 for warning in label_problems(a, label_map, args.unknown)[1] + shape_warnings(a)]
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    shapes = sum(len(a.shapes) for a in annotations)
    print(f"wrote {len(annotations)} masks to {args.output} ({shapes} shapes, {len(problems)} warning(s))")


def refusals_of(args: argparse.Namespace, annotations: list[Annotation], located: list[Annotation],
                label_map: LabelMap) -> list[str]:
    """Why to-masks cannot write the masks of the annotations that read (`located`: copies with their images found),
    a message for each check that fails: all of them at once, with the files that did not read."""
    refusals = []
    sizes = [f"{a.source}: {problem}" for a in annotations if (problem := size_problem(a.width, a.height))]
    if sizes:
        refusals.append("cannot draw masks of these sizes:" + listing(sizes))
    clashes = duplicate_keys(annotations)
    if clashes:
        refusals.append("two or more annotations would write the same mask file:"
                        + listing(sorted(set(clashes.values()))))
    folded = _case_clashes([image_key(a) for a in annotations])
    if folded and case_insensitive(args.output):
        refusals.append("these masks would be one file on this disk, where case does not count (macOS, Windows): "
                        + listing(folded) + "\nrename the images, or write the masks to a disk that tells them apart")
    overwritten = inputs_overwritten(annotations, located, args.output)
    if overwritten:
        refusals.append("these masks would overwrite the export's own files (a PNG photo's or mask's mask has its "
                        "name) or lie beside its mask or photo of that name, which the next read could not tell from "
                        "it; give another --output:" + listing(overwritten))
    unknown = find_unknown_labels(annotations, label_map) if args.unknown == "error" else {}
    if unknown:
        refusals.append(str(UnknownLabelsError(unknown, label_map)))
    return refusals


def _case_clashes(keys: list[str]) -> list[str]:
    """Keys whose masks differ only in case (Frame and frame), as 'Frame.png and frame.png'."""
    first: dict[str, str] = {}
    return [f"{first[key.casefold()]}.png and {key}.png" for key in keys
            if first.setdefault(key.casefold(), key) != key]


def inputs_overwritten(annotations: list[Annotation], located: list[Annotation], output: Path) -> list[str]:
    """The mask paths (from `annotations` as read) that are an image of one of them (`located`: with their images
    found, locate_images) or a file read as annotations (a masks export's own mask: `--output` its mask folder),
    or that have a mask's or photo's name with another suffix beside it (x.png beside the mask x.tif or the photo
    x.jpg: the next read could not tell which is meant)."""
    targets = [output / f"{image_key(a)}.png" for a in annotations]
    sources = [Path(a.source) for a in annotations]
    pictures = [*sources, *(Path(a.image_path) for a in located if a.image_path is not None)]
    named = {(path.resolve().parent, path.stem) for path in pictures if path.suffix.lower() in IMAGE_SUFFIXES}
    inputs = file_ids(a.image_path for a in located if a.image_path is not None) | file_ids(sources)
    return sorted(str(path) for path in targets
                  if file_ids([path]) & inputs or (path.resolve().parent, path.stem) in named)


def sizes_unlike_the_images(located: list[Annotation]) -> list[str]:
    """Annotations (with their images found, locate_images) whose size is not their image's as a viewer shows it (a
    tool that ignored EXIF orientation, an image resized after labelling): their masks are drawn at the
    annotation's size, which does not fit the photo."""
    found = []
    for annotation in located:
        if annotation.image_path is None:
            continue
        image = Path(annotation.image_path)
        try:
            mismatch = size_mismatch(annotation, image, image.name, image_size(image))
        except LabelFormatError:
            continue                        # `labels check` says what is wrong with the image
        if mismatch:
            found.append(f"{annotation.source}: {mismatch}: the mask will not fit it (a tool that ignored EXIF "
                         "orientation, or an image resized after labelling?)")
    return found


def write_masks(annotations: list[Annotation], label_map: LabelMap, output: Path) -> list[str]:
    """One `<image key>.png` per annotation (unknown names get the ignore id); the rasterizer's problems. They are
    written into a hidden folder, which becomes `output` (or whose masks move into it) once all are written
    (atomic.folder_filled_whole): a to-masks killed on the way leaves no folder of some of the masks."""
    problems = []
    with atomic.folder_filled_whole(output) as folder:
        for annotation in tqdm(annotations, desc="writing masks", unit="mask", disable=None):
            result = annotation_to_mask(annotation, label_map, unknown="ignore")
            path = folder / f"{image_key(annotation)}.png"
            path.parent.mkdir(parents=True, exist_ok=True)      # nested keys ("Train/img0") get their folders
            write_mask_png(path, result.mask, label_map)
            problems.extend(result.problems)
    return problems


# --- check -------------------------------------------------------------------------------------------------------
def _part_of_the_export(path: Path, args: argparse.Namespace, annotations: list[Annotation]) -> bool:
    """Whether `path` is a file the check reads: the export (its files, its photos: any file in its folder but an
    earlier check report) or the label map."""
    if not path.is_file():
        return False
    path, export = path.resolve(), args.input.resolve()
    read = {Path(a.source).resolve() for a in annotations} | {export} | (
        set() if args.label_map_read is None else {Path(args.label_map_read).resolve()})
    return path in read or (export.is_dir() and path.is_relative_to(export) and not _a_check_report(path))


def _a_check_report(path: Path) -> bool:
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(report, dict) and {"format", "files", "problems"} <= set(report)


def check(args: argparse.Namespace) -> None:
    label_map, fmt, annotations, unreadable = read_with_label_map(args)
    if args.json is not None and _part_of_the_export(args.json, args, annotations):
        fail(f"--json {args.json} is a file of the export or its label map (it would be overwritten); give another "
             "file")
    root = args.input if args.input.is_dir() else args.input.parent
    options = CheckOptions(unknown=args.unknown, check_images=True, decode_images=True)
    progress = lambda fn, jobs: tqdm(map(fn, jobs), total=len(jobs), desc="checking", unit="file",  # noqa: E731
                                     disable=None, leave=False)
    report = validate(annotations, label_map, fmt=fmt, source=args.input, root=root, options=options,
                      map_fn=progress, unreadable=unreadable)
    if args.json:       # first: a reader of the printout that stops (| head) ends the command
        try:
            write_json(report, args.json)
        except OSError as e:
            fail(disk_refusal(e) or f"cannot write {args.json}: {e.strerror or e}")
    print(report.text())
    errors, warnings = len(report.errors), len(report.warnings)
    if errors or (args.strict and warnings):
        because = f"{errors} error(s)" if errors else f"{warnings} warning(s) (--strict)"
        fail(f"check failed: {because} in {args.input}", code=1)


# --- classes -----------------------------------------------------------------------------------------------------
def classes(args: argparse.Namespace) -> None:
    if args.output is not None and args.output.exists():
        fail(f"--output {args.output} exists (a label map edited by hand, perhaps); give a new file")
    if _masks_without_label_map(args):
        return mask_classes(args)
    label_map, fmt, annotations, unreadable = read_with_label_map(args)
    if unreadable:
        fail(str(problems_error(unreadable)))
    labels = [[shape.label for shape in annotation.shapes if not shape.ignore] for annotation in annotations]
    shapes = collections.Counter(name for names in labels for name in names)
    images = collections.Counter(name for names in labels for name in set(names))
    if not shapes:
        fail(f"no labelled shapes in {args.input}")
    names = sorted(shapes, key=lambda n: (-images[n], -shapes[n], n))
    listed = labelme.class_list(args.input) if fmt == "labelme" else None
    if listed:              # labelme2voc's ids: masks made with it already agree with the map written here
        names = listed[1] + [name for name in names if name not in listed[1]]     # its unused classes keep ids
        print(f"note: the classes in the order of {listed[0]} (labelme2voc's ids)")
    if fmt == "masks":      # the masks hold ids: the map they were read with is theirs, renumbered it would lie
        names = [name for name in label_map.names if name in shapes]
    print(f"{len(names)} class name(s) in {len(annotations)} image(s), each -> the class it becomes with the label "
          "map in use:")
    width = max(len(repr(n)) for n in names)
    for name in names:
        known = label_map.id_of(name)
        becomes = (f"class {known} {label_map.classes[known].name!r}" if known is not None
                   else "not in the label map")
        print(f"  {name!r:<{width}}  {images[name]:>6} image(s) {shapes[name]:>7} shape(s)  -> {becomes}")
    blank = [name for name in names if not name.strip()]
    if blank:           # a CVAT shape without a label: it became a class named 'class'
        print(f"note: {sum(shapes[n] for n in blank)} shape(s) in {sum(images[n] for n in blank)} image(s) have no "
              "class name: no class of the label map written stands for them, so check and build refuse them "
              "unless --unknown ignore paints them with the ignore id")
    if args.output is not None:
        try:
            named = [name for name in names if name not in blank]
            starter = label_map if fmt == "masks" else starter_label_map(named, keep_ids=listed is not None)
            atomic.write_text(args.output, starter.to_json() + "\n")
        except (LabelMapError, OSError) as e:
            fail(str(e))
        if fmt == "masks":
            print(f"wrote the label map the masks were read with ({starter.num_classes} classes, their ids kept: the "
                  f"masks hold them) to {args.output}; rename classes or give them aliases there, and use it with "
                  f"--label_map {args.output}")
            return
        _say_merged(starter, named)
        print(f"wrote a label map of {starter.num_classes} classes to {args.output} (the names above, with ids of its "
              "own in that order, not those after the arrows; class 0 is the fill class; "
              "merge two classes by moving one's name into the other's aliases, then renumber the ids 0..K-1); "
              f"use it with --label_map {args.output}")


def _masks_without_label_map(args: argparse.Namespace) -> bool:
    """Whether `classes` is to read masks that have no label map (no --label_map, none in the export): their values
    name no class yet, and read as the seed's they named classes the export never had. Where the format or the
    export's label map cannot be told, the reading that follows says why."""
    from streetseg_jax.predict_export import export_in_output
    if args.label_map is not None:
        return False
    args.input, args.format = export_in_output(args.input, args.format)
    try:
        fmt = formats.detect(args.input) if args.format == formats.AUTO else args.format or "voc"
        if fmt != "masks" or label_map_of_export(args.input) is not None:
            return False
    except (LabelFormatError, LabelMapError, OSError):
        return False
    if args.format == formats.AUTO:
        print(f"detected format: {fmt} ({args.input})")
    args.format = fmt
    return True


def mask_classes(args: argparse.Namespace) -> None:
    """`classes` of masks with no label map: the pixel values (greyscale and palette masks) or colours (RGB masks)
    they hold, with their share of the pixels, and a label map of them to start from, which reads the export."""
    try:
        kind, pixels, held = masks.survey(args.input)
        found = sorted(pixels) if kind == "values" else sorted(pixels, key=lambda c: (-pixels[c], c))
        starter = starter_of_values(found) if kind == "values" else starter_of_colours(map(masks.unpack, found))
    except (LabelFormatError, LabelMapError) as e:
        fail(str(e))
    print(f"{len(found)} {'pixel value' if kind == 'values' else 'colour'}(s) in the masks (no label map given or "
          "found in the export), each -> the class of the label map --output writes:")
    names = [_found_name(kind, value) for value in found]
    total = sum(pixels.values())
    for name, value in zip(names, found):
        class_id = _class_of(kind, value, starter)
        becomes = "ignore" if class_id is None else f"class {class_id} {starter.classes[class_id].name!r}"
        print(f"  {name:<{max(map(len, names))}}  {held[value]:>6} mask(s) {100 * pixels[value] / total:>6.1f}% of "
              f"the pixels  -> {becomes}")
    if args.output is None:
        print("note: --output writes that label map; rename its classes there, and use it with --label_map")
        return
    try:
        atomic.write_text(args.output, starter.to_json() + "\n")
    except OSError as e:
        fail(str(e))
    print(f"wrote a label map of {starter.num_classes} classes to {args.output} (named by the "
          f"{'value' if kind == 'values' else 'id'} each stands for; class 0 is the fill class): rename them there "
          f"and use it with --label_map {args.output}")


def _found_name(kind: str, value: int) -> str:
    return f"value {value}" if kind == "values" else f"colour {masks.unpack(value)}"


def _class_of(kind: str, value: int, label_map: LabelMap) -> int | None:
    """The class id a pixel value or packed colour of the masks stands for in `label_map`; None for ignore."""
    if kind == "values":
        class_id = int(label_map.value_table()[value])
        return None if class_id == label_map.ignore_id else class_id
    return next((c.id for c in label_map.classes if c.color == masks.unpack(value)), None)


def _say_merged(label_map: LabelMap, names: list[str]) -> None:
    """Name the classes that took several of the names listed (one snake_case spelling, or background's), so that
    fewer classes than names are no surprise."""
    merged = [(c.name, spellings) for c in label_map.classes
              if len(spellings := [n for n in names if n == c.name or n in c.aliases]) > 1]
    if merged:
        print("note: names merged into one class, being one name in snake_case (each kept as an alias; give one a "
              "class of its own in the label map where they differ): "
              + "; ".join(f"{', '.join(map(repr, spellings))} -> {name!r}" for name, spellings in merged))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else list(argv)))
    {"to-masks": to_masks, "to_masks": to_masks, "check": check, "classes": classes}[args.command](args)


if __name__ == "__main__":
    run_command(main, "each file it wrote is whole (to-masks: none, its masks are moved into place only once all "
                "are written); run it again to finish")
