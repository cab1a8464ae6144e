"""input: our grain pipeline over the array_record dataset on disk (decode, random scale/crop, flip, batch) vs the
seed's TFRecord + tf.data path on the same images, where TensorFlow is installed.

Keys: images_per_second (ours), peers {tf_data} (img/s), ratio_tf_data, dataset_bytes (our dataset on disk).
Default data: street_seg/camvid train when built in --data_dir, else street_seg/synthetic (built if missing).
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

from bench.common import installed, run_peer

UNITS = {"images_per_second": "img/s", "peers": "img/s", "dataset_bytes": "B"}


def add_arguments(parser) -> None:
    parser.add_argument("--data_dir", default="~/tensorflow_datasets")
    parser.add_argument("--dataset", default=None, help="default: street_seg/camvid if built, else synthetic")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=(192, 256))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=60, help="timed batches after 5 warm-up batches")
    parser.add_argument("--no_peers", action="store_true")


def run(args) -> dict:
    from streetseg_jax.data import source
    from streetseg_jax.data.build import build

    data_dir = Path(args.data_dir).expanduser()
    dataset = args.dataset or ("street_seg/camvid" if source.is_built("street_seg/camvid", data_dir)
                               else "street_seg/synthetic")
    if dataset == "street_seg/synthetic" and not source.is_built(dataset, data_dir):
        build("synthetic", data_dir)
    ours = our_rate(args, dataset, data_dir)
    folder = source.dataset_dir(dataset, data_dir)
    result = {"dataset": dataset, "images_per_second": ours,
              "dataset_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()), "peers": {}}
    if not args.no_peers and installed("tensorflow"):
        images, masks = _png_folders(dataset, data_dir)
        rate = run_peer("input_tfdata.py", images, masks, *args.crop, args.batch)
        if rate:
            result["peers"]["tf_data"] = rate
            result["ratio_tf_data"] = ours / rate
    return result


def our_rate(args, dataset: str, data_dir: Path) -> float:
    from streetseg_jax.data import pipeline
    from streetseg_jax.data.augment import AugmentConfig
    from streetseg_jax.data.source import load_split

    train, label_map, _ = load_split(dataset, "train", data_dir)
    cfg = AugmentConfig(scale_range=(0.75, 1.25), crop_size=tuple(args.crop), flip=True)
    batches = pipeline.train_batches(train, global_batch=args.batch, seed=0, augment_cfg=cfg,
                                     ignore_id=label_map.ignore_id, num_threads=args.threads)
    for _ in itertools.islice(batches, 5):
        pass
    start = time.perf_counter()
    for _ in itertools.islice(batches, args.batches):
        pass
    return args.batches * args.batch / (time.perf_counter() - start)


def _png_folders(dataset: str, data_dir: Path) -> tuple[str, str]:
    """The peer reads PNG pairs from folders: write the split's images and masks out once."""
    import numpy as np
    from PIL import Image

    from streetseg_jax.data.source import load_split

    out = data_dir / "downloads" / "bench_input_pngs" / dataset.replace("/", "_")
    images, masks = out / "images", out / "masks"
    if not images.exists():
        train, _, _ = load_split(dataset, "train", data_dir)
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for i in range(len(train)):
            example = train[i]
            Image.fromarray(example["image"]).save(images / f"{i:05d}.png")
            Image.fromarray(np.asarray(example["segmentation_mask"])[..., 0]).save(masks / f"{i:05d}.png")
    return str(images), str(masks)
