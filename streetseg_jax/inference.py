"""Inference with a trained model: load it from a work directory, predict images of any size.

`load_model(workdir)` rebuilds the U-Net from the config saved in the checkpoint and restores its weights.
`Predictor` runs it: an image larger than the window is cut into overlapping windows whose logits are blended
with weights that fade out towards the window edges; smaller images run whole. Windows of many images share
fixed-size batches, so one compiled function serves a whole folder of photos of one size (each new window shape,
e.g. each size of image smaller than the window, compiles once more). The network sees every window as
evaluation does, at `config.eval_scale` and its `eval_extra_scales`, flip-averaged with `eval_flip_tta`
(`tta_logits` of `scaled_logits`), and its logits come back at the image's own resolution.
A photo of quite another size than the training images is first resized so that its shorter side is theirs
(`Predictor(resize=...)`), and its logits are resized back to it a block of rows at a time (`classes_at`).

Blending runs on the device, one band of window rows at a time: rows no later window touches are finished, turned
into class ids and confidences and handed to the host, so a 4000x3000 photo needs one band of logits on the
device, not the whole (H, W, classes) array, and window logits never travel to the host.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import math
import numbers
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from streetseg_jax import sharding, train
from streetseg_jax.checkpoint import Checkpoints
from streetseg_jax.cli import MAX_EXTRA_SCALE, closed_loops_unsaid, interrupts, reraise_interrupt_since
from streetseg_jax.data import pipeline
from streetseg_jax.evaluator import flip_tta_setting, network_scales, predict_logits, tta_logits
from streetseg_jax.labels.images import rgb_array
from streetseg_jax.labels.label_map import LabelMap
from streetseg_jax.models.unet import build_model, eval_model, model_dtype, preprocess

DEFAULT_WINDOW = (512, 512)   # network pixels: what the model sees of one window
DEFAULT_OVERLAP = 0.25        # of the window, on each side that has a neighbour
MAX_PARTIAL_BATCHES = 4       # window shapes waiting for a full batch at once
RESIZE_BEYOND = 1.5           # resize="auto" rescales a photo whose shorter side is this many times a training
                              # image's, or 1 / this
_CALL_BYTES = 512 * 2**20     # window logits of one model call at image resolution, over every TTA variant
_WINDOW_BYTES = _CALL_BYTES // 2    # one window's: a larger window is made smaller (Predictor.tile_for)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainedModel:
    """A checkpoint's model (`load_model`): its weights, label map and the config it was trained with."""
    graphdef: Any
    params: Any                  # pure dict
    model_state: Any             # pure dict (BatchNorm statistics)
    label_map: LabelMap
    config: ml_collections.ConfigDict
    step: int
    source: str                  # which checkpoint: "best", "latest" or "step N"
    image_size: tuple[int, int] | None = None    # (H, W) of a typical training image; None in older checkpoints

    @classmethod
    def untrained(cls, config, label_map: LabelMap) -> "TrainedModel":
        """A freshly initialised model (for benchmarks and tests: speed does not depend on the weights)."""
        graphdef, params, model_state = train.split_model(
            build_model(config.model, label_map.num_classes, seed=config.seed))
        return cls(graphdef, params, model_state, label_map, config, 0, "untrained")

    def model(self) -> nnx.Module:
        """The nnx model in eval mode (running BatchNorm statistics, no dropout)."""
        return eval_model(self.graphdef, self.params, self.model_state)

    def weights_fingerprint(self) -> str:
        """16 hex digits of a SHA-256 of the weights and BatchNorm statistics: tells apart checkpoints of one name
        (a run trained again from scratch reaches the same step with other weights)."""
        digest = hashlib.sha256()
        for leaf in jax.tree.leaves((self.params, self.model_state)):
            digest.update(np.ascontiguousarray(leaf).tobytes())
        return digest.hexdigest()[:16]


def load_model(workdir: str | Path, checkpoint: str | int = "best",
               say: Callable[[str], None] = print) -> TrainedModel:
    """The model saved in `workdir`/checkpoints: 'best' (falls back to 'latest', saying so), 'latest' or a step.

    Raises FileNotFoundError with a message fit for the user when there is nothing to load (a folder inside a
    run's checkpoints/ is told the run's work directory), ValueError when the checkpoint is damaged or incomplete
    (with the first line of the cause, whole).
    """
    workdir = Path(workdir).expanduser()
    if not workdir.is_dir():
        raise FileNotFoundError(f"{workdir} " + ("is a file, not a training work directory" if workdir.exists()
                                                 else "does not exist"))
    if not (workdir / "checkpoints").is_dir():
        raise FileNotFoundError(f"{workdir} holds no checkpoints/ folder; {_workdir_hint(workdir)}")
    for attempt in range(3):
        checkpoints, step = Checkpoints(workdir, async_save=False, read_only=True), None
        try:
            which = _choose_checkpoint(checkpoints, checkpoint, say)
            step = checkpoints.step_of(which)
            damaged = functools.partial(_damaged, workdir, step, which)
            with damaged():
                meta = checkpoints.read_meta(which)
            config = ml_collections.ConfigDict(meta["config"])
            label_map = LabelMap.from_dict(meta["label_map"], "checkpoint label map")
            graphdef, template = _abstract_state(config, label_map.num_classes)
            with damaged():
                state, _, _ = checkpoints.restore(which, template)
            break
        except ValueError:
            # A run saving there removed it while it was read (keep_checkpoints, or a new best): not damaged; read
            # the new one. Orbax removes a step's items one by one, so one half removed is still there.
            if attempt == 2 or step is None or not _replaced(workdir, which, step):
                raise
        finally:
            checkpoints.close()
    source = which if isinstance(which, str) else f"step {which}"
    size = tuple(meta["image_size"]) if meta.get("image_size") else None
    return TrainedModel(graphdef, train.eval_params(state, config), state.model_state, label_map, config, int(step),
                        source, size)


def _workdir_hint(path: Path) -> str:
    """What to pass instead of `path`, which holds no checkpoints/: the run it lies in, where it is inside one's."""
    inside = next((p for p in (path, *path.parents) if p.name == "checkpoints"), None)
    if inside is None or not any((inside / which).is_dir() for which in ("latest", "best")):   # ~/checkpoints/run1
        return "is it a training work directory?"
    return (f"it lies in the checkpoints of a run: pass the run's work directory {inside.parent} (and checkpoint="
            "'best', 'latest' or a step)")


def _replaced(workdir: Path, which, step: int) -> bool:
    """Whether `step`, read as `which`, is gone from `workdir` now, or no longer the checkpoint `which` names."""
    checkpoints = Checkpoints(workdir, async_save=False, read_only=True)
    try:
        if step not in checkpoints.all_steps():
            return True
        return which in ("best", "latest") and checkpoints.step_of(which) != step
    except FileNotFoundError:
        return True
    finally:
        checkpoints.close()


@contextlib.contextmanager
def _damaged(workdir: Path, step, which):
    """A checkpoint's files missing, cut short or foreign: one line naming it (not six of pytree internals, nor
    orbax's "Event loop is closed" tracebacks after it: `cli.closed_loops_unsaid`); a Ctrl-C or SIGTERM that cut
    the read short stays what it is (`cli.reraise_interrupt_since`)."""
    before = interrupts()
    try:
        with closed_loops_unsaid():
            yield
    except Exception as e:  # noqa: BLE001 - tensorstore raises a bare Exception for an array file cut short
        reraise_interrupt_since(before, e)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = reason.split(" See full TensorStore details")[0]      # then "<bound method pybind11_...>"
        raise ValueError(f"{workdir}: the checkpoint of step {step} ({which}) cannot be read: damaged or "
                         f"incomplete? ({reason}); another checkpoint ('best', 'latest' or a step) may be whole") from e


def _choose_checkpoint(checkpoints: Checkpoints, wanted: str | int, say) -> str | int:
    if str(wanted).isdigit():
        return checkpoints.step_of(int(wanted))
    if wanted not in ("best", "latest"):
        raise ValueError(f"checkpoint must be 'best', 'latest' or a step number, got {wanted!r}")
    if checkpoints.latest_step() is None and checkpoints.best.latest_step() is None:
        workdir = checkpoints.latest.directory.parent.parent
        raise FileNotFoundError(f"{workdir} holds no checkpoint yet: a run saves its first at its first evaluation "
                                "or checkpoint_every_steps (or when stopped)")
    if wanted == "best" and checkpoints.best.latest_step() is None:
        # A run stopped before its first evaluation has no best checkpoint; its latest one is what there is.
        say("no best checkpoint (the run has not been evaluated yet); using the latest one")
        return "latest"
    return wanted


def _abstract_state(config, num_classes: int):
    """(graphdef, TrainState of ShapeDtypeStructs on one device): the shapes a checkpoint is restored onto.

    The optimiser state comes along because the checkpoint holds the whole TrainState; it is a few times the
    size of the parameters and is dropped right after loading.
    """
    abstract = nnx.eval_shape(lambda: build_model(config.model, num_classes, seed=config.seed))
    graphdef, params, model_state = train.split_model(abstract)
    opt_state = jax.eval_shape(train.make_optimizer(config).init, params)
    state = train.TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, model_state, opt_state,
                             jax.ShapeDtypeStruct((2,), jnp.uint32))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return graphdef, jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), state)


# ---------------------------------------------------------------------------------------------------------------
# Network logits
# ---------------------------------------------------------------------------------------------------------------
def scaled_logits(model, images, scale: float):
    """`evaluator.predict_logits`: logits at the images' own size, the network seeing them resized by `scale`.

    When the network runs smaller than the image (scale < 1), its logits are enlarged by `upsample_bilinear`,
    which gives jax.image.resize's values (within float rounding) at a tenth of its cost on CPU: jax.image.resize
    contracts with dense (input x output) weight matrices, which for 11 classes at 1024x1024 outweighs the U-Net.
    """
    if scale >= 1.0:
        return predict_logits(model, images, scale)
    b, h, w, _ = images.shape
    x = preprocess(images, model_dtype(model))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    x = jax.image.resize(x, (b, *size, 3), "bilinear", antialias=True)
    return upsample_bilinear(model(x).astype(jnp.float32), h, w)


def upsample_bilinear(x, height: int, width: int):
    """(B, h, w, C) -> (B, height, width, C), height >= h and width >= w: bilinear with half-pixel centres and
    clamped edges, as jax.image.resize(..., "bilinear") computes it, by two gathers and a lerp per axis."""
    rows = _lerp_table(x.shape[1], height)
    x = x[:, rows[0]] * rows[2][None, :, None, None] + x[:, rows[1]] * rows[3][None, :, None, None]
    cols = _lerp_table(x.shape[2], width)
    return x[:, :, cols[0]] * cols[2][None, None, :, None] + x[:, :, cols[1]] * cols[3][None, None, :, None]


def _lerp_table(in_size: int, out_size: int):
    """(low index, high index, low weight, high weight) per output position."""
    centres = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    low = np.floor(centres).astype(np.int32)
    high = np.minimum(low + 1, in_size - 1)
    frac = (centres - low).astype(np.float32)
    return low, high, 1.0 - frac, frac


# ---------------------------------------------------------------------------------------------------------------
# Window layout
# ---------------------------------------------------------------------------------------------------------------
def window_origins(length: int, tile: int, overlap: float) -> list[int]:
    """Start positions of windows of `tile` pixels covering [0, length), neighbours overlapping by at least
    `overlap` * tile, spread evenly, the last ending exactly at `length`."""
    if length <= tile:
        return [0]
    stride = max(1, tile - int(round(overlap * tile)))
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def edge_weights(origins: list[int], tile: int) -> list[np.ndarray]:
    """Per window, 1-D blending weights: 1 inside, a linear ramp across the overlap with each neighbour.

    A side at the image border keeps weight 1, and where two windows overlap their ramps add up to 1, so the blend
    is a cross-fade; a single window gets weight 1 everywhere and its logits come through unchanged.
    """
    weights = []
    for i, start in enumerate(origins):
        w = np.ones(tile, np.float32)
        if i > 0:
            shared = origins[i - 1] + tile - start
            w[:shared] = np.minimum(w[:shared], (np.arange(shared) + 0.5) / shared)
        if i < len(origins) - 1:
            shared = start + tile - origins[i + 1]
            w[tile - shared:] = np.minimum(w[tile - shared:], (shared - np.arange(shared) - 0.5) / shared)
        weights.append(w)
    return weights


def tile_size(height: int, width: int, window: tuple[int, int], scale: float) -> tuple[int, int]:
    """A window in image pixels: `window` network pixels at `scale`, no larger than the image."""
    return min(height, math.ceil(window[0] / scale)), min(width, math.ceil(window[1] / scale))


# ---------------------------------------------------------------------------------------------------------------
# Blending (on the device: window logits never travel to the host, only finished masks do)
# ---------------------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, donate_argnums=(0, 1))
def _add_window(total, weight, batch_logits, index, x, weight_y, weight_x):
    """Add window `index` of a batch, weighted, at column x of the band (every window of a band row starts at its
    top row)."""
    logits = jax.lax.dynamic_index_in_dim(batch_logits, index, keepdims=False)
    window_weight = weight_y[:, None] * weight_x[None, :]
    old = jax.lax.dynamic_slice(total, (0, x, 0), logits.shape)
    total = jax.lax.dynamic_update_slice(total, old + logits * window_weight[..., None], (0, x, 0))
    old_weight = jax.lax.dynamic_slice(weight, (0, x), window_weight.shape)
    return total, jax.lax.dynamic_update_slice(weight, old_weight + window_weight, (0, x))


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _drop_rows(total, weight, n):
    """The band moved up by n rows, zeros coming in at the bottom."""
    keep = jnp.arange(total.shape[0]) < total.shape[0] - n
    return (jnp.where(keep[:, None, None], jnp.roll(total, -n, axis=0), 0.0),
            jnp.where(keep[:, None], jnp.roll(weight, -n, axis=0), 0.0))


def _normalised(total, weight):
    # rows no window has reached yet have weight 0; they are cut off on the host, but must not divide by 0
    return total / jnp.where(weight > 0, weight, 1.0)[..., None]


@jax.jit
def band_classes(total, weight):
    """(class ids uint8, winning class's softmax probability float32) of a band."""
    logits = _normalised(total, weight)
    return jnp.argmax(logits, axis=-1).astype(jnp.uint8), jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1)


@jax.jit
def band_logits(total, weight):
    return (_normalised(total, weight),)


class Blender:
    """Blends one image's window logits, added in row-major window order, into a band of rows on the device.

    The band is one window high: after a row of windows, the rows above the next row's first window are final (no
    later window reaches them), so `reduce` (band_classes or band_logits) turns them into outputs and they drop out
    of the band. Memory is one band of logits, whatever the image's height.
    """

    def __init__(self, height: int, width: int, tile: tuple[int, int], overlap: float, num_classes: int,
                 reduce: Callable = band_classes):
        self.height, self.width, self.tile, self.reduce = height, width, tile, reduce
        self.ys, self.xs = window_origins(height, tile[0], overlap), window_origins(width, tile[1], overlap)
        self.weight_y = [jnp.asarray(w) for w in edge_weights(self.ys, tile[0])]
        self.weight_x = [jnp.asarray(w) for w in edge_weights(self.xs, tile[1])]
        self.band_shape = (tile[0], width, num_classes)
        self.total = self.weight = None           # allocated with the first window
        self.row = self.col = self.top = 0
        self.pieces: list = []                    # (device outputs of a band, rows of it that are final)

    def windows(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]

    @property
    def done(self) -> bool:
        return self.row == len(self.ys)

    def add(self, batch_logits: jax.Array, index: int) -> None:
        """Window `index` of (B, tile_h, tile_w, K) device logits is the next window of this image."""
        if self.total is None:
            self.total = jnp.zeros(self.band_shape, jnp.float32)
            self.weight = jnp.zeros(self.band_shape[:2], jnp.float32)
        self.total, self.weight = _add_window(self.total, self.weight, batch_logits, index, self.xs[self.col],
                                              self.weight_y[self.row], self.weight_x[self.col])
        self.col += 1
        if self.col == len(self.xs):
            self.row, self.col = self.row + 1, 0
            self._release()

    def _release(self) -> None:
        next_top = self.ys[self.row] if self.row < len(self.ys) else self.height
        rows = next_top - self.top
        self.pieces.append((self.reduce(self.total, self.weight), rows))
        if self.done:
            self.total = self.weight = None
        else:
            self.total, self.weight = _drop_rows(self.total, self.weight, rows)
        self.top = next_top

    def outputs(self) -> tuple[np.ndarray, ...]:
        """The reduced outputs of the whole image, on the host (waits for the device)."""
        parts = [[np.asarray(out)[:rows] for out in outs] for outs, rows in self.pieces]
        return tuple(np.concatenate(column) for column in zip(*parts))


@dataclasses.dataclass
class Prediction:
    """What the model says of one image, at the image's size."""
    mask: np.ndarray             # (H, W) uint8 class ids
    confidence: np.ndarray       # (H, W) float32, the winning class's softmax probability
    resized: bool = False        # the network saw the image resized (Predictor's `resize`), its answer resized back


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) resized to `size` (H, W): Pillow's bilinear, which filters over every source pixel it covers
    when shrinking (no aliasing)."""
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def resize_logits(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, K) logits resized bilinearly to (height, width) (for moderate sizes: the whole array at once)."""
    (_, block), = logit_rows(logits, height, width, rows=height)
    return block


def logit_rows(logits: np.ndarray, height: int, width: int, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, block of `rows` rows) of (h, w, K) logits resized bilinearly to (height, width), with the
    half-pixel centres evaluation enlarges the network's logits with (upsample_bilinear). Logits of a photo
    enlarged for the network come back filtered over every logit a pixel covers (two taps would skip whole rows
    and columns past 2x, and thin classes with them); such photos are small, so that is done at once."""
    if height < logits.shape[0]:
        yield 0, np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(logits[..., k])).resize(
            (width, height), Image.Resampling.BILINEAR)) for k in range(logits.shape[-1])], axis=-1)
        return
    cols = _lerp_table(logits.shape[1], width)
    wide = logits[:, cols[0]] * cols[2][None, :, None] + logits[:, cols[1]] * cols[3][None, :, None]
    low, high, low_weight, high_weight = _lerp_table(logits.shape[0], height)
    for start in range(0, height, rows):
        part = slice(start, start + rows)
        yield start, (wide[low[part]] * low_weight[part, None, None] + wide[high[part]] * high_weight[part, None, None])


def classes_at(logits: np.ndarray, height: int, width: int, rows: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, winning class's softmax probability) at (height, width) from logits at another size, resized a
    block of rows at a time: a 12-megapixel photo's full-size logits never exist at once."""
    mask, confidence = np.empty((height, width), np.uint8), np.empty((height, width), np.float32)
    for start, block in logit_rows(logits, height, width, rows):
        mask[start:start + len(block)] = block.argmax(-1)
        confidence[start:start + len(block)] = 1.0 / np.exp(block - block.max(-1, keepdims=True)).sum(-1)
    return mask, confidence


# ---------------------------------------------------------------------------------------------------------------
# The predictor
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Job:
    key: Any
    image: np.ndarray            # as the network's windows are cut from it (resized, where the photo was)
    blender: Blender
    windows: list
    size: tuple[int, int]        # the photo's own (H, W): what the outputs come back at

    @property
    def resized(self) -> bool:
        return self.image.shape[:2] != self.size


@functools.lru_cache(maxsize=8)
def _window_logits(graphdef, scales: tuple[float, ...], flip_tta: bool, mesh):
    """The jitted logits of a batch of windows: one per model, TTA and mesh, so that a second Predictor of a model
    (another batch size, overlap or window; a notebook's cell run again) reuses what the first one compiled."""
    def logits(weights, tiles):
        return tta_logits(scaled_logits, eval_model(graphdef, *weights), tiles, scales, flip_tta)

    replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    return jax.jit(logits, in_shardings=(replicated, batched), out_shardings=batched)


def _number(value) -> bool:
    """A real number (numpy's too), not a bool or a string."""
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))


def _whole(value) -> bool:
    return _number(value) and math.isfinite(value) and float(value) == int(value)


def _pair(item) -> tuple:
    if not (isinstance(item, tuple | list) and len(item) == 2):
        raise TypeError(f"Predictor.predict takes (key, image) pairs, got {type(item).__name__}"
                        + (f" {np.shape(item)}" if isinstance(item, np.ndarray) else "")
                        + "; for one image, predict_one(image)")
    return item


def _positive_scales(scales) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        values = None
    if isinstance(scales, str) or values is None or any(not 0 < v <= MAX_EXTRA_SCALE for v in values):
        raise ValueError(f"extra_scales must be numbers in (0, {MAX_EXTRA_SCALE}], e.g. (0.5, 0.75), or () for none; "
                         f"got {scales!r}")
    return values


class Predictor:
    """Tiled, batched, jitted prediction with a trained model.

    window: (height, width) in network pixels (one number: a square; smaller where its logits at image resolution
    would pass _WINDOW_BYTES: tile_for); overlap: fraction of the window shared with each neighbour; batch_size:
    windows per call (fewer where their logits would pass _CALL_BYTES); flip_tta: also predict the mirror image and
    average the logits (None: as the run evaluated, its config's eval_flip_tta, as the predict command does);
    extra_scales: multi-scale TTA, the scales besides eval_scale the network also sees each photo at (None: as the
    run evaluated, its eval_extra_scales; (): none); resize: "auto" shows the network a photo at the scale of the
    images it was trained on (its shorter side made theirs, where it is more than RESIZE_BEYOND times theirs or less
    than 1 / RESIZE_BEYOND, a small one to RESIZE_BEYOND² times their area at most: a 12-megapixel photo is 8x a
    CamVid frame, and a model sees objects 8x larger than any it learned as something else; the shorter side, as a
    camera's portrait and landscape photos, crops and panoramas all show things at the scale of the side they share),
    "none" at the photo's own, a number: the photo resized by that factor. A resized photo's logits are resized back,
    so masks always come at the photo's size. `resized` counts such photos.
    """

    def __init__(self, trained: TrainedModel, window: tuple[int, int] = DEFAULT_WINDOW,
                 overlap: float = DEFAULT_OVERLAP, batch_size: int = 8, flip_tta: bool | None = None,
                 resize: str | float = "auto", extra_scales: tuple | None = None):
        if not isinstance(trained, TrainedModel):
            raise TypeError(f"Predictor takes a TrainedModel (inference.load_model(workdir)), got "
                            f"{type(trained).__name__}")
        if flip_tta not in (None, True, False):
            raise TypeError(f"flip_tta must be True, False or None (as the run evaluated), got {flip_tta!r}")
        window = (window,) * 2 if np.ndim(window) == 0 else tuple(window)
        if len(window) != 2 or not all(_whole(n) and n >= 1 for n in window):
            raise ValueError(f"window must be a positive whole number or (height, width) of them, got {window!r}")
        if not (_number(overlap) and 0.0 <= overlap < 0.5):
            raise ValueError(f"overlap must be a number in [0, 0.5), got {overlap!r}")
        if not (_whole(batch_size) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
        if resize not in ("auto", "none") and not (_number(resize) and 0 < resize < math.inf):
            raise ValueError(f"resize must be 'auto', 'none' or a positive factor, got {resize!r}")
        window, batch_size = (int(window[0]), int(window[1])), int(batch_size)
        self.trained, self.window, self.overlap = trained, window, overlap
        self.flip_tta = flip_tta_setting(trained.config, flip_tta)
        self.batch_size, self.resize, self.resized = batch_size, resize, 0
        # Windows are sized for eval_scale (the first); extra scales (multi-scale TTA) see the same windows.
        self.scales = network_scales(trained.config)
        if extra_scales is not None:
            self.scales = (self.scales[0], *_positive_scales(extra_scales))
        self.scale = self.scales[0]
        self.num_classes = trained.label_map.num_classes
        # Windows are split over every local device (XLA:CPU runs a convolution on one core, so a CPU split into
        # one device per core predicts about 1.5x as fast on 2 cores); the weights are copied to each.
        self._devices = jax.local_device_count()
        self._on: dict[int, tuple] = {}     # devices used -> (the compiled function, the weights on them)

    @property
    def _pixel_bytes(self) -> int:
        """A window pixel's logits at image resolution: every TTA variant's and their sum, float32."""
        return self.num_classes * 4 * (len(self.scales) * (2 if self.flip_tta else 1) + 1)

    def _calls_of(self, tile: tuple[int, int]) -> int:
        """Windows of this shape per call: batch_size, or fewer where their logits would pass _CALL_BYTES (8
        windows of 2048x2048 pixels needed 14 GB), one at least; a call of fewer windows than devices runs on as
        many devices as it has windows (`_dispatch`), so the budget holds whatever the device count."""
        return max(1, min(self.batch_size, _CALL_BYTES // (tile[0] * tile[1] * self._pixel_bytes)))

    def tile_for(self, height: int, width: int) -> tuple[int, int]:
        """The window in image pixels (tile_size), made smaller where its logits would pass _WINDOW_BYTES: at
        eval_scale 0.06 a 512-pixel window is 8534 image pixels, a 48-megapixel photo one window, and its call
        (with a window of padding for the second device) took the machine's 24 GB. The budget is the same
        whatever the device count, so the masks are too (a call of few windows runs on few devices: _dispatch)."""
        tile = tile_size(height, width, self.window, self.scale)
        most = _WINDOW_BYTES // self._pixel_bytes
        if tile[0] * tile[1] <= most:
            return tile
        shrink = math.sqrt(most / (tile[0] * tile[1]))
        return max(1, int(tile[0] * shrink)), max(1, int(tile[1] * shrink))

    def _dispatch(self, tiles: np.ndarray) -> jax.Array:
        """Start the compiled function on the tiles, padded to the next power of two up to their shape's batch (so
        at most log2(batch_size) + 1 batch shapes compile per window shape) and to a multiple of the devices it runs
        on: all of them, or as many as a call of fewer windows has (a divisor of the count); returns without
        waiting for the device."""
        n = len(tiles)
        wanted = min(self._calls_of(tiles.shape[1:3]), 1 << (n - 1).bit_length())
        used = pipeline.devices_for(wanted, self._devices)
        batch = np.zeros((-(-wanted // used) * used, *tiles.shape[1:]), np.uint8)
        batch[:n] = tiles
        forward, weights = self._on_devices(used)
        # Gathered on one device: blending there beats running every blend step on all of them.
        return jax.device_put(forward(weights, batch), jax.local_devices()[0])

    def _on_devices(self, count: int) -> tuple:
        """The compiled window function on the first `count` local devices, and the weights copied there (once)."""
        if count not in self._on:
            mesh = sharding.make_mesh(jax.local_devices()[:count])
            weights = jax.device_put((self.trained.params, self.trained.model_state), sharding.replicated(mesh))
            self._on[count] = (_window_logits(self.trained.graphdef, self.scales, self.flip_tta, mesh), weights)
        return self._on[count]

    # --- one image ---------------------------------------------------------------------------------------------
    def logits(self, image: np.ndarray) -> np.ndarray:
        """(H, W, K) float32 blended logits of one uint8 (H, W, 3) image (the whole array on the host: for moderate
        sizes; `predict` keeps one band of logits)."""
        job, = self._stream([(None, image)], reduce=band_logits)
        logits = job.blender.outputs()[0]
        return resize_logits(logits, *job.size) if job.resized else logits

    def predict_one(self, image: np.ndarray) -> Prediction:
        """The mask and confidence of one uint8 (H, W, 3) image, at its own size."""
        (_, prediction), = self.predict([(None, image)])
        return prediction

    # --- many images -------------------------------------------------------------------------------------------
    def predict(self, items: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, Prediction]]:
        """(key, Prediction) for each (key, uint8 image) as soon as its last window is blended (not necessarily in
        input order: windows wait in a batch per window shape). An item that fails (a bad image, an input that
        raises) raises its error after the images taken before it are answered."""
        for job in self._stream(items, reduce=band_classes):
            outputs = job.blender.outputs()
            yield job.key, Prediction(*(classes_at(outputs[0], *job.size) if job.resized else outputs), job.resized)

    def _stream(self, items, reduce) -> Iterator[_Job]:
        waiting: dict[tuple, list] = {}         # window shape -> [(job, (y, x))] not yet run
        running: collections.deque = collections.deque()
        jobs = (self._job(*_pair(item), reduce) for item in items)
        while True:
            try:
                job = next(jobs)
            except StopIteration:
                break
            except Exception as failed:     # up to MAX_PARTIAL_BATCHES batches of images were lost with it
                try:
                    for batch in waiting.values():
                        yield from self._run(batch, running)
                except Exception:
                    raise failed        # the input's error, the flush's as its context
                raise
            for origin in job.windows:
                batch = waiting.setdefault(job.blender.tile, [])
                batch.append((job, origin))
                if len(batch) == self._calls_of(job.blender.tile):
                    yield from self._run(waiting.pop(job.blender.tile), running)
            # Images of many different sizes would each wait in a batch of their own until the end (all held in
            # memory); beyond a few partial batches, run the oldest one short.
            while len(waiting) > MAX_PARTIAL_BATCHES:
                yield from self._run(waiting.pop(next(iter(waiting))), running)
        for batch in waiting.values():
            yield from self._run(batch, running)

    def _job(self, key, image: np.ndarray, reduce) -> _Job:
        image = rgb_array(image)
        size = image.shape[:2]
        target = self.input_size(*size)
        if target != size:     # its logits come back at the network's size: classes are taken after resizing them
            image, reduce = resize_image(image, target), band_logits
            self.resized += 1
        tile = self.tile_for(*target)
        blender = Blender(*target, tile, self.overlap, self.num_classes, reduce)
        return _Job(key, image, blender, blender.windows(), size)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) a photo of this size is resized to before the network (which then sees it at eval_scale)."""
        factor = self._factor(height, width)
        if factor == 1.0:
            return height, width
        return max(1, round(height * factor)), max(1, round(width * factor))

    def _factor(self, height: int, width: int) -> float:
        if self.resize == "none" or (self.resize == "auto" and self.trained.image_size is None):
            return 1.0
        if self.resize != "auto":
            return float(self.resize)
        factor = min(self.trained.image_size) / min(height, width)
        if factor > 1:      # to RESIZE_BEYOND² times the training images' area at most: a 1x3000 strip was
            most = RESIZE_BEYOND ** 2 * math.prod(self.trained.image_size)      # enlarged to 96x288000
            factor = min(factor, max(1.0, math.sqrt(most / (height * width))))
        return 1.0 if 1 / RESIZE_BEYOND <= factor <= RESIZE_BEYOND else factor

    def _run(self, batch: list, running: collections.deque) -> Iterator[_Job]:
        """Dispatch a batch and its blending; both run asynchronously, but before going on, wait for the batch
        before it, so at most two batches of window logits are alive on the device."""
        h, w = batch[0][0].blender.tile
        logits = self._dispatch(np.stack([job.image[y:y + h, x:x + w] for job, (y, x) in batch]))
        for index, (job, _) in enumerate(batch):
            job.blender.add(logits, index)
            if job.blender.done:
                yield job
        running.append(logits)
        if len(running) > 1:
            running.popleft().block_until_ready()
