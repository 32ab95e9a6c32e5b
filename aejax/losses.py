"""Reconstruction losses on observed ratings only.

Losses take keyword-only arrays and return element-wise values; masking and
reduction are explicit and separate, so that every caller states what it
averages over. Unobserved entries (``mask == 0``) get a zero error and hence
no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NORMALIZATIONS = ("observed", "columns", "sum")


def masked_squared_error(
  *, predictions: jax.Array, targets: jax.Array, mask: jax.Array
) -> jax.Array:
  """Element-wise ``m * (x_hat - x)^2``: zero wherever ``m`` is zero.

  The reconstruction error of Sedhain et al. (2015, AutoRec), summed only
  over observed ratings. ``jnp.where`` rather than a product keeps the
  unobserved entries exactly zero even when a prediction is not finite.

  Args:
    predictions: reconstructions ``x_hat``.
    targets: ratings ``x`` (any value where unobserved).
    mask: where a rating is observed (bool or 0/1).

  Returns:
    Squared errors, shaped like ``predictions``.
  """
  error = jnp.square(predictions - targets)
  return jnp.where(mask.astype(bool), error, 0.0)


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """``numerator / denominator``, and 0 where the denominator is 0.

  The division itself is guarded (the denominator is replaced by 1 before
  dividing), so neither the value nor its gradient is ever NaN.

  Args:
    numerator: the dividend.
    denominator: the divisor, broadcastable with ``numerator``.

  Returns:
    The quotient, 0 where ``denominator == 0``.
  """
  nonzero = denominator != 0
  return jnp.where(
    nonzero, numerator / jnp.where(nonzero, denominator, 1.0), 0.0
  )


def reduce_squared_error(
  errors: jax.Array, mask: jax.Array, normalization: str
) -> jax.Array:
  """Reduces element-wise errors of a ``(rows, columns)`` batch to a scalar.

  - ``"observed"``: ``sum(m * e) / sum(m)``, the mean over the batch's
    observed ratings (0 for a batch without any).
  - ``"columns"``: ``sum(m * e) / (n_columns * rows with a rating)``: per
    row, what PyTorch's ``MSELoss`` gives on an output zeroed where the
    target is unrated, as in the tutorial, averaged over the rows that hold
    a rating (padding and empty rows count nowhere).
  - ``"sum"``: ``sum(m * e)``, the batch's share of AutoRec's objective
    (Sedhain et al., 2015), which sums over every observed rating.

  Args:
    errors: element-wise errors, zero where unobserved.
    mask: the observed mask.
    normalization: ``"observed"``, ``"columns"`` or ``"sum"``.

  Returns:
    The scalar loss.

  Raises:
    ValueError: ``normalization`` is not one of the three.
  """
  if normalization == "observed":
    return safe_divide(errors.sum(), mask.sum(dtype=errors.dtype))
  if normalization == "columns":
    rows = mask.any(axis=-1).sum(dtype=errors.dtype)
    return safe_divide(errors.sum(), rows * errors.shape[-1])
  if normalization == "sum":
    return errors.sum()
  raise ValueError(
    f"unknown normalization {normalization!r}; known: "
    f"{', '.join(NORMALIZATIONS)}"
  )


def l2_penalty(kernels: list[jax.Array]) -> jax.Array:
  """AutoRec's weight penalty without its ``lambda``: ``1/2 sum ||W||_F^2``.

  Sedhain et al. (2015, "AutoRec: Autoencoders Meet Collaborative
  Filtering") regularise the encoder and decoder kernels, not the biases.

  Args:
    kernels: the weight matrices.

  Returns:
    ``0.5 * sum_W sum_ij W_ij^2``.
  """
  return 0.5 * sum(jnp.sum(jnp.square(kernel)) for kernel in kernels)
