"""`python -m streetseg_jax`: the commands there are (each is `python -m streetseg_jax.<name>`; --help on each)."""
import sys

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


def main(argv: list[str]) -> int:
    if argv in (["--help"], ["-h"]):        # asking for this list is no error
        argv = []
    width = max(len(name) for name, _ in COMMANDS)
    lines = [f"  python -m streetseg_jax.{name:<{width}}  {what}" for name, what in COMMANDS]
    print("\n".join(["streetseg_jax commands (each takes --help):", *lines]), file=sys.stderr if argv else sys.stdout)
    if argv:
        name, rest = (argv[0], argv[1:]) if argv[0] in dict(COMMANDS) else ("<name>", argv)
        print(f"error: python -m streetseg_jax takes no arguments; the command is "
              f"python -m streetseg_jax.{' '.join([name, *rest])}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
