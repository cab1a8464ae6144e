"""Peer: the same plain U-Net as a Keras model, train-step throughput on the CPU (the seed's tf.keras workflow).

usage: python unet_keras.py BATCH HEIGHT WIDTH CLASSES BASE_WIDTH [train]
Prints one JSON line: {"images_per_second": ...} (median of 5 repetitions of 5 steps after 3 warm-up steps).
"""
import json
import statistics
import sys
import time

import numpy as np
import tensorflow as tf

B, H, W, C, F0 = (int(v) for v in sys.argv[1:6])
layers = tf.keras.layers


def conv_block(x, width):
    for _ in range(2):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x))
    return x


def unet():
    widths = [F0 * 2 ** i for i in range(5)]
    inputs = layers.Input((H, W, 3))
    x, skips = inputs, []
    for width in widths[:4]:
        x = conv_block(x, width)
        skips.append(x)
        x = layers.MaxPool2D()(x)
    x = conv_block(x, widths[4])
    for width in reversed(widths[:4]):
        x = layers.Conv2DTranspose(width, 2, strides=2)(x)
        x = conv_block(layers.Concatenate()([x, skips.pop()]), width)
    return tf.keras.Model(inputs, layers.Conv2D(C, 1)(x))


model = unet()
model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
images = np.random.default_rng(0).standard_normal((B, H, W, 3)).astype(np.float32)
labels = np.random.default_rng(1).integers(0, C, (B, H, W))
for _ in range(3):
    model.train_on_batch(images, labels)
rates = []
for _ in range(5):
    t0 = time.perf_counter()
    for _ in range(5):
        model.train_on_batch(images, labels)
    rates.append(5 * B / (time.perf_counter() - t0))
print(json.dumps({"images_per_second": statistics.median(rates), "framework": f"tensorflow {tf.__version__}"}))
