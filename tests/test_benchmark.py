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
    "predict": (["--no_peers", "--batch", "1", "--height", "32", "--width", "32", "--repeats", "1", "--skip_photo"],
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
    # every benchmark says how loaded the machine was, at its start and its end
    assert result["load_average_1min_start"] >= 0 and result["load_average_1min"] >= 0
    # predict compiled and timed depth_to_space on every run, though the default config trains transpose
    assert "alternatives" not in result
    if command in ("train", "predict"):     # long runs say on stderr where they are, with the figures so far
        assert "] ours: " in proc.stderr or "] timing ours" in proc.stderr, proc.stderr


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


def _tools_module(monkeypatch, name: str):
    monkeypatch.syspath_prepend(str(TOOLS))
    import importlib

    return importlib.import_module(name)


def test_bad_flags_and_sizes_the_peers_cannot_take_are_refused_before_any_work(monkeypatch, capsys):
    benchmark = _tools_module(monkeypatch, "benchmark")
    for args, message in ((["train", "--upsample", "foo"], "argument --upsample: invalid choice: 'foo'"),
                          (["train", "--dtype", "foo"], "argument --dtype: invalid choice: 'foo'"),
                          (["scaling", "--dtype", "foo"], "argument --dtype: invalid choice: 'foo'"),
                          (["eval", "--classes", "300"], "--num_classes must be at most 255"),
                          (["scaling", "--classes", "256"], "--classes must be at most 255"),
                          (["input", "--threads", "-1"], "--threads must be 0 or more, got -1"),
                          (["build", "--num_workers", "-1"], "--num_workers must be at least 1, got -1"),
                          (["rasterize", "--min_size", "-50"], "--min_size must be above 0, got -50.0")):
        with pytest.raises(SystemExit) as stopped:
            benchmark.main(args)
        assert stopped.value.code == 2 and message in capsys.readouterr().err, args
    pytest.importorskip("torch", reason="the size check applies where the torch peer runs")
    for args, message in ((["train", "--height", "40", "--width", "48"], "--height 40: the peers take only multiples "
                           "of 16 (2**depth, they do not pad): try --height 48, or --no_peers to time ours alone"),
                          (["predict", "--height", "72", "--width", "72", "--skip_photo"],
                           "error: --height 72 and --width 72: the peers take only multiples of 16")):
        with pytest.raises(SystemExit) as stopped:
            benchmark.main(args)
        assert message in str(stopped.value.code), args


def test_input_data_dir_defaults_to_tfds_data_dir(monkeypatch, tmp_path):
    import argparse

    input_bench = _tools_module(monkeypatch, "bench.input")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    input_bench.add_arguments(parser)
    assert parser.parse_args([]).data_dir == str(tmp_path)


def test_the_png_copy_for_the_tf_data_peer_is_whole_and_of_the_dataset_as_built(monkeypatch, tmp_path,
                                                                                  tiny_data_dir):
    import shutil

    from streetseg_jax.data import source

    input_bench = _tools_module(monkeypatch, "bench.input")
    data_dir = tmp_path / "tfds"
    shutil.copytree(tiny_data_dir / "street_seg", data_dir / "street_seg")
    train_size = len(source.load_split("street_seg/synthetic", "train", data_dir)[0])
    copies = data_dir / "downloads" / "bench_input_pngs" / "street_seg" / "synthetic"
    write = input_bench._write_pngs

    def stopped_half_way(train, out):     # a run stopped while writing: nothing is left to be taken as the copy
        write(train, out)
        (out / "images" / "00001.png").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(input_bench, "_write_pngs", stopped_half_way)
    with pytest.raises(KeyboardInterrupt):
        input_bench.png_folders("street_seg/synthetic", data_dir)
    assert list(copies.iterdir()) == []
    monkeypatch.setattr(input_bench, "_write_pngs", write)
    (copies / ".partial-999999999-abc").mkdir()     # a half copy of a killed run: deleted
    images, masks = map(Path, input_bench.png_folders("street_seg/synthetic", data_dir))
    assert len(list(images.glob("*.png"))) == len(list(masks.glob("*.png"))) == train_size
    assert [p.name for p in copies.iterdir()] == [images.parent.name] and images.parent.name.startswith("2.0.0-")
    (images / "00000.png").unlink()                 # not whole: written again
    assert len(list(Path(input_bench.png_folders("street_seg/synthetic", data_dir)[0]).glob("*.png"))) == train_size

    built = source.dataset_dir("street_seg/synthetic", data_dir)
    with open(built / "features.json", "a") as f:   # the dataset rebuilt: a new copy, the old one deleted
        f.write("\n")
    rebuilt = Path(input_bench.png_folders("street_seg/synthetic", data_dir)[0]).parent
    assert rebuilt != images.parent and [p.name for p in copies.iterdir()] == [rebuilt.name]

    # The peer runs on the copy and deletes its TFRecord copy of the data afterwards.
    pytest.importorskip("tensorflow", reason="the tf.data peer needs TensorFlow")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    peer = subprocess.run([sys.executable, "peers/input_tfdata.py", str(rebuilt / "images"), str(rebuilt / "masks"),
                           "32", "32", "2"], cwd=TOOLS, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(temporary)})
    assert peer.returncode == 0, peer.stderr[-3000:]
    assert json.loads(peer.stdout.splitlines()[-1])["images_per_second"] > 0 and list(temporary.iterdir()) == []


def test_a_peer_that_fails_is_said_in_the_result(monkeypatch, capsys):
    common = _tools_module(monkeypatch, "bench.common")
    result = {"peers": {}}
    assert common.add_peer(result, "ghost", "no_such_peer.py") is None
    assert result["peers"] == {} and "no_such_peer.py exited with status 2" in result["peer_errors"]["ghost"]
    assert "peer ghost gave no figure, so there is no ratio_ghost" in result["warnings"][0]
    assert "warning: peer ghost gave no figure" in capsys.readouterr().err


def test_the_load_and_a_drifting_machine_are_warned_of(monkeypatch, capsys):
    common = _tools_module(monkeypatch, "bench.common")
    train = _tools_module(monkeypatch, "bench.train")
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 1.0, 1.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    result = {}
    common.record_load(result, 0.5)
    assert result["load_average_1min_start"] == 0.5 and result["load_average_1min"] == 64.0
    assert result["warnings"] == ["load average 64.0 exceeds the 2 cores: other jobs were running, so these figures "
                                  "are lower than a quiet machine's"]
    quiet = {}
    train.warn_of_drift(quiet, 10.0, 8.5)
    assert quiet == {}
    train.warn_of_drift(quiet, 10.0, 7.5)
    assert "ours ran at 10 img/s before the peers and 7.5 after" in quiet["warnings"][0]
    assert capsys.readouterr().err.count("warning: ") == 2


EVAL_SAME_WORK = """
import sys
sys.path.insert(0, ".")
from peers import miou_numpy
def timed(*args):
    raise AssertionError("the peer's IoU was timed: ours times the confusion matrix alone")
miou_numpy.miou = timed
import benchmark
benchmark.main(["eval", "--json", "--num_images", "2", "--height", "8", "--width", "8", "--repeats", "1"])
"""


def test_the_eval_benchmark_times_the_same_work_on_both_sides():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", EVAL_SAME_WORK], cwd=TOOLS, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["peers"]["numpy"] > 0 and result["peer_threads"] == 1 and result["devices"] >= 1
