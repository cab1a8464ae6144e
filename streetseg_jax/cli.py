"""Command-line conventions shared by every entry point: flags are spelled with underscores, hyphens are aliases."""
from __future__ import annotations

import sys


def normalise_argv(argv: list[str]) -> list[str]:
    """`--label-map=x` -> `--label_map=x`; values, sub-commands and `--config.a-b` overrides are left alone."""
    out = []
    for arg in argv:
        if arg.startswith("--") and not arg.startswith("--config."):
            name, eq, value = arg.partition("=")
            arg = "--" + name[2:].replace("-", "_") + eq + value
        out.append(arg)
    return out


def fail(message: str, code: int = 2) -> "NoReturn":  # noqa: F821
    """Print a user-facing error (no traceback) and exit."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
