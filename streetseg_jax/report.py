"""Run report: `python -m streetseg_jax.report --workdir DIR [--split S] [--data_dir D]
[--checkpoint best|latest|STEP] [--k 4] [--[no_]flip_tta] [--extra_scales S,...|none] [--output FILE]` (test-time
augmentation as the run evaluated unless told).

Writes DIR/report.html (named with what differs from the run's own page where a flag chooses another split,
checkpoint or data, and with the TTA flags given: report_val_step1300.html, see page_name; --output FILE elsewhere,
for a run one cannot write to), one self-contained file that opens offline: images are embedded as base64 data URIs,
the CSS is inline, and there is no JavaScript and no external request. It holds the loss and mIoU curves (from
metrics.jsonl), a fresh evaluation of the chosen checkpoint on the split (per-class IoU table, confusion-matrix
heatmap), the class pixel frequencies of the train and evaluated splits, the k best and k worst images by per-image
mIoU as image / ground truth / prediction / error panels, and the run's provenance (config.json).
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from streetseg_jax.cli import (ArgumentParser, add_checkpoint_flag, add_extra_scales_flag, add_flip_tta_flags,
                               check_output_file, fail, hold_while_loading, normalise_argv, run_command)


def make_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m streetseg_jax.report",
                            description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--workdir", required=True, help="a training work directory (with checkpoints/)")
    parser.add_argument("--split", help="split to evaluate (default: the config's eval_split)")
    add_checkpoint_flag(parser)
    parser.add_argument("--k", type=int, default=4, help="how many best and worst images to show (default 4)")
    parser.add_argument("--data_dir", help="where the dataset lives (default: the run's config.data_dir)")
    add_flip_tta_flags(parser, "average each image's logits with its mirror image's")
    add_extra_scales_flag(parser)
    parser.add_argument("--output", help="the page's file (default: WORKDIR/report.html, named with what differs "
                                         "from the run's own where a flag chooses another split, checkpoint or "
                                         "data, and with the TTA flags given: report_val_step1300.html)")
    return parser


if __name__ == "__main__":      # --help and a mistyped flag answer before JAX loads (3 s)
    hold_while_loading()
    make_parser().parse_args(normalise_argv(sys.argv[1:]))

import numpy as np  # noqa: E402

from streetseg_jax import atomic  # noqa: E402
from streetseg_jax.evaluate import (Evaluation, LoadedRun, confusion_png, evaluate_split,  # noqa: E402
                                    load_checked_split, load_run, other_data, rank_images, recorded_evaluation,
                                    scored_data, score_command, split_file_name)
from streetseg_jax.evaluator import example_name, network_scales  # noqa: E402
from streetseg_jax.metrics import class_recall  # noqa: E402
from streetseg_jax.page import escape, html_page, png_uri, section  # noqa: E402
from streetseg_jax.visualize import (curves_figure, figure_png, history_lines, hms, new_figure,  # noqa: E402
                                     read_metrics, run_history, run_starts, setting_history)

MAX_PANEL_WIDTH = 480   # pixels of an embedded example panel: enough to see errors, small enough to keep files light
SHOWN_PANEL_WIDTH = 280  # about how wide a panel shows on the page (a quarter of it): narrower images are enlarged


# -------------------------------------------------------------------------------------------------------------------
# The train split's class frequencies
# -------------------------------------------------------------------------------------------------------------------
def train_pixel_counts(source, num_classes: int) -> np.ndarray:
    from streetseg_jax.labels.stats import class_pixel_counts
    return class_pixel_counts(_Masks(source), num_classes, progress=True)[0]


class _Masks:
    """The masks of a source, with a length so that the progress bar can say how far it is."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self):
        return (self.source[i]["segmentation_mask"] for i in range(len(self.source)))


# -------------------------------------------------------------------------------------------------------------------
# Pictures
# -------------------------------------------------------------------------------------------------------------------
def curves_png(metrics: list[dict]) -> bytes | None:
    """visualize.curves_figure's loss and mIoU figure of metrics.jsonl's records as PNG bytes; None without any."""
    return figure_png(curves_figure(metrics)) if metrics else None


def frequency_png(series: list[tuple[str, np.ndarray]], label_map) -> bytes:
    """Each class's share of the labelled pixels, one bar per (split name, pixel counts): solid, then hatched."""
    from matplotlib.patches import Patch
    k = label_map.num_classes
    colors = [np.array(c.color) / 255 for c in label_map.classes]
    styles = ({}, {"alpha": 0.55, "hatch": "///"})
    fig = new_figure(figsize=(8, max(2.5, 0.21 * len(series) * k + 1)))
    ax = fig.subplots()
    y, h = np.arange(k), 0.8 / len(series)
    for j, ((_, counts), style) in enumerate(zip(series, styles)):
        share = 100 * counts / max(counts.sum(), 1)
        offset = (j - (len(series) - 1) / 2) * h
        ax.barh(y + offset, share, h, color=colors, edgecolor="#333", linewidth=0.6, **style)
        for yi, value in zip(y + offset, share):
            ax.text(value, yi, f" {value:.1f}%", va="center", fontsize=8)
    ax.set_yticks(y, label_map.names)
    ax.invert_yaxis()
    ax.set_xlabel("share of labelled pixels (%)")
    ax.set_xlim(0, ax.get_xlim()[1] * 1.12)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(handles=[Patch(facecolor="#bbb", edgecolor="#333", label=f"{name} split", **style)
                       for (name, _), style in zip(series, styles)],
              loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    return figure_png(fig)


@dataclasses.dataclass
class Example:
    index: int
    name: str
    miou: float
    pixel_accuracy: float | None
    panels: dict                # title -> data URI
    enlarged: bool              # shown larger than it is: masks then keep square pixels instead of blurring


def example(run: LoadedRun, source, index: int, miou: float, accuracy: float | None) -> Example:
    """Image, ground truth, prediction and error map of one example, ready to embed."""
    from streetseg_jax.visualize import colorize, error_map

    record = source[index]
    image = record["image"]
    truth = record["segmentation_mask"].reshape(image.shape[:2])
    pred = run.evaluator.predict(run.params, run.model_state, image[None])[0]
    lm = run.label_map
    panels = {"image": _data_uri(image, "JPEG"), "ground truth": _data_uri(colorize(truth, lm), "PNG"),
              "prediction": _data_uri(colorize(pred, lm), "PNG"),
              "errors": _data_uri(error_map(image, truth, pred, lm.ignore_id), "JPEG")}
    return Example(index, example_name(record, index), miou, accuracy, panels,
                   enlarged=image.shape[1] < SHOWN_PANEL_WIDTH)


def _data_uri(pixels: np.ndarray, fmt: str) -> str:
    from PIL import Image
    image = Image.fromarray(pixels)
    if image.width > MAX_PANEL_WIDTH:
        # Masks keep hard edges (nearest); photo-like panels are resampled smoothly.
        resample = Image.Resampling.LANCZOS if fmt == "JPEG" else Image.Resampling.NEAREST
        image = image.resize((MAX_PANEL_WIDTH, round(image.height * MAX_PANEL_WIDTH / image.width)), resample)
    buffer = io.BytesIO()
    # JPEG without chroma subsampling: thin red error lines stay sharp at a fraction of a PNG's size.
    image.save(buffer, format=fmt, **({"quality": 90, "subsampling": 0} if fmt == "JPEG" else {"optimize": True}))
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


# -------------------------------------------------------------------------------------------------------------------
# HTML
# -------------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ReportData:
    title: str
    checkpoint: str
    step: int
    label_map: Any
    evaluation: Evaluation
    train_split: str
    train_counts: np.ndarray
    best: list                  # [Example]
    worst: list                 # [Example]
    k: int
    curves: bytes | None
    confusion_png: bytes
    frequency_png: bytes
    config: dict                # config.json (with its "provenance") or the checkpoint's config
    inference: str              # how the network saw the images: its scales, and whether flip-averaged
    data: dict                  # the prepared dataset scored (evaluate.scored_data)
    config_source: str = "config.json"      # where `config` comes from, as the page says it
    metrics: list = dataclasses.field(default_factory=list)    # metrics.jsonl's records: training time, resumes
    variant: str = ""           # what differs from the run's own page (page_name's parts, in words), or ""


def render_html(d: ReportData) -> str:
    parts = [_header(d), _other_data(d), _summary(d), _curves(d), _class_table(d), _confusion(d), _frequencies(d),
             _examples(d, "best"), _examples(d, "worst"), _provenance(d)]
    tab = f"{d.title} ({d.variant})" if d.variant else d.title     # two pages of a run open side by side differ
    return html_page(tab, parts, "streetseg_jax.report")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _header(d: ReportData) -> str:
    n = len(d.evaluation.image_miou)
    step = "" if d.checkpoint == f"step {d.step}" else f" (step {d.step})"     # "step 40 (step 40)" said it twice
    return (f"<header><h1>{escape(d.title)}</h1>"
            f"<p class=\"sub\">checkpoint <b>{escape(d.checkpoint)}</b>{step}"
            f" · evaluated on split <b>{escape(d.evaluation.split)}</b> ({n} image{'s' * (n != 1)})"
            f" · {d.label_map.num_classes} classes · {escape(d.inference)}</p></header>")


def _other_data(d: ReportData) -> str:
    if d.data["trained_on"] is not False:
        return ""
    return section("warning", "Warning", f"<p><b>These scores are of {escape(d.data['directory'])}, which is not the "
                   "data this run trained on</b> (its files are not the ones the run's fingerprint records: rebuilt "
                   "since, or another build of the same dataset); see Provenance.</p>")


def _summary(d: ReportData) -> str:
    s = d.evaluation.scores
    cards = [("miou", "mean IoU", _pct(s["miou"]) + " %", s["miou"]),
             ("pixel_accuracy", "pixel accuracy", _pct(s["pixel_accuracy"]) + " %", s["pixel_accuracy"]),
             ("mean_class_accuracy", "mean class accuracy", _pct(s["mean_class_accuracy"]) + " %",
              s["mean_class_accuracy"]),
             ("loss", "eval loss", f"{s['loss']:.4f}", s["loss"])]
    html_cards = "".join(f'<div class="card" data-metric="{key}" data-value="{escape(repr(value))}">'
                         f'<div class="value">{text}</div><div class="label">{label}</div></div>'
                         for key, label, text, value in cards)
    return section("summary", "Summary", f'<div class="cards">{html_cards}</div>')


def _curves(d: ReportData) -> str:
    if d.curves is None:
        body = '<p class="note">No metrics.jsonl in the work directory, so no curves.</p>'
    else:
        body = (f'<img class="figure" src="{png_uri(d.curves)}" alt="loss and mean IoU against training step">'
                '<p class="note">Lines: training (mean over each logging window); dots: evaluation. The training '
                'loss is the configured objective (class weights, Dice or Lovasz terms), the evaluation loss plain '
                'cross-entropy: the two do not compare. Dashed lines: resumes, listed below the plots with the '
                'settings they changed (also under Provenance); a curve is not joined across a change of what it '
                'measures.</p>')
    return section("curves", "Training curves", body)


def _class_table(d: ReportData) -> str:
    s, lm = d.evaluation.scores, d.label_map
    recall = class_recall(d.evaluation.confusion)
    train_share = d.train_counts / max(d.train_counts.sum(), 1)
    eval_counts = d.evaluation.confusion.sum(axis=1)
    eval_share = eval_counts / max(eval_counts.sum(), 1)
    shares = [train_share] if d.evaluation.split == d.train_split else [train_share, eval_share]
    rows = "".join(_class_row(c, s[f"iou/{c.name}"], recall[c.id], [share[c.id] for share in shares])
                   for c in lm.classes)
    splits = [d.train_split, d.evaluation.split][:len(shares)]
    head = ("<tr><th>class</th><th class=\"num\">id</th><th>IoU (%)</th><th class=\"num\">accuracy (%)</th>"
            + "".join(f"<th class=\"num\">{escape(split)} pixels (%)</th>" for split in splits) + "</tr>")
    foot = (f"<tr><td>mean</td><td></td><td>{_iou_cell(s['miou'])}</td>"
            f"<td class=\"num\">{_pct(s['mean_class_accuracy'])}</td>" + "<td></td>" * len(shares) + "</tr>")
    note = ('<p class="note">Accuracy is the share of a class\'s pixels predicted as that class (recall). '
            "A class absent from both the labels and the predictions of this split has no IoU (–) and is left "
            "out of the mean.</p>")
    return section("classes", "Per-class results",
                   f'<table class="classes"><thead>{head}</thead><tbody>{rows}</tbody>'
                   f"<tfoot>{foot}</tfoot></table>{note}")


def _class_row(c, iou, recall, shares: list) -> str:
    r, g, b = c.color
    return (f'<tr data-class="{escape(c.name)}" data-iou="{escape(repr(iou))}">'
            f'<td><span class="swatch" style="background:rgb({r},{g},{b})"></span>{escape(c.name)}</td>'
            f'<td class="num">{c.id}</td><td>{_iou_cell(iou)}</td><td class="num">{_pct(recall)}</td>'
            + "".join(f'<td class="num">{100 * share:.1f}</td>' for share in shares) + "</tr>")


def _iou_cell(iou: float | None) -> str:
    width = 0 if iou is None else round(100 * iou, 1)
    return f'<div class="iou"><span class="bar"><span style="width:{width}%"></span></span>{_pct(iou)}</div>'


def _confusion(d: ReportData) -> str:
    body = (f'<img class="figure square" src="{png_uri(d.confusion_png)}" alt="normalised confusion matrix">'
            '<p class="note">Rows are the true class, columns the predicted class; each row is normalised to 1 '
            "(the diagonal is the class accuracy). Ignored pixels count nowhere.</p>")
    return section("confusion", "Confusion matrix", body)


def _frequencies(d: ReportData) -> str:
    splits = f"<b>{escape(d.train_split)}</b> split"
    if d.evaluation.split != d.train_split:
        splits += f" (solid) and of the <b>{escape(d.evaluation.split)}</b> split (hatched)"
    body = (f'<img class="figure" src="{png_uri(d.frequency_png)}" alt="class pixel frequencies">'
            f'<p class="note">Share of the labelled pixels of the {splits}. Rare classes are usually the hard '
            "ones.</p>")
    return section("frequencies", "Class pixel frequencies", body)


def _examples(d: ReportData, which: str) -> str:
    shown = d.best if which == "best" else d.worst
    title = f"{which.capitalize()} {len(shown)} image{'s' * (len(shown) != 1)} by mean IoU"
    if not shown:
        why = "None asked for (--k 0)." if d.k == 0 else "Not enough evaluated images to show any."
        return section(which, title, f'<p class="note">{why}</p>')
    order = "best first" if which == "best" else "worst first"
    fewer = f" ({d.k} asked for; the split has too few images for both lists)" if len(shown) < d.k else ""
    intro = (f'<p class="note">Ranked by the mean IoU of each image alone, {order}{fewer}. Errors panel: wrong '
             "pixels in red, correct ones dimmed; ignored pixels light grey here and in the ground truth.</p>")
    return section(which, title, intro + _legend(d.label_map)
                   + "".join(_example_html(e, rank) for rank, e in enumerate(shown, 1)))


def _legend(label_map) -> str:
    from streetseg_jax.visualize import ERROR_COLOR, IGNORE_GREY
    items = [(c.name, c.color) for c in label_map.classes]
    items += [("wrong (errors panel)", ERROR_COLOR), ("ignored", IGNORE_GREY)]
    return '<div class="legend">' + "".join(
        f'<span><i class="swatch" style="background:rgb{tuple(color)}"></i>{escape(name)}</span>'
        for name, color in items) + "</div>"


def _example_html(e: Example, rank: int) -> str:
    panels = "".join(f'<figure><img class="{_panel_class(title, e.enlarged)}" src="{uri}" alt="{escape(title)}">'
                     f"<figcaption>{escape(title)}</figcaption></figure>" for title, uri in e.panels.items())
    return (f'<div class="example" data-rank="{rank}" data-index="{e.index}" data-miou="{escape(repr(e.miou))}">'
            f'<div class="caption"><span class="rank">#{rank}</span> <code>{escape(e.name)}</code>'
            f' <span class="stat">mIoU <b>{_pct(e.miou)} %</b></span>'
            f' <span class="stat">pixel accuracy <b>{_pct(e.pixel_accuracy)} %</b></span></div>'
            f'<div class="panels">{panels}</div></div>')


def _panel_class(title: str, enlarged: bool) -> str:
    if title == "image":
        return "photo"
    return "mask sharp" if enlarged else "mask"


def _provenance(d: ReportData) -> str:
    config = dict(d.config)
    prov = config.pop("provenance", None)
    prov = prov if isinstance(prov, dict) else {}
    dataset = prov.get("dataset", {})
    devices = prov.get("devices", {})
    facts = [("dataset", f"{config.get('dataset', '?')} (version {dataset.get('version', '?')})"),
             ("dataset fingerprint", dataset.get("fingerprint", "?")),
             ("scored data", d.data["directory"] + {
                 True: f" (fingerprint {d.data['fingerprint']}, the data the run trained on)",
                 False: f" (fingerprint {d.data['fingerprint']}, not the data the run trained on)",
                 None: " (the run recorded no fingerprint to compare with)"}[d.data["trained_on"]]),
             ("git commit", prov.get("git_commit", "?")),
             ("python", prov.get("python", "?")),
             ("packages", ", ".join(f"{k} {v}" for k, v in prov.get("packages", {}).items()) or "?"),
             ("devices", f"{devices.get('count', '?')} × {devices.get('kind', '?')}, "
                         f"{devices.get('processes', '?')} process(es)" if devices else "?"),
             ("model", ", ".join(f"{k}={v}" for k, v in config.get("model", {}).items())),
             ("training", _training(config, run_starts(d.metrics))), *_warm_start(config, run_starts(d.metrics)),
             *_training_time(d.metrics)]
    rows = "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(v)}</code></td></tr>" for k, v in facts)
    body = (f'<table class="facts">{rows}</table><details><summary>Full config (from {escape(d.config_source)})'
            '</summary>'
            f"<pre>{escape(json.dumps(config, indent=1, sort_keys=True))}</pre></details>")
    return section("provenance", "Provenance", body)


def _training(config: dict, starts: list[dict]) -> str:
    """Steps (the last number: the history says a resume's extension), batch, optimiser and loss, these each with
    the step a resume changed it at (visualize.setting_history)."""
    def setting(key):
        return setting_history(starts, key, config.get(key, "?"))
    return (f"{config.get('num_train_steps', '?')} steps, batch {setting('batch_size')}, {setting('optimizer')} lr "
            f"{setting('learning_rate')} ({setting('lr_schedule')}), loss {setting('loss')}")


def _warm_start(config: dict, starts: list[dict]) -> list[tuple[str, str]]:
    """The "warm start" row: the run whose weights the training started from, its checkpoint and what became of
    the classifier head (the first start's record); none for a run that started afresh."""
    took = (starts[0].get("init_from") if starts else None) or {}
    given = [s["changed"]["init_from"][0] for s in starts if "init_from" in s.get("changed", {})]
    source = took.get("from") or (given[0] if given else config.get("init_from"))  # as the run began, not resumed
    if not source:
        return []
    head = took.get("head", "what became of the classifier head is not recorded (a run before 2026-12-08)")
    return [("warm start", f"from {source}" + (f" ({took['checkpoint']} checkpoint)" if "checkpoint" in took else "")
             + f"; {head}")]


def _training_time(metrics: list[dict]) -> list[tuple[str, str]]:
    """The "training time" and "history" rows of the provenance table, from metrics.jsonl; none without it."""
    history = run_history(metrics)
    if not history:
        return []
    rows = [("training time", f"{hms(history[-1]['elapsed'])} to step {history[-1]['step']} (start-up and "
                              "evaluation included; the time between a stop and its resume left out)")]
    return rows + [("history", "; ".join(history_lines(run_starts(metrics))) or "never resumed")]


# -------------------------------------------------------------------------------------------------------------------
# Putting it together
# -------------------------------------------------------------------------------------------------------------------
def build_report(workdir: str | Path, split: str | None = None, checkpoint: str | int = "best", k: int = 4,
                 data_dir: str | None = None, flip_tta: bool | None = None, extra_scales: tuple | None = None,
                 output: str | Path | None = None) -> Path:
    """Evaluate `checkpoint` of the run in `workdir` on `split` and write the page to `output`, by default
    workdir/report.html (page_name: another split, checkpoint, TTA or data named in the file's name, so that one
    page does not replace the other); returns its path.
    Test-time augmentation as the run evaluated unless `flip_tta` / `extra_scales` say otherwise (see load_run).
    Scores evaluate wrote for the same checkpoint, TTA and data are read rather than computed again."""
    workdir = Path(workdir).resolve()
    run = load_run(workdir, checkpoint, flip_tta, extra_scales)
    config = run.config
    split = split or config.eval_split
    eval_source = load_checked_split(run, split, data_dir)
    train_source = load_checked_split(run, config.train_split, data_dir)
    scored = scored_data(workdir, run, data_dir)
    recorded = recorded_evaluation(workdir, run, split, checkpoint, scored, len(eval_source))
    if recorded:
        evaluation, path = recorded
        print(f"scores of step {run.step} on {split} from {path}, which evaluate wrote for this checkpoint, "
              "test-time augmentation and data (remove it to score again)", file=sys.stderr)
    else:
        evaluation = evaluate_split(run, eval_source, split)
    data = _report_data(workdir, run, k, evaluation, eval_source, train_source, scored)
    differs = (split if split != config.eval_split else None, run.step if checkpoint != "best" else None,
               flip_tta, extra_scales, other_data(scored))
    data.variant = variant_text(*differs)
    return atomic.write_text(output or workdir / page_name(*differs), render_html(data))


def page_name(split: str | None, step: int | None, flip_tta: bool | None, extra_scales: tuple | None,
              other_data: str | None) -> str:
    """report.html, or, so that no page replaces the run's own, with what differs from it: _<split> (not the eval
    split), _step<N> (not the best checkpoint), _flip_tta / _no_flip_tta and _scales-<S>-... / _no_extra_scales
    (TTA flags given), _data-<fingerprint[:8]> (data other than the run trained on)."""
    parts = [f"_{split_file_name(split)}" if split is not None else "",
             f"_step{step}" if step is not None else "",
             "" if flip_tta is None else "_flip_tta" if flip_tta else "_no_flip_tta",
             "" if extra_scales is None else ("_scales-" + "-".join(f"{s:g}" for s in extra_scales) if extra_scales
                                              else "_no_extra_scales"),
             f"_data-{other_data}" if other_data else ""]
    return "report" + "".join(parts) + ".html"


def variant_text(split: str | None, step: int | None, flip_tta: bool | None, extra_scales: tuple | None,
                 other_data: str | None) -> str:
    """page_name's parts in words, for the page's title: "split train[0:16], step 40, no flip TTA"."""
    parts = [f"split {split}" if split is not None else "", f"step {step}" if step is not None else "",
             "" if flip_tta is None else "flip TTA" if flip_tta else "no flip TTA",
             "" if extra_scales is None else ("scales " + ", ".join(f"{s:g}" for s in extra_scales) if extra_scales
                                              else "no extra scales"),
             f"data {other_data}" if other_data else ""]
    return ", ".join(part for part in parts if part)


def _report_data(workdir, run, k, evaluation, eval_source, train_source, scored: dict) -> ReportData:
    best, worst = rank_images(evaluation.image_miou, k)
    shown = {which: [example(run, eval_source, i, evaluation.image_miou[i], evaluation.image_accuracy[i])
                     for i in indices] for which, indices in (("best", best), ("worst", worst))}
    lm, config = run.label_map, run.config
    train_counts = train_pixel_counts(train_source, lm.num_classes)
    recorded, config_source = _recorded_config(workdir, config)
    metrics = read_metrics(workdir / "metrics.jsonl")
    return ReportData(
        title=f"Run report: {workdir.name}", checkpoint=run.checkpoint, step=run.step, label_map=lm,
        evaluation=evaluation, train_split=config.train_split, train_counts=train_counts,
        best=shown["best"], worst=shown["worst"], k=k, curves=curves_png(metrics),
        confusion_png=confusion_png(evaluation.confusion, lm.names),
        frequency_png=frequency_png(_frequency_series(config.train_split, train_counts, evaluation), lm),
        config=recorded, inference=_inference_setting(config), data=scored, config_source=config_source,
        metrics=metrics)


def _recorded_config(workdir: Path, checkpoint_config) -> tuple[dict, str]:
    """(config.json with its provenance, or else the checkpoint's config; where it comes from, as the page says)."""
    try:
        recorded = json.loads((workdir / "config.json").read_text())
        if isinstance(recorded, dict):
            return recorded, "config.json"
        why = "config.json is not a JSON object"
    except FileNotFoundError:
        why = "no config.json in the work directory"
    except (OSError, ValueError) as e:
        why = f"config.json cannot be read: {e}"
    return checkpoint_config.to_dict(), f"the checkpoint ({why})"


def _inference_setting(config) -> str:
    scales = network_scales(config)
    return (f"network at scale{'s' * (len(scales) > 1)} {', '.join(f'{s:g}' for s in scales)}"
            + (", flip-averaged" if config.get("eval_flip_tta", False) else ""))


def _frequency_series(train_split: str, train_counts: np.ndarray, evaluation: Evaluation) -> list:
    """The train split's pixel counts, and the evaluated split's (its confusion rows: the same labelled pixels that
    labels.stats.class_pixel_counts would count, without reading the split again) when it is another split."""
    series = [(train_split, train_counts)]
    if evaluation.split != train_split:
        series.append((evaluation.split, evaluation.confusion.sum(axis=1)))
    return series


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    if args.k < 0:
        fail(f"--k must be 0 or more, got {args.k}")
    if args.output and (Path(args.output).is_dir() or args.output.endswith(os.sep)):
        fail(f"--output {args.output} is a folder: give the page's file name, e.g. {Path(args.output) / 'report.html'}")
    if args.output:
        check_output_file(args.output, ".html", ".htm")
    folder = Path(args.output).parent if args.output else Path(args.workdir)
    path = score_command(args.workdir, folder, lambda: build_report(
        args.workdir, args.split, args.checkpoint, args.k, args.data_dir, args.flip_tta, args.extra_scales,
        args.output))
    print(f"wrote {path}")


if __name__ == "__main__":
    run_command(main, "no page was written")
