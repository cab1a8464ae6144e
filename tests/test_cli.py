"""Command-line conventions every entry point shares (streetseg_jax/cli.py)."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

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

    run_command({"wait": wait, "talk": talk}[sys.argv[1]], "nothing was written")
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


def test_a_reader_that_stops_reading_ends_the_command_quietly():
    """`labels check ... | head -3` printed a BrokenPipeError traceback."""
    process = subprocess.Popen([sys.executable, "-c", COMMAND, "talk"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("a line")
    process.stdout.close()          # as `head -1` does once it has its line
    assert process.wait(timeout=30) == 1
    assert process.stderr.read() == ""
