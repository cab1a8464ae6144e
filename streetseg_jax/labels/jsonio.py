"""JSON from other people's exports, parsed so that anything unusable is a LabelFormatError naming the file.

Every JSON reader (LabelMe, COCO, COCO panoptic, Labelbox, Cityscapes, Mapillary) goes through here, because
Python's json module fails in more ways than JSONDecodeError: bad UTF-8 (UnicodeDecodeError), nesting deeper than
the interpreter's stack (RecursionError), and integers of more than 4300 digits (a plain ValueError from Python's
guard against slow int conversion). It also accepts NaN, Infinity and -Infinity, which are not JSON and are no
coordinates or sizes: they are refused here. Numbers too large for a float (1e999) still parse, to inf, so that
each reader can say which value is not finite.
"""
from __future__ import annotations

import json
from pathlib import Path

from streetseg_jax.labels.shapes import LabelFormatError


def load_json(path: str | Path):
    """The parsed content of a JSON file; LabelFormatError for a file that cannot be read or is not usable JSON."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise LabelFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse_json(raw, str(path))


def parse_json(raw: bytes | str, where: str):
    """The parsed JSON text `raw`; `where` (the file, or the file and line) starts every error message."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise LabelFormatError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as e:     # JSONDecodeError, UnicodeDecodeError and our own refusals are all ValueErrors
        raise LabelFormatError(f"{where}: not valid JSON ({_why(e)})") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows: not finite")


def _why(error: ValueError) -> str:
    # Python's advice to raise the limit (sys.set_int_max_str_digits) is no help to someone reading an export.
    if "integer string conversion" in str(error):
        return "an integer has more than 4300 digits; no coordinate, size or id has that many"
    return str(error)
