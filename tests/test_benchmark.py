"""tools/benchmark.py runs end to end: each sub-command on tiny shapes prints one JSON object with its keys, and the
plain output is `name: value unit` lines. (Speed targets are met in the benchmarks themselves, never here.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"

CASES = {
    "rasterize": (["--masks", "3", "--repeats", "1", "--height", "60", "--width", "80"], "masks_per_second"),
    "polygonize": (["--repeats", "1"], "masks_per_second"),
    "eval": (["--num_images", "2", "--height", "24", "--width", "32", "--repeats", "1"], "pixels_per_second"),
    "train": (["--no_peers", "--batch", "2", "--height", "32", "--width", "32", "--steps", "1", "--repeats", "1"],
              "images_per_second"),
}


def run_benchmark(*args: str, xla_flags: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    return subprocess.run([sys.executable, "benchmark.py", *args], cwd=TOOLS, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("command", sorted(CASES))
def test_sub_command_prints_its_figures_as_json(command):
    args, key = CASES[command]
    proc = run_benchmark(command, "--json", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result[key] > 0


def test_plain_output_is_name_value_unit_lines():
    args, _ = CASES["rasterize"]
    proc = run_benchmark("rasterize", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("masks_per_second:"))
    name, value, unit = line.replace(":", "").split()
    assert float(value) > 0 and unit == "masks/s"


def test_help_shows_whole_summaries_and_counts_below_one_are_refused():
    proc = run_benchmark("--help")
    assert proc.returncode == 0 and "global batch fixed and per-device batch fixed" in " ".join(proc.stdout.split())
    for args, message in ((["train", "--steps", "0"], "--steps must be at least 1, got 0"),
                          (["scaling", "--steps", "-1"], "--steps must be at least 1, got -1"),
                          (["input", "--crop", "192", "0"], "--crop must be at least 1, got 192 0"),
                          (["rasterize", "--masks", "0"], "--masks must be at least 1, got 0")):
        proc = run_benchmark(*args)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    # a global batch the 8 CPU devices cannot split: said before anything is measured (it ended in a traceback after
    # the first device counts' figures, which were lost)
    proc = run_benchmark("scaling", "--global_batch", "12", "--height", "16", "--width", "16")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == ("error: --global_batch 12 must divide by every device count measured (1, 2, 4, 8): "
                                   "try 8")
    # XLA_FLAGS of another flag: still 8 forced devices (it measured 1 alone)
    proc = run_benchmark("scaling", "--global_batch", "4", "--height", "16", "--width", "16",
                         xla_flags="--xla_cpu_enable_fast_math=false")
    assert proc.stderr.strip() == ("error: --global_batch 4 must divide by every device count measured (1, 2, 4, 8): "
                                   "try 8"), proc.stderr


def test_bfloat16_train_runs_the_torch_peer_under_autocast_and_leaves_keras_out():
    pytest.importorskip("torch", reason="the torch peer needs the peers extra: pip install -e '.[peers]'")
    peer = subprocess.run([sys.executable, "peers/unet_torch.py", "2", "32", "32", "4", "4", "train", "amp"],
                          cwd=TOOLS, capture_output=True, text=True, timeout=300)
    assert peer.returncode == 0, peer.stderr[-3000:]
    assert json.loads(peer.stdout.splitlines()[-1])["amp"] is True

    proc = run_benchmark("train", "--json", "--dtype", "bfloat16", "--batch", "2", "--height", "32", "--width", "32",
                         "--base_width", "4", "--steps", "1", "--repeats", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["peers"]) == {"torch"} and result["ratio_torch"] > 0


ROOFLINE = """
import argparse, json, sys
sys.path.insert(0, ".")
from bench import scaling
args = argparse.Namespace(height=32, width=32, base_width=8, upsample="transpose", dtype="float32", classes=4,
                          global_batch=2, peak_tflops=None, bandwidth_gbs=None)
print(json.dumps(scaling._roofline(args, 1.0)))
"""


def test_the_roofline_counts_the_flops_our_cpu_kernels_compute():
    # XLA's cost analysis cannot see into our CPU kernels: with them in the step it counted a tenth of the FLOPs.
    counts = []
    for native in ("1", "0"):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "STREETSEG_NATIVE": native}
        env.pop("XLA_FLAGS", None)
        proc = subprocess.run([sys.executable, "-c", ROOFLINE], cwd=TOOLS, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        counts.append(json.loads(proc.stdout.strip().splitlines()[-1])["flops_per_step"])
    assert counts[0] == pytest.approx(counts[1], rel=1e-6) and counts[0] > 0


def test_the_predict_benchmark_times_the_network_once_per_window(monkeypatch):
    """Predictor follows the run's flip TTA, and the default config's is on: the photo's time would have counted
    the network twice per window, unlike ours_call and the PyTorch peer."""
    from streetseg_jax.inference import Predictor

    monkeypatch.syspath_prepend(str(TOOLS))
    from bench import predict

    predictor = Predictor(predict.untrained("transpose", 8))
    assert predictor.flip_tta is False and len(predictor.scales) == 1
