"""Every reader on mutated exports (tools/fuzz_readers.py, a small seeded run): only a mask or our own error."""
from __future__ import annotations

import mmap
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import fuzz_readers  # noqa: E402
import sample_exports  # noqa: E402

PER_FORMAT = 50


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # As from a test process that has loaded JAX and compiled for a while: gigabytes of address space mapped (not
    # used). The workers' memory limit once counted that in, and a deep JSON then overflowed their stack.
    with mmap.mmap(-1, 5 << 30):
        return fuzz_readers.fuzz(list(sample_exports.FORMATS), PER_FORMAT, seed=0, time_limit=60,
                                 out=tmp_path_factory.mktemp("fuzz_failures"))


@pytest.mark.parametrize("fmt", sample_exports.FORMATS)
def test_reader_gives_a_mask_or_our_error(results, fmt):
    result = results[fmt]
    assert result["inputs"] == PER_FORMAT
    assert result["outcomes"].get("mask", 0) > 0, "the mutations should leave some inputs readable"
    failures = [f"case {f['case']} ({f['file']}, {f['mutation']}): {f['signature']}" for f in result["failures"]]
    assert not failures, "\n".join(failures)


def test_mutations_are_seeded(tmp_path):
    import random
    data = (sample_exports.write_export("labelme", tmp_path / "e") / "street_1.json").read_bytes()
    first = [fuzz_readers.mutate(data, ".json", random.Random(f"0:labelme:{i}")) for i in range(20)]
    again = [fuzz_readers.mutate(data, ".json", random.Random(f"0:labelme:{i}")) for i in range(20)]
    assert first == again and len({m for m, _ in first}) > 10


def test_a_crashing_reader_is_reported_and_saved(tmp_path, monkeypatch):
    from streetseg_jax.labels.formats import voc

    def broken(path, label_map=None):
        raise KeyError("a bug")
    monkeypatch.setattr(voc, "read", broken)     # the worker is forked after this, so it sees the bug
    result = fuzz_readers.fuzz(["voc"], 3, seed=0, out=tmp_path)["voc"]
    assert result["outcomes"] == {"crash": 3}
    assert result["failures"][0]["signature"].startswith("KeyError: 'a bug'")
    saved = Path(result["failures"][0]["saved"])
    assert (saved / "error.txt").read_text().count("KeyError") >= 1 and (saved / "export").is_dir()
    assert fuzz_readers.main(["--formats", "voc", "--iterations", "1", "--out", str(tmp_path / "cli")]) == 1
