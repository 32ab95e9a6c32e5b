"""Locally kernelised layers: numerics against numpy, and the dense default."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aejax import train, variants
from aejax.models import autoencoder


def numpy_kernel(u, v):
  out = np.zeros((len(u), len(v)))
  for i in range(len(u)):
    for j in range(len(v)):
      out[i, j] = max(0.0, 1.0 - np.sum((u[i] - v[j]) ** 2))
  return out


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def spread(model, seed=0):
  """Moves every embedding to random points so that kernels vary."""
  rng = np.random.default_rng(seed)
  layers = [*model.encoder, *model.decoder]
  for layer in layers:
    for embedding in (layer.in_embedding, layer.out_embedding):
      shape = embedding[...].shape
      embedding[...] = jnp.asarray(rng.normal(0, 0.5, shape), jnp.float32)
  return layers


def test_local_kernel_matches_numpy_and_cuts_far_pairs():
  rng = np.random.default_rng(0)
  u = rng.normal(0, 0.6, (7, 3)).astype(np.float32)
  v = rng.normal(0, 0.6, (4, 3)).astype(np.float32)
  u[0] = [5.0, 0.0, 0.0]  # a unit far from every output: all cut
  values = autoencoder.local_kernel(jnp.asarray(u), jnp.asarray(v))
  expected = numpy_kernel(u, v)
  np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(values[0], 0.0)
  assert 0 < (expected == 0).sum() < expected.size - 4


def test_kernelised_autoencoder_matches_numpy():
  model = autoencoder.Autoencoder(
    9, (6, 5), kernel_dims=2, rngs=nnx.Rngs(params=1)
  )
  layers = spread(model)
  inputs = np.random.default_rng(2).uniform(0, 5, (3, 9)).astype(np.float32)
  hidden = inputs.astype(np.float64)
  penalty = 0.0
  for index, layer in enumerate(layers):
    kernel = numpy_kernel(
      np.asarray(layer.in_embedding[...]), np.asarray(layer.out_embedding[...])
    )
    penalty += 0.5 * np.sum(kernel**2)
    weight = np.asarray(layer.kernel[...]) * kernel
    pre = hidden @ weight + np.asarray(layer.bias[...])
    hidden = pre if index == len(layers) - 1 else sigmoid(pre)
  reconstruction, code = model(jnp.asarray(inputs))
  assert code.shape == (3, 6)  # the code is the middle (first) layer
  np.testing.assert_allclose(reconstruction, hidden, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(model.kernel_penalty(), penalty, rtol=1e-5)


def test_kernel_dims_zero_is_the_dense_model():
  config = variants.get_config("autorec", kernel_dims=0)
  key = jax.random.key(3)
  model = train.build_model(config, 11, key)
  dense = autoencoder.Autoencoder(
    11, config.hidden_sizes, rngs=nnx.Rngs(params=key)
  )
  assert all(type(layer) is nnx.Linear for layer in model.encoder)
  assert all(type(layer) is nnx.Linear for layer in model.decoder)
  _, params = nnx.split(model, nnx.Param)
  _, dense_params = nnx.split(dense, nnx.Param)
  assert jax.tree.structure(params) == jax.tree.structure(dense_params)
  for got, want in zip(
    jax.tree.leaves(params), jax.tree.leaves(dense_params), strict=True
  ):
    np.testing.assert_array_equal(got, want)
  inputs = jnp.arange(22, dtype=jnp.float32).reshape(2, 11) % 5
  np.testing.assert_array_equal(model(inputs)[0], dense(inputs)[0])
  assert float(model.kernel_penalty()) == 0.0


def test_kernelised_model_adds_only_embeddings():
  dense = autoencoder.Autoencoder(11, (4,), rngs=nnx.Rngs(0))
  kernelised = autoencoder.Autoencoder(
    11, (4,), kernel_dims=3, rngs=nnx.Rngs(0)
  )
  count = lambda m: autoencoder.count_parameters(nnx.split(m, nnx.Param)[1])
  assert count(kernelised) == count(dense) + 3 * (11 + 4) + 3 * (4 + 11)
  # Embeddings start near the origin, where the kernel is close to 1.
  np.testing.assert_allclose(
    kernelised.encoder[0].kernel_values(), 1.0, atol=1e-4
  )


def test_loss_adds_the_kernel_penalty():
  config = variants.get_config(
    "autorec",
    hidden_sizes=(4,),
    kernel_dims=2,
    kernel_weight=0.5,
    l2_weight=3.0,
  )
  members = variants.members(config)
  program = train.make_program(config, 6, members, n_rows=2)
  model = train.build_model(config, 6, jax.random.key(0))
  spread(model, seed=4)
  _, params = nnx.split(model, nnx.Param)
  hyper = jax.tree.map(lambda x: x[0], train.member_hyper(program, members))
  values = jnp.asarray([[5.0, 0, 3, 0, 1, 0], [0, 4, 0, 2, 0, 0]])
  mask = values > 0
  loss, reconstruction = train.loss_fn(
    params, program, values, mask, jax.random.key(1), hyper
  )
  squared = np.sum(
    np.where(mask, (np.asarray(reconstruction) - values) ** 2, 0)
  )
  weights = [model.encoder[0].kernel[...], model.decoder[0].kernel[...]]
  l2 = 0.5 * sum(np.sum(np.asarray(w) ** 2) for w in weights)
  kernels = [
    numpy_kernel(
      np.asarray(layer.in_embedding[...]), np.asarray(layer.out_embedding[...])
    )
    for layer in (model.encoder[0], model.decoder[0])
  ]
  penalty = 0.5 * sum(np.sum(k**2) for k in kernels)
  np.testing.assert_allclose(
    loss, squared + 3.0 * l2 + 0.5 * penalty, rtol=1e-5
  )
  objective = lambda p: train.loss_fn(
    p, program, values, mask, jax.random.key(1), hyper
  )[0]
  grads = jax.grad(objective)(params)
  embedding_grad = grads["encoder"][0]["in_embedding"][...]
  assert np.abs(np.asarray(embedding_grad)).max() > 0


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"kernel_dims": -1}, "kernel_dims must be a non-negative"),
    ({"kernel_weight": 0.1}, "kernel_weight=0.1 needs kernel_dims"),
    ({"kernel_dims": 2, "kernel_weight": -1.0}, "kernel_weight must be"),
    (
      {"kernel_dims": 2, "tied": True, "hidden_sizes": (4,)},
      "needs untied weights",
    ),
    (
      {"kernel_dims": 2, "hidden_sizes": (4,), "pretrain_epochs": 1},
      "cannot be pretrained layer-wise",
    ),
  ],
)
def test_bad_kernel_settings_are_named(overrides, message):
  with pytest.raises(ValueError, match=message):
    variants.get_config("autorec", **overrides)
