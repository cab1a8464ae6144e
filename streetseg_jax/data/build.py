"""Build `street_seg` datasets into a data dir, all or nothing (data/source.py opens them).

`build` checks the options and inputs, reuses a build made from the same ones, and otherwise has the TFDS builder
(data/builder.py) write the dataset: a failed build leaves what was there before and no empty folders behind.
Builds into one data dir take turns, and each first clears what builds killed on the way left there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import tensorflow_datasets as tfds
from tqdm import tqdm

from streetseg_jax.atomic import WRITE_ERRORS, cannot_write, machine_lock, owner_is_gone, owner_tag
from streetseg_jax.data import camvid, inputs
from streetseg_jax.data.builder import (MASKS_SCRATCH, SCENES_SCRATCH, BuildError, StreetSeg, built_options,
                                        check_options, check_synthetic_label_map, from_annotations_config,
                                        no_scaffolding_left)
from streetseg_jax.data.configs import CONFIG_OPTIONS
from streetseg_jax.data.source import built_versions, default_data_dir, is_built, open_built, parse_name
from streetseg_jax.labels.label_map import LabelMap, default_label_map

__all__ = ["BuildResult", "build", "current_version"]


@dataclasses.dataclass
class BuildResult:
    path: Path                  # DATA_DIR/street_seg/<config>/<version>
    splits: dict[str, int]      # split name -> examples
    seconds: float
    reused: bool                # already built: nothing was written


def build(config_name: str, data_dir: str | os.PathLike | None, manual_dir: str | os.PathLike | None = None, *,
          overwrite: bool = False, file_format: str = "array_record", name: str | None = None,
          log: Callable[[str], None] | None = None, **options) -> BuildResult:
    """Build street_seg/<config_name> into data_dir (TFDS shows progress bars); reuse it when already built.

    config_name "from_annotations" builds street_seg/<name> from the export in manual_dir; its options: format
    (labels/formats, or "auto"), label_map, val_fraction or split_file, unknown, num_workers. "camvid" builds
    CamVid from SegNet's CamVid/ folder in manual_dir (data/camvid.py; option: num_workers). The other configs'
    options: num_images, height, width, seed, test_fraction, label_map, num_workers (see data/builder.py).
    Builds from an export print the validation report through `log` (default: stderr) before writing anything,
    and are refused when the inputs changed since the dataset was built (unless overwrite).
    Raises builder.BuildError / UnknownLabelsError / LabelMapError for bad input, with messages for users.
    """
    _check_file_format(file_format)
    data_dir = Path(data_dir or default_data_dir()).expanduser()     # --data_dir=~/x reaches us unexpanded
    if data_dir.exists() and not data_dir.is_dir():
        raise BuildError(f"--data_dir {data_dir} is a file, not a folder")
    log = log or _to_stderr
    tfds.display_progress_bar(sys.stderr.isatty())     # a log file got TFDS's bars as lines of cursor escapes
    with _one_build_at_a_time(data_dir, log), _failures_said(data_dir):
        _clear_interrupted_builds(data_dir, log)
        if config_name == "synthetic":
            return _build_synthetic(data_dir, overwrite, file_format, options)
        if config_name == "camvid":
            return _build_camvid(data_dir, manual_dir, overwrite=overwrite, file_format=file_format, log=log,
                                 options=options)
        return _build_export(config_name, data_dir, manual_dir, overwrite=overwrite, file_format=file_format,
                             name=name, log=log, options=options)


@contextlib.contextmanager
def _failures_said(data_dir: Path):
    """A write the disk refuses that names no file (a full disk: "[Errno 28] No space left on device", or the
    record writer's RuntimeError "write() failed" and 50 lines of traceback) as "cannot write DATA_DIR: reason";
    TFDS's FileExistsError where another machine's build took the place first as a BuildError."""
    try:
        yield
    except FileExistsError as e:
        if "Cannot rename" not in str(e):
            raise
        raise BuildError(f"another build of this dataset into {data_dir} finished first (on another machine, which "
                         "takes its turn apart): it is there now; the same command uses it, --overwrite replaces "
                         f"it (TFDS: {e})") from None
    except OSError as e:
        if e.filename is None and e.errno in WRITE_ERRORS and not str(e).startswith("cannot write "):
            raise cannot_write(data_dir, e) from e
        raise
    except RuntimeError as e:
        if "write() failed" not in str(e):
            raise
        refused = OSError(errno.EIO, str(e).rpartition("write() failed: ")[2] or str(e))
        raise cannot_write(data_dir, refused) from e


def _one_build_at_a_time(data_dir: Path, log: Callable[[str], None]):
    """Builds into one data dir on this machine take turns, and the one that waited finds the dataset built (two
    runs started on a fresh data dir both built it, and the second failed renaming its copy into place)."""
    return machine_lock("build", data_dir, lambda: log(f"another build into {data_dir} is under way; waiting for it "
                                                       "to end"))


_STALE_SECONDS = 6 * 3600    # an incomplete.* folder nothing was written to for this long belongs to no build


def _clear_interrupted_builds(data_dir: Path, log: Callable[[str], None]) -> None:
    """What builds killed on the way left behind: a dataset an interrupted --overwrite had moved aside is put back
    where no new one took its place; our scratch folders (80 MB and more each) and TFDS's incomplete.* folders are
    removed. Only what provably belongs to no running build: ours carry their process (atomic.owner_tag), which
    must have ended on this machine; TFDS's must have seen no write for hours (another machine, or a build that
    takes no lock, may be writing one right now)."""
    moved_aside = list((data_dir / "street_seg").glob("*/.replaced-*"))
    leftovers = [path for path in (*moved_aside, *data_dir.glob(f".{MASKS_SCRATCH}*"),
                                   *(p for prefix in (MASKS_SCRATCH, SCENES_SCRATCH)
                                     for p in (data_dir / "downloads").glob(f"{prefix}*")))
                 if owner_is_gone(path.name)]
    for moved in [path for path in leftovers if path in moved_aside]:
        original = moved.parent / moved.name[len(".replaced-"):].split("@", 1)[0]
        if not original.exists():
            moved.rename(original)
            leftovers.remove(moved)
            log(f"put back {original}: an interrupted rebuild had moved it aside")
    incomplete = list((data_dir / "street_seg").glob("*/incomplete.*"))
    leftovers += [path for path in incomplete if _untouched_for_long(path)]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    for path in (path for path in incomplete if path.exists() and path not in leftovers):
        log(f"note: {path} ({_megabytes(path):.0f} MB) is a build TFDS has not finished: a build killed on the way, "
            f"or one under way on another machine; it is removed once untouched for {_STALE_SECONDS // 3600} hours, "
            "or remove it yourself where no other build writes here")


def _megabytes(folder: Path) -> float:
    """The size of the files in `folder`, those a build renames or removes meanwhile left out."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total / 1e6


def _untouched_for_long(folder: Path) -> bool:
    try:        # a build under way elsewhere renames its files as it goes: not untouched
        newest = max((p.stat().st_mtime for p in (folder, *folder.rglob("*"))), default=0.0)
    except OSError:
        return False
    return time.time() - newest > _STALE_SECONDS


def _build_synthetic(data_dir: Path, overwrite: bool, file_format: str, options: dict) -> BuildResult:
    start = time.perf_counter()
    check_synthetic_label_map(options.get("label_map"))     # before anything is written
    dataset = current_version("street_seg/synthetic")
    if is_built(dataset, data_dir) and not overwrite:
        change = _file_format_change(open_built(dataset, data_dir).info, file_format)
        if change:     # TFDS would refuse to open the builder with a ValueError
            raise BuildError(f"{dataset} in {data_dir}: {change[0]}; {REBUILD}")
    # The build being replaced is moved aside before the builder is made (a builder opened on old files would
    # carry their class names forward), and put back if the new one fails.
    with no_scaffolding_left(dataset, data_dir), _all_or_nothing(dataset, data_dir, replace=overwrite):
        builder = StreetSeg(config="synthetic", data_dir=os.fspath(data_dir), file_format=file_format,
                            beside_older=True, **{k: v for k, v in options.items() if v is not None})
        reused = is_built(dataset, data_dir)    # not builder.is_prepared(): it warns of the folder not there yet
        if reused:
            _check_reuse(builder, _load_label_map(options.get("label_map")))
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return _result(dataset, data_dir, start, reused)


def _build_export(config_name: str, data_dir: Path, manual_dir, *, overwrite: bool, file_format: str,
                  name: str | None, log: Callable[[str], None], options: dict) -> BuildResult:
    """voc_polygons and from_annotations: fingerprint, report, then an all-or-nothing build."""
    start = time.perf_counter()
    num_workers = options.pop("num_workers", None)
    config, builder_kwargs, folder, label_map = _export_inputs(config_name, name, manual_dir, data_dir, options, log)
    dataset = current_version(f"street_seg/{config.name}")
    fingerprint = inputs.fingerprint(folder, label_map, config.options(), exclude=(data_dir,))
    if is_built(dataset, data_dir) and not overwrite:
        _check_unchanged(dataset, data_dir, fingerprint, file_format)
        return _result(dataset, data_dir, start, reused=True)
    with no_scaffolding_left(dataset, data_dir):
        data_dir.mkdir(parents=True, exist_ok=True)
        with inputs.Workers(num_workers) as workers, tempfile.TemporaryDirectory(
                prefix=f".{MASKS_SCRATCH}{owner_tag()}", dir=data_dir) as masks:
            plan = _checked_plan(folder, config, label_map, workers, Path(masks), log, fingerprint["files"])
            plan.fingerprint = fingerprint
            with _all_or_nothing(dataset, data_dir, replace=overwrite):
                _prepare(builder_kwargs, data_dir, folder, file_format, plan, workers)
    return _result(dataset, data_dir, start, reused=False)


def _build_camvid(data_dir: Path, manual_dir, *, overwrite: bool, file_format: str, log: Callable[[str], None],
                  options: dict) -> BuildResult:
    """CamVid: fingerprint (reuse when unchanged), read and check every pair, then an all-or-nothing build."""
    start = time.perf_counter()
    num_workers = options.pop("num_workers", None)
    config = StreetSeg.builder_configs["camvid"]
    check_options(config, {k: v for k, v in options.items() if v is not None})
    folder = _manual_folder(manual_dir, data_dir, "camvid")
    fingerprint = inputs.fingerprint(folder, camvid.label_map(), config.options(), exclude=(data_dir,))
    dataset = current_version("street_seg/camvid")
    if is_built(dataset, data_dir) and not overwrite:
        _check_unchanged(dataset, data_dir, fingerprint, file_format)
        return _result(dataset, data_dir, start, reused=True)
    layout = camvid.read_layout(folder)
    layout.fingerprint = fingerprint
    log(f"camvid in {folder}: {layout.summary()} images")
    for note in layout.notes:
        log(f"warning: {note}")
    with no_scaffolding_left(dataset, data_dir), inputs.Workers(num_workers) as workers, \
            _all_or_nothing(dataset, data_dir, replace=overwrite):
        _prepare({"config": "camvid"}, data_dir, folder, file_format, layout, workers)
    return _result(dataset, data_dir, start, reused=False)


def current_version(dataset: str) -> str:
    """`dataset` at the version the builder writes now: a build of an older version is not reused (a new one is
    written beside it), since its on-disk format differs."""
    return f"{dataset}:{StreetSeg.VERSION}"


def _export_inputs(config_name: str, name: str | None, manual_dir, data_dir: Path, options: dict, log):
    """(config with its format detected, StreetSeg kwargs, export folder, label map)."""
    config, builder_kwargs = _export_config(config_name, name, options)
    folder = _manual_folder(manual_dir, data_dir, config.name)
    label_map = _load_label_map(config.label_map)
    if config.format == "auto":
        config = dataclasses.replace(config, format=inputs.detect_format(folder))
        builder_kwargs["config"] = config
        log(f"detected format: {config.format} ({folder})")
    return config, builder_kwargs, folder, label_map


def _checked_plan(folder: Path, config, label_map: LabelMap, workers, masks: Path, log, files: dict):
    """Read and validate the export (workers draw the masks into `masks`; `files`: the fingerprint's); the report
    is logged, then errors raise."""
    def checking(fn, jobs):
        return list(tqdm(workers.imap(fn, jobs), total=len(jobs), desc="checking", unit="image", disable=None,
                         leave=False))
    plan = inputs.collect(folder, config.format or "voc", label_map, config.split_rule(), unknown=config.unknown,
                          map_fn=checking, mask_dir=masks, files=files)
    log(plan.report.text())
    for note in plan.notes:
        log(note)
    plan.raise_for_errors()
    return plan


def _export_config(config_name: str, name: str | None, options: dict):
    """(the StreetSegConfig, what to pass to StreetSeg for it): a registered config is named, with overrides;
    a from_annotations config is made here."""
    if config_name == "from_annotations":
        if not name:
            raise BuildError("from_annotations needs a dataset name (--name NAME): it builds street_seg/NAME")
        unknown = {k: v for k, v in options.items() if v is not None and k not in CONFIG_OPTIONS["from_annotations"]}
        if unknown:
            raise BuildError(f"{', '.join(sorted(unknown))}: not an option of from_annotations")
        config = from_annotations_config(name, options.get("format") or "auto", label_map=options.get("label_map"),
                                         val_fraction=options.get("val_fraction"),
                                         split_file=options.get("split_file"),
                                         unknown=options.get("unknown") or "error")
        return config, {"config": config}
    if config_name not in StreetSeg.builder_configs:
        raise BuildError(f"no config {config_name!r}; choose synthetic, voc_polygons or from_annotations")
    overrides = {k: v for k, v in options.items() if v is not None}
    config = StreetSeg.builder_configs[config_name]
    check_options(config, overrides)
    return dataclasses.replace(config, **overrides), {"config": config_name, **overrides}


def _load_label_map(path: str | None) -> LabelMap:
    return LabelMap.load(path) if path else default_label_map()


# How to go on where a build on disk is not what is asked for: --overwrite, or another data dir, which keeps the
# build that runs trained on (a run is evaluated, reported and resumed on the data it trained on, not on a rebuild).
REBUILD = ("pass --overwrite to rebuild it, or build it under another --data_dir to keep this build for the runs "
           "trained on it")


def _check_unchanged(dataset: str, data_dir: Path, fingerprint: dict, file_format: str) -> None:
    """Nothing to do when the inputs and the file format are those of the build on disk; otherwise say what
    changed."""
    info = open_built(dataset, data_dir).info
    metadata = info.metadata
    stored = metadata["fingerprint"] if metadata is not None and "fingerprint" in metadata.keys() else None
    what = inputs.changes(stored, fingerprint) if stored else ["it was built without a record of its inputs"]
    what += _file_format_change(info, file_format)
    if what:
        raise BuildError(f"{dataset} in {data_dir} is not what these inputs build now; {REBUILD}. What changed:\n  "
                         + "\n  ".join(what))


def _file_format_change(info, file_format: str) -> list[str]:
    if info.file_format is None or info.file_format.value == file_format:
        return []
    return [f"file format: {info.file_format.value} on disk, {file_format} asked for"]


def _prepare(builder_kwargs: dict, data_dir: Path, folder: Path, file_format: str, plan, workers) -> None:
    builder = StreetSeg(data_dir=os.fspath(data_dir), file_format=file_format, plan=plan, workers=workers,
                        beside_older=True, **builder_kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(folder), try_download_gcs=False))


def _result(dataset: str, data_dir: Path, start: float, reused: bool) -> BuildResult:
    info = open_built(dataset, data_dir).info
    splits = {name: split.num_examples for name, split in info.splits.items()}
    return BuildResult(Path(info.data_dir), splits, time.perf_counter() - start, reused)


@contextlib.contextmanager
def _all_or_nothing(dataset: str, data_dir: Path, replace: bool):
    """A failed build leaves what was there before: TFDS writes into an `incomplete.*` folder that it renames into
    place at the end (and deletes on failure); a build being replaced is moved aside until the new one is done,
    and put back if it fails."""
    name, config, version = parse_name(dataset)       # only this version: builds of others stay, and are read
    config_dir = data_dir / name / config
    aside = []
    if replace and version in built_versions(config_dir):
        moved = config_dir / f".replaced-{version}{owner_tag()}"
        (config_dir / version).rename(moved)
        aside.append((config_dir / version, moved))
    try:
        yield
    except BaseException:
        for original, moved in aside:
            if not original.exists():
                moved.rename(original)
        raise
    for _, moved in aside:
        shutil.rmtree(moved, ignore_errors=True)


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _check_file_format(file_format: str) -> None:
    if file_format not in ("array_record", "tfrecord"):
        raise BuildError(f"file format must be array_record or tfrecord, got {file_format!r}")
    if file_format == "tfrecord" and importlib.util.find_spec("tensorflow") is None:
        raise BuildError("tfrecord output needs TensorFlow, which is not installed; use array_record (the default)")


def _manual_folder(manual_dir, data_dir: Path, config_name: str) -> Path:
    """The folder the config reads (TFDS's default: DATA_DIR/downloads/manual); BuildError when it is empty or
    missing."""
    folder = Path(manual_dir).expanduser() if manual_dir else data_dir / "downloads" / "manual"
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    state = "is empty" if folder.is_dir() else "is a file" if folder.exists() else "does not exist"
    if config_name == "voc_polygons":
        raise BuildError(f"voc_polygons reads your images + VOC XML from a folder, and {folder} {state}; pass "
                         "--manual_dir FOLDER (with images/ + annotations/ subfolders, or the files side by side)")
    if config_name == "camvid":
        raise BuildError(f"camvid reads SegNet's CamVid folder (train/, trainannot/, val/, valannot/), and {folder} "
                         f"{state}; pass --manual_dir CAMVID_FOLDER")
    raise BuildError(f"{config_name} reads a labelling tool's export from a folder, and {folder} {state}; pass "
                     "--manual_dir EXPORT_FOLDER")


def _check_reuse(builder, label_map: LabelMap) -> None:
    """Refuse to quietly hand back a build made with other options or another label map than the ones asked for
    (`label_map`: the builder's own is the build's when none was given)."""
    stored = built_options(builder.info)
    if stored != builder.builder_config.options():
        raise BuildError(f"{builder.data_dir} was built with {stored}, not "
                         f"{builder.builder_config.options()}; {REBUILD}")
    if builder.info.metadata.get("label_map") != label_map.of_ids().to_dict():
        raise BuildError(f"{builder.data_dir} was built with another label map; {REBUILD}")
