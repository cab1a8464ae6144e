"""`python -m streetseg_jax.evaluate` on a tiny trained run: the table, DIR/eval/<split>.json with the same numbers as
Evaluator.run, the confusion-matrix picture, --split and --checkpoint, and clear refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_main_to_end, tiny_config

# Trained on 48x64 crops, scored at the labels' 96x128 with the network at half of that: full-size frames must work
# whatever the training resolution was.
EVAL_SCALE = 0.5
KEYS = {"workdir", "dataset", "split", "checkpoint", "step", "num_images", "eval_scale", "eval_extra_scales", "flip_tta",
        "label_sizes", "miou", "pixel_accuracy", "mean_class_accuracy", "loss", "iou", "class_pixels", "confusion",
        "per_image", "data"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_data_dir) -> Path:
    workdir = tmp_path_factory.mktemp("evaluate") / "run"
    code, out = run_main_to_end(workdir, tiny_data_dir, f"--config.eval_scale={EVAL_SCALE}")
    assert code == 0, out
    return workdir


@pytest.fixture(scope="module")
def cli_result(workdir):
    """The command line run as a user runs it: default split (the config's eval_split) and checkpoint (best)."""
    cmd = [sys.executable, "-m", "streetseg_jax.evaluate", f"--workdir={workdir}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads((workdir / "eval" / "test.json").read_text())


def expected_scores(workdir: Path, split: str, checkpoint="best") -> tuple[dict, dict]:
    """Evaluator.run and Evaluator.sums of the checkpoint on the split, computed here."""
    from streetseg_jax.data.source import load_split
    from streetseg_jax.evaluate import load_run

    run = load_run(workdir, checkpoint)
    source, _, _ = load_split(run.config.dataset, split, run.config.data_dir)
    return (run.evaluator.run(run.params, run.model_state, source),
            run.evaluator.sums(run.params, run.model_state, source))


def test_json_holds_the_numbers_of_evaluator_run(workdir, cli_result):
    out, result = cli_result
    assert set(result) == KEYS
    assert result["split"] == "test" and result["checkpoint"] == "best" and result["eval_scale"] == EVAL_SCALE
    assert result["eval_extra_scales"] == []
    assert result["label_sizes"] == ["96x128"]
    scores, sums = expected_scores(workdir, "test")
    for key in ("miou", "pixel_accuracy", "mean_class_accuracy"):
        assert result[key] == pytest.approx(scores[f"eval/{key}"], abs=1e-12), key
    assert result["loss"] == pytest.approx(scores["eval/loss"], rel=1e-5)
    for name, iou in result["iou"].items():
        assert iou == pytest.approx(scores[f"eval/iou/{name}"], abs=1e-12), name
    np.testing.assert_array_equal(np.array(result["confusion"]), sums["confusion"])
    assert sum(result["class_pixels"].values()) == sums["pixels"]
    assert f"mIoU                  {result['miou']:.4f}" in out      # as training prints it (was a percent)
    assert "per-image mIoU" in out and "(96x128)" in out


def test_a_split_with_nothing_labelled_says_why_every_figure_is_missing(cli_result):
    from streetseg_jax.evaluate import format_result

    stdout, result = cli_result
    assert "nothing to score" not in stdout
    result = {**result, "class_pixels": dict.fromkeys(result["class_pixels"], 0), "miou": None}
    assert format_result(result).splitlines()[-1] == (
        f"nothing to score: no pixel of the {result['num_images']} image(s) is labelled (every one is the ignore id)")
    long = {**result, "iou": {"traffic_sign_back_side": 0.5, "road": 0.75}}    # its IoU went out of line
    rows = [line for line in format_result(long).splitlines() if line.startswith(("traffic", "road", "mIoU"))]
    assert len({len(row) for row in rows}) == 1 and rows[0].endswith(" 0.5000")


def test_per_image_figures_and_the_confusion_picture(workdir, cli_result):
    _, result = cli_result
    per_image = result["per_image"]
    images = per_image["images"]
    assert len(images) == result["num_images"] > 0
    mious = [row["miou"] for row in images]
    assert per_image["mean_miou"] == pytest.approx(np.mean(mious))
    assert per_image["min_miou"] == min(mious) and per_image["max_miou"] == max(mious)
    assert per_image["worst"][0]["miou"] == min(mious)
    assert images[per_image["worst"][0]["index"]]["file_name"] == per_image["worst"][0]["file_name"]
    png = (workdir / "eval" / "test_confusion.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 2000
    # a picture sent on its own says what it is of (it was the matrix alone)
    from streetseg_jax.evaluate import confusion_png, result_title
    assert result_title(result) == (f"run: street_seg/synthetic test, best checkpoint (step {result['step']})\n"
                                    f"mIoU {result['miou']:.4f}, network at scale {EVAL_SCALE:g}")
    assert png == confusion_png(np.array(result["confusion"]), list(result["iou"]), result_title(result))
    assert png != confusion_png(np.array(result["confusion"]), list(result["iou"]))


def test_split_and_checkpoint_flags(workdir, capsys):
    from streetseg_jax import evaluate

    steps = tiny_config().num_train_steps
    evaluate.main(["--workdir", str(workdir), "--split", "train", "--checkpoint", "latest"])
    result = json.loads((workdir / "eval" / f"train_step{steps}.json").read_text())
    assert (result["split"], result["checkpoint"], result["step"]) == ("train", "latest", steps)
    assert (workdir / "eval" / f"train_step{steps}_confusion.png").is_file()
    scores, _ = expected_scores(workdir, "train", "latest")
    assert result["miou"] == pytest.approx(scores["eval/miou"], abs=1e-12)
    evaluate.main(["--workdir", str(workdir), "--split", "test[:2]", "--checkpoint", "3"])
    result = json.loads((workdir / "eval" / "test_0-2_step3.json").read_text())
    assert (result["step"], result["num_images"]) == (3, 2)
    out = capsys.readouterr()
    assert "worst images:" in out.out and "scoring 2 image(s) of test[:2] with the checkpoint of step 3 ..." in out.err
    # Another checkpoint's figures no longer replace the best checkpoint's (compare showed step 3 as the run's test).
    evaluate.main(["--workdir", str(workdir), "--split", "test[:2]"])
    evaluate.main(["--workdir", str(workdir), "--split", "test[:2]", "--checkpoint", "3"])
    assert json.loads((workdir / "eval" / "test_0-2.json").read_text())["checkpoint"] == "best"


def test_a_split_names_its_files_plainly():
    """A slice's results were named test__5_.json: the brackets and colon each made an underscore."""
    from streetseg_jax.evaluate import split_file_name

    assert [split_file_name(s) for s in ("test", "test[:5]", "validation[50%:]", "train[10:20]+validation",
                                         "a/b")] == ["test", "test_0-5", "validation_50pct-end",
                                                     "train_10-20+validation", "a_b"]


def test_other_data_than_the_run_trained_on_is_said_and_kept_apart(workdir, tiny_data_dir, tmp_path, capsys):
    """A dataset rebuilt since (corrected labels), or another build of its name, was scored without a word; then its
    scores replaced the run's own eval/<split>.json, and compare showed them as the run's."""
    import shutil

    from streetseg_jax import evaluate
    from streetseg_jax.data.source import dataset_fingerprint

    spelt = workdir.parent / ".." / workdir.parent.name / workdir.name       # the same run, another spelling
    evaluate.main(["--workdir", str(spelt), "--split", "test[:1]"])
    own = json.loads((workdir / "eval" / "test_0-1.json").read_text())
    info, = Path(tiny_data_dir).glob("street_seg/synthetic/*/dataset_info.json")
    assert own["workdir"] == str(workdir.resolve())
    assert own["data"] == {"directory": str(info.parent), "fingerprint": dataset_fingerprint(info.parent),
                           "trained_on": True}
    assert "not the data this run trained on" not in capsys.readouterr().err
    copy = tmp_path / "tfds"
    shutil.copytree(tiny_data_dir, copy)
    info, = copy.glob("street_seg/synthetic/*/dataset_info.json")
    info.write_text(info.read_text() + "\n")
    evaluate.main(["--workdir", str(workdir), "--split", "test[:1]", "--data_dir", str(copy)])
    err = capsys.readouterr().err
    assert (f"note: street_seg/synthetic at {info.parent} is not the data this run trained on (its files are not the "
            "ones config.json's fingerprint records: rebuilt since, or another build): the scores are of this data"
            ) in err and "held the results of" not in err
    fingerprint = dataset_fingerprint(info.parent)
    other = json.loads((workdir / "eval" / f"test_0-1_data-{fingerprint[:8]}.json").read_text())
    assert other["data"] == {"directory": str(info.parent), "fingerprint": fingerprint, "trained_on": False}
    assert json.loads((workdir / "eval" / "test_0-1.json").read_text()) == own


def files_of(folder: Path) -> dict:
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*")}


def test_output_writes_the_results_elsewhere_and_leaves_the_run_as_it_was(workdir, tmp_path, capsys):
    """A run on a disk one cannot write to (a colleague's, a read-only mount) had to be copied first."""
    from streetseg_jax import evaluate

    before = files_of(workdir)
    out = tmp_path / "scores" / "mine"
    evaluate.main(["--workdir", str(workdir), "--split", "test[:2]", "--output", str(out)])
    assert files_of(workdir) == before
    assert sorted(p.name for p in out.iterdir()) == ["test_0-2.json", "test_0-2_confusion.png"]
    assert json.loads((out / "test_0-2.json").read_text())["num_images"] == 2
    assert f"wrote {out / 'test_0-2.json'}" in capsys.readouterr().out
    # A folder that several runs are scored into: another run's results of the same split are replaced, said so.
    (out / "test_0-2.json").write_text(json.dumps({"workdir": "/colleague/run"}))
    evaluate.main(["--workdir", str(workdir), "--split", "test[:2]", "--output", str(out)])
    assert f"note: {out / 'test_0-2.json'} held the results of /colleague/run" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit):
        evaluate.main(["--workdir", str(workdir), "--output", str(tmp_path / "afile" / "scores")])
    assert f"error: {tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--workdir", "/nonexistent/run"], "--workdir /nonexistent/run does not exist"),
    (["--workdir", __file__], f"--workdir {__file__} is a file, not a training work directory"),
    (["--checkpoint", "newest"], "argument --checkpoint: must be best, latest or a step number"),
    (["--checkpoint", "99"], "no checkpoint for step 99"),
    (["--split", "nosuch"], "has no split 'nosuch'"),
    (["--split", "train[:abc]"], "cannot read split 'train[:abc]': a slice must be well-formed"),
    (["--split", "train[5:2]"], "cannot read split 'train[5:2]'"),
    (["--split", "train[3:3]"], "cannot read split 'train[3:3]'"),
])
def test_refusals_are_clear(workdir, argv, message, capsys):
    from streetseg_jax import evaluate

    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--workdir", str(workdir), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_workdir_without_checkpoints_is_refused(tmp_path, capsys):
    from streetseg_jax import evaluate

    with pytest.raises(SystemExit):
        evaluate.main(["--workdir", str(tmp_path)])
    assert "no checkpoints/ folder" in capsys.readouterr().err


def test_a_workdir_that_cannot_be_written_is_one_line_before_and_during_scoring(tmp_path, monkeypatch, capsys):
    """A read-only work directory: the whole evaluation ran, then a 20-line traceback."""
    from streetseg_jax.evaluate import score_command

    def cannot_write():
        raise OSError(f"cannot write {tmp_path / 'report.html'}: Read-only file system")
    with pytest.raises(SystemExit) as exit_:
        score_command(str(tmp_path), tmp_path, cannot_write)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: cannot write {tmp_path / 'report.html'}: Read-only file system\n"
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)   # as a read-only mount answers
    with pytest.raises(SystemExit):
        score_command(str(tmp_path), tmp_path / "eval", lambda: pytest.fail("evaluated although nothing can be "
                                                                            "written"))
    assert f"{tmp_path / 'eval'} cannot be written to, and the results are written there (--output chooses " \
        "where)" in capsys.readouterr().err


def test_flip_tta_is_mirror_symmetric_and_written_beside_the_plain_figures(workdir, cli_result, capsys):
    from streetseg_jax import evaluate
    from streetseg_jax.data.source import load_split

    evaluate.main(["--workdir", str(workdir), "--flip_tta"])
    assert "with flip TTA" in capsys.readouterr().out
    result = json.loads((workdir / "eval" / "test_flip_tta.json").read_text())
    assert result["flip_tta"] is True and cli_result[1]["flip_tta"] is False
    assert (workdir / "eval" / "test_flip_tta_confusion.png").exists()
    # The flip-averaged prediction of a mirrored image is the mirrored prediction (the plain one need not be).
    run = evaluate.load_run(workdir, "best", flip_tta=True)
    source, _, _ = load_split(run.config.dataset, "test", run.config.data_dir)
    images = np.stack([source[i]["image"] for i in range(2)])
    plain = run.evaluator.predict(run.params, run.model_state, images)
    mirrored = run.evaluator.predict(run.params, run.model_state, images[:, :, ::-1].copy())
    np.testing.assert_array_equal(mirrored, plain[:, :, ::-1])
    assert np.asarray(result["confusion"]).sum() == np.asarray(cli_result[1]["confusion"]).sum()


def test_flip_tta_follows_the_runs_config_unless_told(workdir, monkeypatch):
    from streetseg_jax import evaluate, inference

    load_model = inference.load_model

    def load_model_evaluated_with_tta(*args, **kwargs):
        trained = load_model(*args, **kwargs)
        trained.config.eval_flip_tta = True
        return trained

    monkeypatch.setattr(inference, "load_model", load_model_evaluated_with_tta)
    assert evaluate.load_run(workdir, "best").config.eval_flip_tta is True
    assert evaluate.load_run(workdir, "best", flip_tta=False).config.eval_flip_tta is False
    monkeypatch.undo()
    assert evaluate.load_run(workdir, "best").config.eval_flip_tta is False


@pytest.mark.parametrize("argv, expected", [([], None), (["--flip_tta"], True), (["--no-flip-tta"], False),
                                            (["--no_flip_tta"], False)])
def test_flip_tta_flags(argv, expected):
    from streetseg_jax import evaluate, predict
    from streetseg_jax.cli import normalise_argv

    args = normalise_argv(["--workdir", "w", *argv])
    assert evaluate.make_parser().parse_args(args).flip_tta is expected
    assert predict.parse_args([*args, "--input", "x", "--output", "y"]).flip_tta is expected


def test_multi_scale_tta_on_request_is_written_beside_the_plain_figures(workdir, cli_result, capsys):
    from streetseg_jax import evaluate
    from streetseg_jax.evaluator import network_scales
    from streetseg_jax.data.source import load_split

    evaluate.main(["--workdir", str(workdir), "--extra_scales", "1.0"])
    assert f"eval_scale {EVAL_SCALE:g} (and 1, logits averaged)" in capsys.readouterr().out
    result = json.loads((workdir / "eval" / "test_scales-1.json").read_text())     # not the run's own scales
    assert result["eval_extra_scales"] == [1.0] and result["flip_tta"] is False
    run = evaluate.load_run(workdir, "best", extra_scales=(1.0,))
    source, _, _ = load_split(run.config.dataset, "test", run.config.data_dir)
    assert result["miou"] == pytest.approx(run.evaluator.run(run.params, run.model_state, source)["eval/miou"])
    assert np.asarray(result["confusion"]).sum() == np.asarray(cli_result[1]["confusion"]).sum()
    assert network_scales(evaluate.load_run(workdir, "best").config) == (EVAL_SCALE,)   # as trained


@pytest.mark.parametrize("argv, expected", [([], None), (["--extra_scales", "0.25,0.5"], (0.25, 0.5)),
                                            (["--extra-scales=none"], ())])
def test_extra_scales_flag(argv, expected):
    from streetseg_jax import evaluate, predict
    from streetseg_jax.cli import normalise_argv

    args = normalise_argv(["--workdir", "w", *argv])
    assert evaluate.make_parser().parse_args(args).extra_scales == expected
    assert predict.parse_args([*args, "--input", "x", "--output", "y"]).extra_scales == expected


@pytest.mark.parametrize("bad", ["0.5,x", "0", "-1", "0.5,0.5"])
def test_extra_scales_flag_rejects_what_is_not_a_scale(bad, capsys):
    from streetseg_jax import evaluate

    with pytest.raises(SystemExit):
        evaluate.make_parser().parse_args(["--workdir", "w", "--extra_scales", bad])
    assert "--extra_scales" in capsys.readouterr().err


@pytest.mark.parametrize("value, expected", [("best", "best"), ("latest", "latest"), ("3", 3), ("newest", None)])
def test_checkpoint_flag_is_one_type_for_every_command(value, expected, capsys):
    from streetseg_jax import evaluate, export, predict, report

    parsers = [evaluate.make_parser().parse_args, report.make_parser().parse_args,
               lambda a: predict.parse_args([*a, "--input", "x", "--output", "y"]),
               lambda a: export.parse_args([*a, "--output", "y"])]
    for parse in parsers:
        if expected is None:
            with pytest.raises(SystemExit):
                parse(["--workdir", "w", "--checkpoint", value])
            assert "argument --checkpoint: must be best, latest or a step number" in capsys.readouterr().err
        else:
            assert parse(["--workdir", "w", "--checkpoint", value]).checkpoint == expected


def test_a_tilde_after_the_equals_sign_is_the_home_folder_for_every_command(tmp_path, monkeypatch, capsys):
    """The shell expands `--workdir ~/runs/a` but not `--workdir=~/runs/a`: main made a folder named `~`; nor a quoted
    '~/runs/a' (or one in a script's argument list), which evaluate found and report, predict and compare did not."""
    from streetseg_jax import evaluate
    from streetseg_jax.cli import normalise_argv

    monkeypatch.setenv("HOME", str(tmp_path))
    assert normalise_argv(["--work-dir=~/runs/a", "--config.init_from=~", "--output", "~/b", "--x=a~"]) == \
        ["--work_dir=" + str(tmp_path / "runs/a"), "--config.init_from=" + str(tmp_path), "--output",
         str(tmp_path / "b"), "--x=a~"]
    with pytest.raises(SystemExit):
        evaluate.main(["--workdir=~/runs/missing"])
    assert f"--workdir {tmp_path / 'runs/missing'} does not exist" in capsys.readouterr().err


def test_data_whose_classes_differ_is_refused_naming_them_and_recoloured_data_is_scored(workdir, tiny_data_dir,
                                                                                       tmp_path, capsys):
    """A recoloured class (a rebuild with another label map's colours) changes no score but was refused; a renamed
    one was refused without saying which."""
    import json
    import shutil

    from streetseg_jax import evaluate

    copy = shutil.copytree(tiny_data_dir, tmp_path / "tfds")
    metadata, = copy.glob("street_seg/synthetic/*/metadata.json")
    recorded = json.loads(metadata.read_text())
    recorded["label_map"]["classes"][1]["color"] = [1, 2, 3]
    metadata.write_text(json.dumps(recorded))
    evaluate.main(["--workdir", str(workdir), "--data_dir", str(copy), "--output", str(tmp_path / "out")])
    assert "mIoU" in capsys.readouterr().out
    recorded["label_map"]["classes"][1]["name"] = "vegetation"
    metadata.write_text(json.dumps(recorded))
    with pytest.raises(SystemExit):
        evaluate.main(["--workdir", str(workdir), "--data_dir", str(copy), "--output", str(tmp_path / "out")])
    assert ("differs from the one the checkpoint was trained with (classes background, tree, landscaping, road, "
            "sidewalk, building, sky, concrete before, background, vegetation, landscaping") in capsys.readouterr().err


def test_loading_a_model_writes_nothing_in_the_run(workdir, tmp_path):
    """load_model made checkpoints/best where a run had none yet (stopped before its first evaluation), so on a run
    it could not write to (another user's, a read-only mount) evaluate --output and predict failed with an OSError."""
    import shutil

    from streetseg_jax.inference import load_model

    copy = shutil.copytree(workdir, tmp_path / "run")
    shutil.rmtree(copy / "checkpoints" / "best")
    before = sorted((p.relative_to(copy), p.stat().st_mtime_ns) for p in copy.rglob("*"))
    assert load_model(copy, "best").source == "latest"              # no best yet: the latest, said so
    assert sorted((p.relative_to(copy), p.stat().st_mtime_ns) for p in copy.rglob("*")) == before
