"""The host side of a run: ``fit(config, data, workdir)``.

``fit`` carves a validation set from the training ratings (when the config
asks for one), builds the rows, compiles the epoch and evaluation programs
once, and trains every member. Each epoch it scores the validation ratings,
keeps each member's best parameters on the device and stops early when
none improves. The test ratings are read once, after training, to score the
selected parameters, each setting's ensemble and the baselines. The
workdir receives ``config.json``, ``metrics.jsonl`` (one object per epoch
with one value per member), ``checkpoints/`` (every
``config.checkpoint_every`` epochs and after the last), ``results.json``,
``learning_curves.png``, ``selected.npz``, and ``pretrain.jsonl`` when
layers are pretrained first. Metrics leave the device once per epoch.

A workdir that holds a run of the same config and data is resumed from its
latest checkpoint (see ``aejax.resume``), which carries the training state
and, with a validation set, each member's best parameters so far and the
early-stopping bookkeeping; the result is bitwise the one an uninterrupted
run gives. A loss or state that stops being finite ends the run with the
epoch and the member named, and leaves the checkpoints as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from aejax import (
  baselines,
  batching,
  checkpoint,
  evaluation,
  export,
  layer_trainers,
  metrics,
  parallel,
  pretrain,
  report,
  resume,
  selection,
  train,
  variants,
)
from aejax.data import movielens
from aejax.data.movielens import SplitData
from aejax.data.ratings import Ratings, Rows
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


def _figures(totals: metrics.ErrorSums, prefix: str) -> dict:
  figures = metrics.summarize(totals)
  return {f"{prefix}_{name}": figures[name] for name in RESULT_METRICS}


def initial_output_bias(config: Config, rows: Rows) -> np.ndarray | None:
  """The output bias a run starts from: column means, or None.

  Each column's mean training rating (the global mean where a column has
  none, ``layer_trainers.column_means``) unless ``config.output_bias`` is
  ``zeros``.

  Args:
    config: the run's configuration.
    rows: the host training rows.

  Returns:
    ``(n_columns,)`` float32 means, or None to keep the initialiser's
    bias.
  """
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
  # TODO: pretraining ignores the mesh, so every process pretrains all the
  # members on one device before the states are placed - pretrain the
  # placed states with the epoch's mesh shardings.
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


def ensemble_groups(config: Config, n_members: int) -> list[list[int]]:
  """The members of each setting's ensemble (all its seeds), or none.

  Args:
    config: the run's config; ensembles need ``ensemble`` and two seeds.
    n_members: members of the run, ordered settings outer and seeds inner
      (``variants.members``).

  Returns:
    One list of member indices per setting, or an empty list.
  """
  if not config.ensemble or config.seeds < 2:
    return []
  return [
    list(range(start, start + config.seeds))
    for start in range(0, n_members, config.seeds)
  ]


def selection_predictors(config: Config, n_members: int) -> np.ndarray:
  """For each member, the predictor whose validation RMSE chooses its epoch.

  Args:
    config: the run's config.
    n_members: members of the run.

  Returns:
    ``(n_members,)`` indices into the predictors of
    ``evaluation.predictor_weights``: the member itself, or its ensemble's
    row when the config scores ensembles.
  """
  chosen = np.arange(n_members)
  for offset, group in enumerate(ensemble_groups(config, n_members)):
    chosen[group] = n_members + offset
  return chosen


def fit(
  config: Config,
  data: SplitData,
  workdir: os.PathLike | str,
  mesh: Mesh | None = None,
) -> dict[str, Any]:
  """Trains the members of ``config`` on ``data``; writes into ``workdir``.

  Args:
    config: a validated configuration.
    data: train and test ratings, and optionally validation ratings; when
      it has none, ``config.valid_fraction`` of the training ratings
      become the validation set. The model's input is always the training
      row; validation ratings choose each member's epoch; test ratings
      are scored once, at the end.
    workdir: the run's folder; created if missing, resumed if it holds a
      checkpoint of this config and data. With several processes only
      process 0 writes the config, metrics, results, plots and
      ``selected.npz``, while orbax writes the checkpoints from every
      process: each process must see the same folder.
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
    ValueError: the validation set holds no rating.
  """
  workdir = pathlib.Path(workdir)
  config = variants.validate(config)
  members = variants.members(config)
  if data.valid is None:
    data = movielens.with_validation(data, config.valid_fraction, config.seed)
  if data.valid is not None and not len(data.valid):
    raise ValueError(
      f"the validation set holds no rating; raise valid_fraction "
      f"({config.valid_fraction}) or pass validation ratings"
    )
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

  orientation = config.orientation
  train_rows = Rows.from_ratings(data.train, orientation)
  biases = baselines.fit_biases(data.train, config.bias_regularization)
  scoring = evaluation.make_scoring(
    train_rows,
    biases if config.cold_start_predictor == "bias" else None,
    orientation,
  )
  program = train.make_program(
    config,
    train_rows.n_columns,
    members,
    # An epoch visits the rows that hold a rating.
    int(np.count_nonzero(train_rows.lengths)),
  )
  states, hyper = train.init_members(
    program, members, initial_output_bias(config, train_rows)
  )
  n_params = autoencoder.count_parameters(
    jax.tree.map(lambda x: x[0], states.params)
  )
  logging.info(
    "%s on %s/%s (%s rows): %d rows x %d columns, %d train, %d validation "
    "and %d test ratings, %d members of %d parameters, %s of devices %s",
    config.variant,
    data.name,
    data.split,
    orientation,
    train_rows.n_rows,
    train_rows.n_columns,
    train_rows.nnz,
    len(data.valid) if data.valid is not None else 0,
    len(data.test),
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
  run = _Run(
    states=states,
    best=_init_best(states.params, mesh) if data.valid is not None else None,
    stopping=selection.EarlyStopping.create(config.patience, len(members)),
  )
  if start:
    # Restored arrays take the placement of the template: here the
    # member sharding of the mesh.
    run = run.restored(workdir, start)
  metrics_path = workdir / "metrics.jsonl"
  records = report.truncate_metrics(metrics_path, start, rewrite=writes)
  if writes:
    report.write_json(workdir / "config.json", config.to_json())

  weights = jnp.asarray(
    evaluation.predictor_weights(
      len(members), ensemble_groups(config, len(members))
    )
  )
  if mesh is not None:
    weights = parallel.put(weights, parallel.replicated(mesh))
  started = time.perf_counter()
  epoch_fn = (
    train.make_epoch_fn(program, train_rows, config.batch_size, mesh)
    .lower(run.states, hyper, device_rows, np.int32(0))
    .compile()
  )
  place = _Placement(mesh, device_rows)
  validator = None
  if data.valid is not None:
    validator = _Evaluator(
      program, config, train_rows, data.valid, scoring, place
    )
    validator.compile(run.states.params, hyper, weights)
  finite_fn = (
    jax.jit(_finite_members, **_replicated_output(mesh))
    .lower(run.states)
    .compile()
  )
  compile_seconds = time.perf_counter() - started
  logging.info("Compiled in %.1f s", compile_seconds)

  writer_context = (
    report.MetricsWriter(metrics_path) if writes else contextlib.nullcontext()
  )
  with (
    checkpoint.Checkpoints(workdir / "checkpoints") as checkpoints,
    writer_context as writer,
  ):
    run = _train(
      config,
      members,
      _Programs(epoch_fn, validator, finite_fn),
      run,
      hyper,
      device_rows,
      _Outputs(writer, checkpoints, records, fingerprint),
      start,
    )
  selected = run.best.params if run.best is not None else run.states.params
  final = _final_figures(
    config,
    data,
    program,
    selected,
    hyper,
    weights,
    validator,
    train_rows,
    scoring,
    place,
  )
  results = summarize_run(config, data, members, records, run.stopping, final)
  results.update(
    seconds=sum(r["seconds"] for r in records),
    compile_seconds=compile_seconds,
    pretrain_seconds=pretrain_seconds,
    parameters=n_params,
    train_ratings=len(data.train),
    valid_ratings=len(data.valid) if data.valid is not None else 0,
    # As counted by the scorer: cold-start ratings included.
    test_ratings=int(final["figures"]["test"]["count"][0]),
    epochs_run=len(records),
    # Which ratings the run saw, so that a finished run is never read back
    # with other data (``aejax.runs``).
    data_fingerprint=fingerprint,
  )
  if writes:
    export.save_selected(workdir, _on_host(selected), scoring)
    report.write_json(workdir / "results.json", results)
    report.plot_learning_curves(
      records,
      workdir / "learning_curves.png",
      title=f"{config.variant} on {data.name} {data.split}",
      series=("train_rmse", "valid_rmse"),
    )
  return results


def _init_best(params: Any, mesh: Mesh | None) -> selection.Best:
  """``selection.init_best``, split over the mesh's members like params."""
  best = selection.init_best(params)
  if mesh is None:
    return best
  return parallel.put(best, parallel.member_sharding(mesh))


def _on_host(tree: Any) -> Any:
  """Numpy copies of the global values of ``tree``, in every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


class _Placement(NamedTuple):
  """Where evaluation runs: the mesh (or None) and the training rows
  already placed there."""

  mesh: Mesh | None
  inputs: batching.DeviceRows


@dataclasses.dataclass
class _Run:
  """What training carries from epoch to epoch, and what a checkpoint
  holds: the members' states, with a validation set each member's best
  parameters so far, and the early-stopping bookkeeping."""

  states: train.TrainState
  best: selection.Best | None
  stopping: selection.EarlyStopping
  stopped: bool = False

  def saved_tree(self) -> Any:
    # Without validation the checkpoint is the training state alone.
    if self.best is None:
      return self.states
    return {"states": self.states, "best": self.best}

  def saved_info(self, fingerprint: str) -> dict[str, Any]:
    return {
      "data": fingerprint,
      "best_epoch": self.stopping.best_epoch.tolist(),
      "stopped": self.stopped,
    }

  def restored(self, workdir: pathlib.Path, epoch: int) -> _Run:
    """This run as the checkpoint of ``epoch`` in ``workdir`` left it."""
    saved = resume.restore_checkpoint(workdir, epoch, self.saved_tree())
    states, best = saved.state, None
    if self.best is not None:
      states, best = saved.state["states"], selection.Best(*saved.state["best"])
    stopping = selection.EarlyStopping(
      self.stopping.patience,
      np.asarray(
        saved.info.get("best_epoch", [epoch] * len(self.stopping.best_epoch)),
        np.int64,
      ),
    )
    return _Run(states, best, stopping, bool(saved.info.get("stopped")))


class _Programs(NamedTuple):
  epoch_fn: Any
  validator: _Evaluator | None
  finite_fn: Any


class _Outputs(NamedTuple):
  writer: report.MetricsWriter | None  # None: another process writes
  checkpoints: checkpoint.Checkpoints
  records: list[dict[str, Any]]
  fingerprint: str


class _Evaluator:
  """A compiled evaluation of one held-out set, reusable with new params."""

  def __init__(self, program, config, train_rows, ratings, scoring, place):
    self.rows = Rows.from_ratings(ratings, config.orientation)
    self.targets = evaluation.eval_targets(
      train_rows,
      self.rows,
      config.eval_batch_size,
      scoring,
      inputs=place.inputs,
      mesh=place.mesh,
    )
    self.fn = evaluation.make_eval_fn(
      program, train_rows, self.rows, config.eval_batch_size, place.mesh
    )

  def compile(self, params, hyper, weights) -> None:
    """Compiles for these shapes; ``weights`` become the default."""
    self.fn = self.fn.lower(params, hyper, self.targets, weights).compile()
    self.weights = weights

  def __call__(self, params, hyper, weights) -> metrics.ErrorSums:
    return self.fn(params, hyper, self.targets, weights)


def _train(
  config: Config,
  members: list[dict[str, float]],
  programs: _Programs,
  run: _Run,
  hyper: train.Hyper,
  device_rows: batching.DeviceRows,
  outputs: _Outputs,
  start: int,
) -> _Run:
  """The epochs after ``start``: train, validate, keep each member's best
  parameters (by its own validation RMSE, or by its ensemble's), save
  checkpoints, stop early; returns the run as it ends.

  Each epoch's record is appended to ``outputs.records`` and written.
  """
  n_members = len(members)
  validator = programs.validator
  judge = jnp.asarray(selection_predictors(config, n_members))
  states, best, stopping = run.states, run.best, run.stopping
  epochs = [] if run.stopped else range(start, config.epochs)
  for epoch in epochs:
    started = time.perf_counter()
    states, train_totals = programs.epoch_fn(
      states, hyper, device_rows, np.int32(epoch)
    )
    valid_totals = improved = None
    if validator is not None:
      valid_totals = validator(states.params, hyper, validator.weights)
      judged = jax.tree.map(lambda x: x[judge], valid_totals)
      best, improved = selection.update_best(best, states.params, judged)
    train_totals, valid_totals, improved, finite = jax.device_get(
      (train_totals, valid_totals, improved, programs.finite_fn(states))
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
          last_checkpoint=outputs.checkpoints.latest_epoch(),
          checkpoint_dir=outputs.checkpoints.directory,
        )
    record = {
      "epoch": epoch + 1,
      "seconds": seconds,
      "train_loss": loss,
      **_figures(train_totals.errors, "train"),
    }
    stop = False
    if validator is not None:
      figures = _figures(valid_totals, "valid")
      record.update({k: v[:n_members] for k, v in figures.items()})
      if len(figures["valid_rmse"]) > n_members:
        record["ensemble_valid_rmse"] = figures["valid_rmse"][n_members:]
      stop = stopping.update(epoch + 1, improved)
    else:
      stopping.update(epoch + 1, np.ones(n_members, bool))
    # The JSON form, as a resumed run reads the earlier epochs back.
    record = report.jsonable(record)
    if outputs.writer is not None:
      outputs.writer.write(record)
    outputs.records.append(record)
    run = _Run(states, best, stopping, stop)
    if stop or resume.checkpoint_due(epoch + 1, config):
      outputs.checkpoints.save(
        epoch + 1,
        run.saved_tree(),
        metrics=record,
        info=run.saved_info(outputs.fingerprint),
      )
    figures = [epoch + 1, config.epochs, np.mean(loss)]
    figures.append(_mean(record["train_rmse"]))
    if validator is None:
      logging.info(
        "epoch %d/%d  train loss %.4f  train RMSE %.4f  %.2f s",
        *figures,
        seconds,
      )
    else:
      logging.info(
        "epoch %d/%d  train loss %.4f  train RMSE %.4f  valid RMSE %.4f  "
        "%.2f s",
        *figures,
        _mean(record["valid_rmse"]),
        seconds,
      )
    if stop:
      logging.info(
        "No validation improvement for %d epochs: stopping after epoch %d",
        config.patience,
        epoch + 1,
      )
      break
  return _Run(states, best, stopping, run.stopped)


def _final_figures(
  config: Config,
  data: SplitData,
  program: train.Program,
  params,
  hyper: train.Hyper,
  weights: jax.Array,
  validator: _Evaluator | None,
  train_rows: Rows,
  scoring: evaluation.Scoring,
  place: _Placement,
) -> dict[str, Any]:
  """Validation and test figures of every predictor and baseline.

  The only place that reads the test ratings: once, after training, with
  the selected parameters. Ranking needs every row's predictions; it runs
  on one device, from host copies of the parameters.
  """
  held_out = {"test": data.test}
  if validator is not None:
    held_out["valid"] = data.valid
  figures: dict[str, dict[str, np.ndarray]] = {}
  for split, ratings in held_out.items():
    evaluator = (
      validator
      if split == "valid"
      else _Evaluator(program, config, train_rows, ratings, scoring, place)
    )
    totals = jax.device_get(evaluator(params, hyper, weights))
    figures[split] = metrics.summarize(totals)

  known = _rating_mask(data.train, data.valid)
  relevant = _rating_mask(
    data.test.subset(data.test.values >= config.relevance_threshold)
  )
  ranking = _ranking(
    config,
    program,
    _on_host(params),
    _on_host(hyper),
    _on_host(weights),
    train_rows,
    scoring,
    known,
    relevant,
  )
  return {
    "figures": figures,
    "ranking": ranking,
    "baselines": _baselines(config, data, known, relevant),
  }


def _rating_mask(*parts: Ratings | None) -> np.ndarray:
  """``(n_users, n_items)``: where any of ``parts`` holds a rating."""
  present = [p for p in parts if p is not None]
  mask = np.zeros((present[0].n_users, present[0].n_items), bool)
  for ratings in present:
    mask[ratings.users, ratings.items] = True
  return mask


def _ranking(
  config: Config,
  program: train.Program,
  params,
  hyper: train.Hyper,
  weights: jax.Array,
  train_rows: Rows,
  scoring: evaluation.Scoring,
  known: np.ndarray,
  relevant: np.ndarray,
) -> list[dict[str, float]]:
  """Recall@K and NDCG@K of each predictor, from unclipped scores."""
  # TODO: every user x item score lands on one device and the host (90 MB
  # a predictor at ML-1M, 15 GB at ML-20M) - rank batches of users on the
  # device, keeping only each one's top K, before data sets grow further.
  order = jnp.asarray(
    batching.fixed_row_order(
      np.arange(train_rows.n_rows, dtype=np.int32), config.eval_batch_size
    )
  )
  predict_fn = evaluation.make_predict_fn(
    program, train_rows, config.eval_batch_size, clip=False
  )
  inputs = batching.DeviceRows.put(train_rows)
  out = []
  for index in range(weights.shape[0]):
    scores = np.asarray(
      predict_fn(
        params, hyper, inputs, order, scoring, weights[index : index + 1]
      )
    )[0, : train_rows.n_rows]
    if config.orientation == "item":
      scores = scores.T
    out.append(
      metrics.ranking_figures(
        scores=scores,
        known=known,
        relevant=relevant,
        cutoffs=config.ranking_cutoffs,
      )
    )
  return out


def _baselines(
  config: Config, data: SplitData, known: np.ndarray, relevant: np.ndarray
) -> list[dict[str, Any]]:
  """Every baseline, estimated from the training ratings, scored as the
  models are (clipped to the training range; ranked unclipped)."""
  low, high = data.train.values.min(), data.train.values.max()
  out = []
  for name in baselines.BASELINES:
    predictor = baselines.fit_baseline(
      name, data.train, config.bias_regularization
    )
    entry: dict[str, Any] = {"name": name}
    for split, ratings in (("valid", data.valid), ("test", data.test)):
      if ratings is None:
        continue
      predictions = np.clip(
        predictor.predict(ratings.users, ratings.items), low, high
      )
      figures = metrics.rating_figures(
        users=ratings.users, predictions=predictions, targets=ratings.values
      )
      entry.update({f"{split}_{m}": figures[m] for m in RESULT_METRICS})
    # Scores constant across a user's items would rank by item index.
    if np.any(predictor.item != 0):
      scores = predictor.mean + predictor.user[:, None] + predictor.item[None]
      ranking = metrics.ranking_figures(
        scores=scores,
        known=known,
        relevant=relevant,
        cutoffs=config.ranking_cutoffs,
      )
      entry.update(_prefixed(ranking, "test"))
    out.append(entry)
  return out


def _prefixed(ranking: dict[str, float], prefix: str) -> dict[str, float]:
  return {
    f"{prefix}_{name}": value
    for name, value in ranking.items()
    if name != "ranked_users"
  }


def summarize_run(
  config: Config,
  data: SplitData,
  members: list[dict[str, float]],
  records: list[dict[str, Any]],
  stopping: selection.EarlyStopping,
  final: dict[str, Any],
) -> dict[str, Any]:
  """The content of ``results.json``, from a finished run's figures.

  It holds the run's identification, mean figures, each member's, each
  ensemble's and each baseline's, and the predictor that validation
  selects (``selected``: the ensemble, or without ensembles the member,
  with the lowest validation RMSE; its figures also as ``selected_*``;
  without validation ratings the last one, with ``on_validation`` False).

  A member's training figures are those of its selected epoch; its
  validation and test figures are scored after training with its selected
  parameters. Top-level figures are means over members (``_std``: their
  sample standard deviation).

  Args:
    config: the run's configuration.
    data: the run's splits (their names).
    members: each member's settings.
    records: the run's per-epoch records, epoch 1 first.
    stopping: each member's best epoch.
    final: the held-out ``figures`` (one entry per predictor: members,
      then ensembles), ``ranking`` and ``baselines`` scored after training.

  Returns:
    The results, ready for ``report.write_json``.
  """
  n_members = len(members)
  per_member = []
  for index, settings in enumerate(members):
    entry: dict[str, Any] = dict(settings)
    epoch = int(stopping.best_epoch[index])
    entry["selected_epoch"] = epoch
    record = records[epoch - 1] if epoch > 0 else records[-1]
    for name in RESULT_METRICS:
      entry[f"train_{name}"] = float(record[f"train_{name}"][index])
    entry.update(_predictor_figures(final, index))
    per_member.append(entry)

  results: dict[str, Any] = {
    "variant": config.variant,
    "dataset": data.name,
    "split": data.split,
    "orientation": config.orientation,
    "epochs": config.epochs,
    "n_members": n_members,
    "swept": [name for name, _ in config.sweep],
  }
  names = [
    k for k in per_member[0] if k.startswith(("train_", "valid_", "test_"))
  ]
  for name in names:
    values = np.asarray([m[name] for m in per_member], np.float64)
    results[name] = float(values.mean())
    results[f"{name}_std"] = report.sample_std(values)
  results["members"] = per_member

  ensembles = []
  for offset, group in enumerate(ensemble_groups(config, n_members)):
    entry = {k: v for k, v in members[group[0]].items() if k != "seed"}
    entry["seeds"] = [int(members[i]["seed"]) for i in group]
    entry.update(_predictor_figures(final, n_members + offset))
    ensembles.append(entry)
  results["ensembles"] = ensembles
  if len(ensembles) == 1:
    results.update(
      {
        f"ensemble_{k}": v
        for k, v in ensembles[0].items()
        if k.startswith(("valid_", "test_"))
      }
    )
  results["selected"] = _selected(ensembles or per_member, bool(ensembles))
  results.update(
    {
      f"selected_{k}": v
      for k, v in results["selected"].items()
      if k.startswith(("valid_", "test_"))
    }
  )
  results["baselines"] = final["baselines"]
  return results


def _selected(candidates: list[dict[str, Any]], ensembles: bool) -> dict:
  """The candidate with the lowest validation RMSE, named as such; without
  a validation set nothing is chosen, and the last candidate stands for
  the run (``on_validation`` is then False)."""
  valid = [c.get("valid_rmse") for c in candidates]
  on_validation = all(v is not None and np.isfinite(v) for v in valid)
  index = int(np.argmin(valid)) if on_validation else len(candidates) - 1
  kind = "ensemble" if ensembles else "member"
  return {
    "predictor": f"{kind} {index}",
    "on_validation": on_validation,
    **candidates[index],
  }


def _predictor_figures(final: dict[str, Any], index: int) -> dict[str, float]:
  out = {}
  for split, figures in final["figures"].items():
    for name in RESULT_METRICS:
      out[f"{split}_{name}"] = float(figures[name][index])
  out.update(_prefixed(final["ranking"][index], "test"))
  return out
