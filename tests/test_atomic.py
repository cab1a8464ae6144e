"""Files written whole or not at all, with the permissions of any new file (not the owner-only ones of a
temporary file: teammates, web servers and containers running as another user must read our outputs)."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from streetseg_jax import atomic
from streetseg_jax.labels.convert import write_mask_png
from streetseg_jax.labels.label_map import default_label_map


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_new_file_gets_the_umask_permissions(tmp_path):
    path = atomic.write_text(tmp_path / "sub" / "a.json", "{}")
    assert path.read_text() == "{}" and mode(path) == 0o666 & ~current_umask()
    write_mask_png(tmp_path / "m.png", np.zeros((4, 5), np.uint8), default_label_map())   # to-masks, predict's masks
    assert mode(tmp_path / "m.png") == 0o666 & ~current_umask()


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = atomic.write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(path) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
