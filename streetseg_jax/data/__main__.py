"""Build the street_seg dataset: `python -m streetseg_jax.data build --config synthetic --data_dir DIR`.

    python -m streetseg_jax.data build --config synthetic --data_dir DIR [--num_images N] [--height H --width W]
    python -m streetseg_jax.data build --config voc_polygons --data_dir DIR --manual_dir FOLDER [--label_map FILE]

An existing build is reused (and checked against the options asked for); --overwrite rebuilds it.
"""
from __future__ import annotations

import argparse
import sys

from streetseg_jax.cli import fail, normalise_argv

CONFIGS = ("synthetic", "voc_polygons")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streetseg_jax.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build street_seg/<config> as array_record (no TensorFlow)")
    build.add_argument("--config", choices=CONFIGS, required=True, help="which street_seg config to build")
    build.add_argument("--data_dir", help="where datasets live (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    build.add_argument("--manual_dir", help="voc_polygons: your folder of images + VOC XML")
    build.add_argument("--label_map", help="label map JSON (default: the seed's 8 classes)")
    build.add_argument("--num_images", type=int, help="synthetic: scenes to generate (default 100)")
    build.add_argument("--height", type=int, help="synthetic: image height (default 360)")
    build.add_argument("--width", type=int, help="synthetic: image width (default 480)")
    build.add_argument("--seed", type=int, help="synthetic: scene seed (default 0)")
    build.add_argument("--test_fraction", type=float, help="share of images in the test split (default 0.2)")
    build.add_argument("--num_workers", type=int, help="processes for the per-image work (default: all cores)")
    build.add_argument("--file_format", choices=("array_record", "tfrecord"), default="array_record",
                       help="tfrecord needs TensorFlow installed")
    build.add_argument("--overwrite", action="store_true", help="delete an existing build and build again")
    return parser


def run_build(args: argparse.Namespace) -> None:
    # Imported after parsing so --help stays fast (TFDS takes a moment to import).
    from streetseg_jax.data import builder, source
    from streetseg_jax.labels.label_map import LabelMapError

    if args.manual_dir and args.config != "voc_polygons":
        fail(f"--manual_dir is only read by --config voc_polygons, not {args.config}")
    options = {name: getattr(args, name) for name in
               ("label_map", "num_images", "height", "width", "seed", "test_fraction", "num_workers")}
    try:
        result = source.build(args.config, args.data_dir, args.manual_dir, overwrite=args.overwrite,
                              file_format=args.file_format, **options)
    except (builder.BuildError, builder.UnknownLabelsError, LabelMapError, source.DatasetNotFoundError) as e:
        fail(str(e))
    print_result(f"street_seg/{args.config}", result)


def print_result(dataset: str, result) -> None:
    verb = "already built (nothing written; --overwrite rebuilds it)" if result.reused else "built"
    print(f"{dataset} {verb} in {result.seconds:.1f} s")
    print(f"  path: {result.path}")
    for name, count in result.splits.items():
        print(f"  {name}: {count} examples")


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    if args.command == "build":
        run_build(args)


if __name__ == "__main__":
    main()
