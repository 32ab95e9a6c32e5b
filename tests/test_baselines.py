"""Baselines and the cold-start predictor, against numpy and by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import baselines, evaluation, train, variants
from aejax.data.ratings import Ratings, Rows

# Three users, four items; item 3 and user 2 have no rating.
USERS = np.array([0, 0, 0, 1, 1], np.int32)
ITEMS = np.array([0, 1, 2, 0, 2], np.int32)
VALUES = np.array([5.0, 3.0, 4.0, 2.0, 1.0], np.float32)
RATINGS = Ratings(USERS, ITEMS, VALUES, n_users=3, n_items=4)


def test_means_by_hand():
  mean = 3.0
  glob = baselines.fit_baseline("global mean", RATINGS, 0.0)
  np.testing.assert_allclose(glob.predict(USERS, ITEMS), np.full(5, mean))
  users = baselines.fit_baseline("user mean", RATINGS, 0.0)
  # User 0: (5 + 3 + 4) / 3 = 4; user 1: 1.5; user 2 has none: the mean.
  np.testing.assert_allclose(
    users.predict(np.array([0, 1, 2]), np.array([3, 3, 3])), [4.0, 1.5, 3.0]
  )
  items = baselines.fit_baseline("item mean", RATINGS, 0.0)
  np.testing.assert_allclose(
    items.predict(np.array([2, 2, 2, 2]), np.arange(4)), [3.5, 3.0, 2.5, 3.0]
  )
  with pytest.raises(ValueError, match="unknown baseline 'median'"):
    baselines.fit_baseline("median", RATINGS, 0.0)


@pytest.mark.parametrize("regularization", [0.5, 3.0])
def test_biases_solve_the_ridge_problem(regularization):
  """The alternation converges to the minimiser of the ridge objective,
  solved here in closed form with numpy."""
  rng = np.random.default_rng(0)
  n_users, n_items = 7, 9
  mask = rng.random((n_users, n_items)) < 0.5
  users, items = np.nonzero(mask)
  values = rng.integers(1, 6, len(users)).astype(np.float32)
  ratings = Ratings(
    users.astype(np.int32), items.astype(np.int32), values, n_users, n_items
  )
  fitted = baselines.fit_biases(ratings, regularization, iterations=500)

  design = np.zeros((len(users), n_users + n_items))
  design[np.arange(len(users)), users] = 1.0
  design[np.arange(len(users)), n_users + items] = 1.0
  target = values - values.mean()
  gram = design.T @ design + regularization * np.eye(n_users + n_items)
  solution = np.linalg.solve(gram, design.T @ target)
  np.testing.assert_allclose(fitted.mean, values.mean(), rtol=1e-6)
  np.testing.assert_allclose(fitted.user, solution[:n_users], atol=1e-6)
  np.testing.assert_allclose(fitted.item, solution[n_users:], atol=1e-6)


@pytest.mark.parametrize("orientation", ["user", "item"])
def test_cold_start_entries_get_the_bias_prediction(orientation):
  config = variants.get_config(
    "autorec",
    orientation=orientation,
    hidden_sizes=(3,),
    cold_start_predictor="bias",
  )
  members = variants.members(config)
  rows = Rows.from_ratings(RATINGS, orientation)
  program = train.make_program(config, rows.n_columns, members, rows.n_rows)
  states, hyper = train.init_members(program, members)
  biases = baselines.fit_biases(RATINGS, config.bias_regularization)
  scoring = evaluation.make_scoring(rows, biases, orientation)
  row_ids = np.arange(rows.n_rows, dtype=np.int32)
  inputs, mask = rows.densify(row_ids)
  one = lambda tree: jax.tree.map(lambda x: x[0], tree)
  predictions = evaluation.predict(
    program,
    one(states.params),
    one(hyper),
    jnp.asarray(inputs),
    jnp.asarray(mask),
    jnp.asarray(row_ids),
    scoring,
    clip=False,
  )
  predictions = np.asarray(predictions)
  if orientation == "item":
    predictions = predictions.T
  # User 2 and item 3 never appear in training: bias predictions there.
  for user in range(3):
    for item in range(4):
      if user == 2 or item == 3:
        expected = biases.mean + biases.user[user] + biases.item[item]
        assert predictions[user, item] == pytest.approx(expected, rel=1e-6)
  # Elsewhere the model answers (not the bias prediction).
  expected = biases.mean + biases.user[0] + biases.item[0]
  assert predictions[0, 0] != pytest.approx(expected, rel=1e-6)
