"""The config keys a run reads: those of configs/default.py, which has every one (a config file starts from its
get_config() and changes what differs). Where the package is installed without the checkout's configs/ (pip), the
keys are unknown and nothing is refused for them."""
from __future__ import annotations

import difflib
import functools
import importlib.util
import os
from pathlib import Path


@functools.cache
def known() -> frozenset[str] | None:
    """Every key of the default config, dotted (model.base_width); None without the checkout's configs/."""
    from streetseg_jax.visualize import flatten

    root = Path(__file__).resolve().parents[1]
    default = root / "configs" / "default.py"
    try:        # this package's own checkout, not another project's configs/ beside site-packages
        ours = 'name = "streetseg_jax"' in (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        ours = False
    if not (ours and default.is_file()):
        return None
    spec = importlib.util.spec_from_file_location("_streetseg_default_config", default)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return frozenset(flatten(module.get_config().to_dict()))


def unknown(config: dict) -> list[str]:
    """The dotted keys of `config` no run reads, sorted ([] where the keys are unknown)."""
    from streetseg_jax.visualize import flatten

    keys = known()
    return [] if keys is None else sorted(set(flatten(config)) - keys)


def meant(key: str) -> str | None:
    """The known key a misspelt or misplaced `key` most likely means (learning_rat, crop_size), or None."""
    keys = known() or frozenset()
    close = difflib.get_close_matches(key, keys, 1, 0.7) or sorted(k for k in keys if k.endswith("." + key))
    return close[0] if close else None


PATH_KEYS = ("data_dir", "init_from")     # folders a run names: made absolute where given (absolute_paths)


def absolute_paths(config: dict) -> dict:
    """`config` (flat: dotted keys, or a ConfigDict's top level) with its PATH_KEYS absolute and `~` expanded, as
    config.json records them: evaluate and report from another folder find the data, a run started from the
    config.json elsewhere finds the run it warm-started from, and a relative one an older version recorded compares
    equal at a resume from the folder it started in."""
    return {**config, **{key: os.path.abspath(os.path.expanduser(config[key])) for key in PATH_KEYS
                         if isinstance(config.get(key), str) and config[key]}}
