"""Labelling tools' exports to class-index masks, and the label map that names the classes.

    labels.label_map   LabelMap (load, from_dict, value_table), default_label_map: ids, names, colours, ignore id
    labels.images      open_photo(path): a photo as predict reads it; rgb_array, to_rgb
    labels.convert     read_mask_png, annotation_to_mask: masks of class ids
    labels.formats     the readers of each tool's export (voc, coco, cvat, labelme, ...)
    labels.validate    the report of an export's problems

The command: `python -m streetseg_jax.labels --help` (to-masks, check, classes).
"""
