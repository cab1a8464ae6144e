"""The evaluate command: a trained run's checkpoint scored on a split (the scoring itself: `evaluator`), its results
written and printed; also what the report reads (`load_run`, `evaluate_split`, `confusion_png`).

Command line: `python -m streetseg_jax.evaluate --workdir DIR [--split S] [--data_dir D] [--checkpoint
best|latest|STEP] [--[no_]flip_tta] [--extra_scales S,...|none] [--output DIR]` scores a trained run's checkpoint on
a split (default: its config's `eval_split`), prints the per-class IoU table, mIoU, pixel accuracy and per-image
mIoU (summary and worst images), and writes them to DIR/eval/<split>.json with the row-normalised confusion matrix
as DIR/eval/<split>_confusion.png (<split>_flip_tta.json and <split>_flip_tta_confusion.png with flip TTA, which
follows the run's eval_flip_tta unless --flip_tta or --no_flip_tta says otherwise; likewise _multiscale with
the run's own multi-scale TTA, its eval_extra_scales, and _scales-0.5-1 with other --extra_scales; --checkpoint latest
or a step adds _step<N>: <split>_step1300.json; data other than the run trained on, --data_dir another build or a
rebuild, adds _data-<the first 8 characters of its fingerprint>, so that the run's own results stay).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from streetseg_jax.cli import (ArgumentParser, add_checkpoint_flag, add_extra_scales_flag, add_flip_tta_flags,
                               check_workdir, fail, hold_while_loading, normalise_argv, quiet_libraries,
                               run_command)


def make_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m streetseg_jax.evaluate",
                            description="Score a trained run on a split at the labels' native resolution.")
    parser.add_argument("--workdir", required=True, help="a training work directory (with checkpoints/)")
    parser.add_argument("--split", help="split to evaluate (default: the config's eval_split); TFDS slices work")
    parser.add_argument("--data_dir", help="where the dataset lives (default: the run's config.data_dir)")
    add_checkpoint_flag(parser, " (its files are named with _step<N>)")
    add_flip_tta_flags(parser, "average each image's logits with its mirror image's (written as "
                       "<split>_flip_tta.json; _multiscale is added with the run's extra scales, _scales-S-... with others)")
    add_extra_scales_flag(parser)
    parser.add_argument("--output", help="folder for the results (default: WORKDIR/eval; for a run you cannot write "
                                         "to)")
    return parser


if __name__ == "__main__":      # --help and a mistyped flag answer before JAX loads (3 s)
    hold_while_loading()
    make_parser().parse_args(normalise_argv(sys.argv[1:]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from streetseg_jax import atomic, sharding  # noqa: E402
from streetseg_jax.evaluator import Evaluator, apply_tta_flags, example_name, network_scales  # noqa: E402
from streetseg_jax.metrics import metrics_from_confusion  # noqa: E402

ANNOTATE_UP_TO = 24     # classes; beyond this the confusion-matrix cells are too small to carry numbers


# -------------------------------------------------------------------------------------------------------------------
# A trained run, loaded and scored (the command line below, and the report)
# -------------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class LoadedRun:
    config: Any                 # ml_collections.ConfigDict the checkpoint was trained with
    label_map: Any              # LabelMap
    evaluator: Evaluator
    params: Any
    model_state: Any
    step: int
    checkpoint: str             # which one was loaded: "best", "latest" or "step N"
    own_extra_scales: tuple = ()    # the run's eval_extra_scales, before --extra_scales (result_stem)


def load_run(workdir: Path, which: str | int, flip_tta: bool | None = None,
             extra_scales: tuple | None = None) -> LoadedRun:
    """The model of a checkpoint ('best', 'latest' or a step), with an Evaluator around it (averaging the logits of
    each image and its mirror image with `flip_tta`, and those of the network at `extra_scales` too; None: as the
    run evaluated, its config's eval_flip_tta and eval_extra_scales)."""
    from streetseg_jax.inference import load_model    # here: inference imports this module

    try:
        trained = load_model(workdir, which)
    except (FileNotFoundError, ValueError) as e:     # nothing to load; a checkpoint damaged or incomplete
        fail(str(e))
    mesh = sharding.make_mesh()
    # The model comes back on one device; the evaluator's batches span the mesh, so the weights must too.
    params, model_state = jax.device_put((trained.params, trained.model_state), sharding.replicated(mesh))
    config = trained.config
    own_extra_scales = tuple(config.get("eval_extra_scales", ()))
    # The split is scored exactly whatever the batch, so fit the batch to the devices of this machine.
    devices = mesh.devices.size
    config.eval_batch_size = -(-config.eval_batch_size // devices) * devices
    apply_tta_flags(config, flip_tta, extra_scales)
    evaluator = Evaluator(trained.graphdef, mesh, trained.label_map, config)
    return LoadedRun(config, trained.label_map, evaluator, params, model_state, trained.step, trained.source,
                     own_extra_scales)


@dataclasses.dataclass
class Evaluation:
    split: str
    confusion: np.ndarray       # int64 (K, K), rows true, columns predicted
    scores: dict                # metrics.metrics_from_confusion of `confusion`, plus "loss"
    image_miou: list            # per image: mIoU, or None for an image with no labelled pixel
    image_accuracy: list        # per image: pixel accuracy, or None for an image with no labelled pixel


def load_checked_split(run: LoadedRun, split: str, data_dir: str | None):
    """The split of the run's dataset, from `data_dir` (None: the run's config.data_dir); exits when the dataset's
    label map is not the one the checkpoint was trained with."""
    from streetseg_jax.data.source import load_split
    from streetseg_jax.labels.label_map import label_map_change, same_classes

    source, label_map, _ = load_split(run.config.dataset, split, data_dir or run.config.data_dir)
    # Only what scores count: colours and aliases (a rebuild that recoloured a class) change no figure.
    trained, now = run.label_map.to_dict(), label_map.to_dict()
    if not same_classes(trained, now):
        change = label_map_change(trained, now)
        fail(f"the label map of {run.config.dataset} in {data_dir or run.config.data_dir} differs from the one the "
             f"checkpoint was trained with ({change}), so its scores would be meaningless")
    return source


def scored_data(workdir: Path, run: LoadedRun, data_dir: str | None) -> dict:
    """Which prepared dataset the scores are of: its folder, its fingerprint (every file) and whether it is the one
    the run trained on, as config.json's fingerprint records it (both None for a run without the record: nothing to
    compare with). A note where it is not: rebuilt since (corrected labels, say), or another build of the same name."""
    from streetseg_jax.data.source import dataset_dir, dataset_fingerprint
    from streetseg_jax.run import recorded_fingerprint

    directory = dataset_dir(run.config.dataset, data_dir or run.config.data_dir)
    recorded = recorded_fingerprint(workdir)
    fingerprint = None if recorded is None else dataset_fingerprint(directory)     # it reads every file
    trained_on = None if recorded is None else fingerprint == recorded
    if trained_on is False:
        print(f"note: {run.config.dataset} at {directory} is not the data this run trained on (its files are not the "
              "ones config.json's fingerprint records: rebuilt since, or another build): the scores are of this data",
              file=sys.stderr)
    return {"directory": str(directory), "fingerprint": fingerprint, "trained_on": trained_on}


def other_data(data: dict) -> str | None:
    """The first 8 characters of the fingerprint of data (scored_data) other than the run trained on, which name
    its results apart from the run's own; None for the run's own data, or where that cannot be told."""
    return data["fingerprint"][:8] if data["trained_on"] is False else None


def evaluate_split(run: LoadedRun, source, split: str) -> Evaluation:
    """One pass over the split: per-image confusion matrices on the device; every total is their sum."""
    scales = len(network_scales(run.config))
    tta = [word for word, used in (("flip", run.config.eval_flip_tta), (f"{scales} scales", scales > 1)) if used]
    which = (f"the {run.checkpoint} checkpoint (step {run.step})" if run.checkpoint in ("best", "latest")
             else f"the checkpoint of step {run.step}")
    print(f"scoring {len(source)} image(s) of {split} with {which}"
          + (f", {' and '.join(tta)} test-time augmentation" if tta else "") + " ...", file=sys.stderr, flush=True)
    with tqdm(total=len(source), unit="image", file=sys.stderr, disable=None, leave=False) as bar:
        shown = None if bar.disable else bar.update     # no terminal: no bar, and no wait for each batch
        sums = run.evaluator.per_image(run.params, run.model_state, source, progress=shown)
    names = run.label_map.names
    confusion = sums["confusion"].sum(axis=0)
    scores = metrics_from_confusion(confusion, names)
    scores["loss"] = float(sums["loss_sum"].sum() / max(sums["pixels"].sum(), 1.0))
    per_image = [metrics_from_confusion(c, names) for c in sums["confusion"]]
    return Evaluation(split, confusion, scores, [s["miou"] for s in per_image],
                      [s["pixel_accuracy"] for s in per_image])


def rank_images(image_miou: list, k: int) -> tuple[list[int], list[int]]:
    """(best first, worst first) indices, at most k each and never the same image in both lists.

    Images without an mIoU (nothing labelled) are left out; ties keep source order.
    """
    scored = [i for i, m in enumerate(image_miou) if m is not None]
    n_best, n_worst = min(k, math.ceil(len(scored) / 2)), min(k, len(scored) // 2)
    best = sorted(scored, key=lambda i: (-image_miou[i], i))[:n_best]
    worst = [i for i in sorted(scored, key=lambda i: (image_miou[i], i)) if i not in best][:n_worst]
    return best, worst


def confusion_png(confusion: np.ndarray, names: list[str], title: str | None = None) -> bytes:
    """Row-normalised heatmap: each row is where that true class's pixels went. Empty rows stay blank."""
    from streetseg_jax.visualize import figure_png, new_figure
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.where(rows > 0, confusion / np.maximum(rows, 1), np.nan)
    k = len(names)
    side = max(4.0, 0.55 * k + 1.5)
    fig = new_figure(figsize=(side + 1.2, side))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=40, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= ANNOTATE_UP_TO:
        _annotate_cells(ax, share)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="share of the true class's pixels")
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return figure_png(fig)


def result_title(result: dict) -> str:
    """What a result is of, for its picture: a PNG sent on its own says which run, split, checkpoint and TTA."""
    scales = [result["eval_scale"], *result["eval_extra_scales"]]
    checkpoint, step = result["checkpoint"], result["step"]
    which = f"{checkpoint} checkpoint (step {step})" if checkpoint in ("best", "latest") else f"step {step}"
    lines = [f"{Path(result['workdir']).name}: {result['dataset']} {result['split']}, {which}",
             f"mIoU {_fraction(result['miou'])}, network at scale{'s' * (len(scales) > 1)} "
             + ", ".join(f"{s:g}" for s in scales) + (", flip-averaged" if result["flip_tta"] else "")]
    if other_data(result["data"]):
        lines.append(f"data other than the run trained on ({other_data(result['data'])})")
    return "\n".join(lines)


def _annotate_cells(ax, share: np.ndarray) -> None:
    for (r, c), value in np.ndenumerate(share):
        if np.isnan(value):
            ax.text(c, r, "–", ha="center", va="center", fontsize=8, color="#999")
        elif value >= 0.005:  # a wall of 0.00 hides the cells that matter
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if value > 0.55 else "#222")


# -------------------------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------------------------
WORST_SHOWN = 5     # images listed by name as the worst of a split


def evaluate_workdir(workdir: str | Path, split: str | None = None, data_dir: str | None = None,
                     checkpoint: str | int = "best", flip_tta: bool | None = None,
                     extra_scales: tuple | None = None, out_dir: str | Path | None = None) -> tuple[dict, Path, Path]:
    """Score a run's checkpoint on `split`; (the result as written to JSON, its JSON path, the confusion PNG path),
    written into `out_dir` (default: the run's eval/ folder).
    `flip_tta` and `extra_scales` None score as the run evaluated (its config's eval_flip_tta, eval_extra_scales);
    with flip or multi-scale TTA the files are named <split>_flip_tta, <split>_multiscale or
    <split>_flip_tta_multiscale, so they sit beside the plain figures (_scales-0.5-1 for extra scales other than the
    run's, which replaced its own figures); --checkpoint latest or a step adds
    _step<N> (it replaced the best checkpoint's figures), and data other than the run trained on _data-<its
    fingerprint> (it replaced the run's own figures)."""
    workdir = Path(workdir).resolve()
    run = load_run(workdir, checkpoint, flip_tta, extra_scales)
    split = split or run.config.eval_split
    source = load_checked_split(run, split, data_dir)
    evaluation = evaluate_split(run, source, split)
    data = scored_data(workdir, run, data_dir)        # after the "scoring" line: it reads every file
    file_names, sizes = _names_and_sizes(source)
    result = result_dict(run, evaluation, file_names, workdir)
    result["label_sizes"], result["data"] = sizes, data
    result["per_image"]["worst"] = _worst(result["per_image"]["images"])
    out_dir = results_dir(workdir, out_dir)
    stem = result_stem(run, split, checkpoint, data)
    if out_dir != workdir / "eval":      # the run's own folder holds its own results, wherever the run was then
        _say_whose_results_are_replaced(out_dir / f"{stem}.json", workdir)
    json_path = atomic.write_bytes(out_dir / f"{stem}.json", json.dumps(result, indent=1).encode())
    png_path = atomic.write_bytes(out_dir / f"{stem}_confusion.png",
                                 confusion_png(evaluation.confusion, run.label_map.names, result_title(result)))
    return result, json_path, png_path


def result_stem(run: LoadedRun, split: str, checkpoint: str | int, data: dict) -> str:
    """The name evaluate gives the files of a result: the split, the TTA (_multiscale for the run's own extra
    scales, _scales-0.5-1 for others: they replaced the run's own figures), the checkpoint unless the best (also a
    run's latest, where it has no best) and data other than the run trained on, so none replaces another."""
    extra = tuple(run.config.get("eval_extra_scales", ()))
    scales = "" if not extra else "_multiscale" if extra == run.own_extra_scales else \
        "_scales-" + "-".join(f"{s:g}" for s in extra)
    return (split_file_name(split) + ("_flip_tta" if run.config.eval_flip_tta else "") + scales
            + ("" if checkpoint == "best" else f"_step{run.step}")
            + (f"_data-{other_data(data)}" if other_data(data) else ""))


def recorded_evaluation(workdir: Path, run: LoadedRun, split: str, checkpoint: str | int, data: dict,
                        num_images: int) -> tuple[Evaluation, Path] | None:
    """The Evaluation evaluate wrote into the run's eval/ folder for this checkpoint, TTA and data (scored_data's
    fingerprint), written after the checkpoint was; None where there is none such, or it cannot be told."""
    path = results_dir(workdir) / f"{result_stem(run, split, checkpoint, data)}.json"
    try:
        result = json.loads(path.read_text())
        written = path.stat().st_mtime
        scales = network_scales(run.config)
        same = (result["workdir"] == str(workdir) and result["split"] == split and result["step"] == run.step
                and result["data"]["fingerprint"] == data["fingerprint"] is not None
                and result["num_images"] == num_images == len(result["per_image"]["images"])
                and result["flip_tta"] == bool(run.config.eval_flip_tta)
                and [result["eval_scale"], *result["eval_extra_scales"]] == list(scales)
                and list(result["iou"]) == run.label_map.names
                and written >= _saved_at(workdir, run.step))
        if not same:
            return None
        confusion = np.array(result["confusion"], np.int64)
        images = result["per_image"]["images"]
        scores = {**metrics_from_confusion(confusion, run.label_map.names), "loss": result["loss"]}
        return Evaluation(split, confusion, scores, [row["miou"] for row in images],
                          [row["pixel_accuracy"] for row in images]), path
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _saved_at(workdir: Path, step: int) -> float:
    """When the checkpoint of `step` was last written (latest/ or best/); infinity where neither is there."""
    times = [folder.stat().st_mtime for folder in (workdir / "checkpoints").glob(f"*/{step}") if folder.is_dir()]
    return max(times, default=math.inf)


def results_dir(workdir: str | Path, output: str | Path | None = None) -> Path:
    """Where evaluate writes: `output`, by default the run's eval/ folder."""
    return Path(output).resolve() if output else Path(workdir).resolve() / "eval"


def _say_whose_results_are_replaced(path: Path, workdir: Path) -> None:
    """An --output folder shared by several runs: the same split's results of another run are replaced, said so."""
    try:
        before = json.loads(path.read_text()).get("workdir")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(before, str) and Path(before).resolve() != workdir:
        print(f"note: {path} held the results of {before}; they are replaced by this run's", file=sys.stderr)


def result_dict(run, evaluation, file_names: list[str], workdir: Path) -> dict:
    """The JSON-ready result: overall figures, per-class IoU, the confusion matrix and per-image figures."""
    names, scores, scales = run.label_map.names, evaluation.scores, network_scales(run.config)
    return {
        "workdir": str(workdir), "dataset": run.config.dataset, "split": evaluation.split,
        "checkpoint": run.checkpoint, "step": run.step, "num_images": len(file_names),
        "eval_scale": scales[0], "eval_extra_scales": list(scales[1:]), "flip_tta": bool(run.config.eval_flip_tta),
        "miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
        "mean_class_accuracy": scores["mean_class_accuracy"], "loss": scores["loss"],
        "iou": {name: scores[f"iou/{name}"] for name in names},
        "class_pixels": dict(zip(names, evaluation.confusion.sum(axis=1).tolist())),
        "confusion": evaluation.confusion.tolist(),
        "per_image": per_image_summary(evaluation, file_names),
    }


def per_image_summary(evaluation: Evaluation, file_names: list[str]) -> dict:
    """Per image: mIoU over the classes in its labels or its prediction, and pixel accuracy; their spread."""
    images = [{"file_name": name, "miou": miou, "pixel_accuracy": accuracy}
              for name, miou, accuracy in zip(file_names, evaluation.image_miou, evaluation.image_accuracy)]
    values = np.array([row["miou"] for row in images if row["miou"] is not None])
    spread = {f"{what}_miou": float(fn(values)) if values.size else None
              for what, fn in (("mean", np.mean), ("median", np.median), ("min", np.min), ("max", np.max))}
    return {**spread, "images": images}


def _worst(images: list[dict]) -> list[dict]:
    _, worst = rank_images([row["miou"] for row in images], WORST_SHOWN)
    return [{"index": i, **images[i]} for i in worst]


def _names_and_sizes(source) -> tuple[list[str], list[str]]:
    """File names in source order, and the distinct label sizes ("HxW") the split is scored at."""
    names, sizes = [], {}
    for i in range(len(source)):
        record = source[i]
        names.append(example_name(record, i))
        height, width = record["segmentation_mask"].shape[:2]
        sizes[f"{height}x{width}"] = None
    return names, list(sizes)


def format_result(result: dict) -> str:
    """The table a person reads: per-class IoU, the overall figures, per-image mIoU."""
    width = max(20, *map(len, result["iou"]))          # traffic_sign_back_side pushed its IoU out of line
    lines = [_heading(result), "", f"{'class':<{width}} {'IoU':>7}"]
    lines += [f"{name:<{width}} {_fraction(iou):>7}" for name, iou in result["iou"].items()]
    lines.append("")
    for label, key in (("mIoU", "miou"), ("pixel accuracy", "pixel_accuracy"),
                       ("mean class accuracy", "mean_class_accuracy")):
        lines.append(f"{label:<{width}} {_fraction(result[key]):>7}")
    per_image = result["per_image"]
    spread = ", ".join(f"{what} {_fraction(per_image[f'{what}_miou'])}" for what in ("mean", "median", "min", "max"))
    worst = ", ".join(f"{row['file_name']} {_fraction(row['miou'])}" for row in per_image["worst"])
    lines += ["", f"per-image mIoU: {spread}", f"worst images: {worst or '-'}"]
    if not any(result["class_pixels"].values()):
        lines.append(f"nothing to score: no pixel of the {result['num_images']} image(s) is labelled (every one is "
                     "the ignore id)")
    return "\n".join(lines)


def _extra(result: dict) -> str:
    extra = result["eval_extra_scales"]
    return f" (and {', '.join(f'{s:g}' for s in extra)}, logits averaged)" if extra else ""


def _heading(result: dict) -> str:
    return (f"{result['dataset']} {result['split']}: {result['num_images']} images, checkpoint {result['checkpoint']} "
            f"(step {result['step']}); scored at the labels' native resolution ({', '.join(result['label_sizes'])}) "
            f"with the network at eval_scale {result['eval_scale']:g}{_extra(result)}"
            f"{' with flip TTA' if result['flip_tta'] else ''}; "
            "ignore pixels count nowhere")


def _fraction(value: float | None) -> str:
    """A fraction as training, `compare` and metrics.jsonl print it (0.1710, not 17.10%)."""
    return "-" if value is None else f"{value:.4f}"


def split_file_name(split: str) -> str:
    """A split as part of a file name: a TFDS slice says its range ("test[:5]" -> test_0-5, "validation[50%:]" ->
    validation_50pct-end); any other character a file name should not hold becomes _."""
    sliced = lambda m: f"{m[1]}_{m[2] or 0}-{m[3] or 'end'}"     # noqa: E731
    split = re.sub(r"(\w+)\[\s*([-\w%]*)\s*:\s*([-\w%]*)\s*\]", sliced, split).replace("%", "pct")
    return re.sub(r"[^\w.+-]", "_", split)


def score_command(workdir: str, out: str | Path, score):
    """score() as the commands that score a checkpoint (this one, the report) run it: the work directory checked
    first, and the folder `out` that the results go to (a read-only one is refused before the evaluation, not
    after it), orbax's and TFDS's logging quiet, and a missing dataset or split, or a file that cannot be read or
    written, said in a line."""
    check_workdir(workdir)
    _check_writable(Path(out))
    from streetseg_jax.data.source import DatasetNotFoundError, UnknownSplitError
    quiet_libraries()
    sharding.split_cpu_into_cores(8)        # at most 8 devices: evaluation rounds its batch up to a multiple
    try:
        return score()
    except (DatasetNotFoundError, UnknownSplitError, OSError) as e:
        fail(str(e))


def _check_writable(folder: Path) -> None:
    """Refuses a results folder that cannot be made or written: `folder`, or the first of its parents that exists
    (where it would be made)."""
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        fail(f"{existing} is a file, not a folder, and the results are written there (--output chooses where)")
    if not os.access(existing, os.W_OK):
        fail(f"{folder} cannot be written to, and the results are written there (--output chooses where)")


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    out_dir = results_dir(args.workdir, args.output)
    result, json_path, png_path = score_command(args.workdir, out_dir, lambda: evaluate_workdir(
        args.workdir, args.split, args.data_dir, args.checkpoint, args.flip_tta, args.extra_scales, out_dir))
    print(format_result(result))
    print(f"\nwrote {json_path} and {png_path}")


if __name__ == "__main__":
    run_command(main, "no result was written")
