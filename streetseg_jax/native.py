"""Our own CPU kernels, compiled on first use for the machine they run on and called through XLA's FFI.

The 3x3 convolution's forward pass, input gradient and weight gradient (`models/conv3x3.cc`, used by
`models/conv.py`), BatchNorm + ReLU in training (`models/batchnorm_relu.cc`, used by `models/batchnorm.py`) and the
confusion matrix's counts (`confusion.cc`, used by `metrics.py`), in one library. The first process that needs it
compiles it with the system's C++ compiler (`$CXX`, else `c++`, `g++` or `clang++`), optimised for this CPU, into
a cache directory (`$STREETSEG_NATIVE_CACHE`, else `$XDG_CACHE_HOME/streetseg_jax` or `~/.cache/streetseg_jax`;
where it cannot be written, `streetseg_jax-<uid>` in the temp folder); the library's name carries a hash of the
sources, the compiler, jaxlib's FFI headers and the CPU, so a change to any of them builds a new one and a cache
shared between machines never hands one a library built for another. About 3 s, once.

Where no compiler is found, or it fails, `targets()` warns once and returns None and the callers fall back to XLA's
own computation: slower on CPU, the same result to float rounding (the sums add up in another order, so a run's
numbers differ from the first step and drift apart as training goes on). `STREETSEG_NATIVE=0` turns the kernels off.
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
from jax.sharding import PartitionSpec as P

from streetseg_jax.atomic import check_writable

SOURCES = tuple(Path(__file__).parent / name for name in ("models/conv3x3.cc", "models/batchnorm_relu.cc",
                                                         "confusion.cc"))


class Targets(NamedTuple):
    """FFI target names, registered for the CPU platform; each library symbol is its name in CamelCase."""
    conv3x3_forward: str = "streetseg_conv3x3_forward"
    conv3x3_input_gradient: str = "streetseg_conv3x3_input_gradient"
    conv3x3_weight_gradient: str = "streetseg_conv3x3_weight_gradient"
    batchnorm_relu_statistics: str = "streetseg_batchnorm_relu_statistics"
    batchnorm_relu_apply: str = "streetseg_batchnorm_relu_apply"
    batchnorm_relu_gradient_statistics: str = "streetseg_batchnorm_relu_gradient_statistics"
    batchnorm_relu_gradient: str = "streetseg_batchnorm_relu_gradient"
    confusion_counts: str = "streetseg_confusion_counts"


_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w"]


def enabled() -> bool:
    return os.environ.get("STREETSEG_NATIVE", "1") != "0"


def cpu_targets() -> Targets | None:
    """The kernels' targets where XLA runs on the CPU and they could be had, else None (callers use XLA's own)."""
    return targets() if jax.default_backend() == "cpu" else None


@functools.cache
def targets() -> Targets | None:
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
    names = Targets()
    for target in names:
        symbol = "".join(part.capitalize() for part in target.split("_"))
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return names


def per_device(local, args, batched, batched_out):
    """`local(axes, *args)` on each device's rows of the batch, under the mesh set with
    `jax.sharding.use_abstract_mesh` (the train step sets it). The kernels see whole arrays, so under data
    parallelism they run inside `shard_map`: args and results flagged in `batched` and `batched_out` (one flag where
    `local` returns one array) are split along their first axis, the others whole on every device. `axes` are the
    mesh axes to sum a per-device part over (`sum_over_devices`), or None where `local` sees the whole batch (no
    mesh, one device, or a batch the mesh does not divide: correct, but XLA gathers the batch to every device
    first)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or args[0].shape[0] % mesh.size:
        return local(None, *args)
    axes = tuple(mesh.axis_names)

    def specs(flags):
        return P(axes) if flags is True else P() if flags is False else tuple(map(specs, flags))

    return jax.shard_map(functools.partial(local, axes), mesh=mesh, in_specs=specs(batched),
                         out_specs=specs(batched_out), check_vma=False)(*args)


def sum_over_devices(value, axes):
    """`lax.psum` of a per-device part over the `axes` that `per_device` gave `local`, or the value where they are
    None (`local` saw the whole batch)."""
    return value if axes is None else jax.lax.psum(value, axes)


def build() -> Path:
    """Path of the compiled library, compiling it first if the cache lacks it. Raises RuntimeError on failure."""
    compiler = _compiler()
    include = jax.ffi.include_dir()
    key = hashlib.sha256()
    for part in (*(source.read_bytes() for source in SOURCES), " ".join(_FLAGS).encode(),
                 _compiler_version(compiler).encode(), jaxlib.__version__.encode(), _cpu_signature().encode()):
        key.update(part)
    name = f"streetseg_kernels-{key.hexdigest()[:16]}.so"
    if (cache_dir() / name).exists():      # a cache one may only read (shared) serves too
        return cache_dir() / name
    folder = _writable_cache()
    path = folder / name
    if path.exists():
        return path
    # Compiled under a temporary name and renamed: processes compiling at once never load a half-written file.
    fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=folder)
    os.close(fd)
    command = [compiler, *_FLAGS, f"-I{include}", *map(str, SOURCES), "-o", partial]
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
    logging.info("compiled %s into %s", ", ".join(source.name for source in SOURCES), path)
    return path


def cache_dir() -> Path:
    if os.environ.get("STREETSEG_NATIVE_CACHE"):
        return Path(os.environ["STREETSEG_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streetseg_jax"


def _writable_cache() -> Path:
    """cache_dir(), or where it cannot be written (a read-only home) this user's own folder in the temp folder, so
    that the kernels are compiled rather than left out (training 1.7x slower, its losses not bit-equal). That one
    is made private and refused unless this user alone may write it: a library found there is loaded."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_writable(folder)
        return folder
    except OSError:
        pass
    if not hasattr(os, "getuid"):
        raise OSError(f"{folder} cannot be written")
    private = Path(tempfile.gettempdir()) / f"streetseg_jax-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    status = private.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o022:
        raise OSError(f"{folder} cannot be written, and {private} belongs to another user or others may write it")
    return private


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
