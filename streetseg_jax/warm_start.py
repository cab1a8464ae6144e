"""`--config.init_from=WORKDIR`: start from another run's best checkpoint (its latest when it has no best), taking its
moving average of the weights when it kept one (`ema_decay`).

Every parameter and BatchNorm statistic whose path and shape match is loaded. With a different label map the
classifier head carries over class by class, matched by name: each output channel (the kernel's last axis, the
bias) of a class the source run also had is the source's channel for that name, whatever its id there; a class it
lacked keeps its fresh initialisation. The run says which classes were carried and which start afresh. The
optimiser state and the step start afresh (a moving average of the weights, when this run keeps one, starts at the loaded weights).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from streetseg_jax.checkpoint import Checkpoints
from streetseg_jax.labels.label_map import LabelMap


# The model config keys that shape the parameters (dropout and the compute dtype do not).
SHAPING_KEYS = ("base_width", "depth", "upsample")


def check_init_from(init_from: str, model: dict) -> None:
    """Before a run writes anything: FileNotFoundError unless `init_from` is a work directory with checkpoints
    (opening one creates folders), ValueError when its model's parameters have other shapes than `model`'s."""
    if not (Path(init_from) / "checkpoints").is_dir():
        raise FileNotFoundError(f"init_from={init_from}: not a training work directory (it has no checkpoints/)")
    saved = _saved_model(init_from)
    differ = [f"{key} {saved.get(key)!r} there, {model.get(key)!r} here" for key in SHAPING_KEYS
              if saved.get(key) != model.get(key)]
    if differ:
        raise ValueError(f"init_from {init_from}: its model has other layers ({'; '.join(differ)}), so nothing but "
                         "a fresh start would come of it; train with its config.model, or without init_from")


def _saved_model(init_from: str) -> dict:
    """The source run's config.model, from its config.json (the checkpoints' model: a resume cannot change it);
    opening its checkpoints instead would meet the other processes at orbax's barriers, which a check that
    every process makes alone (run.prepare_run) must not."""
    try:
        return json.loads((Path(init_from) / "config.json").read_text())["model"]
    except (OSError, ValueError, KeyError, TypeError):     # a run older than its config.json
        return _read_source(init_from, weights=False)[1]["config"]["model"]


def warm_start(state, init_from: str, label_map, say, record: dict | None = None):
    """`state` with the source run's weights (module docstring), each step said; `record`, where given, is filled
    with what was taken (source, checkpoint, head) for the run's first run/start record, which report shows."""
    which, meta, raw = _read_source(init_from, weights=True)
    # A run with an EMA of the weights evaluated (and chose its best checkpoint by) the average: start from that.
    saved_params = raw["opt_state"][-1]["ema"] if meta["config"].get("ema_decay") else raw["params"]
    source_names = LabelMap.from_dict(meta["label_map"], "its label map").names
    head = _head_note(source_names, label_map.names)
    if source_names != label_map.names:
        saved_params = dict(saved_params, head=_carry_head(state.params["head"], saved_params["head"], source_names,
                                                           label_map.names))
        say(f"init_from {init_from}: its classes differ from this run's; {head}")
    params, loaded_p, skipped_p = _merge(state.params, saved_params)
    model_state, loaded_s, skipped_s = _merge(state.model_state, raw["model_state"])
    # Parameters only: the model state also holds dropout's random-number state, which a run may add or drop.
    _check_only_the_head_differs(skipped_p, loaded_p, init_from, meta["config"]["model"])
    say(f"init_from {init_from} ({which} checkpoint): loaded {loaded_p + loaded_s} arrays"
        + (f", kept fresh: {', '.join(skipped_p + skipped_s)}" if skipped_p + skipped_s else ""))
    if record is not None:
        record.update({"from": init_from, "checkpoint": which, "head": head})
    return dataclasses.replace(state, params=params, model_state=model_state,
                               opt_state=_restart_ema(state.opt_state, params))


def _carry_head(fresh: dict, saved: dict, source_names: list[str], names: list[str]) -> dict:
    """The head in this run's shape: for each class the source also had (by name), the source's output channel
    (the kernel's last axis, the bias); for the others, this run's fresh one. A head of other input width is
    returned as saved (`_merge` keeps it fresh, `_check_only_the_head_differs` tells why)."""
    out = {}
    for key, value in fresh.items():
        old = np.asarray(saved[key])
        if old.shape[:-1] != value.shape[:-1]:
            return saved
        new = np.array(value.addressable_data(0))        # parameters are replicated: any local copy is the whole
        for index, name in enumerate(names):
            if name in source_names:
                new[..., index] = old[..., source_names.index(name)]
        out[key] = new
    return out


def _head_note(source_names: list[str], names: list[str]) -> str:
    """Which classes' head outputs were carried over (and from which id, when it changed) and which start afresh;
    all of it, where the classes are the same."""
    carried = [f"{name!r}" + (f" (id {source_names.index(name)} there, {index} here)"
                              if source_names.index(name) != index else "")
               for index, name in enumerate(names) if name in source_names]
    new = [repr(name) for name in names if name not in source_names]
    if source_names == names:
        return "the classifier head is loaded whole (the same classes)"
    if not carried:
        return "no class is in both, so the classifier head is re-initialised and the rest loaded"
    return (f"the classifier head keeps its outputs for {', '.join(carried)} (matched by name)"
            + (f" and starts those for {', '.join(new)} afresh" if new else ""))


def _check_only_the_head_differs(skipped: list[str], loaded: int, init_from: str, saved_model: dict) -> None:
    """A warm start that would keep more than the head fresh is a fresh start in disguise: refused."""
    body = [path for path in skipped if not path.startswith("head/")]
    if body:
        shown = ", ".join(body[:3]) + (f" and {len(body) - 3} more" if len(body) > 3 else "")
        raise ValueError(f"init_from {init_from}: its model differs from this run's ({len(body)} of "
                         f"{loaded + len(skipped)} arrays have other shapes or are missing: {shown}); only the "
                         f"classifier head may differ. Its config.model is {saved_model}: train with that, or "
                         "without init_from")


def _read_source(init_from: str, weights: bool):
    """(which checkpoint: its best, else its latest; its meta; its arrays as saved, when `weights`)."""
    source = Checkpoints(init_from, async_save=False, read_only=True)
    try:
        which = "best" if source.best.latest_step() is not None else "latest"
        return which, source.read_meta(which), source.restore_as_saved(which) if weights else None
    except FileNotFoundError as e:
        raise FileNotFoundError(f"init_from={init_from}: {e}") from None
    finally:
        source.close()


def _restart_ema(opt_state, params):
    """A run keeping an EMA of its weights (train.track_ema, last in the chain) averages from the loaded weights."""
    last = opt_state[-1] if isinstance(opt_state, tuple) and opt_state else None
    if not hasattr(last, "ema"):
        return opt_state
    return (*opt_state[:-1], last._replace(ema=jax.tree.map(jnp.copy, params)))  # copies: the step donates both


def _merge(fresh: dict, saved: dict):
    """fresh with every leaf that `saved` has at the same path and shape replaced; (tree, loaded, skipped)."""
    flat_fresh = traverse_util.flatten_dict(fresh)
    flat_saved = traverse_util.flatten_dict(_int_keys(saved))
    out, loaded, skipped = {}, 0, []
    for path, value in flat_fresh.items():
        old = flat_saved.get(path)
        if old is not None and np.shape(old) == np.shape(value):
            out[path] = jax.device_put(np.asarray(old, dtype=value.dtype), value.sharding)
            loaded += 1
        else:
            out[path] = value
            skipped.append(path)
    return traverse_util.unflatten_dict(out), loaded, ["/".join(map(str, p)) for p in skipped]


def _int_keys(tree):
    """Saved trees come back with string keys where the model has integer ones (its lists of blocks)."""
    if not isinstance(tree, dict):
        return tree
    return {_int_or_str(k): _int_keys(v) for k, v in tree.items()}


def _int_or_str(key):
    return int(key) if isinstance(key, str) and key.isdigit() else key
