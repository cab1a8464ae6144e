"""A run's config.json as a config file: `--config RUN/config.json` is read through this file (ml_collections runs
Python config files only, and JSON's `true` was a NameError there), so a run whose config file is gone resumes from
the settings it recorded, and a new run starts from another's. `--config.KEY=VALUE` overrides them as usual."""
from __future__ import annotations

import json
from pathlib import Path

import ml_collections


def get_config(path: str) -> ml_collections.ConfigDict:
    recorded = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(recorded, dict) or "provenance" not in recorded:
        raise ValueError(f"{path} is no training run's config.json (it has no provenance)")
    recorded.pop("provenance")
    return ml_collections.ConfigDict(_tuples(recorded))


def recorded_overrides(path: str) -> list[str]:
    """The --config overrides the run's config.json records ([] where none are): its settings hold them, so a run
    started or resumed from it records them as its own, and a later resume from the config file must give them."""
    overrides = json.loads(Path(path).read_text(encoding="utf-8"))["provenance"].get("overrides")
    return list(overrides) if isinstance(overrides, list) else []


def _tuples(value):
    """JSON's lists as the config's tuples (eval_extra_scales), so that overrides and resume checks see their type."""
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value
