"""Pictures people look at: coloured masks, overlays with a legend, loss and mIoU curves."""
from __future__ import annotations

import dataclasses
import io
import itertools
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from streetseg_jax.atomic import atomic_file
from streetseg_jax.labels.images import rgb_array
from streetseg_jax.labels.label_map import ERROR_COLOR, IGNORE_GREY, LabelMap, class_id_array


def colorize(mask: np.ndarray, label_map: LabelMap) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours for a picture: the ignore id light grey (the palette's white
    vanished into the page and the legend's margin: a band of it made a panel look cut short)."""
    palette = label_map.palette()
    palette[label_map.ignore_id] = IGNORE_GREY
    return palette[mask]


def _legend_entries(label_map: LabelMap, *masks: np.ndarray, ignored: str = "ignored") -> list:
    """The classes present in any of `masks`, then the ignore id's entry, named `ignored`, where it is."""
    counts = sum(np.bincount(np.asarray(m, np.uint8).ravel(), minlength=256) for m in masks)
    entries = [c for c in label_map.classes if counts[c.id]]
    if counts[label_map.ignore_id]:
        entries.append(_Entry(ignored, IGNORE_GREY))
    return entries


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str
    color: tuple


def overlay(image: np.ndarray, mask: np.ndarray, label_map: LabelMap, alpha: float = 0.5,
            legend: bool = True, ignored: str = "ignored", title: str | None = None) -> Image.Image:
    """The image blended with the mask's colours (Pillow's blend: a float32 blend of a 12-megapixel photo took 432
    MB); a legend of the classes present along the bottom (the ignore id's pixels named `ignored`, and light grey as
    its swatch, not blended: a cut-out's transparent black blended to a darker grey than the legend said). An image
    narrower than the legend is enlarged by a whole factor (nearest neighbour), so that a thumbnail is not a speck in
    the corner of its legend, as far as it stays under 2,000 pixels tall. A dataset's (H, W, 1) mask is taken as its
    (H, W). The class regions are outlined in white (class_edges): a dark class (building's (70, 70, 70), black)
    blended at half strength looked like the photo untinted. `title` (what the picture is of: run, checkpoint,
    step) goes above the picture, in the legend's size."""
    image, mask = _checked(image, mask, label_map)
    pixels = np.array(Image.blend(Image.fromarray(image), Image.fromarray(colorize(mask, label_map)), alpha))
    pixels[mask == label_map.ignore_id] = IGNORE_GREY
    pixels[class_edges(mask, _edge_width(mask.shape))] = EDGE_COLOR
    out = Image.fromarray(pixels)
    if legend or title:
        out = _enlarged(out, _LEGEND_MIN_WIDTH, out.width)
    if legend:
        out = _with_legend(out, _legend_entries(label_map, mask, ignored=ignored))
    return _titled(out, title) if title else out


EDGE_COLOR = (255, 255, 255)


def _edge_width(shape: tuple) -> int:
    """Outlines about 1/600 of the picture's longer side, 1 pixel at least: seen on a screen the picture fits."""
    return max(1, round(max(shape) / 600))


def class_edges(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool: the pixels beside a pixel of another class (4-neighbours), the line grown to `width` pixels."""
    edges = np.zeros(mask.shape, bool)
    edges[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edges[1:, :] |= mask[1:, :] != mask[:-1, :]
    for _ in range(width - 1):
        grown = edges.copy()
        grown[:, 1:] |= edges[:, :-1]
        grown[1:, :] |= edges[:-1, :]
        edges = grown
    return edges


def _titled(picture: Image.Image, title: str, font=None) -> Image.Image:
    """`picture` below `title`, in the size of its legend's text (or `font`: (font, size)), wrapped at spaces to the
    picture's width (a long run name ran off a small photo's overlay)."""
    font, size = font or _font(_text_scale(picture))
    lines = _wrapped(title, font, picture.width - size)
    line = int(size * 1.6)
    canvas = Image.new("RGB", (picture.width, picture.height + line * len(lines)), (255, 255, 255))
    canvas.paste(picture, (0, line * len(lines)))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(lines):
        draw.text((size // 2, line * i + line // 2), text, fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def _wrapped(text: str, font, width: float) -> list[str]:
    """`text` in lines of whole words no longer than `width` pixels where words allow."""
    lines: list[str] = []
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    for word in text.split(" "):
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _text_scale(picture: Image.Image) -> int:
    """The side text is sized by: the longer one, so that a portrait photo fitted to a screen's height reads too."""
    return max(picture.width, picture.height)


def _checked(image, mask, label_map) -> tuple[np.ndarray, np.ndarray]:
    """overlay's inputs as arrays, or a ValueError or TypeError that says what to pass (not PIL's 'Cannot handle
    this data type: (1, 1, 1, 3)')."""
    image, mask = rgb_array(image), np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape != image.shape[:2]:
        raise ValueError(f"the mask is {mask.shape}, the image {image.shape[:2]}: they must be of one size")
    if not isinstance(label_map, LabelMap):
        raise TypeError(f"expected a LabelMap, got {type(label_map).__name__} (a dataset's info.metadata["
                        "'label_map'] is one through streetseg_jax.labels.label_map.LabelMap.from_dict)")
    mask = class_id_array(mask, label_map.num_classes, label_map.ignore_id)    # a value of no class: refused
    return image, mask.astype(np.uint8, copy=False)


_LEGEND_MIN_WIDTH = 240     # px: a narrower image gets a wider canvas, so the class names stay whole
_MAX_ENLARGED_HEIGHT = 2000  # px: a strip of 60x1800 was enlarged to 240x7200, its legend a line at the foot
_PANEL_MIN_WIDTH = 160      # px: comparison's narrower panels are enlarged, so that their titles fit above them


def _enlarged(picture: Image.Image, least: int, width: int) -> Image.Image:
    """`picture` enlarged by the whole factor (nearest neighbour) that makes `width` (its own, or a panel's in it)
    `least` pixels at least, as far as it stays under _MAX_ENLARGED_HEIGHT pixels tall."""
    factor = min(-(-least // width), max(1, _MAX_ENLARGED_HEIGHT // picture.height))
    if factor <= 1:
        return picture
    return picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)


def _font(width: int):
    """Text that reads at the picture's own scale, whatever it is: about 1/60 of `width`, 11 px at least, and no
    more cap (at 48 px, a 4000x3000 photo's legend was 88 of 3088 pixels, its text 9 px once it fitted a screen)."""
    size = int(max(11, width / 60))
    try:
        return ImageFont.load_default(size=size), size
    except (TypeError, OSError):    # Pillow without FreeType: its fixed bitmap font
        return ImageFont.load_default(), 11


def _with_legend(image: Image.Image, classes) -> Image.Image:
    """The image above a legend of `classes` (swatch and name), sized to the image."""
    width = max(image.width, _LEGEND_MIN_WIDTH)
    font, size = _font(max(width, _text_scale(image)))
    pad, row = size // 3, int(size * 1.5)
    slot = max((ImageDraw.Draw(image).textlength(c.name, font=font) for c in classes), default=0) + 2 * size
    per_line = max(1, int((width - pad) // slot))
    lines = max(1, -(-len(classes) // per_line))
    canvas = Image.new("RGB", (width, image.height + lines * row + pad), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, c in enumerate(classes):
        x, y = pad + (i % per_line) * slot, image.height + pad + (i // per_line) * row
        draw.rectangle([x, y, x + size * 0.8, y + size * 0.8], fill=tuple(c.color), outline=(0, 0, 0))
        # On the swatch's middle line: "lt" put each word's own tallest letter at the top ("tree" above "road").
        draw.text((x + size, y + size * 0.4), c.name, fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def comparison(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, label_map: LabelMap,
               caption: str) -> Image.Image:
    """`caption` (what the picture is of: the run, split and weights) above image | ground truth | prediction,
    titled, with a legend of the classes in either; pixels of the ignore id are light grey in the ground truth,
    named in the legend. Panels narrower than 160 pixels are enlarged by a whole factor (nearest neighbour): at 64
    pixels the titles ran into each other. Takes what overlay takes."""
    image, truth = _checked(image, truth, label_map)
    image, pred = _checked(image, pred, label_map)
    panels = [image, colorize(truth, label_map), colorize(pred, label_map)]
    strip = Image.fromarray(np.concatenate(panels, axis=1))
    strip = _enlarged(strip, _PANEL_MIN_WIDTH, image.shape[1])
    font, size = _font(strip.width)
    line = int(size * 1.6)
    headings = Image.new("RGB", (strip.width, strip.height + line), (255, 255, 255))
    headings.paste(strip, (0, line))
    draw = ImageDraw.Draw(headings)
    for k, title in enumerate(("image", "ground truth", "prediction")):
        draw.text((k * strip.width // 3 + size // 2, line // 2), title, fill=(0, 0, 0), font=font, anchor="lm")
    titled = _titled(headings, caption, _font(strip.width))     # a long run name wrapped, not cut off
    return _with_legend(titled, _legend_entries(label_map, truth, pred))


def read_metrics(path: str | Path) -> list[dict]:
    """metrics.jsonl's records in file order; [] without the file. `path`: the file, or a run's work directory (an
    IsADirectoryError before). A line a killed run left half-written is skipped."""
    path = Path(path) / "metrics.jsonl" if Path(path).is_dir() else Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def run_history(records: list[dict]) -> list[dict]:
    """The run as it stands: one row per step (its train and eval records merged), in step order.

    A run killed without saving resumes from an earlier checkpoint and redoes steps: their new records replace the
    lost ones. Each row gets `elapsed`, the seconds of training up to it, start-up and evaluation included, the
    time between a stop and its resume and the lost steps' time left out. Runs log a `run/start` record when they
    (re)start, and a `run/stop` record (no row of its own) when a signal stops them after saving, so that the
    time from the last log to the stop counts; in older logs a step that goes back marks the restart, and its
    record adds no time.
    """
    rows: dict[int, dict] = {}
    stops: dict[int, float] = {}        # the elapsed time at each saved stop, by its step
    elapsed, last_time, last_step = 0.0, None, -1
    for record in records:
        step, now, start = record["step"], record.get("time"), record.get("run/start")
        if start or step < last_step:
            rows = {s: row for s, row in rows.items() if s < step or (s == step and start)}
            stops = {s: t for s, t in stops.items() if s < step or (s == step and start)}
            elapsed = max([row["elapsed"] for row in rows.values()] + list(stops.values()), default=0.0)
            last_time = now if start else None
        if not start:
            if last_time is not None and now is not None:
                elapsed += now - last_time
            last_time = now
            if record.get("run/stop"):
                stops[step] = elapsed
            else:
                rows.setdefault(step, {}).update(record, elapsed=elapsed)
        last_step = step
    return [rows[s] for s in sorted(rows)]


def eval_rows(history: list[dict]) -> list[dict]:
    """The rows of run_history with an evaluation, in step order."""
    return [row for row in history if "eval/miou" in row]


def best_eval(history: list[dict]) -> dict | None:
    """The row of run_history with the highest eval mIoU (the best checkpoint's); None before the first evaluation."""
    return max(eval_rows(history), key=lambda row: row["eval/miou"], default=None)


def flatten(config: dict, prefix: str = "") -> dict:
    """Nested dicts (config.json) as one, with dotted keys: {"model": {"depth": 4}} -> {"model.depth": 4}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def hms(seconds: float) -> str:
    """A duration as h:mm:ss (whole seconds); "?" when unknown (not finite)."""
    if not np.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def new_figure(**kwargs):
    """A matplotlib Figure outside pyplot: it draws off-screen (training machines have no display) and touches no
    global state (a notebook's backend and figures stay as they were; nothing to close)."""
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def figure_png(fig) -> bytes:
    """The figure as PNG bytes, trimmed to what is drawn."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def run_starts(records: list[dict]) -> list[dict]:
    """Each (re)start of the run, in file order, from its `run/start` record: {"step": N, "changed": {key: [then,
    now]}} ({} where the start changed no setting), "devices": runlog.devices() (None in older logs), "init_from":
    what a warm start took, {"from", "checkpoint", "head"} (None for any other start)}. Older logs without these
    records give []."""
    return [{"step": r["step"], "changed": r.get("run/changed") or {}, "devices": r.get("run/devices"),
             "init_from": r.get("run/init_from")} for r in records if r.get("run/start")]


def changes_text(changed: dict, arrow: str = "->") -> str:
    """A resume's changed settings, as the run said them: "loss cross_entropy -> cross_entropy+lovasz"."""
    return ", ".join(f"{key} {value_text(then)} {arrow} {value_text(now)}" for key, (then, now) in changed.items())


def value_text(value) -> str:
    """A config value as the pages and logs show it: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def history_lines(starts: list[dict]) -> list[str]:
    """run_starts as a reader follows them: "started at step 0 with loss cross_entropy" (the first values of the
    settings a resume changed later), then "resumed at step 60, changing loss cross_entropy -> ..."; each start's
    devices where a resume changed them (config.json keeps the last start's). [] for a run that never resumed, or
    an older log."""
    if len(starts) < 2:
        return []
    first = {}
    for start in starts:
        for key, (then, _) in start["changed"].items():
            first.setdefault(key, then)
    began = ", ".join(f"{key} {value_text(value)}" for key, value in first.items())
    moved = [i for i in range(1, len(starts)) if devices_differ(starts[i - 1]["devices"], starts[i]["devices"])]
    lines = [f"started at step {starts[0]['step']}" + (f" on {topology_text(starts[0]['devices'])}" if moved else "")
             + (f" with {began}" if began else "")]
    for i, start in enumerate(starts[1:], 1):
        changed = changes_text(start["changed"])
        lines.append(f"resumed at step {start['step']}" + (f" on {topology_text(start['devices'])}" if i in moved
                                                           else "") + (f", changing {changed}" if changed else ""))
    return lines


def devices_differ(then, now) -> bool:
    """Whether two records of runlog.devices() differ (in the keys both have: older records lack some; None, an
    older log's, differs from nothing)."""
    return isinstance(then, dict) and isinstance(now, dict) and any(then[k] != now[k] for k in now if k in then)


def topology_text(d: dict) -> str:
    """runlog.devices() as a reader says it: "2 cpu device(s) in 1 process(es) (2 core(s), our C++ kernels)"."""
    cpu = (f" ({d['cores']} core(s), {'our' if d.get('native_kernels') else 'no'} C++ kernels)"
           if "cores" in d else "")
    return f"{d.get('count', '?')} {d.get('kind', '?')} device(s) in {d.get('processes', '?')} process(es){cpu}"


def setting_history(starts: list[dict], key: str, last) -> str:
    """A setting's value, and where a resume changed it, each value with the step it began at: "cross_entropy,
    cross_entropy+lovasz from step 60" (the run's steps were not all trained with its last)."""
    texts = []
    for start in starts[1:]:
        if key in start["changed"]:
            then, now = start["changed"][key]
            texts += [] if texts else [value_text(then)]
            texts.append(f"{value_text(now)} from step {start['step']}")
    return ", ".join(texts) if texts else value_text(last)


# Settings whose change at a resume makes a curve measure something else after it: the curve is not drawn across.
# Evaluation's scoring (resume.py warns of a change of them; a resume on another dataset is refused), and the
# objective that train/loss is.
SCORING_KEYS = ("eval_split", "eval_scale", "eval_flip_tta", "eval_extra_scales")
OBJECTIVE_KEYS = ("loss", "class_weights", "class_weight_power")


def breaks(starts: list[dict], keys: tuple) -> list[int]:
    """The steps of the resumes that changed any of `keys`."""
    return [s["step"] for s in starts[1:] if set(s["changed"]) & set(keys)]


def broken_at(points: list[tuple], steps: list[int]) -> tuple[list, list]:
    """(steps, values) of `points` with a gap (NaN) after each of `steps`, so that matplotlib does not join the
    values of two settings by one line. Points at a break's step belong before it (the step trained before)."""
    xs, ys = [], []
    for k, (x, y) in enumerate(points):
        if k and any(points[k - 1][0] <= b < x for b in steps):
            xs.append(np.nan)
            ys.append(np.nan)
        xs.append(x)
        ys.append(y)
    return xs, ys


def curves_figure(metrics: list[dict], title: str | None = None):
    """Loss and mIoU against step, train and eval, from metrics.jsonl's records; `title` above them (the run's
    name). Each resume is a dashed line, listed below the plots with the settings it changed; a curve whose meaning a
    resume changed (the loss's objective, evaluation's scoring) is not joined across it."""
    starts = run_starts(metrics)
    resumes = [s for s in starts[1:] if s["step"] > 0]
    metrics = run_history(metrics)
    fig = new_figure(figsize=(10, 3.6 + 0.2 * len(_resume_lines(resumes))))
    ax_loss, ax_miou = fig.subplots(1, 2)
    # The two losses are not one quantity: training's is the configured objective (class weights, Dice or Lovasz
    # terms), evaluation's the plain cross-entropy of the (test-time augmented) logits.
    for key, label, ax, style, keys in (("train/loss", "train/loss (objective)", ax_loss, "-", OBJECTIVE_KEYS),
                                        ("eval/loss", "eval/loss (cross-entropy)", ax_loss, "o-", SCORING_KEYS),
                                        ("train/miou", "train/miou", ax_miou, "-", ()),
                                        ("eval/miou", "eval/miou", ax_miou, "o-", SCORING_KEYS)):
        points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
        if points:
            ax.plot(*broken_at(points, breaks(starts, keys)), style, label=label, markersize=3)
    for ax, heading in ((ax_loss, "loss"), (ax_miou, "mean IoU")):
        _mark_resumes(ax, resumes)
        ax.set_title(heading)
        ax.set_xlabel("step")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_miou.set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _list_resumes(fig, resumes)
    return fig


def _mark_resumes(ax, resumes: list[dict]) -> None:
    """A dashed line at each resume; what it changed is listed below the plots (_list_resumes): along the line, the
    names ran into the legend and the curves."""
    for k, resume in enumerate(resumes):
        ax.axvline(resume["step"], color="grey", linestyle="--", linewidth=0.8,
                   label="resumed (listed below)" if k == 0 else None)


def _list_resumes(fig, resumes: list[dict]) -> None:
    """The resumes' lines (_resume_lines) below the plots, in room made for them under tight_layout's: a line for
    each resume, as before, drew a figure 20 inches tall for a run preempted 80 times."""
    lines = _resume_lines(resumes)
    if not lines:
        return
    height = fig.get_figheight()
    fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.2 * len(lines) / height)
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=8, color="dimgrey", va="bottom", wrap=True)


def _resume_lines(resumes: list[dict], shown: int = 8) -> list[str]:
    """A line for each resume that changed settings, in step order, and one for each stretch of resumes between
    them that changed none (its first `shown` steps, then a count)."""
    lines = []
    for changed, stretch in itertools.groupby(resumes, key=lambda resume: bool(resume["changed"])):
        if changed:
            lines += [f"resumed at step {r['step']}: {changes_text(r['changed'], '→')}" for r in stretch]
            continue
        same = [str(r["step"]) for r in stretch]
        more = f" and {len(same) - shown} more" if len(same) > shown else ""
        lines.append(f"resumed at step{'s' * (len(same) > 1)} {', '.join(same[:shown])}{more}, no setting changed")
    return lines


def plot_curves(metrics: list[dict], out_path: str | Path, title: str | None = None) -> None:
    """curves_figure as one PNG, written atomically."""
    with atomic_file(out_path) as f:
        curves_figure(metrics, title).savefig(f, dpi=100, format="png")


# Error maps: what a reader should see at a glance is where the model is wrong, so everything else recedes.
_DIM, _LIFT = 0.45, 20          # correct pixels: grey * _DIM + _LIFT, dark enough to recede, light enough to read


def error_map(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, ignore_id: int) -> np.ndarray:
    """(H, W, 3) uint8: correct pixels as the image dimmed to grey, wrong ones in ERROR_COLOR, ignore in grey."""
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    out = np.repeat((grey * _DIM + _LIFT).round().astype(np.uint8)[..., None], 3, axis=-1)
    out[(truth != pred) & (truth != ignore_id)] = ERROR_COLOR
    out[truth == ignore_id] = IGNORE_GREY
    return out
