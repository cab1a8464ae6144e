"""Open prepared `street_seg` datasets, without TensorFlow (data/build.py builds them).

A dataset is named like TFDS names it: "street_seg/synthetic" or "street_seg/voc_polygons:2.0.0" (the newest version
on disk when none is given); it lives in DATA_DIR/street_seg/<config>/<version>/. A build writes the builder's current
version (data/builder.py); a build of an older version left beside it is still read when asked for by version.

What a split's source gives (tfds 4.9.10 `as_data_source`, array_record, no TensorFlow): `len(source)` and
`source[i]` (several at once: `source.__getitems__([i, j])`, a list) -> a dict
    image              numpy uint8 (H, W, 3)
    segmentation_mask  numpy uint8 (H, W, 1): class ids and the label map's ignore id
    file_name          bytes (UTF-8): tfds.features.Text decodes to bytes without TensorFlow; `.decode()` it
The same from every version. Version 2.0.0 stores raw pixels (tfds.features.Tensor, BYTES): nothing to decode, the
arrays are read-only `np.frombuffer` views of the record (as PIL's decodes were; copy one before changing it in
place). Version 1.0.0 stored PNG, decoded by OpenCV when installed, else by PIL (TFDS logs a one-time note
recommending OpenCV).
The source is TFDS's ArrayRecordDataSource: picklable, so grain workers can read it. The class names of the mask are
in the label map (`info.metadata["label_map"]`, returned by load_split), not in the features.

Reading goes through `tfds.builder_from_directory`, never through this package's builder class: the split, features
and label map then come from the files on disk alone, as they do for any other project that reads the dataset.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from streetseg_jax.labels.label_map import LabelMap

__all__ = ["DatasetNotFoundError", "UnknownSplitError", "dataset_dir", "is_built", "load_split", "open_built",
           "default_data_dir", "parse_name", "built_versions", "build_command", "dataset_fingerprint", "label_map_of"]

_NAME = re.compile(r"^(?P<name>[\w-]+)/(?P<config>[\w-]+)(?::(?P<version>\d+\.\d+\.\d+))?$")


class DatasetNotFoundError(Exception):
    """No prepared dataset where one was asked for; the message says which command builds it."""


class UnknownSplitError(ValueError):
    """A split the dataset does not have; the message lists the ones it has."""


def default_data_dir() -> Path:
    """TFDS's default: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def dataset_dir(dataset: str, data_dir: str | os.PathLike | None) -> Path:
    """DATA_DIR/<name>/<config>/<version> of a prepared dataset; DatasetNotFoundError when there is none."""
    name, config, version = parse_name(dataset)
    config_dir = Path(data_dir or default_data_dir()).expanduser() / name / config      # the configs' ~/...
    built = built_versions(config_dir)
    if version is None and built:
        version = built[-1]
    if version not in built:
        raise DatasetNotFoundError(_not_found_message(dataset, config, data_dir, config_dir, built))
    return config_dir / version


def dataset_fingerprint(directory: Path) -> str:
    """sha256 over the names and bytes of every file of the prepared dataset version."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


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
    builder = open_built(dataset, data_dir)
    _check_split(split, list(builder.info.splits.keys()), dataset)
    if str(builder.info.file_format.value) != "array_record":       # TFDS: NotImplementedError, a traceback
        raise DatasetNotFoundError(
            f"{dataset} in {builder.data_dir} is a {builder.info.file_format.value} build, which tf.data reads "
            "(tfds.load); training, evaluate, report and data sources read array_record builds: build it again "
            "with the command that built it and --file_format array_record --overwrite")
    try:
        source = builder.as_data_source(split=split)
        len(source)             # TFDS finds a reversed slice ("train[5:2]") only here
    except ValueError as e:     # malformed ("train[:abc]", "train[:200%]") or empty ("train[3:3]")
        raise UnknownSplitError(f"{dataset}: cannot read split {split!r}: a slice must be well-formed and hold at "
                                f"least one example, like train[:100], train[:90%], train+test (TFDS: "
                                f"{str(e).splitlines()[-1]})") from None
    return source, label_map_of(builder.info, builder.data_dir), builder.info


def open_built(dataset: str, data_dir: str | os.PathLike | None):
    """TFDS's reader of a prepared dataset (`.info`, `.as_data_source`), made from its files alone."""
    return tfds.builder_from_directory(os.fspath(dataset_dir(dataset, data_dir)))


def label_map_of(info, path: str | os.PathLike) -> LabelMap:
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


# --- helpers -----------------------------------------------------------------------------------------------------
def parse_name(dataset: str) -> tuple[str, str, str | None]:
    match = _NAME.match(dataset)
    if not match:
        options = ("; a run names a dataset without the options it was built with (num_images=...): "
                   "street_seg/synthetic is the build of that name in data_dir, and another build goes in another "
                   "data_dir" if dataset.count("/") > 1 or "=" in dataset else "")
        raise DatasetNotFoundError(f"dataset name {dataset!r} should look like 'street_seg/synthetic' "
                                   f"or 'street_seg/voc_polygons:2.0.0'{options}")
    return match["name"], match["config"], match["version"]


def built_versions(config_dir: Path) -> list[str]:
    """Version folders holding a finished build, oldest first (by number: 10.0.0 after 2.0.0): TFDS renames a
    build's folder into place only once it is done, and, like TFDS, we also ask for dataset_info.json and
    features.json."""
    if not config_dir.is_dir():
        return []
    return sorted((p.name for p in config_dir.iterdir()
                   if re.fullmatch(r"\d+\.\d+\.\d+", p.name) and (p / "dataset_info.json").is_file()
                   and (p / "features.json").is_file()), key=lambda v: tuple(int(part) for part in v.split(".")))


def _not_found_message(dataset, config, data_dir, config_dir, built) -> str:
    found = f" (built versions there: {', '.join(built)})" if built else ""
    return (f"dataset {dataset} is not built in {config_dir}{found}. Build it with:\n"
            f"  {build_command(config, data_dir)}\n"
            "or, where it is built in another folder (moved since the run), name that folder: --data_dir WHERE "
            "(evaluate, report), --config.data_dir=WHERE (main)")


def build_command(config: str, data_dir) -> str:
    """The command that builds street_seg/<config> into `data_dir` (None: the default one)."""
    where = f" --data_dir {shlex.quote(str(data_dir))}" if data_dir else ""
    manual = {"voc_polygons": " --manual_dir YOUR_IMAGES_AND_XML",
              "camvid": " --manual_dir SEGNET_CAMVID_FOLDER"}.get(config, "")
    command = f"--config {config}{where}{manual}"
    if config not in ("synthetic", "voc_polygons", "camvid"):   # a dataset named by its user, from an export
        command = (f"--config from_annotations --name {config}{where} --manual_dir EXPORT_FOLDER --format FORMAT "
                   "--label_map LABEL_MAP.json")
    return f"python -m streetseg_jax.data build {command}"


def _check_split(split: str, available: list[str], dataset: str) -> None:
    # TFDS split strings: "train", "train[:10%]", "train+test"; check each base name.
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if base not in available:
            raise UnknownSplitError(f"{dataset} has no split {base!r}; it has: {', '.join(available)}")
