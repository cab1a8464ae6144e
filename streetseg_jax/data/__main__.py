"""Build the street_seg dataset: `python -m streetseg_jax.data build --config synthetic --data_dir DIR`.

    python -m streetseg_jax.data build --config synthetic --data_dir DIR [--num_images N] [--height H --width W]
    python -m streetseg_jax.data build --config voc_polygons --data_dir DIR --manual_dir FOLDER [--label_map FILE]
    python -m streetseg_jax.data build --config camvid --data_dir DIR --manual_dir SEGNET_CAMVID_FOLDER
    python -m streetseg_jax.data build --config from_annotations --name NAME --manual_dir EXPORT_DIR
        --format {voc,mit_xml,labelme,coco,coco_panoptic,cvat,labelbox,cityscapes,mapillary,masks,auto}
        --label_map FILE --data_dir DIR [--val_fraction F | --split_file FILE] [--unknown error|ignore]
    (every config: [--overwrite] [--num_workers N] [--file_format array_record|tfrecord])

from_annotations builds street_seg/NAME from a labelling tool's export: it prints the validation report first and
stops on its errors. An existing build is reused when its inputs (files, label map, options) are unchanged, and
refused with what changed otherwise; --overwrite rebuilds it. A build that fails leaves no half-built dataset.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streetseg_jax.cli import ArgumentParser, export_label_map, fail, normalise_argv, run_command
from streetseg_jax.data.configs import CONFIG_OPTIONS, CONFIGS
from streetseg_jax.labels.convert import UNKNOWN_CHOICES
from streetseg_jax.labels.formats import AUTO, FORMATS

_ALL_OPTIONS = tuple(dict.fromkeys(name for names in CONFIG_OPTIONS.values() for name in names))


def make_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m streetseg_jax.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build street_seg/<config> (from_annotations: street_seg/<name>) as "
                                "array_record, without TensorFlow (or as tfrecord, which needs it)")
    build.add_argument("--config", choices=CONFIGS, required=True, help="which street_seg config to build")
    build.add_argument("--data_dir", help="where datasets live (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    build.add_argument("--manual_dir", help="voc_polygons, from_annotations: your export folder; camvid: SegNet's "
                       "CamVid folder")
    build.add_argument("--label_map", help="label map JSON (synthetic and voc_polygons: default the seed's 8 "
                       "classes; from_annotations: required unless the export has its label_map.json, as predict "
                       "--export writes it, or a class list (CVAT's labelmap.txt, labelme2voc's class_names.txt, "
                       "Roboflow's _classes.csv), or a label_map.json in a folder inside it (predict's OUT/labelme/), "
                       "or labelme2voc's labels.txt beside it or one folder up; camvid: its own 11 classes, not read)")
    _export_arguments(build)
    build.add_argument("--num_images", type=int, help="synthetic: scenes to generate (default 500)")
    build.add_argument("--height", type=int, help="synthetic: image height (default 360)")
    build.add_argument("--width", type=int, help="synthetic: image width (default 480)")
    build.add_argument("--seed", type=int, help="synthetic: scene seed (default 0)")
    build.add_argument("--test_fraction", type=float, help="synthetic, voc_polygons: share of images in the test "
                       "split (default 0.2)")
    build.add_argument("--num_workers", type=int, help="processes for the per-image work, 1 or more (default: one "
                       "per core)")
    build.add_argument("--file_format", choices=("array_record", "tfrecord"), default="array_record",
                       help="array_record (default) or tfrecord, which needs TensorFlow installed")
    build.add_argument("--overwrite", action="store_true", help="delete an existing build and build again")
    return parser


def _export_arguments(build: argparse.ArgumentParser) -> None:
    build.add_argument("--name", help="from_annotations: the dataset's name (it becomes street_seg/NAME)")
    build.add_argument("--format", choices=(*FORMATS, AUTO), help="from_annotations: the export's format")
    split = build.add_mutually_exclusive_group()
    split.add_argument("--val_fraction", type=float, help="from_annotations: share of images in the validation "
                       "split, by a hash of the image's file stem (default: the export's own splits where it has a "
                       "train split and a held-out one: split folders such as Roboflow's train/ valid/ test/ or "
                       "Cityscapes' train/ val/, CVAT subsets; images in none of them, and any other export, by the "
                       "hash at 0.2)")
    split.add_argument("--split_file", help="from_annotations: `split<TAB>file stem` lines (train, validation "
                       "or val, test), e.g. to keep a video's frames in one split")
    build.add_argument("--unknown", choices=UNKNOWN_CHOICES, help="from_annotations: class names not in the label "
                       "map are an error (default) or painted with the ignore id")


def check_flags(args: argparse.Namespace) -> None:
    """Flags that the chosen config would silently ignore are refused."""
    given = lambda names: [f"--{n}" for n in names if getattr(args, n) is not None]  # noqa: E731
    if args.config == "from_annotations":
        if args.manual_dir:
            from streetseg_jax.predict_export import export_in_output
            folder, args.format = export_in_output(Path(args.manual_dir).expanduser(), args.format, "--manual_dir")
            args.manual_dir = str(folder)
        found = args.label_map is None and args.manual_dir and export_label_map(Path(args.manual_dir).expanduser())
        if found:
            args.label_map = str(found)
        missing = [f"--{n}" for n in ("name", "manual_dir", "format", "label_map") if getattr(args, n) is None]
        if missing:
            fail(f"--config from_annotations needs {', '.join(missing)}")
    refused = [name for name in _ALL_OPTIONS if name not in CONFIG_OPTIONS[args.config]]
    wrong = given(refused if args.config == "from_annotations" else ["name", *refused])
    if args.config == "synthetic" and args.manual_dir:
        wrong.append("--manual_dir")
    if wrong:
        hint = ""
        if args.config == "voc_polygons" and args.unknown:
            hint = (" (a VOC export with classes the label map lacks: --config from_annotations --name NAME "
                    "--format voc --unknown ignore)")
        fail(f"{', '.join(wrong)}: not read by --config {args.config}{hint}")
    if args.num_workers is not None and args.num_workers < 1:
        fail(f"--num_workers must be 1 or more, got {args.num_workers}")


def run_build(args: argparse.Namespace) -> None:
    # Imported after parsing so --help stays fast (TFDS takes a moment to import).
    from streetseg_jax.data import build, builder, source
    from streetseg_jax.labels.label_map import LabelMapError

    check_flags(args)
    options = {name: getattr(args, name) for name in (*CONFIG_OPTIONS[args.config], "num_workers")}
    try:        # a write the disk refused (an OSError) passes on to run_command, which says it in a line
        result = build.build(args.config, args.data_dir, args.manual_dir, overwrite=args.overwrite,
                             file_format=args.file_format, name=args.name, log=print, **options)
    except (builder.BuildError, builder.UnknownLabelsError, LabelMapError, source.DatasetNotFoundError) as e:
        fail(str(e))
    print_result(f"street_seg/{args.name or args.config}", result)


def print_result(dataset: str, result) -> None:
    verb = "already built, inputs unchanged (nothing written; --overwrite rebuilds it)" if result.reused \
        else "built"
    print(f"{dataset} {verb} in {result.seconds:.1f} s")
    print(f"  path: {result.path}")
    for name, count in result.splits.items():
        print(f"  {name}: {count} examples")


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    if args.command == "build":
        run_build(args)


if __name__ == "__main__":
    run_command(main, "the dataset was not built (a build is written whole or not at all)")
