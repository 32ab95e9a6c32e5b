"""A run's checkpoints with orbax: the latest, for resuming.

``Checkpoints`` wraps one ``orbax.checkpoint.CheckpointManager`` over a
folder (``<workdir>/checkpoints``). Each checkpoint is a step folder named
by its epoch holding two items: ``state``, any pytree of arrays (the
members' parameters, optimizer states with their injected
hyper-parameters, step counters and keys), and ``meta``, JSON (the epoch's
metrics and whatever the caller adds, such as a fingerprint of the data).

Orbax writes a checkpoint into a temporary folder and renames it when
complete, so a process killed mid-save leaves the previous checkpoint as
the latest; leftovers are removed when the folder is next opened. Saving
is asynchronous: the arrays are copied to the host before ``save`` returns,
the files are written while training goes on, and ``close`` waits.

Typed PRNG keys are stored as their raw key data and rewrapped on restore
with the key implementation of the template, so a restored key draws the
same numbers as the saved one.

Kept: the ``keep_latest`` newest checkpoints. Nothing is ranked here: one
figure would rank a whole checkpoint, all members together, so
``aejax.fit`` keeps each member's best parameters inside the state it
saves.
"""

from __future__ import annotations

import logging as python_logging
import os
import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from aejax import report

_STATE = "state"
_META = "meta"
_ORBAX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(ocp.__file__)))


class _OrbaxInfoFilter(python_logging.Filter):
  """Drops orbax's records below WARNING from absl's logger.

  Orbax logs some forty INFO lines through absl for every save, which
  would bury a run's one line per epoch; its warnings and errors pass.
  """

  def filter(self, record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or not (
      record.pathname.startswith(_ORBAX_DIR)
    )


def _install_filter() -> None:
  logger = python_logging.getLogger("absl")
  if not any(isinstance(f, _OrbaxInfoFilter) for f in logger.filters):
    logger.addFilter(_OrbaxInfoFilter())


class Restored(NamedTuple):
  """A restored checkpoint.

  Attributes:
    epoch: the epoch it was saved after.
    state: the pytree, shaped, typed and placed like the template.
    metrics: the metrics saved with it.
    info: the caller's extra JSON saved with it.
  """

  epoch: int
  state: Any
  metrics: dict[str, Any]
  info: dict[str, Any]


def _is_key(leaf: Any) -> bool:
  return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
    leaf.dtype, jax.dtypes.prng_key
  )


def _unwrap_keys(tree: Any) -> Any:
  return jax.tree.map(
    lambda leaf: jax.random.key_data(leaf) if _is_key(leaf) else leaf, tree
  )


def _rewrap_keys(tree: Any, like: Any) -> Any:
  return jax.tree.map(
    lambda leaf, template: (
      jax.random.wrap_key_data(leaf, impl=jax.random.key_impl(template))
      if _is_key(template)
      else leaf
    ),
    tree,
    like,
  )


class Checkpoints:
  """Saves and restores a run's state by epoch; keeps the latest.

  Use as a context manager (or call ``close``) so that a save still being
  written when the run stops, normally or by an exception, completes.
  """

  def __init__(self, directory: os.PathLike | str, *, keep_latest: int = 1):
    """Opens (or creates) the checkpoint folder ``directory``.

    Args:
      directory: the folder; created if missing.
      keep_latest: how many of the newest checkpoints to keep (at least 1).

    Raises:
      ValueError: ``keep_latest`` below 1.
    """
    if keep_latest < 1:
      raise ValueError(f"keep_latest must be at least 1, not {keep_latest}")
    _install_filter()
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep_latest,
      cleanup_tmp_directories=True,
      enable_async_checkpointing=True,
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=(_STATE, _META)
    )

  def save(
    self,
    epoch: int,
    state: Any,
    metrics: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None,
  ) -> None:
    """Saves ``state`` as the checkpoint of ``epoch``.

    Args:
      epoch: the number of epochs trained; checkpoints are named by it and
        a later epoch is a newer checkpoint.
      state: a pytree of arrays; typed PRNG keys are allowed.
      metrics: JSON-ready figures of this epoch, returned on restore.
      info: other JSON-ready facts to keep with the checkpoint.

    Raises:
      ValueError: a checkpoint of ``epoch`` exists already.
    """
    if epoch in self._manager.all_steps():
      raise ValueError(
        f"a checkpoint of epoch {epoch} exists already in {self.directory}"
      )
    meta = report.jsonable(
      {"epoch": epoch, "metrics": dict(metrics or {}), "info": dict(info or {})}
    )
    self._manager.save(
      epoch,
      args=ocp.args.Composite(
        **{
          _STATE: ocp.args.StandardSave(_unwrap_keys(state)),
          _META: ocp.args.JsonSave(meta),
        }
      ),
      force=True,
    )

  def epochs(self) -> list[int]:
    """The epochs of the checkpoints on disk, oldest first.

    Returns:
      The sorted epochs; empty when there is no checkpoint.
    """
    return sorted(self._manager.all_steps())

  def latest_epoch(self) -> int | None:
    """The newest checkpoint's epoch, or None when there is none.

    Returns:
      The latest epoch, or None.
    """
    return self._manager.latest_step()

  def restore(self, epoch: int, like: Any) -> Restored:
    """The checkpoint of ``epoch``, restored into the shape of ``like``.

    Args:
      epoch: a checkpoint's epoch (see ``epochs``).
      like: a pytree with the structure of the saved state whose leaves are
        arrays (for keys: key arrays of the wanted implementation) or
        ``jax.ShapeDtypeStruct`` s; restored arrays take their shapes,
        dtypes and shardings.

    Returns:
      The checkpoint.

    Raises:
      FileNotFoundError: no checkpoint of ``epoch``.
    """
    if epoch not in self._manager.all_steps():
      raise FileNotFoundError(
        f"no checkpoint of epoch {epoch} in {self.directory}"
      )
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _unwrap_keys(like))
    restored = self._manager.restore(
      epoch,
      args=ocp.args.Composite(
        **{
          _STATE: ocp.args.StandardRestore(target),
          _META: ocp.args.JsonRestore(),
        }
      ),
    )
    meta = restored[_META]
    return Restored(
      epoch=epoch,
      state=_rewrap_keys(restored[_STATE], like),
      metrics=meta.get("metrics", {}),
      info=meta.get("info", {}),
    )

  def info(self, epoch: int) -> dict[str, Any]:
    """The caller's extra JSON saved with the checkpoint of ``epoch``.

    Reads no arrays: a cheap check before anything is built or compiled.

    Args:
      epoch: a checkpoint's epoch (see ``epochs``).

    Returns:
      The ``info`` given to ``save``; empty when none was.

    Raises:
      FileNotFoundError: no checkpoint of ``epoch``.
    """
    if epoch not in self._manager.all_steps():
      raise FileNotFoundError(
        f"no checkpoint of epoch {epoch} in {self.directory}"
      )
    restored = self._manager.restore(
      epoch, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
    )
    return restored[_META].get("info", {})

  def restore_latest(self, like: Any) -> Restored | None:
    """The newest checkpoint (see ``restore``), or None when there is none.

    Args:
      like: the template of the restored state (see ``restore``).

    Returns:
      The restored checkpoint of ``latest_epoch``, or None.
    """
    epoch = self.latest_epoch()
    return None if epoch is None else self.restore(epoch, like)

  def wait(self) -> None:
    """Blocks until every save has been written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the folder."""
    self._manager.close()

  def __enter__(self) -> Checkpoints:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()
