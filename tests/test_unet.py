"""The U-Net: shapes for any input size, the peers' parameter count, upsample modes, dtypes, train/eval behaviour."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from streetseg_jax.models.unet import (UPSAMPLE_MODES, DepthToSpaceUp, TransposeUp, UNet, build_model,
                                       depth_to_space, param_count, preprocess, subpixel_matmul)


def tiny(upsample="transpose", depth=2, dtype=jnp.float32, dropout=0.0, seed=0):
    return UNet(3, base_width=4, depth=depth, upsample=upsample, dropout=dropout, dtype=dtype, rngs=nnx.Rngs(seed))


def images(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def batch_stats(model):
    return jax.tree.leaves(nnx.state(model, nnx.BatchStat))


# --- the peers' architecture ---------------------------------------------------------------------------------------
def torch_peer_shapes(in_channels=3, base=16, depth=4, classes=8):
    """Parameter shapes of shared/peers/unet_torch.py, written in flax layout (conv kernels HWIO)."""
    widths = [base * 2**i for i in range(depth + 1)]

    def block(i, o):  # conv(no bias), BN(weight, bias), conv(no bias), BN
        return [(3, 3, i, o), (o,), (o,), (3, 3, o, o), (o,), (o,)]
    shapes = []
    for i, o in zip([in_channels] + widths[:-2], widths[:-1]):
        shapes += block(i, o)
    shapes += block(widths[-2], widths[-1])
    for level in reversed(range(depth)):
        shapes += [(2, 2, widths[level + 1], widths[level]), (widths[level],)]  # ConvTranspose2d weight, bias
        shapes += block(2 * widths[level], widths[level])
    return shapes + [(1, 1, widths[0], classes), (classes,)]


def test_default_architecture_matches_the_torch_peer_layer_for_layer():
    model = nnx.eval_shape(lambda: UNet(8, rngs=nnx.Rngs(0)))
    shapes = [leaf.shape for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]
    expected = torch_peer_shapes()
    assert sorted(shapes) == sorted(expected)
    # block(i, o) = 9*o*(i + o) + 4*o; ConvTranspose2d(i, o, 2, 2) = 4*i*o + o; head 16*8 + 8.
    assert param_count(model) == sum(int(np.prod(s)) for s in expected) == 1_942_696


def test_batch_norm_follows_torch_defaults():
    model = tiny()
    norm = model.down[0].norm1
    assert (norm.momentum, norm.epsilon) == (0.9, 1e-5)  # torch: momentum 0.1 on the new batch, eps 1e-5


# --- shapes, modes, dtypes -----------------------------------------------------------------------------------------
# depth 2 pads to multiples of 4: 18x26 and 5x7 need padding, 16x24 does not.
@pytest.mark.parametrize("shape", [(2, 18, 26, 3), (1, 5, 7, 3), (2, 16, 24, 3)])
def test_logits_match_the_input_size_for_any_size(shape):
    logits = tiny()(images(shape))
    assert logits.shape == shape[:3] + (3,)
    assert logits.dtype == jnp.float32


@pytest.mark.parametrize("upsample", UPSAMPLE_MODES)
def test_each_upsample_mode_runs_and_has_finite_gradients(upsample):
    model = tiny(upsample)
    x = images((2, 18, 26, 3))
    labels = jax.random.randint(jax.random.key(1), (2, 18, 26), 0, 3)

    def loss_fn(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), labels).mean()
    loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(model)  # jit: one compile instead of one per op
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(float(loss))
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


def test_bfloat16_compute_keeps_float32_params_and_returns_float32_logits():
    model = tiny(dtype=jnp.bfloat16)
    logits = model(images((2, 18, 26, 3)).astype(jnp.bfloat16))
    assert logits.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
    assert {leaf.dtype for leaf in batch_stats(model)} == {jnp.dtype(jnp.float32)}
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_transpose_up_is_a_stride_two_transposed_conv_in_torch_convention():
    up = TransposeUp(3, 5, dtype=jnp.float32, rngs=nnx.Rngs(0))
    up.bias[...] = jnp.arange(5.0)
    x = images((2, 3, 4, 3))
    y = up(x)
    kernel = np.asarray(up.kernel[...])
    # torch: out[2h + i, 2w + j] = x[h, w] @ weight[:, :, i, j] + bias
    np.testing.assert_allclose(y[1, 2 * 2 + 1, 2 * 3 + 0], np.asarray(x[1, 2, 3]) @ kernel[1, 0] + np.arange(5.0),
                               rtol=1e-5, atol=1e-5)
    # flax's ConvTranspose computes the same layer with the kernel's spatial axes flipped.
    reference = nnx.ConvTranspose(3, 5, (2, 2), strides=(2, 2), padding="VALID", rngs=nnx.Rngs(1))
    reference.kernel[...] = up.kernel[...][::-1, ::-1]
    reference.bias[...] = up.bias[...]
    np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-5)


def test_transpose_up_gradients_equal_autodiff_through_conv_transpose():
    # subpixel_matmul writes its own backward pass; the reference is autodiff through lax.conv_transpose.
    x, dy = images((2, 3, 4, 6)), images((2, 6, 8, 5), seed=1)
    kernel = jax.random.normal(jax.random.key(2), (2, 2, 6, 5))

    def reference(x, kernel):
        return jax.lax.conv_transpose(x, kernel[::-1, ::-1], (2, 2), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))

    ours = jax.vjp(subpixel_matmul, x, kernel)
    theirs = jax.vjp(reference, x, kernel)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-5)
    for mine, expected in zip(ours[1](dy), theirs[1](dy)):
        np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-4)


def test_depth_to_space_places_channel_groups_on_sub_pixels():
    x = jnp.arange(8.0).reshape(1, 1, 1, 8)  # 4 groups of 2 channels
    y = depth_to_space(x)
    assert y.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(y[0, :, :, 0], [[0, 2], [4, 6]])


def test_depth_to_space_upsampler_starts_without_checkerboard():
    model = tiny("depth_to_space")
    kernel = model.up[0].conv.kernel[...]
    groups = kernel.reshape(*kernel.shape[:-1], 4, -1)
    np.testing.assert_array_equal(groups, jnp.broadcast_to(groups[..., :1, :], groups.shape))


# --- train / eval --------------------------------------------------------------------------------------------------
def test_batch_norm_statistics_change_in_train_mode_only():
    model = tiny()
    x = images((2, 18, 26, 3))
    before = batch_stats(model)
    model.eval()
    model(x)
    assert all(np.array_equal(a, b) for a, b in zip(before, batch_stats(model)))
    model.train()
    model(x)
    assert not all(np.array_equal(a, b) for a, b in zip(before, batch_stats(model)))


def test_eval_output_does_not_depend_on_the_rest_of_the_batch():
    model = tiny()
    model(images((2, 18, 26, 3), seed=3))  # move the running statistics away from their initial values
    model.eval()
    a, b, c = (images((1, 18, 26, 3), seed=s) for s in (4, 5, 6))
    alone = model(a)
    with_b = model(jnp.concatenate([a, b]))[:1]
    with_c = model(jnp.concatenate([c, a, c]))[1:2]
    np.testing.assert_allclose(alone, with_b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone, with_c, rtol=1e-5, atol=1e-5)


def test_dropout_is_random_in_train_mode_and_off_in_eval_mode():
    model = tiny(dropout=0.5)
    x = images((2, 18, 26, 3))
    model.eval()
    np.testing.assert_array_equal(model(x), model(x))
    model.train()
    assert not np.array_equal(model(x), model(x))


def test_jitted_forward_and_grad_through_split_and_merge():
    model = tiny(dropout=0.1)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = images((2, 18, 26, 3))
    labels = jax.random.randint(jax.random.key(2), (2, 18, 26), 0, 3)

    @jax.jit
    def loss_and_grad(params, rest):
        def loss_fn(p):
            # copy=True: Variables made at this trace level, so BatchNorm may update them inside the grad.
            m = nnx.merge(graphdef, p, rest, copy=True)
            loss = optax.softmax_cross_entropy_with_integer_labels(m(x), labels).mean()
            return loss, nnx.state(m, nnx.Not(nnx.Param))
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, new_rest), grads = loss_and_grad(params, rest)
    assert np.isfinite(float(loss))
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    new_stats = jax.tree.leaves(nnx.state(nnx.merge(graphdef, params, new_rest), nnx.BatchStat))
    assert not all(np.array_equal(a, b) for a, b in zip(batch_stats(model), new_stats))


# --- helpers -------------------------------------------------------------------------------------------------------
def test_preprocess_maps_uint8_to_minus_one_one_in_the_compute_dtype():
    pixels = np.array([0, 255, 128], np.uint8).reshape(1, 1, 3, 1).repeat(3, axis=-1)
    out = preprocess(pixels, dtype=jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out[0, 0, :, 0], np.float32), [-1.0, 1.0, 0.0039], atol=1e-2)


def test_build_model_reads_the_config_mapping():
    config = {"base_width": 4, "depth": 2, "upsample": "depth_to_space", "dropout": 0.1, "dtype": "bfloat16"}
    model = build_model(config, num_classes=3, seed=0)
    assert (model.depth, model.dtype) == (2, jnp.bfloat16)
    assert isinstance(model.dropout, nnx.Dropout) and isinstance(model.up[0], DepthToSpaceUp)
    assert model(jnp.zeros((2, 18, 26, 3), jnp.bfloat16)).shape == (2, 18, 26, 3)
    with pytest.raises(ValueError, match="dtype"):
        build_model({**config, "dtype": "float16"}, num_classes=3, seed=0)


@pytest.mark.parametrize("bad", [{"upsample": "bicubic"}, {"depth": 0}, {"dropout": 1.0}, {"pad_mode": "wrap"}])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        UNet(3, rngs=nnx.Rngs(0), **bad)
