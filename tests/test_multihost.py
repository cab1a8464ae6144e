"""Several hosts, simulated by local processes under jax.distributed (CPU collectives over gloo).

2 processes x 2 CPU devices train the tiny config and end with the same parameters as 1 process x 4 devices, up to
float rounding: the global sample order depends on (seed, step) only. The checkpoint the 2-process run wrote then
resumes in a 1-process run."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, TINY_CONFIG, tiny_config
from streetseg_jax import sharding, train
from streetseg_jax.visualize import read_metrics
from test_train import final_state

STEPS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workdir, data_dir, devices: int, steps: int, process_id=None, num_processes=None, port=None,
           *overrides: str, python: tuple = ("-m", "streetseg_jax.main")):
    every = [] if any(o.startswith("--config.eval_every_steps=") for o in overrides) else \
        ["--config.eval_every_steps=2"]                 # main refuses a key given twice
    cmd = [sys.executable, *python, f"--config={TINY_CONFIG}", f"--workdir={workdir}",
           f"--config.data_dir={data_dir}", f"--config.num_train_steps={steps}", *every, *overrides]
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
    # SGD: Adam moves a parameter whose gradient is zero up to rounding by about the learning rate, one way or the
    # other as the rounding falls, and the two layouts sum gradients in another order (gloo across processes): with
    # Adam, a kernel weight ended 0.0097 apart at learning rate 0.01 once the synthetic scenes changed.
    sgd = "--config.optimizer=sgd"
    port = free_port()
    multi = tmp_path / "two_processes"
    outs = finish([launch(multi, tiny_data_dir, 2, STEPS, i, 2, port, sgd) for i in range(2)])
    assert "training steps 0..4 on 4 device(s), 2 process(es)" in outs[0]
    assert "training steps" not in outs[1]  # only process 0 logs, but says how its part ended
    assert outs[1].rstrip().splitlines()[-1] == (f"process 1 of 2: done at step {STEPS}: process 0 writes the run's "
                                                 f"curves and overlays in {multi}"), outs[1]
    single = tmp_path / "one_process"
    finish([launch(single, tiny_data_dir, 4, STEPS, None, None, None, sgd)])
    # The losses agree to rounding; a pixel whose two best logits are a rounding apart may flip, and move an mIoU.
    for name, tolerance in (("train/loss", dict(rtol=1e-5)), ("train/miou", dict(atol=1e-3)),
                            ("eval/miou", dict(atol=1e-3))):
        logged = [[r[name] for r in read_metrics(run / "metrics.jsonl") if name in r] for run in (multi, single)]
        assert len(logged[0]) >= 2
        np.testing.assert_allclose(*logged, **tolerance, err_msg=name)
    config = tiny_config()
    config.optimizer = "sgd"
    _, start = train.init_state(config, 8, train.make_optimizer(config), sharding.make_mesh(jax.devices()[:1]))
    a, b = final_state(multi, STEPS), final_state(single, STEPS)
    # What training changed agrees leaf by leaf to 10% (L2 norm of the difference over the change's). Measured: 2.5% at
    # most, in the middle's first kernel (BatchNorm's backward pass subtracts nearly equal sums, and rounding them in
    # another order grows layer by layer, as in tests/test_sharding.py). A process that trained on its own half of the
    # batch, or a sample order that depends on the layout, moves a leaf by about as much as it changed.
    for part in ("params", "model_state"):
        for path, first, x, y in zip(*zip(*jax.tree_util.tree_flatten_with_path(getattr(start, part))[0]),
                                     jax.tree.leaves(a[part]), jax.tree.leaves(b[part]), strict=True):
            change_multi, change_single = (np.asarray(v, np.float64) - first for v in (x, y))
            gap = np.linalg.norm(change_multi - change_single) / np.linalg.norm(change_single)
            assert gap < 1e-1, (part, jax.tree_util.keystr(path), gap)

    out, = finish([launch(multi, tiny_data_dir, 4, STEPS + 2, None, None, None, sgd)])
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
    assert f"process 1 of 2: received SIGTERM: saved step {saved[0]}" in outs[1], outs[1]


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


SLOW_TO_STOP = """
import runpy, sys, time
from streetseg_jax import sharding
real = sharding.stop_alone
def slow(*args, **kwargs):
    time.sleep(1.0)
    real(*args, **kwargs)
sharding.stop_alone = slow
sys.argv[0] = "streetseg_jax.main"
runpy.run_module("streetseg_jax.main", run_name="__main__")
"""


@pytest.mark.parametrize("slow", [False, True])
def test_a_process_that_cannot_start_stops_every_process_with_its_reason(slow, tiny_data_dir, tmp_path):
    """One host lacks the dataset: it says so and every other process says which process stopped and why, within
    seconds (the others waited in their first collective until JAX aborted all of them, 5 minutes later, with a
    stack dump). `slow`: on a loaded machine, process 0 had left before process 1 said why it stopped, and JAX
    aborted process 1 with a stack dump (process 0 held the coordination service)."""
    port, workdir = free_port(), tmp_path / "w"
    procs = [launch(workdir, tiny_data_dir, 2, STEPS, 0, 2, port),
             launch(workdir, tmp_path / "no_data_here", 2, STEPS, 1, 2, port,
                    python=("-c", SLOW_TO_STOP) if slow else ("-m", "streetseg_jax.main"))]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    reason = f"dataset street_seg/synthetic is not built in {tmp_path / 'no_data_here'}"
    assert f"error: {reason}" in outs[1], outs[1]
    assert f"error: process 1 of 2 stopped: {reason}" in outs[0], outs[0]
    assert not any("Fatal Python error" in out for out in outs), outs
    assert not (workdir / "checkpoints").exists()


def test_processes_started_otherwise_are_refused_on_every_process(tiny_data_dir, tmp_path):
    """A process given another learning rate (batch size, seed) trained on without a word, config.json recording
    process 0's; one with another number of devices failed in a gather ('cannot reshape array of size 8 into shape
    (2,2)'); a --num_processes other than the run's went unnoticed."""
    port, workdir = free_port(), tmp_path / "w"
    procs = [launch(workdir, tiny_data_dir, 2, STEPS, 0, 2, port),
             launch(workdir, tiny_data_dir, 1, STEPS, 1, 3, port, "--config.learning_rate=0.5")]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    rate = tiny_config().learning_rate
    for out in outs:
        assert ("error: the processes were not started alike: every process needs as many devices as the others "
                "(process 0 has 2, process 1 has 1); 2 processes joined, but --num_processes is 2 for process 0, 3 "
                f"for process 1; process 1 has another config than process 0: learning_rate 0.5 (process 0: {rate}); "
                "start every process with the same command, but for its --process_id") in out, out
    assert not any("Fatal Python error" in out for out in outs), outs
    assert not workdir.exists()


def test_a_work_directory_the_processes_do_not_share_is_refused(tiny_data_dir, tmp_path):
    """Each process with a work directory of its own (a local disk on each machine) trained to the first save, then
    waited in orbax's barrier for good, deaf to SIGTERM."""
    port = free_port()
    procs = [launch(tmp_path / "w0", tiny_data_dir, 2, STEPS, 0, 2, port),
             launch(tmp_path / "w1", tiny_data_dir, 2, STEPS, 1, 2, port)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    reason = (f"process 1 does not see the work directory process 0 writes to: {tmp_path / 'w1'} (process 0's is "
              f"{tmp_path / 'w0'}) lacks its mark in .lock. Every process needs the same work directory, on a file "
              "system they all share, at the same path (docs/scaling.md)")
    assert f"error: {reason}" in outs[1], outs[1]
    assert f"error: process 1 of 2 stopped: {reason}" in outs[0], outs[0]
    assert not (tmp_path / "w0" / "checkpoints").exists() and not (tmp_path / "w0" / "config.json").exists()


def test_processes_of_a_fresh_start_on_other_datasets_are_refused(tiny_data_dir, tmp_path):
    """A process given another build (its data_dir) trained on without a word, half of each batch from each dataset,
    config.json recording process 0's fingerprint; the run's resume then refused the mix."""
    from conftest import TINY_IMAGES
    from streetseg_jax.data.build import build

    build("synthetic", tmp_path / "other", num_images=TINY_IMAGES, height=96, width=128, seed=7)
    port, workdir = free_port(), tmp_path / "w"
    procs = [launch(workdir, tiny_data_dir, 2, STEPS, 0, 2, port),
             launch(workdir, tmp_path / "other", 2, STEPS, 1, 2, port)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    for out in outs:
        assert re.search(r"error: the processes' datasets differ \(fingerprints \w{8} on process 0, \w{8} on process "
                         r"1\): every process needs a copy of the same build in its --config.data_dir", out), out
    assert not (workdir / "config.json").exists() and not list((workdir / "checkpoints").glob("*/*"))


def lines_of(out: str) -> list[str]:
    return [line for line in out.splitlines() if not line.startswith("[Gloo]")]


def long_run(workdir, data_dir, port, process_id, **kwargs):
    return launch(workdir, data_dir, 2, 200, process_id, 2, port, "--config.checkpoint_every_steps=1000",
                  "--config.eval_every_steps=1000", **kwargs)


def test_a_process_killed_mid_training_stops_the_others_at_once(tiny_data_dir, tmp_path):
    """A host lost mid-training (killed, out of memory, its machine gone): the others waited at JAX's shutdown
    barrier, then aborted 80 s later with 97 lines of traceback and C++ stack dump."""
    from test_train import wait_for_step

    port, workdir = free_port(), tmp_path / "w"
    procs = [long_run(workdir, tiny_data_dir, port, i) for i in range(2)]
    wait_for_step(workdir, 3, procs[0])
    procs[1].kill()
    out = procs[0].communicate(timeout=60)[0]
    assert procs[0].returncode == 2, out
    # Its closed connections end the collective under way (in 0.1 s), or else its silence (SILENCE_S).
    assert lines_of(out)[-1].startswith(("error: the other processes cannot be reached: one stopped without a word "
                                         "(killed, out of memory, or its machine went away)",
                                         "error: process 1 of 2 stopped answering")), out
    assert "Traceback" not in out and "Fatal Python error" not in out, out


@pytest.mark.parametrize("frozen, expected", [
    (1, "error: process 1 of 2 stopped answering {:.0f} s ago (killed, out of memory, or its machine went away)"),
    (0, "error: the coordination service (process 0) stopped answering {:.0f} s ago (frozen, or its machine went "
        "away)"),
])
def test_a_process_that_freezes_is_given_up_after_its_heartbeat_stops(frozen, expected, tiny_data_dir, tmp_path):
    """A frozen host (a paused VM, a machine swapping to death) keeps its connections open: nothing fails, and the
    others waited for JAX's heartbeat timeout (80-100 s), then aborted with a stack dump. Process 0 holds the
    coordination service: its freeze left the heartbeat's own calls waiting."""
    from streetseg_jax.sharding import SILENCE_S
    from test_train import wait_for_step

    port, workdir = free_port(), tmp_path / "w"
    procs = [long_run(workdir, tiny_data_dir, port, i) for i in range(2)]
    wait_for_step(workdir, 3, procs[0])
    procs[frozen].send_signal(signal.SIGSTOP)
    other = procs[1 - frozen]
    try:
        out = other.communicate(timeout=SILENCE_S + 30)[0]
    finally:
        procs[frozen].kill()
        procs[frozen].communicate()
    assert other.returncode == 2, out
    assert lines_of(out)[-1] == expected.format(SILENCE_S), out
    assert "Traceback" not in out and "Fatal Python error" not in out, out


FAILING_READS = """
import runpy, sys
from streetseg_jax import sharding
real, calls = sharding.global_batch, []
def failing(batch, mesh):
    calls.append(batch)
    if len(calls) > 5:
        raise OSError("cannot read train-00000.array_record: Input/output error")
    return real(batch, mesh)
sharding.global_batch = failing
sys.argv[0] = "streetseg_jax.main"
runpy.run_module("streetseg_jax.main", run_name="__main__")
"""


@pytest.mark.parametrize("failing", [1, 0])
def test_a_process_that_fails_mid_training_stops_every_process_with_its_reason(failing, tiny_data_dir, tmp_path):
    """One host cannot read its data at step 5: it stopped alone, and every process waited 5 minutes for JAX to
    abort it. Where that host was process 0, the others waited in a collective its exit would end, and JAX aborted
    them with a stack dump as its coordination service went."""
    port, workdir = free_port(), tmp_path / "w"
    procs = [long_run(workdir, tiny_data_dir, port, i, **({"python": ("-c", FAILING_READS)} if i == failing else {}))
             for i in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    reason = "cannot read train-00000.array_record: Input/output error"
    assert lines_of(outs[failing])[-1].startswith(f"error: {reason} (OSError in"), outs   # raised outside the package
    assert lines_of(outs[1 - failing])[-1].startswith(f"error: process {failing} of 2 stopped: {reason}"), outs
    assert not any("Fatal Python error" in out or "Traceback" in out for out in outs), outs


def test_ctrl_c_on_one_process_stops_every_process_at_the_same_step(tiny_data_dir, tmp_path):
    """The process that was not told said "received None" and exited as if by SIGTERM."""
    from test_train import wait_for_step

    port, workdir = free_port(), tmp_path / "w"
    procs = [long_run(workdir, tiny_data_dir, port, i) for i in range(2)]
    wait_for_step(workdir, 3, procs[0])
    procs[1].send_signal(signal.SIGINT)
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [130, 130], outs
    saved = ocp.CheckpointManager(workdir / "checkpoints" / "latest").all_steps()
    assert len(saved) == 1 and saved[0] % 10 == 0, (saved, outs)
    assert f"received SIGINT on another process: saved step {saved[0]}" in outs[0], outs[0]
