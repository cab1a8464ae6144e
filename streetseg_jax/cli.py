"""Command-line conventions shared by every entry point: flags are spelled with underscores, hyphens are aliases."""
from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import os
import sys
from pathlib import Path
from typing import NoReturn

from streetseg_jax.atomic import WRITE_ERRORS


def normalise_argv(argv: list[str]) -> list[str]:
    """`--label-map=x` -> `--label_map=x`, `--config.num-train-steps=9` -> `--config.num_train_steps=9` (no config
    key has a hyphen); `--workdir=~/runs/a` and `~/runs/a` -> `/home/me/runs/a`, as the shell expands a `~` that
    starts a word but not one after `=`, nor one quoted or in a script's argument list (a run made a folder named
    `~`, and evaluate found `'~/runs/a'` where report did not). Other values and sub-commands are left alone."""
    out = []
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = "--" + name[2:].replace("-", "_") + eq + _home(value)
        out.append(_home(arg))
    return out


def _home(value: str) -> str:
    return os.path.expanduser(value) if value.startswith("~") else value


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, naming the flag a mistyped one was meant to be (Python 3.11's argparse said only "unrecognized
    arguments: --chekpoint", or for `--work_dir X` that --workdir is required, without a word of --work_dir)."""

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        parsers = [self, *(sub for action in self._actions if isinstance(action, argparse._SubParsersAction)
                           for sub in action.choices.values())]
        known = sorted({option for parser in parsers for action in parser._actions
                        for option in action.option_strings if option.startswith("--")})
        guesses = []
        for arg in getattr(self, "_given", []):
            name = arg.partition("=")[0]
            if name.startswith("--") and name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                guesses += [f"{name}: did you mean {close[0]}?"] if close else []
        super().error("; ".join([message, *guesses]))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a user-facing error (no traceback) and exit."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def export_label_map(export: Path) -> Path | None:
    """The label map an export brings (label_map_of_export), said on stderr; a clear exit where it cannot be told
    (two split folders' class lists that differ)."""
    from streetseg_jax.labels.label_map import LabelMapError, label_map_of_export
    try:
        path = label_map_of_export(export)
    except LabelMapError as e:
        fail(str(e))
    if path is not None:
        print(f"note: the label map is the export's {path} (--label_map chooses another)", file=sys.stderr)
    return path


def disk_refusal(error: OSError) -> str | None:
    """`path: reason` for a file or folder the disk refused (read-only, no permission, full, a file where a folder
    is needed), which a user fixes by choosing another place, or atomic.cannot_write's "cannot write PATH: reason";
    None for any other error (a traceback's errno text and our location in the code help nobody there)."""
    if str(error).startswith("cannot write "):
        return str(error)
    if error.filename and error.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"{error.filename}: {error.strerror} (a file where a folder is needed?)"
    if error.filename and error.errno in WRITE_ERRORS | {errno.EACCES, errno.EPERM}:
        return f"{error.filename}: {error.strerror}"
    return None


def quiet_libraries() -> None:
    """orbax and TFDS log every save and read, and a failed orbax save or restore logs each of its writes and reads
    cut short (a full disk printed 2,500 lines, a damaged checkpoint 400, as often as not one error): the commands
    print what matters, and errors reach them as exceptions."""
    import logging
    import warnings

    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)
    _drop_closed_loops()


@contextlib.contextmanager
def closed_loops_unsaid():
    """The block with orbax's "Event loop is closed" errors (`_without_closed_loops`) unsaid, and after it too
    where it raised: a read cut short ends orbax's other reads later, each with one (150 to 450 tracebacks after a
    damaged checkpoint's one-line error, in a notebook). Other unraisable errors are said as before; a block that
    ends well puts back the hook it found."""
    before = sys.unraisablehook
    _drop_closed_loops()
    yield
    sys.unraisablehook = before


@contextlib.contextmanager
def absl_warnings_off():
    """absl's (orbax's and TFDS's) warnings not logged while the block runs: orbax's that a read-only checkpoint
    folder is read-only, TFDS's that a config made at run time is "custom"."""
    from absl import logging as absl_logging
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


def _drop_closed_loops() -> None:
    """sys.unraisablehook made `_without_closed_loops`, unless it is already (no hook wrapped twice)."""
    if not getattr(sys.unraisablehook, "drops_closed_loops", False):
        sys.unraisablehook = _without_closed_loops(sys.unraisablehook)


def _without_closed_loops(hook):
    """sys.unraisablehook, less the "Event loop is closed" that orbax's reads and writes raise when they end after
    the operation they belonged to failed (978 tracebacks for one full disk)."""
    def unraisable(info):
        if not (info.exc_type is RuntimeError and str(info.exc_value) == "Event loop is closed"):
            hook(info)
    unraisable.drops_closed_loops = True
    return unraisable


def stop_on_sigterm() -> None:
    """SIGTERM (a spot preemption, `kill`) stops a command as Ctrl-C does, KeyboardInterrupt("SIGTERM"): what is
    under way cleans up after itself and the command says what it leaves (the process just died, and workers it had
    started lived on as orphans). Ctrl-C's KeyboardInterrupt too is raised by `_interrupt` (unless SIGINT is
    ignored, as in a background job), which never raises where the exception would be dropped."""
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    stop_on_ctrl_c()


def stop_on_ctrl_c() -> None:
    """Ctrl-C raises `_interrupt`'s KeyboardInterrupt; one held while the command loaded is raised now."""
    import signal

    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _hold):
        signal.signal(signal.SIGINT, _interrupt)
    if _held:
        raise KeyboardInterrupt("SIGTERM" if _held[0] == signal.SIGTERM else "")


_held: list[int] = []       # the signals that came while the command loaded


def hold_while_loading(sigterm: bool = True) -> None:
    """For a command's `__main__` before it imports JAX (seconds): Ctrl-C (and SIGTERM unless `sigterm` is False)
    are held until stop_on_sigterm or stop_on_ctrl_c raise them. Raised where they came, in the imports, Python's
    KeyboardInterrupt was printed and dropped in JAX's garbage-collector callback (the command ran to its end, exit
    0), aborted the process in a C++ extension's loading, or printed 20-50 lines of traceback."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _hold)
    if sigterm:
        signal.signal(signal.SIGTERM, _hold)


def _hold(signum, frame) -> None:
    _held.append(signum)


def _interrupt(signum, frame) -> None:
    """KeyboardInterrupt ("SIGTERM" for SIGTERM); where the signal came while a garbage-collector callback or a
    __del__ ran, which print an exception and go on (JAX's _xla_gc_callback took a SIGTERM so, and the command ran
    to its end, exit 0), the signal is sent again a moment later."""
    import gc
    import signal
    import threading

    inside = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in inside or frame.f_code.co_name == "__del__":
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        frame = frame.f_back
    _interrupts.append("SIGTERM" if signum == signal.SIGTERM else "")
    raise KeyboardInterrupt(_interrupts[-1])


_interrupts: list[str] = []     # the KeyboardInterrupt of each Ctrl-C and SIGTERM `_interrupt` raised, in order


def interrupts() -> int:
    """How many Ctrl-Cs and SIGTERMs have interrupted this process so far (for `reraise_interrupt_since`)."""
    return len(_interrupts)


def reraise_interrupt_since(count: int, error: Exception) -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C or SIGTERM that came since `count` (interrupts()), from `error`: a
    library that caught it on the way (orbax reading a checkpoint) raised `error` in its place, and the command
    said the checkpoint was damaged rather than that it was stopped. Nothing where none came."""
    if len(_interrupts) > count:
        raise KeyboardInterrupt(_interrupts[-1]) from error


def stopped_by(interrupt: KeyboardInterrupt) -> tuple[str, int]:
    """What stopped a command, and its exit code: ("SIGTERM", 143) for stop_on_sigterm's KeyboardInterrupt,
    ("Ctrl-C", 130) for any other."""
    return ("SIGTERM", 143) if str(interrupt) == "SIGTERM" else ("Ctrl-C", 130)


def run_command(main, leaves: str) -> NoReturn:
    """Run a command's `main()` as its `__main__`: Ctrl-C and SIGTERM stop it with a line saying what it `leaves`
    (exit 130 and 143, as `main` and `predict` do; a traceback of JAX's internals was 40-170 lines), and a reader
    that stops reading (`| head`) ends it quietly. Pillow's warning of a possible decompression bomb is not printed:
    our readers take images up to labels.images.MAX_PIXELS, twice its limit, where Pillow refuses them (a line for
    each 90-179-megapixel image otherwise, from the readers that do not silence it themselves)."""
    import warnings

    from PIL import Image
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        stop_on_sigterm()
        code = main()
    except KeyboardInterrupt as e:
        by, code = stopped_by(e)
        print(f"\nstopped by {by}: {leaves}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)      # the interpreter's exit crashed (SIGSEGV) in JAX's threads cut short
    except BrokenPipeError:
        stdout_to_devnull()
        code = 1
    except OSError as e:    # an output the disk refused, said in a line (compare --output on a full disk: 27)
        refused = disk_refusal(e)
        if refused is None:
            raise
        print(f"error: {refused}", file=sys.stderr)
        code = 2
    else:
        exit_on_late_signals(code)
    sys.exit(code)


def stdout_to_devnull() -> None:
    """Where stdout's reader is gone (`| head` done): what is printed from here on goes nowhere, and Python's own
    flush at exit no longer fails once more."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def exit_on_late_signals(code) -> None:
    """From here on (the command's work done and said, the interpreter shutting down) Ctrl-C and SIGTERM end the
    process at once with a line saying so, where they exited 130 without a word or as a signal's victim."""
    import signal

    def finished(signum, frame):
        by, _ = stopped_by(KeyboardInterrupt("SIGTERM" if signum == signal.SIGTERM else ""))
        print(f"\nstopped by {by} as the command ended: what it said it wrote is whole", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) and code else 0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, finished)


def check_output_file(path, *suffixes: str) -> None:
    """Exit with a message where --output names an existing file of another kind than the command writes (a run's
    metrics.jsonl, an export's annotations: a mistyped flag replaced them)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() not in suffixes:
        fail(f"--output {path} exists and is not a {' or '.join(suffixes)} file; give a new file (it would be "
             "replaced)")


def check_workdir(workdir) -> None:
    """Exit with a message unless `workdir` is a folder (what is in it, the command that reads it checks)."""
    if not Path(workdir).is_dir():
        fail(f"--workdir {workdir} " + ("is a file, not a training work directory" if Path(workdir).exists()
                                        else "does not exist"))


def checkpoint_arg(text: str) -> str | int:
    """argparse type of --checkpoint: best, latest, or a step number (as an int)."""
    if text in ("best", "latest"):
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be best, latest or a step number, got {text!r}")
    return int(text)


def add_checkpoint_flag(parser, more: str = "") -> None:
    """--checkpoint best|latest|STEP (dest checkpoint; checkpoint_arg), best by default, as every command that
    loads a run's model takes it; `more` is said after its help."""
    parser.add_argument("--checkpoint", default="best", type=checkpoint_arg,
                        help="best (default; latest if none), latest or a step" + more)


def add_flip_tta_flags(parser, help_text: str) -> None:
    """--flip_tta / --no_flip_tta (dest flip_tta); neither leaves None: as the run evaluated (its eval_flip_tta)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--flip_tta", dest="flip_tta", action="store_true",
                       help=f"{help_text} (default: as the run evaluated, its config's eval_flip_tta)")
    group.add_argument("--no_flip_tta", dest="flip_tta", action="store_false", help="never flip TTA")
    parser.set_defaults(flip_tta=None)


MAX_EXTRA_SCALE = 8    # multi-scale TTA's scales lie in (0, 8]: --extra_scales, eval_extra_scales, Predictor


def add_extra_scales_flag(parser) -> None:
    """--extra_scales S[,S...] (dest extra_scales, a tuple; `none` gives ()); absent leaves None: as the run
    evaluated (its config's eval_extra_scales)."""
    parser.add_argument("--extra_scales", type=_scales, default=None, metavar="S[,S...]|none",
                        help="multi-scale TTA: also run the network at these scales and average the logits "
                             "(default: as the run evaluated, its config's eval_extra_scales; none: off)")


def _scales(text: str) -> tuple[float, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        scales = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected scales like 0.3125,0.5 or none, got {text!r}") from None
    if not all(0 < s <= MAX_EXTRA_SCALE for s in scales):
        raise argparse.ArgumentTypeError(f"scales must be in (0, {MAX_EXTRA_SCALE}], got {text!r}")
    if len(set(scales)) < len(scales):      # the network run twice at one scale, weighted double
        raise argparse.ArgumentTypeError(f"each scale once, got {text!r}")
    return scales
