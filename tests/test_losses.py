"""Losses against references written from their definitions, on random inputs with ignore pixels."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from streetseg_jax import losses

IGNORE = 255


def random_case(seed, batch=2, height=5, width=7, classes=4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (batch, height, width, classes)).astype(np.float32)
    labels = rng.integers(0, classes, (batch, height, width))
    labels[rng.random(labels.shape) < 0.2] = IGNORE
    return logits, labels


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def lovasz_reference(probs, labels, classes):
    """One image: Berman et al.'s Lovasz extension of Delta_J(M) = |M| / |{y = c} u M|, from the set definition."""
    keep = labels != IGNORE
    probs, labels = probs[keep], labels[keep]
    per_class = []
    for c in range(classes):
        fg = labels == c
        if not fg.any():
            continue
        errors = np.abs(fg - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        delta = lambda m: len(m) / len(set(np.flatnonzero(fg)) | set(m)) if len(m) else 0.0  # noqa: E731
        steps = [delta(order[:i + 1]) - delta(order[:i]) for i in range(len(order))]
        per_class.append(float(np.dot(errors[order], steps)))
    return np.mean(per_class)


@pytest.mark.parametrize("seed", range(4))
def test_lovasz_matches_the_definition(seed):
    logits, labels = random_case(seed)
    probs = softmax(logits)
    expected = np.mean([lovasz_reference(probs[i].reshape(-1, 4), labels[i].ravel(), 4) for i in range(len(labels))])
    got = float(losses.lovasz_softmax_loss(jnp.asarray(logits), jnp.asarray(labels), IGNORE))
    assert got == pytest.approx(expected, rel=1e-5)


def test_lovasz_is_zero_for_a_perfect_prediction_and_has_gradients():
    _, labels = random_case(7)
    perfect = 50.0 * jax.nn.one_hot(np.where(labels == IGNORE, 0, labels), 4)
    assert float(losses.lovasz_softmax_loss(perfect, jnp.asarray(labels), IGNORE)) == pytest.approx(0.0, abs=1e-6)
    logits, labels = random_case(8)
    grad = jax.grad(losses.lovasz_softmax_loss)(jnp.asarray(logits), jnp.asarray(labels), IGNORE)
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0
    ignored = np.broadcast_to((labels == IGNORE)[..., None], grad.shape)
    assert np.all(np.asarray(grad)[ignored] == 0)


def test_descending_order_is_argsort_up_to_the_quantisation_step():
    rng = np.random.default_rng(0)
    errors = rng.random((3, 8960)).astype(np.float32)      # an 80x112 crop: 17 bits of error in the key
    errors[:, :50] = 0.0                                     # ties (ignored pixels) keep index order
    order = np.asarray(losses.descending_order(jnp.asarray(errors)))
    assert all(sorted(row) == list(range(8960)) for row in order)           # a permutation of every row
    ranked = np.take_along_axis(errors, order, axis=1)
    assert np.all(np.diff(ranked, axis=1) <= 1.0 / (2**17 - 1))             # decreasing, but for one step
    assert np.array_equal(order[:, -50:], np.tile(np.arange(50), (3, 1)))
    big = np.concatenate([np.zeros((1, 2**20 + 1), np.float32), [[0.0]]], axis=1)
    big[0, 7] = 0.5
    assert np.asarray(losses.descending_order(jnp.asarray(big)))[0, :2].tolist() == [7, 0]   # exact path


def test_lovasz_gradient_matches_the_exactly_sorted_loss(monkeypatch):
    logits, labels = random_case(3, height=20, width=30)
    args = (jnp.asarray(logits), jnp.asarray(labels), IGNORE)
    value, grad = jax.value_and_grad(losses.lovasz_softmax_loss)(*args)
    monkeypatch.setattr(losses, "descending_order", lambda e: jnp.argsort(-e, axis=-1, stable=True))
    exact_value, exact_grad = jax.value_and_grad(losses.lovasz_softmax_loss)(*args)
    assert float(value) == pytest.approx(float(exact_value), rel=1e-6)
    np.testing.assert_allclose(grad, exact_grad, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_dice_matches_the_definition(seed):
    logits, labels = random_case(seed)
    probs, keep = softmax(logits), labels != IGNORE
    scores = []
    for c in range(4):
        p, y = probs[..., c][keep], (labels[keep] == c)
        scores.append((2 * np.sum(p * y) + 1) / (p.sum() + y.sum() + 1))
    got = float(losses.dice_loss(jnp.asarray(logits), jnp.asarray(labels), IGNORE))
    assert got == pytest.approx(1 - np.mean(scores), rel=1e-5)


def test_loss_fn_adds_the_extra_term_to_weighted_cross_entropy():
    logits, labels = jnp.asarray(random_case(3)[0]), jnp.asarray(random_case(3)[1])
    weights = jnp.array([1.0, 2.0, 0.5, 1.0])
    total, weight = losses.cross_entropy_sums(logits, labels, weights, IGNORE)
    ce = float(total / weight)
    assert float(losses.loss_fn("cross_entropy", weights, IGNORE)(logits, labels)) == pytest.approx(ce)
    with_dice = losses.loss_fn("cross_entropy+dice", weights, IGNORE)(logits, labels)
    assert float(with_dice) == pytest.approx(ce + float(losses.dice_loss(logits, labels, IGNORE)), rel=1e-6)
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.loss_fn("focal", weights, IGNORE)
