"""Transparent huge pages for XLA:CPU's buffers: training re-executes itself once with glibc asked for them.

XLA:CPU takes every step's temporary buffers from malloc and frees them after the step; glibc serves blocks that
large with fresh mmaps, so each train step at B=8 192x256 page-faulted about 190,000 times (4 KiB pages, zeroed by
the kernel) and ran at 6.2 img/s. With glibc's `glibc.malloc.hugetlb=1` tunable those mappings are backed by 2 MiB
transparent huge pages: about 1,200 faults a step, and 7.2 img/s (docs/performance.md). glibc reads tunables only
when a process starts, so `reexec_with_huge_pages()` runs the same command again with the tunable set, before JAX
loads. It does nothing where the tunable would not apply (not Linux with glibc 2.35+, or THP set to `always` or
`never`), where GLIBC_TUNABLES already names it (also the re-executed process), or with STREETSEG_HUGE_PAGES=0.
`main` calls it, and so do the benchmarks of what `main` runs; `predict` and `evaluate` do not (batched inference
measured about 8% slower with it).
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
_NAME = TUNABLE.split("=")[0] + "="
OPT_OUT = "STREETSEG_HUGE_PAGES"
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def reexec_with_huge_pages() -> None:
    """Replace this process by the same command with the tunable set, where it helps; otherwise return."""
    if wanted():
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment_with_tunable(os.environ))


def wanted(environ=os.environ, thp_mode_file: str = THP_MODE) -> bool:
    if environ.get(OPT_OUT) == "0" or _NAME in environ.get("GLIBC_TUNABLES", ""):
        return False
    return _glibc_with_hugetlb() and _thp_mode(thp_mode_file) == "madvise"


def environment_with_tunable(environ) -> dict:
    """A copy of `environ` whose GLIBC_TUNABLES also holds the huge-page tunable."""
    return {**environ, "GLIBC_TUNABLES": ":".join([*_other_tunables(environ), TUNABLE])}


def environment_without_tunable(environ) -> dict:
    """A copy of `environ` without the huge-page tunable (for peers timed beside us: they run as shipped)."""
    env = {k: v for k, v in environ.items() if k != "GLIBC_TUNABLES"}
    others = _other_tunables(environ)
    return {**env, "GLIBC_TUNABLES": ":".join(others)} if others else env


def _other_tunables(environ) -> list[str]:
    """GLIBC_TUNABLES (':'-separated) without the huge-page one."""
    return [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith(_NAME)]


def _glibc_with_hugetlb() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc, version = platform.libc_ver()
    try:
        return libc == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 35)
    except ValueError:
        return False


def _thp_mode(path: str) -> str | None:
    """The bracketed choice of the kernel's THP setting, e.g. 'madvise' from 'always [madvise] never'."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None
