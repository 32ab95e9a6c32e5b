"""Model selection on validation ratings: best parameters and early stopping.

Each member keeps the parameters of its epoch with the lowest validation
RMSE. The copy lives on the device and is refreshed with a ``jnp.where``
over the member axis, inside one jitted function, so choosing costs no
transfer beyond the epoch's metrics. Early stopping is a host decision
taken from those metrics. Only validation ratings enter either choice.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aejax import losses, metrics


class Best(NamedTuple):
  """Each member's best parameters so far and their validation RMSE.

  Attributes:
    params: parameters with a leading member axis.
    rmse: ``(n_members,)`` validation RMSE of those parameters (``inf``
      before the first evaluation).
  """

  params: Any
  rmse: jax.Array


def init_best(params: Any) -> Best:
  """The ``Best`` before any evaluation.

  Args:
    params: the members' parameters (member axis first).

  Returns:
    A device copy of ``params`` (so that donating the training state
    leaves it intact) with a validation RMSE of ``inf`` per member.
  """
  copy = jax.tree.map(jnp.copy, params)
  n_members = jax.tree.leaves(params)[0].shape[0]
  return Best(copy, jnp.full((n_members,), jnp.inf, jnp.float32))


def _update_best(
  best: Best, params, valid: metrics.ErrorSums
) -> tuple[Best, jax.Array]:
  rmse = jnp.sqrt(losses.safe_divide(valid.squared, valid.count))
  rmse = jnp.where(valid.count > 0, rmse, jnp.nan)
  # A NaN RMSE compares False: a diverged member keeps its best.
  improved = rmse < best.rmse

  def choose(old, new):
    where = improved.reshape((-1,) + (1,) * (new.ndim - 1))
    return jnp.where(where, new, old)

  chosen = jax.tree.map(choose, best.params, params)
  return Best(chosen, jnp.where(improved, rmse, best.rmse)), improved


update_best = jax.jit(_update_best, donate_argnums=0)
update_best.__doc__ = """Keeps, per member, the parameters with the lower
validation RMSE: ``params`` where ``sqrt(squared / count) < best.rmse``.

Args:
  best: the current ``Best`` (donated).
  params: this epoch's parameters, member axis first.
  valid: this epoch's validation ``ErrorSums``, one per member.

Returns:
  The new ``Best`` and the ``(n_members,)`` mask of members that improved.
"""


@dataclasses.dataclass
class EarlyStopping:
  """Host bookkeeping of each member's best epoch, and when to stop.

  Training stops once ``patience`` epochs have passed since the last epoch
  in which any member improved its validation RMSE (``patience = 0``
  never stops).

  Attributes:
    patience: epochs without improvement before stopping.
    best_epoch: ``(n_members,)`` 1-based epoch of each member's best
      parameters (0 before any improvement).
  """

  patience: int
  best_epoch: np.ndarray

  @classmethod
  def create(cls, patience: int, n_members: int) -> EarlyStopping:
    """Bookkeeping before the first epoch: no member has improved yet.

    Args:
      patience: epochs without improvement before stopping (0: never).
      n_members: number of members.

    Returns:
      An ``EarlyStopping`` whose ``best_epoch`` is all zeros.
    """
    return cls(patience, np.zeros(n_members, np.int64))

  def update(self, epoch: int, improved: np.ndarray) -> bool:
    """Records the members that improved at ``epoch``; True means stop.

    Stop when ``patience > 0`` and ``epoch - max_m best_epoch_m >=
    patience``.

    Args:
      epoch: the 1-based epoch just evaluated.
      improved: ``(n_members,)`` mask of members that improved in it.

    Returns:
      Whether training should stop after ``epoch``.
    """
    self.best_epoch[np.asarray(improved, bool)] = epoch
    if self.patience == 0:
      return False
    return epoch - int(self.best_epoch.max()) >= self.patience
