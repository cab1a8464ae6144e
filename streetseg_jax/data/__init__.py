"""The street_seg dataset (TFDS): its builder and the input pipeline that reads it for training.

    `import streetseg_jax.data.builder` registers street_seg with TFDS: tfds.data_source("street_seg/synthetic",
    split="train", data_dir=DIR) then builds and reads it (options in the name: builder.OPTION_NAMES)
    data.source        load_split: a split of a build, checked (README.md, "Using the dataset from another project")

The command: `python -m streetseg_jax.data build --help`.
"""
