"""Masked losses and the two RMSEs, against values computed by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import losses, metrics

# Two users, three movies, three observed ratings:
#   user 0 rated movie 0 (4) and movie 2 (5); user 1 rated movie 1 (2).
TARGETS = jnp.array([[4.0, 0.0, 5.0], [0.0, 2.0, 0.0]])
MASK = jnp.array([[True, False, True], [False, True, False]])
# Errors on observed entries: -1, -1 (user 0) and +2 (user 1). The 9.0,
# 7.0 and 1.0 sit on unobserved entries and must not count.
PREDICTIONS = jnp.array([[3.0, 9.0, 4.0], [7.0, 4.0, 1.0]])


def test_masked_squared_error_zeroes_unobserved():
  errors = losses.masked_squared_error(
    predictions=PREDICTIONS, targets=TARGETS, mask=MASK
  )
  np.testing.assert_array_equal(errors, [[1.0, 0.0, 1.0], [0.0, 4.0, 0.0]])


def test_reductions_by_hand():
  errors = losses.masked_squared_error(
    predictions=PREDICTIONS, targets=TARGETS, mask=MASK
  )
  # (1 + 1 + 4) / 3 observed ratings.
  assert losses.reduce_squared_error(errors, MASK, "observed") == 2.0
  # (1 + 1 + 4) / (2 rows with ratings x 3 columns).
  assert losses.reduce_squared_error(errors, MASK, "columns") == 1.0
  with pytest.raises(ValueError, match="unknown normalization 'mean'"):
    losses.reduce_squared_error(errors, MASK, "mean")


def test_global_and_course_rmse_by_hand():
  sums = metrics.error_sums(predictions=PREDICTIONS, targets=TARGETS, mask=MASK)
  figures = metrics.summarize(sums)
  # Global: sqrt((1 + 1 + 4) / 3) = sqrt(2).
  np.testing.assert_allclose(figures["rmse"], np.sqrt(2.0), rtol=1e-6)
  np.testing.assert_allclose(figures["mae"], 4.0 / 3.0, rtol=1e-6)
  # Course: mean of user 0's sqrt(2 / 2) = 1 and user 1's sqrt(4 / 1) = 2.
  np.testing.assert_allclose(figures["course_rmse"], 1.5, rtol=1e-6)
  assert figures["count"] == 3


def test_error_sums_add_up_across_batches():
  first = metrics.error_sums(
    predictions=PREDICTIONS[:1], targets=TARGETS[:1], mask=MASK[:1]
  )
  second = metrics.error_sums(
    predictions=PREDICTIONS[1:], targets=TARGETS[1:], mask=MASK[1:]
  )
  whole = metrics.error_sums(
    predictions=PREDICTIONS, targets=TARGETS, mask=MASK
  )
  for a, b in zip(first + second, whole, strict=True):
    np.testing.assert_allclose(a, b)


@pytest.mark.parametrize("normalization", ["observed", "columns"])
def test_gradients_finite_with_empty_rows(normalization):
  mask = MASK.at[1].set(False)  # user 1 has no observed rating
  empty = jnp.zeros_like(MASK)  # a batch of padding only

  def loss(predictions, mask):
    errors = losses.masked_squared_error(
      predictions=predictions, targets=TARGETS, mask=mask
    )
    value = losses.reduce_squared_error(errors, mask, normalization)
    sums = metrics.error_sums(
      predictions=predictions, targets=TARGETS, mask=mask
    )
    return value + sums.row_rmse

  for m in (mask, empty):
    grads = jax.grad(loss)(PREDICTIONS, m)
    assert np.all(np.isfinite(grads))
    np.testing.assert_array_equal(np.asarray(grads)[~np.asarray(m)], 0.0)
  assert loss(PREDICTIONS, empty) == 0.0


def test_summarize_leaves_no_nan_for_rows_without_ratings():
  mask = MASK.at[1].set(False)
  figures = metrics.summarize(
    metrics.error_sums(predictions=PREDICTIONS, targets=TARGETS, mask=mask)
  )
  # Only user 0 counts: sqrt((1 + 1) / 2) = 1 by both measures.
  np.testing.assert_allclose(figures["rmse"], 1.0)
  np.testing.assert_allclose(figures["course_rmse"], 1.0)
