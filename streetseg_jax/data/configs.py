"""The street_seg configs and the build options each takes, for the builder (data/builder.py), the build
(data/build.py) and `python -m streetseg_jax.data build` alike. Apart from builder.py so that the command line builds
its parser without importing TFDS."""

CONFIG_OPTIONS = {
    "synthetic": ("num_images", "height", "width", "seed", "test_fraction", "label_map"),
    "voc_polygons": ("test_fraction", "label_map"),
    "camvid": (),
    "from_annotations": ("format", "label_map", "val_fraction", "split_file", "unknown"),
}
# Every config also takes num_workers, and from_annotations a name: it builds street_seg/<name>.
CONFIGS = tuple(CONFIG_OPTIONS)
SYNTHETIC_ONLY = tuple(name for name in CONFIG_OPTIONS["synthetic"] if name not in CONFIG_OPTIONS["voc_polygons"])
# Options a dataset built from an export takes in its name (street_seg/NAME/format=coco): those its build records
# as they were given (not the splits: a build that followed the export's own records the default val_fraction).
EXPORT_NAME_OPTIONS = ("format", "unknown")
