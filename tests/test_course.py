"""The course variant against PyTorch's numbers, and its building blocks.

``data/torch_parity.json`` was written by ``benchmarks/torch_parity_fixture.py``
from PyTorch itself; these tests replay the same epoch without torch.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import batching, evaluation, metrics, optim, train, variants
from aejax.data.ratings import Ratings, Rows
from aejax.models import autoencoder

FIXTURE = pathlib.Path(__file__).parent / "data" / "torch_parity.json"


def rows_of(dense: np.ndarray) -> Rows:
  users, items = np.nonzero(dense)
  ratings = Ratings(
    users.astype(np.int32),
    items.astype(np.int32),
    dense[users, items].astype(np.float32),
    *dense.shape,
  )
  return Rows.from_ratings(ratings, "user")


def with_torch_layers(params, layers, n_encoder: int):
  """``params`` (one member) holding PyTorch's ``(weight, bias)`` layers."""

  def pick(path, leaf):
    part, index, name = (getattr(k, "key", None) for k in path[:3])
    layer = layers[index + (n_encoder if part == "decoder" else 0)]
    value = np.asarray(layer["weight"] if name == "kernel" else layer["bias"])
    value = value.T if name == "kernel" else value
    assert value.shape == leaf.shape[1:], (path, value.shape)
    return jnp.asarray(value[None], jnp.float32)

  return jax.tree_util.tree_map_with_path(pick, params)


@pytest.mark.parametrize("run", ["cleared", "accumulated"])
def test_course_epoch_matches_pytorch(run):
  fixture = json.loads(FIXTURE.read_text())
  expected = fixture["runs"][run]
  train_dense = np.asarray(fixture["train"], np.float32)
  test_dense = np.asarray(fixture["test"], np.float32)
  hidden_sizes = tuple(fixture["hidden_sizes"])
  config = variants.get_config(
    "course",
    hidden_sizes=hidden_sizes,
    learning_rate=fixture["learning_rate"],
    weight_decay=fixture["weight_decay"],
    accumulate_gradients=expected["accumulate"],
    epochs=1,
  )
  members = variants.members(config)
  n_movies = train_dense.shape[1]
  program = train.make_program(config, n_movies, members)
  states, hyper = train.init_members(program, members)
  n_encoder = autoencoder.code_index(hidden_sizes) + 1
  states = states._replace(
    params=with_torch_layers(states.params, fixture["initial"], n_encoder)
  )

  train_rows, test_rows = rows_of(train_dense), rows_of(test_dense)
  epoch = train.make_epoch_fn(program, train_rows, config.batch_size)
  states, totals = epoch(
    states, hyper, batching.DeviceRows.put(train_rows), np.int32(0)
  )
  assert int(states.step[0]) == expected["steps"] == 5

  final = with_torch_layers(states.params, expected["final"], n_encoder)
  for ours, torchs in zip(
    jax.tree.leaves(states.params), jax.tree.leaves(final), strict=True
  ):
    np.testing.assert_allclose(ours, torchs, rtol=1e-5, atol=1e-7)

  # The tutorial's printed train loss: per-user RMSE before each update.
  figures = metrics.summarize(totals.errors)
  np.testing.assert_allclose(
    figures["course_rmse"][0], expected["train_loss"], rtol=1e-5
  )
  # Its test loss: raw predictions from the training rows, a user without
  # training ratings included.
  evaluate = evaluation.make_eval_fn(program, train_rows, test_rows, 4)
  test_totals = evaluate(
    states.params,
    hyper,
    evaluation.eval_targets(train_rows, test_rows, 4),
    evaluation.predictor_weights(len(members)),
  )
  np.testing.assert_allclose(
    metrics.summarize(test_totals)["course_rmse"][0],
    expected["test_loss"],
    rtol=1e-5,
  )


@pytest.mark.parametrize("accumulate", [False, True])
def test_torch_rmsprop_matches_numpy(accumulate):
  lr, wd, alpha, eps = 0.01, 0.5, 0.99, 1e-8
  rng = np.random.default_rng(0)
  theta = rng.normal(size=4).astype(np.float32)
  grads = rng.normal(size=(3, 4)).astype(np.float32)
  optimizer = optim.torch_rmsprop(lr, wd, accumulate=accumulate)
  params = jnp.asarray(theta)
  state = optimizer.init(params)

  expected = theta.astype(np.float64)
  square_avg = np.zeros(4)
  total = np.zeros(4)
  for g in grads:
    updates, state = optimizer.update(jnp.asarray(g), state, params)
    params = params + updates
    total = total + g if accumulate else g
    step_grad = total + wd * expected
    square_avg = alpha * square_avg + (1 - alpha) * step_grad**2
    expected = expected - lr * step_grad / (np.sqrt(square_avg) + eps)
  np.testing.assert_allclose(params, expected, rtol=1e-5)


def test_course_variant_is_the_tutorial_network():
  config = variants.get_config("course")
  assert config.hidden_sizes == (20, 10, 20) and config.batch_size == 1
  assert config.optimizer == "torch_rmsprop" and config.init == "torch"
  assert not config.accumulate_gradients and not config.drop_first_line
  faithful = variants.get_config("course", **variants.FAITHFUL)
  assert faithful.accumulate_gradients and faithful.drop_first_line
  members = variants.members(config)
  program = train.make_program(config, 1682, members)
  states, _ = train.init_members(program, members)
  one = jax.tree.map(lambda x: x[0], states.params)
  # 1682*20+20 + 20*10+10 + 10*20+20 + 20*1682+1682
  assert autoencoder.count_parameters(one) == 69_412
  # PyTorch's Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and biases.
  first = one["encoder"][0]
  for leaf in (first["kernel"][...], first["bias"][...]):
    bound = 1 / np.sqrt(1682)
    assert np.abs(leaf).max() <= bound
    assert np.abs(leaf).max() > 0.9 * bound


def test_step_layout_round_trip():
  tree = {"narrow": jnp.ones((2, 30, 4)), "wide": jnp.ones((4, 30))}
  step = train.to_step_layout(tree)
  assert step["narrow"].shape == (2, 4, 30) and step["wide"].shape == (4, 30)
  back = train.from_step_layout(step, tree)
  assert jax.tree.map(jnp.shape, back) == jax.tree.map(jnp.shape, tree)


def test_epoch_order_visits_given_rows_only():
  order = batching.epoch_row_order(
    jax.random.key(0), 3, 2, shuffle=False, row_ids=np.array([4, 7, 9])
  )
  np.testing.assert_array_equal(order, [[4, 7], [9, -1]])
  with pytest.raises(ValueError, match="row_ids holds 3 rows, not 2"):
    batching.epoch_row_order(
      jax.random.key(0), 2, 2, row_ids=np.array([4, 7, 9])
    )
