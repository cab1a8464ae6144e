"""Open and build prepared `street_seg` datasets, without TensorFlow.

A dataset is named like TFDS names it: "street_seg/synthetic" or "street_seg/voc_polygons:1.0.0" (the newest version
on disk when none is given); it lives in DATA_DIR/street_seg/<config>/<version>/.

What a split's source gives (tfds 4.9.10 `as_data_source`, array_record, no TensorFlow): `len(source)` and
`source[i]` (also `source[[i, j]]`) -> a dict
    image              numpy uint8 (H, W, 3)
    segmentation_mask  numpy uint8 (H, W, 1): class ids and the label map's ignore id
    file_name          bytes (UTF-8): tfds.features.Text decodes to bytes without TensorFlow; `.decode()` it
PNG decoding is done by OpenCV when installed, else by PIL (TFDS logs a one-time note recommending OpenCV).
The source is TFDS's ArrayRecordDataSource: picklable, so grain workers can read it.

Reading goes through `tfds.builder_from_directory`, never through this package's builder class: the split, features
and label map then come from the files on disk alone, as they do for any other project that reads the dataset.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from streetseg_jax.labels.label_map import LabelMap

__all__ = ["DatasetNotFoundError", "UnknownSplitError", "BuildResult", "dataset_dir", "is_built", "load_split",
           "build", "default_data_dir"]

_NAME = re.compile(r"^(?P<name>[\w-]+)/(?P<config>[\w-]+)(?::(?P<version>\d+\.\d+\.\d+))?$")


class DatasetNotFoundError(Exception):
    """No prepared dataset where one was asked for; the message says which command builds it."""


class UnknownSplitError(ValueError):
    """A split the dataset does not have; the message lists the ones it has."""


@dataclasses.dataclass
class BuildResult:
    path: Path                  # DATA_DIR/street_seg/<config>/<version>
    splits: dict[str, int]      # split name -> examples
    seconds: float
    reused: bool                # already built: nothing was written


def default_data_dir() -> Path:
    """TFDS's default: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def dataset_dir(dataset: str, data_dir: str | os.PathLike | None) -> Path:
    """DATA_DIR/<name>/<config>/<version> of a prepared dataset; DatasetNotFoundError when there is none."""
    name, config, version = _parse_name(dataset)
    config_dir = Path(data_dir or default_data_dir()) / name / config
    built = _built_versions(config_dir)
    if version is None and built:
        version = max(built, key=lambda v: tuple(int(part) for part in v.split(".")))
    if version not in built:
        raise DatasetNotFoundError(_not_found_message(dataset, config, data_dir, config_dir, built))
    return config_dir / version


def is_built(dataset: str, data_dir: str | os.PathLike | None) -> bool:
    try:
        dataset_dir(dataset, data_dir)
    except DatasetNotFoundError:
        return False
    return True


def load_split(dataset: str, split: str, data_dir: str | os.PathLike | None) -> tuple[Any, LabelMap, Any]:
    """(random-access source of `split`, the dataset's LabelMap, its tfds.core.DatasetInfo).

    `split` may use TFDS's slicing ("train[:100]", "train[:90%]", "train+test").
    """
    path = dataset_dir(dataset, data_dir)
    builder = tfds.builder_from_directory(os.fspath(path))
    _check_split(split, list(builder.info.splits.keys()), dataset)
    source = builder.as_data_source(split=split)
    return source, label_map_of(builder.info, path), builder.info


def label_map_of(info, path: Path) -> LabelMap:
    """The LabelMap stored in a dataset's metadata."""
    metadata = info.metadata
    try:
        data = metadata["label_map"] if metadata is not None else None
    except KeyError:
        data = None
    if data is None:
        raise DatasetNotFoundError(f"{path} has no label_map in its metadata.json: it was not built by "
                                   "streetseg_jax; rebuild it with python -m streetseg_jax.data build")
    return LabelMap.from_dict(data, source=f"{path}/metadata.json")


def build(config_name: str, data_dir: str | os.PathLike | None, manual_dir: str | os.PathLike | None = None, *,
          overwrite: bool = False, file_format: str = "array_record", **options) -> BuildResult:
    """Build street_seg/<config_name> into data_dir (TFDS shows progress bars); reuse it when already built.

    options: num_images, height, width, seed, test_fraction, label_map, num_workers (see data/builder.py).
    Raises builder.BuildError / UnknownLabelsError / LabelMapError for bad input, with messages for users.
    """
    from streetseg_jax.data.builder import BuildError, StreetSeg   # only building needs the builder class

    _check_file_format(file_format, BuildError)
    data_dir = Path(data_dir or default_data_dir())
    if overwrite:
        _remove_built(f"street_seg/{config_name}", data_dir)
    start = time.perf_counter()
    builder = StreetSeg(config=config_name, data_dir=os.fspath(data_dir), file_format=file_format,
                        **{k: v for k, v in options.items() if v is not None})
    reused = builder.is_prepared()
    if reused:
        _check_reuse(builder, BuildError)
    elif config_name == "voc_polygons":
        _check_manual_dir(Path(manual_dir) if manual_dir else data_dir / "downloads" / "manual", BuildError)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir else None, try_download_gcs=False))
    splits = {name: split.num_examples for name, split in builder.info.splits.items()}
    return BuildResult(Path(builder.data_dir), splits, time.perf_counter() - start, reused)


# --- helpers -----------------------------------------------------------------------------------------------------
def _parse_name(dataset: str) -> tuple[str, str, str | None]:
    match = _NAME.match(dataset)
    if not match:
        raise DatasetNotFoundError(f"dataset name {dataset!r} should look like 'street_seg/synthetic' "
                                   "or 'street_seg/voc_polygons:1.0.0'")
    return match["name"], match["config"], match["version"]


def _built_versions(config_dir: Path) -> list[str]:
    """Version folders holding a finished build: TFDS renames a build's folder into place only once it is done,
    and, like TFDS, we also ask for dataset_info.json and features.json."""
    if not config_dir.is_dir():
        return []
    return [p.name for p in config_dir.iterdir()
            if re.fullmatch(r"\d+\.\d+\.\d+", p.name) and (p / "dataset_info.json").is_file()
            and (p / "features.json").is_file()]


def _not_found_message(dataset, config, data_dir, config_dir, built) -> str:
    where = f" --data_dir {data_dir}" if data_dir else ""
    manual = " --manual_dir YOUR_IMAGES_AND_XML" if config == "voc_polygons" else ""
    found = f" (built versions there: {', '.join(sorted(built))})" if built else ""
    return (f"dataset {dataset} is not built in {config_dir}{found}. Build it with:\n"
            f"  python -m streetseg_jax.data build --config {config}{where}{manual}")


def _check_split(split: str, available: list[str], dataset: str) -> None:
    # TFDS split strings: "train", "train[:10%]", "train+test"; check each base name.
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if base not in available:
            raise UnknownSplitError(f"{dataset} has no split {base!r}; it has: {', '.join(available)}")


def _check_file_format(file_format: str, error) -> None:
    if file_format not in ("array_record", "tfrecord"):
        raise error(f"file format must be array_record or tfrecord, got {file_format!r}")
    if file_format == "tfrecord" and importlib.util.find_spec("tensorflow") is None:
        raise error("tfrecord output needs TensorFlow, which is not installed; use array_record (the default)")


def _check_manual_dir(folder: Path, error) -> None:
    if not folder.is_dir() or not any(folder.iterdir()):
        state = "is empty" if folder.is_dir() else "does not exist"
        raise error(f"voc_polygons reads your images + VOC XML from a folder, and {folder} {state}; pass "
                    "--manual_dir FOLDER (with images/ + annotations/ subfolders, or the files side by side)")


def _remove_built(dataset: str, data_dir: Path) -> None:
    # Deleted before the builder is made: a builder opened on old files would carry their class names forward.
    while is_built(dataset, data_dir):
        shutil.rmtree(dataset_dir(dataset, data_dir))


def _check_reuse(builder, error) -> None:
    """Refuse to quietly hand back a build made with other options than the ones asked for."""
    metadata = builder.info.metadata
    stored = {key: metadata[key] if key in metadata.keys() else None for key in ("options", "label_map")}
    if stored["options"] != builder.builder_config.options():
        raise error(f"{builder.data_dir} was built with {stored['options']}, not "
                    f"{builder.builder_config.options()}; pass --overwrite to rebuild it")
    if stored["label_map"] != builder.label_map.to_dict():
        raise error(f"{builder.data_dir} was built with another label map; pass --overwrite to rebuild it")
