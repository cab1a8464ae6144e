"""BatchNorm followed by ReLU, as the U-Net's blocks use it, trained with our CPU kernels (`batchnorm_relu.cc`).

`norm_relu(norm, x)` is `nnx.relu(norm(x))` for an `nnx.BatchNorm`: the same parameters and running statistics, the
same values to rounding. In training on CPU (batch statistics, float32 feature maps whose channels are a multiple of
16, the kernels at hand) it is four passes over the pixels: the per-channel sums of x and x^2; y = max(x * a + b, 0);
in the backward pass the per-channel sums of g and g * x (g the output gradient where y > 0); and dx = g * a +
x * k2 + k3. XLA:CPU made about nine passes of the same layer (its elementwise and reduction fusions took 30% of the
train step; docs/performance.md). Anywhere else (running statistics, GPU, bfloat16) it is nnx's BatchNorm.

Statistics are over the whole batch, as nnx's are under jit: under data parallelism each device sums its rows
(`native.per_device`) and one `psum` adds the sums, in the forward and the backward pass alike. The variance is
E[x^2] - E[x]^2 clipped at 0, nnx's default (`use_fast_variance`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from streetseg_jax import native


def norm_relu(norm: nnx.BatchNorm, x):
    """`nnx.relu(norm(x))`, with the same update of the running statistics in training."""
    targets = native.cpu_targets()
    if targets is None or not _fits(norm, x):
        return nnx.relu(norm(x))
    y, mean, var = batch_norm_relu(x, norm.scale[...], norm.bias[...], norm.epsilon)
    norm.mean[...] = lax.stop_gradient(norm.momentum * norm.mean[...] + (1 - norm.momentum) * mean)
    norm.var[...] = lax.stop_gradient(norm.momentum * norm.var[...] + (1 - norm.momentum) * var)
    return y


def _fits(norm: nnx.BatchNorm, x) -> bool:
    """Batch statistics over all but the last axis, float32, fast variance, scale and bias: what the kernels do."""
    return (not norm.use_running_average and x.dtype == jnp.float32 and x.shape[-1] % 16 == 0
            and norm.dtype in (None, jnp.float32) and norm.axis in (-1, x.ndim - 1) and norm.axis_name is None
            and norm.use_fast_variance and norm.scale is not None and norm.bias is not None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_relu(x, scale, bias, epsilon: float):
    """(y, batch mean, batch variance) of BatchNorm with batch statistics and ReLU over x's last axis."""
    return _forward(x, scale, bias, epsilon)[0]


def _two_vectors(channels):
    return (jax.ShapeDtypeStruct((channels,), jnp.float32),) * 2


def _forward(x, scale, bias, epsilon):
    targets = native.cpu_targets()
    channels = x.shape[-1]

    def local(axes, x, scale, bias):
        sums = (*jax.ffi.ffi_call(targets.batchnorm_relu_statistics, _two_vectors(channels))(x),
                jnp.float32(x.size // channels))
        total, squares, count = native.sum_over_devices(sums, axes)
        mean = total / count
        var = jnp.maximum(squares / count - mean * mean, 0.0)
        inverse_std = lax.rsqrt(var + epsilon)
        a = scale * inverse_std
        b = bias - mean * a
        y = jax.ffi.ffi_call(targets.batchnorm_relu_apply, jax.ShapeDtypeStruct(x.shape, jnp.float32))(x, a, b)
        return y, (mean, var, inverse_std, a, b, count)

    y, statistics = native.per_device(local, (x, scale, bias), (True, False, False), (True, (False,) * 6))
    mean, var = statistics[:2]
    return (y, mean, var), (x, statistics)


def _backward(epsilon, saved, cotangents):
    x, (mean, _, inverse_std, a, b, count) = saved
    dy, dmean, dvar = cotangents
    targets = native.cpu_targets()
    channels = x.shape[-1]

    def local(axes, x, dy, mean, inverse_std, a, b, count, dmean, dvar):
        sums = jax.ffi.ffi_call(targets.batchnorm_relu_gradient_statistics, _two_vectors(channels))(x, dy, a, b)
        dbias, g_times_x = native.sum_over_devices(sums, axes)
        dscale = inverse_std * (g_times_x - mean * dbias)
        # dx = a * (g - dbias / n - xhat * dscale / n), xhat = (x - mean) * inverse_std, plus what the batch mean
        # and variance returned receive (dmean / n, and 2 (x - mean) dvar / n): per channel, g * a + x * k2 + k3.
        k2 = (2 * dvar - a * inverse_std * dscale) / count
        k3 = (dmean - a * dbias) / count - mean * k2
        dx = jax.ffi.ffi_call(targets.batchnorm_relu_gradient, jax.ShapeDtypeStruct(x.shape, jnp.float32))(
            x, dy, a, b, k2, k3)
        return dx, dscale, dbias

    return native.per_device(local, (x, dy, mean, inverse_std, a, b, count, dmean, dvar), (True, True) + (False,) * 7,
                             (True, False, False))


batch_norm_relu.defvjp(_forward, _backward)
