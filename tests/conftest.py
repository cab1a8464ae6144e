"""Shared fixtures: a tiny synthetic street_seg dataset built once per test session."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests" / "configs" / "tiny.py"
TINY_IMAGES = 12

# The end-to-end tests start `main` (and the multi-process tests several workers) on the same tiny config many times,
# and compiling its programs was most of each start on a slow CPU (a run of 8 steps: 59 s, 17 s with the
# programs cached). One persistent compilation cache for the session, this process and its children, removed at exit.
# A cache directory the caller set is used as it is.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="streetseg-jax-test-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The native kernels (streetseg_jax/native.py) are compiled once per session too, as on a fresh machine.
if "STREETSEG_NATIVE_CACHE" not in os.environ:
    os.environ["STREETSEG_NATIVE_CACHE"] = tempfile.mkdtemp(prefix="streetseg-native-test-cache-")
    atexit.register(shutil.rmtree, os.environ["STREETSEG_NATIVE_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """street_seg/synthetic with 12 scenes of 96x128 (train 9-10 / test 2-3), built through the public API."""
    from streetseg_jax.data.build import build

    data_dir = tmp_path_factory.mktemp("tfds")
    build("synthetic", data_dir, num_images=TINY_IMAGES, height=96, width=128)
    return data_dir


def tiny_config():
    """The tiny config as an ml_collections ConfigDict."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_config", TINY_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def run_main(workdir: Path, data_dir: Path, *overrides: str, timeout: float = 300, **popen) -> subprocess.Popen:
    """Start `python -m streetseg_jax.main` on the tiny config (a Popen, so tests can signal it)."""
    cmd = [sys.executable, "-m", "streetseg_jax.main", f"--config={TINY_CONFIG}", f"--workdir={workdir}",
           f"--config.data_dir={data_dir}", *overrides]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def run_main_to_end(workdir: Path, data_dir: Path, *overrides: str, timeout: float = 300):
    proc = run_main(workdir, data_dir, *overrides)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out
