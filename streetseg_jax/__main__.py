"""`python -m streetseg_jax`: the commands there are (each is `python -m streetseg_jax.<name>`; --help on each),
and where the Python API is."""
import sys

import streetseg_jax

COMMANDS = (
    ("labels", "check a labelling tool's export, list its classes, or draw its masks"),
    ("data", "build the street_seg dataset (synthetic, CamVid, or an export)"),
    ("main", "train and evaluate: --config configs/X.py --workdir DIR"),
    ("evaluate", "score a run's checkpoint on a split: per-class IoU, mIoU, per image"),
    ("report", "an HTML page of a run: curves, IoU, confusion matrix, best and worst images"),
    ("compare", "runs side by side, as text and an HTML page"),
    ("predict", "masks, overlays and polygons for new photos"),
    ("export", "the inference function as StableHLO, loadable without this package"),
)
ALIASES = {"train": "main", "eval": "evaluate", "build": "data build"}     # what people type for the commands


def main(argv: list[str]) -> int:
    if argv in (["--help"], ["-h"]):        # asking for this list is no error
        argv = []
    width = max(len(name) for name, _ in COMMANDS)
    lines = [f"  python -m streetseg_jax.{name:<{width}}  {what}" for name, what in COMMANDS]
    doc = streetseg_jax.__doc__ or ""       # none under python -OO
    python_api = doc[doc.find("From Python"):].rstrip() if "From Python" in doc else ""
    print("\n".join(["streetseg_jax commands (each takes --help):", *lines, "", python_api]),
          file=sys.stderr if argv else sys.stdout)
    if argv:
        known = {**{name: name for name, _ in COMMANDS}, **ALIASES}
        name, rest = (known[argv[0]], argv[1:]) if argv[0] in known else ("<name>", argv)
        print(f"error: python -m streetseg_jax takes no arguments; the command is "
              f"python -m streetseg_jax.{' '.join([name, *rest])}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
