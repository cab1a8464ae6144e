"""Fuzz every label reader: mutated exports must give a mask or our own clear error, never anything else.

    python tools/fuzz_readers.py [--iterations 1000] [--formats voc labelme ...] [--seed 0] [--time_limit 20]
                                 [--out fuzz_failures]

Each format starts from valid seed exports (tools/sample_exports.py, plus the real samples in
../shared/data/annotation-samples where present). Every input mutates one file of a seed: bytes flipped, inserted,
deleted or duplicated, the file truncated, a number swapped for a strange one; or, for JSON and XML, the
structure: a key or element dropped or duplicated, a value of the wrong type, huge or negative numbers, NaN and
infinities, empty lists, deeply nested lists or elements, an entity-expansion DTD; for PNGs, another mode, size
or header. The reader reads the export and every annotation is rasterized (annotation_to_mask, unknown class
names painted with the ignore id), and the validation report is made (labels/validate.py, images decoded).

Acceptable outcomes: a uint8 mask of the annotation's size, LabelFormatError or UnknownLabelsError. A mask made
while numpy warned (overflow, invalid values) is counted apart as `mask_with_numeric_warning` and listed: it may
be wrong without anyone being told. Anything else
(another exception, a hang past --time_limit seconds, a worker killed, e.g. out of memory) is a failure: the
mutated export is saved under --out/<format>/<case>/ with `error.txt` (exception and traceback), and the exit code
is 1. Inputs run one at a time in a worker process (limited to 4 GiB of address space, so that a huge allocation
fails there instead of exhausting the machine); a worker that fails to answer in time is killed and replaced.
Mutations are seeded: the same --seed gives the same inputs.
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import multiprocessing
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import sample_exports  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "annotation-samples"
# Real exports used as extra seeds (format, folder under SAMPLES); big embedded images are left out (slow to mutate).
REAL_SEEDS = [
    ("labelme", "labelme/street_video/data_annotated"),
    ("coco", "coco/labelme2coco_instances"),
    ("cvat", "cvat/datumaro_fixture/for_images/export_task"),
    ("mit_xml", "mit_labelme_xml/datumaro_fixture"),
    ("mapillary", "mapillary_vistas_v2/datumaro_fixture"),
]
MUTABLE = (".json", ".ndjson", ".xml", ".png")
FAILURES = ("crash", "hang", "died")
ADDRESS_SPACE = 4 << 30
STRANGE = [None, True, False, "", "x", "NaN", "-1", -1, 0, 1, -1e308, 1e308, 10 ** 40, -(10 ** 40), 2 ** 63,
           float("nan"), float("inf"), float("-inf"), 0.5, [], {}, [[]], [None], {"": None}, "\u202e\u0000", "9" * 400]
STRANGE_TEXT = ["", "NaN", "nan", "inf", "-inf", "1e309", "-1", "-0", "0", "99999999999999999999", "1e-320", "x",
                "1,2", "0x10", "\u0000", " 3 ", "1" * 5000]


# --- seeds -------------------------------------------------------------------------------------------------------
def make_seeds(formats: list[str], workdir: Path) -> dict[str, list[Path]]:
    """{format: [seed export folders]}: the synthetic scene for every format, plus real samples."""
    seeds: dict[str, list[Path]] = {fmt: [] for fmt in formats}
    for fmt in formats:
        seeds[fmt].append(sample_exports.write_export(fmt, workdir / "seeds" / f"{fmt}_scene"))
    for fmt, relative in REAL_SEEDS:
        if fmt in seeds and (SAMPLES / relative).is_dir():
            target = workdir / "seeds" / f"{fmt}_{relative.replace('/', '_')}"
            shutil.copytree(SAMPLES / relative, target)
            seeds[fmt].append(target)
    return seeds


def mutable_files(seed: Path) -> list[Path]:
    """The annotation files first (mutated most often), then PNGs (masks, panoptic ids, images)."""
    files = sorted(p for p in seed.rglob("*") if p.is_file() and p.suffix.lower() in MUTABLE)
    return sorted(files, key=lambda p: p.suffix.lower() == ".png")


# --- mutations ---------------------------------------------------------------------------------------------------
def mutate(data: bytes, suffix: str, rng: random.Random) -> tuple[bytes, str]:
    """(mutated bytes, what was done)."""
    structural = {".json": _mutate_json, ".ndjson": _mutate_ndjson, ".xml": _mutate_xml, ".png": _mutate_png}
    if rng.random() < 0.6 and suffix in structural:
        try:
            return structural[suffix](data, rng)
        except Exception:  # noqa: BLE001 - a seed the structural mutator cannot parse gets byte mutations
            pass
    return _mutate_bytes(data, rng)


def _mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    data = bytearray(data)
    kind = rng.choice(["flip", "delete", "insert", "duplicate", "truncate", "number"])
    at = rng.randrange(len(data) + 1)
    if kind == "flip" and data:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "delete":
        del data[at:at + rng.randint(1, 64)]
    elif kind == "insert":
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "duplicate":
        data[at:at] = data[at:at + rng.randint(1, 256)] * rng.randint(1, 8)
    elif kind == "truncate":
        del data[at:]
    else:
        data = _swap_number(bytes(data), rng)
    return bytes(data), f"bytes:{kind}@{at}"


def _swap_number(data: bytes, rng: random.Random) -> bytearray:
    digits = [i for i, b in enumerate(data) if 48 <= b <= 57]
    if not digits:
        return bytearray(data)
    at = rng.choice(digits)
    end = at
    while end < len(data) and (48 <= data[end] <= 57 or data[end] in b".eE-+"):
        end += 1
    return bytearray(data[:at] + rng.choice(STRANGE_TEXT).encode() + data[end:])


def _mutate_json(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    document = json.loads(data)
    path = _random_path(document, rng)
    kind = rng.choice(["drop", "type", "strange", "empty", "repeat", "nest", "negate", "swap"])
    if kind == "nest":     # json.dumps would recurse: splice the nesting into the text instead
        text = json.dumps(_set(document, path, "@@NEST@@"))
        depth = rng.choice([100, 1000, 100_000])
        return text.replace('"@@NEST@@"', "[" * depth + "1" + "]" * depth).encode(), f"json:nest{depth}@{path}"
    value = _get(document, path)
    new = {"drop": _DROP, "type": rng.choice(STRANGE), "strange": rng.choice(STRANGE[5:18]),
           "empty": type(value)() if isinstance(value, (list, dict, str)) else None,
           "repeat": (value * 500)[:100_000] if isinstance(value, (list, str)) else [value] * 1000,
           "negate": -value if isinstance(value, (int, float)) and not isinstance(value, bool) else -1,
           "swap": _get(document, _random_path(document, rng))}[kind]
    return json.dumps(_set(document, path, new), allow_nan=True).encode(), f"json:{kind}@{path}"


def _mutate_ndjson(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    lines = data.decode().splitlines()
    k = rng.randrange(len(lines))
    mutated, what = _mutate_json(lines[k].encode(), rng)
    lines[k] = mutated.decode()
    return ("\n".join(lines) + "\n").encode(), f"ndjson:line{k}:{what}"


_DROP = object()


def _random_path(document, rng: random.Random) -> list:
    path, node = [], document
    while isinstance(node, (list, dict)) and node and rng.random() < 0.8:
        key = rng.choice(list(node.keys()) if isinstance(node, dict) else range(len(node)))
        path.append(key)
        node = node[key]
    return path


def _get(document, path: list):
    for key in path:
        document = document[key]
    return document


def _set(document, path: list, value):
    if not path:
        return None if value is _DROP else value
    parent = _get(document, path[:-1])
    if value is _DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return document


def _mutate_xml(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    root = ET.fromstring(data)
    elements = list(root.iter())
    element = rng.choice(elements)
    kind = rng.choice(["drop", "duplicate", "text", "attribute", "drop_attribute", "rename", "nest", "entities"])
    if kind == "entities":
        laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 8))
        body = ET.tostring(root, encoding="unicode").replace(">", ">&l7;", 1)
        return (f'<?xml version="1.0"?><!DOCTYPE {root.tag} [<!ENTITY l0 "lol">{laughs}]>' + body).encode(), kind
    if kind == "nest":
        depth = rng.choice([100, 10_000, 200_000])
        text = ET.tostring(root, encoding="unicode")
        return text.replace(">", ">" + "<n>" * depth + "</n>" * depth, 1).encode(), f"xml:nest{depth}"
    parent = next((p for p in elements if element in list(p)), None)
    if kind == "drop" and parent is not None:
        parent.remove(element)
    elif kind == "duplicate" and parent is not None:
        for _ in range(rng.choice([1, 2, 100])):
            parent.append(ET.fromstring(ET.tostring(element)))
    elif kind == "text":
        element.text = rng.choice(STRANGE_TEXT)
    elif kind in ("attribute", "drop_attribute") and element.attrib:
        name = rng.choice(sorted(element.attrib))
        if kind == "attribute":
            element.set(name, rng.choice(STRANGE_TEXT + ["0,0;1e309,5", "1,2;3", ";;", "1,2,3;4,5"]))
        else:
            del element.attrib[name]
    elif kind == "rename":
        element.tag = rng.choice(["x1", "pt", "object", "polygon", "annotation", "zz"])
    return ET.tostring(root, encoding="utf-8"), f"xml:{kind}:{element.tag}"


def _mutate_png(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
    kind = rng.choice(["mode", "size", "noise", "header"])
    if kind == "header":     # IHDR width/height (bytes 16-24) set to something large or zero
        data = bytearray(data)
        data[16:24] = rng.choice([b"\x00\x00\xff\xff\x00\x00\xff\xff", b"\x00" * 8, b"\x7f\xff\xff\xff" * 2])
        return bytes(data), "png:header"
    if kind == "mode":
        image = image.convert(rng.choice(["RGBA", "LA", "P", "1", "I", "I;16", "RGB", "L", "F"]))
    elif kind == "size":
        image = image.resize((rng.randint(1, 80), rng.randint(1, 80)))
    else:
        pixels = np.asarray(image).copy()
        pixels.flat[rng.randrange(pixels.size)] = rng.randrange(256)
        image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="PNG")
    except (OSError, ValueError):   # a mode PNG cannot store: keep the original
        return data, "png:unchanged"
    return buffer.getvalue(), f"png:{kind}:{image.mode}"


# --- running one input (in the worker) ---------------------------------------------------------------------------
def run_case(fmt: str, export: Path, validation: bool = True) -> tuple[str, str]:
    """(outcome, detail): "mask" / "LabelFormatError" / "UnknownLabelsError", or "crash" with the traceback.
    With `validation`, the validation report (labels/validate.py, images decoded) is made too."""
    from streetseg_jax.labels import formats
    from streetseg_jax.labels.convert import UnknownLabelsError, annotation_to_mask
    from streetseg_jax.labels.label_map import default_label_map
    from streetseg_jax.labels.shapes import LabelFormatError
    from streetseg_jax.labels.validate import CheckOptions, validate

    label_map = default_label_map()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            annotations = formats.read(fmt, export, label_map)
            for annotation in annotations:
                mask = annotation_to_mask(annotation, label_map, unknown="ignore").mask
                if mask.dtype != np.uint8 or mask.shape != (annotation.height, annotation.width):
                    return "crash", f"bad mask {mask.dtype} {mask.shape} for {annotation.width}x{annotation.height}"
            if validation:
                report = validate(annotations, label_map, fmt=fmt, root=export,
                                  options=CheckOptions(unknown="ignore", decode_images=True))
                json.dumps(report.to_dict(), allow_nan=False)
        numeric = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        # A mask made through overflowing arithmetic may be wrong: worth a look, though not an error.
        return ("mask_with_numeric_warning", f"{caught[0].filename}:{caught[0].lineno}: {numeric[0]}") \
            if numeric else ("mask", "")
    except LabelFormatError as e:
        return "LabelFormatError", str(e)[:300]
    except UnknownLabelsError as e:
        return "UnknownLabelsError", str(e)[:300]
    except BaseException:  # noqa: BLE001 - exactly what the fuzzer is looking for
        return "crash", traceback.format_exc()


def _mapped_bytes() -> int:
    """This process's virtual memory size (Linux's VmSize; 0 where there is no /proc)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:")), 0)


def _worker(connection) -> None:
    # On top of what the forked process has mapped already: a parent that loaded JAX or TensorFlow maps gigabytes
    # of address space, and a fixed limit below that left no room to grow the stack (a segfault, not a finding).
    limit = _mapped_bytes() + ADDRESS_SPACE
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.setrecursionlimit(10_000)   # as deep as a user's Python would go; a RecursionError is a finding
    while True:
        job = connection.recv()
        if job is None:
            return
        fmt, export, file, data = job
        original = Path(file).read_bytes()
        Path(file).write_bytes(data)
        try:
            outcome = run_case(fmt, Path(export))
        finally:
            Path(file).write_bytes(original)
        # Only now: the campaign reads the next seed file as soon as it has the answer, and must not see this one.
        connection.send(outcome)


class Worker:
    """A process running cases one at a time; killed and replaced when it hangs or dies."""

    def __init__(self):
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_worker, args=(theirs,), daemon=True)
        self.process.start()

    def run(self, job, time_limit: float) -> tuple[str, str]:
        try:
            self.connection.send(job)
            if self.connection.poll(time_limit):
                return self.connection.recv()
            outcome = ("hang", f"no answer within {time_limit} s")
        except (EOFError, BrokenPipeError, ConnectionResetError):
            outcome = ("died", "")
        self.process.kill()
        self.process.join()
        code = self.process.exitcode
        if outcome[0] == "died":
            outcome = ("died", f"worker exited with code {code} (killed by a signal if negative: out of memory?)")
        self._start()
        return outcome

    def close(self) -> None:
        try:
            self.connection.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()


# --- the campaign ------------------------------------------------------------------------------------------------
def fuzz(formats: list[str], iterations: int, seed: int = 0, time_limit: float = 20.0, out: Path | None = None,
         progress: bool = False) -> dict:
    """{format: {"inputs": n, "outcomes": {outcome: count}, "failures": [...], "slowest_s": t}}."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="fuzz_readers_") as tmp:
        seeds = make_seeds(formats, Path(tmp))
        worker = Worker()
        try:
            for fmt in formats:
                results[fmt] = _fuzz_format(fmt, seeds[fmt], iterations, seed, time_limit, out, worker, progress)
        finally:
            worker.close()
    return results


def _fuzz_format(fmt, seeds, iterations, seed, time_limit, out, worker, progress) -> dict:
    outcomes: collections.Counter = collections.Counter()
    failures, warned, slowest = [], [], (0.0, "")
    pristine: dict[Path, bytes] = {}       # every mutation starts from the seed as written: inputs follow the seed
    for i in range(iterations):
        rng = random.Random(f"{seed}:{fmt}:{i}")
        export = rng.choice(seeds)
        files = mutable_files(export)
        file = files[0] if rng.random() < 0.7 else rng.choice(files)
        original = pristine.setdefault(file, file.read_bytes())
        data, what = mutate(original, file.suffix.lower(), rng)
        start = time.perf_counter()
        outcome, detail = worker.run((fmt, str(export), str(file), data), time_limit)
        file.write_bytes(original)         # a worker killed mid-case left the mutated file behind
        if time.perf_counter() - start > slowest[0]:
            slowest = (time.perf_counter() - start, f"case {i} ({what})")
        outcomes[outcome] += 1
        if outcome in FAILURES:
            failures.append(_failure(fmt, i, export, file, data, what, outcome, detail, out))
        elif outcome == "mask_with_numeric_warning" and len(warned) < 5:
            warned.append({"case": i, "file": str(file.relative_to(export)), "mutation": what, "detail": detail})
        if progress and (i + 1) % 200 == 0:
            print(f"  {fmt}: {i + 1}/{iterations} {dict(outcomes)}", file=sys.stderr)
    return {"inputs": iterations, "outcomes": dict(outcomes), "failures": failures, "numeric_warnings": warned,
            "slowest_s": round(slowest[0], 3), "slowest_case": slowest[1]}


def _failure(fmt, i, export: Path, file: Path, data: bytes, what, outcome, detail, out: Path | None) -> dict:
    failure = {"case": i, "file": str(file.relative_to(export)), "mutation": what, "outcome": outcome,
               "signature": signature(outcome, detail), "detail": detail}
    if out is not None:
        case = Path(out) / fmt / f"case_{i:05d}"
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(export, case / "export")
        (case / "export" / file.relative_to(export)).write_bytes(data)
        (case / "error.txt").write_text(
            f"format: {fmt}\nmutated file: {failure['file']} ({what})\noutcome: {outcome}\n\n{detail}\n"
            f"reproduce: python -c \"from streetseg_jax.labels import formats; "
            f"formats.read('{fmt}', '{case / 'export'}', None)\"\n")
        failure["saved"] = str(case)
    return failure


def signature(outcome: str, detail: str) -> str:
    """The exception type and the innermost line of our code it came from, to group failures."""
    if outcome != "crash":
        return outcome
    lines = detail.strip().splitlines()
    ours = [line.strip() for line in lines if 'File "' in line and "streetseg_jax" in line]
    where = ours[-1].split("streetseg_jax/")[-1] if ours else "?"
    return f"{lines[-1][:120] if lines else '?'} at {where}"


def print_summary(results: dict) -> None:
    for fmt, result in results.items():
        print(f"{fmt}: {result['inputs']} inputs, outcomes {result['outcomes']}, slowest {result['slowest_s']} s "
              f"({result['slowest_case']})")
        groups = collections.Counter(f["signature"] for f in result["failures"])
        for sig, count in groups.most_common():
            example = next(f for f in result["failures"] if f["signature"] == sig)
            print(f"  FAILURE x{count}: {sig}  (e.g. case {example['case']}, {example['file']}, "
                  f"{example['mutation']}{', saved in ' + example['saved'] if 'saved' in example else ''})")
        for warned in result.get("numeric_warnings", [])[:2]:
            print(f"  numeric warning (mask still made): case {warned['case']}, {warned['mutation']}: "
                  f"{warned['detail']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000, help="mutated inputs per format")
    parser.add_argument("--formats", nargs="+", default=list(sample_exports.FORMATS),
                        choices=sample_exports.FORMATS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time_limit", type=float, default=20.0, help="seconds per input before it is a hang")
    parser.add_argument("--out", type=Path, default=Path("fuzz_failures"), help="where failing inputs are saved")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = fuzz(args.formats, args.iterations, args.seed, args.time_limit, args.out, progress=True)
    print_summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if any(r["failures"] for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
