"""TFDS `street_seg`: street images with per-pixel class masks, built and read without TensorFlow.

Configs
  synthetic     writes `num_images` seeded scenes (PNG + VOC XML, see data/synthetic.py) into a scratch folder under
                the download dir, then reads them exactly like a user's export. Split by order, as the seed did: the
                first 80% `train`, the rest `test` (`test_fraction`, default 0.2; 100 scenes -> 80 / 20).
  voc_polygons  a user's folder, given as the manual dir: images + PASCAL VOC polygon XML (labels/formats/voc.py),
                either in `images/` + `annotations/` subfolders or side by side (not searched recursively). An XML
                file is paired with the image of the same stem, else with the image its <filename> names. Split by
                a hash of the file stem: about `test_fraction` (default 0.2) of the images go to `test`, the rest to
                `train`. The hash keeps every image in its split when files are added later; `test_fraction=0` puts
                everything in `train`. A split that would be empty is left out, with a warning.

Features
  image              PNG, uint8 (H, W, 3). RGB PNG files are stored byte for byte; other files (JPEG, RGBA, ...)
                     are decoded, turned upright by their EXIF orientation (as browsers show them to labellers) and
                     re-encoded as RGB PNG.
  segmentation_mask  PNG, tfds.features.LabeledImage (H, W, 1) uint8 with the label map's class names; pixels hold
                     class ids and the label map's ignore id.
  file_name          the image's file name.
The label map (LabelMap.to_dict()) is in `info.metadata["label_map"]`, the build options in
`info.metadata["options"]`.

Why the features get encoded bytes: given numpy arrays, tfds.features.Image encodes them with tf.image; given PNG
bytes it stores them as they are, so building (and reading with tfds.data_source) needs no TensorFlow. The default
file format is therefore array_record; TFRecord is written only when asked for (and needs TensorFlow).

Options are builder kwargs, e.g. `StreetSeg(config="synthetic", num_images=1000)` or
`tfds.builder("street_seg/synthetic/num_images=1000")`: num_images, height, width, seed (synthetic only),
test_fraction, label_map (path to a label map JSON; default: the seed's 8 classes), num_workers (processes for the
per-image work; default: all cores). A dataset already built is reused whatever the options: rebuild to change it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps, UnidentifiedImageError

from streetseg_jax.labels.convert import UnknownLabelsError, annotation_to_mask, find_unknown_labels
from streetseg_jax.labels.formats.voc import read_voc
from streetseg_jax.labels.label_map import LabelMap, default_label_map
from streetseg_jax.labels.shapes import Annotation, LabelFormatError

__all__ = ["StreetSeg", "StreetSegConfig", "BuildError", "UnknownLabelsError", "OPTION_NAMES"]

OPTION_NAMES = ("num_images", "height", "width", "seed", "test_fraction", "label_map")
_SYNTHETIC_ONLY = ("num_images", "height", "width", "seed")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_POOL_MIN_EXAMPLES = 32     # below this, starting worker processes costs more than it saves
_MAX_LISTED = 20            # problems listed one by one in an error message
_EXIF_ORIENTATION = 0x0112


class BuildError(ValueError):
    """Input that cannot be built into the dataset; the message says what is wrong and where."""


@dataclasses.dataclass(eq=False)
class StreetSegConfig(tfds.core.BuilderConfig):
    synthetic: bool = False         # generate scenes first (else read the manual dir)
    num_images: int = 100
    height: int = 360
    width: int = 480
    seed: int = 0
    test_fraction: float = 0.2
    label_map: str | None = None    # label map JSON path; None: the seed's 8 classes

    def options(self) -> dict:
        """What the built examples depend on (stored in the metadata so a reuse can be checked)."""
        names = OPTION_NAMES[:-1] if self.synthetic else ("test_fraction",)
        return {name: getattr(self, name) for name in names}


class StreetSeg(tfds.core.GeneratorBasedBuilder):
    """Street scenes with segmentation masks; see the module docstring for configs, splits and features."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: synthetic and voc_polygons configs."}
    BUILDER_CONFIGS = [
        StreetSegConfig(name="synthetic", synthetic=True,
                        description="Seeded synthetic street scenes (80/20 train/test)."),
        StreetSegConfig(name="voc_polygons",
                        description="Your images + VOC polygon XML from the manual dir (hash split train/test)."),
    ]
    DEFAULT_CONFIG_NAME = "synthetic"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "voc_polygons reads a folder of images and PASCAL VOC polygon XML files (one XML per image, same file stem):\n"
        "  DIR/images/*.png|jpg + DIR/annotations/*.xml, or both side by side in DIR.\n"
        "Pass it with --manual_dir DIR (python -m streetseg_jax.data build --config voc_polygons ...).")

    _pool = None        # worker processes, alive during download_and_prepare only
    _cleanup = None     # contextlib.ExitStack closing the pool and scratch folders after a build

    def __init__(self, *, file_format=None, num_workers: int | None = None, **kwargs):
        options = {name: kwargs.pop(name, None) for name in OPTION_NAMES}
        self._overrides = {k: v for k, v in options.items() if v is not None}
        self._num_workers = num_workers
        super().__init__(file_format=file_format or "array_record", **kwargs)
        # Pickled copies are rebuilt from _original_state: keep the options there too.
        self._original_state.update(self._overrides, file_format=file_format, num_workers=num_workers)

    def _create_builder_config(self, builder_config, version):
        config = super()._create_builder_config(builder_config, version)
        if self._overrides:
            _check_options(config, self._overrides)
            config = dataclasses.replace(config, **self._overrides)
        return config

    @functools.cached_property
    def label_map(self) -> LabelMap:
        path = self.builder_config.label_map
        return LabelMap.load(path) if path else default_label_map()

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Street images with per-pixel class masks (streetseg_jax).",
            features=_features(self.label_map),
            supervised_keys=("image", "segmentation_mask"),
            metadata=tfds.core.MetadataDict(label_map=self.label_map.to_dict(),
                                            options=self.builder_config.options()),
        )

    def _download_and_prepare(self, dl_manager, download_config):
        try:
            with contextlib.ExitStack() as self._cleanup:
                return super()._download_and_prepare(dl_manager, download_config)
        finally:
            self._pool = self._cleanup = None

    def _split_generators(self, dl_manager):
        folder, order = self._source_folder(dl_manager)
        items = _read_folder(folder)
        if order:   # the synthetic writer's order, so its 80/20 cut matches the seed's whatever the count
            items.sort(key=lambda item: order[item[0].source.stem])
        _check_items(items, self.label_map)
        splits = _assign_splits(items, self.builder_config)
        self._start_pool(len(items))
        return {name: self._generate_examples(split_items) for name, split_items in splits.items()}

    def _generate_examples(self, items):
        encode = functools.partial(_encode_example, label_map=self.label_map)
        results = self._pool.imap(encode, items, chunksize=4) if self._pool else map(encode, items)
        for key, example, problems in results:
            for problem in problems:
                _warn(problem)   # already names the annotation file
            yield key, example

    # --- where the images come from ------------------------------------------------------------------------------
    def _source_folder(self, dl_manager) -> tuple[Path, dict[str, int] | None]:
        """The folder to read and, for synthetic scenes, the stems' order."""
        if not self.builder_config.synthetic:
            return _manual_folder(dl_manager), None
        # Imported here: only this config needs the scene generator.
        from streetseg_jax.data.synthetic import write_synthetic
        config = self.builder_config
        scratch = self._scratch_folder(Path(dl_manager.download_dir))
        print(f"writing {config.num_images} synthetic scenes ({config.height}x{config.width}) to {scratch}",
              file=sys.stderr)
        stems = write_synthetic(scratch, num_images=config.num_images, seed=config.seed, height=config.height,
                                width=config.width, num_workers=self._num_workers)
        return scratch, {stem: i for i, stem in enumerate(stems)}

    def _scratch_folder(self, parent: Path) -> Path:
        """A folder deleted when the build ends (under the download dir: /tmp may be small)."""
        parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="street_seg_synthetic_", dir=parent))
        self._cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        return scratch

    def _start_pool(self, num_items: int) -> None:
        workers = self._num_workers or os.cpu_count() or 1
        if workers > 1 and num_items >= _POOL_MIN_EXAMPLES:
            # spawn, not fork: the parent may hold threads (JAX, TFDS) that a fork would copy mid-flight.
            context = multiprocessing.get_context("spawn")
            self._pool = self._cleanup.enter_context(context.Pool(min(workers, num_items)))


# --- features ----------------------------------------------------------------------------------------------------
def _features(label_map: LabelMap) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8, encoding_format="png"),
        "segmentation_mask": tfds.features.LabeledImage(labels=label_map.names, shape=(None, None, 1),
                                                        dtype=np.uint8, encoding_format="png"),
        "file_name": tfds.features.Text(),
    })


# --- options -----------------------------------------------------------------------------------------------------
def _check_options(config: StreetSegConfig, options: dict) -> None:
    if not config.synthetic:
        wrong = sorted(set(options) & set(_SYNTHETIC_ONLY))
        if wrong:
            raise BuildError(f"{', '.join(wrong)}: only the synthetic config takes this, not {config.name}")
    for name, least in (("num_images", 1), ("height", 8), ("width", 8), ("seed", 0)):
        value = options.get(name, least)
        if not isinstance(value, int) or value < least:
            raise BuildError(f"{name} must be a whole number >= {least}, got {value!r}")
    if not 0 <= options.get("test_fraction", 0) < 1:
        raise BuildError(f"test_fraction must be in [0, 1), got {options['test_fraction']}")


# --- reading a folder of images + VOC XML ------------------------------------------------------------------------
def _manual_folder(dl_manager) -> Path:
    try:
        return Path(dl_manager.manual_dir)
    except AssertionError as e:     # TFDS's way of saying the folder is missing or empty
        raise BuildError(f"voc_polygons needs your images and VOC XML: {e}") from None


def _read_folder(folder: Path) -> list[tuple[Annotation, Path]]:
    """(annotation, image path) for every XML file in the folder, sorted by file stem."""
    xml_dir = folder / "annotations" if (folder / "annotations").is_dir() else folder
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    xml_paths = sorted(p for p in xml_dir.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
    if not xml_paths:
        raise BuildError(f"no VOC annotations (*.xml) in {xml_dir}; expected images/ + annotations/ subfolders "
                         "or images and XML files side by side")
    annotations = _read_annotations(xml_paths)
    images = _images_by_stem(image_dir)
    items, missing = [], []
    for annotation in annotations:
        image_path = _image_for(annotation, images, image_dir)
        if isinstance(image_path, str):
            missing.append(image_path)
        else:
            annotation.image_path = image_path
            items.append((annotation, image_path))
    if missing:
        raise BuildError(_listing(f"{len(missing)} annotation(s) without a usable image in {image_dir}", missing))
    return items


def _read_annotations(xml_paths: list[Path]) -> list[Annotation]:
    annotations, errors = [], []
    for path in xml_paths:
        try:
            annotations.append(read_voc(path))
        except LabelFormatError as e:
            errors.append(str(e))
    if errors:
        raise BuildError(_listing(f"{len(errors)} annotation file(s) cannot be read", errors))
    return annotations


def _images_by_stem(image_dir: Path) -> dict[str, list[Path]]:
    images: dict[str, list[Path]] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file():
            images.setdefault(path.stem, []).append(path)
    return images


def _image_for(annotation: Annotation, images: dict[str, list[Path]], image_dir: Path) -> Path | str:
    """The image for an annotation, or a string saying why there is none."""
    candidates = images.get(annotation.source.stem)
    if not candidates and annotation.file_name:
        # Labelbox may write a URL here: only its last part can name a local file.
        named = image_dir / Path(annotation.file_name.replace("\\", "/").split("/")[-1]).name
        candidates = [named] if named.is_file() else None
    if not candidates:
        return f"{annotation.source.name}: no image named {annotation.source.stem}.* or {annotation.file_name!r}"
    if len(candidates) > 1:
        return f"{annotation.source.name}: several images share its stem: {', '.join(p.name for p in candidates)}"
    return candidates[0]


# --- checks made before anything is written ----------------------------------------------------------------------
def _check_items(items: list[tuple[Annotation, Path]], label_map: LabelMap) -> None:
    unknown = find_unknown_labels([annotation for annotation, _ in items], label_map)
    if unknown:
        raise UnknownLabelsError(unknown, label_map)
    problems = [p for p in (_size_problem(a, path) for a, path in items) if p]
    if problems:
        raise BuildError(_listing(f"{len(problems)} image(s) do not match their annotation", problems))


def _size_problem(annotation: Annotation, image_path: Path) -> str | None:
    try:
        with Image.open(image_path) as image:
            width, height = image.size
            if _orientation(image) in (5, 6, 7, 8):     # shown rotated by 90 degrees
                width, height = height, width
    except (OSError, UnidentifiedImageError) as e:
        return f"{image_path}: cannot read the image ({e})"
    if (width, height) != (annotation.width, annotation.height):
        return (f"{image_path.name} is {width}x{height} but {annotation.source.name} says "
                f"{annotation.width}x{annotation.height}")
    return None


def _orientation(image: Image.Image) -> int:
    # PNG keeps EXIF, if at all, after the pixels: reading it would decode the whole file, and PNGs are rarely rotated.
    return 1 if image.format == "PNG" else image.getexif().get(_EXIF_ORIENTATION, 1)


# --- splits ------------------------------------------------------------------------------------------------------
def _assign_splits(items: list, config: StreetSegConfig) -> dict[str, list]:
    if config.synthetic:
        num_test = math.floor(len(items) * config.test_fraction + 0.5)
        splits = {"train": items[:len(items) - num_test], "test": items[len(items) - num_test:]}
    else:
        splits = {"train": [], "test": []}
        for item in items:
            splits["test" if _stem_fraction(item[0].source.stem) < config.test_fraction else "train"].append(item)
    if config.test_fraction > 0:
        for name in [name for name, split_items in splits.items() if not split_items]:
            _warn(f"no image falls in the {name} split ({len(items)} images, test_fraction "
                  f"{config.test_fraction}); building without it")
    return {name: split_items for name, split_items in splits.items() if split_items}


def _stem_fraction(stem: str) -> float:
    """A number in [0, 1) fixed by the stem alone (not Python's hash(), which changes per process)."""
    digest = hashlib.sha256(stem.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


# --- per-example work (runs in worker processes) -----------------------------------------------------------------
def _encode_example(item: tuple[Annotation, Path], label_map: LabelMap) -> tuple[str, dict, list[str]]:
    annotation, image_path = item
    result = annotation_to_mask(annotation, label_map, unknown="error")
    example = {
        "image": _image_png(image_path),
        "segmentation_mask": _png(np.asarray(result.mask, np.uint8)),
        "file_name": image_path.name,
    }
    return annotation.source.stem, example, list(result.problems)


def _image_png(path: Path) -> bytes:
    """The image as RGB PNG bytes: the file itself when it already is one (no decode, no re-encode)."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "PNG" and image.mode == "RGB":
            return data
        upright = ImageOps.exif_transpose(image) if _orientation(image) != 1 else image
        return _png(np.asarray(upright.convert("RGB")))


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# --- messages ----------------------------------------------------------------------------------------------------
def _listing(headline: str, lines: list[str]) -> str:
    shown = [f"  {line}" for line in lines[:_MAX_LISTED]]
    if len(lines) > _MAX_LISTED:
        shown.append(f"  ... and {len(lines) - _MAX_LISTED} more")
    return "\n".join([headline + ":", *shown])


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
