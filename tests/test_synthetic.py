"""The synthetic rating generator: exact shape, distinct pairs, bounds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aejax.data import synthetic
from aejax.data.ratings import Rows


def small_shape(**changes):
  shape = synthetic.Shape(
    n_users=200,
    n_items=60,
    n_ratings=3000,
    min_per_user=4,
    max_per_user=50,
    popularity_exponent=1.2,
  )
  return dataclasses.replace(shape, **changes)


def test_generate_has_the_asked_shape_and_distinct_pairs():
  shape = small_shape()
  ratings = synthetic.generate(shape, seed=1)
  assert len(ratings) == 3000
  assert (ratings.n_users, ratings.n_items) == (200, 60)
  keys = ratings.users.astype(np.int64) * 60 + ratings.items
  # Sorted by user then item, and every (user, item) pair at most once.
  assert np.all(np.diff(keys) > 0)
  counts = np.bincount(ratings.users, minlength=200)
  assert counts.min() >= 4 and counts.max() <= 50
  assert set(np.unique(ratings.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
  assert 2.5 < ratings.values.mean() < 4.5


def test_heavy_users_reach_the_cap_through_the_exact_draw():
  # 59 of 60 items for some users: the rounds with replacement cannot
  # find them all, so the exact draw without replacement finishes them.
  shape = small_shape(n_ratings=6000, max_per_user=59, activity_sigma=3.0)
  ratings = synthetic.generate(shape, seed=2)
  counts = np.bincount(ratings.users, minlength=200)
  assert counts.max() == 59 and counts.sum() == 6000
  keys = ratings.users.astype(np.int64) * 60 + ratings.items
  assert len(np.unique(keys)) == 6000


def test_user_counts_are_exact_and_follow_the_weights():
  shape = small_shape()
  counts = synthetic.user_counts(shape, np.random.default_rng(0))
  assert counts.sum() == 3000 and counts.min() >= 4 and counts.max() <= 50
  weights = np.random.default_rng(0).lognormal(0.0, 1.2, 200)
  # The same draw of weights: more active users never get fewer ratings
  # unless the cap holds them back.
  order = np.argsort(weights)
  ordered = counts[order]
  assert np.all(np.diff(ordered[ordered < 50]) >= 0)


def test_popular_items_are_rated_more():
  ratings = synthetic.generate(small_shape(), seed=3)
  popularity = np.bincount(ratings.items, minlength=60)
  assert popularity.max() > 4 * np.median(popularity)


def test_same_seed_same_data_other_seed_other_data():
  a = synthetic.generate(small_shape(), seed=5)
  b = synthetic.generate(small_shape(), seed=5)
  c = synthetic.generate(small_shape(), seed=6)
  for name in ("users", "items", "values"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
  assert not np.array_equal(a.items, c.items)


def test_half_stars_stay_on_the_scale():
  ratings = synthetic.generate(small_shape(rating_step=0.5), seed=0)
  doubled = ratings.values * 2
  np.testing.assert_array_equal(doubled, np.round(doubled))
  assert ratings.values.min() >= 0.5 and ratings.values.max() <= 5.0


def test_ml20m_presets():
  shape = synthetic.PRESETS["ml-20m"].validate()
  assert (shape.n_users, shape.n_items, shape.n_ratings) == (
    138_493,
    26_744,
    20_000_263,
  )
  scaled = synthetic.ml20m_like(1_000_000)
  assert scaled.n_items == 26_744 and scaled.n_users == 6_925
  assert scaled.validate().n_ratings == 1_000_000


def test_split_holds_out_the_fraction_and_rows_are_csr():
  data = synthetic.load(small_shape(), seed=0, test_fraction=0.2)
  assert len(data.test) == 600 and len(data.train) == 2400
  assert data.n_users == 200 and data.n_items == 60
  train = Rows.from_ratings(data.train)
  test = Rows.from_ratings(data.test)
  assert train.nnz + test.nnz == 3000
  both = np.concatenate(
    [
      data.train.users.astype(np.int64) * 60 + data.train.items,
      data.test.users.astype(np.int64) * 60 + data.test.items,
    ]
  )
  assert len(np.unique(both)) == 3000


@pytest.mark.parametrize(
  ("changes", "message"),
  [
    ({"n_ratings": 100}, r"n_ratings 100 must lie in \[800, 10000\]"),
    ({"n_ratings": 20000}, r"n_ratings 20000 must lie in \[800, 10000\]"),
    ({"max_per_user": 61}, r"max_per_user \(61\) <= n_items \(60\)"),
    ({"n_users": 0}, "n_users must be a positive integer, not 0"),
    ({"rating_step": 0.25}, "rating_step must be 0.5 or 1, not 0.25"),
  ],
)
def test_bad_shapes_are_named(changes, message):
  with pytest.raises(ValueError, match=message):
    synthetic.generate(small_shape(**changes))


def test_unknown_preset_is_named():
  with pytest.raises(ValueError, match="unknown synthetic preset 'ml-25m'"):
    synthetic.load("ml-25m")
