"""Multi-device code tested on CPU: a script run in a fresh process whose CPU XLA splits into several devices."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_on_cpu_devices(script: str, devices: int = 8, *, cwd: Path = ROOT, timeout: float = 600,
                       **env: str) -> subprocess.CompletedProcess:
    """`python -c script` with XLA_FLAGS=--xla_force_host_platform_device_count=`devices` (and `env` added)."""
    environ = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
               "JAX_PLATFORMS": "cpu", **env}
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=timeout)
