"""The run report: one self-contained HTML file for a tiny trained run, its numbers checked against Evaluator.run and
an independent per-image evaluation, and a render in headless Chromium without console errors.

How the render is checked. The report has no JavaScript, and Chromium does not print failed resource loads (a
broken data URI, a missing file) as console messages, so a clean console alone proves little. The test therefore
renders a copy of the report with a small probe script appended: on `load` it counts the images that did not decode
and writes the counts into the DOM (read back with --dump-dom), and every page error or failed resource load,
caught in the capture phase, goes to console.error. Chromium runs with --enable-logging=stderr --v=0, which prints
each console message as a line containing ":CONSOLE"; the test asserts there is none. A negative control page (a
broken image and a console.error) must be caught by the same code, so a Chromium whose logging format changed fails
the test instead of passing it silently. --screenshot in the same run gives the PNG.
"""
from __future__ import annotations

import html
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_main_to_end

K = 3                       # best and worst images asked for
SPLIT = "train"             # 9-10 images in the tiny dataset (its test split has 2-3), enough to rank
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
PROBE = """<script>
addEventListener("error", e => console.error("probe: " + (e.message || "failed to load " +
  (e.target.alt || e.target.src || e.target.href || e.target.tagName))), true);
addEventListener("load", () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0));
  broken.forEach(i => console.error("probe: image did not decode: " + (i.alt || i.src.slice(0, 40))));
  document.body.dataset.probeImages = document.images.length;
  document.body.dataset.probeBroken = broken.length;
});
</script>"""


# -------------------------------------------------------------------------------------------------------------------
# Fixtures: a tiny run, its report, and the report parsed
# -------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_data_dir) -> Path:
    workdir = tmp_path_factory.mktemp("report") / "run"
    code, out = run_main_to_end(workdir, tiny_data_dir)
    assert code == 0, out
    return workdir


@pytest.fixture(scope="module")
def report_path(workdir) -> Path:
    """The report made through the command line, as a user makes it."""
    cmd = [sys.executable, "-m", "streetseg_jax.report", f"--workdir={workdir}", f"--split={SPLIT}", f"--k={K}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {workdir / 'report_train.html'}" in proc.stdout     # not the eval split's report.html
    return workdir / "report_train.html"


@pytest.fixture(scope="module")
def page(report_path) -> "Page":
    parsed = Page()
    parsed.feed(report_path.read_text(encoding="utf-8"))
    return parsed


@pytest.fixture(scope="module")
def loaded(workdir, tiny_data_dir):
    """The report's own view of the run (model, evaluator) and the split it evaluated."""
    from streetseg_jax.data.source import load_split
    from streetseg_jax.evaluate import load_run

    run = load_run(workdir, "best")
    source, _, _ = load_split(run.config.dataset, SPLIT, tiny_data_dir)
    return run, source


class Page(html.parser.HTMLParser):
    """Tags with their attributes, in document order, and every section's id."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def with_attr(self, name: str) -> list[dict]:
        return [attrs for _, attrs in self.tags if name in attrs]

    def examples(self, section: str) -> list[dict]:
        """The example blocks inside <section id=section>, in order."""
        out, inside = [], None
        for tag, attrs in self.tags:
            if tag == "section":
                inside = attrs.get("id")
            elif inside == section and "data-rank" in attrs:
                out.append(attrs)
        return out


def value(text: str):
    return None if text == "None" else float(text)


# -------------------------------------------------------------------------------------------------------------------
# The HTML itself
# -------------------------------------------------------------------------------------------------------------------
def test_report_is_self_contained(report_path, page):
    text = report_path.read_text(encoding="utf-8")
    references = [attrs[key] for _, attrs in page.tags for key in ("src", "href") if key in attrs]
    assert references and all(ref.startswith("data:image/") for ref in references), references[:3]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not any(tag in ("script", "link", "iframe", "object", "embed") for tag, _ in page.tags)
    assert "@import" not in text and "url(" not in text


def test_report_has_every_section(page):
    ids = [attrs["id"] for tag, attrs in page.tags if tag == "section"]
    assert ids == ["summary", "curves", "classes", "confusion", "frequencies", "best", "worst", "provenance"]
    figures = [attrs for tag, attrs in page.tags if tag == "img" and "figure" in attrs.get("class", "")]
    assert len(figures) == 3  # curves, confusion matrix, class frequencies
    panels = [attrs["alt"] for tag, attrs in page.tags
              if tag == "img" and attrs.get("class", "").split()[:1] in (["photo"], ["mask"])]
    assert panels == ["image", "ground truth", "prediction", "errors"] * (2 * K)


def test_class_table_matches_evaluator_run(page, loaded):
    run, source = loaded
    expected = run.evaluator.run(run.params, run.model_state, source)
    rows = {attrs["data-class"]: value(attrs["data-iou"]) for attrs in page.with_attr("data-class")}
    assert list(rows) == run.label_map.names
    for name, iou in rows.items():
        assert iou == pytest.approx(expected[f"eval/iou/{name}"], abs=1e-12), name
    cards = {attrs["data-metric"]: value(attrs["data-value"]) for attrs in page.with_attr("data-metric")}
    for key in ("miou", "pixel_accuracy", "mean_class_accuracy"):
        assert cards[key] == pytest.approx(expected[f"eval/{key}"], abs=1e-12), key
    assert cards["loss"] == pytest.approx(expected["eval/loss"], rel=1e-5)


def test_best_and_worst_are_the_extremes_in_order(page, loaded):
    """Checked against per-image mIoU computed here without the report's code: a prediction per image and a numpy
    confusion matrix."""
    from streetseg_jax.metrics import metrics_from_confusion
    run, source = loaded
    k, ignore = run.label_map.num_classes, run.label_map.ignore_id
    mious = []
    for i in range(len(source)):
        image, mask = source[i]["image"], source[i]["segmentation_mask"][..., 0].astype(np.int64)
        pred = run.evaluator.predict(run.params, run.model_state, image[None])[0].astype(np.int64)
        valid = mask != ignore
        conf = np.bincount(k * mask[valid] + pred[valid], minlength=k * k).reshape(k, k)
        mious.append(metrics_from_confusion(conf, run.label_map.names)["miou"])
    best, worst = page.examples("best"), page.examples("worst")
    assert [int(e["data-rank"]) for e in best] == list(range(1, K + 1))
    assert [int(e["data-index"]) for e in best] == sorted(range(len(mious)), key=lambda i: (-mious[i], i))[:K]
    assert [int(e["data-index"]) for e in worst] == sorted(range(len(mious)), key=lambda i: (mious[i], i))[:K]
    for e in best + worst:
        assert float(e["data-miou"]) == pytest.approx(mious[int(e["data-index"])], abs=1e-12)


def test_per_image_sums_add_up_to_the_split_sums(loaded):
    run, source = loaded
    per_image = run.evaluator.per_image(run.params, run.model_state, source)
    total = run.evaluator.sums(run.params, run.model_state, source)
    assert per_image["confusion"].shape == (len(source), run.label_map.num_classes, run.label_map.num_classes)
    np.testing.assert_array_equal(per_image["confusion"].sum(axis=0), total["confusion"])
    assert per_image["pixels"].sum() == total["pixels"]
    assert per_image["loss_sum"].sum() == pytest.approx(total["loss_sum"], rel=1e-5)
    shown = []      # a progress bar's updates: each batch's real images, as it ends
    watched = run.evaluator.per_image(run.params, run.model_state, source, progress=shown.append)
    assert sum(shown) == len(source) and len(shown) == run.evaluator._eval_batches(source).num_batches
    np.testing.assert_array_equal(watched["confusion"], per_image["confusion"])


def test_an_images_score_does_not_depend_on_the_other_images_of_its_split(loaded):
    """Padded to a larger neighbour's size, a 61x90 crop had 12 of its 5,490 pixels scored otherwise than alone (34
    at eval scale 0.5), and the report's panel, predicted alone, disagreed with its score."""
    run, source = loaded
    first = source[0]
    crop = {**first, "image": first["image"][:61, :90], "segmentation_mask": first["segmentation_mask"][:61, :90]}
    alone = run.evaluator.per_image(run.params, run.model_state, [crop])["confusion"][0]
    for split, at in (([crop, source[1]], 0), ([source[1], crop, source[2]], 1)):
        mixed = run.evaluator.per_image(run.params, run.model_state, split)["confusion"]
        np.testing.assert_array_equal(mixed[at], alone)
    prediction = run.evaluator.predict(run.params, run.model_state, crop["image"][None])[0]
    truth = crop["segmentation_mask"][..., 0]
    labelled = truth != run.label_map.ignore_id
    assert alone.trace() == int((prediction == truth)[labelled].sum())


# -------------------------------------------------------------------------------------------------------------------
# Small parts
# -------------------------------------------------------------------------------------------------------------------
def test_rank_images_keeps_lists_apart_and_skips_unscored_images():
    from streetseg_jax.evaluate import rank_images
    assert rank_images([0.5, None, 0.9, 0.1, 0.5], k=4) == ([2, 0], [3, 4])   # 4 scored: 2 best, 2 worst
    assert rank_images([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], k=2) == ([5, 4], [0, 1])
    assert rank_images([0.2, 0.7], k=4) == ([1], [0])
    assert rank_images([0.2], k=4) == ([0], [])
    assert rank_images([None], k=4) == ([], [])
    assert rank_images([0.3, 0.3, 0.3], k=1) == ([0], [1])   # ties keep source order, never one image twice


def test_render_html_without_metrics_config_json_or_examples():
    """A work directory holding only checkpoints: no curves, the config from the checkpoint, k = 0; a class with no
    pixels anywhere shows no IoU."""
    from streetseg_jax.labels.label_map import default_label_map
    from streetseg_jax.metrics import metrics_from_confusion
    from streetseg_jax.evaluate import Evaluation
    from streetseg_jax.report import ReportData, render_html

    label_map = default_label_map()
    k = label_map.num_classes
    confusion = np.diag(np.arange(k, dtype=np.int64) * 10) + 1
    confusion[0], confusion[:, 0] = 0, 0   # class 0: neither labelled nor predicted
    scores = {**metrics_from_confusion(confusion, label_map.names), "loss": 0.5}
    evaluation = Evaluation("test", confusion, scores, [scores["miou"]], [scores["pixel_accuracy"]])
    data = ReportData("Run report: x", "latest", 7, label_map, evaluation, "train", np.ones(k, np.int64), [], [], 0,
                      None, b"png", b"png", {"model": {"depth": 2}, "dataset": "street_seg/synthetic"},
                      "network at scale 1", {"directory": "d", "fingerprint": "f", "trained_on": None},
                      "the checkpoint (no config.json in the work directory)")
    page = Page()
    page.feed(render_html(data))
    rows = {attrs["data-class"]: value(attrs["data-iou"]) for attrs in page.with_attr("data-class")}
    assert rows[label_map.names[0]] is None
    assert rows == {name: scores[f"iou/{name}"] for name in label_map.names}
    assert page.examples("best") == [] and page.examples("worst") == []
    text = render_html(data)
    assert "No metrics.jsonl" in text and "None asked for (--k 0)" in text and "from the checkpoint" in text


def test_test_time_augmentation_as_the_run_evaluated_unless_told(workdir, report_path, loaded, tmp_path):
    """The tiny run evaluated at scale 1 without flips, and so does its report; --flip_tta and --extra_scales change
    what the report scores (its IoU table is the evaluator's with those settings) and its header says so."""
    import shutil

    from streetseg_jax import evaluate, report

    assert "· network at scale 1</p>" in report_path.read_text(encoding="utf-8")
    copy = shutil.copytree(workdir, tmp_path / "run")
    own = (copy / "report_train.html").read_text(encoding="utf-8")
    report.main(["--workdir", str(copy), "--split", SPLIT, "--k", "0", "--flip_tta", "--extra_scales", "0.5"])
    assert (copy / "report_train.html").read_text(encoding="utf-8") == own      # the run's own page stays
    text = (copy / "report_train_flip_tta_scales-0.5.html").read_text(encoding="utf-8")
    assert "· network at scales 1, 0.5, flip-averaged</p>" in text
    run, source = loaded
    told = evaluate.load_run(copy, "best", flip_tta=True, extra_scales=(0.5,))
    expected = told.evaluator.run(told.params, told.model_state, source)
    assert expected["eval/miou"] != run.evaluator.run(run.params, run.model_state, source)["eval/miou"]
    page = Page()
    page.feed(text)
    rows = {attrs["data-class"]: value(attrs["data-iou"]) for attrs in page.with_attr("data-class")}
    assert rows == {name: pytest.approx(expected[f"eval/iou/{name}"], abs=1e-12) for name in run.label_map.names}


def test_scores_evaluate_wrote_are_read_not_computed_again(workdir, tmp_path, capsys, monkeypatch):
    """A report after evaluate scored the split a second time; it now reads what evaluate wrote for the same
    checkpoint, TTA and data, and scores again where that is older than the checkpoint or of other settings."""
    import shutil

    from streetseg_jax import evaluate, report

    copy = shutil.copytree(workdir, tmp_path / "run")
    scored = []
    monkeypatch.setattr(report, "evaluate_split", lambda *a: scored.append(a) or evaluate.evaluate_split(*a))
    report.main(["--workdir", str(copy), "--split", SPLIT, "--k", str(K)])
    fresh = (copy / "report_train.html").read_text(encoding="utf-8")
    evaluate.main(["--workdir", str(copy), "--split", SPLIT])
    capsys.readouterr()
    report.main(["--workdir", str(copy), "--split", SPLIT, "--k", str(K)])
    assert len(scored) == 1 and f"from {copy / 'eval' / 'train.json'}, which evaluate wrote" in capsys.readouterr().err
    assert (copy / "report_train.html").read_text(encoding="utf-8") == fresh
    report.main(["--workdir", str(copy), "--split", SPLIT, "--k", "0", "--flip_tta"])      # other TTA
    assert len(scored) == 2
    step = json.loads((copy / "eval" / "train.json").read_text())["step"]
    later = (copy / "eval" / "train.json").stat().st_mtime + 10
    os.utime(next((copy / "checkpoints").glob(f"*/{step}")), (later, later))   # saved again since: a run trained
                                                                                # on from an earlier checkpoint
    report.main(["--workdir", str(copy), "--split", SPLIT, "--k", "0"])
    assert len(scored) == 3 and "which evaluate wrote" not in capsys.readouterr().err


def test_a_page_of_another_split_checkpoint_tta_or_data_is_named_so_and_replaces_none():
    from streetseg_jax.report import page_name

    assert page_name(None, None, None, None, None) == "report.html"
    assert page_name("val", 1300, None, None, None) == "report_val_step1300.html"
    assert page_name("train[:5]", None, False, (), "f9a9bd19") == \
        "report_train_0-5_no_flip_tta_no_extra_scales_data-f9a9bd19.html"
    assert page_name(None, None, True, (0.5, 0.75), None) == "report_flip_tta_scales-0.5-0.75.html"


def test_a_damaged_config_json_is_said_on_the_page_not_a_traceback(workdir, tmp_path):
    """A config.json cut short (a disk that filled, a half-copied run) ended the report in a JSONDecodeError."""
    import shutil

    from streetseg_jax import report

    copy = shutil.copytree(workdir, tmp_path / "run")
    (copy / "config.json").write_text((workdir / "config.json").read_text()[:100])
    text = report.build_report(copy, SPLIT, k=0).read_text(encoding="utf-8")
    assert "Full config (from the checkpoint (config.json cannot be read: Expecting" in text
    (copy / "config.json").write_text("[]")
    text = report.build_report(copy, SPLIT, k=0).read_text(encoding="utf-8")
    assert "Full config (from the checkpoint (config.json is not a JSON object))" in text


def test_output_writes_the_page_elsewhere_and_leaves_the_run_as_it_was(workdir, tmp_path, capsys):
    from streetseg_jax import report

    from test_evaluate_cli import files_of

    before = files_of(workdir)
    page = tmp_path / "pages" / "colleague.html"
    report.main(["--workdir", str(workdir), "--split", SPLIT, "--k", "1", "--output", str(page)])
    assert files_of(workdir) == before
    assert "<html" in page.read_text(encoding="utf-8") and capsys.readouterr().out == f"wrote {page}\n"
    with pytest.raises(SystemExit):
        report.main(["--workdir", str(workdir), "--output", str(tmp_path)])
    assert "is a folder: give the page's file name" in capsys.readouterr().err


def test_other_data_than_the_run_trained_on_is_said_on_the_page(workdir, report_path, tiny_data_dir, tmp_path):
    """A report on another build (--data_dir) showed its scores beside the training data's fingerprint, unsaid."""
    import shutil

    from streetseg_jax import report
    from streetseg_jax.data.source import dataset_fingerprint

    info, = Path(tiny_data_dir).glob("street_seg/synthetic/*/dataset_info.json")
    own = report_path.read_text(encoding="utf-8")
    assert 'id="warning"' not in own
    assert (f"{info.parent} (fingerprint {dataset_fingerprint(info.parent)}, the data the run trained on)") in own
    copy = shutil.copytree(tiny_data_dir, tmp_path / "tfds")
    info, = copy.glob("street_seg/synthetic/*/dataset_info.json")
    info.write_text(info.read_text() + "\n")
    report.main(["--workdir", str(workdir), "--split", SPLIT, "--k", "0", "--data_dir", str(copy)])
    assert report_path.read_text(encoding="utf-8") == own          # the run's own report stays
    text = (workdir / f"report_{SPLIT}_data-{dataset_fingerprint(info.parent)[:8]}.html").read_text(encoding="utf-8")
    assert f"<b>These scores are of {info.parent}, which is not the data this run trained on</b>" in text
    assert f"{info.parent} (fingerprint {dataset_fingerprint(info.parent)}, not the data the run trained on)" in text


def test_error_map_dims_correct_pixels_and_marks_wrong_and_ignored_ones():
    from streetseg_jax.visualize import ERROR_COLOR, IGNORE_GREY, error_map
    image = np.full((2, 2, 3), 200, np.uint8)
    truth = np.array([[1, 2], [255, 0]], np.uint8)
    pred = np.array([[1, 3], [0, 0]], np.uint8)
    out = error_map(image, truth, pred, ignore_id=255)
    assert tuple(out[0, 1]) == ERROR_COLOR and tuple(out[1, 0]) == IGNORE_GREY
    assert out[0, 0, 0] == out[0, 0, 1] == out[0, 0, 2] < min(200, IGNORE_GREY[0])  # dimmed grey, darker than ignore
    np.testing.assert_array_equal(out[0, 0], out[1, 1])


def test_ignored_pixels_are_grey_and_named_in_pictures_not_white_on_white():
    """Ignored pixels were white in the ground-truth panels, as the page and the legend's margin: a band of them made
    the panel look cut short, and neither the overlays' legend nor the report's colour for them said so."""
    from streetseg_jax.labels.label_map import default_label_map
    from streetseg_jax.visualize import IGNORE_GREY, colorize, comparison

    label_map = default_label_map()
    truth = np.full((40, 160), 3, np.uint8)
    truth[:10] = label_map.ignore_id
    pred = np.full((40, 160), 6, np.uint8)
    assert (colorize(truth, label_map)[:10] == IGNORE_GREY).all()
    image = np.full((40, 160, 3), 90, np.uint8)
    grey = lambda picture: int((np.asarray(picture) == IGNORE_GREY).all(axis=-1).sum())     # noqa: E731
    # the truth panel's band of 10 x 60 pixels and a swatch in the legend ("ignored"); without ignored pixels, a few
    # edge pixels of the legend's letters at most
    with_swatch = grey(comparison(image, truth, pred, label_map, "step 1")) - 10 * 160
    assert with_swatch > 30 > grey(comparison(image, np.full_like(truth, 3), pred, label_map, "step 1"))


def test_small_panels_are_enlarged_so_that_their_titles_fit():
    """At 64 pixels a panel, 'ground truth' ran into the next title and 'prediction, step 12345' was cut off."""
    from streetseg_jax.labels.label_map import default_label_map
    from streetseg_jax.visualize import comparison

    label_map, rng = default_label_map(), np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    truth, pred = np.full((48, 64), 3, np.uint8), np.full((48, 64), 6, np.uint8)
    picture = np.asarray(comparison(image, truth, pred, label_map, "run a, test split, the last weights (step 12)"))
    assert picture.shape[1] == 3 * 64 * 3                                   # each panel 3x: 192 pixels
    dark = picture.min(axis=-1) < 128                                       # letters
    strip = np.flatnonzero(~(picture == 255).all(axis=(1, 2)) & (dark.mean(axis=1) > 0.3))[0]   # its first row
    caption, titles = dark[:strip // 2], dark[strip // 2:strip]
    assert caption.any() and not caption[:, -4:].any()                      # the caption ends inside the picture
    assert titles[:, 0:192].any() and titles[:, 192:384].any() and titles[:, 384:].any()
    for edge in (192, 384):                                                 # no title runs into the next panel
        assert not titles[:, edge - 3:edge + 3].any()
    tall = np.full((3000, 100), 3, np.uint8)                                # not enlarged past 2,000 px tall
    assert comparison(np.zeros((3000, 100, 3), np.uint8), tall, tall, label_map, "x").width == 300


@pytest.mark.parametrize("argv, message", [
    (["--workdir", "/nonexistent/run"], "does not exist"),
    (["--workdir", __file__], "is a file, not a training work directory"),
    (["--workdir", "/tmp", "--checkpoint", "newest"], "argument --checkpoint: must be best, latest or a step number"),
    (["--workdir", "/tmp", "--k", "-1"], "--k must be 0 or more"),
])
def test_command_line_refusals(argv, message, capsys):
    from streetseg_jax import report
    with pytest.raises(SystemExit) as exit_info:
        report.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_workdir_without_checkpoints_is_refused(tmp_path, capsys):
    from streetseg_jax import report
    with pytest.raises(SystemExit):
        report.main(["--workdir", str(tmp_path)])
    assert "no checkpoints/ folder" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------------------------
# Headless Chromium
# -------------------------------------------------------------------------------------------------------------------
def chromium_binary() -> str | None:
    return shutil.which("chromium") or (Path("/usr/bin/chromium").is_file() and "/usr/bin/chromium") or None


needs_chromium = pytest.mark.skipif(
    chromium_binary() is None,
    reason="chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it for CI)")


def render(page_html: str, folder: Path, height: int = 2400) -> dict:
    """Render `page_html` with the probe appended: console lines, the probe's counts, the screenshot path."""
    folder.mkdir(parents=True, exist_ok=True)
    probe_page, shot = folder / "probe.html", folder / "screenshot.png"
    probe_page.write_text(page_html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={folder / 'profile'}",
           f"--window-size=1280,{height}", f"--screenshot={shot}", "--dump-dom", probe_page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = [line for line in proc.stderr.splitlines() if re.search(r":CONSOLE\b", line)]
    counts = {key: int(v) for key, v in re.findall(r'data-probe-(images|broken)="(\d+)"', proc.stdout)}
    return {"console": console, "images": counts.get("images"), "broken": counts.get("broken"), "screenshot": shot}


@needs_chromium
def test_probe_catches_console_errors_and_broken_images(tmp_path):
    broken = ('<!DOCTYPE html><html><body><img alt="bad" src="data:image/png;base64,AAAA">'
              '<script>console.error("deliberate")</script></body></html>')
    result = render(broken, tmp_path, height=200)
    assert result["images"] == 1 and result["broken"] == 1
    assert any("deliberate" in line for line in result["console"]), result["console"]
    assert any("probe:" in line for line in result["console"]), result["console"]


@needs_chromium
def test_report_renders_in_chromium_without_console_errors(report_path, page, tmp_path):
    from PIL import Image
    result = render(report_path.read_text(encoding="utf-8"), tmp_path)
    assert result["console"] == []
    assert result["images"] == len([1 for tag, _ in page.tags if tag == "img"]) and result["broken"] == 0
    shot = Image.open(result["screenshot"])
    assert shot.size == (1280, 2400)
    assert np.asarray(shot.convert("L")).std() > 10  # not a blank page


DRAW_EVERY_PICTURE = """
import matplotlib
matplotlib.use("svg")                       # a notebook's own backend, and a figure of its own
import matplotlib.pyplot as plt
plt.figure()
import numpy as np
from pathlib import Path
from streetseg_jax import compare, evaluate, report, visualize
from streetseg_jax.labels.label_map import default_label_map
records = [{"step": 1, "time": 0.0, "train/loss": 1.0}, {"step": 2, "time": 1.0, "eval/miou": 0.5, "eval/loss": 1.0}]
pictures = [visualize.figure_png(visualize.curves_figure(records)),
            evaluate.confusion_png(np.eye(3, dtype=np.int64), ["a", "b", "c"], "title"),
            report.frequency_png([("train", np.ones(8))], default_label_map()),
            compare.curves_png([compare.Run("r", Path("r"), {}, visualize.run_history(records), {})])]
assert all(png.startswith(bytes([137]) + b"PNG") for png in pictures)
print(matplotlib.get_backend(), plt.get_fignums())
"""


def test_pictures_leave_a_notebooks_matplotlib_as_it_was():
    """Every picture is drawn outside pyplot: drawing one in a notebook switched its backend to Agg for good (its
    later plots showed nothing) and registered figures it never showed."""
    out = subprocess.run([sys.executable, "-c", DRAW_EVERY_PICTURE], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "[1]"]


def resumed_run_records() -> list[dict]:
    """A run started with cross-entropy, resumed at step 20 as it was, at step 40 with another loss, at step 60 with
    evaluation changed."""
    def start(step, changed=None):
        return {"step": step, "time": float(step), "run/start": True, **({"run/changed": changed} if changed else {})}

    records = []
    for first, changed in ((0, None), (20, None), (40, {"loss": ["cross_entropy", "cross_entropy+lovasz"]}),
                           (60, {"eval_flip_tta": [True, False]})):
        records.append(start(first, changed))
        for step in (first + 10, first + 20):
            records.append({"step": step, "time": step + 0.5, "train/loss": 1.0, "train/miou": 0.5})
        records.append({"step": first + 20, "time": first + 20.7, "eval/miou": 0.4, "eval/loss": 1.0})
    return records


def test_curves_say_what_each_resume_changed_and_join_no_curve_across_a_change_of_its_meaning():
    """A loss changed at a resume showed as one train/loss line jumping at an unlabelled dashed line, and the eval
    mIoU ran on across a change of how evaluation scores."""
    from streetseg_jax.visualize import curves_figure

    figure = curves_figure(resumed_run_records())
    below = "\n".join(text.get_text() for text in figure.texts)
    assert below.splitlines() == ["resumed at step 20, no setting changed",
                                  "resumed at step 40: loss cross_entropy → cross_entropy+lovasz",
                                  "resumed at step 60: eval_flip_tta true → false"]
    # Resumes that changed nothing share a line: a run preempted 80 times drew a figure 20 inches tall.
    records = [{"step": step, "time": float(step), "run/start": True} for step in range(0, 400, 5)]
    records += [{"step": step + 1, "time": step + 1.5, "train/loss": 1.0, "train/miou": 0.5}
                for step in range(0, 400, 5)]
    many = curves_figure(records)
    assert "\n".join(t.get_text() for t in many.texts).count("resumed at") == 1 and many.get_figheight() < 6
    lines = {line.get_label(): list(line.get_xdata()) for ax in figure.axes for line in ax.get_lines()
             if not line.get_label().startswith("_")}
    gaps = {label: [xs[k - 1] for k, x in enumerate(xs) if np.isnan(x)] for label, xs in lines.items()}
    assert gaps == {"train/loss (objective)": [40], "eval/loss (cross-entropy)": [60], "train/miou": [],
                    "eval/miou": [60], "resumed (listed below)": []}
    assert all(tick == int(tick) for ax in figure.axes for tick in ax.get_xticks())


def small_report(**changes):
    """ReportData of a made-up evaluation, as test_render_html_without_metrics_config_json_or_examples builds it."""
    import dataclasses
    from streetseg_jax.labels.label_map import default_label_map
    from streetseg_jax.metrics import metrics_from_confusion
    from streetseg_jax.evaluate import Evaluation
    from streetseg_jax.report import ReportData

    label_map = default_label_map()
    confusion = np.eye(label_map.num_classes, dtype=np.int64) * 10
    scores = {**metrics_from_confusion(confusion, label_map.names), "loss": 0.5}
    evaluation = Evaluation("test", confusion, scores, [scores["miou"]], [scores["pixel_accuracy"]])
    data = ReportData("Run report: b60ce", "best", 80, label_map, evaluation, "train",
                      np.ones(label_map.num_classes, np.int64), [], [], 0, None, b"png", b"png",
                      {"dataset": "street_seg/synthetic", "num_train_steps": 80, "batch_size": 8,
                       "optimizer": "adamw", "learning_rate": 0.003, "lr_schedule": "cosine",
                       "loss": "cross_entropy+lovasz"},
                      "network at scale 1", {"directory": "d", "fingerprint": "f", "trained_on": None})
    return dataclasses.replace(data, **changes)


def facts(page_html: str) -> dict:
    return {key: html.unescape(value) for key, value in
            re.findall(r"<tr><th>([^<]*)</th><td><code>([^<]*)</code></td></tr>", page_html)}


def test_provenance_says_the_loss_the_training_time_and_each_resume_with_what_it_changed():
    """The training row gave steps, batch and optimiser but no loss; the page had no training time and said nothing
    of the resumes, its config the last settings alone."""
    from streetseg_jax.report import render_html

    rows = facts(render_html(small_report(metrics=resumed_run_records())))
    assert rows["training"] == ("80 steps, batch 8, adamw lr 0.003 (cosine), loss cross_entropy, "
                                "cross_entropy+lovasz from step 40")
    # 20.5 s to step 20, then each start's own 20.7 s: the time from a stop to its resume left out.
    assert rows["training time"].startswith("0:01:22 to step 80 (")
    assert rows["history"] == ("started at step 0 with loss cross_entropy, eval_flip_tta true; resumed at step 20; "
                               "resumed at step 40, changing loss cross_entropy -> cross_entropy+lovasz; "
                               "resumed at step 60, changing eval_flip_tta true -> false")
    assert "training time" not in facts(render_html(small_report()))     # no metrics.jsonl: no time to say
    extended = resumed_run_records()
    extended[-4]["run/changed"]["num_train_steps"] = [60, 80]      # the start at step 60 extends the run
    assert facts(render_html(small_report(metrics=extended)))["training"].startswith("80 steps, batch 8")


def test_provenance_says_where_a_warm_start_came_from_and_what_became_of_the_head():
    """A run fine-tuned with init_from showed nothing of it: neither its source nor whether the head was carried."""
    from streetseg_jax.report import render_html

    records = resumed_run_records()
    records[0]["run/init_from"] = {"from": "/runs/c2", "checkpoint": "best",
                                   "head": "the classifier head keeps its outputs for 'road' (matched by name) and "
                                           "starts those for 'car' afresh"}
    config = {**small_report().config, "init_from": "/runs/c2"}
    rows = facts(render_html(small_report(metrics=records, config=config)))
    assert rows["warm start"] == ("from /runs/c2 (best checkpoint); the classifier head keeps its outputs for 'road' "
                                  "(matched by name) and starts those for 'car' afresh")
    del records[0]["run/init_from"]                          # a run of a version that did not record it
    assert facts(render_html(small_report(metrics=records, config=config)))["warm start"].startswith(
        "from /runs/c2; what became of the classifier head is not recorded")
    assert "warm start" not in facts(render_html(small_report(metrics=records)))
    resume = [r for r in records if r.get("run/start")][1]
    resume["run/changed"] = {"init_from": ["", "/runs/c2"]}        # given at a resume, which reads it not
    assert "warm start" not in facts(render_html(small_report(metrics=records, config=config)))


def test_the_history_says_the_devices_of_each_start_where_a_resume_changed_them():
    """config.json keeps the last start's devices only: a run trained on 2 devices, then resumed on 1, showed 1 as
    the devices it trained on, and nothing told the pages' reader of the change."""
    from streetseg_jax.report import render_html

    two = {"count": 2, "kind": "cpu", "processes": 1, "cores": 2, "native_kernels": True}
    records = resumed_run_records()
    starts = [r for r in records if r.get("run/start")]
    for start, devices in zip(starts, (two, two, {**two, "count": 1}, {**two, "count": 1})):
        start["run/devices"] = devices
    history = facts(render_html(small_report(metrics=records)))["history"]
    assert history == ("started at step 0 on 2 cpu device(s) in 1 process(es) (2 core(s), our C++ kernels) with loss "
                       "cross_entropy, eval_flip_tta true; resumed at step 20; resumed at step 40 on 1 cpu device(s) "
                       "in 1 process(es) (2 core(s), our C++ kernels), changing loss cross_entropy -> "
                       "cross_entropy+lovasz; resumed at step 60, changing eval_flip_tta true -> false")
    for start in starts:
        start["run/devices"] = two
    assert "device" not in facts(render_html(small_report(metrics=records)))["history"]


def test_a_pages_title_names_what_differs_from_the_runs_own_and_its_header_says_the_step_once():
    """report.html and report_train_0-16_step40_no_flip_tta.html had one title (their tabs read the same), and the
    header said "checkpoint step 40 (step 40)"."""
    from streetseg_jax.report import render_html, variant_text

    variant = variant_text("train[0:16]", 40, False, None, None)
    assert variant == "split train[0:16], step 40, no flip TTA"
    own, other = (render_html(small_report(**changes)) for changes in
                  ({}, {"checkpoint": "step 40", "step": 40, "variant": variant}))
    titles = [re.search(r"<title>(.*)</title>", page).group(1) for page in (own, other)]
    assert titles == ["Run report: b60ce", "Run report: b60ce (split train[0:16], step 40, no flip TTA)"]
    assert "checkpoint <b>best</b> (step 80)" in own
    assert "checkpoint <b>step 40</b> ·" in other and "(step 40)" not in other and "no flip TTA</b>" not in other


def test_overlays_outline_every_class_and_scale_their_title_and_legend_with_the_picture():
    """Dark classes (building (70, 70, 70), black background) blended at half strength looked like the photo
    untinted; a 4000x3000 overlay's legend was 88 pixels, its text 9 pixels once the picture fitted a screen."""
    from streetseg_jax.labels.label_map import default_label_map
    from streetseg_jax.visualize import EDGE_COLOR, overlay

    label_map = default_label_map()
    building, sky = (label_map.names.index(name) for name in ("building", "sky"))
    photo = np.full((3000, 4000, 3), 128, np.uint8)
    mask = np.full((3000, 4000), sky, np.uint8)
    mask[1000:2000, 1000:3000] = building
    plain, titled = (np.asarray(overlay(photo, mask, label_map, title=title)) for title in (None, "run b60ce, best"))
    assert (plain[1000, 1500] == EDGE_COLOR).all() and (plain[1500, 1000] == EDGE_COLOR).all()   # top, left
    assert (plain[1000:1007, 1500] == EDGE_COLOR).all()        # 7 pixels wide at 4000: about 2 on a screen
    assert not (plain[1500, 2000] == EDGE_COLOR).all() and not (plain[500, 500] == EDGE_COLOR).all()  # inside: tinted
    legend = plain.shape[0] - 3000
    assert legend >= 3000 / 30                                 # was 88 pixels: 1/35 of the picture
    title_band = titled.shape[0] - plain.shape[0]
    assert title_band > 60 and (titled[:title_band] < 100).any()    # dark text on white above the picture
    assert (titled[title_band:] == plain).all()
