"""Rating triples, and the sparse rows that the models read.

``Ratings`` holds one rating per entry as parallel arrays of dense user and
item indices. ``Rows`` turns a ``Ratings`` into compressed sparse rows (CSR):
one row per user (user-based models, as in the tutorial) or one per item
(item-based models such as I-AutoRec). Batches are densified from these rows
on demand; the full users x items matrix is never built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Ratings:
  """Observed ratings as parallel arrays.

  Attributes:
    users: int32 dense user indices in ``[0, n_users)``.
    items: int32 dense item indices in ``[0, n_items)``.
    values: float32 ratings.
    n_users: number of users of the data set (train and test together).
    n_items: number of items of the data set.

  Raises:
    ValueError: on construction, when the three arrays differ in length.
  """

  users: np.ndarray
  items: np.ndarray
  values: np.ndarray
  n_users: int
  n_items: int

  def __post_init__(self) -> None:
    n = len(self.values)
    if len(self.users) != n or len(self.items) != n:
      raise ValueError(
        f"users, items and values differ in length: {len(self.users)}, "
        f"{len(self.items)}, {n}"
      )

  def __len__(self) -> int:
    return len(self.values)

  def subset(self, index: np.ndarray) -> Ratings:
    """The ratings at ``index`` (an index or boolean array).

    Args:
      index: integer positions or a boolean mask over the ratings.

    Returns:
      The selected ratings, of the same data set (``n_users``,
      ``n_items``).
    """
    return dataclasses.replace(
      self,
      users=self.users[index],
      items=self.items[index],
      values=self.values[index],
    )

  def mean(self) -> float:
    """Mean rating, or 0 when there are no ratings.

    Returns:
      ``mean(values)`` as a Python float, or 0.0.
    """
    return float(self.values.mean()) if len(self) else 0.0


def concatenate(parts: Sequence[Ratings]) -> Ratings:
  """Joins ratings of the same data set.

  Args:
    parts: at least one ``Ratings``; the first one's ``n_users`` and
      ``n_items`` are kept.

  Returns:
    The parts' ratings one after the other, in order.
  """
  first = parts[0]
  return Ratings(
    users=np.concatenate([p.users for p in parts]),
    items=np.concatenate([p.items for p in parts]),
    values=np.concatenate([p.values for p in parts]),
    n_users=first.n_users,
    n_items=first.n_items,
  )


@dataclasses.dataclass(frozen=True)
class Rows:
  """Compressed sparse rows: row r holds ``columns[indptr[r]:indptr[r+1]]``.

  Attributes:
    indptr: int32 offsets of shape ``(n_rows + 1,)``.
    columns: int32 column indices, sorted within each row.
    values: float32 ratings aligned with ``columns``.
    n_columns: width of a dense row.
  """

  indptr: np.ndarray
  columns: np.ndarray
  values: np.ndarray
  n_columns: int

  @property
  def n_rows(self) -> int:
    """Number of rows (users or items), empty ones included."""
    return len(self.indptr) - 1

  @property
  def nnz(self) -> int:
    """Number of observed entries over all rows."""
    return int(self.indptr[-1])

  @property
  def lengths(self) -> np.ndarray:
    """Number of observed entries of each row."""
    return np.diff(self.indptr)

  @classmethod
  def from_ratings(cls, ratings: Ratings, orientation: str = "user") -> Rows:
    """Builds rows of users (``"user"``) or of items (``"item"``).

    Entries are sorted by row, then column.

    Args:
      ratings: the ratings.
      orientation: ``"user"``: one row per user over ``n_items`` columns;
        ``"item"``: one row per item over ``n_users`` columns.

    Returns:
      The CSR rows, one per user or item of the data set.

    Raises:
      ValueError: an unknown orientation, or more ratings than int32
        offsets can count.
    """
    if orientation == "user":
      row, col = ratings.users, ratings.items
      n_rows, n_columns = ratings.n_users, ratings.n_items
    elif orientation == "item":
      row, col = ratings.items, ratings.users
      n_rows, n_columns = ratings.n_items, ratings.n_users
    else:
      raise ValueError(f"orientation must be user or item, not {orientation!r}")
    # One int64 key sorts several times faster than lexsort on two arrays.
    key = row.astype(np.int64) * max(n_columns, 1) + col
    order = np.argsort(key, kind="stable")
    del key
    counts = np.bincount(row, minlength=n_rows)
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    if indptr[-1] >= np.iinfo(np.int32).max:
      raise ValueError(f"{indptr[-1]} ratings overflow int32 offsets")
    return cls(
      indptr=indptr.astype(np.int32),
      columns=col[order].astype(np.int32),
      values=ratings.values[order].astype(np.float32),
      n_columns=n_columns,
    )

  def densify(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``(values, mask)`` of the given rows, for small checks.

    A row index of -1 gives an empty row. The training loop does the same
    on the device (``aejax.batching``); this host version is its reference.

    Args:
      rows: row indices, -1 for an empty row.

    Returns:
      float32 ``values`` and bool ``mask``, each ``(len(rows),
      n_columns)``.
    """
    rows = np.asarray(rows)
    values = np.zeros((len(rows), self.n_columns), np.float32)
    mask = np.zeros((len(rows), self.n_columns), bool)
    for out, row in enumerate(rows):
      if row < 0:
        continue
      lo, hi = self.indptr[row], self.indptr[row + 1]
      values[out, self.columns[lo:hi]] = self.values[lo:hi]
      mask[out, self.columns[lo:hi]] = True
    return values, mask

  def batch_capacity(self, batch_size: int) -> int:
    """Entries that any batch of ``batch_size`` distinct rows can hold.

    The sum of the ``batch_size`` longest rows: a fixed bound that lets
    every batch of a run share one shape, whatever the shuffle.

    Args:
      batch_size: rows per batch.

    Returns:
      The bound, at least 1.
    """
    lengths = np.sort(self.lengths)[::-1]
    return max(int(lengths[:batch_size].sum()), 1)
