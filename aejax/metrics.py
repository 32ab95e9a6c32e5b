"""Rating-prediction metrics, accumulated on the device as sums.

Two RMSEs are reported and always named apart:

- global RMSE pools every held-out rating:
  ``sqrt(sum_{u,i} (r_hat - r)^2 / N)``;
- the course RMSE (the tutorial's "loss") averages per-row RMSEs over the
  rows that hold at least one held-out rating:
  ``mean_u sqrt(sum_i (r_hat_ui - r_ui)^2 / n_u)``.

Batches add ``ErrorSums`` on the device; ``summarize`` turns the totals into
figures on the host, once per evaluation. When rows are items, a user's
ratings spread over many batches: ``ColumnSums`` accumulates them per
column and ``course_from_columns`` finishes the course RMSE from them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aejax import losses


class ErrorSums(NamedTuple):
  """Sums from which RMSE, MAE and the course RMSE follow.

  Attributes:
    squared: sum of squared errors over observed entries.
    absolute: sum of absolute errors over observed entries.
    count: number of observed entries.
    row_rmse: sum over rows with an observed entry of each row's RMSE.
    rows: number of rows with an observed entry.
  """

  squared: jax.Array
  absolute: jax.Array
  count: jax.Array
  row_rmse: jax.Array
  rows: jax.Array

  @classmethod
  def zeros(cls) -> ErrorSums:
    """Sums of nothing yet: every field a float32 zero scalar.

    Returns:
      ``ErrorSums`` with all five fields ``0.0``.
    """
    return cls(*(jnp.zeros((), jnp.float32) for _ in cls._fields))

  def __add__(self, other: ErrorSums) -> ErrorSums:  # type: ignore[override]
    return ErrorSums(*(a + b for a, b in zip(self, other, strict=True)))


def error_sums(
  *, predictions: jax.Array, targets: jax.Array, mask: jax.Array
) -> ErrorSums:
  """Error sums of a ``(rows, columns)`` batch over its observed entries.

  Rows without an observed entry add nothing, and their RMSE term is
  guarded so that no NaN arises (not even in a gradient).

  Args:
    predictions: predicted ratings.
    targets: true ratings where ``mask`` is set.
    mask: observed entries.

  Returns:
    The batch's ``ErrorSums``.
  """
  mask = mask.astype(bool)
  squared = losses.masked_squared_error(
    predictions=predictions, targets=targets, mask=mask
  )
  absolute = jnp.where(mask, jnp.abs(predictions - targets), 0.0)
  per_row_count = mask.sum(axis=-1, dtype=jnp.float32)
  has_rating = per_row_count > 0
  per_row_mse = losses.safe_divide(squared.sum(axis=-1), per_row_count)
  # sqrt is guarded too: its derivative at 0 is infinite.
  per_row_rmse = jnp.where(
    has_rating, jnp.sqrt(jnp.where(has_rating, per_row_mse, 1.0)), 0.0
  )
  return ErrorSums(
    squared=squared.sum(),
    absolute=absolute.sum(),
    count=per_row_count.sum(),
    row_rmse=per_row_rmse.sum(),
    rows=has_rating.sum(dtype=jnp.float32),
  )


class ColumnSums(NamedTuple):
  """Per-column sums of squared errors and of observed entries.

  Attributes:
    squared: ``(n_columns,)`` sums of squared errors.
    count: ``(n_columns,)`` numbers of observed entries.
  """

  squared: jax.Array
  count: jax.Array

  @classmethod
  def zeros(cls, n_columns: int) -> ColumnSums:
    """Per-column sums of nothing yet.

    Args:
      n_columns: width of a row.

    Returns:
      ``ColumnSums`` of two float32 zero vectors of length ``n_columns``.
    """
    return cls(*(jnp.zeros((n_columns,), jnp.float32) for _ in cls._fields))

  def __add__(self, other: ColumnSums) -> ColumnSums:  # type: ignore[override]
    return ColumnSums(self.squared + other.squared, self.count + other.count)


def column_sums(
  *, predictions: jax.Array, targets: jax.Array, mask: jax.Array
) -> ColumnSums:
  """Squared errors and observed counts of a batch, summed over its rows.

  ``squared_c = sum_r m_rc (x_hat_rc - x_rc)^2`` and
  ``count_c = sum_r m_rc``, so that batches add up to per-column totals.

  Args:
    predictions: ``(rows, columns)`` predicted ratings.
    targets: true ratings where ``mask`` is set.
    mask: observed entries.

  Returns:
    The batch's ``ColumnSums``.
  """
  squared = losses.masked_squared_error(
    predictions=predictions, targets=targets, mask=mask
  )
  return ColumnSums(squared.sum(axis=0), mask.astype(jnp.float32).sum(axis=0))


def course_from_columns(errors: ErrorSums, columns: ColumnSums) -> ErrorSums:
  """``errors`` with its course terms taken over columns instead of rows.

  ``row_rmse = sum_c sqrt(squared_c / count_c)`` and ``rows`` the number
  of columns with an observed entry: the course RMSE of item rows, which
  averages over users, the columns.

  Args:
    errors: sums over a whole evaluation or epoch of item rows.
    columns: the same batches' per-column sums.

  Returns:
    ``errors`` with ``row_rmse`` and ``rows`` replaced, the other fields
    unchanged.
  """
  has_rating = columns.count > 0
  mse = losses.safe_divide(columns.squared, columns.count)
  rmse = jnp.where(has_rating, jnp.sqrt(jnp.where(has_rating, mse, 1.0)), 0.0)
  return errors._replace(
    row_rmse=rmse.sum(), rows=has_rating.sum(dtype=jnp.float32)
  )


def rating_figures(
  *, users: np.ndarray, predictions: np.ndarray, targets: np.ndarray
) -> dict[str, float]:
  """Global RMSE, MAE and course RMSE of rating predictions, on the host.

  ``rmse = sqrt(mean (r_hat - r)^2)``, ``mae = mean |r_hat - r|`` and
  ``course_rmse = mean_u sqrt(mean_{i in u} (r_hat_ui - r_ui)^2)`` over the
  users with a rating, from parallel arrays (one entry per rating).

  Args:
    users: the user index of each rating.
    predictions: predicted ratings.
    targets: true ratings.

  Returns:
    ``rmse``, ``mae``, ``course_rmse`` and ``count`` (NaN figures when
    there is no rating).
  """
  error = np.asarray(predictions, np.float64) - np.asarray(targets, np.float64)
  if error.size == 0:
    nan = float("nan")
    return {"rmse": nan, "mae": nan, "course_rmse": nan, "count": 0.0}
  _, user_index = np.unique(users, return_inverse=True)
  squared = np.bincount(user_index, weights=error**2)
  count = np.bincount(user_index)
  return {
    "rmse": float(np.sqrt(np.mean(error**2))),
    "mae": float(np.mean(np.abs(error))),
    "course_rmse": float(np.mean(np.sqrt(squared / count))),
    "count": float(error.size),
  }


def ranking_figures(
  *,
  scores: np.ndarray,
  known: np.ndarray,
  relevant: np.ndarray,
  cutoffs: tuple[int, ...],
) -> dict[str, float]:
  """Recall@K and NDCG@K of per-user item scores, on the host.

  For each user with at least one relevant item, items the user already
  rated (``known``) are removed and the rest ranked by score, highest
  first (ties by item index). With ``hits_K`` the relevant items among the
  first ``K`` and ``n`` the user's relevant items:
  ``Recall@K = hits_K / min(K, n)`` and ``NDCG@K = DCG@K / IDCG@K`` with
  ``DCG@K = sum_{rank r <= K, relevant} 1 / log2(r + 1)`` and ``IDCG@K`` the
  DCG of a perfect ranking (Liang et al., 2018, "Variational Autoencoders
  for Collaborative Filtering", section 4.2). Both are averaged over users.

  Args:
    scores: ``(n_users, n_items)`` predicted scores.
    known: ``(n_users, n_items)`` items excluded from a user's ranking.
    relevant: ``(n_users, n_items)`` relevant held-out items; must not
      overlap ``known``.
    cutoffs: the ``K`` values.

  Returns:
    ``recall@K`` and ``ndcg@K`` for each cutoff, and ``ranked_users``
    (NaN figures when no user has a relevant item).

  Raises:
    ValueError: an item is both known and relevant to the same user.
  """
  if np.any(known & relevant):
    raise ValueError("an item is both known and relevant to the same user")
  users = np.flatnonzero(relevant.any(axis=1))
  out: dict[str, float] = {"ranked_users": float(len(users))}
  if not len(users):
    for k in cutoffs:
      out[f"recall@{k}"] = out[f"ndcg@{k}"] = float("nan")
    return out
  masked = np.where(known[users], -np.inf, scores[users].astype(np.float64))
  top = max(cutoffs)
  order = np.argsort(-masked, axis=1, kind="stable")[:, :top]
  hits = np.take_along_axis(relevant[users], order, axis=1).astype(np.float64)
  n_relevant = relevant[users].sum(axis=1)
  discount = 1.0 / np.log2(np.arange(2, top + 2))
  for k in cutoffs:
    ideal = np.minimum(k, n_relevant)
    out[f"recall@{k}"] = float(np.mean(hits[:, :k].sum(axis=1) / ideal))
    dcg = (hits[:, :k] * discount[: hits[:, :k].shape[1]]).sum(axis=1)
    idcg = np.cumsum(discount)[np.minimum(ideal, top) - 1]
    out[f"ndcg@{k}"] = float(np.mean(dcg / idcg))
  return out


def summarize(sums: ErrorSums) -> dict[str, np.ndarray]:
  """RMSE, MAE and course RMSE from (per-member) sums, on the host.

  ``rmse = sqrt(squared / count)``, ``mae = absolute / count`` and
  ``course_rmse = row_rmse / rows``, in float64.

  Args:
    sums: totals of an evaluation or epoch, each field a scalar or an
      array with a leading member axis.

  Returns:
    ``rmse``, ``mae``, ``course_rmse`` and ``count``, shaped like the
    fields of ``sums``; NaN for a metric with no rating behind it, so
    callers that report figures check ``count`` first.
  """
  host = jax.tree.map(lambda x: np.asarray(x, np.float64), sums)
  with np.errstate(invalid="ignore", divide="ignore"):
    return {
      "rmse": np.sqrt(host.squared / host.count),
      "mae": host.absolute / host.count,
      "course_rmse": host.row_rmse / host.rows,
      "count": host.count,
    }
