"""Reference predictors: global mean, user mean, item mean and biases.

Every baseline predicts ``r_hat_ui = mu + b_u + b_i`` with its own ``mu``,
``b_u`` and ``b_i`` estimated from training ratings only:

- global mean: ``b_u = b_i = 0``;
- user mean: ``mu + b_u`` is the user's mean rating, ``b_i = 0``;
- item mean: ``mu + b_i`` is the item's mean rating, ``b_u = 0``;
- user + item biases: ridge-regularised biases (Koren, 2010, "Factor in
  the Neighbors: Scalable and Accurate Collaborative Filtering", section
  2.1), found by alternating exact minimisation.

A user or item without a training rating keeps a bias of 0, so its
prediction falls back to what the remaining terms know. The same biases
serve the autoencoders as their cold-start predictor.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from aejax.data.ratings import Ratings

BASELINES = ("global mean", "user mean", "item mean", "user + item biases")


class Biases(NamedTuple):
  """``r_hat_ui = mean + user[u] + item[i]``.

  Attributes:
    mean: ``mu``.
    user: ``b_u`` for every user of the data set (0 where unknown).
    item: ``b_i`` for every item of the data set (0 where unknown).
  """

  mean: float
  user: np.ndarray
  item: np.ndarray

  def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Predictions for parallel arrays of user and item indices.

    ``r_hat_ui = mu + b_u + b_i`` for each pair.

    Args:
      users: user indices.
      items: item indices, one per user index.

    Returns:
      float32 predictions, one per pair.
    """
    return (self.mean + self.user[users] + self.item[items]).astype(np.float32)


def _group_mean_offset(
  index: np.ndarray, residual: np.ndarray, n: int, regularization: float
) -> np.ndarray:
  """``sum_{k in group} residual_k / (regularization + n_group)`` by group."""
  total = np.bincount(index, weights=residual, minlength=n)
  count = np.bincount(index, minlength=n).astype(np.float64)
  denominator = regularization + count
  return np.divide(total, denominator, out=np.zeros(n), where=denominator > 0)


def fit_biases(
  ratings: Ratings, regularization: float, iterations: int = 20
) -> Biases:
  """Ridge-regularised user and item biases around the global mean.

  Minimises ``sum_(u,i) (r_ui - mu - b_u - b_i)^2 + lambda (sum_u b_u^2 +
  sum_i b_i^2)`` with ``mu`` the mean rating, alternating the exact
  minimisers ``b_i = sum_u (r_ui - mu - b_u) / (lambda + n_i)`` and
  ``b_u = sum_i (r_ui - mu - b_i) / (lambda + n_u)`` (Koren, 2010).

  Args:
    ratings: training ratings.
    regularization: ``lambda`` (0 gives least squares; a user or item
      without ratings keeps 0 either way).
    iterations: alternations; the objective is convex and each one
      lowers it.

  Returns:
    The biases.
  """
  mean = ratings.mean()
  values = ratings.values.astype(np.float64)
  user_bias = np.zeros(ratings.n_users)
  item_bias = np.zeros(ratings.n_items)
  for _ in range(iterations):
    item_bias = _group_mean_offset(
      ratings.items,
      values - mean - user_bias[ratings.users],
      ratings.n_items,
      regularization,
    )
    user_bias = _group_mean_offset(
      ratings.users,
      values - mean - item_bias[ratings.items],
      ratings.n_users,
      regularization,
    )
  return Biases(mean, user_bias, item_bias)


def fit_baseline(name: str, ratings: Ratings, regularization: float) -> Biases:
  """The named baseline (see ``BASELINES``) estimated from ``ratings``.

  Args:
    name: one of ``BASELINES``.
    ratings: training ratings.
    regularization: ``lambda`` of the user + item biases.

  Returns:
    The baseline as ``Biases``.

  Raises:
    ValueError: ``name`` is not one of ``BASELINES``.
  """
  mean = ratings.mean()
  values = ratings.values.astype(np.float64)
  if name == "global mean":
    return Biases(mean, np.zeros(ratings.n_users), np.zeros(ratings.n_items))
  if name == "user mean":
    offset = _group_mean_offset(
      ratings.users, values - mean, ratings.n_users, 0.0
    )
    return Biases(mean, offset, np.zeros(ratings.n_items))
  if name == "item mean":
    offset = _group_mean_offset(
      ratings.items, values - mean, ratings.n_items, 0.0
    )
    return Biases(mean, np.zeros(ratings.n_users), offset)
  if name == "user + item biases":
    return fit_biases(ratings, regularization)
  raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
