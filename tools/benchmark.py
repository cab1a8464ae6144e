"""Benchmarks: `python tools/benchmark.py {train,input,eval,predict,rasterize,polygonize,import,scaling,build}
[--json] ...`.

Each sub-command lives in tools/bench/<name>.py with `add_arguments(parser)` and `run(args) -> dict`, plus a
module-level UNITS dict. Figures print as `name: value unit` lines; `--json` prints one JSON object instead.
Nested dicts (e.g. `peers`) print as `peers.<name>: value unit`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import record_load  # noqa: E402
from streetseg_jax import hugepages  # noqa: E402
from streetseg_jax.cli import normalise_argv  # noqa: E402

COMMANDS = ("train", "input", "eval", "predict", "rasterize", "polygonize", "import", "scaling", "build")
# These time what `python -m streetseg_jax.main` runs, so they run as it does: with huge pages (hugepages.py).
AS_TRAINING = ("train", "input", "scaling")
# Counts, sizes and rates the sub-commands take: none means anything at 0 or below.
POSITIVE = ("batch", "batches", "height", "width", "classes", "num_classes", "base_width", "steps", "repeats",
            "global_batch", "per_device_batch", "num_images", "crop", "masks", "polygons", "photo_repeats", "distinct",
            "num_workers", "min_size", "peak_tflops", "bandwidth_gbs")
# Counts where 0 means something (input --threads 0: read in the timing thread, as input_threads=0 trains).
NOT_NEGATIVE = ("threads",)
# Class ids are uint8 and 255 is the ignore id: a class 255 or above would be counted as ignored, or wrap around.
MAX_CLASSES = 255


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_figures(result: dict, units: dict, prefix: str = "", default_unit: str = "") -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            print_figures(value, units, f"{prefix}{key}.", units.get(key, default_unit))
            continue
        unit = units.get(prefix + key, units.get(key, default_unit))
        if isinstance(value, list) and all(isinstance(v, str) for v in value):     # warnings: sentences
            shown = "; ".join(value)
        else:
            shown = " ".join(map(_number, value)) if isinstance(value, list) else _number(value)
        print(f"{prefix}{key}: {shown} {unit}".rstrip())


def _shown(default) -> str:
    return " ".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)


def first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").split("\n\n")[0].split())


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse counts below 1 (below 0 where 0 means something), sizes and rates at 0 or below, and more classes
    than a uint8 label holds beside the ignore id, naming the flag: before any work, where they were taken silently
    or ended in a traceback."""
    for name in POSITIVE:
        value = getattr(args, name, None)
        numbers = value if isinstance(value, (tuple, list)) else [value]     # --crop H W
        if any(isinstance(v, int) and v < 1 for v in numbers):              # polygonize's --masks is a folder
            parser.error(f"--{name} must be at least 1, got {' '.join(map(str, numbers))}")
        if any(isinstance(v, float) and not v > 0 for v in numbers):
            parser.error(f"--{name} must be above 0, got {value}")
    for name in NOT_NEGATIVE:
        if getattr(args, name, 0) < 0:
            parser.error(f"--{name} must be 0 or more, got {getattr(args, name)}")
    for name in ("classes", "num_classes"):
        if getattr(args, name, 0) > MAX_CLASSES:
            parser.error(f"--{name} must be at most {MAX_CLASSES} (class ids are uint8 and 255 is the ignore id), "
                         f"got {getattr(args, name)}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    subs = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in COMMANDS:
        path = Path(__file__).parent / "bench" / f"{name}.py"
        if not path.exists():
            continue
        modules[name] = importlib.import_module(f"bench.{name}")
        sub = subs.add_parser(name, help=first_paragraph(modules[name].__doc__))
        sub.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
        modules[name].add_arguments(sub)
        for action in sub._actions:      # every flag's default, said
            if action.default not in (None, False, argparse.SUPPRESS) and "default" not in (action.help or ""):
                action.help = f"{action.help + ' ' if action.help else ''}(default: {_shown(action.default)})"
    args = parser.parse_args(normalise_argv(argv))
    check_numbers(parser, args)
    module = modules[args.command]
    load_at_start = os.getloadavg()[0]
    result = module.run(args)
    record_load(result, load_at_start)
    if args.json:
        print(json.dumps(result))
    else:
        print_figures(result, getattr(module, "UNITS", {}))


if __name__ == "__main__":
    if sys.argv[1:2] and sys.argv[1] in AS_TRAINING:
        hugepages.reexec_with_huge_pages()
    main(sys.argv[1:])
