"""Autoencoder structure, k-sparse selection and parameter counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aejax import variants
from aejax.models import autoencoder, sparsity


def test_top_k_keeps_exactly_k_even_with_ties():
  values = jnp.array([[0.5, 0.9, 0.5, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]])
  mask = sparsity.top_k_mask(values, 2)
  np.testing.assert_array_equal(mask.sum(axis=-1), [2, 2])
  # Among equal values the lower index wins.
  np.testing.assert_array_equal(mask[0], [True, True, False, False, False])
  np.testing.assert_array_equal(mask[1], [True, True, False, False, False])


def test_top_k_with_traced_k_matches_lax_top_k():
  values = jax.random.normal(jax.random.key(0), (8, 30))
  for k in (1, 7, 30):
    mask = jax.jit(sparsity.top_k_mask)(values, jnp.int32(k))
    _, top = jax.lax.top_k(values, k)
    expected = np.zeros(values.shape, bool)
    np.put_along_axis(expected, np.asarray(top), True, axis=-1)
    np.testing.assert_array_equal(mask, expected)


def test_top_k_matches_a_stable_sort_on_ties_signs_and_extremes():
  # Few distinct values, so most rows tie; both zeros, negatives, the
  # extremes of float32 and infinities (not subnormals, which XLA on CPU
  # flushes to zero), against numpy's stable sort.
  rng = np.random.default_rng(0)
  pool = np.array(
    [-np.inf, -3.4e38, -2.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 2.0, np.inf],
    np.float32,
  )
  values = pool[rng.integers(0, len(pool), (64, 23))]
  select = jax.jit(sparsity.top_k_mask)
  for k in (0, 1, 5, 22, 23, 40):
    order = np.argsort(-values, axis=-1, kind="stable")
    expected = np.zeros(values.shape, bool)
    np.put_along_axis(expected, order[:, :k], True, axis=-1)
    np.testing.assert_array_equal(select(values, jnp.int32(k)), expected)


def test_top_k_code_passes_gradient_only_through_kept_units():
  values = jnp.array([[3.0, -1.0, 2.0, 0.5]])
  np.testing.assert_array_equal(
    sparsity.top_k_mask(values, 2), [[True, False, True, False]]
  )
  model = autoencoder.Autoencoder(
    6, (4,), activation="identity", rngs=nnx.Rngs(0)
  )
  inputs = jax.random.normal(jax.random.key(3), (1, 6))
  grads = jax.grad(lambda x: model.encode(x, k=2).sum())(inputs)
  kernel = np.asarray(model.encoder[0].kernel[...])
  pre = np.asarray(inputs) @ kernel + np.asarray(model.encoder[0].bias[...])
  kept = np.argsort(-pre[0])[:2]
  # d/dx of sum_j kept (x W + b)_j is the sum of the kept units' columns.
  np.testing.assert_allclose(grads[0], kernel[:, kept].sum(axis=1), rtol=1e-6)


def test_ksparse_code_has_exactly_k_nonzero_units():
  model = autoencoder.Autoencoder(
    40, (16,), activation="identity", rngs=nnx.Rngs(0)
  )
  inputs = jax.random.uniform(jax.random.key(1), (5, 40)) * 5
  code = model.encode(inputs, k=3)
  np.testing.assert_array_equal((code != 0).sum(axis=-1), [3] * 5)
  full = model.encode(inputs)
  kept = np.asarray(code != 0)
  np.testing.assert_allclose(np.asarray(code)[kept], np.asarray(full)[kept])


def test_layers_follow_hidden_sizes():
  model = autoencoder.Autoencoder(30, (8, 4, 8), rngs=nnx.Rngs(0))
  shapes = [layer.kernel[...].shape for layer in model.encoder]
  assert shapes == [(30, 8), (8, 4)]
  shapes = [layer.kernel[...].shape for layer in model.decoder]
  assert shapes == [(4, 8), (8, 30)]
  reconstruction, code = model(jnp.ones((2, 30)))
  assert reconstruction.shape == (2, 30) and code.shape == (2, 4)


def test_tied_weights_share_the_encoder_kernels():
  model = autoencoder.Autoencoder(30, (8,), tied=True, rngs=nnx.Rngs(0))
  _, params = nnx.split(model, nnx.Param)
  assert autoencoder.count_parameters(params) == 30 * 8 + 8 + 30
  inputs = jax.random.normal(jax.random.key(2), (3, 30))
  code = model.encode(inputs)
  kernel = model.encoder[0].kernel[...]
  bias = model.decoder_biases[0][...]
  np.testing.assert_allclose(
    model.decode(code), code @ kernel.T + bias[None, :], rtol=1e-6
  )
  with pytest.raises(ValueError, match="mirrored hidden sizes"):
    autoencoder.Autoencoder(30, (8, 4), tied=True, rngs=nnx.Rngs(0))


def test_torch_init_bounds():
  model = autoencoder.Autoencoder(400, (20,), init="torch", rngs=nnx.Rngs(0))
  kernel = np.asarray(model.encoder[0].kernel[...])
  bias = np.asarray(model.encoder[0].bias[...])
  bound = 1 / np.sqrt(400)
  assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
  assert np.abs(kernel).max() > 0.9 * bound  # uniform, not normal
  assert np.abs(bias).max() > 0.5 * bound  # biases are not zero


# Parameters of each variant on ML-100k (1682 movies per user row).
PARAMETER_COUNTS = {
  "plain": 1682 * 500 + 500 + 500 * 1682 + 1682,
  "ksparse": 1682 * 500 + 500 + 500 * 1682 + 1682,
  "denoising": 1682 * 500 + 500 + 500 * 1682 + 1682,
  "stacked": (1682 * 20 + 20)
  + (20 * 10 + 10)
  + (10 * 20 + 20)
  + (20 * 1682 + 1682),
  "stacked_pretrained": (1682 * 20 + 20)
  + (20 * 10 + 10)
  + (10 * 20 + 20)
  + (20 * 1682 + 1682),
  "sparse": 1682 * 2000 + 2000 + 2000 * 1682 + 1682,
  "deep": (1682 * 250 + 250)
  + (250 * 50 + 50)
  + (50 * 250 + 250)
  + (250 * 1682 + 1682),
}


@pytest.mark.parametrize("variant", sorted(PARAMETER_COUNTS))
def test_parameter_counts(variant):
  config = variants.get_config(variant)
  model = nnx.eval_shape(
    lambda: autoencoder.Autoencoder(
      1682,
      config.hidden_sizes,
      tied=config.tied,
      kernel_dims=config.kernel_dims,
      rngs=nnx.Rngs(0),
    )
  )
  _, params = nnx.split(model, nnx.Param)
  assert autoencoder.count_parameters(params) == PARAMETER_COUNTS[variant]
