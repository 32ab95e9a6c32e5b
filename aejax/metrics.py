"""Rating-prediction metrics, accumulated on the device as sums.

Two RMSEs are reported and always named apart:

- global RMSE pools every held-out rating:
  ``sqrt(sum_{u,i} (r_hat - r)^2 / N)``;
- the course RMSE (the tutorial's "loss") averages per-row RMSEs over the
  rows that hold at least one held-out rating:
  ``mean_u sqrt(sum_i (r_hat_ui - r_ui)^2 / n_u)``.

Batches add ``ErrorSums`` on the device; ``summarize`` turns the totals into
figures on the host, once per evaluation.
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


def summarize(sums: ErrorSums) -> dict[str, np.ndarray]:
  """RMSE, MAE and course RMSE from (per-member) sums, on the host.

  Returns NaN for a metric with no rating behind it; callers that report
  figures check ``count`` first.
  """
  host = jax.tree.map(lambda x: np.asarray(x, np.float64), sums)
  with np.errstate(invalid="ignore", divide="ignore"):
    return {
      "rmse": np.sqrt(host.squared / host.count),
      "mae": host.absolute / host.count,
      "course_rmse": host.row_rmse / host.rows,
      "count": host.count,
    }
