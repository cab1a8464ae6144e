"""Several hosts, simulated by local processes under jax.distributed (CPU collectives over gloo).

2 processes x 2 CPU devices train the tiny config and end with the same parameters as 1 process x 4 devices: the
global sample order depends on (seed, step) only. The checkpoint the 2-process run wrote then resumes in a
1-process run."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from conftest import ROOT, TINY_CONFIG
from test_train import final_state

STEPS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workdir, data_dir, devices: int, steps: int, process_id=None, num_processes=None, port=None,
           *overrides: str):
    cmd = [sys.executable, "-m", "streetseg_jax.main", f"--config={TINY_CONFIG}", f"--workdir={workdir}",
           f"--config.data_dir={data_dir}", f"--config.num_train_steps={steps}", "--config.eval_every_steps=2",
           *overrides]
    if num_processes:
        cmd += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
                f"--process_id={process_id}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs, timeout=400):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    return outs


def test_two_processes_match_one_process_and_resume_on_one(tiny_data_dir, tmp_path):
    port = free_port()
    multi = tmp_path / "two_processes"
    outs = finish([launch(multi, tiny_data_dir, 2, STEPS, i, 2, port) for i in range(2)])
    assert "training steps 0..4 on 4 device(s), 2 process(es)" in outs[0]
    assert "training steps" not in outs[1]  # only process 0 logs
    single = tmp_path / "one_process"
    finish([launch(single, tiny_data_dir, 4, STEPS)])
    a, b = final_state(multi, STEPS), final_state(single, STEPS)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=1e-4, atol=1e-5)

    out, = finish([launch(multi, tiny_data_dir, 4, STEPS + 2)])
    assert f"resuming from step {STEPS}" in out
    assert int(final_state(multi, STEPS + 2)["step"]) == STEPS + 2


def test_sigterm_to_one_process_saves_the_same_step_everywhere(tiny_data_dir, tmp_path):
    """A spot preemption notice reaches one host: orbax's preemption sync point makes every process save the
    same step and stop, and the same command resumes from it."""
    from test_train import wait_for_step

    port = free_port()
    workdir = tmp_path / "preempted"
    procs = [launch(workdir, tiny_data_dir, 2, 200, i, 2, port, "--config.checkpoint_every_steps=1000",
                    "--config.eval_every_steps=1000") for i in range(2)]
    wait_for_step(workdir, 3, procs[0])
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], outs
    saved = ocp.CheckpointManager(workdir / "checkpoints" / "latest").all_steps()
    assert len(saved) == 1 and 3 <= saved[0] < 200, (saved, outs)
    assert f"saved step {saved[0]}" in outs[0]


def test_a_coordinator_port_in_use_is_refused(tiny_data_dir, tmp_path):
    with socket.socket() as taken:          # JAX's coordinator crashed the process on a taken port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out, _ = launch(tmp_path / "w", tiny_data_dir, 2, STEPS, 0, 2, port).communicate(timeout=120)
    assert out.startswith(f"error: --coordinator_address 127.0.0.1:{port}: process 0 cannot listen on port {port}"), out
    assert not (tmp_path / "w").exists()


def test_a_process_left_alone_ends_after_the_startup_timeout(tiny_data_dir, tmp_path):
    proc = launch(tmp_path / "w", tiny_data_dir, 2, STEPS, 0, 2, free_port(), "--startup_timeout=2")
    out, _ = proc.communicate(timeout=120)     # JAX's default is 5 minutes
    assert proc.returncode != 0 and "process 0 of 2: joining through 127.0.0.1:" in out, out
    assert "waiting up to 2 s for every process to start" in out


def test_a_process_that_cannot_start_stops_every_process_with_its_reason(tiny_data_dir, tmp_path):
    """One host lacks the dataset: it says so and every other process says which process stopped and why, within
    seconds (the others waited in their first collective until JAX aborted all of them, 5 minutes later, with a
    stack dump)."""
    port, workdir = free_port(), tmp_path / "w"
    procs = [launch(workdir, data_dir, 2, STEPS, i, 2, port)
             for i, data_dir in enumerate((tiny_data_dir, tmp_path / "no_data_here"))]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    reason = f"dataset street_seg/synthetic is not built in {tmp_path / 'no_data_here'}"
    assert f"error: {reason}" in outs[1], outs[1]
    assert f"error: process 1 of 2 stopped: {reason}" in outs[0], outs[0]
    assert not any("Fatal Python error" in out for out in outs), outs
    assert not (workdir / "checkpoints").exists()
