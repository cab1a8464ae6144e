"""Whether a work directory's run may resume with this config, and what the resume changes.

Each check compares the checkpoint's config (`saved`, as its JSON gives it back) with this run's (`current`) and
returns why the run cannot go on, or None; `run._check_resume` refuses with that message.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from streetseg_jax import config_keys
from streetseg_jax.labels.label_map import label_map_change, same_classes
from streetseg_jax.visualize import SCORING_KEYS, flatten

# Config sections that must match for a work directory to be resumed. A resume also keeps the optimiser's layout,
# the overrides the run was started with (incompatibility, dropped_overrides) and its data (run._check_same_data);
# anything else may change, said.
_COMPATIBLE_KEYS = ("model", "dataset")
# Config keys that decide how evaluation scores (visualize.SCORING_KEYS) may change on resume, with a warning.
# Config keys the learning-rate schedule is computed from (train.make_schedule).
_SCHEDULE_KEYS = {"num_train_steps", "learning_rate", "warmup_steps", "lr_schedule", "end_learning_rate_factor"}


def incompatibility(saved: dict, current: dict, workdir: Path) -> str | None:
    """Why the checkpoint's run (`saved`: its config and label map) cannot go on with `current`'s, or None. A label
    map whose classes and ignore id are the same is no reason (label_map_note says what changed)."""
    problems = []
    for key in _COMPATIBLE_KEYS:
        then, now = _layout(key, saved["config"].get(key)), _layout(key, current["config"].get(key))
        if then != now:
            problems.append(f"config.{key} differs: {_difference(then, now)}")
    saved_opt, current_opt = _optimiser_layout(saved["config"]), _optimiser_layout(current["config"])
    for key in saved_opt:
        if saved_opt[key] != current_opt[key]:
            problems.append(f"{key} differs (the optimiser state has another layout): checkpoint has "
                            f"{saved_opt[key]!r}, this run has {current_opt[key]!r}")
    classes = not same_classes(saved["label_map"], current["label_map"])
    if problems or classes:
        return _refusal(saved, current, workdir, problems, classes)
    return None


def _refusal(saved: dict, current: dict, workdir: Path, problems: list[str], classes: bool) -> str:
    """The settings that differ, and the dataset's other classes (which no setting changes), with what to do."""
    from streetseg_jax.warm_start import SHAPING_KEYS
    then, now = saved["config"].get("model", {}), current["config"].get("model", {})
    warm = ("" if any(then.get(k) != now.get(k) for k in SHAPING_KEYS)
            else f" (--config.init_from={workdir} warm-starts from it)")
    lines = list(problems)
    change = label_map_change(saved["label_map"], current["label_map"])
    other = "other classes" if change.startswith("classes") else "another ignore id"
    if classes:
        lines.append(f"the dataset's label map has {other} than the checkpoint's ({change})")
    if problems:
        what = "an incompatible config"
        fix = ("Resume with the run's own settings (its config.json has the overrides it was started with)"
               + (" on the data it trained on" if classes else ""))
    else:
        what, fix = f"a run trained on {other}", "Resume on the data it trained on (its config.json names it)"
    return (f"{workdir} holds {what}, refusing to resume:\n  - " + "\n  - ".join(lines)
            + f"\n{fix}, or use another --workdir{warm}.")


def label_map_note(saved: dict, current: dict) -> str | None:
    """What changed in a label map that keeps the classes and their ids (resumable), or None where nothing did."""
    if saved["label_map"] == current["label_map"]:
        return None
    change = label_map_change(saved["label_map"], current["label_map"])
    return f"the dataset's label map changed since the checkpoint ({change}); its classes and ids are the same"


def _difference(then, now) -> str:
    if not (isinstance(then, dict) and isinstance(now, dict)):
        return f"{then!r} there, {now!r} here"
    return ", ".join(f"{k} {then.get(k)!r} there, {now.get(k)!r} here" for k in sorted(set(then) | set(now))
                     if then.get(k) != now.get(k))


def _layout(key: str, section):
    """A config section as far as the checkpoint's arrays depend on it: the dropout rate may change on resume, but
    not whether there is dropout (its random-number state is saved with the model); the dataset by its name, a
    version pinned or not (whether it is the data the run trained on, the fingerprint tells: run._check_same_data);
    keys no run reads (a misspelt one a run recorded before keys were checked) are no part of it."""
    known = config_keys.known()
    if isinstance(section, dict) and known is not None:
        section = {k: v for k, v in section.items() if f"{key}.{k}" in known}
    if isinstance(section, dict) and "dropout" in section:
        return {**section, "dropout": "on" if section["dropout"] > 0 else "off"}
    if key == "dataset" and isinstance(section, str):
        return section.split(":")[0]
    return section


def warn_of_changes(saved: dict, current: dict, step: int, log) -> dict:
    """The config keys that differ from the checkpoint's ({key: [then, now]}), said (`log.say`) when the run
    resumes with them; changes to how evaluation scores and to the learning rate get a warning of what they do."""
    changed = changes(saved, current)
    if changed:
        log.say("resuming with changed settings: " + listed(changed))
    if set(changed) & set(SCORING_KEYS):
        log.say("warning: evaluation differs from the checkpoint's: the eval mIoUs logged from now on are not "
                "scored as the earlier ones, yet the best checkpoint is picked across both")
    if set(changed) & _SCHEDULE_KEYS:
        jump = _rate_jump(saved, current, step)
        log.say(f"warning: the learning-rate schedule is recomputed for the new settings{jump}")
    return changed


def dropped_overrides(started: list[str] | None, saved: dict, current: dict, overrides: list[str]) -> str | None:
    """Why a resume is refused where it leaves out a --config.KEY=VALUE the run was `started` (or last resumed) with
    and the config file's value would take its place, or None: one changed setting given alone turned a 400-step run
    at learning rate 0.001 into a 1,950-step one at 0.003, said in a line of the log. `started` None (a run of a
    version that did not record them): every setting that differs and is not given now (an upgrade's new defaults
    turned such a run's loss, class weights and evaluation into others)."""
    changed = changes(saved, current)
    if started is None:     # a version before they were recorded: any change may be an override left out
        unsaid = {k: changed[k] for k in changed if k not in overrides and k not in _NOT_TRAINING}
        if not unsaid:
            return None
        keep = " ".join(_flag(k, then) for k, (then, _) in unsaid.items())
        return ("the run's config.json records no --config overrides (an earlier version's run, or one started from "
                f"Python), and these settings differ from the run's without being given now ({listed(unsaid)}): give "
                f"{keep} to go on as started, or give the new values to change them")
    dropped = [key for key in started if key not in overrides and key in changed and key not in _NOT_TRAINING]
    if not dropped:
        return None
    return ("the run was started with " + " ".join(_flag(k, changed[k][0]) for k in dropped)
            + ", not given now, so the config file's values would take their place ("
            + ", ".join(f"{k} {changed[k][1]}" for k in dropped) + "): give them again to go on as "
            "started, or give the new values to change them")


# Keys a resume may leave to the config file: where the data lives, and the weights a fresh run starts from.
_NOT_TRAINING = ("data_dir", "init_from")


def _flag(key: str, value) -> str:
    """--config.KEY=VALUE as a shell takes it back (JSON's lists are the config's tuples)."""
    if isinstance(value, list):
        value = "(" + ", ".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
    return shlex.quote(f"--config.{key}={value}")


def changes(saved: dict, current: dict) -> dict:
    """{key: [then, now]} for the config keys both have that differ (keys of older versions are left out)."""
    # The checkpoint's config went through JSON: so does this one, so that equal settings compare equal.
    then, now = (config_keys.absolute_paths(flatten(json.loads(json.dumps(config, default=str))))
                 for config in (saved, current))
    return {key: [then[key], now[key]] for key in sorted(set(then) & set(now)) if then[key] != now[key]}


def listed(changed: dict) -> str:
    return ", ".join(f"{key} {then} -> {now}" for key, (then, now) in changed.items())


def _rate_jump(saved: dict, current: dict, step: int) -> str:
    """": the rate goes from A at step N to B", or "" where the checkpoint's config is too old to say."""
    from ml_collections import ConfigDict
    from streetseg_jax.train import make_schedule
    try:
        before, after = make_schedule(ConfigDict(saved))(step - 1), make_schedule(ConfigDict(current))(step)
    except (AttributeError, KeyError, TypeError, ValueError):
        return ""
    return f": the rate goes from {float(before):.3g} at step {step} to {float(after):.3g}"


def _optimiser_layout(config: dict) -> dict:
    """What shapes the optimiser state (train.make_optimizer): its values may change on resume, these may not."""
    return {"config.optimizer": config.get("optimizer"),
            "gradient clipping (config.grad_clip_norm > 0)": config.get("grad_clip_norm", 0) > 0,
            "EMA of the weights (config.ema_decay > 0)": bool(config.get("ema_decay", 0))}
