"""The host side of a run: ``fit(config, data, workdir)``.

``fit`` builds the rows, compiles the epoch and evaluation programs once,
trains every member for ``config.epochs`` epochs, and writes into the
workdir: ``config.json``, ``metrics.jsonl`` (one object per epoch with one
value per member), ``checkpoints/`` (every ``config.checkpoint_every``
epochs and after the last), ``results.json``, ``learning_curves.png``,
and ``pretrain.jsonl`` when layers are pretrained first. Metrics leave the
device once per epoch.

A workdir that holds a run of the same config and data is resumed from its
latest checkpoint (see ``aejax.resume``); the result is bitwise the one an
uninterrupted run gives. A loss or state that stops being finite ends the
run with the epoch and the member named, and leaves the checkpoints as
they were.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from aejax import (
  batching,
  checkpoint,
  layer_trainers,
  metrics,
  parallel,
  pretrain,
  report,
  resume,
  train,
  variants,
)
from aejax.data.movielens import SplitData
from aejax.data.ratings import Rows
from aejax.models import autoencoder
from aejax.variants import Config

RESULT_METRICS = ("rmse", "mae", "course_rmse")


class NonFiniteLossError(FloatingPointError):
  """A member's training loss, or its state, became NaN or infinite.

  Attributes:
    epoch: the 1-based epoch that produced it.
    member: the member's index.
    last_checkpoint: the epoch of the newest checkpoint kept, or None.
  """

  def __init__(
    self,
    epoch: int,
    member: int,
    settings: dict[str, float],
    quantity: str = "training loss",
    last_checkpoint: int | None = None,
    checkpoint_dir: os.PathLike | str | None = None,
  ):
    self.epoch = epoch
    self.member = member
    self.last_checkpoint = last_checkpoint
    if last_checkpoint is None:
      kept = "no checkpoint was saved before it"
    else:
      kept = (
        f"the last good checkpoint, of epoch {last_checkpoint}, is kept in "
        f"{checkpoint_dir}"
      )
    super().__init__(
      f"non-finite {quantity} at epoch {epoch} in member {member} "
      f"({_describe(settings)}); {kept}"
    )


def _describe(settings: dict[str, float]) -> str:
  return ", ".join(f"{k}={v:g}" for k, v in sorted(settings.items()))


def _finite_members(tree) -> jax.Array:
  """Per member: whether every float in ``tree`` (member axis first) is
  finite."""
  flags = [
    jnp.isfinite(leaf).reshape(leaf.shape[0], -1).all(axis=1)
    for leaf in jax.tree.leaves(tree)
    if jnp.issubdtype(leaf.dtype, jnp.floating)
  ]
  return jnp.stack(flags).all(axis=0)


def _replicated_output(mesh: Mesh | None) -> dict[str, Any]:
  # Under a mesh every process reads the flags, so each holds them all.
  if mesh is None:
    return {}
  return {"out_shardings": parallel.replicated(mesh)}


def _check_same_start(start: int, workdir: pathlib.Path) -> None:
  """Checks that every process resumes after the same epoch.

  Also a barrier: no process writes into the workdir (nor opens its
  checkpoints, which orbax synchronises) before all have read it.
  """
  if jax.process_count() == 1:
    return
  found = np.asarray(multihost_utils.process_allgather(np.int32(start)))
  if np.any(found != start):
    raise resume.ResumeError(
      f"the processes found different checkpoints in {workdir} (epochs "
      f"{found.tolist()} by process); every process must see the same "
      "workdir"
    )


def _mean(values) -> float:
  # Records hold JSON values: None stands for NaN.
  return float(np.mean(np.asarray(values, np.float64)))


def _member_figures(totals: metrics.ErrorSums, prefix: str) -> dict:
  figures = metrics.summarize(totals)
  return {f"{prefix}_{name}": figures[name] for name in RESULT_METRICS}


def initial_output_bias(config: Config, rows: Rows) -> np.ndarray | None:
  """Each column's mean training rating (the global mean where a column has
  none), when ``config.output_bias`` asks for it; else None."""
  if config.output_bias == "zeros":
    return None
  return layer_trainers.column_means(rows)


def _pretrain(
  program: train.Program,
  states: train.TrainState,
  members: list[dict[str, float]],
  rows: Rows,
  path: pathlib.Path | None,
) -> train.TrainState:
  """``pretrain.pretrain`` on this process's default device, its records
  written to ``path`` (none when None), its divergence a
  ``NonFiniteLossError``."""
  # TODO: pretraining ignores the mesh - every process pretrains all the
  # members on one device, before the states are placed.
  device_rows = batching.DeviceRows.put(rows)
  if path is not None:
    path.unlink(missing_ok=True)
  writer = report.MetricsWriter(path) if path is not None else None
  try:
    return pretrain.pretrain(
      program,
      states,
      members,
      rows,
      device_rows,
      writer.write if writer is not None else None,
    )
  except pretrain.PretrainingDivergedError as error:
    raise NonFiniteLossError(
      error.epoch,
      error.member,
      members[error.member],
      quantity=f"pretraining loss of layer {error.layer}",
    ) from error
  finally:
    if writer is not None:
      writer.close()


def fit(
  config: Config,
  data: SplitData,
  workdir: os.PathLike | str,
  mesh: Mesh | None = None,
) -> dict[str, Any]:
  """Trains the members of ``config`` on ``data``; writes into ``workdir``.

  Args:
    config: a validated configuration.
    data: train and test ratings (the test rows are only scored: the
      model's input is always the training row).
    workdir: the run's folder; created if missing, resumed if it holds a
      checkpoint of this config and data. With several processes only
      process 0 writes the config, metrics, results and plots, while
      orbax writes the checkpoints from every process: each process must
      see the same folder.
    mesh: a device mesh (``aejax.parallel``) to split members and batch
      rows over; None trains on one device.

  Returns:
    The contents of ``results.json``.

  Raises:
    NonFiniteLossError: a member's loss or state was not finite; the epoch
      and the member are named, and the checkpoints are left as they were.
    resume.ResumeError: ``workdir`` holds a run of another config (every
      differing field is named) or of other data, or the processes found
      different checkpoints in it.
    DataError: ``workdir`` holds a ``config.json`` or ``metrics.jsonl``
      that cannot be read.
  """
  workdir = pathlib.Path(workdir)
  config = variants.validate(config)
  members = variants.members(config)
  parallel.check_layout(
    mesh,
    len(members),
    {
      "batch_size": config.batch_size,
      "eval_batch_size": config.eval_batch_size,
    },
  )
  fingerprint = resume.data_fingerprint(data)
  start = resume.start_epoch(workdir, config, fingerprint)
  _check_same_start(start, workdir)
  writes = jax.process_index() == 0

  train_rows = Rows.from_ratings(data.train, config.orientation)
  test_rows = Rows.from_ratings(data.test, config.orientation)
  program = train.make_program(config, train_rows.n_columns, members)
  states, hyper = train.init_members(
    program, members, initial_output_bias(config, train_rows)
  )
  n_params = autoencoder.count_parameters(
    jax.tree.map(lambda x: x[0], states.params)
  )
  logging.info(
    "%s on %s/%s (%s rows): %d rows x %d columns, %d train and %d test "
    "ratings, %d members of %d parameters, %s of devices %s",
    config.variant,
    data.name,
    data.split,
    config.orientation,
    train_rows.n_rows,
    train_rows.n_columns,
    train_rows.nnz,
    test_rows.nnz,
    len(members),
    n_params,
    parallel.describe(mesh),
    jax.devices(),
  )

  pretrain_seconds = 0.0
  if config.pretrain_epochs > 0 and not start:
    # A resumed run restores the fine-tuning's state; a fresh one (perhaps
    # after a crash while pretraining) pretrains from the beginning.
    started = time.perf_counter()
    states = _pretrain(
      program,
      states,
      members,
      train_rows,
      workdir / "pretrain.jsonl" if writes else None,
    )
    pretrain_seconds = time.perf_counter() - started
    logging.info("Pretrained in %.1f s", pretrain_seconds)

  states, hyper, device_rows = parallel.place(mesh, states, hyper, train_rows)
  if start:
    # Restored arrays take the placement of the template: here the
    # member sharding of the mesh.
    states = resume.restore(workdir, start, states)
  metrics_path = workdir / "metrics.jsonl"
  records = report.truncate_metrics(metrics_path, start, rewrite=writes)
  if writes:
    report.write_json(workdir / "config.json", config.to_json())
  test_data = train.eval_targets(
    train_rows,
    test_rows,
    config.eval_batch_size,
    inputs=device_rows,
    mesh=mesh,
  )
  started = time.perf_counter()
  epoch_fn = (
    train.make_epoch_fn(program, train_rows, config.batch_size, mesh)
    .lower(states, hyper, device_rows, np.int32(0))
    .compile()
  )
  eval_fn = (
    train.make_eval_fn(
      program, train_rows, test_rows, config.eval_batch_size, mesh
    )
    .lower(states.params, hyper, test_data)
    .compile()
  )
  finite_fn = (
    jax.jit(_finite_members, **_replicated_output(mesh)).lower(states).compile()
  )
  compile_seconds = time.perf_counter() - started
  logging.info("Compiled in %.1f s", compile_seconds)

  test_totals = None
  writer_context = (
    report.MetricsWriter(metrics_path) if writes else contextlib.nullcontext()
  )
  with (
    checkpoint.Checkpoints(workdir / "checkpoints") as checkpoints,
    writer_context as writer,
  ):
    for epoch in range(start, config.epochs):
      started = time.perf_counter()
      states, train_totals = epoch_fn(
        states, hyper, device_rows, np.int32(epoch)
      )
      test_totals = eval_fn(states.params, hyper, test_data)
      train_totals, test_totals, finite = jax.device_get(
        (train_totals, test_totals, finite_fn(states))
      )
      seconds = time.perf_counter() - started

      loss = train_totals.loss / np.maximum(train_totals.steps, 1)
      for quantity, ok in (
        ("training loss", np.isfinite(loss)),
        ("state (parameters or optimizer)", finite),
      ):
        if not ok.all():
          member = int(np.flatnonzero(~ok)[0])
          raise NonFiniteLossError(
            epoch + 1,
            member,
            members[member],
            quantity=quantity,
            last_checkpoint=checkpoints.latest_epoch(),
            checkpoint_dir=checkpoints.directory,
          )
      record = {
        "epoch": epoch + 1,
        "seconds": seconds,
        "train_loss": loss,
        **_member_figures(train_totals.errors, "train"),
        **_member_figures(test_totals, "test"),
      }
      # The JSON form, as a resumed run reads the earlier epochs back.
      record = report.jsonable(record)
      if writes:
        writer.write(record)
      records.append(record)
      if resume.checkpoint_due(epoch + 1, config):
        checkpoints.save(
          epoch + 1, states, metrics=record, info={"data": fingerprint}
        )
      logging.info(
        "epoch %d/%d  train loss %.4f  train RMSE %.4f  test RMSE %.4f  "
        "test course RMSE %.4f  %.2f s",
        epoch + 1,
        config.epochs,
        np.mean(loss),
        _mean(record["train_rmse"]),
        _mean(record["test_rmse"]),
        _mean(record["test_course_rmse"]),
        seconds,
      )
  if test_totals is None:
    # Resumed after its last epoch: nothing left to train, only to report.
    test_totals = jax.device_get(eval_fn(states.params, hyper, test_data))

  results = summarize_run(config, data, members, records[-1])
  results.update(
    seconds=sum(r["seconds"] for r in records),
    compile_seconds=compile_seconds,
    pretrain_seconds=pretrain_seconds,
    parameters=n_params,
    test_ratings=int(np.asarray(test_totals.count).reshape(-1)[0]),
  )
  if writes:
    report.write_json(workdir / "results.json", results)
    report.plot_learning_curves(
      records,
      workdir / "learning_curves.png",
      title=f"{config.variant} on {data.name} {data.split}",
    )
  return results


def summarize_run(
  config: Config,
  data: SplitData,
  members: list[dict[str, float]],
  last: dict[str, Any],
) -> dict[str, Any]:
  """``results.json``: identification, mean figures, and each member's."""
  names = [
    f"{split}_{m}" for split in ("train", "test") for m in RESULT_METRICS
  ]
  per_member = []
  for index, settings in enumerate(members):
    entry = dict(settings)
    entry.update(
      {name: float(np.asarray(last[name], np.float64)[index]) for name in names}
    )
    per_member.append(entry)
  results: dict[str, Any] = {
    "variant": config.variant,
    "dataset": data.name,
    "split": data.split,
    "orientation": config.orientation,
    "epochs": config.epochs,
    "n_members": len(members),
    "swept": [name for name, _ in config.sweep],
  }
  for name in names:
    values = np.asarray(last[name], np.float64)
    results[name] = float(values.mean())
    results[f"{name}_std"] = report.sample_std(values)
  results["members"] = per_member
  return results
