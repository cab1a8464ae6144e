"""Label tools: `python -m streetseg_jax.labels to-masks --format voc --input XML_DIR --output MASK_DIR`.

to-masks reads every annotation first, stops on unreadable files or unknown class names before writing anything
(unless --unknown ignore), then writes one palette PNG mask per annotation, named after the annotation file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from streetseg_jax.cli import fail, normalise_argv
from streetseg_jax.labels.convert import UNKNOWN_CHOICES, UnknownLabelsError, write_masks
from streetseg_jax.labels.formats.voc import read_voc
from streetseg_jax.labels.label_map import LabelMap, LabelMapError, default_label_map
from streetseg_jax.labels.shapes import Annotation, LabelFormatError


def _one_file_per_image(read: Callable[[Path], Annotation], pattern: str) -> Callable[[Path], list[Annotation]]:
    """A reader for formats with one annotation file per image: a folder of `pattern` files, or one file."""
    def read_all(path: Path) -> list[Annotation]:
        files = sorted(path.glob(pattern)) if path.is_dir() else [path]
        if not files:
            fail(f"no {pattern} files in {path}")
        return [read(f) for f in tqdm(files, desc="reading", unit="file", disable=None, leave=False)]
    return read_all


# --format name -> function(input path) -> annotations. Formats with one file for many images (COCO) plug in here
# with a reader that returns all of that file's annotations.
READERS: dict[str, Callable[[Path], list[Annotation]]] = {
    "voc": _one_file_per_image(read_voc, "*.xml"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streetseg_jax.labels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    to_masks = commands.add_parser("to-masks", help="rasterize annotations into palette PNG class-id masks")
    to_masks.add_argument("--format", choices=sorted(READERS), default="voc", help="annotation format")
    to_masks.add_argument("--input", required=True, type=Path, help="annotation folder (or one annotation file)")
    to_masks.add_argument("--output", required=True, type=Path, help="folder for the masks (<stem>.png)")
    to_masks.add_argument("--label_map", type=Path, help="label map JSON (default: the built-in 8 street classes)")
    to_masks.add_argument("--unknown", choices=UNKNOWN_CHOICES, default="error",
                          help="class names not in the label map: stop with an error, or paint them ignore_id")
    return parser


def to_masks(args: argparse.Namespace) -> None:
    label_map = _label_map(args.label_map)
    if not args.input.exists():
        fail(f"input {args.input} does not exist")
    try:
        annotations = READERS[args.format](args.input)
        progress = lambda items: tqdm(items, desc="writing masks", unit="mask", disable=None)  # noqa: E731
        summary = write_masks(annotations, label_map, args.output, args.unknown, progress)
    except (LabelFormatError, UnknownLabelsError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write masks to {args.output}: {e.strerror or e}")
    for problem in summary.problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"wrote {summary.files} masks to {args.output} ({summary.shapes} shapes, "
          f"{len(summary.problems)} problems)")


def _label_map(path: Path | None) -> LabelMap:
    if path is None:
        return default_label_map()
    try:
        return LabelMap.load(path)
    except LabelMapError as e:
        fail(str(e))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else list(argv)))
    if args.command == "to-masks":
        to_masks(args)


if __name__ == "__main__":
    main()
