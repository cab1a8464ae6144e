"""The U-Net's convolutions, trained with our own CPU kernels where XLA:CPU's are slow.

`conv_general_dilated` is `lax.conv_general_dilated`, except for stride-1 NHWC / HWIO convolutions: a 1x1 kernel (the
head) is one matmul over the pixels, and a float32 3x3 SAME one is `conv3x3`, whose value is XLA's (up to rounding)
and whose training passes on CPU take kernels from `conv3x3.cc` (`native`), per layer, one core, B=4 192x256
(docs/performance.md):

- the weight gradient, always: XLA:CPU computes it as a convolution whose window is the whole feature map and whose
  features are the batch's few images, after transposing both operands; the U-Net's 18 took 450 ms, ours 142;
- the forward pass (under differentiation) and the input gradient wherever the result has a multiple of 16 channels,
  except 16 from more (`_forward_wins`): 150-169 GFLOP/s against XLA:CPU's 126-145 on the U-Net's layers, and on
  the first two (3 -> 16, 16 -> 16) 1.8 and 7.5 ms against 10.8 and 14.7.

Anywhere else (GPU, bfloat16, other shapes, no compiler) XLA computes everything, and in inference too: our forward
kernel made the predict benchmark 9.2 -> 5.4 img/s there (probably: XLA fuses the eval-mode BatchNorm and ReLU
into its own).

Under data parallelism the kernels run per device (`native.per_device`), the weight gradients then summed across
devices, as XLA's own would be.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from streetseg_jax import native

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`lax.conv_general_dilated`, trained with the native kernels where they apply (see the module docstring)."""
    plain = _plain(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                   precision, kwargs)
    if plain and rhs.shape[:2] == (3, 3) and padding == "SAME" and lhs.dtype == rhs.dtype == jnp.float32:
        return conv3x3(lhs, rhs)
    if plain and rhs.shape[:2] == (1, 1) and padding in ("SAME", "VALID"):
        # one matmul over the pixels (the head): its kernel gradient too, where XLA:CPU's 1x1 convolution transposed
        # both operands first (head forward and backward 8.3 -> 5.3 ms at B=4 192x256, one core)
        return (lhs.reshape(-1, lhs.shape[-1]) @ rhs[0, 0]).reshape(*lhs.shape[:-1], rhs.shape[-1])
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision, **kwargs)


def _plain(lhs, rhs, strides, lhs_dilation, rhs_dilation, dimension_numbers, groups, precision, kwargs) -> bool:
    """A stride-1 NHWC / HWIO convolution without dilation, groups, precision or other options."""
    ones = (None, 1, (1, 1))
    return (lhs.ndim == 4 and tuple(strides) == (1, 1) and lhs_dilation in ones and rhs_dilation in ones
            and groups == 1 and precision is None
            and all(value is None for value in kwargs.values())  # nnx passes out_sharding=None
            and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
            == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))


def _xla_conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


@jax.custom_vjp
def conv3x3(x, kernel):
    """(B, H, W, C) float32 and (3, 3, C, O) -> (B, H, W, O), stride 1, zero padding 1."""
    return _xla_conv(x, kernel)


def _forward_wins(in_channels: int, out_channels: int) -> bool:
    """Where the native forward kernel beats XLA:CPU's: results in vectors of 16 channels, and not the 16 from many
    (32 -> 16: one input value per multiply-add, about as fast as XLA's)."""
    return out_channels % 16 == 0 and (out_channels >= 32 or in_channels <= 16)


def _native(target, x, kernel, channels):
    """The native forward convolution or input gradient of x: `channels` result channels, per device."""
    def call(_, x, kernel):
        return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((*x.shape[:-1], channels), jnp.float32))(x, kernel)

    return native.per_device(call, (x, kernel), (True, False), True)


def _conv3x3_forward(x, kernel):
    targets = native.cpu_targets()
    in_channels, out_channels = kernel.shape[2:]
    if targets is not None and _forward_wins(in_channels, out_channels):
        return _native(targets.conv3x3_forward, x, kernel, out_channels), (x, kernel)
    return _xla_conv(x, kernel), (x, kernel)


def _conv3x3_backward(saved, dy):
    x, kernel = saved
    targets = native.cpu_targets()
    in_channels, out_channels = kernel.shape[2:]
    if targets is not None and _forward_wins(out_channels, in_channels):
        # the forward convolution of dy with the kernel turned round and its channels swapped, done in the kernel
        dx = _native(targets.conv3x3_input_gradient, dy, kernel, in_channels)
    else:
        (dx,) = jax.vjp(lambda x: _xla_conv(x, kernel), x)[1](dy)
    if targets is None:
        (dkernel,) = jax.vjp(lambda k: _xla_conv(x, k), kernel)[1](dy)
    else:
        def call(axes, x, dy):
            shape = jax.ShapeDtypeStruct(kernel.shape, jnp.float32)
            return native.sum_over_devices(jax.ffi.ffi_call(targets.conv3x3_weight_gradient, shape)(x, dy), axes)

        dkernel = native.per_device(call, (x, dy), (True, True), False)
    return dx, dkernel


conv3x3.defvjp(_conv3x3_forward, _conv3x3_backward)
