"""The U-Net (Flax NNX) used for street-scene segmentation.

Images are NHWC. With `depth=4`, `base_width=16`, `upsample="transpose"` the layers match the peers in
`shared/peers/` (torch, Keras, linen) one for one: encoder blocks of (conv3x3 without bias -> BatchNorm -> ReLU) x 2
at widths 16..128, each followed by a 2x2 max-pool; a middle block at 256; per level a 2x2 stride-2 transposed
conv with bias, a concat with the skip and a block; a 1x1 conv head with bias. 1,942,696 parameters for 8 classes,
as torch counts them (BatchNorm running statistics are state, not parameters).

The model takes preprocessed images (`preprocess`); it pads any input size up to a multiple of 2**depth and crops
the logits back, so callers never think about strides. Train/eval behaviour follows nnx: `model.train()` (the
default after construction) updates BatchNorm statistics and applies dropout; `model.eval()` uses the running
statistics and no dropout.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from streetseg_jax.models import batchnorm, conv

UPSAMPLE_MODES = ("transpose", "resize", "depth_to_space")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# torch's BatchNorm2d defaults: running = 0.9 * running + 0.1 * batch (flax counts momentum the other way round).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def preprocess(images, dtype=jnp.float32) -> jnp.ndarray:
    """uint8 (B, H, W, 3) images -> `dtype` values in [-1, 1] (0 -> -1, 255 -> 1)."""
    return (jnp.asarray(images, jnp.float32) / 127.5 - 1.0).astype(dtype)


def model_dtype(model):
    """The dtype a model computes in (what `preprocess` should give it): its `dtype`, float32 without one."""
    return getattr(model, "dtype", jnp.float32)


class ConvBlock(nnx.Module):
    """(conv3x3 without bias -> BatchNorm -> ReLU) x 2; no bias because BatchNorm's shift replaces it."""

    def __init__(self, in_width: int, out_width: int, *, dtype, rngs: nnx.Rngs):
        self.conv1 = _conv(in_width, out_width, 3, use_bias=False, dtype=dtype, rngs=rngs)
        self.norm1 = _batch_norm(out_width, dtype, rngs)
        self.conv2 = _conv(out_width, out_width, 3, use_bias=False, dtype=dtype, rngs=rngs)
        self.norm2 = _batch_norm(out_width, dtype, rngs)

    def __call__(self, x):
        # batchnorm.norm_relu: nnx.relu(norm(x)), trained with our CPU kernels
        x = batchnorm.norm_relu(self.norm1, self.conv1(x))
        return batchnorm.norm_relu(self.norm2, self.conv2(x))


class TransposeUp(nnx.Module):
    """2x2 stride-2 transposed conv with bias, as torch's ConvTranspose2d(in, out, 2, 2).

    The 2x2 windows of a stride-2 transposed conv do not overlap, so it is one matmul to 4 * out channels and a
    depth-to-space (`subpixel_matmul`): the same layer, but its backward pass avoids the dilated convolution that
    XLA:CPU runs slowly. kernel[i, j] maps an input pixel to output sub-pixel (i, j), torch's convention (its weight
    (in, out, i, j)).
    """

    def __init__(self, in_width: int, out_width: int, *, dtype, rngs: nnx.Rngs):
        # fan_in = 4 * in, as nnx.ConvTranspose's default lecun_normal init would see it.
        init = nnx.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)
        self.kernel = nnx.Param(init(rngs.params(), (2, 2, in_width, out_width), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_width,), jnp.float32))
        self.dtype = dtype

    def __call__(self, x):
        y = subpixel_matmul(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        return y + self.bias[...].astype(self.dtype)


@jax.custom_vjp
def subpixel_matmul(x, kernel):
    """(B, H, W, C) and (2, 2, C, O) -> (B, 2H, 2W, O) with y[b, 2h + i, 2w + j] = x[b, h, w] @ kernel[i, j]."""
    y = jnp.einsum("bhwc,ijco->bhwijo", x, kernel)
    b, h, w, _, _, o = y.shape
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, o)


def _subpixel_matmul_forward(x, kernel):
    return subpixel_matmul(x, kernel), (x, kernel)


def _subpixel_matmul_backward(saved, dy):
    # The output gradient goes back to (pixels, sub-pixel x channel) once, then two plain matmuls. Left to autodiff,
    # XLA:CPU fused that shuffle into a transposed copy for the kernel gradient, about 3x slower for the layer.
    x, kernel = saved
    b, h, w, c = x.shape
    o = kernel.shape[-1]
    dy = dy.reshape(b, h, 2, w, 2, o).transpose(0, 1, 3, 2, 4, 5).reshape(b * h * w, 4 * o)
    dx = dy @ kernel.transpose(0, 1, 3, 2).reshape(4 * o, c)
    dkernel = jax.lax.dot_general(x.reshape(b * h * w, c), dy, (((0,), (0,)), ((), ())))
    return dx.reshape(x.shape), dkernel.reshape(c, 2, 2, o).transpose(1, 2, 0, 3)


subpixel_matmul.defvjp(_subpixel_matmul_forward, _subpixel_matmul_backward)


class ResizeUp(nnx.Module):
    """Nearest-neighbour x2 then conv3x3 to the lower width: no checkerboard artefacts by construction."""

    def __init__(self, in_width: int, out_width: int, *, dtype, rngs: nnx.Rngs):
        self.conv = _conv(in_width, out_width, 3, use_bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        b, h, w, c = x.shape
        # broadcast + reshape is an exact nearest resize and cheaper on CPU than jax.image.resize.
        x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
        return self.conv(x)


class DepthToSpaceUp(nnx.Module):
    """conv3x3 to 4 * out channels, then depth-to-space (pixel shuffle) x2.

    A sub-pixel conv: each output pixel sees a 3x3 neighbourhood of the coarse map, where a 2x2 stride-2 transposed
    conv sees one pixel. Its backward pass is plain convolutions, but it holds 9x the upsampling parameters.
    """

    def __init__(self, in_width: int, out_width: int, *, dtype, rngs: nnx.Rngs):
        self.conv = _conv(in_width, 4 * out_width, 3, use_bias=True, dtype=dtype, rngs=rngs,
                          kernel_init=_icnr_init)

    def __call__(self, x):
        return depth_to_space(self.conv(x))


def depth_to_space(x):
    """(B, H, W, 4C) -> (B, 2H, 2W, C); channel k*C + c lands at sub-pixel (k // 2, k % 2)."""
    b, h, w, c4 = x.shape
    c = c4 // 4
    x = x.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, 2 * h, 2 * w, c)


def _icnr_init(key, shape, dtype=jnp.float32):
    # ICNR: the four sub-pixel kernels start equal, so depth_to_space starts as a nearest upsample of one conv and
    # shows no checkerboard at initialisation.
    base = nnx.initializers.lecun_normal()(key, (*shape[:-1], shape[-1] // 4), dtype)
    return jnp.tile(base, 4)


_UPSAMPLERS = {"transpose": TransposeUp, "resize": ResizeUp, "depth_to_space": DepthToSpaceUp}


class UNet(nnx.Module):
    """U-Net: NHWC images in the compute dtype -> float32 logits (B, H, W, num_classes), any H and W."""

    def __init__(self, num_classes: int, *, base_width: int = 16, depth: int = 4, upsample: str = "transpose",
                 dropout: float = 0.0, dtype=jnp.float32, pad_mode: str = "edge", rngs: nnx.Rngs):
        _check_arguments(num_classes, base_width, depth, upsample, dropout, pad_mode)
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.dtype = dtype
        self.pad_mode = pad_mode
        # Parameters are drawn with the non-partitionable threefry: XLA:CPU compiles the partitionable one (JAX's
        # default) slowly, 1-3 s per random draw on a 2-core AMD EPYC against 0.3 s, which made the jitted
        # initialisation of even a tiny U-Net a 25-30 s compile. Parameters are created replicated, so being
        # partitionable buys nothing here.
        with jax.threefry_partitionable(False):
            self.down = nnx.List([ConvBlock(i, o, dtype=dtype, rngs=rngs)
                                  for i, o in zip([3] + widths[:-2], widths[:-1])])
            self.middle = ConvBlock(widths[-2], widths[-1], dtype=dtype, rngs=rngs)
            # dropout on the bottleneck only: the widest, lowest-resolution features are where a U-Net overfits.
            self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None
            up_class = _UPSAMPLERS[upsample]
            levels = list(reversed(range(depth)))
            self.up = nnx.List([up_class(widths[i + 1], widths[i], dtype=dtype, rngs=rngs) for i in levels])
            self.decode = nnx.List([ConvBlock(2 * widths[i], widths[i], dtype=dtype, rngs=rngs) for i in levels])
            # the head runs in float32 so the logits feeding softmax/cross-entropy are not rounded to bfloat16.
            self.head = _conv(widths[0], num_classes, 1, use_bias=True, dtype=jnp.float32, rngs=rngs)

    def __call__(self, x):
        height, width = x.shape[1:3]
        x = pad_to_multiple(x.astype(self.dtype), 2**self.depth, self.pad_mode)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = max_pool_2x2(x)
        x = self.middle(x)
        if self.dropout is not None:
            x = self.dropout(x)
        for up, block in zip(self.up, self.decode):
            x = block(jnp.concatenate([up(x), skips.pop()], axis=-1))
        logits = self.head(x.astype(jnp.float32))
        return logits[:, :height, :width, :]


def pad_to_multiple(x, multiple: int, mode: str = "edge"):
    """Pad H and W at the bottom/right up to a multiple; the caller crops [:H, :W] afterwards.

    "edge" works for any size; "reflect" needs the padding to be smaller than the image; "constant" pads zeros.
    """
    height, width = x.shape[1:3]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)


def max_pool_2x2(x):
    """2x2 stride-2 max-pool on even H, W; reshape + max measured a little faster on XLA:CPU than reduce_window."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def param_count(model: nnx.Module) -> int:
    """Trainable parameters (nnx.Param leaves), the figure torch's `sum(p.numel() for p in m.parameters())` gives."""
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def build_model(config_model: Mapping, num_classes: int, seed: int) -> UNet:
    """UNet from a config mapping with keys base_width, depth, upsample, dropout, dtype ("float32" | "bfloat16")."""
    check_model_config(config_model)
    return UNet(num_classes,
                base_width=int(config_model.get("base_width", 16)),
                depth=int(config_model.get("depth", 4)),
                upsample=config_model.get("upsample", "transpose"),
                dropout=float(config_model.get("dropout", 0.0)),
                dtype=DTYPES[config_model.get("dtype", "float32")],
                rngs=nnx.Rngs(seed))


def eval_model(graphdef, params, model_state) -> nnx.Module:
    """The model from its split parts (pure dicts or states), in eval mode: running BatchNorm statistics, no
    dropout."""
    model = nnx.merge(graphdef, params, model_state)
    model.eval()
    return model


def check_model_config(config_model: Mapping) -> None:
    """ValueError for a model config build_model cannot use (checked before a run writes anything)."""
    dtype_name = config_model.get("dtype", "float32")
    if dtype_name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {dtype_name!r}")
    _check_arguments(1, config_model.get("base_width", 16), config_model.get("depth", 4),
                     config_model.get("upsample", "transpose"), config_model.get("dropout", 0.0), "edge", "model.")


def _conv(in_width, out_width, size, *, use_bias, dtype, rngs, **kwargs):
    # SAME padding on a 3x3 stride-1 conv is torch's padding=1; parameters stay float32 whatever the compute dtype.
    # conv.conv_general_dilated: lax's, trained with our CPU kernels where XLA:CPU's are slow, 1x1 as a matmul.
    return nnx.Conv(in_width, out_width, (size, size), padding="SAME", use_bias=use_bias,
                    dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
                    conv_general_dilated=conv.conv_general_dilated, **kwargs)


def _batch_norm(width, dtype, rngs):
    return nnx.BatchNorm(width, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, dtype=dtype,
                         param_dtype=jnp.float32, rngs=rngs)


def _check_arguments(num_classes, base_width, depth, upsample, dropout, pad_mode, prefix: str = ""):
    """ValueError naming the argument (the config key: `prefix` "model.") whose value the model cannot take."""
    for name, value in (("num_classes", num_classes), (f"{prefix}base_width", base_width), (f"{prefix}depth", depth)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"{prefix}upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {upsample!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{prefix}dropout must be in [0, 1), got {dropout}")
    if pad_mode not in ("edge", "reflect", "constant"):
        raise ValueError(f"pad_mode must be 'edge', 'reflect' or 'constant', got {pad_mode!r}")
