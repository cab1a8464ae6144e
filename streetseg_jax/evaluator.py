"""Scoring on the device: the network's logits with test-time augmentation, and `Evaluator`, one cached jitted step
per split that sums confusion matrices and losses on the device (metrics only at the end).

Scored at the labels' native resolution: when `config.eval_scale` is not 1 the network sees the image resized by
that factor and its logits are resized back (bilinear) before the argmax. A batch holds images of one size (an
image's score does not depend on its neighbours in the split), filled up with all-ignore examples, so every real
pixel counts exactly once and padding counts nowhere.

With `config.eval_flip_tta` each image's logits are averaged with those of its mirror image (flip test-time
augmentation); with `config.eval_extra_scales` the network also sees the image at those scales, and the logits of
every scale (resized back to the labels) are averaged too (multi-scale test-time augmentation).
"""
from __future__ import annotations

import functools
from pathlib import Path, PurePosixPath
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from streetseg_jax import atomic, sharding
from streetseg_jax.data import pipeline
from streetseg_jax.labels.label_map import LabelMap
from streetseg_jax.losses import valid_labels
from streetseg_jax.metrics import confusion_matrix, image_confusion_matrices, metrics_from_confusion
from streetseg_jax.models.unet import eval_model, model_dtype, preprocess

# 64 batches of 8 full-HD images stay far below 2**31 pixels per confusion cell.
FLUSH_EVERY = 64


def predict_logits(model, images, scale: float = 1.0):
    """Logits at the images' own size for uint8 (B, H, W, 3) images, the network running at `scale` x size."""
    b, h, w, _ = images.shape
    x = preprocess(images, model_dtype(model))
    if scale != 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = jax.image.resize(x, (b, *size, 3), "bilinear", antialias=scale < 1)
    logits = model(x).astype(jnp.float32)
    if scale != 1.0:
        logits = jax.image.resize(logits, (b, h, w, logits.shape[-1]), "bilinear")
    return logits


def network_scales(config) -> tuple[float, ...]:
    """The scales the network sees evaluation images at: `eval_scale`, then any `eval_extra_scales` (multi-scale
    test-time augmentation: the logits of every scale, each resized to the image, are averaged)."""
    return (float(config.get("eval_scale", 1.0)), *(float(s) for s in config.get("eval_extra_scales", ())))


def tta_logits(logits_fn, model, images, scales, flip_tta: bool):
    """The mean over `scales` (one float or several) of `logits_fn(model, images, scale)`; with flip_tta
    (test-time augmentation) each is the mean of it on the images and, mirrored back, on their mirror images (one
    call per scale on a doubled batch)."""
    scales = (scales,) if isinstance(scales, (int, float)) else tuple(scales)
    n = images.shape[0]
    batch = jnp.concatenate([images, images[:, :, ::-1]]) if flip_tta else images
    total = None
    for scale in scales:
        logits = logits_fn(model, batch, scale)
        if flip_tta:
            logits = (logits[:n] + logits[n:, :, ::-1]) / 2
        total = logits if total is None else total + logits
    return total if len(scales) == 1 else total / len(scales)


def flip_tta_setting(config, requested: bool | None) -> bool:
    """Whether to flip-average: as `requested`, or when None as the run evaluated (its config's eval_flip_tta)."""
    return bool(config.get("eval_flip_tta", False) if requested is None else requested)


def apply_tta_flags(config, flip_tta: bool | None, extra_scales: tuple | None) -> bool:
    """Set a loaded run's config to the test-time augmentation the command line asked for (`--[no_]flip_tta`,
    `--extra_scales`; None: as the run evaluated); returns whether to flip-average."""
    config.eval_flip_tta = flip_tta_setting(config, flip_tta)
    if extra_scales is not None:
        config.eval_extra_scales = tuple(extra_scales)
    return config.eval_flip_tta


def example_name(record: dict, index: int) -> str:
    """The example's file name (TFDS Text comes as bytes without TensorFlow), or example_<index> in a dataset
    without file names."""
    name = record.get("file_name", f"example_{index}")
    return name.decode() if isinstance(name, bytes) else str(name)


# Logits a batch of evaluation images may hold at their labels' resolution on a CPU, or each GPU's share (8
# 12-megapixel photos with 4 TTA variants took 23 GB, and the kernel killed the run): fewer images of such a size go
# in a batch.
EVAL_BATCH_BYTES = 2 << 30


def overlay_name(name: str, index: int, used: set) -> PurePosixPath:
    """Where an example's overlay goes under the overlays folder: its file name as a .png, with the name's folders,
    which keep nested keys apart (Train/img0.jpg, Test/img0.jpg); only the last part of a name that would leave the
    folder (absolute, or with ..: a dataset built elsewhere wrote over files outside the run), and _<index> after a
    name given twice. `used` collects the names given out."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or path.name in ("", ".."):
        path = PurePosixPath(path.name if path.name not in ("", "..") else f"example_{index}")
    path, stem = path.with_suffix(".png"), path.stem
    while path in used:
        path = path.with_name(f"{stem}_{index}.png")
        stem = path.stem
    used.add(path)
    return path


class Evaluator:
    """One cached jitted function over (params, model_state, batch) returning sums; metrics only at the end."""

    def __init__(self, graphdef, mesh, label_map: LabelMap, config):
        self.graphdef, self.mesh, self.label_map = graphdef, mesh, label_map
        self._splits: dict[int, pipeline.EvalBatches] = {}     # id(source) -> its batches
        self.batch_size, self.scales = config.eval_batch_size, network_scales(config)
        self.flip_tta = flip_tta_setting(config, None)
        sharding.check_batch_size(mesh, eval_batch_size=self.batch_size)
        # A CPU's devices share the host's memory: EVAL_BATCH_BYTES is a batch's, and a batch of large images may
        # have fewer rows than devices and run on as many of them as it has rows (in one process; in several, one
        # row each). A GPU's memory is its own: EVAL_BATCH_BYTES is each device's, one row each at least.
        self._on_cpu = mesh.devices.flat[0].platform == "cpu"
        self._meshes = {mesh.devices.size: mesh}    # devices -> the mesh of the first that many
        self._jits: dict[tuple[str, int], Callable] = {}
        self._predict = jax.jit(self._argmax)

    def _logits(self, params, model_state, images):
        model = eval_model(self.graphdef, params, model_state)
        return tta_logits(predict_logits, model, images, self.scales, self.flip_tta)

    def _eval_batches(self, source) -> pipeline.EvalBatches:
        """The split in global batches of eval_batch_size (fewer rows of large images: within EVAL_BATCH_BYTES of
        logits, see __init__), each of one image size, filled up with all-ignore rows. One EvalBatches per split for the
        Evaluator's life: it reads every image's size once, to plan the batches, not at every evaluation."""
        if id(source) not in self._splits:      # the EvalBatches holds the source: its id stays its own
            variants = len(self.scales) * (2 if self.flip_tta else 1)
            # Per label pixel: each variant's float32 logits at label resolution, their sum, the softmax's terms.
            pixel_bytes = 4 * self.label_map.num_classes * (variants + 3)
            devices = self.mesh.devices.size
            self._splits[id(source)] = pipeline.eval_batches(
                source, global_batch=self.batch_size, process_index=jax.process_index(),
                process_count=jax.process_count(), ignore_id=self.label_map.ignore_id,
                max_pixels=EVAL_BATCH_BYTES * (1 if self._on_cpu else devices) // pixel_bytes,
                unit=devices, least=1 if self._on_cpu and jax.process_count() == 1 else devices)
        return self._splits[id(source)]

    def _batches(self, source):
        """The split's global batches (this process's share of each on its devices), each with its mesh: the
        evaluator's, or for a batch with fewer rows than devices (large images) that of as many devices."""
        for batch in self._eval_batches(source):
            mesh = self._mesh_of(len(batch["label"]) * jax.process_count())
            yield mesh, sharding.global_batch(batch, mesh)

    def _mesh_of(self, rows: int):
        devices = min(rows, self.mesh.devices.size)
        if devices not in self._meshes:
            self._meshes[devices] = sharding.make_mesh(list(self.mesh.devices.flat[:devices]))
        return self._meshes[devices]

    def _jitted(self, fn: Callable, mesh) -> Callable:
        """fn(params, model_state, batch, mesh=mesh), jitted with replicated outputs, once per function and mesh
        (so evaluators that never rank images compile nothing extra)."""
        key = (fn.__name__, mesh.devices.size)
        if key not in self._jits:
            self._jits[key] = jax.jit(functools.partial(fn, mesh=mesh), out_shardings=sharding.replicated(mesh))
        return self._jits[key]

    def _on(self, mesh, params, model_state, placed: dict):
        """The weights on `mesh`'s devices (those of a smaller mesh copied there once per pass, into `placed`)."""
        if mesh is self.mesh:
            return params, model_state
        if mesh.devices.size not in placed:
            placed[mesh.devices.size] = jax.device_put((params, model_state), sharding.replicated(mesh))
        return placed[mesh.devices.size]

    def _pixel_terms(self, params, model_state, batch):
        """(labels, predictions, per-pixel negative log-likelihood with ignore pixels at 0, valid mask)."""
        logits = self._logits(params, model_state, batch["image"])
        labels = batch["label"].astype(jnp.int32)
        safe, valid = valid_labels(labels, self.label_map.num_classes, self.label_map.ignore_id)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
        return labels, jnp.argmax(logits, -1), jnp.where(valid, nll, 0.0), valid.astype(jnp.float32)

    def _sums(self, params, model_state, batch, mesh):
        labels, preds, nll, valid = self._pixel_terms(params, model_state, batch)
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):   # our CPU kernel counts per device
            conf = confusion_matrix(labels, preds, self.label_map.num_classes, self.label_map.ignore_id)
        return {"confusion": conf, "loss_sum": jnp.sum(nll), "pixels": jnp.sum(valid)}

    def _argmax(self, params, model_state, images):
        return jnp.argmax(self._logits(params, model_state, images), -1)

    def sums(self, params, model_state, source) -> dict:
        """Confusion matrix (int64), loss sum and valid-pixel count over the split. Sums stay on the device and
        move to the host only every FLUSH_EVERY batches, before an int32 count could overflow."""
        host, device, placed = _zero_sums(self.label_map.num_classes), {}, {}
        for i, (mesh, batch) in enumerate(self._batches(source)):
            out = self._jitted(self._sums, mesh)(*self._on(mesh, params, model_state, placed), batch)
            key = mesh.devices.size         # sums on one mesh's devices add up there
            device[key] = jax.tree.map(jnp.add, device[key], out) if key in device else out
            if (i + 1) % FLUSH_EVERY == 0:
                host, device = _add_to_host(host, device), {}
        return _add_to_host(host, device)

    def run(self, params, model_state, source) -> dict:
        """`eval/miou`, `eval/iou/<class>`, `eval/pixel_accuracy`, `eval/mean_class_accuracy`, `eval/loss`."""
        sums = self.sums(params, model_state, source)
        scores = metrics_from_confusion(np.asarray(sums["confusion"]), self.label_map.names)
        scores["loss"] = float(sums["loss_sum"] / max(float(sums["pixels"]), 1.0))
        return {f"eval/{k}": v for k, v in scores.items()}

    def write_overlays(self, params, model_state, source, out_dir: Path, count: int, caption: str) -> None:
        """image | ground truth | prediction (visualize.comparison), PNG, for the first `count` examples (one
        process), as out_dir/<file name without its suffix>.png, under the file name's folders."""
        from streetseg_jax.visualize import comparison
        if count < 1:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        used = set()
        for i in range(min(count, len(source))):
            example = source[i]
            image, truth = example["image"], example["segmentation_mask"][..., 0]
            pred = self.predict(params, model_state, image[None])[0]
            path = out_dir / overlay_name(example_name(example, i), i, used)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.save_image(comparison(image, truth, pred, self.label_map, caption), path, format="PNG")

    # --- per-image figures, for reports that rank images -----------------------------------------------------------
    def per_image(self, params, model_state, source, progress: Callable[[int], None] | None = None) -> dict:
        """Sums of every example, in source order: `confusion` int64 (N, K, K), `loss_sum` and `pixels` float64 (N,).

        Summed over N they are `sums`. Each batch's rows stay on the device until the pass ends (they are small:
        K*K counts per image), so the loop never waits for a host round trip; padding rows are dropped at the end.
        With `progress`, it waits for each batch instead and calls progress(its real images), for a progress bar.
        """
        outs, placed = [], {}
        batches = self._eval_batches(source)
        for (mesh, batch), positions in zip(self._batches(source), batches.batch_positions()):
            outs.append(self._jitted(self._per_image_sums, mesh)(*self._on(mesh, params, model_state, placed), batch))
            if progress is not None:
                jax.block_until_ready(outs[-1])
                progress(sum(position is not None for position in positions))
        outs = jax.device_get(outs)
        rows = batches.real_rows
        return {"confusion": np.concatenate([o["confusion"] for o in outs]).astype(np.int64)[rows],
                "loss_sum": np.concatenate([o["loss_sum"] for o in outs]).astype(np.float64)[rows],
                "pixels": np.concatenate([o["pixels"] for o in outs]).astype(np.float64)[rows]}

    def predict(self, params, model_state, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W) class ids for uint8 (B, H, W, 3) images of one size, seen as `run` sees them (eval_scale,
        extra scales and flips)."""
        return np.asarray(self._predict(params, model_state, images)).astype(np.uint8)

    def _per_image_sums(self, params, model_state, batch, mesh):
        labels, preds, nll, valid = self._pixel_terms(params, model_state, batch)
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            conf = image_confusion_matrices(labels, preds, self.label_map.num_classes, self.label_map.ignore_id)
        return {"confusion": conf, "loss_sum": jnp.sum(nll, axis=(1, 2)),
                "pixels": jnp.sum(valid, axis=(1, 2))}


def _zero_sums(num_classes: int) -> dict:
    return {"confusion": np.zeros((num_classes, num_classes), np.int64), "loss_sum": 0.0, "pixels": 0.0}


def _add_to_host(host: dict, device: dict) -> dict:
    """host's sums plus those on the devices (one per mesh)."""
    for got in jax.device_get(list(device.values())):
        host = {"confusion": host["confusion"] + np.asarray(got["confusion"], np.int64),
                "loss_sum": host["loss_sum"] + float(got["loss_sum"]), "pixels": host["pixels"] + float(got["pixels"])}
    return host
