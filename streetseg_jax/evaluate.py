"""Evaluation: a jitted step that returns sums (confusion matrix, loss), accumulated on the device over a split.

Scored at the labels' native resolution: when `config.eval_scale` is not 1 the network sees the image resized by
that factor and its logits are resized back (bilinear) before the argmax. The last partial batch is padded with
all-ignore examples, so every real pixel counts exactly once and padding counts nowhere.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from streetseg_jax import sharding
from streetseg_jax.data import pipeline
from streetseg_jax.labels.label_map import LabelMap
from streetseg_jax.metrics import confusion_matrix, metrics_from_confusion
from streetseg_jax.models.unet import preprocess

# 64 batches of 8 full-HD images stay far below 2**31 pixels per confusion cell.
FLUSH_EVERY = 64


def predict_logits(model, images, scale: float = 1.0):
    """Logits at the images' own size for uint8 (B, H, W, 3) images, the network running at `scale` x size."""
    b, h, w, _ = images.shape
    x = preprocess(images, getattr(model, "dtype", jnp.float32))
    if scale != 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = jax.image.resize(x, (b, *size, 3), "bilinear", antialias=scale < 1)
    logits = model(x).astype(jnp.float32)
    if scale != 1.0:
        logits = jax.image.resize(logits, (b, h, w, logits.shape[-1]), "bilinear")
    return logits


class Evaluator:
    """One cached jitted function over (params, model_state, batch) returning sums; metrics only at the end."""

    def __init__(self, graphdef, mesh, label_map: LabelMap, config):
        self.graphdef, self.mesh, self.label_map = graphdef, mesh, label_map
        self.batch_size, self.scale = config.eval_batch_size, config.eval_scale
        sharding.check_batch_size(self.batch_size, mesh)
        self._step = jax.jit(self._sums, out_shardings=sharding.replicated(mesh))
        self._predict = jax.jit(self._argmax)

    def _model(self, params, model_state):
        model = nnx.merge(self.graphdef, params, model_state)
        model.eval()
        return model

    def _sums(self, params, model_state, batch):
        logits = predict_logits(self._model(params, model_state), batch["image"], self.scale)
        labels = batch["label"].astype(jnp.int32)
        k, ignore = self.label_map.num_classes, self.label_map.ignore_id
        valid = (labels != ignore) & (labels < k)
        log_p = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(log_p, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
        conf = confusion_matrix(labels, jnp.argmax(logits, -1), k, ignore)
        return {"confusion": conf, "loss_sum": jnp.sum(jnp.where(valid, nll, 0.0)),
                "pixels": jnp.sum(valid.astype(jnp.float32))}

    def _argmax(self, params, model_state, images):
        return jnp.argmax(predict_logits(self._model(params, model_state), images, self.scale), -1)

    def sums(self, params, model_state, source) -> dict:
        """Confusion matrix (int64), loss sum and valid-pixel count over the split. Sums stay on the device and
        move to the host only every FLUSH_EVERY batches, before an int32 count could overflow."""
        host, device = _zero_sums(self.label_map.num_classes), None
        batches = pipeline.eval_batches(source, global_batch=self.batch_size, process_index=jax.process_index(),
                                        process_count=jax.process_count(), ignore_id=self.label_map.ignore_id)
        for i, local in enumerate(batches):
            out = self._step(params, model_state, sharding.global_batch(local, self.mesh))
            device = out if device is None else jax.tree.map(jnp.add, device, out)
            if (i + 1) % FLUSH_EVERY == 0:
                host, device = _add_to_host(host, device), None
        return _add_to_host(host, device)

    def run(self, params, model_state, source) -> dict:
        """`eval/miou`, `eval/iou/<class>`, `eval/pixel_accuracy`, `eval/mean_class_accuracy`, `eval/loss`."""
        sums = self.sums(params, model_state, source)
        scores = metrics_from_confusion(np.asarray(sums["confusion"]), self.label_map.names)
        scores["loss"] = float(sums["loss_sum"] / max(float(sums["pixels"]), 1.0))
        return {f"eval/{k}": v for k, v in scores.items()}

    def write_overlays(self, params, model_state, source, out_dir: Path, count: int) -> None:
        """image | ground truth | prediction, side by side, for the first `count` examples (one process)."""
        from streetseg_jax.visualize import colorize, overlay
        out_dir.mkdir(parents=True, exist_ok=True)
        for i in range(min(count, len(source))):
            example = source[i]
            image, truth = example["image"], example["segmentation_mask"][..., 0]
            pred = np.asarray(self._predict(params, model_state, image[None]))[0].astype(np.uint8)
            panels = [image, colorize(truth, self.label_map), np.asarray(overlay(image, pred, self.label_map,
                                                                                  legend=False))]
            strip = Image.fromarray(np.concatenate(panels, axis=1))
            name = Path(_text(example.get("file_name", f"example_{i}"))).stem
            strip.save(out_dir / f"{name}.jpg", quality=90)


def _zero_sums(num_classes: int) -> dict:
    return {"confusion": np.zeros((num_classes, num_classes), np.int64), "loss_sum": 0.0, "pixels": 0.0}


def _add_to_host(host: dict, device: dict | None) -> dict:
    if device is None:
        return host
    got = jax.device_get(device)
    return {"confusion": host["confusion"] + np.asarray(got["confusion"], np.int64),
            "loss_sum": host["loss_sum"] + float(got["loss_sum"]), "pixels": host["pixels"] + float(got["pixels"])}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
