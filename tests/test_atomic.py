"""Files written whole or not at all, with the permissions of any new file (not the owner-only ones of a
temporary file: teammates, web servers and containers running as another user must read our outputs)."""
from __future__ import annotations

import errno
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streetseg_jax import atomic

ROOT = Path(__file__).resolve().parents[1]


WRITE = """
import os, stat, sys
import numpy as np
os.umask(int(sys.argv[2], 8))
from streetseg_jax import atomic
from streetseg_jax.labels.convert import write_mask_png
from streetseg_jax.labels.label_map import default_label_map
atomic.write_text(sys.argv[1] + "/sub/a.json", "{}")
write_mask_png(sys.argv[1] + "/m.png", np.zeros((4, 5), np.uint8), default_label_map())   # to-masks, predict
print(*(oct(stat.S_IMODE(os.stat(sys.argv[1] + name).st_mode)) for name in ("/sub/a.json", "/m.png")))
"""


@pytest.mark.parametrize("umask, mode", [("022", "0o644"), ("002", "0o664"), ("077", "0o600")])
def test_a_new_file_gets_the_umask_permissions(tmp_path, umask, mode):
    out = subprocess.run([sys.executable, "-c", WRITE, str(tmp_path), umask], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [mode, mode]          # mkstemp's own is 0o600 whatever the umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = atomic.write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(path) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_file_that_cannot_be_written_is_named_in_the_error(tmp_path):
    """A full disk said only "[Errno 28] No space left on device" (a write() error carries no file name)."""
    from streetseg_jax.atomic import write_text

    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OSError, match=f"^cannot write {re.escape(str(tmp_path / 'a_file' / 'x.json'))}: File exists"):
        write_text(tmp_path / "a_file" / "x.json", "{}")
    with pytest.raises(OSError, match=f"^cannot write {re.escape(str(tmp_path / 'y.bin'))}: No space left on device$"):
        with atomic.atomic_file(tmp_path / "y.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")     # as a write() to a full disk
    with pytest.raises(OSError, match=r"^\[Errno 5\] Input/output error$"):   # reading what is copied: as it is
        with atomic.atomic_file(tmp_path / "z.bin"):
            raise OSError(errno.EIO, "Input/output error")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_disk_that_turned_read_only_is_said_for_the_file_written_not_its_temporary_one(tmp_path, monkeypatch):
    """The temporary file could not be removed either, and its error took the write's place: "[Errno 30] Read-only
    file system: '.../.curves.png.nx6z7l8r.tmp'"."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(args[0]))
    monkeypatch.setattr(atomic.os, "replace", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(OSError, match=f"^cannot write {re.escape(str(tmp_path / 'c.png'))}: Read-only file system$"):
        atomic.write_bytes(tmp_path / "c.png", b"png")


def test_a_name_of_the_longest_length_the_disk_takes_is_written(tmp_path):
    """Names of 242-255 bytes failed with "File name too long": the temporary file's name is 14 bytes longer."""
    import os

    # 254 and 255 bytes of UTF-8, and a name that is no UTF-8 at all (a surrogate in Python: its encode() failed)
    names = ("日" * 83 + "a.png", "a" * 251 + ".png", os.fsdecode(b"caf\xe9" * 60 + b".png"))
    for name in names:
        atomic.write_bytes(tmp_path / name, b"whole")
        assert (tmp_path / name).read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


SHORT_WRITE = """
import io, resource, signal, sys
import numpy as np
from PIL import Image
from streetseg_jax import atomic
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8))
whole = io.BytesIO()
image.save(whole, format="JPEG", quality=90)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a write past the limit fails (EFBIG) rather than killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (len(whole.getvalue()) - 100, resource.RLIM_INFINITY))
try:
    atomic.save_image(image, sys.argv[1], quality=90)
except OSError as e:
    print(e)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE's short writes are Linux's")
def test_an_image_that_does_not_fit_fails_rather_than_being_written_cut(tmp_path):
    """A full disk left predict's overlay JPEGs cut at a 4 KiB boundary and renamed into place as whole: Pillow's
    encoder writes to the file's descriptor itself and takes a short write for a whole one. A file-size limit just
    under the JPEG's size gives the same short write."""
    out = subprocess.run([sys.executable, "-c", SHORT_WRITE, str(tmp_path / "a_overlay.jpg")], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"cannot write {tmp_path / 'a_overlay.jpg'}: File too large")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_filled_whole_into_an_existing_folder_on_another_disk_lands_there(tmp_path):
    """An existing output that links to another disk (or is a mount point) was filled from a hidden folder beside
    its link, and the renames into it failed: Invalid cross-device link, an empty folder left in the output."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no /dev/shm on another file system than the temporary folder's")
    import tempfile
    with tempfile.TemporaryDirectory(dir=shm) as elsewhere:
        (Path(elsewhere) / "old.png").write_bytes(b"old")
        output = tmp_path / "masks"
        output.symlink_to(elsewhere)
        with atomic.folder_filled_whole(output) as folder:
            (folder / "a" / "b").mkdir(parents=True)
            (folder / "a" / "b" / "m.png").write_bytes(b"new")
        assert sorted(str(p.relative_to(output)) for p in output.rglob("*")) == ["a", "a/b", "a/b/m.png", "old.png"]
        assert [p.name for p in tmp_path.iterdir()] == ["masks"]
        assert folder.parent == output      # it was hidden inside: written on the output's own disk
