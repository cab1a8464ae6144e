"""input: our grain pipeline over the array_record dataset on disk (raw pixels read, random scale/crop, flip, batch)
vs the seed's TFRecord + tf.data path (PNG decode, random crop, flip, batch) on the same images, where TensorFlow is
installed.

Keys: images_per_second (ours), peers {tf_data} (img/s), ratio_tf_data, dataset_bytes (our dataset on disk);
peer_errors {tf_data} when the peer ran and gave no figure. Ours reads with --threads threads; the peer's map runs
with tf.data.AUTOTUNE parallelism, as its users run it (--threads does not apply to it).
Default data: street_seg/camvid train when built in --data_dir, else street_seg/synthetic (built if missing).
The peer reads a PNG copy of the split, written once into DATA_DIR/downloads/bench_input_pngs/<name>/<config>/
<version>-<fingerprint>/ (a rebuilt dataset gets a new copy, the old one is deleted).
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import add_peer, installed, progress

UNITS = {"images_per_second": "img/s", "peers": "img/s", "dataset_bytes": "B"}


def add_arguments(parser) -> None:
    parser.add_argument("--data_dir", default=os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets",
                        help="default: $TFDS_DATA_DIR, else ~/tensorflow_datasets")
    parser.add_argument("--dataset", default=None, help="default: street_seg/camvid if built, else synthetic")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=(192, 256))
    parser.add_argument("--threads", type=int, default=2,
                        help="our reading threads (0: in the timing thread); the peer uses tf.data.AUTOTUNE")
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
    progress(f"ours: timing {args.batches} batches of {dataset}")
    ours = our_rate(args, dataset, data_dir)
    progress(f"ours: {ours:.4g} img/s")
    folder = source.dataset_dir(dataset, data_dir)
    result = {"dataset": dataset, "images_per_second": ours,
              "dataset_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()), "peers": {}}
    if not args.no_peers and installed("tensorflow"):
        images, masks = png_folders(dataset, data_dir)
        rate = add_peer(result, "tf_data", "input_tfdata.py", images, masks, *args.crop, args.batch)
        if rate:
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


def png_folders(dataset: str, data_dir: Path) -> tuple[str, str]:
    """The peer reads PNG pairs from folders: the split's images and masks, written once per built version of the
    dataset. The copy is written into a temporary folder renamed into place when complete (a run stopped while
    writing left a half copy that later runs reused), keyed by version and fingerprint (a rebuilt dataset got the
    old copy), and checked to hold as many pairs as the split."""
    from streetseg_jax.data import source

    train, _, _ = source.load_split(dataset, "train", data_dir)
    folder = source.dataset_dir(dataset, data_dir)
    name, config, _ = source.parse_name(dataset)
    parent = data_dir / "downloads" / "bench_input_pngs" / name / config
    out = parent / f"{folder.name}-{source.dataset_fingerprint(folder)[:16]}"
    images, masks = out / "images", out / "masks"
    if not (out.is_dir() and _pairs(images, masks) == len(train)):
        shutil.rmtree(out, ignore_errors=True)      # a copy that is not whole: written again
        parent.mkdir(parents=True, exist_ok=True)
        progress(f"writing {len(train)} PNG pairs of {dataset} for the tf.data peer to {out}")
        partial = Path(tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-", dir=parent))
        try:
            _write_pngs(train, partial)
            os.replace(partial, out)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    for stale in parent.iterdir():      # copies of earlier builds, and half copies of runs that were killed
        if stale != out and not (stale.name.startswith(".partial-") and _running(stale.name.split("-")[1])):
            shutil.rmtree(stale, ignore_errors=True)
    return str(images), str(masks)


def _running(pid: str) -> bool:
    """Whether the process that is writing a half copy still runs (another benchmark's copy is left alone)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def _pairs(images: Path, masks: Path) -> int:
    """How many image/mask pairs the copy holds (0 when it is missing or the two folders differ)."""
    if not (images.is_dir() and masks.is_dir()):
        return 0
    names = sorted(p.name for p in images.glob("*.png"))
    return len(names) if names == sorted(p.name for p in masks.glob("*.png")) else 0


def _write_pngs(train, out: Path) -> None:
    import numpy as np
    from PIL import Image

    (out / "images").mkdir()
    (out / "masks").mkdir()
    for i in range(len(train)):
        example = train[i]
        Image.fromarray(example["image"]).save(out / "images" / f"{i:05d}.png")
        Image.fromarray(np.asarray(example["segmentation_mask"])[..., 0]).save(out / "masks" / f"{i:05d}.png")
