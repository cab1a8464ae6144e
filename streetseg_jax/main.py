"""Train and evaluate: `python -m streetseg_jax.main --config configs/X.py --workdir DIR [--config.key=value ...]`.

Multi-host: `--coordinator_address HOST:PORT --num_processes N --process_id I`, or `--multihost` to let JAX
detect the cluster (SLURM and friends). Running the same command again resumes from the latest checkpoint.
"""
import ast
import json
import os
import re
import shlex
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import NoReturn

if __name__ == "__main__":     # before JAX loads: the command may run itself again once, see hugepages.py
    from streetseg_jax import cli, hugepages
    hugepages.reexec_with_huge_pages()
    # SIGTERM too, but under jax.distributed, where JAX's preemption service takes it (main())
    cli.hold_while_loading(sigterm=not any(arg.lstrip("-").split("=")[0] in ("coordinator_address", "multihost")
                                           for arg in sys.argv[1:]))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from streetseg_jax import config_keys, sharding  # noqa: E402
from streetseg_jax.cli import (disk_refusal, exit_on_late_signals, fail, normalise_argv, quiet_libraries,  # noqa: E402
                               stdout_to_devnull, stop_on_ctrl_c, stop_on_sigterm, stopped_by)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file with get_config(), or a run's "
                                          "config.json (its recorded settings)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Join jax.distributed with cluster auto-detection.")
_STARTUP_TIMEOUT = flags.DEFINE_integer("startup_timeout", 300, "Seconds every process waits for all of them to "
                                       "join (multi-host; JAX ends a process that waits longer).")
_SAME_DATA = flags.DEFINE_bool("same_data", False, "Resume on a dataset whose files differ from those the run trained "
                               "on, which you know is a rebuild of the same inputs (one built by a version before "
                               "2026-12-07 and rebuilt has other bytes).")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "XLA CPU devices per process (0: as many as there are cores "
                                    "at most, a count that divides both batch sizes, for a single-process run; see "
                                    "sharding.split_cpu_into_cores).")


def main(argv):
    del argv
    quiet_libraries()
    try:
        config = _CONFIG.value
        config.keys()                         # a config file that failed to load says so on first use
    except OSError as e:
        _usage_error(e)
    _check_process_flags()
    try:
        if _COORDINATOR.value or _MULTIHOST.value:      # under jax.distributed, JAX's preemption service owns SIGTERM
            stop_on_ctrl_c()
        else:
            stop_on_sigterm()   # outside the training loop, which has its own handler
        _run(config)
        if not (_COORDINATOR.value or _MULTIHOST.value):
            exit_on_late_signals(0)     # "done:" is said: a signal now says so, not a silent 130 or -15
    except (AttributeError, KeyError) as e:
        key = _missing_config_key(e)
        if key is None:
            raise
        _stop(f"error: the config has no key {key!r}, which a run reads: a config file starts from "
              "configs/default.py's get_config() and changes what differs (as configs/camvid.py does)", 2)
    except KeyboardInterrupt as e:      # outside the training loop, which saves and says so itself
        by, code = stopped_by(e)
        _stop(f"stopped by {by}; what was saved stays (checkpoints, a finished dataset build), and the same "
              "command goes on from there", code, at_once=True)


def _missing_config_key(e: Exception) -> str | None:
    """The key a ConfigDict lookup did not find (ml_collections' AttributeError or KeyError), or None."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames or "ml_collections" not in Path(frames[-1].filename).parts:
        return None
    found = re.match(r"""['"\\]*(\w+)""", str(e.args[0]) if e.args else "")
    return found[1] if found else None


def _stop(line: str, code: int, record: bool = True, at_once: bool = False) -> NoReturn:
    """Print `line` and exit; one process of several exits at once, so that the others stop too (stop_alone), and
    so does one `at_once` (stopped while JAX's and orbax's threads work: the interpreter's exit crashed, exit 139)."""
    if sharding.is_multiprocess():
        sharding.stop_alone(line, code, record)
    print(line, file=sys.stderr)
    if at_once:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def _run(config) -> None:
    if _CPU_DEVICES.value or not (_COORDINATOR.value or _MULTIHOST.value):
        sharding.split_cpu_into_cores(config.batch_size, config.eval_batch_size, requested=_CPU_DEVICES.value)
    try:
        sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _MULTIHOST.value,
                                        _STARTUP_TIMEOUT.value)
    except ValueError as e:
        fail(str(e))
    from streetseg_jax import train
    from streetseg_jax.data.source import DatasetNotFoundError
    from streetseg_jax.run import RunError, check_same_start, check_settings

    config.update(config_keys.absolute_paths({key: config[key] for key in config_keys.PATH_KEYS}))
    finished = sharding.watch_other_processes()
    try:      # before a dataset is built for a run that cannot start
        check_same_start(config, _NUM_PROCESSES.value)
        sharding.all_succeed(lambda: check_settings(config, _WORKDIR.value))
        _build_synthetic_if_missing(config.dataset, config.data_dir)
        train.train_and_evaluate(config, _WORKDIR.value, _overrides(), _SAME_DATA.value)
    except (DatasetNotFoundError, RunError, sharding.OtherProcessFailed, OSError, ValueError) as e:
        _stop(f"error: {_message(e)}", 2, record=not isinstance(e, sharding.OtherProcessFailed))
    except Exception as e:
        if not sharding.is_multiprocess():
            raise
        lost = sharding.lost_process(e) if isinstance(e, jax.errors.JaxRuntimeError) else None
        if lost:        # a collective whose other side is gone: another process's failure, not ours to record
            _stop(f"error: {lost}", 2, record=False)
        traceback.print_exc()       # this process's own (a bug, out of memory): its traceback, then the others stop
        _stop(f"error: {_message(e)}", 1)
    finally:    # an end every process reaches (the last step, an agreed stop): no alarm for the others
        finished()


def _check_process_flags() -> None:
    """The multi-host flags make sense together or not at all (JAX would raise, or train alone, or wait 5 minutes)."""
    given = [f"--{f.name}" for f in (_NUM_PROCESSES, _PROCESS_ID) if f.value is not None]
    if _STARTUP_TIMEOUT.value < 1:
        _usage_error(ValueError(f"--startup_timeout must be 1 second or more, got {_STARTUP_TIMEOUT.value}"))
    if _CPU_DEVICES.value < 0:
        _usage_error(ValueError(f"--cpu_devices must be 0 (one per core) or more, got {_CPU_DEVICES.value}"))
    if given and not (_COORDINATOR.value or _MULTIHOST.value):
        _usage_error(ValueError(f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} "
                                "--coordinator_address HOST:PORT (or --multihost)"))
    if _COORDINATOR.value and len(given) < 2:
        _usage_error(ValueError("--coordinator_address needs --num_processes N and --process_id I"))
    if _COORDINATOR.value and _NUM_PROCESSES.value < 1:
        _usage_error(ValueError(f"--num_processes must be 1 or more, got {_NUM_PROCESSES.value}"))
    if _COORDINATOR.value and not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
        _usage_error(ValueError(f"--process_id must be 0..{_NUM_PROCESSES.value - 1} with --num_processes "
                                f"{_NUM_PROCESSES.value}, got {_PROCESS_ID.value}"))


def _build_synthetic_if_missing(dataset: str, data_dir: str) -> None:
    """The embedded default builds itself on first use; any other missing dataset is an error naming its build
    command (raised when it is opened)."""
    import numpy as np
    from jax.experimental import multihost_utils
    from streetseg_jax.data import build, source

    if dataset != "street_seg/synthetic":
        return
    # The version the builder writes now: an older build (another format, fewer scenes) is not reused.
    missing = not source.is_built(build.current_version(dataset), data_dir)
    if jax.process_count() > 1:     # process 0 decides for all: processes that disagreed waited for each other forever
        missing = bool(multihost_utils.broadcast_one_to_all(np.int32(missing)))
    if not missing:
        return
    sharding.all_succeed(lambda: _build_synthetic(dataset, data_dir) if jax.process_index() == 0 else None)


def _build_synthetic(dataset: str, data_dir: str) -> None:
    """Build the synthetic dataset where it is missing; where an older version of it is there, with that one's
    options (a 1.0.0 build of 24 scenes was said not to be there, and 500 scenes were built instead)."""
    from streetseg_jax.data import source
    from streetseg_jax.data.build import build, current_version
    from streetseg_jax.data.builder import built_options

    options, flags = {}, ""
    if source.is_built(dataset, data_dir):
        info = source.open_built(dataset, data_dir).info
        stored = built_options(info) or {}
        options = {k: v for k, v in stored.items() if k != "label_map" and v is not None}
        flags = "".join(f" --{k} {v}" for k, v in options.items())
        print(f"{dataset} {info.version} in {data_dir} is an older version: building "
              f"{current_version(dataset).rsplit(':', 1)[-1]} beside it with its options (python -m streetseg_jax.data "
              f"build --config synthetic --data_dir {shlex.quote(data_dir)}{flags}); a run that trained on "
              f"{info.version} goes on with --config.dataset={dataset}:{info.version}", flush=True)
    else:
        print(f"{dataset} is not in {data_dir}: building it first "
              f"(python -m streetseg_jax.data build --config synthetic --data_dir {shlex.quote(data_dir)})", flush=True)
    build("synthetic", data_dir, **options)


def _message(e: Exception) -> str:
    """The error's own words; one raised outside this package (a library's ValueError, a bug of ours it reveals)
    also says where, so that a report of it can be traced without a traceback. A path the disk refused is said
    as `path: reason` (cli.disk_refusal)."""
    refused = disk_refusal(e) if isinstance(e, OSError) else None
    if refused:
        return refused
    frames = traceback.extract_tb(e.__traceback__)
    if not frames or _ours(frames[-1]):
        return str(e)
    ours = next((frame for frame in reversed(frames) if _ours(frame)), None)
    return (f"{e} ({type(e).__name__} in {_where(frames[-1])}"
            + (f", called from {_where(ours)}" if ours else "") + ")")


_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = {"site-packages", "dist-packages"}     # where pip puts packages (dist-: Debian's and NVIDIA's Pythons)


def _ours(frame: traceback.FrameSummary) -> bool:
    """A frame of this package's own code (a checkout named streetseg_jax holding a virtual environment is not)."""
    return Path(frame.filename).resolve().is_relative_to(_PACKAGE)


def _where(frame: traceback.FrameSummary) -> str:
    path = Path(frame.filename).resolve()
    if _ours(frame):
        return f"streetseg_jax/{path.relative_to(_PACKAGE).as_posix()}:{frame.lineno}"
    parts = path.parts
    below = max((i for i, part in enumerate(parts) if part in _INSTALLED), default=len(parts) - 3)
    return f"{'/'.join(parts[below + 1:])}:{frame.lineno}"


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parse, with a message instead of a traceback for a mistyped flag, config key or value (ml_collections
    raises AttributeError, KeyError or ValueError for those, not flags.Error, and OSError for a config file given
    twice whose second does not load; a single one is loaded on first use, in main), and for a config file whose
    own code fails."""
    argv = normalise_argv(argv)
    if "-h" in argv[1:]:            # absl knows -? and --help, and refused -h as an unknown flag
        argv = [arg for arg in argv if arg != "-h"] + ["--help"]
    _check_config_file(argv)
    argv = _recorded_config(argv)
    sys.argv[:] = argv              # ml_collections reads its overrides from sys.argv
    _check_each_key_once(argv)
    try:
        return flags.FLAGS(argv)
    except SystemExit as e:     # absl exits 1 after printing the help it was asked for
        if e.code == 1 and {"--help", "--helpshort", "--helpfull", "-?"} & set(argv[1:]):
            raise SystemExit(0) from None
        raise
    except BrokenPipeError:     # the help, read by `| head`
        raise
    except Exception as e:
        failed = _config_file_failure(e)
        if failed:
            fail(failed)
        if isinstance(e, (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError)):
            _usage_error(e)
        raise


def _check_config_file(argv: list[str]) -> None:
    """A --config file that is not there, named as given (ml_collections names a module of its own)."""
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--config=") else (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
        path = None if value is None else Path(os.path.expanduser(value.partition(":")[0]))
        if path is not None and not path.is_file():
            packaged = config_keys.known() is None and path.parent.name == "configs"    # pip installed, no checkout
            fail(f"--config {value}: " + ("no such file" if not path.exists() else "not a file") + (
                 " (configs/ comes with streetseg_jax's source checkout, not with the installed package: copy it "
                 "from there, or give a run's config.json)" if packaged else ""))
        if path is not None and path.suffix.lower() == ".json" and not _recorded_run(path):
            fail(f"--config {value}: a .json config is a run's config.json (it has a provenance block); this one "
                 "is not: give a config file (.py with get_config()) or a run's config.json")


def _recorded_run(path: Path) -> bool:
    try:
        return "provenance" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _overrides() -> list[str]:
    """The --config overrides to record (see prepare_run): those given, and where the config is a run's config.json,
    those it records, whose values its settings hold (a later resume from the config file was not refused where it
    left them out)."""
    given = list(config_flags.get_override_values(flags.FLAGS["config"]))
    spec, loader = flags.FLAGS["config"].config_filename, f"{Path(__file__).with_name('recorded_config.py')}:"
    if not spec.startswith(loader):
        return given
    from streetseg_jax.recorded_config import recorded_overrides
    return sorted(set(given) | set(recorded_overrides(spec[len(loader):])))


def _recorded_config(argv: list[str]) -> list[str]:
    """`--config RUN/config.json` as recorded_config.py:RUN/config.json, which reads a run's recorded settings."""
    out = list(argv)
    for i, arg in enumerate(argv):
        at, value = (i, arg.partition("=")[2]) if arg.startswith("--config=") else (
            (i + 1, argv[i + 1]) if arg == "--config" and i + 1 < len(argv) else (None, ""))
        if at is not None and value.lower().endswith(".json"):
            loader = f"{Path(__file__).with_name('recorded_config.py')}:{Path(value).expanduser().absolute()}"
            out[at] = f"--config={loader}" if at == i else loader
    return out


def _check_each_key_once(argv: list[str]) -> None:
    """An override given twice: ml_collections joins a tuple's values ('--config.eval_extra_scales=(0.5,)' then
    '(0.75,)' evaluated at both scales), where a number's last value wins; refused either way."""
    given: dict[str, list[str]] = {}
    for arg in argv[1:]:
        if arg.startswith("--config."):
            given.setdefault(arg[len("--config."):].partition("=")[0], []).append(arg)
    for key, args in given.items():
        if len(args) > 1:
            fail(f"--config.{key} is given {len(args)} times ({' '.join(map(shlex.quote, args))}): give each key "
                 "once (a tuple's values would be joined, not replaced)")


def _config_file_failure(e: Exception) -> str | None:
    """Where the config file's own code failed (a syntax error, its get_config raising, no get_config), without the
    50 lines of absl and ml_collections around it; None for an error of a flag or an override."""
    if "has no attribute 'get_config'" in str(e):
        return "the config file has no get_config() (it returns the run's ml_collections.ConfigDict: see " \
               "configs/default.py)"
    if isinstance(e, SyntaxError) and e.filename and not _library(e.filename):
        return (f"the config file does not parse: {e.filename}:{e.lineno}: {e.msg}"
                + (f"\n    {e.text.strip()}" if e.text else ""))
    while e.__cause__ or e.__context__:     # what ml_collections wrapped
        e = e.__cause__ or e.__context__
    frames = [frame for frame in traceback.extract_tb(e.__traceback__) if not _library(frame.filename)]
    if not frames:
        return None
    return f"the config file failed: {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}: " \
           f"{type(e).__name__}: {e}"


def _library(filename: str) -> bool:
    """A frame of Python's, of an installed package or of ours: not a config file's."""
    path = Path(filename).resolve()
    return (filename.startswith("<") or bool(_INSTALLED & set(path.parts)) or path.is_relative_to(_PACKAGE)
            or path.is_relative_to(sysconfig.get_paths()["stdlib"]))


def _usage_error(e: Exception) -> NoReturn:
    e = e.__cause__ or e                  # a config file's own error, under "Configuration is not available"
    text = str(e.args[0]) if isinstance(e, (AttributeError, KeyError)) and e.args else str(e)
    while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":     # a KeyError's repr, perhaps repr'd again
        try:
            text = str(ast.literal_eval(text))
        except (SyntaxError, ValueError):
            break
    first, _, rest = text.partition("\n")
    key = first.strip("'\"")
    if key.isidentifier():               # all that is left of a key ml_collections does not know
        given = next((arg[len("--config."):].partition("=")[0] for arg in sys.argv[1:]
                      if arg.startswith("--config.") and arg.partition("=")[0].endswith(f".{key}")), key)
        guess = re.search(r'Did you mean "(\w+)"', rest)      # a key of the same section: the full key is needed
        section = given.rpartition(".")[0]
        guess = (f"{section}." * bool(section) + guess[1]) if guess else config_keys.meant(given)
        text = f"unknown config key {given!r}: " + (f"did you mean {guess!r}?" if guess else
                                                     "see the config file for the keys there are")
    text = re.sub(r"\('Non-boolean argument to boolean flag', (.*)\)", r"takes true or false, got \1", text)
    fail(f"{text}\n(python -m streetseg_jax.main --help lists the flags)")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    try:
        app.run(main, flags_parser=_parse_flags)
    except BrokenPipeError:     # its reader stopped reading (`| head`)
        stdout_to_devnull()
        sys.exit(1)
