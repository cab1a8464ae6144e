"""The 3x3 convolution trained with our own kernels: XLA's values and gradients, per device under sharding, fallbacks."""
import subprocess
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from streetseg_jax import native
from streetseg_jax.models import conv

from cpu_devices import run_on_cpu_devices


NAMES = native.Targets()
FORWARD, INPUT_GRADIENT, WEIGHT_GRADIENT = (NAMES.conv3x3_forward, NAMES.conv3x3_input_gradient,
                                            NAMES.conv3x3_weight_gradient)


def native_or_skip():
    if native.targets() is None:
        pytest.skip("the native kernels could not be compiled here (no C++ compiler?); XLA computes their part")


def normal(shape, seed):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


# (B, H, W, C, O): weight-gradient tiles of 8 and 16 channels and their remainders (3, 17), output widths that are
# not a multiple of 16 (plain loops), 1-pixel and 1-row maps where only some taps see the image; forward passes and
# input gradients (ours where the result has a multiple of 16 channels, see conv._forward_wins) in tiles of 6 pixels
# x 64 channels, 14 x 32 and 14 x 16, several blocks of channels, and the shorter tiles that end a row.
@pytest.mark.parametrize("shape", [(2, 9, 13, 3, 16), (1, 6, 5, 17, 64), (2, 7, 11, 32, 32), (3, 5, 4, 5, 8),
                                   (2, 1, 1, 16, 48), (1, 1, 9, 24, 16), (2, 8, 1, 9, 20), (2, 7, 33, 16, 16),
                                   (1, 3, 2, 16, 16), (2, 1, 1, 16, 16), (1, 4, 16, 1, 16), (2, 4, 20, 64, 32),
                                   (1, 5, 17, 48, 128), (1, 3, 10, 256, 64)])
def test_values_and_gradients_equal_xla_autodiff(shape):
    native_or_skip()
    b, h, w, c, o = shape
    x, kernel, dy = normal((b, h, w, c), 0), normal((3, 3, c, o), 1), normal((b, h, w, o), 2)
    y, ours = jax.vjp(jax.jit(conv.conv3x3), x, kernel)
    y_ref, xla = jax.vjp(conv._xla_conv, x, kernel)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(y_ref).max()))
    for mine, expected in zip(ours(dy), xla(dy)):
        np.testing.assert_allclose(mine, expected, rtol=1e-4, atol=1e-4 * float(jnp.abs(expected).max()))


def gradient_program(conv_fn, x, kernel):
    return str(jax.make_jaxpr(jax.grad(lambda x, k: jnp.sum(conv_fn(x, k) ** 2), argnums=(0, 1)))(x, kernel))


def test_only_plain_float32_3x3_convolutions_take_the_kernels():
    native_or_skip()

    def program(size=3, dtype=jnp.float32, strides=(1, 1), padding="SAME", channels=(16, 16)):
        def layer(x, kernel):
            return conv.conv_general_dilated(x.astype(dtype), kernel.astype(dtype), strides, padding,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return gradient_program(layer, normal((2, 8, 8, channels[0]), 0), normal((size, size, *channels), 1))

    assert all(target in program() for target in (FORWARD, INPUT_GRADIENT, WEIGHT_GRADIENT))
    # XLA's forward where the result has 16 channels from more (about as fast), or a number that is not a multiple
    # of 16 (the input gradient of a layer from 4 channels)
    wide_to_narrow, from_four = program(channels=(32, 16)), program(channels=(4, 16))
    assert FORWARD not in wide_to_narrow and INPUT_GRADIENT in wide_to_narrow and WEIGHT_GRADIENT in wide_to_narrow
    assert FORWARD in from_four and INPUT_GRADIENT not in from_four and WEIGHT_GRADIENT in from_four
    for other in (dict(size=5), dict(size=1), dict(strides=(2, 2)), dict(padding="VALID"),
                  dict(dtype=jnp.bfloat16)):
        assert not any(target in program(**other) for target in (FORWARD, INPUT_GRADIENT, WEIGHT_GRADIENT)), other


def test_the_unet_convolutions_use_it():
    native_or_skip()
    from streetseg_jax.models.unet import UNet

    model = UNet(3, base_width=16, depth=1, rngs=nnx.Rngs(0))
    model.eval()  # running BatchNorm statistics: the same layers, no state to update under the trace

    def loss(model, x):
        return jnp.mean(model(x) ** 2)

    jaxpr = str(jax.make_jaxpr(nnx.grad(loss))(model, normal((2, 16, 16, 3), 0)))
    assert jaxpr.count(WEIGHT_GRADIENT) == 6  # all of them: two per block, down, middle and up
    # forward: all but 32 -> 16 up (3 -> 16, 16 -> 16 down, 16 -> 32, 32 -> 32 middle, 16 -> 16 up); input gradient:
    # all whose input has a multiple of 16 channels, but 16 -> 32 (16 -> 16 down, 32 -> 32, 32 -> 16, 16 -> 16 up)
    assert jaxpr.count(FORWARD) == 5 and jaxpr.count(INPUT_GRADIENT) == 4


def test_switched_off_or_without_a_compiler_xla_computes_the_gradient(monkeypatch, tmp_path):
    x, kernel, dy = normal((2, 6, 6, 4), 0), normal((3, 3, 4, 16), 1), normal((2, 6, 6, 16), 2)
    expected = jax.vjp(conv._xla_conv, x, kernel)[1](dy)
    try:
        monkeypatch.setenv("STREETSEG_NATIVE", "0")
        native.targets.cache_clear()
        assert native.targets() is None
        program = gradient_program(conv.conv3x3, x, kernel)
        assert not any(target in program for target in NAMES)

        monkeypatch.delenv("STREETSEG_NATIVE")
        monkeypatch.setenv("STREETSEG_NATIVE_CACHE", str(tmp_path))   # nothing compiled there
        monkeypatch.setenv("PATH", "")
        monkeypatch.delenv("CXX", raising=False)
        native.targets.cache_clear()
        with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
            assert native.targets() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per process, not once per layer
            y, vjp = jax.vjp(conv.conv3x3, x, kernel)
        np.testing.assert_array_equal(y, conv._xla_conv(x, kernel))
        for mine, reference in zip(vjp(dy), expected):
            np.testing.assert_array_equal(mine, reference)
        assert list(tmp_path.iterdir()) == []
    finally:
        native.targets.cache_clear()


def test_a_failed_compile_leaves_nothing_half_written(monkeypatch, tmp_path):
    monkeypatch.setenv("STREETSEG_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # found on PATH, fails
    with pytest.raises(RuntimeError, match="failed"):
        native.build()
    assert list(tmp_path.iterdir()) == []


def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    native_or_skip()
    monkeypatch.setenv("STREETSEG_NATIVE_CACHE", str(tmp_path))
    path = native.build()
    built = path.stat().st_mtime_ns
    assert native.build() == path and path.stat().st_mtime_ns == built
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_cache_that_cannot_be_written_builds_in_the_temp_folder(monkeypatch, tmp_path):
    """A read-only home turned the kernels off (training 1.7x slower, its losses not bit-equal to a run's)."""
    import tempfile

    native_or_skip()
    (tmp_path / "home_file").write_text("")
    monkeypatch.setenv("STREETSEG_NATIVE_CACHE", str(tmp_path / "home_file" / "cache"))   # cannot be made
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = native.build()
    assert path.parent.parent == tmp_path / "tmp" and path.parent.name.startswith("streetseg_jax-")
    assert native.build() == path
    path.parent.chmod(0o777)        # a folder others may write: a library put there would be loaded
    with pytest.raises(OSError, match="belongs to another user or others may write it"):
        native.build()


SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from streetseg_jax import sharding
from streetseg_jax import native
from streetseg_jax.models import conv
targets = native.targets()
conv_targets = [t for t in targets if 'conv3x3' in t]
mesh = sharding.make_mesh()
x = jax.random.normal(jax.random.key(0), (16, 12, 10, 8))
kernels = [jax.random.normal(jax.random.key(1), (3, 3, 8, 16)), jax.random.normal(jax.random.key(2), (3, 3, 16, 16))]
weights = jax.random.normal(jax.random.key(3), (16, 12, 10, 16))

def gradient(x, kernels, conv_fn=conv.conv3x3):
    def loss(kernels):
        return jnp.sum(conv_fn(conv_fn(x, kernels[0]), kernels[1]) * weights)
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return jax.grad(loss)(kernels)

step = jax.jit(gradient, in_shardings=(sharding.batch_sharding(mesh), sharding.replicated(mesh)))
program = step.lower(x, kernels).compile().as_text()
assert all(target in program for target in conv_targets), program
assert "all-gather" not in program and "all-reduce" in program, program
ours = step(x, kernels)
reference = jax.jit(lambda x, k: gradient(x, k, conv._xla_conv))(x, kernels)
for mine, expected in zip(ours, reference):
    np.testing.assert_allclose(mine, expected, rtol=1e-4, atol=1e-3)
print("PER-DEVICE-OK")
"""


def test_under_data_parallelism_each_device_computes_its_share_and_they_are_summed():
    native_or_skip()
    proc = run_on_cpu_devices(SHARDED)
    assert "PER-DEVICE-OK" in proc.stdout, proc.stdout + proc.stderr


def test_one_by_one_convolutions_are_a_matmul_with_the_same_values_and_gradients():
    x, kernel, dy = normal((2, 5, 7, 16), 0), normal((1, 1, 16, 8), 1), normal((2, 5, 7, 8), 2)

    def ours(x, kernel):
        return conv.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    assert "conv_general_dilated" not in str(jax.make_jaxpr(ours)(x, kernel))
    y, vjp = jax.vjp(ours, x, kernel)
    y_ref, vjp_ref = jax.vjp(conv._xla_conv, x, kernel)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for mine, expected in zip(vjp(dy), vjp_ref(dy)):
        np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-4)


def test_a_compile_that_hangs_is_a_failure_too(monkeypatch, tmp_path):
    def too_slow(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setenv("STREETSEG_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_compiler_version", lambda compiler: "some compiler")
    monkeypatch.setattr(native.subprocess, "run", too_slow)
    with pytest.raises(RuntimeError, match="took over 300 s"):
        native.build()
    assert list(tmp_path.iterdir()) == []
