"""The U-Net's 3x3 convolutions, with their weight gradient computed by our own kernel on CPU.

XLA:CPU computes the forward pass and the input gradient of a 3x3 convolution well, but its weight gradient three
times slower than both together: it treats the gradient as a convolution whose window is the whole feature map and
whose features are the few images of the batch, and transposes both operands to feed it. `conv_general_dilated`
here is `lax.conv_general_dilated` with the same forward pass and input gradient, and on CPU, for float32 3x3
stride-1 SAME convolutions in NHWC / HWIO layout, the weight gradient from `conv3x3_weight_gradient.cc` (`native`):
the U-Net's 18 weight gradients at B=4 192x256 on one core, 450 -> 142 ms. Anywhere else (GPU, bfloat16, other
shapes, no compiler) it is XLA's.

The kernel sees whole arrays, so under data parallelism it runs per device inside `shard_map` on the batch and the
partial gradients are summed across devices, as XLA's own gradient would be. The mesh is the one set with
`jax.sharding.use_abstract_mesh` (the train step sets it); without one, or with a batch the mesh does not divide,
the kernel runs on the whole batch (correct, but XLA gathers the batch to every device first).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from streetseg_jax.models import native

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`lax.conv_general_dilated`, with the native weight gradient where it applies (see the module docstring)."""
    if _plain_3x3(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                  feature_group_count, precision, kwargs):
        return conv3x3(lhs, rhs)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision, **kwargs)


def _plain_3x3(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, groups, precision,
               kwargs) -> bool:
    ones = (None, 1, (1, 1))
    return (lhs.ndim == 4 and rhs.shape[:2] == (3, 3) and tuple(strides) == (1, 1) and padding == "SAME"
            and lhs_dilation in ones and rhs_dilation in ones and groups == 1 and precision is None
            and all(value is None for value in kwargs.values())  # nnx passes out_sharding=None
            and lhs.dtype == rhs.dtype == jnp.float32
            and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
            == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))


def _xla_conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


@jax.custom_vjp
def conv3x3(x, kernel):
    """(B, H, W, C) float32 and (3, 3, C, O) -> (B, H, W, O), stride 1, zero padding 1."""
    return _xla_conv(x, kernel)


def _conv3x3_forward(x, kernel):
    return _xla_conv(x, kernel), (x, kernel)


def _conv3x3_backward(saved, dy):
    x, kernel = saved
    _, input_vjp = jax.vjp(lambda x: _xla_conv(x, kernel), x)
    (dx,) = input_vjp(dy)
    target = native.conv3x3_weight_gradient_target() if jax.default_backend() == "cpu" else None
    if target is None:
        _, kernel_vjp = jax.vjp(lambda k: _xla_conv(x, k), kernel)
        (dkernel,) = kernel_vjp(dy)
    else:
        dkernel = _per_device(functools.partial(_native_weight_gradient, target), x, dy)
    return dx, dkernel


conv3x3.defvjp(_conv3x3_forward, _conv3x3_backward)


def _native_weight_gradient(target, x, dy):
    shape = jax.ShapeDtypeStruct((3, 3, x.shape[-1], dy.shape[-1]), jnp.float32)
    return jax.ffi.ffi_call(target, shape)(x, dy)


def _per_device(weight_gradient, x, dy):
    """The batch's weight gradient: per device on its rows of the batch, summed over the mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or x.shape[0] % mesh.size:
        return weight_gradient(x, dy)
    axes = tuple(mesh.axis_names)

    def local(x, dy):
        return lax.psum(weight_gradient(x, dy), axes)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(axes), P(axes)), out_specs=P(), check_vma=False)(x, dy)
