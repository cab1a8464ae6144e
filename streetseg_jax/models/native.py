"""Our own CPU kernels, compiled on first use for the machine they run on and called through XLA's FFI.

Two kernels so far, the forward pass and the weight gradient of a 3x3 convolution (`conv3x3.cc`; when and why
they are used is in `conv.py`). The first process that needs it compiles it with the system's C++ compiler (`$CXX`, else `c++`, `g++`
or `clang++`), optimised for this CPU, into a cache directory (`$STREETSEG_NATIVE_CACHE`, else
`$XDG_CACHE_HOME/streetseg_jax` or `~/.cache/streetseg_jax`); the library's name carries a hash of the source, the
compiler, jaxlib's FFI headers and the CPU, so a change to any of them builds a new one and a cache shared between
machines never hands one a library built for another. About 2 s, once.

Where no compiler is found, or it fails, `conv3x3_targets()` warns once and returns None and the
callers fall back to XLA's own computation: slower on CPU, the same result. `STREETSEG_NATIVE=0` turns the kernels
off.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jaxlib

SOURCE = Path(__file__).with_name("conv3x3.cc")


class Conv3x3Targets(NamedTuple):
    """FFI target names, registered for the CPU platform."""
    forward: str = "streetseg_conv3x3_forward"
    weight_gradient: str = "streetseg_conv3x3_weight_gradient"


_SYMBOLS = Conv3x3Targets(forward="StreetsegConv3x3Forward", weight_gradient="StreetsegConv3x3WeightGradient")
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w"]


def enabled() -> bool:
    return os.environ.get("STREETSEG_NATIVE", "1") != "0"


@functools.cache
def conv3x3_targets() -> Conv3x3Targets | None:
    """The compiled kernels' FFI targets, registered for the CPU platform; None where they cannot be had."""
    if not enabled():
        return None
    try:
        library = ctypes.cdll.LoadLibrary(str(build()))
    except (OSError, RuntimeError) as error:
        warnings.warn(f"streetseg_jax: the native CPU kernels are not available, XLA computes their part instead "
                      f"(slower on CPU; set STREETSEG_NATIVE=0 to silence this): {error}", RuntimeWarning,
                      stacklevel=2)
        return None
    targets = Conv3x3Targets()
    for target, symbol in zip(targets, _SYMBOLS):
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return targets


def build() -> Path:
    """Path of the compiled library, compiling it first if the cache lacks it. Raises RuntimeError on failure."""
    compiler = _compiler()
    include = jax.ffi.include_dir()
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(_FLAGS).encode(), _compiler_version(compiler).encode(),
                 jaxlib.__version__.encode(), _cpu_signature().encode()):
        key.update(part)
    path = cache_dir() / f"{SOURCE.stem}-{key.hexdigest()[:16]}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Compiled under a temporary name and renamed: processes compiling at once never load a half-written file.
    fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=path.parent)
    os.close(fd)
    command = [compiler, *_FLAGS, f"-I{include}", str(SOURCE), "-o", partial]
    try:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"{' '.join(command)} took over {error.timeout:.0f} s") from error
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    logging.info("compiled %s into %s", SOURCE.name, path)
    return path


def cache_dir() -> Path:
    if os.environ.get("STREETSEG_NATIVE_CACHE"):
        return Path(os.environ["STREETSEG_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streetseg_jax"


def _compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    raise RuntimeError("no C++ compiler found (set CXX, or install g++ or clang++)")


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"{compiler} --version failed: {error}") from error


def _cpu_signature() -> str:
    # -march=native builds for this CPU's instruction set: the flags line of /proc/cpuinfo names it on Linux.
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {platform.processor()} {flags}"
