"""Compare training runs side by side: `python -m streetseg_jax.compare RUN RUN... [--output compare.html]`.

A RUN is a work directory, or a folder of them (runs/). Reads only each work directory's metrics.jsonl and config.json
(no checkpoint, no dataset, no JAX), so it also works while the runs train (a run training on this machine is marked
so beside its steps). Prints a table (steps, training time,
images/second, best and final eval mIoU) and the config keys whose values differ, and writes one self-contained HTML
page (as the run report: images embedded, CSS inline, no JavaScript): every run's eval mIoU against step and against
training time, its train loss, the per-class IoU at each run's best evaluation, what `python -m
streetseg_jax.evaluate` wrote into its eval/ folder (test-split scores, TTA variants), and the config differences.
Runs of one recipe with different seeds (configs equal but for the seed) are summarised together: mean, standard
deviation and range of their eval mIoU. Runs evaluated on different data are flagged, since their mIoUs do not
compare.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import sys
from pathlib import Path

from streetseg_jax import atomic
from streetseg_jax.cli import ArgumentParser, check_output_file, fail, normalise_argv, run_command
from streetseg_jax.page import escape, html_page, png_uri, section
from streetseg_jax.visualize import (OBJECTIVE_KEYS, SCORING_KEYS, best_eval, breaks, broken_at, eval_rows,
                                     figure_png, flatten, history_lines, hms, new_figure, read_metrics, run_history,
                                     run_starts, setting_history, value_text)

MISSING = "–"   # a config key one run lacks, or a figure it has not logged
# Keys whose differences make the runs' eval mIoUs incomparable (scored on other images or other labels).
SAME_DATA_KEYS = ("dataset", "provenance.dataset.fingerprint", "eval_split")
# Keys that may differ between runs of one recipe with different seeds (where the data lives, which code and machine).
NOT_THE_RECIPE = ("seed", "data_dir", "provenance.")
# Provenance that is no setting of the run: which keys its command line gave (their values are compared as keys).
NOT_A_SETTING = ("provenance.overrides",)
# Tables wider than the page (many runs, long paths) scroll sideways; long values wrap at their spaces, and a
# table's first column (names, keys) is never broken.
EXTRA_CSS = (".wide { overflow-x:auto; }\n.wide td { overflow-wrap:break-word; }\n"
             ".wide td:first-child { white-space:nowrap; }\n")


def _saved_step(workdir: Path) -> int:
    """The step of the latest whole checkpoint in `workdir` (orbax names it by its step once it is complete), or 0."""
    latest = workdir / "checkpoints" / "latest"
    return max((int(p.name) for p in latest.iterdir() if p.name.isdigit()), default=0) if latest.is_dir() else 0


@dataclasses.dataclass
class Run:
    name: str
    path: Path
    config: dict            # config.json flattened to dotted keys ({} without one)
    history: list[dict]     # visualize.run_history: one row per step
    evaluations: dict       # eval/<name>.json written by `evaluate` -> its mIoU, step and checkpoint
    starts: list = dataclasses.field(default_factory=list)     # visualize.run_starts: each start, its changes

    @property
    def evals(self) -> list[dict]:
        return eval_rows(self.history)

    @property
    def best(self) -> dict | None:
        return best_eval(self.history)

    @property
    def final(self) -> dict | None:
        return self.evals[-1] if self.evals else None

    @property
    def finished(self) -> bool:
        return self.history[-1]["step"] >= self.config.get("num_train_steps", float("inf"))

    @property
    def steps(self) -> str:
        """Steps done: the last logged, or the latest checkpoint's where a stop saved a later one (25/300 was shown
        of a run stopped and saved at step 29)."""
        done = f"{max(self.history[-1]['step'], _saved_step(self.path))}/{self.config.get('num_train_steps', '?')}"
        return f"{done} (training)" if training_now(self.path) else done

    @property
    def images_per_second(self) -> float | None:
        rates = [row["train/images_per_second"] for row in self.history if "train/images_per_second" in row]
        return statistics.median(rates) if rates else None


def training_now(workdir: Path) -> bool:
    """Whether a run trains in `workdir` now, on this machine: the process its .lock names (run._take_lock) lives
    and is a streetseg_jax command whose --workdir is this one (a process id can be reused). Read, never locked, so
    that a run starting meanwhile is not refused. Linux only (/proc); elsewhere False."""
    try:
        owner = re.fullmatch(r"process (\d+) on (.*?)(?:, run \w+)?", (workdir / ".lock").read_text().strip())
        if owner is None or owner[2] != platform.node():
            return False
        args = [os.fsdecode(a) for a in Path(f"/proc/{owner[1]}/cmdline").read_bytes().split(b"\0")]
        where = Path(os.readlink(f"/proc/{owner[1]}/cwd"))
    except OSError:
        return False
    given = [text.removeprefix("--workdir=") for text in args if text.startswith("--workdir=")]
    given += [after for flag, after in zip(args, args[1:]) if flag == "--workdir"]
    return any("streetseg_jax" in a for a in args) and any(      # `~` as normalise_argv expanded it there
        (where / os.path.expanduser(path)).resolve() == workdir.resolve() for path in given)


def load_runs(paths: list[Path]) -> list[Run]:
    paths = [run for path in paths for run in _work_directories(path)]
    resolved = [p.resolve() for p in paths]
    for p, r in zip(paths, resolved):
        if resolved.count(r) > 1:
            fail(f"{p} is given twice")
    runs = [_load(path, name) for path, name in zip(paths, run_names(resolved))]
    empty = [path for path, run in zip(paths, runs) if run is None]
    if len(empty) == len(paths):
        fail(f"{', '.join(map(str, empty))}: no logged steps in metrics.jsonl: not a training work directory, or it "
             "has not logged its first step yet")
    for path in empty:      # a run that has just started, or was stopped before its first log
        print(f"left out {path}: no logged steps in metrics.jsonl yet", file=sys.stderr)
    return [run for run in runs if run is not None]


def _work_directories(path: Path) -> list[Path]:
    """`path` itself when it is a work directory (or no folder of them), else the work directories in it."""
    if not path.is_dir():
        fail(f"{path} is not a directory (expected a training work directory, or a folder of them)")
    if (path / "metrics.jsonl").exists():
        return [path]
    inside = sorted(p for p in path.iterdir() if (p / "metrics.jsonl").is_file() or (p / "config.json").is_file())
    return inside or [path]


def _load(path: Path, name: str) -> Run | None:
    """The run in `path`; None when it has logged no step."""
    records = read_metrics(path / "metrics.jsonl")
    history = run_history(records)
    if not history:
        return None
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
    except (OSError, ValueError) as e:      # one damaged run does not stop the comparison of the others
        config = {}
        print(f"warning: cannot read {config_path} ({e}): its settings are left out", file=sys.stderr)
    return Run(name, path, flatten(config if isinstance(config, dict) else {}), history, _evaluations(path / "eval"),
               run_starts(records))


def _evaluations(folder: Path) -> dict[str, dict]:
    """`python -m streetseg_jax.evaluate`'s results, by file name
    (<split>[_flip_tta][_multiscale|_scales-S-...][_step<N>][_data-*]); unreadable ones left out."""
    out = {}
    for path in sorted(folder.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(result, dict) and isinstance(result.get("miou"), float):
            out[path.stem] = result
    return out


def run_names(paths: list[Path]) -> list[str]:
    """Each run's shortest trailing path that no other run shares: runs/a/seed0, runs/b/seed0 -> a/seed0, b/seed0."""
    parts = [p.parts for p in paths]
    for n in range(1, max(map(len, parts))):
        names = ["/".join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]     # only the whole paths differ


def differences(runs: list[Run]) -> dict[str, list[str]]:
    """Config keys (nested ones dotted, provenance's among them, NOT_A_SETTING left out) whose values differ, each
    with every run's value; a setting a resume changed is given with the step it changed at (setting_text)."""
    keys = list(dict.fromkeys(key for run in runs for key in run.config if key not in NOT_A_SETTING))
    out = {}
    for key in keys:
        values = [setting_text(run, key) for run in runs]
        if len(set(values)) > 1:
            out[key] = values
    return out


def setting_text(run: Run, key: str) -> str:
    """The run's value of `key`, with the step each value began at where a resume changed it."""
    return setting_history(run.starts, key, run.config.get(key, MISSING))


def data_warning(runs: list[Run]) -> str | None:
    differ = [key for key in SAME_DATA_KEYS if key in differences(runs)]
    if not differ:
        return None
    return (f"these runs were evaluated on different data ({', '.join(differ)} differ{'s' * (len(differ) == 1)}): "
            "their mIoUs do not compare")


def seed_groups(runs: list[Run]) -> list[tuple[list[Run], list[Run]]]:
    """Runs of one recipe with different seeds: equal configs but for the seed, data_dir and provenance (the dataset's
    fingerprint excepted), in groups of two or more seeds. Each group is one run of each seed (the first finished
    one, else the first), and the reruns of a seed it already has, which are left out of its figures (one seed
    counted twice would narrow the spread)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        recipe = {k: v for k, v in run.config.items() if not k.startswith(NOT_THE_RECIPE)
                  or k == "provenance.dataset.fingerprint"}
        groups.setdefault(json.dumps(recipe, sort_keys=True), []).append(run)
    found = []
    for group in groups.values():
        by_seed: dict[str, Run] = {}
        reruns = []
        for run in sorted(group, key=lambda run: not run.finished):     # a seed's finished run counts first
            seed = value_text(run.config.get("seed"))
            if seed in by_seed:
                reruns.append(run)
            else:
                by_seed[seed] = run
        if len(by_seed) > 1:
            found.append((list(by_seed.values()), reruns))
    return found


def seed_rows(runs: list[Run]) -> list[list[str]]:
    """Per seed group, the final and the best eval mIoU of its finished runs (a run still training would pull the
    mean down): mean, sample standard deviation, lowest..highest."""
    rows = [["runs (one recipe, other seeds)", "seeds", "final eval mIoU", "best eval mIoU"]]
    for group, reruns in seed_groups(runs):
        done = [run for run in group if run.finished and run.final]
        count = str(len(group)) if len(done) == len(group) else f"{len(group)} ({len(done)} finished)"
        names = ", ".join(run.name for run in group)
        if reruns:
            names += f" (left out, a seed again: {', '.join(run.name for run in reruns)})"
        rows.append([names, count, _spread([run.final["eval/miou"] for run in done]),
                     _spread([run.best["eval/miou"] for run in done])])
    return rows


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return MISSING
    return (f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} "
            f"({min(values):.4f}..{max(values):.4f})")


# -------------------------------------------------------------------------------------------------------------------
# What is shown
# -------------------------------------------------------------------------------------------------------------------
def summary_rows(runs: list[Run]) -> list[list[str]]:
    header = ["run", "steps", "training time", "images/s", "best eval mIoU", "at step", "final eval mIoU"]
    rows = [header]
    for run in runs:
        best, final, rate = run.best, run.final, run.images_per_second
        rows.append([run.name, run.steps, hms(run.history[-1]["elapsed"]),
                     MISSING if rate is None else f"{rate:.1f}",
                     _miou(best), MISSING if best is None else str(best["step"]), _miou(final)])
    return rows


def class_ious(runs: list[Run]) -> dict[str, list[float | None]]:
    """Per class, every run's IoU at its best evaluation (None where that run has no such class)."""
    names = list(dict.fromkeys(key[len("eval/iou/"):] for run in runs if run.best
                               for key in run.best if key.startswith("eval/iou/")))
    return {name: [run.best.get(f"eval/iou/{name}") if run.best else None for run in runs] for name in names}


def evaluation_rows(runs: list[Run]) -> list[list[str]]:
    """One row per scoring any run's evaluate results hold (_scoring: split, scales and flip, the best checkpoint or
    a step, the data), in that order, its mIoU in each run with the step scored: equal scorings share a row
    whatever their files are named, and results of other data never do."""
    keyed = {run.name: {_scoring(run, stem, result): result for stem, result in run.evaluations.items()}
             for run in runs}
    keys = sorted({key for scorings in keyed.values() for key in scorings})
    several_data = len({key[1] for key in keys}) > 1
    rows = [["evaluate result"] + [run.name for run in runs]]
    for key in keys:
        cells = [keyed[run.name].get(key) for run in runs]
        rows.append([_scoring_text(key, several_data)] + [MISSING if r is None else
                                                          f"{r['miou']:.4f} (step {r.get('step', '?')})"
                                                          for r in cells])
    return rows


def _scoring(run: Run, stem: str, result: dict) -> tuple:
    """What an evaluate result scored, as a sortable key: (split, data fingerprint, not the best checkpoint, step
    unless the best, eval scale, extra scales, flip). The best checkpoint is the step of the run's best evaluation
    (a --checkpoint latest or N of it scored the same weights; a result of "best" taken before a later best is of
    its own step), or where the run logged none, a result of --checkpoint best. A result of a version that recorded
    less is keyed by its file name."""
    try:
        best_step = (run.best or {}).get("step")
        best = result["step"] == best_step if best_step is not None else result["checkpoint"] == "best"
        return (str(result["split"]), str(result["data"]["fingerprint"] or ""), not best,
                0 if best else int(result["step"]), float(result["eval_scale"]),
                tuple(float(s) for s in result["eval_extra_scales"]), bool(result["flip_tta"]))
    except (KeyError, TypeError, ValueError):
        return (stem, "", False, 0, -1.0, (), False)


def _scoring_text(key: tuple, several_data: bool) -> str:
    """A row's name: "validation, scales 0.5+0.375+0.625, flip, best checkpoint[, data 9e8ea63c]"; the file name of
    a result that recorded less."""
    split, data, not_best, step, scale, extra, flip = key
    if scale < 0:
        return split
    scales = f"scales {'+'.join(f'{s:g}' for s in (scale, *extra))}" if extra else f"scale {scale:g}"
    return ", ".join([split, scales, *(["flip"] if flip else []), f"step {step}" if not_best else "best checkpoint",
                      *([f"data {data[:8]}"] if several_data and data else [])])


def _miou(row: dict | None) -> str:
    return MISSING if row is None else f"{row['eval/miou']:.4f}"


def text_report(runs: list[Run]) -> str:
    lines = _columns(summary_rows(runs))
    seeds = seed_rows(runs)
    if len(seeds) > 1:
        lines += [""] + _columns(seeds)
    evaluations = evaluation_rows(runs)
    if len(evaluations) > 1:
        lines += [""] + _columns(evaluations)
    resumes = resume_rows(runs)
    if len(resumes) > 1:
        lines += ["", "resumes:"] + [f"  {name}: {history}" for name, history in resumes[1:]]
    settings, provenance = _split_differences(runs)
    for heading, rows in (("config keys that differ:", settings), ("provenance that differs:", provenance)):
        if len(rows) > 1:
            lines += ["", heading] + _columns(rows)
    warning = data_warning(runs)
    return "\n".join(lines + ([f"\nwarning: {warning}"] if warning else []))


def resume_rows(runs: list[Run]) -> list[list[str]]:
    """One row per run that was resumed: its name and visualize.history_lines joined."""
    rows = [["run", "started and resumed"]]
    return rows + [[run.name, "; ".join(lines)] for run in runs if (lines := history_lines(run.starts))]


def _split_differences(runs: list[Run]) -> tuple[list[list[str]], list[list[str]]]:
    """differences as two tables, header first: the settings, then provenance (code, packages, devices, data)."""
    head = ["key"] + [run.name for run in runs]
    diff = differences(runs).items()
    return ([head] + [[key] + values for key, values in diff if not key.startswith("provenance.")],
            [head] + [[key] + values for key, values in diff if key.startswith("provenance.")])


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


# Per run: a colour, and a line style and marker of its own, so that runs with one history still show each.
_LINES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def curves_png(runs: list[Run]) -> bytes:
    return figure_png(curves_figure(runs))


def curves_figure(runs: list[Run]):
    """Eval mIoU against step and against training time, and train loss against step, in two rows that fit the page
    (one row was 2051 pixels wide, its text 6 pixels on screen), the legend in the fourth place. Each run has its
    own colour, line style and marker; its resumes are dotted lines in its colour, and a curve is not joined across
    a resume that changed what it measures (visualize.breaks)."""
    from matplotlib.lines import Line2D
    fig = new_figure(figsize=(9.4, 7), layout="constrained")
    (by_step, by_time), (loss, legend) = fig.subplots(2, 2)
    hours = max((r["elapsed"] for run in runs for r in run.evals), default=0) >= 2 * 3600
    unit, seconds = ("hours", 3600) if hours else ("minutes", 60)
    differ = _objective_differences(runs)
    for i, run in enumerate(runs):
        # Earlier runs drawn wider, under later ones: a run with another's history shows around it.
        wider = (len(runs) - 1 - i) / max(len(runs) - 1, 1)
        style = {"color": _colour(i), "linestyle": _LINES[i % 4], "marker": _MARKERS[i % 7],
                 "markersize": 3 + 4 * wider, "linewidth": 1 + 2 * wider}
        evals = [(r["step"], r["elapsed"] / seconds, r["eval/miou"]) for r in run.evals]
        eval_breaks = breaks(run.starts, SCORING_KEYS)
        label = run.name + (f" ({_objective_text(run, differ)})" if differ else "")
        by_step.plot(*broken_at([(s, m) for s, _, m in evals], eval_breaks), label=label, **style)
        by_time.plot(*broken_at([(t, m) for _, t, m in evals], _elapsed_at(run, eval_breaks, seconds)), **style)
        train = [(r["step"], r["train/loss"]) for r in run.history if "train/loss" in r]
        loss.plot(*broken_at(train, breaks(run.starts, OBJECTIVE_KEYS)), **style)
        _mark_resumes(run, style["color"], (by_step, loss), by_time, seconds)
    losses = {setting_text(run, "loss") for run in runs} - {MISSING}     # a run whose config.json is gone
    loss_title = ("train loss (objectives differ: not comparable)" if differ else
                  f"train loss ({losses.pop()})" if losses else "train loss")
    for ax, title, xlabel in ((by_step, "eval mean IoU", "step"), (by_time, "eval mean IoU", f"{unit} of training"),
                              (loss, loss_title, "step")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax in (by_step, loss):
        ax.xaxis.get_major_locator().set_params(integer=True)
    legend.axis("off")
    handles, labels = by_step.get_legend_handles_labels()
    if any(run.starts[1:] for run in runs):
        handles.append(Line2D([], [], color="grey", linestyle=":", lw=1))
        labels.append("resumed (dotted, in the run's colour)")
    legend.legend(handles, labels, loc="upper left", fontsize=9, frameon=False)
    return fig


def _colour(i: int):
    """The i-th run's colour: matplotlib's ten, in turn."""
    from matplotlib import colormaps
    return colormaps["tab10"](i % 10)


def _objective_differences(runs: list[Run]) -> list[str]:
    """The settings that define the training objective (OBJECTIVE_KEYS: the loss, its class weights) whose values
    differ between the runs, or within one where a resume changed them; a run whose config.json is gone has none."""
    return [key for key in OBJECTIVE_KEYS
            if len({text for run in runs for text in setting_text(run, key).split(", ")} - {MISSING}) > 1]


def _objective_text(run: Run, keys: list[str]) -> str:
    """The run's values of `keys` (_objective_differences): "cross_entropy+lovasz, class_weights none"."""
    return ", ".join(setting_text(run, key) if key == "loss" else f"{key} {setting_text(run, key)}" for key in keys)


def _elapsed_at(run: Run, steps: list[int], seconds: float) -> list[float]:
    """The training time (in `seconds` units) when each of `steps` was reached."""
    return [max((r["elapsed"] for r in run.history if r["step"] <= step), default=0.0) / seconds for step in steps]


def _mark_resumes(run: Run, color, step_axes, time_axis, seconds: float) -> None:
    resumes = [s["step"] for s in run.starts[1:] if s["step"] > 0]
    for ax in step_axes:
        for step in resumes:
            ax.axvline(step, color=color, linestyle=":", lw=1, alpha=0.8)
    for when in _elapsed_at(run, resumes, seconds):
        time_axis.axvline(when, color=color, linestyle=":", lw=1, alpha=0.8)


# -------------------------------------------------------------------------------------------------------------------
# The page
# -------------------------------------------------------------------------------------------------------------------
def render_html(runs: list[Run]) -> str:
    title = f"Comparing {len(runs)} runs"
    warning = data_warning(runs)
    paths = ", ".join(str(r.path) for r in runs)
    parts = [f'<header><h1>{escape(title)}</h1><p class="sub">{escape(paths)}</p></header>',
             section("warning", "Warning", f"<p><b>{escape(warning)}</b></p>") if warning else "",
             section("summary", "Summary", _summary_table(runs)),
             _seeds_section(runs),
             section("curves", "Curves", f'<img class="figure" src="{png_uri(curves_png(runs))}" alt="eval mean '
                     'IoU against step and training time, train loss against step, one colour per run">'
                     '<p class="note">Training time includes start-up and evaluation; the time between a stop and '
                     "its resume, and the time of steps a kill lost, are left out. Dotted lines mark each run's resumes; "
                     "a curve is broken where a resume changed what it measures (the loss, or how evaluation "
                     "scores).</p>"),
             _resumes_section(runs),
             section("classes", "IoU per class at each run's best evaluation", _class_table(runs)),
             _evaluations_section(runs),
             section("config", "Config keys that differ", _config_table(runs))]
    return html_page(title, [p for p in parts if p], "streetseg_jax.compare", EXTRA_CSS)


def _table(rows: list[list[str]], bold: set = frozenset()) -> str:
    """rows[0] is the header; cells at the (row, column) positions in `bold` are bold."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in rows[0])
    body = "".join("<tr>" + "".join(f"<td><b>{escape(c)}</b></td>" if (i, j) in bold else f"<td>{escape(c)}</td>"
                                    for j, c in enumerate(row)) + "</tr>" for i, row in enumerate(rows[1:], 1))
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _top(rows: list[list[str]], cells: list[tuple[int, int]]) -> set:
    """Which of these cells hold the largest number (none when fewer than two hold one)."""
    numbers = {(i, j): float(rows[i][j]) for i, j in cells if rows[i][j] != MISSING}
    if len(numbers) < 2:
        return set()
    return {cell for cell, value in numbers.items() if value == max(numbers.values())}


def _summary_table(runs: list[Run]) -> str:
    rows = summary_rows(runs)
    return _table(rows, set() if data_warning(runs) else _top(rows, [(i, 4) for i in range(1, len(rows))]))


def _class_table(runs: list[Run]) -> str:
    ious = class_ious(runs)
    if not ious:
        return '<p class="note">No run has evaluated yet.</p>'
    rows = [["class"] + [run.name for run in runs]]
    rows += [[name] + [MISSING if v is None else f"{100 * v:.1f}" for v in values] for name, values in ious.items()]
    rows.append(["mean IoU"] + [MISSING if run.best is None else f"{100 * run.best['eval/miou']:.1f}" for run in runs])
    if data_warning(runs):      # a road of 81.7 on one dataset is no better than 55.5 on another
        return _table(rows) + ('<p class="note">IoU in percent at the step of each run\'s best eval mIoU; none is '
                               "marked best, the runs being of different data.</p>")
    bold = set().union(*(_top(rows, [(i, j) for j in range(1, len(runs) + 1)]) for i in range(1, len(rows))))
    return (_table(rows, bold) + '<p class="note">IoU in percent at the step of each run\'s best eval mIoU; the '
            "best of each row is bold.</p>")


def _rows_section(name: str, title: str, rows: list[list[str]], note: str) -> str:
    """A section of the table `rows` (header first) and its note; none where no run has a row."""
    return "" if len(rows) == 1 else section(name, title, _table(rows) + f'<p class="note">{note}</p>')


def _seeds_section(runs: list[Run]) -> str:
    return _rows_section("seeds", "Seeds", seed_rows(runs), "Runs whose configs differ only in the seed (and where "
                         "the data lives, and provenance): the mean ± standard deviation of the finished runs' eval "
                         "mIoU, and its range. The spread is how far apart two runs of one recipe can land.")


def _evaluations_section(runs: list[Run]) -> str:
    return _rows_section("evaluations", "Results of python -m streetseg_jax.evaluate", evaluation_rows(runs),
                         "From each run's <code>eval/*.json</code>: mean IoU at the labels' resolution, with the "
                         "step of the checkpoint scored. A row is one scoring: the split, the scales and flip of the "
                         "TTA, the checkpoint (each run's best, or a step), and the data by its fingerprint where "
                         "the results are of more than one.")


def _config_table(runs: list[Run]) -> str:
    settings, provenance = _split_differences(runs)
    if len(settings) == 1 and len(provenance) == 1:
        return '<p class="note">The runs share every config key.</p>'
    body = _table(settings) if len(settings) > 1 else '<p class="note">The runs share every setting.</p>'
    if len(provenance) > 1:
        body += '<h3>Provenance that differs</h3>' + _table(provenance)
    return body + ('<p class="note">A setting a resume changed is given with the step each value began at (see '
                   "Resumes).</p>" if len(resume_rows(runs)) > 1 else "")


def _resumes_section(runs: list[Run]) -> str:
    return _rows_section("resumes", "Resumes", resume_rows(runs), "From each run's <code>run/start</code> records in "
                         "metrics.jsonl: where it resumed, and the settings each resume changed (a run's config.json "
                         "holds its last ones).")


# -------------------------------------------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m streetseg_jax.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="training work directories, or folders of them (runs/ compares every run in it)")
    parser.add_argument("--output", type=Path, default=Path("compare.html"),
                        help="the HTML page to write (default: compare.html here)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    if args.output.is_dir():
        fail(f"--output {args.output} is a folder; give a file name such as {args.output / 'compare.html'}")
    check_output_file(args.output, ".html", ".htm")
    runs = load_runs(args.runs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    path = atomic.write_text(args.output, render_html(runs))    # first: the page is there even if stdout is cut off
    print(text_report(runs))
    print(f"wrote {Path(path).absolute()}")


if __name__ == "__main__":
    run_command(main, "no page was written")
