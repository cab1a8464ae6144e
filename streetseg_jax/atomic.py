"""Files written whole or not at all: a temporary file beside the target, renamed over it once complete.

No reader (a browser refreshing a report, a labelling tool opening an export) ever sees half a file, a failure
leaves the old file as it was, and the new file gets the permissions any new file gets here (the umask; the
temporary file's own are owner-only).
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import importlib.util
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    """The process's umask, read where the system shows it (Linux), else by setting it and back (the only way
    elsewhere: a thread creating a file in between would get 022)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None):
    """A file object whose contents replace `path` when the block ends without an exception. A failure to write says
    which file (a write to a full disk says only "[Errno 28] No space left on device"); other errors in the block
    (reading what is copied, say) pass as they are."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{_shortened(path.name)}.", suffix=_TMP, dir=path.parent)
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):      # a disk turned read-only: the write's own error is the one to say
                Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and (tmp is None or e.filename == tmp
                                       or (e.filename is None and e.errno in WRITE_ERRORS)):
            raise cannot_write(path, e) from e
        raise


_TMP = ".tmp"


def temporary_files(name: str) -> str:
    """The glob of the temporary files atomic_file writes `name` through (.<name>.<random>.tmp), which a process
    killed in the write leaves behind; `name` may be a glob itself (*.png)."""
    return f".{name}.*{_TMP}"


def _shortened(name: str, most: int = 255 - 14) -> str:
    """`name` cut to `most` bytes as the file system stores it: the temporary file's name is 14 bytes longer than
    the target's, and a legal name of 242-255 bytes could not be written ("File name too long"). A UTF-8 name is cut
    on a character's edge (macOS and Windows refuse a name that is not UTF-8); one that is not UTF-8 already (a
    Linux disk's bytes) is cut as bytes."""
    try:
        return name.encode("utf-8")[:most].decode("utf-8", "ignore")
    except UnicodeEncodeError:
        return os.fsdecode(os.fsencode(name)[:most])


# Why a write() fails for want of room or permission (its error names no file): an error with one of these and no
# file name in the block is the writer's; one before it (the folder, the temporary file) or naming the temporary
# file always is. No later write to the same disk would succeed either.
NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}      # a full disk or quota, a file over the size limit
WRITE_ERRORS = NO_ROOM | {errno.EROFS}


def cannot_write(path: Path, error: OSError) -> OSError:
    """`error` of a write to `path` as "cannot write PATH: reason", its errno kept (a write() names no file)."""
    named = OSError(f"cannot write {path}: {error.strerror or error}")
    named.errno = error.errno
    return named


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def save_image(image, path: str | Path, format: str | None = None, **params) -> Path:
    """A PIL image saved whole or not at all, in `format` (default: by the suffix). Encoded in memory first: given
    a file, Pillow's JPEG encoder writes to its descriptor itself and takes a short write for a whole one (a full
    disk left overlays cut at a 4 KiB boundary, renamed into place as finished)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, format=format or Image.registered_extensions()[Path(path).suffix.lower()], **params)
    return write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def folder_filled_whole(path: str | Path):
    """A hidden folder for the block to fill, whose files become `path`'s when the block ends without an exception.
    Where `path` is no folder yet, the hidden folder lies beside it (.<name>.incomplete@host@pid@...) and is renamed
    to `path`; where it is one, it lies inside it (.incomplete@host@pid@...: on its disk, a mount or a link's
    target, and where its parent may not be written) and its files are renamed into `path` one by one
    (milliseconds, after all of them were written). An exception removes it; a process killed in the block leaves
    `path` as it was, and the hidden folder, which the next call for `path` removes (its process gone:
    owner_is_gone)."""
    path = Path(path)
    beside = (path.parent, f".{_shortened(path.name, 200)}{_INCOMPLETE}")
    inside = (path, _INCOMPLETE)
    for folder, prefix in (beside, inside):
        for left in folder.glob(f"{glob.escape(prefix)}@*") if folder.is_dir() else ():
            if owner_is_gone(left.name):
                shutil.rmtree(left, ignore_errors=True)
    folder, prefix = inside if path.is_dir() else beside
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}", dir=folder))
    try:
        os.chmod(scratch, 0o777 & ~_umask())       # as a folder made with mkdir, once renamed into place
        yield scratch
        if folder == path:
            _move_files(scratch, path)
        else:
            os.rename(scratch, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_INCOMPLETE = ".incomplete"


def _move_files(scratch: Path, path: Path) -> None:
    for file in sorted(p for p in scratch.rglob("*") if not p.is_dir()):
        target = path / file.relative_to(scratch)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target)


def check_writable(folder: str | Path) -> None:
    """OSError unless a file can be made in `folder`: a probe file, made and removed (a read-only mount or a full
    quota says so here, not at the first real write)."""
    fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


@contextlib.contextmanager
def machine_lock(kind: str, path: Path, when_busy: Callable[[], None]):
    """Hold this machine's lock for `kind` of work on `path` while the block runs; where another process holds it,
    `when_busy()` is called (it may raise, to give up) and the block then waits for it. A record lock (lockf), not
    flock: flock's would live on in the forked workers of a killed process; a record lock belongs to this process
    alone and ends with it. The file lives in /tmp (_lock_folder), not at `path` (a command that fails leaves
    nothing there), and anyone may open it (a shared folder is written by several users). Where there is no such
    lock (not POSIX, a file this user may not open) the block runs without."""
    fd = _lock_file(kind, path)
    if fd is None:
        yield
        return
    import fcntl
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            when_busy()
            fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _lock_file(kind: str, path: Path) -> int | None:
    """An open file descriptor on the lock file, or None (machine_lock)."""
    if importlib.util.find_spec("fcntl") is None:
        return None
    lock = _lock_folder() / f"streetseg-{kind}-{_lock_key(path)}.lock"
    for flags in (os.O_RDWR, os.O_RDWR | os.O_CREAT | os.O_EXCL, os.O_RDWR):
        try:        # another user's file is opened without O_CREAT, which a sticky /tmp refuses (protected_regular)
            fd = os.open(lock, flags, 0o666)
        except (FileNotFoundError, FileExistsError):    # not there yet; made by another meanwhile
            continue
        except OSError:
            return None
        if flags & os.O_CREAT:
            with contextlib.suppress(OSError):
                os.chmod(lock, 0o666)               # whatever the umask: the next user opens it too
        return fd
    return None


def _lock_folder() -> Path:
    """/tmp, which every user of the machine shares, whatever their TMPDIR (two users of other TMPDIRs each took the
    lock, and their predictions mixed in one folder); the temp folder where there is no /tmp."""
    shared = Path("/tmp")
    return shared if os.name == "posix" and shared.is_dir() else Path(tempfile.gettempdir())


def _lock_key(path: Path) -> str:
    return hashlib.sha256(os.fsencode(Path(path).resolve())).hexdigest()[:16]


def owner_tag() -> str:
    """"@host@pid@": put in the names of the folders a build or to-masks writes on the way, for owner_is_gone."""
    return f"@{socket.gethostname()}@{os.getpid()}@"


def owner_is_gone(name: str) -> bool:
    """Whether the name carries an owner_tag of a process that has ended on this machine (False when unsure: no
    tag, another machine's, a process of another user)."""
    tag = re.search(r"@([^@]+)@(\d+)@", name)
    if tag is None or tag.group(1) != socket.gethostname():
        return False
    try:
        os.kill(int(tag.group(2)), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
