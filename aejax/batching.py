"""Dense batches built on the device from sparse rows.

The rows of a data set stay in CSR form on the device. A batch is a fixed
number of row indices (``-1`` for padding); ``densify`` gathers those rows'
entries into a flat buffer of fixed capacity and scatters them into a dense
``(batch, n_columns)`` block. Every batch of a run has the same shape, so
the training loop compiles once, and memory grows with the batch, not with
the data set.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aejax.data.ratings import Rows


class DeviceRows(NamedTuple):
  """CSR rows as device arrays (see ``aejax.data.ratings.Rows``)."""

  indptr: jax.Array
  columns: jax.Array
  values: jax.Array

  @classmethod
  def host(cls, rows: Rows) -> DeviceRows:
    """The arrays to copy, still on the host (numpy).

    Args:
      rows: the host rows.

    Returns:
      ``rows``' CSR arrays; with no entry at all, ``columns`` and
      ``values`` hold one zero so that gathers have a target.
    """
    # An empty data set still needs one entry so that gathers have a target.
    columns = rows.columns if rows.nnz else np.zeros(1, np.int32)
    values = rows.values if rows.nnz else np.zeros(1, np.float32)
    return cls(rows.indptr, columns, values)

  @classmethod
  def put(
    cls, rows: Rows, sharding: jax.sharding.Sharding | None = None
  ) -> DeviceRows:
    """Copies host rows to the device (replicated under ``sharding``).

    Args:
      rows: the host rows.
      sharding: where to place each array, whole; None places it on the
        default device.

    Returns:
      The arrays of ``host(rows)``, on the device.
    """
    return cls(*(jax.device_put(a, sharding) for a in cls.host(rows)))


def densify(
  rows: DeviceRows,
  row_ids: jax.Array,
  *,
  n_columns: int,
  capacity: int,
) -> tuple[jax.Array, jax.Array]:
  """Dense ``(values, mask)`` of the rows ``row_ids``; ``-1`` is an empty row.

  Entry ``j`` of the flat buffer belongs to the batch row ``b`` with
  ``begin_b <= j < end_b`` (prefix sums of the row lengths) and sits at
  CSR position ``indptr[row_b] + j - begin_b``. Entries past the batch's
  total go to an out-of-range column and are dropped by the scatter.

  Args:
    rows: the CSR rows.
    row_ids: ``(batch,)`` int32 row indices, ``-1`` for padding.
    n_columns: width of a dense row.
    capacity: buffer size; at least the batch's number of entries (use
      ``Rows.batch_capacity``). Entries beyond it would be lost.

  Returns:
    ``values`` float32 and ``mask`` bool, both ``(batch, n_columns)``.
  """
  batch = row_ids.shape[0]
  valid_row = row_ids >= 0
  safe_row = jnp.where(valid_row, row_ids, 0)
  starts = rows.indptr[safe_row]
  lengths = jnp.where(valid_row, rows.indptr[safe_row + 1] - starts, 0)
  ends = jnp.cumsum(lengths)
  begins = ends - lengths

  flat = jnp.arange(capacity, dtype=ends.dtype)
  owner = jnp.searchsorted(ends, flat, side="right")
  in_use = owner < batch
  owner = jnp.minimum(owner, batch - 1)
  position = starts[owner] + flat - begins[owner]
  position = jnp.clip(position, 0, rows.columns.shape[0] - 1)
  column = jnp.where(in_use, rows.columns[position], n_columns)
  value = rows.values[position]

  values = jnp.zeros((batch, n_columns), jnp.float32)
  values = values.at[owner, column].set(value, mode="drop")
  mask = jnp.zeros((batch, n_columns), bool)
  mask = mask.at[owner, column].set(True, mode="drop")
  return values, mask


def epoch_row_order(
  key: jax.Array,
  n_rows: int,
  batch_size: int,
  shuffle: bool = True,
  row_ids: np.ndarray | None = None,
) -> jax.Array:
  """Row indices of one epoch as ``(n_batches, batch_size)``, ``-1`` padded.

  ``n_batches = ceil(n_rows / batch_size)``; only the last batch is padded,
  so every batch holds at least one of the rows.

  Args:
    key: the shuffle key of this epoch.
    n_rows: how many rows the epoch visits.
    batch_size: rows per batch.
    shuffle: visit the rows in a random order (else in the given order).
    row_ids: the ``n_rows`` row indices to visit; ``arange(n_rows)`` when
      omitted.

  Returns:
    int32 row indices.

  Raises:
    ValueError: ``row_ids`` does not hold ``n_rows`` rows.
  """
  if row_ids is not None and len(row_ids) != n_rows:
    raise ValueError(f"row_ids holds {len(row_ids)} rows, not {n_rows}")
  n_batches = -(-n_rows // batch_size)
  order = (
    jax.random.permutation(key, n_rows) if shuffle else jnp.arange(n_rows)
  ).astype(jnp.int32)
  if row_ids is not None:
    order = jnp.asarray(row_ids, jnp.int32)[order]
  padding = n_batches * batch_size - n_rows
  order = jnp.concatenate([order, jnp.full((padding,), -1, jnp.int32)])
  return order.reshape(n_batches, batch_size)


def fixed_row_order(rows: np.ndarray, batch_size: int) -> np.ndarray:
  """Host version for evaluation: the given rows in batches, ``-1`` padded.

  The rows keep their order; ``n_batches = max(ceil(n / batch_size), 1)``,
  so even no row gives one batch, of padding only.

  Args:
    rows: the ``n`` row indices to visit.
    batch_size: rows per batch.

  Returns:
    ``(n_batches, batch_size)`` int32 row indices.
  """
  n_batches = max(-(-len(rows) // batch_size), 1)
  padded = np.full(n_batches * batch_size, -1, np.int32)
  padded[: len(rows)] = rows
  return padded.reshape(n_batches, batch_size)
