"""Command-line conventions every entry point shares (streetseg_jax/cli.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT

# A command whose main() waits to be stopped, or writes more than its reader takes.
COMMAND = textwrap.dedent("""
    import sys, time
    from streetseg_jax.cli import run_command

    def wait():
        print("ready", flush=True)
        time.sleep(60)

    def talk():
        for _ in range(100_000):
            print("a line of output, more than a pipe holds")

    def ending():                       # its work done and said, a slow shutdown (JAX's, a pool's) follows
        import atexit
        atexit.register(time.sleep, 60)
        print("wrote everything", flush=True)

    def large():                        # 144 pixels where Pillow warns beyond 100 and refuses beyond 200
        import io
        from PIL import Image
        Image.MAX_IMAGE_PIXELS, png = 100, io.BytesIO()
        Image.new("L", (12, 12)).save(png, format="PNG")
        Image.open(png).load()

    run_command({"wait": wait, "talk": talk, "ending": ending, "large": large}[sys.argv[1]], "nothing was written")
""")


@pytest.mark.parametrize("signum, code, by", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stopped_command_says_what_it_leaves_without_a_traceback(signum, code, by):
    """evaluate, report and export once printed 40-170 lines of JAX's internals on Ctrl-C, and died silently on
    SIGTERM."""
    process = subprocess.Popen([sys.executable, "-c", COMMAND, "wait"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert process.returncode == code
    assert err.strip() == f"stopped by {by}: nothing was written"


@pytest.mark.parametrize("signum, by", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_a_signal_after_the_work_is_done_ends_the_command_with_a_line(signum, by):
    """Ctrl-C just after a command's "wrote ..." line exited 130 without a word (SIGTERM: killed by the signal)."""
    process = subprocess.Popen([sys.executable, "-c", COMMAND, "ending"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "wrote everything\n"
    time.sleep(0.5)                     # main has returned: the interpreter is shutting down
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert (process.returncode, err.strip()) == (0, f"stopped by {by} as the command ended: what it said it wrote "
                                                    "is whole")


IN_A_GC_CALLBACK = textwrap.dedent("""
    import gc, os, signal, time
    from streetseg_jax import cli
    cli.stop_on_sigterm()
    fired = []
    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10000):      # bytecodes at which the handler runs: inside the callback
                pass
    gc.callbacks.append(callback)
    try:
        gc.collect()
        time.sleep(5)
        print("ran to the end")
    except KeyboardInterrupt as e:
        print("stopped by", cli.stopped_by(e)[0])
""")


def test_a_sigterm_that_comes_in_a_garbage_collector_callback_still_stops_the_command():
    """A SIGTERM that came while JAX's _xla_gc_callback ran was printed as "Exception ignored" and dropped: evaluate
    wrote its results and exited 0, main trained on."""
    done = subprocess.run([sys.executable, "-c", IN_A_GC_CALLBACK], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "stopped by SIGTERM\n" and "Exception ignored" not in done.stderr, done.stderr


# A command run as `python -m`, with the signal sent as it starts to import JAX (a Ctrl-C in its first seconds).
WHILE_LOADING = textwrap.dedent("""
    import os, runpy, signal, sys

    signum = getattr(signal, sys.argv[1])

    class SignalAtJax:
        def find_spec(self, name, path=None, target=None):
            if name == "jax":
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signum)
                for _ in range(10000):      # bytecodes at which Python's handler would raise
                    pass
    sys.meta_path.insert(0, SignalAtJax())
    module, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
""")


@pytest.mark.parametrize("command, signum, code, line", [
    (["streetseg_jax.export", "--workdir", ".", "--output", "w"], "SIGINT", 130,
     "stopped by Ctrl-C: no model was written"),
    (["streetseg_jax.evaluate", "--workdir", ".", "--output", "w"], "SIGTERM", 143,
     "stopped by SIGTERM: no result was written"),
    (["streetseg_jax.main", "--config", "configs/default.py", "--workdir", "w"], "SIGINT", 130,
     "stopped by Ctrl-C; what was saved stays (checkpoints, a finished dataset build), and the same command goes on "
     "from there"),
    (["streetseg_jax.main", "--config", "configs/default.py", "--workdir", "w"], "SIGTERM", 143,
     "stopped by SIGTERM; what was saved stays (checkpoints, a finished dataset build), and the same command goes on "
     "from there")])
def test_a_signal_while_a_command_loads_stops_it_once_loaded(command, signum, code, line, tmp_path):
    """Raised where it came, in the imports, a Ctrl-C was printed and dropped in JAX's garbage-collector callback
    (the command ran to its end, exit 0), aborted the process in a C++ extension's loading, or printed 20-50
    lines."""
    done = subprocess.run([sys.executable, "-c", WHILE_LOADING, signum, *command], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert (done.returncode, done.stderr.strip()) == (code, line)
    assert not (ROOT / "w").exists()


def test_a_reader_that_stops_reading_ends_the_command_quietly():
    """`labels check ... | head -3` printed a BrokenPipeError traceback."""
    process = subprocess.Popen([sys.executable, "-c", COMMAND, "talk"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("a line")
    process.stdout.close()          # as `head -1` does once it has its line
    assert process.wait(timeout=30) == 1
    assert process.stderr.read() == ""


def test_images_our_readers_take_are_read_without_pillows_bomb_warning():
    """A 100-megapixel mask printed Pillow's 'could be decompression bomb DOS attack' in some readers."""
    done = subprocess.run([sys.executable, "-c", COMMAND, "large"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stderr == ""


def test_the_package_lists_its_commands():
    """`python -m streetseg_jax` said "No module named streetseg_jax.__main__"."""
    for asked in ([], ["--help"]):     # --help exited 2, "takes no arguments"
        listed = subprocess.run([sys.executable, "-m", "streetseg_jax", *asked], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert listed.returncode == 0 and "python -m streetseg_jax.predict " in listed.stdout, asked
    wrong = subprocess.run([sys.executable, "-m", "streetseg_jax", "predict", "--input", "a"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2
    assert wrong.stderr.endswith("the command is python -m streetseg_jax.predict --input a\n")
    for name in ("labels", "data", "main", "evaluate", "report", "compare", "predict", "export"):
        assert (ROOT / "streetseg_jax" / f"{name}.py").exists() or (ROOT / "streetseg_jax" / name / "__main__.py")\
            .exists(), name


def test_the_package_points_to_its_python_api():
    """help(streetseg_jax) was one line, labels' and data's __doc__ None, and the command list never named the API;
    `python -m streetseg_jax train` suggested streetseg_jax.<name>, not .main."""
    import streetseg_jax
    import streetseg_jax.data
    import streetseg_jax.labels

    for module in ("inference", "metrics", "visualize", "data.builder", 'README.md, section "From Python"'):
        assert module in streetseg_jax.__doc__, module
    assert "label_map" in streetseg_jax.labels.__doc__ and "import streetseg_jax.data.builder" in \
        streetseg_jax.data.__doc__
    listed = subprocess.run([sys.executable, "-m", "streetseg_jax", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert "From Python" in listed.stdout and "streetseg_jax.inference   load_model(workdir)" in listed.stdout
    stripped = subprocess.run([sys.executable, "-OO", "-m", "streetseg_jax"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)       # no docstrings: the commands all the same
    assert stripped.returncode == 0 and "python -m streetseg_jax.main" in stripped.stdout, stripped.stderr
    for typed, meant in (("train", "main"), ("eval", "evaluate"), ("build", "data build")):
        wrong = subprocess.run([sys.executable, "-m", "streetseg_jax", typed, "--workdir", "w"], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
        assert wrong.stderr.endswith(f"the command is python -m streetseg_jax.{meant} --workdir w\n"), wrong.stderr


def test_underscored_spellings_and_choices_are_taken_and_said(capsys):
    from streetseg_jax.labels.__main__ import build_parser
    from streetseg_jax.predict import parse_args

    args = build_parser().parse_args(["to_masks", "--format", "voc", "--input", "x", "--output", "y"])
    assert args.command == "to_masks"       # as flags take either spelling; refused before
    with pytest.raises(SystemExit):
        parse_args(["--workdir", "w", "--input", "i", "--resize", "foo"])
    assert "resize must be auto, none or a factor from 0.05 to 4, got 'foo'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, said", [
    (["--work_dir", "runs/a"], "required: --workdir; --work_dir: did you mean --workdir?"),
    (["--workdir", "runs/a", "--chekpoint", "best"], "unrecognized arguments: --chekpoint best; --chekpoint: did you "
                                                       "mean --checkpoint?"),
])
def test_a_mistyped_flag_is_named_with_the_flag_it_was_meant_to_be(argv, said, capsys):
    """Python 3.11's argparse said only that --workdir was required, without a word of --work_dir."""
    from streetseg_jax.evaluate import make_parser

    with pytest.raises(SystemExit) as stopped:
        make_parser().parse_args(argv)
    assert stopped.value.code == 2 and said in capsys.readouterr().err


def test_a_sub_commands_mistyped_flag_is_named_too(capsys):
    from streetseg_jax.labels.__main__ import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["check", "--input", "x", "--fromat", "voc"])
    assert "--fromat: did you mean --format?" in capsys.readouterr().err


@pytest.mark.parametrize("command, said", [("report", "exists and is not a .html"),
                                           ("export", "the export is a zip archive; name it so"),
                                           ("compare", "exists and is not a .html")])
def test_output_never_replaces_a_file_of_another_kind(command, said, tmp_path, capsys):
    """`report --output runs/a/metrics.jsonl` (and export's) replaced the run's metrics with the page."""
    import importlib

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n')
    argv = [str(tmp_path), "--output", str(metrics)] if command == "compare" else [
        "--workdir", str(tmp_path), "--output", str(metrics)]
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(f"streetseg_jax.{command}").main(argv)
    assert stopped.value.code == 2 and metrics.read_text() == '{"step": 1}\n'
    assert f"--output {metrics}{':' * (command == 'export')} {said}" in capsys.readouterr().err


def test_commands_we_print_for_pasting_quote_their_paths():
    """`look at it: python -m streetseg_jax.report --workdir /tmp/runs/wd é 日本` broke when pasted."""
    from pathlib import Path

    from streetseg_jax.data.source import build_command
    from streetseg_jax.run import _outcome

    assert build_command("synthetic", "/data/my sets") == \
        "python -m streetseg_jax.data build --config synthetic --data_dir '/data/my sets'"
    assert _outcome([], Path("/runs/wd é")) == "look at it: python -m streetseg_jax.report --workdir '/runs/wd é'"


@pytest.mark.parametrize("command", ["evaluate", "report", "export", "predict", "compare", "labels", "data"])
def test_help_and_usage_errors_answer_before_jax_loads(command):
    """evaluate, report and export took 3 s (5-6 s on a busy machine) to print --help or name a mistyped flag."""
    probe = ("import runpy, sys\nsys.argv = ['x', '--help']\ntry:\n"
             f"    runpy.run_module('streetseg_jax.{command}', run_name='__main__')\n"
             "except SystemExit:\n    pass\nprint('jax' in sys.modules, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "usage:" in done.stdout and done.stderr.strip().splitlines()[-1] == "False", done.stderr


def test_a_library_frame_is_told_from_a_config_files_in_debians_dist_packages_too():
    """With absl in dist-packages (Debian's pip, NVIDIA's containers), `--no_such_flag` was "the config file
    failed: .../dist-packages/absl/flags/_flagvalues.py"."""
    from streetseg_jax.main import _library

    assert _library("/usr/lib/python3/dist-packages/absl/flags/_flagvalues.py")
    assert _library("/venv/lib/python3.11/site-packages/ml_collections/config_flags/config_flags.py")
    assert not _library("/home/me/project/configs/mine.py")
