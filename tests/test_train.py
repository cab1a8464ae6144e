"""Training end to end on the tiny synthetic dataset: outputs, exact resume after SIGTERM, SIGKILL during saves,
refusals of bad input, the NaN guard, warm starts; and the train step itself on small arrays."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from conftest import ROOT, TINY_CONFIG, run_main, run_main_to_end, tiny_config
from streetseg_jax.visualize import read_metrics, run_history

STEPS = tiny_config().num_train_steps  # 8


def final_state(workdir: Path, step: int | None = None, which: str = "latest") -> dict:
    """The saved train state as arrays on this process's first device, whatever topology wrote it."""
    manager = ocp.CheckpointManager(workdir / "checkpoints" / which,
                                    item_handlers={"state": ocp.StandardCheckpointHandler()})
    step = manager.latest_step() if step is None else step
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          manager.item_metadata(step)["state"])
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    manager.close()
    return state


def wait_for_step(workdir: Path, step: int, proc, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = workdir / "metrics.jsonl"
        if path.exists() and any(json.loads(l).get("step", 0) >= step for l in path.read_text().splitlines()):
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data_dir):
    workdir = tmp_path_factory.mktemp("run") / "reference"
    code, out = run_main_to_end(workdir, Path(os.path.relpath(tiny_data_dir, ROOT)))    # from main's folder, ROOT
    assert code == 0, out
    return workdir, out


def test_main_writes_config_metrics_checkpoints_and_pictures(finished_run, tiny_data_dir):
    workdir, out = finished_run
    config = json.loads((workdir / "config.json").read_text())
    assert config["num_train_steps"] == STEPS and config["dataset"] == "street_seg/synthetic"
    assert config["data_dir"] == str(tiny_data_dir)    # given relative: evaluate elsewhere looked for it there
    provenance = config["provenance"]
    assert {"jax", "flax", "optax"} <= set(provenance["packages"])
    assert provenance["dataset"]["version"] and len(provenance["dataset"]["fingerprint"]) == 64
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    eval_rows = [r for r in rows if "eval/miou" in r]
    assert [r["step"] for r in train_rows] == list(range(1, STEPS + 1))
    for r in train_rows:
        assert {"time", "train/loss", "train/miou", "train/learning_rate"} <= set(r)
    # Every line but the first, which holds the compiling step alone (log_every_steps 1), has a speed.
    assert ["train/images_per_second" in r for r in train_rows] == [False] + [True] * (STEPS - 1)
    assert [r["step"] for r in eval_rows] == [3, 6, 8]
    for key in ("eval/miou", "eval/pixel_accuracy", "eval/mean_class_accuracy"):
        assert 0.0 <= eval_rows[-1][key] <= 1.0
    assert eval_rows[-1]["eval/loss"] > 0 and "eval/iou/road" in eval_rows[-1]
    assert (workdir / "checkpoints" / "latest" / str(STEPS)).is_dir()
    assert any((workdir / "checkpoints" / "best").iterdir())
    from streetseg_jax.inference import load_model
    assert load_model(workdir).image_size == (96, 128)      # the tiny dataset's: predict resizes photos to it
    assert (workdir / "curves.png").stat().st_size > 1000
    overlays = sorted((workdir / "overlays").glob("*.png"))
    assert len(overlays) == 2
    with Image.open(overlays[0]) as strip:      # three panels side by side (128 wide: enlarged 2x, to 160 at least),
        assert strip.width == 3 * 2 * 128 and strip.height > 2 * 96 + 20    # titles above and a legend below
    assert "ETA" in out
    best = max(eval_rows, key=lambda r: r["eval/miou"])
    assert f"eval mIoU {eval_rows[-1]['eval/miou']:.4f} at the end, best {best['eval/miou']:.4f} at step " \
           f"{best['step']}" in out and f"report --workdir {workdir}" in out


def test_resume_after_sigterm_is_bitwise_exact(finished_run, tiny_data_dir, tmp_path):
    reference, _ = finished_run
    workdir = tmp_path / "interrupted"
    proc = run_main(workdir, tiny_data_dir)
    wait_for_step(workdir, 4, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "received SIGTERM" in out and "resume" in out
    assert (workdir / "curves.png").stat().st_size > 1000     # drawn at step 3's evaluation, not only at the end
    stopped_at = ocp.CheckpointManager(workdir / "checkpoints" / "latest").latest_step()
    assert 4 <= stopped_at < STEPS, out
    records = read_metrics(workdir / "metrics.jsonl")
    stop, = [r for r in records if r.get("run/stop")]          # the time from the last log to it counts
    assert stop["step"] == stopped_at and stop["time"] >= run_history(records)[-1]["time"]
    code, out = run_main_to_end(workdir, tiny_data_dir)
    assert code == 0 and f"resuming from step {stopped_at}" in out, out
    expected, got = final_state(reference, STEPS), final_state(workdir, STEPS)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_run_whose_output_reader_is_gone_trains_on_to_the_end(tiny_data_dir, tmp_path):
    """`main ... | head -2` stopped the run at its next line with "error: [Errno 32] Broken pipe", unsaved: the steps
    since its last checkpoint were lost (none saved yet, here)."""
    workdir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "streetseg_jax.main", f"--config={TINY_CONFIG}",
                             f"--workdir={workdir}", f"--config.data_dir={tiny_data_dir}"], cwd=ROOT,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline()
    proc.stdout.close()                 # as `| head -1` does
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "note: the reader of the run's output is gone (stdout closed): training goes on" in err
    assert ocp.CheckpointManager(workdir / "checkpoints" / "latest").latest_step() == STEPS


_SIGTERM_AT_THE_LAST_WAIT = """
import os, signal
from absl import app, flags
from streetseg_jax import checkpoint, main

save, wait = checkpoint.Checkpoints.save, checkpoint.Checkpoints.wait
def saving(self, step, *args):          # the last step's save is under way when the run waits for it at the end
    self.last_saved = step
    return save(self, step, *args)
def waiting(self):
    if getattr(self, "last_saved", None) == int(os.environ["LAST_STEP"]) and not getattr(self, "signalled", 0):
        self.signalled = True
        os.kill(os.getpid(), signal.SIGTERM)
    return wait(self)
checkpoint.Checkpoints.save, checkpoint.Checkpoints.wait = saving, waiting
flags.mark_flags_as_required(["config", "workdir"])
app.run(main.main, flags_parser=main._parse_flags)
"""


def test_a_sigterm_while_the_last_step_is_saved_keeps_the_save(tiny_data_dir, tmp_path):
    """A SIGTERM in the end's wait for the last step's saves abandoned them (the handlers were put back first):
    latest/8 and best/8 stayed *.orbax-checkpoint-tmp, while the metrics already held step 8."""
    workdir = tmp_path / "late"
    cmd = [sys.executable, "-c", _SIGTERM_AT_THE_LAST_WAIT, f"--config={TINY_CONFIG}", f"--workdir={workdir}",
           f"--config.data_dir={tiny_data_dir}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "LAST_STEP": str(STEPS)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 143, out.stdout + out.stderr
    assert f"received SIGTERM: saved step {STEPS}" in out.stdout + out.stderr
    assert ocp.CheckpointManager(workdir / "checkpoints" / "latest").latest_step() == STEPS
    assert not list((workdir / "checkpoints").rglob("*.orbax-checkpoint-tmp*"))


_KILLED_IN_THE_LAST_EVALUATION = """
import os, time
from pathlib import Path
from absl import app, flags
from streetseg_jax import evaluator, main

run = evaluator.Evaluator.run
def dying(self, *args):
    self.calls = getattr(self, "calls", 0) + 1
    if self.calls == 2:                 # the last step's evaluation, once its checkpoint is saved
        saved = Path(flags.FLAGS.workdir) / "checkpoints" / "latest" / os.environ["LAST_STEP"]
        deadline = time.time() + 120
        while not saved.exists() and time.time() < deadline:
            time.sleep(0.1)
        os._exit(137)                   # as the kernel's out-of-memory killer ends a run
    return run(self, *args)
evaluator.Evaluator.run = dying
flags.mark_flags_as_required(["config", "workdir"])
app.run(main.main, flags_parser=main._parse_flags)
"""


def test_a_last_evaluation_killed_after_its_checkpoint_is_run_when_the_run_is_resumed(tiny_data_dir, tmp_path):
    """The checkpoint is saved before the evaluation due with it (an evaluation killed for want of memory lost
    every step since the last save); so a killed last evaluation was never run: "nothing to train", and the run's
    final score was an older evaluation's."""
    from streetseg_jax.visualize import eval_rows, read_metrics, run_history

    workdir, every = tmp_path / "run", "--config.eval_every_steps=4"
    cmd = [sys.executable, "-c", _KILLED_IN_THE_LAST_EVALUATION, f"--config={TINY_CONFIG}", f"--workdir={workdir}",
           f"--config.data_dir={tiny_data_dir}", every]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "LAST_STEP": str(STEPS)}
    killed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137, killed.stdout + killed.stderr
    assert [row["step"] for row in eval_rows(run_history(read_metrics(workdir / "metrics.jsonl")))] == [4]
    code, out = run_main_to_end(workdir, tiny_data_dir, every)
    assert code == 0 and f"step {STEPS}: metrics.jsonl holds no evaluation of it (cut short when the run " \
        "stopped?); evaluating it now" in out and "nothing to train" in out, out
    assert [row["step"] for row in eval_rows(run_history(read_metrics(workdir / "metrics.jsonl")))] == [4, STEPS]
    # the evaluation's row counts from a start of its own, not from the killed one's (the hours between as training)
    starts = [row for row in read_metrics(workdir / "metrics.jsonl") if row.get("run/start")]
    assert [row["step"] for row in starts] == [0, STEPS]
    code, out = run_main_to_end(workdir, tiny_data_dir, every)     # once: evaluated now
    assert code == 0 and "holds no evaluation" not in out, out


def test_a_run_resumes_from_its_own_config_json_when_its_config_file_is_gone(finished_run, tiny_data_dir, tmp_path):
    """`--config RUN/config.json` was "NameError: name 'true' is not defined": a run whose config file was deleted
    could not be resumed."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_run[0], workdir)
    cmd = [sys.executable, "-m", "streetseg_jax.main", "--config", str(workdir / "config.json"),
           f"--workdir={workdir}"]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and f"already at step {STEPS}" in done.stdout and "resuming with changed" not in \
        done.stdout, done.stdout + done.stderr
    # The overrides it records are its own and the config.json's: recording only those given now (here one), a
    # later resume from the config file that left the others out was no longer refused.
    started = json.loads((workdir / "config.json").read_text())["provenance"]["overrides"]
    done = subprocess.run([*cmd, f"--config.num_train_steps={STEPS + 1}"], cwd=ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = json.loads((workdir / "config.json").read_text())["provenance"]["overrides"]
    assert (started, recorded) == (["data_dir"], ["data_dir", "num_train_steps"])
    (tmp_path / "other.json").write_text('{"learning_rate": 1}')
    cmd[4] = str(tmp_path / "other.json")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr == (      # it printed a flag never typed and a traceback
        f"error: --config {tmp_path / 'other.json'}: a .json config is a run's config.json (it has a provenance "
        "block); this one is not: give a config file (.py with get_config()) or a run's config.json\n"), done.stderr


def test_a_run_that_recorded_a_key_no_run_reads_still_resumes(finished_run, tiny_data_dir, tmp_path):
    """A run started before keys were checked, whose config had a misspelt key, could not resume: its config.json
    was refused for the key, and a config without it 'differed' from its checkpoints' in the model section."""
    def old_run(name):
        workdir = tmp_path / name
        shutil.copytree(finished_run[0], workdir)
        for recorded in [workdir / "config.json", *workdir.glob("checkpoints/*/*/meta/metadata")]:
            data = json.loads(recorded.read_text())
            (data.get("config") or data)["model"]["widht"] = 64
            recorded.write_text(json.dumps(data))
        return workdir
    code, out = run_main_to_end(old_run("a"), tiny_data_dir, f"--config.num_train_steps={STEPS + 1}")
    assert code == 0 and f"step {STEPS + 1}/{STEPS + 1}" in out, out
    workdir = old_run("b")
    done = subprocess.run([sys.executable, "-m", "streetseg_jax.main", "--config", str(workdir / "config.json"),
                           f"--workdir={workdir}", f"--config.num_train_steps={STEPS + 1}"], cwd=ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and f"step {STEPS + 1}/{STEPS + 1}" in done.stdout, done.stdout + done.stderr


def test_a_best_checkpoint_lost_when_the_run_stopped_is_saved_when_it_resumes(finished_run, tiny_data_dir, tmp_path):
    """A full disk stopped the run while the last step's best checkpoint was saved, after its evaluation was logged:
    the resume kept the older best checkpoint, which evaluate and predict then took, while the run's summary and
    compare named the logged step."""
    from streetseg_jax.checkpoint import Checkpoints

    workdir = tmp_path / "run"
    shutil.copytree(finished_run[0], workdir)
    shutil.rmtree(workdir / "checkpoints" / "best")
    code, out = run_main_to_end(workdir, tiny_data_dir)
    assert code == 0 and f"step {STEPS}: new best eval mIoU" in out, out
    checkpoints = Checkpoints(workdir, read_only=True)
    assert checkpoints.best.all_steps() == [STEPS]
    checkpoints.close()


def test_a_best_checkpoint_of_steps_a_resume_trains_again_is_removed(tmp_path):
    """Killed after step 16's new best and before the next save (step 12's), a resume with another learning rate
    kept best/16 of the thrown-away training: evaluate and predict took it, and a redone step that scored less
    than it was never saved as best, while the run's history and compare named step 20."""
    from streetseg_jax.checkpoint import Checkpoints

    weights = {"w": np.ones(3, np.float32)}
    checkpoints = Checkpoints(tmp_path / "run")
    checkpoints.save(12, weights, {"iterator": {}}, {"run": "x"})
    checkpoints.save_best(16, weights, {"iterator": {}}, {"run": "x"}, miou=0.32)
    checkpoints.wait()
    # a step kept already, its mIoU sent to every process as a float32 and come back above itself: no second save
    # (orbax: "Checkpoint for step 16 already exists", at every resume of a run of several processes)
    assert not checkpoints.save_best(16, weights, {"iterator": {}}, {"run": "x"}, miou=0.3200001)
    assert checkpoints.drop_best_after(12) == [16] and checkpoints.best.all_steps() == []
    assert checkpoints.save_best(20, weights, {"iterator": {}}, {"run": "x"}, miou=0.31)
    checkpoints.close()


def test_after_a_start_that_trains_steps_again_the_best_checkpoint_is_the_historys_best(finished_run, tiny_data_dir,
                                                                                       tmp_path):
    from streetseg_jax.checkpoint import Checkpoints
    from streetseg_jax.visualize import best_eval

    workdir = tmp_path / "run"
    shutil.copytree(finished_run[0], workdir)
    shutil.rmtree(workdir / "checkpoints" / "latest")   # as a kill after a new best, before any save, leaves it
    (best_before,) = Checkpoints(workdir, read_only=True).best.all_steps()
    code, out = run_main_to_end(workdir, tiny_data_dir, "--config.learning_rate=0.002")   # trains otherwise
    assert code == 0 and f"removed the best checkpoint of step {best_before}: it is of steps this start trains " \
        "again" in out, out
    checkpoints = Checkpoints(workdir, read_only=True)
    assert checkpoints.best.all_steps() == [best_eval(run_history(read_metrics(workdir / "metrics.jsonl")))["step"]]


def test_no_checkpoint_is_saved_into_a_work_directory_moved_while_the_run_trains(tmp_path):
    """Moved while it trained, the run said "No ArrayMetadata found ..." of a save cut short, or orbax made the old
    path again and the run went on into a new folder there."""
    from streetseg_jax.checkpoint import Checkpoints, SaveError

    (tmp_path / "run").mkdir()      # a run's, which holds its lock before its checkpoints are opened
    (tmp_path / "run" / ".lock").write_text("process 1 on here\n")
    checkpoints = Checkpoints(tmp_path / "run")
    checkpoints.save(1, {"w": np.ones(3, np.float32)}, {"iterator": {}}, {"run": "x"})
    checkpoints.wait()
    (tmp_path / "run").rename(tmp_path / "moved")
    with pytest.raises(SaveError, match="the work directory was moved or removed while the run trained"):
        checkpoints.save(2, {"w": np.ones(3, np.float32)}, {"iterator": {}}, {"run": "x"})
    assert not (tmp_path / "run").exists()


def test_a_stop_right_after_a_periodic_save_saves_nothing_twice(tmp_path):
    # SIGTERM arriving just after step N's periodic save makes the loop save step N again (seen in CI once steps
    # got faster): orbax refuses a step it has, so the second save must be skipped, not fail the run.
    from streetseg_jax.checkpoint import Checkpoints

    checkpoints = Checkpoints(tmp_path)
    for weights in (np.ones(3, np.float32), np.zeros(3, np.float32)):
        checkpoints.save(6, {"w": weights}, {"iterator": {}}, {"run": "x"})
    checkpoints.wait()
    assert checkpoints.all_steps() == [6]
    restored = checkpoints.restore_as_saved(6)
    np.testing.assert_array_equal(restored["w"], np.ones(3, np.float32))
    checkpoints.close()


def test_sigkill_during_saves_resumes_from_last_complete_checkpoint(tiny_data_dir, tmp_path):
    workdir = tmp_path / "killed"
    overrides = ("--config.checkpoint_every_steps=1",)
    proc = run_main(workdir, tiny_data_dir, *overrides)
    wait_for_step(workdir, 4, proc)
    proc.kill()  # SIGKILL, almost certainly while an asynchronous save is being written
    proc.communicate(timeout=60)
    unfinished = workdir / "checkpoints" / "best" / "99.orbax-checkpoint-tmp"    # a save killed on the way, as
    unfinished.mkdir(parents=True, exist_ok=True)                                 # one of a step not saved again
    (unfinished / "state").write_bytes(b"half of a checkpoint")
    (workdir / "checkpoints" / "latest" / ".deleting" / "1" / "state").mkdir(parents=True, exist_ok=True)
    cut = workdir / "checkpoints" / "best" / "0"       # a deletion killed on the way left a step holding state alone,
    (cut / "state").mkdir(parents=True)                # listed by every command and loadable by none, for good
    killed_writes = [workdir / ".curves.png.ho57qqu5.tmp", workdir / "overlays" / "a" / ".b.png.x1y2z3.tmp"]
    for path in killed_writes:                         # an atomic write a kill cut short leaves its temporary file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (workdir / ".report.html.abcdefgh.tmp").write_bytes(b"")      # report's write under way: not the run's
    code, out = run_main_to_end(workdir, tiny_data_dir, *overrides)
    assert code == 0, out
    assert "resuming from step" in out and not cut.exists()
    assert not any(path.exists() for path in killed_writes) and (workdir / ".report.html.abcdefgh.tmp").exists()
    # Steps to delete are renamed into .deleting/ first (one rename: a kill during orbax's file-by-file deletion
    # left a step listed and unloadable), then removed: none stays, and latest/ keeps its 3.
    assert not list((workdir / "checkpoints").glob("*/.deleting"))
    assert len(ocp.CheckpointManager(workdir / "checkpoints" / "latest").all_steps()) == 3
    assert "removed checkpoints/best/0: a deletion cut short (a kill) left it without some of its items" in out
    assert ocp.CheckpointManager(workdir / "checkpoints" / "latest").latest_step() == STEPS
    assert not list((workdir / "checkpoints").glob("*/*.orbax-checkpoint-tmp*"))      # they stayed for good
    # The log holds the killed steps and their redone ones; the run's history has each step once, in order.
    history = run_history(read_metrics(workdir / "metrics.jsonl"))
    assert [row["step"] for row in history if "train/loss" in row] == list(range(1, STEPS + 1))
    assert all(a["elapsed"] <= b["elapsed"] for a, b in zip(history, history[1:]))


def test_a_resume_says_which_logged_steps_are_trained_again_and_on_which_devices(finished_run, tiny_data_dir,
                                                                                  tmp_path):
    """After a SIGKILL between saves the resume said only 'resuming from step 10', though the log went to 20; a
    resume on other devices said nothing of it (bit-for-bit equality with an unchanged run ends there), and the run's
    files kept only the last start's devices."""
    workdir = tmp_path / "killed_late"
    shutil.copytree(finished_run[0], workdir)
    with open(workdir / "metrics.jsonl", "a") as f:          # the killed run had logged on past its last save
        f.write(json.dumps({"step": STEPS + 2, "time": 0.0, "train/loss": 1.0}) + "\n")
    code, out = run_main_to_end(workdir, tiny_data_dir, f"--config.num_train_steps={STEPS + 2}", "--cpu_devices=1")
    assert code == 0, out
    assert (f"resuming from step {STEPS} in {workdir / 'checkpoints'}; steps {STEPS + 1}..{STEPS + 2}, logged by the "
            "run that stopped, are trained again") in out
    from streetseg_jax import native, sharding

    cores, kernels = sharding.usable_cores(), native.cpu_targets() is not None      # as the run's process found them
    cpu = f" ({cores} core(s), {'our' if kernels else 'no'} C++ kernels)"
    assert (f"resuming on 1 cpu device(s) in 1 process(es){cpu}, where the run trained on 2 cpu device(s) in 1 "
            f"process(es){cpu} until now: from here on its steps equal those of a run that kept its devices to float "
            "rounding, not bit for bit") in out
    starts = [r["run/devices"] for r in read_metrics(workdir / "metrics.jsonl") if r.get("run/start")]
    assert starts == [{"count": n, "kind": "cpu", "processes": 1, "cores": cores, "native_kernels": kernels}
                      for n in (2, 1)]


def test_a_checkpoint_that_cannot_be_written_stops_the_run_in_one_line(tiny_data_dir, tmp_path):
    """A full disk (here a file size limit) failed the save in the background: training went on unsaved until the
    next save, and the run printed 2,500 lines of orbax and asyncio tracebacks."""
    # A write past the limit fails (EFBIG) as on a full disk, once SIGXFSZ is ignored. Parameters of base width 16
    # (2 MB) do not fit; nothing else the run writes is that large once the compilation cache and the native
    # kernels' build, which write files of their own, are off.
    small_files_only = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                        "resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000)); "
                        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_ENABLE_COMPILATION_CACHE": "false", "STREETSEG_NATIVE": "0"}
    out = subprocess.run(
        [sys.executable, "-c", small_files_only, "-m", "streetseg_jax.main",
         f"--config={ROOT / 'tests' / 'configs' / 'tiny.py'}", f"--workdir={tmp_path / 'w'}",
         f"--config.data_dir={tiny_data_dir}", "--config.num_train_steps=8", "--config.checkpoint_every_steps=4",
         "--config.log_every_steps=1", "--config.eval_every_steps=0", "--config.model.base_width=16"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = (out.stdout + out.stderr).strip().splitlines()
    where = tmp_path / "w" / "checkpoints"
    assert out.returncode == 2 and out.stderr.startswith(
        f"error: could not save a checkpoint in {where}: File too large (a full disk?)"), lines
    assert len(lines) < 15 and "Traceback" not in out.stderr, lines
    whole = re.search(r"the last whole one is step (\d+)", out.stderr)
    failed = int(whole.group(1)) + 4 if whole else 4               # the save that failed (a save every 4 steps)
    assert f"step {failed}/8" in out.stdout and f"step {failed + 1}/8" not in out.stdout, lines   # the next log line


def test_incompatible_workdir_is_refused(finished_run, tiny_data_dir):
    workdir, _ = finished_run
    before = (workdir / "config.json").read_text()
    code, out = run_main_to_end(workdir, tiny_data_dir, f"--config.num_train_steps={STEPS + 2}",
                                "--config.model.base_width=8")
    assert code == 2, out
    assert "incompatible" in out and "config.model differs" in out
    assert (workdir / "config.json").read_text() == before     # still says what the checkpoints hold


def test_a_finished_run_asked_for_fewer_steps_trains_nothing_and_says_so(finished_run, tiny_data_dir):
    workdir, _ = finished_run
    before = {name: (workdir / name).read_text() for name in ("config.json", "metrics.jsonl")}
    code, out = run_main_to_end(workdir, tiny_data_dir, f"--config.num_train_steps={STEPS - 2}",
                                "--config.eval_flip_tta=True", "--config.eval_extra_scales=(0.5,)")
    assert code == 0, out
    assert f"already at step {STEPS}, num_train_steps is {STEPS - 2}: nothing to train" in out
    # Said all the same (a changed crop size went unmentioned): nothing is trained with them.
    assert "the settings differ from the checkpoint's: eval_extra_scales [] -> [0.5], eval_flip_tta False -> True, " \
        f"num_train_steps {STEPS} -> {STEPS - 2}" in out, out
    assert "warning: evaluation differs" not in out       # nothing will be evaluated
    assert "training steps" not in out and "best checkpoint" in out
    assert {name: (workdir / name).read_text() for name in before} == before


def test_a_resume_without_an_override_the_run_was_started_with_is_refused(tiny_data_dir, tmp_path):
    """Resumed with one changed setting given alone, a 400-step run at learning rate 0.001 went on as a 1,950-step
    one at the config file's 0.003: said in one line of the log."""
    workdir = tmp_path / "w"
    code, out = run_main_to_end(workdir, tiny_data_dir, "--config.num_train_steps=2", "--config.learning_rate=0.005")
    assert code == 0, out
    before = (workdir / "config.json").read_text()
    code, out = run_main_to_end(workdir, tiny_data_dir, "--config.num_train_steps=4")
    assert code == 2 and out.startswith("error: the run was started with --config.learning_rate=0.005, not given now, "
                                        "so the config file's values would take their place (learning_rate 0.01): "
                                        "give them again to go on as started, or give the new values"), out
    assert (workdir / "config.json").read_text() == before
    code, out = run_main_to_end(workdir, tiny_data_dir, "--config.num_train_steps=4", "--config.learning_rate=0.002")
    assert code == 0 and "learning_rate 0.005 -> 0.002" in out, out


def test_the_refusal_names_flags_a_shell_takes_back_and_spares_where_the_data_lives(tmp_path):
    from streetseg_jax import resume

    started = ["augment.crop_size", "data_dir", "init_from", "learning_rate"]
    saved = {"augment": {"crop_size": [64, 96]}, "data_dir": "/data", "init_from": "runs/a b", "learning_rate": 0.1}
    current = {"augment": {"crop_size": [48, 64]}, "data_dir": "~/tfds", "init_from": "", "learning_rate": 0.1}
    refused = resume.dropped_overrides(started, saved, current, ["learning_rate"])
    assert refused.startswith("the run was started with '--config.augment.crop_size=(64, 96)', not given now, so the "
                              "config file's values would take their place (augment.crop_size [48, 64])")
    assert resume.dropped_overrides(started, saved, {**current, "augment": saved["augment"]}, []) is None   # data


def test_a_relative_init_from_an_older_run_recorded_is_no_change_when_it_resumes_from_its_folder(tmp_path,
                                                                                                   monkeypatch):
    """main makes init_from absolute now: an older run's config.json, which kept it relative, resumed from the folder
    it started in with 'resuming with changed settings: init_from runs/a -> /home/u/runs/a', kept in run/changed."""
    from streetseg_jax import resume

    monkeypatch.chdir(tmp_path)
    assert resume.changes({"init_from": "runs/a", "seed": 0}, {"init_from": str(tmp_path / "runs" / "a"),
                                                               "seed": 0}) == {}
    assert resume.changes({"init_from": "runs/a"}, {"init_from": "/elsewhere/a"}) == {
        "init_from": [str(tmp_path / "runs" / "a"), "/elsewhere/a"]}


def test_a_run_of_a_version_that_did_not_record_its_overrides_resumes_only_as_it_was_or_as_told():
    """Resumed with the same command after an upgrade, such a run took the new default recipe (another loss,
    class weights, evaluation and length), said in one line."""
    from streetseg_jax import resume

    saved = {"loss": "cross_entropy", "num_train_steps": 300, "data_dir": "/data", "eval_scale": 0.375}
    current = {"loss": "cross_entropy+lovasz", "num_train_steps": 1950, "data_dir": "~/tfds", "eval_scale": 0.375}
    refused = resume.dropped_overrides(None, saved, current, ["num_train_steps"])
    assert refused == ("the run's config.json records no --config overrides (an earlier version's run, or one "
                       "started from Python), and these settings differ from the run's without being given now (loss "
                       "cross_entropy -> cross_entropy+lovasz): give --config.loss=cross_entropy to go on as started, "
                       "or give the new values to change them")
    assert resume.dropped_overrides(None, saved, current, ["num_train_steps", "loss"]) is None     # told
    assert resume.dropped_overrides([], saved, current, []) is None      # recorded: none were given at its start


def test_a_run_of_an_older_dataset_version_built_beside_the_newer_is_told_how_to_go_on(tiny_data_dir, tmp_path):
    """A run trained on street_seg/synthetic 1.0.0, resumed where 2.0.0 had been built beside it, was refused with
    "give the data it trained on", and pinning the version was refused as another config.dataset."""
    from streetseg_jax import resume
    from streetseg_jax.run import RunError, _check_same_data

    data_dir = shutil.copytree(tiny_data_dir, tmp_path / "tfds")
    shutil.copytree(data_dir / "street_seg" / "synthetic" / "2.0.0", data_dir / "street_seg" / "synthetic" / "1.0.0")
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"provenance": {"dataset": {"version": "1.0.0",
                                                                                "fingerprint": "0" * 64}}}))
    config = tiny_config()
    config.data_dir = str(data_dir)
    with pytest.raises(RunError, match=re.escape("(version 1.0.0, which it trained on, is there too: "
                                                 "--config.dataset=street_seg/synthetic:1.0.0)")):
        _check_same_data(config, workdir, "f" * 64, 10)
    saved = {"config": {"dataset": "street_seg/synthetic", "model": {}}, "label_map": {}}
    pinned = {"config": {"dataset": "street_seg/synthetic:1.0.0", "model": {}}, "label_map": {}}
    assert resume.incompatibility(saved, pinned, workdir) is None
    assert "config.dataset differs" in resume.incompatibility(
        saved, {**pinned, "config": {"dataset": "street_seg/voc_polygons", "model": {}}}, workdir)


def test_a_resume_with_changed_settings_says_what_they_change():
    from streetseg_jax import resume

    said = []
    log = type("Log", (), {"say": lambda self, message: said.append(message)})()
    saved = json.loads(json.dumps(tiny_config().to_dict()))      # as the checkpoint's JSON gives it back
    del saved["eval_split"]                                       # a key an older version's config lacked
    assert resume.warn_of_changes(saved, tiny_config().to_dict(), 4, log) == {} and said == []
    current = tiny_config()
    current.eval_flip_tta, current.eval_extra_scales, current.augment.flip = True, (0.5,), False
    current.num_train_steps, current.loss = 20, "cross_entropy+dice"
    changed = resume.warn_of_changes(saved, current.to_dict(), 4, log)
    assert changed == {"augment.flip": [True, False], "eval_extra_scales": [[], [0.5]],
                       "eval_flip_tta": [False, True], "loss": ["cross_entropy", "cross_entropy+dice"],
                       "num_train_steps": [8, 20]}
    assert said[0] == ("resuming with changed settings: augment.flip True -> False, eval_extra_scales [] -> [0.5], "
                       "eval_flip_tta False -> True, loss cross_entropy -> cross_entropy+dice, num_train_steps 8 -> 20")
    assert said[1].startswith("warning: evaluation differs from the checkpoint's")
    assert re.fullmatch(r"warning: the learning-rate schedule is recomputed for the new settings: the rate goes "
                        r"from \S+ at step 4 to \S+", said[2])
    assert resume._rate_jump({"num_train_steps": 8}, current.to_dict(), 4) == ""     # a checkpoint's config too old


def test_a_resume_with_more_steps_records_what_changed(finished_run, tiny_data_dir, tmp_path):
    workdir = tmp_path / "longer"
    shutil.copytree(finished_run[0], workdir)
    code, out = run_main_to_end(workdir, tiny_data_dir, f"--config.num_train_steps={STEPS + 1}")
    assert code == 0, out
    assert f"resuming with changed settings: num_train_steps {STEPS} -> {STEPS + 1}" in out
    assert "the learning-rate schedule is recomputed" in out
    starts = [r for r in read_metrics(workdir / "metrics.jsonl") if r.get("run/start")]
    assert starts[-1]["step"] == STEPS and starts[-1]["run/changed"] == {"num_train_steps": [STEPS, STEPS + 1]}
    # Each start says which code ran it (config.json keeps the latest's alone: a resume by a newer version hid which
    # version trained the steps before it).
    commit = json.loads((workdir / "config.json").read_text())["provenance"]["git_commit"]
    assert starts[-1]["run/commit"] == commit and all("run/commit" in start for start in starts)


def test_the_commit_recorded_is_this_checkouts_and_unknown_for_a_package_installed_in_another_repository(tmp_path):
    """Installed into a virtual environment inside another project's repository, the package recorded that
    project's commit as the one that trained the run."""
    def commit(pythonpath):
        return subprocess.run([sys.executable, "-c", "from streetseg_jax import run; print(run._git_commit())"],
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(pythonpath)}, capture_output=True,
                              text=True, check=True).stdout.strip()
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and this package's own checkout")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert commit(ROOT).removesuffix("-dirty") == head
    other = tmp_path / "other"
    shutil.copytree(ROOT / "streetseg_jax", other / "venv" / "site-packages" / "streetseg_jax",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for command in (["init", "-q"], ["-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "--allow-empty",
                                     "-m", "another project"]):
        subprocess.run(["git", *command], cwd=other, check=True)
    assert commit(other / "venv" / "site-packages") == "unknown"


def test_a_refused_resume_says_what_differs_and_the_dropout_rate_may_change(tmp_path):
    from streetseg_jax import resume

    saved = {"config": {"model": {"base_width": 4, "depth": 2, "dropout": 0.1}, "dataset": "a", "optimizer": "adamw"},
             "label_map": {}}
    current = json.loads(json.dumps(saved))
    current["config"]["model"]["dropout"] = 0.2           # the same arrays
    assert resume.incompatibility(saved, current, tmp_path) is None
    current["config"]["model"]["dropout"] = 0.0           # no dropout: no random-number state in the model state
    assert re.search(r"config.model differs: dropout 'on' there, 'off' here\n.*its config.json has the overrides it "
                     r"was started with.*--config.init_from=", resume.incompatibility(saved, current, tmp_path))
    current["config"]["model"]["base_width"] = 8          # a warm start from it would be refused: not suggested
    refused = resume.incompatibility(saved, current, tmp_path)
    assert re.search(r"(?s)base_width 4 there, 8 here.*another --workdir\.$", refused) and "init_from" not in refused


def test_a_resume_on_a_label_map_that_only_gained_an_alias_goes_on_and_says_so(finished_run, tiny_data_dir,
                                                                              tmp_path):
    """A rebuilt dataset whose label map only gained an alias was refused as "the label map differs ... (colours,
    aliases, fill id or mask values)", then told to resume "with the run's own settings", which has none of it; the
    data's own check never spoke. Ids are what a checkpoint depends on: the run says what changed and goes on."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_run[0], workdir)
    meta_file = workdir / "checkpoints" / "latest" / str(STEPS) / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    tree, = (c for c in meta["label_map"]["classes"] if c["name"] == "tree")
    tree["aliases"].remove("trees")                          # the checkpoint's map lacks an alias the data's has
    meta_file.write_text(json.dumps(meta))
    code, out = run_main_to_end(workdir, tiny_data_dir, f"--config.num_train_steps={STEPS + 1}")
    assert code == 0, out
    assert "the dataset's label map changed since the checkpoint (class 'tree' gained alias 'trees'); its classes " \
           "and ids are the same" in out, out


def test_a_resume_on_other_classes_is_refused_without_blaming_a_setting(tmp_path):
    from streetseg_jax import resume
    from streetseg_jax.labels.label_map import default_label_map

    labels = default_label_map().to_dict()
    saved = {"config": {"model": {"base_width": 4}, "dataset": "a"}, "label_map": labels}
    current = json.loads(json.dumps(saved))
    current["label_map"]["classes"][1]["color"] = [1, 2, 3]
    assert resume.incompatibility(saved, current, tmp_path) is None
    assert "class 'tree': colour [34, 139, 34] before, [1, 2, 3] now" in resume.label_map_note(saved, current)
    current["label_map"]["classes"][1]["name"] = "bush"
    refused = resume.incompatibility(saved, current, tmp_path)
    assert refused.startswith(f"{tmp_path} holds a run trained on other classes, refusing to resume:"), refused
    assert "other classes than the checkpoint's (classes background, tree," in refused
    assert "Resume on the data it trained on" in refused and "settings" not in refused, refused
    current = json.loads(json.dumps(saved))
    current["label_map"]["ignore_id"] = 254          # was "trained on other classes" too
    refused = resume.incompatibility(saved, current, tmp_path)
    assert refused.startswith(f"{tmp_path} holds a run trained on another ignore id, refusing"), refused
    assert "has another ignore id than the checkpoint's (ignore id 255 before, 254 now)" in refused


def test_a_resume_on_other_data_of_the_same_name_is_refused(finished_run, tiny_data_dir, tmp_path):
    """A resume under another --config.data_dir holding another street_seg/synthetic trained on from the last step
    as if it were the same data, its evaluations compared with the earlier ones; said only as a changed data_dir."""
    workdir, moved, other = tmp_path / "run", tmp_path / "moved", tmp_path / "other"
    shutil.copytree(finished_run[0], workdir)
    shutil.copytree(tiny_data_dir, moved)                   # the same files elsewhere: resumed
    code, out = run_main_to_end(workdir, moved, f"--config.num_train_steps={STEPS + 1}")
    assert code == 0, out
    shutil.copytree(tiny_data_dir, other)
    info, = other.glob("street_seg/synthetic/*/dataset_info.json")
    info.write_text(info.read_text() + "\n")               # another build: its files differ
    code, out = run_main_to_end(workdir, other, f"--config.num_train_steps={STEPS + 2}")
    assert code != 0 and f"is not the dataset this run trained on until step {STEPS + 1}" in out, out
    assert f"--config.init_from={workdir}" in out and "--same_data resumes on it" in out and "Traceback" not in out
    # A rebuild of the same inputs by another version has other bytes: the user says so, and the run goes on, with
    # the new fingerprint recorded (the old build, which --overwrite deleted, left no other way but a new run).
    code, out = run_main_to_end(workdir, other, f"--config.num_train_steps={STEPS + 2}", "--same_data")
    assert code == 0 and "resuming on it all the same (--same_data" in out, out
    code, out = run_main_to_end(workdir, other, f"--config.num_train_steps={STEPS + 3}")
    assert code == 0 and "--same_data" not in out, out


def test_switching_ema_on_when_resuming_is_refused(finished_run, tiny_data_dir):
    workdir, _ = finished_run
    code, out = run_main_to_end(workdir, tiny_data_dir, f"--config.num_train_steps={STEPS + 2}",
                                "--config.ema_decay=0.9")
    assert code == 2, out
    assert "EMA of the weights" in out and "Traceback" not in out


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_with_zero(flag):
    out = subprocess.run([sys.executable, "-m", "streetseg_jax.main", flag], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--workdir" in out.stdout + out.stderr


def test_mistyped_flags_keys_and_values_are_one_message(tiny_data_dir, tmp_path):
    for flag, message in (("--config.num_train_step=1", "unknown config key 'num_train_step': did you mean "
                           "'num_train_steps'?"),
                          ("--config.num_train_steps=abc", "flag --config.num_train_steps=abc: invalid literal"),
                          ("--config.num-train-steps=abc", "flag --config.num_train_steps=abc: invalid literal"),
                          ("--config.eval_flip_tta=no", "flag --config.eval_flip_tta=no: takes true or false, got "
                           "'no'"),
                          ("--no_such_flag", "Unknown command line flag 'no_such_flag'"),
                          ("--config=configs/nope.py", "--config configs/nope.py: no such file"),
                          ("--config.nonexistent=3", "unknown config key 'nonexistent'"),
                          ("--config.crop_size=3", "unknown config key 'crop_size': did you mean 'augment.crop_size'?"),
                          ("--config.model.widht=3", "unknown config key 'model.widht': did you mean "
                           "'model.base_width'?"),
                          # ml_collections' guess is the section's key alone, which the flag cannot take
                          ("--config.augment.base_scal=0.4", "unknown config key 'augment.base_scal': did you mean "
                           "'augment.base_scale'?")):
        code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, flag)
        assert code == 2 and out.startswith("error: ") and message in out and "Traceback" not in out, out
    # given twice, a tuple's values were joined: evaluated at both scales, or refused as (0.5, -1.0)
    code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, "--config.eval_extra_scales=(0.5,)",
                                "--config.eval_extra_scales=(0.75,)")
    assert code == 2 and out.startswith("error: --config.eval_extra_scales is given 2 times ("), out
    assert not (tmp_path / "w").exists()


def test_an_installed_package_without_configs_says_where_they_are(tmp_path):
    """Installed with pip, `--config configs/default.py` as the README has it said only "no such file"."""
    shutil.copytree(ROOT / "streetseg_jax", tmp_path / "site" / "streetseg_jax",
                    ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "streetseg_jax.main", "--config", "configs/default.py",
                           "--workdir", "w"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert done.returncode == 2 and "configs/ comes with streetseg_jax's source checkout" in done.stderr, done.stderr


@pytest.mark.parametrize("source, message", [
    ("def get_config(:\n", "the config file does not parse: {path}:1: invalid syntax\n    def get_config(:"),
    ("def get_config():\n    raise ValueError('no data here')\n",
     "the config file failed: {path}:2 in get_config: ValueError: no data here"),
    ("CONFIG = 1\n", "the config file has no get_config()"),
    ("import ml_collections\ndef get_config():\n    return ml_collections.ConfigDict({'batch_size': 4})\n",
     "the config has no key 'eval_batch_size', which a run reads: a config file starts from configs/default.py's"),
])
def test_a_config_file_that_fails_is_one_message_naming_where(source, message, tmp_path):
    """Each was a 50-line traceback of absl and ml_collections (the missing key's ending "Did you mean
    'batch_size' instead of 'eval_batch_size'?")."""
    path = tmp_path / "mine.py"
    path.write_text(source)
    out = subprocess.run([sys.executable, "-m", "streetseg_jax.main", f"--config={path}",
                          f"--workdir={tmp_path / 'w'}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error: " + message.format(path=path)), out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "w").exists()


def test_multi_host_flags_that_do_not_go_together_are_one_message(tiny_data_dir, tmp_path):
    address = "--coordinator_address=127.0.0.1:1"
    for flags, message in ((["--num_processes=2", "--process_id=1"], "--num_processes and --process_id need "
                             "--coordinator_address HOST:PORT (or --multihost)"),
                           ([address, "--num_processes=2"], "--coordinator_address needs --num_processes N and "
                            "--process_id I"),
                           ([address, "--num_processes=2", "--process_id=2"], "--process_id must be 0..1"),
                           ([address, "--num_processes=0", "--process_id=0"], "--num_processes must be 1 or more, "
                            "got 0"),   # it said "--process_id must be 0..-1"
                           (["--process_id=1"], "--process_id needs --coordinator_address"),
                           (["--cpu_devices=-1"], "--cpu_devices must be 0 (one per core) or more, got -1"),
                           (["--startup_timeout=0"], "--startup_timeout must be 1 second or more, got 0")):
        code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, *flags)
        assert code == 2 and out.startswith(f"error: {message}") and "Traceback" not in out, out
    code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, "--multihost")     # no cluster here to detect
    assert code == 2 and "joining the cluster JAX detects (--multihost)" in out and "\nerror: --multihost: " in out
    assert "elsewhere give --coordinator_address, --num_processes and --process_id)" in out, out
    code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, "--cpu_devices=3")     # both batches at once
    assert code == 2 and ("error: batch_size 4 and eval_batch_size 4 must divide by the number of devices (3): run on "
                          "1 or 2 device(s) (--cpu_devices N on a CPU, CUDA_VISIBLE_DEVICES on GPUs), or give batch "
                          "sizes that do (--config.batch_size=3 --config.eval_batch_size=3; for a run under way, "
                          "another batch_size is another recipe)") in out, out
    assert not (tmp_path / "w").exists()


def test_a_model_too_large_for_the_memory_is_refused_before_anything_is_written(tiny_data_dir, tmp_path):
    """model.depth 9 ran the machine out of memory: the kernel killed the run without a word."""
    code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, "--cpu_devices=2", "--config.model.depth=7",
                                "--config.model.base_width=1024")      # 77 G parameters: 1.2 TB and more
    assert code == 2 and out.startswith("error: the model does not fit in memory: training needs ") and \
        "on each of 2 devices" in out and "make model.depth (7) or model.base_width (1024) smaller" in out, out
    assert not (tmp_path / "w").exists()


def test_the_memory_bound_counts_every_device_on_the_host():
    from streetseg_jax import sharding, train

    config = tiny_config()
    config.model.base_width = 256            # 0.5 GiB a device
    one, two = (types.SimpleNamespace(devices=np.array(jax.devices()[:1] * n)) for n in (1, 2))   # CPU devices
    assert train.memory_problem(config, 8, two, free=lambda device: None) is None       # unknown: not refused
    one, two = (train.memory_problem(config, 8, mesh, free=lambda device: 0) for mesh in (one, two))
    need = [float(re.search(r"needs ([0-9.]+) GiB", text).group(1)) for text in (one, two)]
    assert "on each of 2 devices" in two and need[0] > 0.3 and need[1] == pytest.approx(2 * need[0], abs=0.1)
    assert train.memory_problem(config, 8, sharding.make_mesh(), free=lambda device: 2**30) is None


def test_an_error_from_a_library_says_where_it_came_from():
    import json as json_module

    from streetseg_jax import main, sharding

    def read_config_json():        # as if a file of ours were read by a library that refuses it
        return json_module.loads("{broken")

    with pytest.raises(ValueError) as library:
        read_config_json()
    assert re.fullmatch(r"Expecting property name .* \(JSONDecodeError in json/decoder\.py:\d+\)",
                        main._message(library.value))
    with pytest.raises(ValueError) as ours:        # our own messages are said as they are
        sharding._check_address("no-port")
    assert main._message(ours.value) == str(ours.value)
    with pytest.raises(ValueError, match="expected HOST:PORT"):      # every process checks it: JAX's IndexError
        sharding.initialize_distributed("127.0.0.1", num_processes=2, process_id=1)
    # A path the disk refused (a read-only --config.data_dir, a run on a read-only disk resumed): where it was
    # refused is no help, "[Errno 30]" none either.
    with pytest.raises(OSError) as refused:
        Path("/proc/streetseg_no_such_dir/.lock").write_text("")      # ENOENT: not a refusal
    assert "(FileNotFoundError in " in main._message(refused.value)
    refused.value.errno, refused.value.strerror = errno.EROFS, os.strerror(errno.EROFS)
    assert main._message(refused.value) == "/proc/streetseg_no_such_dir/.lock: Read-only file system"


@pytest.mark.parametrize("name, said", [("exp[1]", "has [ ] in its path, which the checkpoint writer (orbax) reads "
                                                  "as a pattern"),
                                        ("what?", "has ? in its path"), ("a*", "has * in its path"),
                                        ("file/run", "lies under {tmp}/file, which is a file, not a folder")])
def test_a_workdir_whose_checkpoints_could_not_be_written_is_refused(name, said, tmp_path):
    """In runs/exp[1] every checkpoint lacked its weights (orbax globs the path), and the run said it was done."""
    from streetseg_jax.run import RunError, _check_workdir

    (tmp_path / "file").write_text("")
    with pytest.raises(RunError, match=re.escape(said.format(tmp=tmp_path))):
        _check_workdir(tmp_path / name)


def test_a_run_whose_checkpoints_folder_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch):
    """A read-only checkpoints/ (a mount) was found at the first save: the steps trained up to it were lost."""
    import errno
    import tempfile

    from streetseg_jax.run import RunError, _check_workdir

    latest = tmp_path / "run" / "checkpoints" / "latest"
    latest.mkdir(parents=True)
    mkstemp = tempfile.mkstemp

    def read_only_latest(*args, dir=None, **kwargs):
        if Path(dir) == latest:
            raise OSError(errno.EROFS, "Read-only file system")
        return mkstemp(*args, dir=dir, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", read_only_latest)
    with pytest.raises(RunError, match=f"^{re.escape(str(latest))} cannot be written \\(Read-only file system\\): "
                                       "the run saves its checkpoints and log there"):
        _check_workdir(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == ["checkpoints", "latest"]     # probes gone


def test_a_run_that_cannot_start_builds_no_dataset_first(tmp_path):
    (tmp_path / "model.zip").write_bytes(b"PK")      # --workdir names a file: refused before the scenes are drawn
    code, out = run_main_to_end(tmp_path / "model.zip", tmp_path / "tfds", "--config.dataset=street_seg/synthetic")
    assert code == 2 and "is a file, not a folder" in out and "building it first" not in out, out
    photos = tmp_path / "photos"              # --workdir photos, typed for --input: a run went in among them
    for name in ("a.jpg", "b.png", "c.JPG", "d.webp"):
        (photos / name).parent.mkdir(exist_ok=True)
        (photos / name).write_bytes(b"")
    code, out = run_main_to_end(photos, tmp_path / "tfds", "--config.dataset=street_seg/synthetic")
    assert code == 2 and f"error: --workdir {photos} holds 4 image(s) (a.jpg, b.png, c.JPG, ...) and no training " \
        "run; give a new or empty folder" in out, out
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg", "b.png", "c.JPG", "d.webp"]
    code, out = run_main_to_end(tmp_path / "w", tmp_path / "tfds", "--config.dataset=street_seg/synthetic",
                                "--config.loss=focal")
    assert code == 2 and "loss must be one of" in out and "building it first" not in out, out
    assert not (tmp_path / "tfds").exists() and not (tmp_path / "w").exists()


def test_sigterm_while_the_dataset_is_built_stops_cleanly(tmp_path):
    """A spot preemption before training (the default dataset's first build) killed the process on the spot: no
    message, and the build's scratch folders stayed behind."""
    proc = run_main(tmp_path / "w", tmp_path / "tfds", "--config.dataset=street_seg/synthetic")
    for line in proc.stdout:
        if "building it first" in line:
            break
    time.sleep(2)                                   # into the scenes' drawing
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "stopped by SIGTERM; what was saved stays" in out and "Traceback" not in out, out
    downloads = tmp_path / "tfds" / "downloads"
    assert not (downloads.exists() and any(downloads.iterdir())), list(downloads.iterdir())


def test_values_a_run_cannot_use_are_refused_before_anything_is_written(tiny_data_dir, tmp_path):
    code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, "--config.log_every_steps=0",
                                "--config.keep_checkpoints=0", "--config.num_train_steps=-5",
                                "--config.augment.crop_size=5", "--config.class_weights=inverse",
                                "--config.learning_rate=-1", "--config.eval_scale=0", "--config.loss=focal",
                                "--config.model.upsample=bilinear", "--config.augment.scale_range=(1.25,0.8)",
                                "--config.momentum=1.5", "--config.seed=-1", "--config.augment.base_scale=0",
                                "--config.augment.brightness=-1", "--config.augment.hue=2",
                                "--config.eval_extra_scales=(50,)")
    assert code == 2 and "Traceback" not in out, out
    for message in ("log_every_steps must be at least 1, got 0", "keep_checkpoints must be at least 1, got 0",
                    "num_train_steps must be at least 1, got -5", "augment.crop_size must be two positive whole numbers",
                    "class_weights must be 'none' or 'median_frequency', got 'inverse'",
                    "learning_rate must be > 0, got -1", "eval_scale must be > 0, got 0",
                    "loss must be one of cross_entropy, cross_entropy+dice, cross_entropy+lovasz, got 'focal'",
                    "model.upsample must be one of transpose, ", "momentum must be in [0, 1), got 1.5",
                    "augment.scale_range must be (low, high), got (1.25, 0.8)", "seed must be >= 0, got -1",
                    "augment.base_scale must be > 0, got 0", "augment.brightness must be in [0, 1] (0: off), got -1",
                    "augment.hue must be in [0, 0.5] (0: off), got 2",
                    "eval_extra_scales must be a tuple of numbers in (0, 8]"):
        assert message in out, out
    assert not (tmp_path / "w").exists()
    code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, "--config.dataset=street_seg/synthetic/num_images=40")
    assert code == 2 and "a run names a dataset without the options it was built with (num_images=...)" in out, out


def test_a_folder_that_is_not_a_run_keeps_its_config_json(tiny_data_dir, tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.json").write_text('{"mine": true}')
    code, out = run_main_to_end(tmp_path / "project", tiny_data_dir)
    assert code == 2 and "holds a config.json that no training run wrote" in out, out
    assert (tmp_path / "project" / "config.json").read_text() == '{"mine": true}'


def test_a_warm_start_records_its_source_absolute_and_the_workdir_is_printed_without_dots(finished_run,
                                                                                         tiny_data_dir, tmp_path):
    """config.json kept init_from as given (../runs/c2), so `--config runs/c3/config.json` from another folder failed
    ("not a training work directory"); and paths were printed as /tmp/x/repo/../runs/a/checkpoints."""
    source = os.path.relpath(finished_run[0], ROOT)             # relative to where the run starts (ROOT)
    workdir = tmp_path / "other" / ".." / "warm"
    code, out = run_main_to_end(workdir, tiny_data_dir, f"--config.init_from={source}", "--config.num_train_steps=1")
    assert code == 0, out
    config = json.loads((tmp_path / "warm" / "config.json").read_text())
    assert config["init_from"] == str(finished_run[0]) and "/../" not in out, out
    assert f"done: {tmp_path / 'warm'} (metrics.jsonl" in out, out
    start, = [r for r in read_metrics(tmp_path / "warm" / "metrics.jsonl") if r.get("run/start")]    # for report
    assert start["run/init_from"] == {"from": str(finished_run[0]), "checkpoint": "best",
                                      "head": "the classifier head is loaded whole (the same classes)"}


def test_a_mistyped_init_from_creates_nothing_there(tiny_data_dir, tmp_path):
    code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, f"--config.init_from={tmp_path / 'typo'}")
    assert code == 2 and "not a training work directory" in out and "Traceback" not in out, out
    assert not (tmp_path / "typo").exists() and not (tmp_path / "w").exists()


def test_init_from_a_model_of_other_layers_is_refused_before_anything_is_written(finished_run, tiny_data_dir,
                                                                                tmp_path):
    source, _ = finished_run
    code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, f"--config.init_from={source}",
                                "--config.model.base_width=8")       # it trained a 4 wide: it would load nothing
    assert code == 2 and f"init_from {source}: its model has other layers (base_width 4 there, 8 here)" in out, out
    assert not (tmp_path / "w").exists()


def test_a_second_run_in_the_same_workdir_is_refused(tiny_data_dir, tmp_path):
    from streetseg_jax import run

    said = []
    log = type("Log", (), {"say": lambda self, message: said.append(message)})()
    held = run._lock(tmp_path / "w", log)      # as a run training there holds it
    try:
        with pytest.raises(run.RunError, match=f"another run is training in .* \\(process {os.getpid()} on "):
            run._lock(tmp_path / "w", log)
        code, out = run_main_to_end(tmp_path / "w", tiny_data_dir)
        assert code == 2 and "another run is training in" in out and "Traceback" not in out, out
        assert not (tmp_path / "w" / "metrics.jsonl").exists()
    finally:
        held.close()
    run._lock(tmp_path / "w", log).close()     # free again once that run has ended
    assert said == []


def test_a_file_system_that_cannot_lock_warns_and_trains_on(tmp_path, monkeypatch):
    import errno
    import fcntl
    from streetseg_jax import run

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    said = []
    log = type("Log", (), {"say": lambda self, message: said.append(message)})()
    assert run._lock(tmp_path / "w", log) is None
    assert said == [f"warning: cannot lock {tmp_path / 'w' / '.lock'} ([Errno {errno.ENOLCK}] No locks available): "
                    "nothing stops a second run in this work directory"]


def test_missing_dataset_names_the_build_command(tmp_path):
    code, out = run_main_to_end(tmp_path / "w", tmp_path / "empty", "--config.dataset=street_seg/voc_polygons")
    assert code == 2, out
    assert "python -m streetseg_jax.data build" in out and "Traceback" not in out


@pytest.mark.parametrize("override, message", [
    ("--config.eval_split=validation", "has no split 'validation'; it has: train, test (set --config.eval_split)"),
    ("--config.eval_batch_size=3", "eval_batch_size 3 must divide by the number of devices (2)"),
])
def test_bad_settings_name_the_key_to_change(tiny_data_dir, tmp_path, override, message):
    code, out = run_main_to_end(tmp_path / "w", tiny_data_dir, override, "--cpu_devices=2")
    assert code == 2 and message in out and "Traceback" not in out, out


def test_a_workdir_that_is_a_file_is_an_error_not_a_traceback(tiny_data_dir, tmp_path):
    (tmp_path / "w").write_text("not a folder")
    code, out = run_main_to_end(tmp_path / "w", tiny_data_dir)
    assert code == 2 and out.startswith("error:") and "Traceback" not in out, out


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_data_dir, tmp_path):
    workdir = tmp_path / "nan"
    code, out = run_main_to_end(workdir, tiny_data_dir, "--config.learning_rate=1e30", "--config.grad_clip_norm=0",
                                "--config.warmup_steps=0", "--config.checkpoint_every_steps=1")
    assert code == 2, out
    assert "loss became" in out and "at step" in out and "Traceback" not in out
    bad_step = int(re.search(r"loss became \S+ at step (\d+)", out).group(1))
    latest = ocp.CheckpointManager(workdir / "checkpoints" / "latest").latest_step()
    assert latest == bad_step - 1
    assert f"The last good checkpoint is kept (step {latest})." in out, out
    state = final_state(workdir)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))
    code, out = run_main_to_end(tmp_path / "nan2", tiny_data_dir, "--config.learning_rate=1e30",
                                "--config.grad_clip_norm=0", "--config.warmup_steps=0")
    assert code == 2 and out.splitlines()[-1].endswith("; stopped. No checkpoint was saved before it."), out


def flat(tree) -> dict:
    """Leaves by path ("decode/0/conv1/kernel"): saved trees have string keys where the model has integers."""
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("classes", ["five others", "the same in another order", "the same in other colours",
                                     "one added"])
def test_warm_start_with_other_classes_carries_the_head_by_name(finished_run, classes):
    """After one class was added to the label map, the whole head was re-initialised although the others kept their
    names (a labeller's car IoU fell 0.727 -> 0.225); a class of the source keeps its output channel, by name."""

    from streetseg_jax import sharding, train
    from streetseg_jax.labels.label_map import ClassInfo, LabelMap, default_label_map
    from streetseg_jax.warm_start import warm_start

    workdir, _ = finished_run
    source = default_label_map()      # the tiny run's
    names = {"five others": [f"class_{i}" for i in range(5)],
             "the same in another order": [source.names[1], source.names[0], *source.names[2:]],
             "the same in other colours": source.names,
             "one added": [*source.names, "car"]}[classes]
    label_map = LabelMap(tuple(ClassInfo(i, name, (i, i, i)) for i, name in enumerate(names)),
                         ignore_id=source.ignore_id)
    config = tiny_config()
    config.model.dropout = 0.1      # the source had none: its random-number state is this run's own (not refused)
    mesh = sharding.make_mesh(jax.devices()[:1])
    _, fresh = train.init_state(config, len(names), train.make_optimizer(config), mesh)
    said = []
    state = warm_start(fresh, str(workdir), label_map, said.append)
    saved = final_state(workdir, which="best")["params"]  # init_from takes the best checkpoint
    flat_new, flat_fresh, flat_saved = flat(state.params), flat(fresh.params), flat(saved)
    for path in flat_new:
        if not path.startswith("head/"):
            np.testing.assert_array_equal(flat_new[path], flat_saved[path])
    for key in ("kernel", "bias"):
        new, old, own = flat_new[f"head/{key}"], flat_saved[f"head/{key}"], flat_fresh[f"head/{key}"]
        for index, name in enumerate(names):
            expected = old[..., source.names.index(name)] if name in source.names else own[..., index]
            np.testing.assert_array_equal(new[..., index], expected)
    note = {"five others": "no class is in both, so the classifier head is re-initialised",
            "the same in another order": "keeps its outputs for 'tree' (id 1 there, 0 here), 'background' (id 0 "
                                         "there, 1 here), 'landscaping'",
            "the same in other colours": None,
            "one added": "keeps its outputs for 'background', 'tree', 'landscaping', 'road', 'sidewalk', 'building', "
                         "'sky', 'concrete' (matched by name) and starts those for 'car' afresh"}[classes]
    assert (any(note in s for s in said) if note else not any("classifier head" in s for s in said)), said
    assert len(flat_new) > 10


def test_a_warm_start_that_would_keep_more_than_the_head_fresh_is_refused():
    from streetseg_jax.warm_start import _check_only_the_head_differs

    _check_only_the_head_differs(["head/kernel", "head/bias"], 40, "runs/a", {})      # another label map: fine
    with pytest.raises(ValueError, match=r"1 of 42 arrays have other shapes or are missing: down/0/conv1/kernel"):
        _check_only_the_head_differs(["head/kernel", "down/0/conv1/kernel"], 40, "runs/a", {"base_width": 4})


def test_warm_start_takes_the_sources_ema_weights_and_restarts_its_own(tiny_data_dir, tmp_path):
    from streetseg_jax import sharding, train
    from streetseg_jax.labels.label_map import default_label_map
    from streetseg_jax.warm_start import warm_start

    source = tmp_path / "ema_source"
    code, out = run_main_to_end(source, tiny_data_dir, "--config.ema_decay=0.5")
    assert code == 0, out
    config = tiny_config()
    config.ema_decay = 0.9
    mesh = sharding.make_mesh(jax.devices()[:1])
    _, fresh = train.init_state(config, 8, train.make_optimizer(config), mesh)
    state = warm_start(fresh, str(source), default_label_map(), lambda _: None)
    saved = final_state(source, which="best")
    saved_ema, saved_params = flat(saved["opt_state"][-1]["ema"]), flat(saved["params"])
    assert any(not np.array_equal(saved_ema[p], saved_params[p]) for p in saved_params)
    got, own_ema = flat(state.params), flat(state.opt_state[-1].ema)
    assert set(got) == set(saved_ema) == set(own_ema)
    for path, value in saved_ema.items():
        np.testing.assert_array_equal(got[path], value)
        np.testing.assert_array_equal(own_ema[path], value)


# --- the train step on small arrays ---------------------------------------------------------------------------------
def tiny_batch(seed=0, batch=4, height=32, width=48, classes=8):
    rng = np.random.default_rng(seed)
    label = np.zeros((batch, height, width), np.int32)
    label[:, height // 2:] = 3
    label[:, :, : width // 3] = 5
    label[0, :2] = 255
    image = (np.stack([label * 30 % 255] * 3, -1) + rng.integers(0, 20, label.shape + (3,))).astype(np.uint8)
    return {"image": image, "label": label}


@pytest.mark.parametrize("loss", ["cross_entropy", "cross_entropy+lovasz"])
def test_train_step_learns_and_ignores_the_ignore_id(loss):
    from streetseg_jax import sharding, train

    config = tiny_config()
    mesh = sharding.make_mesh(jax.devices()[:1])
    tx = train.make_optimizer(config)
    graphdef, state = train.init_state(config, 8, tx, mesh)
    step = train.make_train_step(graphdef, tx, np.ones(8, np.float32), 255, mesh, loss)
    batch = sharding.global_batch(tiny_batch(), mesh)
    losses = []
    for _ in range(6):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    conf = np.asarray(metrics["confusion"])
    assert conf.sum() == (np.asarray(batch["label"]) != 255).sum()
    assert int(state.step) == 6


def test_cross_entropy_weights_and_ignore():
    from streetseg_jax.losses import cross_entropy_sums

    logits = jnp.array([[[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]])
    labels = jnp.array([[1, 0, 255]])
    total, weight = cross_entropy_sums(logits, labels, jnp.array([2.0, 1.0]), 255)
    ce = lambda z, y: float(jax.nn.logsumexp(z) - z[y])
    assert weight == pytest.approx(3.0)
    assert total == pytest.approx(1 * ce(logits[0, 0], 1) + 2 * ce(logits[0, 1], 0), rel=1e-6)


def test_sgd_uses_momentum_and_weight_decay_as_l2():
    from streetseg_jax import train

    config = tiny_config()
    config.optimizer, config.momentum, config.weight_decay, config.grad_clip_norm = "sgd", 0.5, 0.1, 0.0
    tx, rate = train.make_optimizer(config), train.make_schedule(config)
    params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, 0.25])}
    state, trace, expected = tx.init(params), np.zeros(2), np.array([1.0, -2.0])
    for step in range(3):
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        trace = 0.5 * trace + (np.array([0.5, 0.25]) + 0.1 * expected)
        expected = expected - float(rate(step)) * trace
        np.testing.assert_allclose(np.asarray(params["w"]), expected, rtol=1e-6)
    assert float(rate(1)) > 0                  # the warm-up's first rate is 0: the steps after it moved


def test_ema_follows_the_parameters_and_is_what_evaluation_uses():
    from streetseg_jax import sharding, train

    config = tiny_config()
    config.ema_decay = 0.5
    mesh = sharding.make_mesh(jax.devices()[:1])
    tx = train.make_optimizer(config)
    graphdef, state = train.init_state(config, 8, tx, mesh)
    step = train.make_train_step(graphdef, tx, np.ones(8, np.float32), 255, mesh)
    batch = sharding.global_batch(tiny_batch(), mesh)
    expected = jax.tree.map(np.asarray, state.params)
    for t in range(1, 5):
        state, _ = step(state, batch)
        rate = 1 - min(0.5, t / (t + 9))      # the decay ramps up: 0.1, 0.18, 0.25, 0.31, then 0.5
        expected = jax.tree.map(lambda e, p: (1 - rate) * e + rate * np.asarray(p), expected, state.params)
    ema = train.eval_params(state, config)
    jax.tree.map(lambda e, a: np.testing.assert_allclose(np.asarray(a), e, rtol=1e-5, atol=1e-6), expected, ema)
    assert not np.allclose(np.asarray(ema["head"]["kernel"]), np.asarray(state.params["head"]["kernel"]))
    config.ema_decay = 0.0
    assert train.eval_params(state, config) is state.params


def test_settings_a_run_takes_otherwise_or_not_at_all_are_said():
    """A warm-up longer than half the run was cut to half, adam's weight decay and the class weights' power without
    class weights did nothing: all without a word."""
    from streetseg_jax.run import settings_notes

    config = tiny_config()
    assert settings_notes(config) == []
    config.num_train_steps, config.warmup_steps, config.optimizer, config.class_weight_power = 20, 100, "adam", 0.5
    assert settings_notes(config) == [
        "note: warmup_steps 100 is more than half of the run's 20 steps: the warm-up takes 10, so that the learning "
        "rate still comes down",
        f"note: weight_decay {config.weight_decay:g} is not used by optimizer 'adam' (adamw decays the weights)",
        "note: class_weight_power is not used without class_weights=median_frequency"]
    config = tiny_config()
    config.optimizer, config.momentum, config.augment.base_scale = "adamw", 0.5, 2 * config.eval_scale
    low, high = (2 * config.eval_scale * f for f in config.augment.scale_range)
    assert settings_notes(config) == [
        "note: momentum is used by optimizer 'sgd' only, not by 'adamw'",
        f"note: eval_scale {config.eval_scale:g} lies outside the scales the network trains at ({low:g} to {high:g}: "
        "augment.base_scale x scale_range), so evaluation and prediction show it objects at sizes it did not learn; "
        "change them together"]


def test_class_weight_power_softens_the_median_frequency_weights():
    from streetseg_jax import run
    from streetseg_jax.labels.label_map import default_label_map

    label_map = default_label_map()
    rng = np.random.default_rng(0)
    # class 0 common, class 1 rare, the rest in between; 255 (ignore) counts nowhere
    masks = [rng.choice([0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 255], size=(16, 20, 1)).astype(np.uint8) for _ in range(3)]
    source = [{"segmentation_mask": m} for m in masks]
    said = []
    log = type("Log", (), {"say": lambda self, message: said.append(message)})()
    config = tiny_config()
    config.class_weights = "median_frequency"
    full = run.class_weights(config, source, label_map, log)
    config.class_weight_power = 0.5
    soft = run.class_weights(config, source, label_map, log)
    assert full[0] < 1 < full.max() and soft.dtype == np.float32
    np.testing.assert_allclose(soft, np.sqrt(full), rtol=1e-6)
    assert "to the power 0.5" in said[-1] and "power" not in said[0]
    assert not any(line.startswith("warning") for line in said)
    source[0]["segmentation_mask"] = np.where(masks[0] == 7, 0, masks[0])
    source[1:] = []                                 # no pixel of concrete left: said, and weighted 0
    assert run.class_weights(config, source, label_map, log)[7] == 0
    assert said[-1] == "warning: no training image has a pixel of 'concrete': the model cannot learn them"
    config.class_weight_power = -1.0
    with pytest.raises(run.RunError, match="class_weight_power must be >= 0, got -1.0"):
        run.check_config(config)


def test_keys_no_run_reads_and_values_of_the_wrong_kind_are_refused_before_the_run():
    """A misspelt key in a config file did nothing (compare then listed it as what differed); None for a count
    was a TypeError traceback, for num_overlays only once the run had trained; a negative input_threads was grain's
    error once the work directory was written; a scale twice ran the network twice and weighted it double."""
    from streetseg_jax import run

    config = tiny_config()
    config.learning_rat = 0.1
    config.model.widht = 64
    config.crop_size = (8, 8)
    config.comment = "a note of one's own"      # like no key: not 'momentum'
    config.eval_every_steps = None
    config.num_overlays = None
    config.input_threads = -1
    config.augment.flip = None
    config.eval_extra_scales = (config.eval_scale, 0.5)
    with pytest.raises(run.RunError) as refused:
        run.check_config(config)
    for line in ("learning_rat is no key a run reads: did you mean learning_rate?",
                 "model.widht is no key a run reads: did you mean model.base_width?",
                 "crop_size is no key a run reads: did you mean augment.crop_size?",
                 "comment is no key a run reads: remove it (configs/default.py has every key)",
                 "eval_every_steps must be at least 0, got None", "num_overlays must be at least 0, got None",
                 "input_threads must be at least 0, got -1", "augment.flip must be true or false, got None",
                 "eval_extra_scales must be a tuple of numbers in (0, 8], none twice nor eval_scale"):
        assert line in str(refused.value), str(refused.value)
    run.check_config(tiny_config())


def test_the_eta_takes_evaluations_to_last_as_the_latest_did_without_compiling(tmp_path, monkeypatch, capsys):
    """A start's first evaluation compiled for 28 of its 29 s, and the ETA it gave was 3x the time left."""
    from streetseg_jax import runlog

    before = runlog.compile_seconds()
    jax.jit(lambda x: x * 3 + 1)(jnp.arange(7.0)).block_until_ready()      # a function never compiled before
    assert runlog.compile_seconds() > before
    now = [0.0]
    monkeypatch.setattr(runlog.time, "time", lambda: now[0])
    log = runlog.RunLog(tmp_path, num_steps=100, batch_size=8, eval_every=10)
    log.start(0, 100)
    now[0] = 91.0
    log.first_step_done(1)
    now[0] = 130.0
    log.evaluated(30.0, compiling=25.0)
    log.write(10, {"eval/miou": 0.5})
    # a second a step (39 s from step 1 to 10, 30 of them evaluating), 90 steps and 9 evaluations of 5 s left
    assert capsys.readouterr().out.splitlines()[-1].endswith("ETA 0:02:15")


def test_the_eta_counts_steps_and_evaluations_apart_and_leaves_out_the_compilation(tmp_path, monkeypatch, capsys):
    from streetseg_jax import runlog

    now = [0.0]
    monkeypatch.setattr(runlog.time, "time", lambda: now[0])
    log = runlog.RunLog(tmp_path, num_steps=100, batch_size=8, eval_every=10)
    log.start(0, 100)
    now[0] = 91.0
    log.first_step_done(1)          # 91 s for step 1: compiling it
    train, evaluation = {"train/loss": 1.0}, {"eval/miou": 0.5}
    for seconds, step, row, evaluated in ((100.0, 10, train, 0), (105.0, 10, evaluation, 5.0),
                                          (115.0, 20, train, 0), (121.0, 20, evaluation, 6.0)):
        now[0] = seconds
        if evaluated:
            log.evaluated(evaluated)
        log.write(step, row)
    lines = capsys.readouterr().out.splitlines()[1:]
    # A second a step from step 1 on (16:40 from the start); 90 steps left, then with 9 evaluations of 5 s;
    # 80 steps and 9 evaluations of 5 s (step 20's is still to come), then 8 of 6 s (an evaluation line no longer
    # counts as slow steps).
    assert [line.split("ETA ")[1] for line in lines] == ["0:01:30", "0:02:15", "0:02:05", "0:02:08"]
    assert [runlog.RunLog(tmp_path, 95, 8, every)._evals_after(step) for every, step in
            ((10, 0), (10, 90), (10, 95), (0, 50), (5, 95), (5, 94))] == [10, 1, 0, 1, 0, 1]
    # A resume logged at its first step (preempted at step 79): that step compiled, so no ETA from it (26 minutes
    # were shown, then 30 s).
    resumed = runlog.RunLog(tmp_path, num_steps=400, batch_size=8, eval_every=100)
    resumed.start(79, 400)
    now[0] += 40.0
    resumed.first_step_done(80)
    resumed.write(80, train)
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        "ETA from the next line (the steps so far include compiling)")
    resumed.start(399, 400)              # the last step, then its evaluation: no next line to promise
    resumed.first_step_done(400)
    resumed.write(400, train)
    resumed.write(400, evaluation)
    assert [line.split("  ETA ")[1] for line in capsys.readouterr().out.splitlines()[-2:]] == ["0:00:00"] * 2
    resumed.start(3, 400)               # a resume's evaluation of its step that a stop cut short: no step trained yet
    now[0] += 30.0
    resumed.write(3, evaluation)
    assert capsys.readouterr().out.splitlines()[-1].endswith("eval/miou 0.5  ETA once steps are trained")  # 13174 h


def test_images_per_second_leaves_out_the_first_step(monkeypatch):
    from streetseg_jax import train

    now = [0.0]
    monkeypatch.setattr(train.time, "time", lambda: now[0])
    step = {"loss": jnp.float32(1.0), "confusion": jnp.eye(2, dtype=jnp.int32)}
    window = train.TrainMetrics(0)
    window.add(step)
    now[0] = 30.0                   # step 1 compiled for 30 s
    window.exclude_so_far()
    for _ in range(4):
        window.add(step)
    now[0] = 32.0                   # then 4 steps of 8 images in 2 s
    assert window.summary(["a", "b"], batch_size=8)["train/images_per_second"] == 16.0
    only_first = train.TrainMetrics(0)  # a window of the compiling step alone (a resume logged at once): no speed
    only_first.add(step)
    now[0] = 62.0
    only_first.exclude_so_far()
    assert "train/images_per_second" not in only_first.summary(["a", "b"], batch_size=8)


@pytest.mark.parametrize("schedule", ["cosine", "polynomial"])
def test_a_run_shorter_than_its_warmup_still_decays(schedule):
    from streetseg_jax import train

    config = tiny_config()
    config.num_train_steps, config.warmup_steps, config.lr_schedule = 30, 50, schedule
    rate = train.make_schedule(config)
    peak, end = config.learning_rate, config.learning_rate * config.end_learning_rate_factor
    assert float(rate(0)) == 0 and float(rate(15)) == pytest.approx(peak)      # warm-up over half the run
    assert float(rate(30)) == pytest.approx(end, rel=1e-5)                        # and down to the end factor
    config.num_train_steps = 1950                                                 # a long run: the full warm-up
    assert float(train.make_schedule(config)(50)) == pytest.approx(peak)
    assert float(train.make_schedule(config)(25)) == pytest.approx(peak / 2)


def test_curves_that_cannot_be_drawn_are_a_warning_not_the_end_of_the_run(tmp_path, monkeypatch, capsys):
    """A failed curves.png write ended the run before that step's checkpoints were saved."""
    from streetseg_jax import run, runlog

    def full_disk(records, path, title):
        raise OSError(f"cannot write {path}: No space left on device")
    monkeypatch.setattr(run, "plot_curves", full_disk)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "time": 0.0, "train/loss": 1.0}) + "\n")
    setup = run.RunSetup(None, tmp_path, None, None, None, None, None, None, None, runlog.RunLog(tmp_path, 10, 8), {})
    assert [row["step"] for row in setup.draw_curves()] == [1]
    assert f"warning: cannot write {tmp_path / 'curves.png'}: No space left on device; training goes on" \
        in capsys.readouterr().out


def test_the_typical_training_image_is_the_one_of_median_area():
    from streetseg_jax.run import typical_size

    sizes = [(360, 480), (480, 360), (360, 480), (100, 100), (720, 960)]
    height, width = typical_size([{"image": np.zeros((h, w, 3), np.uint8)} for h, w in sizes])
    assert height * width == 360 * 480 and typical_size([]) is None


def test_a_split_with_nothing_labelled_is_refused_before_training(tmp_path):
    """An eval split whose masks are all the ignore id trained to the first evaluation, then failed there with a
    TypeError (no mIoU to compare with the best)."""
    from streetseg_jax.data.build import build
    from streetseg_jax.labels.label_map import default_label_map
    from streetseg_jax.run import RunError, _load

    export = tmp_path / "export"
    for split, value in (("train", 3), ("val", 255)):
        for kind in ("images", "masks"):
            (export / split / kind).mkdir(parents=True)
        for stem in ("a", "b"):
            Image.new("RGB", (32, 24), (90, 40, 10)).save(export / split / "images" / f"{stem}.png")
            Image.new("L", (32, 24), value).save(export / split / "masks" / f"{stem}.png")
    label_map = tmp_path / "labels.json"
    label_map.write_text(default_label_map().to_json())
    build("from_annotations", tmp_path / "tfds", export, name="unlabelled_val", format="masks",
          label_map=str(label_map), log=lambda line: None)
    code, out = run_main_to_end(tmp_path / "w", tmp_path / "tfds", "--config.dataset=street_seg/unlabelled_val",
                                "--config.eval_split=validation", "--config.batch_size=2",
                                "--config.eval_batch_size=2")
    assert code == 2 and out.splitlines()[-1] == (
        "error: the 'validation' split of street_seg/unlabelled_val has no labelled pixel: every pixel of its 2 "
        "mask(s) is the ignore id 255, so evaluation would score nothing. Label some, or choose another split "
        "(--config.eval_split)"), out
    assert not (tmp_path / "w" / "checkpoints").exists() and not (tmp_path / "w" / "config.json").exists()
    config = tiny_config()
    config.data_dir, config.dataset, config.train_split = str(tmp_path / "tfds"), "street_seg/unlabelled_val", \
        "validation"
    with pytest.raises(RunError, match=r"so training has nothing to learn from\. .*\(--config\.train_split\)$"):
        _load(config, "train_split")
    config.train_split = "train"
    assert len(_load(config, "train_split")[0]) == 2


def test_a_run_that_fails_to_start_in_a_notebook_leaves_the_work_directory_free(tiny_data_dir, tmp_path,
                                                                                monkeypatch):
    """config.json that could not be written (a full disk) left the lock held and the checkpoint managers open: the
    next try in the same Python process was refused as "another run is training"."""
    from streetseg_jax import checkpoint, run

    closed = []
    close = checkpoint.Checkpoints.close
    monkeypatch.setattr(checkpoint.Checkpoints, "close", lambda self: (closed.append(self), close(self)))

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    config = tiny_config()
    config.data_dir = str(tiny_data_dir)
    with monkeypatch.context() as patched:
        patched.setattr(run, "_write_json", full_disk)
        with pytest.raises(OSError, match="No space left"):
            run.prepare_run(config, tmp_path / "w")
    assert len(closed) == 1
    assert not (tmp_path / "w").exists()    # a fresh start refused late left .lock and empty checkpoint folders
    lock = tmp_path / ".lock"               # a start that opened the .lock a refused start then removed locks anew
    lock.touch()
    with open(lock, "a+") as opened:
        assert run._still_at(opened, lock)
        lock.unlink()
        assert not run._still_at(opened, lock)
        lock.touch()
        assert not run._still_at(opened, lock)
    setup = run.prepare_run(config, tmp_path / "w")
    assert (tmp_path / "w" / "config.json").exists()
    setup.release()
    assert len(closed) == 2 and setup.checkpoints is None and setup.lock is None
    run.prepare_run(config, tmp_path / "w").release()


def test_a_damaged_config_json_is_said_and_removing_it_resumes(finished_run, tiny_data_dir, tmp_path):
    """A run's config.json cut short was refused as one "that no training run wrote"."""
    source, _ = finished_run
    workdir = shutil.copytree(source, tmp_path / "run")
    (workdir / "config.json").write_text((source / "config.json").read_text()[:50])
    code, out = run_main_to_end(workdir, tiny_data_dir, f"--config.num_train_steps={STEPS + 2}")
    assert code == 2 and out.splitlines()[-1].startswith(f"error: {workdir / 'config.json'} cannot be read ("), out
    assert out.splitlines()[-1].endswith("): remove it to resume from the checkpoints, which hold the config, or give "
                                         "another --workdir"), out
    (workdir / "config.json").unlink()
    code, out = run_main_to_end(workdir, tiny_data_dir, f"--config.num_train_steps={STEPS + 2}")
    assert code == 0 and f"resuming from step {STEPS}" in out, out
    assert json.loads((workdir / "config.json").read_text())["num_train_steps"] == STEPS + 2


def test_no_overlays_asked_for_makes_no_overlays_folder(tmp_path):
    """num_overlays=0 made an empty overlays/, which the closing line listed."""
    from streetseg_jax.evaluator import Evaluator

    Evaluator.write_overlays(None, None, None, [], tmp_path / "overlays", 0, "run x")
    assert not (tmp_path / "overlays").exists()


def test_curves_are_titled_with_their_run():
    """The run's name was replaced by the last panel's title ('mean IoU'): one name served both."""
    from streetseg_jax.visualize import curves_figure

    records = [{"step": 1, "time": 0.0, "train/loss": 1.0, "train/miou": 0.5}]
    figure = curves_figure(records, "run default")
    assert figure._suptitle.get_text() == "run default"
    assert [ax.get_title() for ax in figure.axes] == ["loss", "mean IoU"]
