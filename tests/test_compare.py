"""Comparing runs: the history a metrics.jsonl holds after kills and resumes, and `python -m streetseg_jax.compare`
on work directories written by the run's own logger (RunLog), checked against the numbers written into them."""
from __future__ import annotations

import base64
import io
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from streetseg_jax import compare
from test_report import needs_chromium, render
from streetseg_jax.runlog import RunLog
from streetseg_jax.visualize import read_metrics, run_history


def train(step: int, time: float, loss: float = 1.0) -> dict:
    return {"step": step, "time": time, "train/loss": loss}


def evaluation(step: int, time: float, miou: float) -> dict:
    return {"step": step, "time": time, "eval/miou": miou}


def start(step: int, time: float) -> dict:
    return {"step": step, "time": time, "run/start": True}


def test_history_after_a_kill_keeps_the_redone_steps_and_leaves_out_downtime_and_lost_steps():
    first = [start(0, 100), train(1, 110), train(2, 120), train(3, 130), train(4, 140, loss=9.0),
             evaluation(4, 145, 0.1)]
    # Killed after step 4; the last checkpoint was step 2. An hour later the run resumes there.
    second = [start(2, 3700), train(3, 3712, loss=0.5), train(4, 3722, loss=0.4)]
    rows = run_history(first + second)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["elapsed"] for r in rows] == [10, 20, 32, 42]      # 20 s to step 2, then the resumed segment's own
    assert rows[3]["train/loss"] == 0.4 and "eval/miou" not in rows[3]  # the lost step 4's eval is gone with it
    assert rows[2]["train/loss"] == 0.5


def test_history_of_a_stop_that_saved_keeps_every_step_and_leaves_out_the_pause():
    records = [start(0, 0), train(1, 10), evaluation(1, 12, 0.3), start(1, 5000), train(2, 5010)]
    rows = run_history(records)
    assert [(r["step"], r["elapsed"]) for r in rows] == [(1, 12), (2, 22)]
    assert rows[0]["eval/miou"] == 0.3 and rows[0]["train/loss"] == 1.0    # train and eval of a step merged


def test_history_counts_the_time_from_the_last_log_to_a_saved_stop():
    """A Ctrl-C at step 114, logged to 100, left ~33 s of kept training out of report's and compare's time: the
    stop's run/stop record counts it, and makes no row; a stop whose steps a resume from earlier redoes adds none."""
    stop = {"step": 3, "time": 45, "run/stop": True}
    rows = run_history([start(0, 0), train(2, 20), stop, start(3, 5000), train(4, 5010)])
    assert [(r["step"], r["elapsed"]) for r in rows] == [(2, 20), (4, 55)]
    rows = run_history([start(0, 0), train(2, 20), stop, start(2, 5000), train(4, 5010)])
    assert [(r["step"], r["elapsed"]) for r in rows] == [(2, 20), (4, 30)]


def test_history_of_an_older_log_without_start_records_sees_the_restart_where_steps_go_back():
    records = [train(1, 10), train(2, 20), train(3, 30), train(2, 900, loss=0.2), train(3, 910)]
    rows = run_history(records)
    # Where the redone step 2 began is not in the log: its record adds no time, the next one its own 10 s.
    assert [(r["step"], r["elapsed"]) for r in rows] == [(1, 0), (2, 0), (3, 10)]
    assert rows[1]["train/loss"] == 0.2


def test_an_output_the_disk_refuses_is_a_line_not_a_traceback(two_runs, tmp_path):
    """--output under a file, on a full disk or in a read-only folder printed a 27-33 line traceback."""
    (tmp_path / "afile").write_text("")
    out = subprocess.run([sys.executable, "-m", "streetseg_jax.compare", *map(str, two_runs), "--output",
                          str(tmp_path / "afile" / "c.html")], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 2
    assert out.stderr == f"error: {tmp_path / 'afile'}: File exists (a file where a folder is needed?)\n"


def test_a_line_a_killed_run_left_unfinished_is_skipped_and_ended_before_the_next_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(train(1, 1.0)) + "\n" + '{"step": 2, "time": 2.0, "train/lo')
    log = RunLog(tmp_path, num_steps=4, batch_size=2)
    log.start(1, 4)
    log.write(2, {"train/loss": 0.5})
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 1, 2]
    assert records[1]["run/start"] is True and records[2]["train/loss"] == 0.5


def test_metrics_are_read_from_a_work_directory_too(tmp_path):
    """read_metrics(workdir), the obvious call, raised IsADirectoryError."""
    (tmp_path / "metrics.jsonl").write_text(json.dumps(train(1, 1.0)) + "\n")
    assert read_metrics(tmp_path) == read_metrics(tmp_path / "metrics.jsonl") and len(read_metrics(tmp_path)) == 1
    assert read_metrics(tmp_path / "empty") == []


# -------------------------------------------------------------------------------------------------------------------
# The command
# -------------------------------------------------------------------------------------------------------------------
CLASSES = ("road", "sky")


def make_run(workdir: Path, evals: dict[int, dict[str, float]], rates: list[float], fingerprint: str = "f" * 64,
             **config) -> Path:
    """A work directory as a training run leaves it: config.json, and metrics.jsonl written by RunLog."""
    workdir.mkdir(parents=True)
    config = {"batch_size": 8, "learning_rate": 0.003, "model": {"base_width": 16, "depth": 4},
              "dataset": "street_seg/synthetic", "eval_split": "test", "num_train_steps": len(rates),
              "provenance": {"dataset": {"fingerprint": fingerprint}}} | config
    (workdir / "config.json").write_text(json.dumps(config))
    log = RunLog(workdir, num_steps=len(rates), batch_size=8)
    log.start(0, len(rates))
    for step, rate in enumerate(rates, 1):
        log.write(step, {"train/loss": 2.0 / step, "train/images_per_second": rate})
        if step in evals:
            ious = evals[step]
            log.write(step, {"eval/miou": sum(ious.values()) / len(ious),
                             **{f"eval/iou/{name}": iou for name, iou in ious.items()}})
    return workdir


@pytest.fixture
def two_runs(tmp_path):
    a = make_run(tmp_path / "runs" / "a" / "seed0", {2: {"road": 0.8, "sky": 0.6}, 4: {"road": 0.7, "sky": 0.5}},
                 rates=[10.0, 12.0, 11.0, 30.0])
    b = make_run(tmp_path / "runs" / "b" / "seed0", {2: {"road": 0.5, "sky": 0.5}, 4: {"road": 0.75, "sky": 0.95}},
                 rates=[5.0, 6.0, 7.0, 8.0], learning_rate=0.001, model={"base_width": 32, "depth": 4})
    return a, b


def run_compare(capsys, *argv) -> tuple[str, str]:
    capsys.readouterr()     # what RunLog printed
    compare.main([str(a) for a in argv])
    out = capsys.readouterr().out
    return out, Path(out.strip().splitlines()[-1].removeprefix("wrote ")).read_text()


def test_compare_prints_and_pages_the_runs_figures_and_only_the_config_keys_that_differ(two_runs, tmp_path, capsys):
    (two_runs[1] / "eval").mkdir()
    (two_runs[1] / "eval" / "test_flip_tta.json").write_text(json.dumps({"miou": 0.625, "step": 4}))
    (two_runs[1] / "eval" / "test.json").write_text('{"miou": 0.6')    # cut short: left out
    out, page = run_compare(capsys, *two_runs, "--output", tmp_path / "out" / "cmp.html")
    table = {line.split()[0]: line.split() for line in out.splitlines() if line}
    # Same trailing name (seed0): the runs are told apart by the folder above. Median rate, best eval and its step.
    assert table["a/seed0"][1:7] == ["4/4", table["a/seed0"][2], "11.5", "0.7000", "2", "0.6000"]
    assert table["b/seed0"][1:7] == ["4/4", table["b/seed0"][2], "6.5", "0.8500", "4", "0.8500"]
    assert table["learning_rate"][1:] == ["0.003", "0.001"] and table["model.base_width"][1:] == ["16", "32"]
    assert "batch_size" not in table and "model.depth" not in table and "warning" not in out
    assert table["test_flip_tta"][1:] == ["–", "0.6250", "(step", "4)"] and "test" not in table
    # The page: the best mIoU in bold, each class's IoU at each run's best evaluation with the row's best in bold.
    assert "<td><b>0.8500</b></td>" in page and "<td>0.7000</td>" in page
    assert re.search(r"<td>road</td><td><b>80.0</b></td><td>75.0</td>", page)
    assert re.search(r"<td>sky</td><td>60.0</td><td><b>95.0</b></td>", page)
    assert "<td>model.base_width</td><td>16</td><td>32</td>" in page and "<td>batch_size</td>" not in page
    assert "<td>test_flip_tta</td><td>–</td><td>0.6250 (step 4)</td>" in page
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    assert Image.open(io.BytesIO(png)).size[0] > 1000


def result(step: int, miou: float, checkpoint: str = "best", fingerprint: str = "f" * 64, flip: bool = True,
           split: str = "test") -> str:
    """An evaluate result as its eval/*.json holds it (the fields compare reads)."""
    return json.dumps({"split": split, "checkpoint": checkpoint, "step": step, "eval_scale": 0.5,
                       "eval_extra_scales": [0.375], "flip_tta": flip, "miou": miou,
                       "data": {"fingerprint": fingerprint, "trained_on": fingerprint == "f" * 64}})


def test_evaluate_results_share_a_row_where_they_scored_alike_and_never_across_data(two_runs, capsys, tmp_path):
    """The best checkpoint of one run (test_flip_tta_multiscale) and the latest of another, also its best
    (test_flip_tta_multiscale_step4), sat in two rows, each "-" for the other; a result on other data shared a row
    with results on the runs' own, the rows unsorted."""
    a, b = two_runs                                   # a's best evaluation is at step 2, b's at step 4
    # a's "test" of an earlier best, at step 1: no row of the best checkpoint, where it hid a's later result
    for run, files in ((a, {"test_flip_tta_multiscale": result(2, 0.61), "test_step4": result(4, 0.5, "4", flip=False),
                            "test": result(1, 0.41),
                            "test_flip_tta_multiscale_data-0123abcd": result(2, 0.3, fingerprint="0123abcd" * 8)}),
                       (b, {"test_flip_tta_multiscale_step4": result(4, 0.62, "latest"),
                            "validation": result(4, 0.7, split="validation", flip=False)})):
        (run / "eval").mkdir()
        for stem, text in files.items():
            (run / "eval" / f"{stem}.json").write_text(text)
    out, page = run_compare(capsys, a, b, "--output", tmp_path / "cmp.html")
    rows = [line.split("  ")[0] for line in out.split("evaluate result")[1].split("\n\n")[0].splitlines()[1:]]
    assert rows == ["test, scales 0.5+0.375, flip, best checkpoint, data 0123abcd",
                    "test, scales 0.5+0.375, flip, best checkpoint, data ffffffff",
                    "test, scales 0.5+0.375, flip, step 1, data ffffffff",
                    "test, scales 0.5+0.375, step 4, data ffffffff",
                    "validation, scales 0.5+0.375, best checkpoint, data ffffffff"], out
    assert ("<td>test, scales 0.5+0.375, flip, best checkpoint, data ffffffff</td><td>0.6100 (step 2)</td>"
            "<td>0.6200 (step 4)</td>") in page


def test_a_folder_of_runs_compares_every_run_in_it(two_runs, tmp_path, capsys):
    (tmp_path / "runs" / "a" / "notes").mkdir()       # not a work directory: left out
    started = tmp_path / "runs" / "a" / "started"      # started a moment ago: no step logged yet
    started.mkdir()
    (started / "metrics.jsonl").write_text(json.dumps({"step": 0, "time": 1.0, "run/start": True}) + "\n")
    crashed = tmp_path / "runs" / "a" / "crashed"      # stopped before its first log: config.json alone
    crashed.mkdir()
    (crashed / "config.json").write_text("{}")
    capsys.readouterr()
    compare.main([str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b"), "--output", str(tmp_path / "c.html")])
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()[1:3]] == ["a/seed0", "b/seed0"] and "started" not in out
    assert err == (f"left out {crashed}: no logged steps in metrics.jsonl yet\n"      # it was left out unsaid
                   f"left out {started}: no logged steps in metrics.jsonl yet\n")


def test_runs_of_one_recipe_with_other_seeds_are_summarised_together(tmp_path, capsys):
    a = make_run(tmp_path / "s0", {2: {"road": 0.6}}, rates=[1.0, 1.0], seed=0)
    b = make_run(tmp_path / "s1", {1: {"road": 0.9}, 2: {"road": 0.7}}, rates=[1.0, 1.0], seed=1, data_dir="/other")
    c = make_run(tmp_path / "lr", {2: {"road": 0.8}}, rates=[1.0, 1.0], seed=2, learning_rate=0.1)
    out, page = run_compare(capsys, a, b, c, "--output", tmp_path / "cmp.html")
    # final: 0.6 and 0.7 (mean 0.65, sample sd 0.0707); best: 0.6 and 0.9 (0.75, 0.2121); the other recipe alone.
    line = next(line for line in out.splitlines() if line.startswith("s0, s1"))
    assert line.split()[2:] == ["2", "0.6500", "±", "0.0707", "(0.6000..0.7000)", "0.7500", "±", "0.2121",
                                "(0.6000..0.9000)"]
    assert 'id="seeds"' in page and "<td>s0, s1</td><td>2</td>" in page and "lr," not in out
    # A third seed still training is counted but left out of the figures, which it would pull down.
    make_run(tmp_path / "s2", {1: {"road": 0.1}}, rates=[1.0], seed=2, num_train_steps=2)
    out, _ = run_compare(capsys, a, b, tmp_path / "s2", "--output", tmp_path / "cmp.html")
    line = next(line for line in out.splitlines() if line.startswith("s0, s1, s2"))
    assert line.split()[3:8] == ["3", "(2", "finished)", "0.6500", "±"]


def test_a_rerun_of_a_seed_is_named_and_left_out_of_the_seed_summary(tmp_path, capsys):
    """A same-seed rerun (a reproducibility check) once dropped the whole summary without a word."""
    a = make_run(tmp_path / "s0", {2: {"road": 0.6}}, rates=[1.0, 1.0], seed=0)
    b = make_run(tmp_path / "s1", {2: {"road": 0.7}}, rates=[1.0, 1.0], seed=1)
    again = make_run(tmp_path / "s0again", {2: {"road": 0.6}}, rates=[1.0, 1.0], seed=0)
    out, page = run_compare(capsys, a, b, again, "--output", tmp_path / "cmp.html")
    line = next(line for line in out.splitlines() if line.startswith("s0, s1"))
    assert "(left out, a seed again: s0again)" in line
    assert line.split("s0again)")[1].split()[:4] == ["2", "0.6500", "±", "0.0707"]
    assert 'id="seeds"' in page and "a seed again: s0again" in page
    unfinished = make_run(tmp_path / "s0first", {1: {"road": 0.1}}, rates=[1.0], seed=0, num_train_steps=2)
    out, _ = run_compare(capsys, unfinished, a, b, "--output", tmp_path / "cmp.html")     # a seed's finished run
    line = next(line for line in out.splitlines() if line.startswith("s0, s1"))          # counts, not the first
    assert "(left out, a seed again: s0first)" in line and line.split("s0first)")[1].split()[:2] == ["2", "0.6500"]


def test_runs_scored_on_other_data_are_flagged(tmp_path, capsys):
    a = make_run(tmp_path / "a", {1: {"road": 0.5}}, rates=[1.0])
    b = make_run(tmp_path / "b", {1: {"road": 0.6}}, rates=[1.0], fingerprint="0" * 64)
    out, page = run_compare(capsys, a, b, "--output", tmp_path / "cmp.html")
    assert "warning: these runs were evaluated on different data (provenance.dataset.fingerprint differs)" in out
    assert 'id="warning"' in page and "their mIoUs do not compare" in page
    assert "<b>" not in page.split('id="summary"')[1] and "none is marked best" in page     # 60.0 was bold
    assert 'id="evaluations"' not in page and "evaluate result" not in out     # neither run has eval/*.json
    assert 'id="seeds"' not in page     # same seed: not a seed group


def test_a_run_training_now_is_marked(two_runs, tmp_path, capsys, monkeypatch):
    """110/400 of a run still training read as a finished short run."""
    a, b = two_runs
    page = tmp_path / "compare.html"
    # a's trainer runs in a's parent folder with a relative --workdir; b's .lock names a live process of a's.
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "streetseg_jax.main",
                                "--workdir", a.name], cwd=a.parent)
    try:
        for run in (a, b):      # as run._take_lock writes it
            (run / ".lock").write_text(f"process {trainer.pid} on {platform.node()}, run 0123abcd\n")
        out, _ = run_compare(capsys, a, b, "--output", page)
        monkeypatch.chdir(a)
        assert compare.training_now(Path(".")) and not compare.training_now(Path("..") / ".." / "b" / "seed0")
        (a / ".lock").write_text(f"process {trainer.pid} on {platform.node()}\n")      # as runs wrote it before
        assert compare.training_now(Path("."))
    finally:
        trainer.kill()
        trainer.wait()
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("a/", "b/"))}
    assert "4/4 (training)" in rows["a/seed0"] and "(training)" not in rows["b/seed0"], out
    assert "(training)" not in run_compare(capsys, a, b, "--output", page)[0]          # the process has ended
    (b / "checkpoints" / "latest" / "6").mkdir(parents=True)     # a stop saved step 6, after the last log (4)
    (b / "checkpoints" / "latest" / "7.orbax-checkpoint-tmp-1").mkdir()     # a save cut short: not a step
    rows = {line.split()[0]: line for line in run_compare(capsys, a, b, "--output", page)[0].splitlines()
            if line.startswith(("a/", "b/"))}
    assert rows["b/seed0"].split()[1] == "6/4" and rows["a/seed0"].split()[1] == "4/4"


def test_a_run_that_has_not_evaluated_yet_still_compares(tmp_path, capsys):
    a = make_run(tmp_path / "a", {}, rates=[1.0, 3.0])
    b = make_run(tmp_path / "b", {1: {"road": 0.5}}, rates=[2.0])
    out, page = run_compare(capsys, a, b, "--output", tmp_path / "cmp.html")
    assert out.splitlines()[1].split()[1:] == ["2/2", out.splitlines()[1].split()[2], "2.0", "–", "–", "–"]
    assert "<td>road</td><td>–</td><td>50.0</td>" in page


def test_a_run_whose_config_json_is_damaged_compares_without_its_settings(tmp_path, capsys):
    a = make_run(tmp_path / "a", {1: {"road": 0.4}}, rates=[1.0], loss="cross_entropy")
    b = make_run(tmp_path / "b", {1: {"road": 0.5}}, rates=[2.0])
    (b / "config.json").write_text('{"seed": 1, "learn')
    capsys.readouterr()
    compare.main([str(a), str(b), "--output", str(tmp_path / "cmp.html")])
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()[1:3]] == ["a", "b"], out
    assert f"warning: cannot read {b / 'config.json'} (Unterminated string" in err, err
    # An unknown loss is no other objective: the loss panel still names a's (it said "objectives differ"), and
    # with every config gone the figure still draws.
    assert compare.curves_figure(compare.load_runs([a, b])).axes[2].get_title() == "train loss (cross_entropy)"
    (a / "config.json").unlink()
    assert compare.curves_figure(compare.load_runs([a, b])).axes[2].get_title() == "train loss"


def test_runs_of_other_class_weights_are_not_one_objective(tmp_path):
    """Runs differing only in class_weights shared one axis titled "train loss (cross_entropy+lovasz)"."""
    a = make_run(tmp_path / "a", {}, rates=[1.0], loss="cross_entropy+lovasz", class_weights="median_frequency")
    b = make_run(tmp_path / "b", {}, rates=[1.0], loss="cross_entropy+lovasz", class_weights="none")
    figure = compare.curves_figure(compare.load_runs([a, b]))
    assert figure.axes[2].get_title() == "train loss (objectives differ: not comparable)"
    assert [text.get_text() for text in figure.axes[3].get_legend().get_texts()] == [
        "a (class_weights median_frequency)", "b (class_weights none)"]
    c = make_run(tmp_path / "c", {}, rates=[1.0], loss="cross_entropy", class_weights="none")
    labels = [text.get_text() for text in
              compare.curves_figure(compare.load_runs([b, c])).axes[3].get_legend().get_texts()]
    assert labels == ["b (cross_entropy+lovasz)", "c (cross_entropy)"]


@pytest.mark.parametrize("case, message", [
    ("missing", "is not a directory"),
    ("empty", "empty: no logged steps in metrics.jsonl: not a training work directory"),
    ("twice", "is given twice"),
    ("output_folder", "is a folder"),
])
def test_refusals_name_the_problem(two_runs, tmp_path, capsys, case, message):
    a, b = two_runs
    (tmp_path / "empty").mkdir()
    argv = {"missing": [a, tmp_path / "nope"], "empty": [tmp_path / "empty"], "twice": [a, b, a / ".." / "seed0"],
            "output_folder": [a, b, "--output", tmp_path]}[case]
    with pytest.raises(SystemExit) as exit_info:
        compare.main([str(x) for x in argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@needs_chromium
def test_the_page_renders_in_chromium_with_its_figure_and_no_console_errors(two_runs, tmp_path, capsys):
    _, page = run_compare(capsys, *two_runs, "--output", tmp_path / "cmp.html")
    result = render(page, tmp_path / "render", height=1400)
    assert result["console"] == [] and result["images"] == 1 and result["broken"] == 0


# -------------------------------------------------------------------------------------------------------------------
# Resumes, settings and the figure
# -------------------------------------------------------------------------------------------------------------------
def resumed(workdir: Path, at: int, steps: int, changed: dict) -> Path:
    """The run in `workdir` resumed at step `at` with `changed` settings ({key: [then, now]}), trained to `steps`."""
    config = json.loads((workdir / "config.json").read_text())
    config.update({key: now for key, (_, now) in changed.items()})
    (workdir / "config.json").write_text(json.dumps(config))
    log = RunLog(workdir, num_steps=steps, batch_size=8)
    log.changed = changed
    log.start(at, steps)
    for step in range(at + 1, steps + 1):
        log.write(step, {"train/loss": 3.0 / step, "train/images_per_second": 9.0})
    log.write(steps, {"eval/miou": 0.9, "eval/iou/road": 0.9, "eval/iou/sky": 0.9})
    return workdir


def test_resumes_and_the_settings_they_changed_are_said_in_the_text_the_page_and_the_figure(two_runs, tmp_path,
                                                                                            capsys):
    """A run resumed with another loss was listed with its last loss alone, though most of its steps trained with
    the first, and compare's curves did not mark resumes."""
    a, b = two_runs
    resumed(b, 4, 6, {"loss": ["cross_entropy", "cross_entropy+lovasz"], "num_train_steps": [4, 6]})
    out, page = run_compare(capsys, a, b, "--output", tmp_path / "cmp.html")
    assert ("  b/seed0: started at step 0 with loss cross_entropy, num_train_steps 4; resumed at step 4, changing "
            "loss cross_entropy -> cross_entropy+lovasz, num_train_steps 4 -> 6") in out.splitlines()
    assert not any(line.startswith("  a/seed0:") for line in out.splitlines())     # a never resumed
    table = {line.split()[0]: line for line in out.splitlines() if line}
    assert table["loss"].split(None, 2)[2] == "cross_entropy, cross_entropy+lovasz from step 4"
    assert '<section id="resumes">' in page and "resumed at step 4, changing loss cross_entropy -&gt; " in page
    figure = compare.curves_figure(compare.load_runs([a, b]))
    by_step, _, loss, _ = figure.axes
    marks = [line for line in loss.get_lines() if list(line.get_xdata()) == [4, 4]]
    assert len(marks) == 1 and marks[0].get_color() == loss.get_lines()[1].get_color()    # b's colour, at step 4
    b_loss = list(loss.get_lines()[1].get_xdata())
    assert b_loss[:4] == [1, 2, 3, 4] and b_loss[5:] == [5, 6] and b_loss[4] != b_loss[4]  # not joined at the change
    assert all(tick == int(tick) for ax in (by_step, loss) for tick in ax.get_xticks())


def test_runs_with_one_history_stay_distinguishable_and_the_figure_fits_the_page(tmp_path):
    """Runs that logged the same numbers hid each other's lines; the figure was 2051 pixels wide for a page about
    1130 wide, its text 6 pixels tall on screen."""
    runs = [make_run(tmp_path / name, {2: {"road": 0.5, "sky": 0.5}}, rates=[1.0, 1.0]) for name in "abcd"]
    figure = compare.curves_figure(compare.load_runs(runs))
    lines = figure.axes[0].get_lines()
    assert len({(line.get_linestyle(), line.get_marker()) for line in lines}) == 4
    assert sorted((line.get_linewidth() for line in lines), reverse=True) == [line.get_linewidth() for line in lines]
    assert len(lines) == 4 and lines[0].get_linewidth() > lines[-1].get_linewidth()   # the first shows around the rest
    width = Image.open(io.BytesIO(compare.curves_png(compare.load_runs(runs)))).size[0]
    assert 900 <= width <= 1180


def test_provenance_metadata_is_no_config_key_that_differs_and_long_values_wrap(two_runs, tmp_path, capsys):
    """provenance.overrides (which keys the command line gave) was listed as a differing config key: one long list
    pushed the page's third column off the screen and made the printed table 300 characters wide."""
    a, b = two_runs
    for run, overrides in ((a, ["learning_rate"]), (b, ["learning_rate", "model.base_width", "num_train_steps"])):
        config = json.loads((run / "config.json").read_text())
        config["provenance"].update(overrides=overrides, git_commit=run.parent.name * 8)
        (run / "config.json").write_text(json.dumps(config))
    out, page = run_compare(capsys, a, b, "--output", tmp_path / "cmp.html")
    assert "overrides" not in out and "overrides" not in page
    assert "provenance that differs:" in out and "<h3>Provenance that differs</h3>" in page
    assert re.search(r"provenance.git_commit\s+aaaaaaaa\s+bbbbbbbb", out)
    assert "white-space:nowrap; }" not in compare.EXTRA_CSS.replace("td:first-child { white-space:nowrap; }", "")
