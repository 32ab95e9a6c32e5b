"""Synthetic rating data of a chosen shape, for scale runs and tests.

MovieLens-20M (138,493 users, 26,744 movies, 20,000,263 ratings) may not be
redistributed and cannot be fetched everywhere, yet its shape is what scale
work needs. ``generate`` draws ratings with the same kind of structure:

- every user rates at least ``min_per_user`` items, and the rest of the
  ratings go to users in proportion to log-normal activity weights, so a
  few users rate thousands of items (as in MovieLens);
- items are drawn without replacement from a Zipf popularity law
  ``p_i ~ rank_i^-s`` over a random ranking of the items;
- a rating is ``mu + b_u + b_i + <p_u, q_i> + noise``, rounded to the
  rating scale's step and clipped to it, so a model has signal to learn.

Generation runs in chunks of users; memory stays a small multiple of the
output (12 bytes a rating).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aejax.data.movielens import SplitData
from aejax.data.ratings import Ratings


@dataclasses.dataclass(frozen=True)
class Shape:
  """What to generate.

  Attributes:
    n_users: users (rows of a user-based model).
    n_items: items (columns).
    n_ratings: ratings in all, exactly.
    min_per_user: ratings of the least active user.
    max_per_user: most ratings of one user (0: half of the items).
    activity_sigma: sigma of the log-normal user activity weights; larger
      values give longer rows to the most active users.
    popularity_exponent: Zipf exponent ``s`` of item popularity.
    rating_step: 1.0 for whole stars (1..5), 0.5 for half stars (0.5..5).
    rank: rank of the user-item interaction term.
    noise: standard deviation of the rating noise.
  """

  n_users: int
  n_items: int
  n_ratings: int
  min_per_user: int = 20
  max_per_user: int = 0
  activity_sigma: float = 1.2
  popularity_exponent: float = 0.8
  rating_step: float = 1.0
  rank: int = 8
  noise: float = 0.4

  @property
  def cap(self) -> int:
    """Most ratings one user may get."""
    return self.max_per_user or max(self.n_items // 2, 1)

  def validate(self) -> Shape:
    """Checks the fields; raises ValueError naming the first bad one.

    Returns:
      The shape itself, unchanged.

    Raises:
      ValueError: a count or rank that is not a positive integer, per-user
        bounds out of order, a ``n_ratings`` that the users cannot hold, a
        ``rating_step`` other than 0.5 or 1, or a negative spread.
    """
    for name in ("n_users", "n_items", "n_ratings", "rank"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if not 0 <= self.min_per_user <= self.cap <= self.n_items:
      raise ValueError(
        f"per-user bounds must satisfy 0 <= min_per_user "
        f"({self.min_per_user}) <= max_per_user ({self.cap}) <= n_items "
        f"({self.n_items})"
      )
    low = self.n_users * self.min_per_user
    high = self.n_users * self.cap
    if not low <= self.n_ratings <= high:
      raise ValueError(
        f"n_ratings {self.n_ratings} must lie in [{low}, {high}] for "
        f"{self.n_users} users rating {self.min_per_user} to {self.cap} "
        "items each"
      )
    if self.rating_step not in (0.5, 1.0):
      raise ValueError(f"rating_step must be 0.5 or 1, not {self.rating_step}")
    for name in ("activity_sigma", "popularity_exponent", "noise"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be non-negative")
    return self


# Mean ratings per user of MovieLens-20M (20,000,263 / 138,493).
ML20M_RATINGS_PER_USER = 20_000_263 / 138_493

PRESETS: dict[str, Shape] = {
  # MovieLens-20M's shape: half stars, 20 to 9,254 ratings per user.
  "ml-20m": Shape(
    138_493, 26_744, 20_000_263, max_per_user=9_254, rating_step=0.5
  ),
  # MovieLens-1M's and -100k's shapes.
  "ml-1m": Shape(6_040, 3_706, 1_000_209),
  "ml-100k": Shape(943, 1_682, 100_000),
}


def ml20m_like(n_ratings: int) -> Shape:
  """ML-20M's items and users' mean activity, scaled to ``n_ratings``.

  Users are ``n_ratings / 144.4`` (ML-20M's ratings per user), so data sets
  of different sizes differ in their number of rows, not in their rows.

  Args:
    n_ratings: the ratings to generate.

  Returns:
    The ``ml-20m`` preset with ``max(round(n_ratings / 144.4), 1)`` users
    and ``n_ratings`` ratings (not validated).
  """
  n_users = max(round(n_ratings / ML20M_RATINGS_PER_USER), 1)
  return dataclasses.replace(
    PRESETS["ml-20m"], n_users=n_users, n_ratings=n_ratings
  )


def user_counts(shape: Shape, rng: np.random.Generator) -> np.ndarray:
  """Ratings of each user: ``min_per_user`` plus a log-normal share.

  ``n_u = m + extra_u`` with ``extra_u`` proportional to
  ``w_u ~ LogNormal(0, sigma)``, capped at ``shape.cap``; the sum is
  exactly ``n_ratings``.

  Args:
    shape: a validated shape.
    rng: draws the weights ``w_u``.

  Returns:
    ``(n_users,)`` int64 counts.
  """
  weights = rng.lognormal(0.0, shape.activity_sigma, shape.n_users)
  counts = np.full(shape.n_users, shape.min_per_user, np.int64)
  remaining = shape.n_ratings - int(counts.sum())
  while remaining > 0:
    open_weights = np.where(counts < shape.cap, weights, 0.0)
    add = np.floor(remaining * open_weights / open_weights.sum())
    add = np.minimum(add.astype(np.int64), shape.cap - counts)
    if not add.any():
      # Rounding left fewer ratings than open users: one each to the most
      # active ones.
      open_users = np.flatnonzero(counts < shape.cap)
      top = open_users[np.argsort(-weights[open_users])[:remaining]]
      add = np.zeros_like(counts)
      add[top] = 1
    counts += add
    remaining -= int(add.sum())
  return counts


def _sorted_unique(values: np.ndarray) -> np.ndarray:
  # Sorting beats numpy's hash-based unique on tens of millions of keys.
  values = np.sort(values)
  keep = np.ones(len(values), bool)
  keep[1:] = values[1:] != values[:-1]
  return values[keep]


def _contains(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
  index = np.searchsorted(sorted_values, queries)
  index = np.minimum(index, max(len(sorted_values) - 1, 0))
  if not len(sorted_values):
    return np.zeros(len(queries), bool)
  return sorted_values[index] == queries


def _distinct_items(
  counts: np.ndarray,
  popularity: np.ndarray,
  rng: np.random.Generator,
  rounds: int = 6,
) -> tuple[np.ndarray, np.ndarray]:
  """``(row, item)`` pairs: ``counts[r]`` distinct items for each row ``r``.

  Items are drawn with replacement in a few rounds, duplicates dropped and
  the surplus discarded at random; rows still short after that (the most
  active ones, which exhaust the popular items) take the exact weighted
  draw without replacement of Efraimidis and Spirakis (2006): the
  ``n`` largest ``log(u_i) / p_i``.
  """
  n_items = len(popularity)
  cumulative = np.cumsum(popularity)
  cumulative /= cumulative[-1]
  need = counts.astype(np.int64).copy()
  accepted = np.zeros(0, np.int64)
  for _ in range(rounds):
    short = np.flatnonzero(need > 0)
    if not len(short):
      break
    draws = need[short] + need[short] // 4 + 2
    rows = np.repeat(short, draws)
    items = np.searchsorted(cumulative, rng.random(len(rows)), side="right")
    items = np.minimum(items, n_items - 1)
    keys = _sorted_unique(rows * n_items + items)
    keys = keys[~_contains(accepted, keys)]
    # A random order within each row, then its first need[row] keys.
    keys = keys[rng.permutation(len(keys))]
    keys = keys[np.argsort(keys // n_items, kind="stable")]
    key_rows = keys // n_items
    first = np.searchsorted(key_rows, key_rows, side="left")
    keep = np.arange(len(keys)) - first < need[key_rows]
    keys = keys[keep]
    need -= np.bincount(keys // n_items, minlength=len(need))
    accepted = np.sort(np.concatenate([accepted, keys]))

  log_popularity = np.log(popularity)
  extra = []
  for row in np.flatnonzero(need > 0):
    lo, hi = np.searchsorted(accepted, [row * n_items, (row + 1) * n_items])
    taken = accepted[lo:hi]
    scores = np.log(-np.log(rng.random(n_items))) - log_popularity
    scores[taken - row * n_items] = np.inf
    chosen = np.argpartition(scores, need[row] - 1)[: need[row]]
    extra.append(row * n_items + chosen)
  if extra:
    accepted = np.sort(np.concatenate([accepted, *extra]))
  return accepted // n_items, accepted % n_items


def generate(
  shape: Shape, seed: int = 0, chunk_ratings: int = 4_000_000
) -> Ratings:
  """Ratings of ``shape``, sorted by user then item; deterministic in seed.

  Args:
    shape: what to generate (validated here).
    seed: the seed of every random draw.
    chunk_ratings: about how many ratings to draw at once (memory only;
      the result depends on it, so keep it fixed to reproduce data).

  Returns:
    ``Ratings`` with exactly ``shape.n_ratings`` entries, one per distinct
    (user, item) pair.
  """
  shape.validate()
  rng = np.random.default_rng(seed)
  counts = user_counts(shape, rng)
  ranks = rng.permutation(shape.n_items) + 1
  popularity = ranks.astype(np.float64) ** -shape.popularity_exponent
  popularity /= popularity.sum()

  # Biases and factors put about a third of the rating variance in the
  # interaction term, as matrix factorisation finds on MovieLens.
  user_bias = rng.normal(0.0, 0.35, shape.n_users).astype(np.float32)
  item_bias = rng.normal(0.0, 0.45, shape.n_items).astype(np.float32)
  scale = (0.5 / np.sqrt(shape.rank)) ** 0.5
  user_factor = rng.normal(0.0, scale, (shape.n_users, shape.rank))
  item_factor = rng.normal(0.0, scale, (shape.n_items, shape.rank))
  user_factor = user_factor.astype(np.float32)
  item_factor = item_factor.astype(np.float32)

  users = np.empty(shape.n_ratings, np.int32)
  items = np.empty(shape.n_ratings, np.int32)
  values = np.empty(shape.n_ratings, np.float32)
  ends = np.cumsum(counts)
  start_user, written = 0, 0
  while start_user < shape.n_users:
    stop_user = int(
      np.searchsorted(ends, written + chunk_ratings, side="right")
    )
    stop_user = min(max(stop_user, start_user + 1), shape.n_users)
    rows, chunk_items = _distinct_items(
      counts[start_user:stop_user], popularity, rng
    )
    chunk_users = rows + start_user
    interaction = np.einsum(
      "nr,nr->n", user_factor[chunk_users], item_factor[chunk_items]
    )
    noise = rng.normal(0.0, shape.noise, len(rows)).astype(np.float32)
    score = (
      3.5
      + user_bias[chunk_users]
      + item_bias[chunk_items]
      + interaction
      + noise
    )
    score = np.round(score / shape.rating_step) * shape.rating_step
    end = written + len(rows)
    users[written:end] = chunk_users
    items[written:end] = chunk_items
    values[written:end] = np.clip(score, shape.rating_step, 5.0)
    written, start_user = end, stop_user
  return Ratings(users, items, values, shape.n_users, shape.n_items)


def split(
  ratings: Ratings,
  test_fraction: float = 0.1,
  seed: int = 0,
  name: str = "synthetic",
) -> SplitData:
  """A seeded random split holding out ``round(test_fraction * n)`` ratings.

  Args:
    ratings: the ratings to split.
    test_fraction: the held-out share.
    seed: the seed of ``numpy.random.default_rng``.
    name: the data set's name.

  Returns:
    ``SplitData`` with raw ids ``1 .. n`` for dense indices ``0 .. n - 1``
    and no validation set.

  Raises:
    ValueError: ``test_fraction`` outside (0, 1).
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test fraction must lie in (0, 1), not {test_fraction}")
  n = len(ratings)
  order = np.random.default_rng(seed).permutation(n)
  held_out = np.zeros(n, bool)
  held_out[order[: round(test_fraction * n)]] = True
  del order
  return SplitData(
    name=name,
    split="random",
    train=ratings.subset(~held_out),
    test=ratings.subset(held_out),
    user_ids=np.arange(1, ratings.n_users + 1),
    item_ids=np.arange(1, ratings.n_items + 1),
  )


def load(
  shape: Shape | str,
  seed: int = 0,
  test_fraction: float = 0.1,
) -> SplitData:
  """Generates ``shape`` (or a preset's name) and splits it at random.

  Args:
    shape: a ``Shape``, or a name in ``PRESETS``.
    seed: the seed of the ratings and of the split.
    test_fraction: the held-out share.

  Returns:
    The split data set, named after its shape.

  Raises:
    ValueError: an unknown preset or a bad shape.
  """
  if isinstance(shape, str):
    if shape not in PRESETS:
      raise ValueError(
        f"unknown synthetic preset {shape!r}; known: {', '.join(PRESETS)}"
      )
    shape = PRESETS[shape]
  name = f"synthetic-{shape.n_users}x{shape.n_items}-{shape.n_ratings}"
  return split(generate(shape, seed), test_fraction, seed, name=name)
