"""BatchNorm + ReLU trained with our kernels: nnx's values, gradients and running statistics, per device, fallbacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from streetseg_jax import native
from streetseg_jax.models import batchnorm

from cpu_devices import run_on_cpu_devices


NAMES = native.Targets()
KERNEL_TARGETS = (NAMES.batchnorm_relu_statistics, NAMES.batchnorm_relu_apply,
                  NAMES.batchnorm_relu_gradient_statistics, NAMES.batchnorm_relu_gradient)


def native_or_skip():
    if native.targets() is None:
        pytest.skip("the native kernels could not be compiled here (no C++ compiler?); XLA computes their part")


def normal(shape, seed, scale=1.0, shift=0.0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32) * scale + shift


def make_norm(channels, dtype=jnp.float32):
    norm = nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=nnx.Rngs(0))
    norm.scale[...] = normal((channels,), 1, shift=1.0)
    norm.bias[...] = normal((channels,), 2)
    norm.mean[...] = normal((channels,), 3)
    return norm


def reference(norm, x):
    return nnx.relu(norm(x))


def gradients(fn, norm, x, weights):
    return nnx.grad(lambda norm, x: jnp.sum(fn(norm, x) * weights), argnums=(0, 1))(norm, x)


def assert_close(mine, expected, rtol):
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(jnp.abs(b).max()))


# (B, H, W, C): one and several vectors of channels, runs of 256 pixels and a remainder, 1x1 maps, a batch of one;
# feature maps whose mean is far from 0 (as after a convolution without bias)
@pytest.mark.parametrize("shape", [(2, 5, 7, 16), (4, 12, 16, 64), (3, 1, 1, 32), (3, 17, 19, 48), (1, 4, 4, 256)])
def test_values_gradients_and_running_statistics_equal_nnx(shape):
    native_or_skip()
    x, weights = normal(shape, 0, scale=3.0, shift=1.5), normal(shape, 4)
    ours, theirs = make_norm(shape[-1]), make_norm(shape[-1])
    assert_close(nnx.jit(gradients, static_argnums=0)(batchnorm.norm_relu, ours, x, weights),
                 gradients(reference, theirs, x, weights), rtol=1e-3)
    assert_close(nnx.state(ours, nnx.BatchStat), nnx.state(theirs, nnx.BatchStat), rtol=1e-5)  # the same update
    y = nnx.jit(batchnorm.norm_relu)(ours, x)
    assert_close(y, reference(theirs, x), rtol=1e-5)
    assert float(jnp.mean(y == 0)) > 0.05    # ReLU cut something, so its gradient mask was tested


def test_the_batch_mean_and_variance_it_returns_have_their_gradients_too():
    native_or_skip()
    x, weights = normal((2, 6, 5, 32), 0, scale=2.0, shift=-1.0), normal((2, 6, 5, 32), 1)
    scale, bias = normal((32,), 2, shift=1.0), normal((32,), 3)

    def plain(x, scale, bias):
        mean = x.mean((0, 1, 2))
        var = jnp.maximum((x * x).mean((0, 1, 2)) - mean * mean, 0.0)
        return jax.nn.relu((x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias), mean, var

    def loss(fn):
        def value(x, scale, bias):
            y, mean, var = fn(x, scale, bias)
            return jnp.sum(y * weights) + jnp.sum(mean * weights[0, 0, 0]) + 3.0 * jnp.sum(var)
        return value

    fused = jax.jit(jax.grad(loss(lambda x, s, b: batchnorm.batch_norm_relu(x, s, b, 1e-5)), argnums=(0, 1, 2)))
    assert_close(fused(x, scale, bias), jax.grad(loss(plain), argnums=(0, 1, 2))(x, scale, bias), rtol=1e-3)


def program(norm, x):
    graphdef, state = nnx.split(norm)

    def gradient(state, x):
        return gradients(batchnorm.norm_relu, nnx.merge(graphdef, state), x, jnp.ones_like(x))

    return str(jax.make_jaxpr(gradient)(state, x))


def test_only_batch_statistics_of_float32_maps_of_16_channels_take_the_kernels():
    native_or_skip()
    assert all(target in program(make_norm(16), normal((2, 4, 4, 16), 0)) for target in KERNEL_TARGETS)
    running = make_norm(16)
    running.eval()
    others = [(running, normal((2, 4, 4, 16), 0)), (make_norm(8), normal((2, 4, 4, 8), 0)),
              (make_norm(16, jnp.bfloat16), normal((2, 4, 4, 16), 0).astype(jnp.bfloat16))]
    for norm, x in others:
        assert not any(target in program(norm, x) for target in KERNEL_TARGETS)
        np.testing.assert_array_equal(batchnorm.norm_relu(norm, x), reference(norm, x))


def test_switched_off_it_is_nnx_batchnorm_exactly(monkeypatch):
    x, weights = normal((2, 4, 4, 16), 0), normal((2, 4, 4, 16), 1)
    expected = gradients(reference, make_norm(16), x, weights)
    try:
        monkeypatch.setenv("STREETSEG_NATIVE", "0")
        native.targets.cache_clear()
        assert not any(target in program(make_norm(16), x) for target in KERNEL_TARGETS)
        for mine, theirs in zip(jax.tree.leaves(gradients(batchnorm.norm_relu, make_norm(16), x, weights)),
                                jax.tree.leaves(expected)):
            np.testing.assert_array_equal(mine, theirs)
    finally:
        monkeypatch.undo()
        native.targets.cache_clear()


def test_the_unet_blocks_use_it():
    native_or_skip()
    from streetseg_jax.models.unet import UNet

    model = UNet(3, base_width=16, depth=1, rngs=nnx.Rngs(0))
    jaxpr = str(jax.make_jaxpr(nnx.grad(lambda model, x: jnp.mean(model(x) ** 2)))(model, normal((2, 16, 16, 3), 0)))
    assert jaxpr.count(NAMES.batchnorm_relu_apply) == 6   # two per block: down, middle, up
    model.eval()
    assert NAMES.batchnorm_relu_apply not in str(jax.make_jaxpr(model)(normal((2, 16, 16, 3), 0)))


SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from streetseg_jax import sharding
from streetseg_jax import native
from streetseg_jax.models import batchnorm
mesh = sharding.make_mesh()
x = jax.random.normal(jax.random.key(0), (16, 6, 5, 32)) * 2 + 1
weights = jax.random.normal(jax.random.key(1), (16, 6, 5, 32))
graphdef, state = nnx.split(nnx.BatchNorm(32, momentum=0.9, rngs=nnx.Rngs(0)))

def step(fn, state, x):
    norm = nnx.merge(graphdef, state)
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        grads = nnx.grad(lambda norm, x: jnp.sum(fn(norm, x) * weights), argnums=(0, 1))(norm, x)
    return grads, nnx.state(norm, nnx.BatchStat)

ours = jax.jit(lambda state, x: step(batchnorm.norm_relu, state, x),
               in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)))
program = ours.lower(state, x).compile().as_text()
targets = native.targets()
# (the gradients need no y: its ReLU mask is recomputed from x, so XLA drops the apply pass here)
assert targets.batchnorm_relu_statistics in program and targets.batchnorm_relu_gradient in program, program
assert "all-gather" not in program and "all-reduce" in program, program
reference = jax.jit(lambda state, x: step(lambda norm, x: nnx.relu(norm(x)), state, x))(state, x)
for mine, expected in zip(jax.tree.leaves(ours(state, x)), jax.tree.leaves(reference)):
    np.testing.assert_allclose(mine, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
print("PER-DEVICE-OK")
"""


def test_under_data_parallelism_each_device_sums_its_rows_and_the_sums_are_added():
    native_or_skip()
    proc = run_on_cpu_devices(SHARDED)
    assert "PER-DEVICE-OK" in proc.stdout, proc.stdout + proc.stderr
