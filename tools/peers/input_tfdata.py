"""Peer: the seed's input path. PNG pairs -> one TFRecord of encoded bytes -> tf.data decode, random crop, flip,
batch, prefetch.

usage: python tools/peers/input_tfdata.py IMAGE_DIR MASK_DIR CROP_H CROP_W BATCH
Prints one JSON line {"images_per_second": ...} over two passes after one warm-up pass. The TFRecord (a whole copy
of the data) goes into a temporary folder deleted at the end.
"""
import json
import os
import sys
import tempfile
import time

import tensorflow as tf

image_dir, mask_dir = sys.argv[1], sys.argv[2]
crop_h, crop_w, batch = (int(v) for v in sys.argv[3:6])


def bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def write_records(path: str) -> None:
    with tf.io.TFRecordWriter(path) as writer:
        for name in sorted(os.listdir(image_dir)):
            with open(os.path.join(image_dir, name), "rb") as f_image, open(os.path.join(mask_dir, name), "rb") as f_mask:
                features = {"image": bytes_feature(f_image.read()), "mask": bytes_feature(f_mask.read())}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


SPEC = {"image": tf.io.FixedLenFeature([], tf.string), "mask": tf.io.FixedLenFeature([], tf.string)}


def parse(record):
    example = tf.io.parse_single_example(record, SPEC)
    image = tf.cast(tf.io.decode_png(example["image"], 3), tf.float32)
    mask = tf.cast(tf.io.decode_png(example["mask"], 1), tf.float32)
    both = tf.image.random_crop(tf.concat([image, mask], -1), (crop_h, crop_w, 4))
    both = tf.image.random_flip_left_right(both)
    return both[..., :3] / 255.0, tf.cast(both[..., 3], tf.int32)


def images_per_second(records: str) -> float:
    dataset = (tf.data.TFRecordDataset(records).shuffle(64).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(batch).prefetch(tf.data.AUTOTUNE))
    for _ in dataset:
        pass
    count, start = 0, time.perf_counter()
    for _ in range(2):
        for images, _ in dataset:
            count += int(images.shape[0])
    return count / (time.perf_counter() - start)


with tempfile.TemporaryDirectory(prefix="bench_tfdata_") as folder:
    records = os.path.join(folder, "train.tfrecord")
    write_records(records)
    rate = images_per_second(records)
print(json.dumps({"images_per_second": rate, "framework": f"tensorflow {tf.__version__}"}))
