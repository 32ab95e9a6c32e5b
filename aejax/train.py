"""The device side of training: state, one pure step, epochs and evaluation.

Every trained quantity carries a leading member axis: ``jax.vmap`` over
``init_members`` and over the epoch makes one compiled program train every
member of a run (seeds crossed with swept hyper-parameters). Swept values
travel as arrays (``Hyper`` and the optimizer's injected hyper-parameters),
never as Python constants, so a sweep compiles once.

An epoch is a ``lax.scan`` of ``train_step`` over fixed-shape batches that
are densified from CSR rows on the device. Nothing leaves the device inside
an epoch; the caller fetches the epoch's summed metrics once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from aejax import batching, losses, metrics, optim, parallel
from aejax.data.ratings import Rows
from aejax.models import autoencoder, sparsity
from aejax.variants import Config


class Hyper(NamedTuple):
  """Per-member hyper-parameters that the loss reads (the optimizer's own
  learning rate and weight decay live in its state).

  Attributes:
    k: units kept in the code layer (its full width when k-sparse is off).
    noise_rate: share of observed inputs zeroed during training.
    sparsity_weight: weight beta of the KL sparsity penalty.
    l2_weight: weight lambda of AutoRec's kernel penalty.
  """

  k: jax.Array
  noise_rate: jax.Array
  sparsity_weight: jax.Array
  l2_weight: jax.Array


class TrainState(NamedTuple):
  """One member's training state (with a leading member axis when batched).

  Attributes:
    params: the model's parameters (an ``nnx.State``).
    opt_state: the optimizer's state.
    step: number of parameter updates made.
    noise_key: root of the corruption noise; folded with epoch and batch.
    shuffle_key: root of the row order; folded with the epoch.
  """

  params: Any
  opt_state: Any
  step: jax.Array
  noise_key: jax.Array
  shuffle_key: jax.Array


class StepMetrics(NamedTuple):
  """Training metrics summed over steps: errors before each update, the
  loss (penalties included) and the number of updating steps; with item
  rows, also the per-user (column) sums that the course RMSE needs."""

  errors: metrics.ErrorSums
  loss: jax.Array
  steps: jax.Array
  columns: metrics.ColumnSums | None = None

  @classmethod
  def zeros(cls, n_columns: int | None = None) -> StepMetrics:
    """Metrics of no step yet: every sum a float32 zero.

    Args:
      n_columns: width of a row when per-column sums are kept (item rows);
        None keeps none.

    Returns:
      ``StepMetrics`` of zeros, with ``columns`` None unless
      ``n_columns`` is given.
    """
    zero = jnp.zeros((), jnp.float32)
    columns = None if n_columns is None else metrics.ColumnSums.zeros(n_columns)
    return cls(metrics.ErrorSums.zeros(), zero, zero, columns)

  def __add__(self, other: StepMetrics) -> StepMetrics:  # type: ignore[override]
    columns = None
    if self.columns is not None and other.columns is not None:
      columns = self.columns + other.columns
    return StepMetrics(
      self.errors + other.errors,
      self.loss + other.loss,
      self.steps + other.steps,
      columns,
    )


@dataclasses.dataclass(frozen=True)
class Program:
  """What the compiled functions close over: shapes and static choices.

  Attributes:
    config: the run's configuration.
    graphdef: the model's structure (``nnx.split``), without parameters.
    optimizer: the optax transformation.
    n_columns: width of a row.
    n_rows: number of training rows (scales the L2 penalty per batch).
    code_width: width of the code layer.
    use_top_k: some member keeps fewer than all code units.
    use_noise: some member corrupts its inputs.
    use_kl: some member has a KL sparsity weight.
    use_l2: some member has an L2 kernel penalty.
  """

  config: Config
  graphdef: Any
  optimizer: optax.GradientTransformation
  n_columns: int
  n_rows: int
  code_width: int
  use_top_k: bool
  use_noise: bool
  use_kl: bool
  use_l2: bool


def build_model(
  config: Config, n_columns: int, key: jax.Array
) -> autoencoder.Autoencoder:
  """An ``Autoencoder`` for ``config`` with parameters drawn from ``key``.

  Args:
    config: the run's configuration (hidden sizes, activations, tying and
      initialiser).
    n_columns: width of a row, the network's input and output.
    key: the member's ``init_key``.

  Returns:
    The model, its parameters in the ``params`` stream of ``key``.
  """
  return autoencoder.Autoencoder(
    n_columns,
    config.hidden_sizes,
    activation=config.activation,
    output_activation=config.output_activation,
    tied=config.tied,
    init=config.init,
    kernel_dims=config.kernel_dims,
    rngs=nnx.Rngs(params=key),
  )


def make_program(
  config: Config,
  n_columns: int,
  members: Sequence[dict[str, float]],
  n_rows: int = 1,
) -> Program:
  """The static part of a run, from its config and members.

  ``n_rows`` (the training rows) sets the L2 penalty's share per batch and
  the length of a learning-rate schedule:
  ``total_steps = epochs * ceil(n_rows / batch_size)``. A penalty or
  mechanism is compiled in only when some member uses it (``use_top_k``
  when some ``0 < k < code_width``, and so on).

  Args:
    config: the run's configuration.
    n_columns: width of a row.
    members: each member's settings (``variants.members``).
    n_rows: number of training rows with a rating.

  Returns:
    The ``Program``; the model is only traced for its structure, no
    parameter is drawn.
  """
  model = nnx.eval_shape(
    lambda: build_model(config, n_columns, jax.random.key(0))
  )
  graphdef, _ = nnx.split(model, nnx.Param)
  optimizer = optim.make_optimizer(
    config.optimizer,
    learning_rate=config.learning_rate,
    weight_decay=config.weight_decay,
    decay=config.rms_decay,
    eps=config.rms_eps,
    accumulate=config.accumulate_gradients,
    schedule=config.lr_schedule,
    total_steps=config.epochs * -(-n_rows // config.batch_size),
  )
  code_width = config.hidden_sizes[autoencoder.code_index(config.hidden_sizes)]
  return Program(
    config=config,
    graphdef=graphdef,
    optimizer=optimizer,
    n_columns=n_columns,
    n_rows=n_rows,
    code_width=code_width,
    use_top_k=any(0 < m["k"] < code_width for m in members),
    use_noise=any(m["noise_rate"] > 0 for m in members),
    use_kl=any(m["sparsity_weight"] > 0 for m in members),
    use_l2=any(m["l2_weight"] > 0 for m in members),
  )


def member_keys(seed_key: jax.Array) -> dict[str, jax.Array]:
  """The keys of one member, named by role, split once from its seed key.

  ``(init, noise, shuffle) = split(seed_key, 3)``; the seed key is
  ``jax.random.key(seed)``, so a member's keys depend on its seed alone.

  Args:
    seed_key: the member's ``jax.random.key(seed)``; may be traced.

  Returns:
    ``{"init": ..., "noise": ..., "shuffle": ...}``: the keys of the
    parameters' initialisation, the corruption noise and the row order.
  """
  init_key, noise_key, shuffle_key = jax.random.split(seed_key, 3)
  return {"init": init_key, "noise": noise_key, "shuffle": shuffle_key}


def new_state(
  model: nnx.Module,
  optimizer: optax.GradientTransformation,
  *,
  learning_rate: jax.Array | float,
  weight_decay: jax.Array | float,
  noise_key: jax.Array,
  shuffle_key: jax.Array,
) -> TrainState:
  """A member's state before its first step: ``model``'s parameters, a
  fresh optimizer state carrying the member's learning rate and weight
  decay (``optim.init_member_state``), step 0 and the member's keys.

  Args:
    model: the initialised network (an autoencoder, or an RBM when
      pretraining).
    optimizer: the run's optimizer.
    learning_rate: the member's learning rate.
    weight_decay: the member's weight decay.
    noise_key: the member's corruption-noise key.
    shuffle_key: the member's row-order key.

  Returns:
    The ``TrainState``.
  """
  _, params = nnx.split(model, nnx.Param)
  opt_state = optim.init_member_state(
    optimizer, params, learning_rate=learning_rate, weight_decay=weight_decay
  )
  return TrainState(
    params, opt_state, jnp.zeros((), jnp.int32), noise_key, shuffle_key
  )


def init_members(
  program: Program,
  members: Sequence[dict[str, float]],
  output_bias: np.ndarray | None = None,
) -> tuple[TrainState, Hyper]:
  """Initial states and hyper-parameters of all members, stacked.

  Member ``i`` depends only on its own seed and settings: a run of one
  member reproduces member ``i`` of a larger run.

  Args:
    program: the run's static part.
    members: each member's seed and hyper-parameters.
    output_bias: ``(n_columns,)`` initial output bias for every member, or
      None to keep the initialiser's.

  Returns:
    ``TrainState`` with a leading member axis (step 0, keys from
    ``member_keys``) and the members' ``Hyper``.
  """
  config, n_columns = program.config, program.n_columns

  def init_one(
    seed_key: jax.Array, learning_rate: jax.Array, weight_decay: jax.Array
  ) -> TrainState:
    keys = member_keys(seed_key)
    model = build_model(config, n_columns, keys["init"])
    if output_bias is not None:
      model.output_bias[...] = jnp.asarray(output_bias, jnp.float32)
    return new_state(
      model,
      program.optimizer,
      learning_rate=learning_rate,
      weight_decay=weight_decay,
      noise_key=keys["noise"],
      shuffle_key=keys["shuffle"],
    )

  seed_keys = jnp.stack([jax.random.key(int(m["seed"])) for m in members])
  column = lambda name: jnp.asarray([m[name] for m in members], jnp.float32)
  states = jax.jit(jax.vmap(init_one))(
    seed_keys, column("learning_rate"), column("weight_decay")
  )
  return states, member_hyper(program, members)


def member_hyper(
  program: Program, members: Sequence[dict[str, float]]
) -> Hyper:
  """The loss's hyper-parameters of all members, stacked.

  Args:
    program: the run's static part (the code width for ``k = 0``).
    members: each member's settings (``variants.members``).

  Returns:
    ``Hyper`` with a leading member axis.
  """
  column = lambda name: jnp.asarray([m[name] for m in members], jnp.float32)
  k = [int(m["k"]) if m["k"] > 0 else program.code_width for m in members]
  return Hyper(
    k=jnp.asarray(k, jnp.int32),
    noise_rate=column("noise_rate"),
    sparsity_weight=column("sparsity_weight"),
    l2_weight=column("l2_weight"),
  )


def schedule_epochs(config: Config) -> int:
  """Epochs over which the k schedule lowers k; 0 when there is none.

  It depends on ``config.epochs``, which a resumed run may therefore not
  change (``aejax.resume.check_config``):
  ``E = max(1, round(k_schedule_fraction * epochs))`` when ``k_start > 0``.

  Args:
    config: the run's configuration.

  Returns:
    ``E``, or 0 when ``config.k_start`` is 0.
  """
  if config.k_start == 0:
    return 0
  return max(1, round(config.k_schedule_fraction * config.epochs))


def scheduled_k(config: Config, k: jax.Array, epoch: jax.Array) -> jax.Array:
  """Code units each member keeps while training in epoch ``epoch``.

  ``k_e = round(k_0 + (k - k_0) e / E)`` for ``e < E`` and ``k`` after,
  with ``k_0 = config.k_start``, ``E`` the schedule's epochs and ``e``
  counted from 0: training starts with many units and lowers the count to
  the target (Makhzani and Frey, 2013, "k-Sparse Autoencoders": keeping
  few units from the first epoch leaves the others dead for good).

  Args:
    config: the run's configuration (``k_start``, ``k_schedule_fraction``,
      ``epochs``).
    k: each member's target k, int32.
    epoch: the 0-based epoch; may be traced.

  Returns:
    The k of each member for this epoch, int32, shaped like ``k``.
  """
  ramp = schedule_epochs(config)
  if ramp == 0:
    return k
  progress = jnp.asarray(epoch, jnp.float32) / ramp
  falling = jnp.rint(config.k_start + (k - config.k_start) * progress)
  return jnp.where(progress < 1.0, falling.astype(k.dtype), k)


def evaluation_k(config: Config, k: jax.Array, code_width: int) -> jax.Array:
  """Code units kept at evaluation: ``min(round(alpha k), code_width)``.

  Makhzani and Frey (2013) train with ``k`` units and encode with the
  ``alpha k`` largest (``alpha >= 1``, ``config.eval_k_multiplier``).

  Args:
    config: the run's configuration (``eval_k_multiplier``).
    k: each member's training k, an integer array.
    code_width: width of the code layer.

  Returns:
    The k of each member at evaluation, shaped and typed like ``k``.
  """
  kept = jnp.rint(config.eval_k_multiplier * k.astype(jnp.float32))
  return jnp.minimum(kept.astype(k.dtype), code_width)


def reconstruct(
  program: Program, params: Any, inputs: jax.Array, hyper: Hyper
) -> tuple[jax.Array, jax.Array]:
  """``(reconstruction, code)`` of a batch of rows by one member.

  ``h = g(x)`` and ``x_hat = f(h)`` with ``g`` the encoder and ``f`` the
  decoder; when the program uses top-k, the code keeps its ``hyper.k``
  largest units (Makhzani and Frey, 2013, "k-Sparse Autoencoders").

  Args:
    program: the run's static part.
    params: one member's parameters, in the model's layout.
    inputs: ``(batch, n_columns)`` input rows.
    hyper: the member's hyper-parameters.

  Returns:
    ``x_hat``, shaped like ``inputs``, and the code ``h``,
    ``(batch, code_width)``.
  """
  model = nnx.merge(program.graphdef, params)
  k = hyper.k if program.use_top_k else None
  return model(inputs, k=k)


def corrupt(
  values: jax.Array, noise_key: jax.Array, noise_rate: jax.Array
) -> jax.Array:
  """Masking noise: each input is zeroed with probability ``noise_rate``.

  ``x_tilde = x * z`` with ``z ~ Bernoulli(1 - p)`` element-wise (Vincent et
  al., 2008, "Extracting and Composing Robust Features with Denoising
  Autoencoders"). Unobserved inputs are zero already, so only observed
  ratings are affected.

  Args:
    values: the input rows, 0 where unobserved.
    noise_key: the key of this batch's noise.
    noise_rate: ``p``, a scalar in ``[0, 1]``.

  Returns:
    ``x_tilde``, shaped like ``values``.
  """
  keep = jax.random.bernoulli(noise_key, 1.0 - noise_rate, values.shape)
  return jnp.where(keep, values, 0.0)


def loss_fn(
  params: Any,
  program: Program,
  values: jax.Array,
  mask: jax.Array,
  noise_key: jax.Array,
  hyper: Hyper,
) -> tuple[jax.Array, jax.Array]:
  """The training objective of one batch and its reconstruction.

  ``L = reduce(m * (f(x_tilde) - x)^2) + beta sum_j KL(rho || rho_hat_j)
  + (B / N) (lambda / 2) sum_W ||W||^2 + (B / N) (lambda_s / 2) sum K^2``
  where ``x_tilde`` is ``x`` with masking noise (denoising), ``reduce`` is
  the configured normalisation, ``rho_hat_j`` is unit ``j``'s mean code
  activation over the batch's non-empty rows (sparse autoencoders), and
  the ``lambda`` term is AutoRec's kernel penalty (Sedhain et al., 2015) in
  proportion to the batch's ``B`` non-empty rows out of the ``N`` training
  rows, so that an epoch of ``"sum"`` losses adds up to AutoRec's
  objective. With a local kernel (``kernel_dims > 0``) the ``lambda_s`` term
  pulls its values ``K`` towards 0 (Muller, Martel and Indiveri, 2018).
  Each term after the first is compiled in only when some member uses it
  (``program.use_noise``, ``use_kl``, ``use_l2``) or, for the kernel's,
  when ``kernel_weight > 0``.

  Args:
    params: one member's parameters, in the model's layout.
    program: the run's static part.
    values: ``(batch, n_columns)`` ratings, 0 where unobserved.
    mask: where ``values`` holds a rating.
    noise_key: the key of this batch's corruption noise.
    hyper: the member's hyper-parameters.

  Returns:
    The scalar loss ``L`` and the reconstruction ``f(x_tilde)``.
  """
  inputs = values
  if program.use_noise:
    inputs = corrupt(values, noise_key, hyper.noise_rate)
  reconstruction, code = reconstruct(program, params, inputs, hyper)
  errors = losses.masked_squared_error(
    predictions=reconstruction, targets=values, mask=mask
  )
  loss = losses.reduce_squared_error(
    errors, mask, program.config.loss_normalization
  )
  if program.use_kl:
    has_rating = mask.any(axis=-1, keepdims=True)
    n_rows = has_rating.sum(dtype=jnp.float32)
    mean_code = losses.safe_divide(
      jnp.where(has_rating, code, 0.0).sum(axis=0), n_rows
    )
    penalty = sparsity.kl_sparsity(
      mean_activation=mean_code, target=program.config.sparsity_target
    ).sum()
    loss = loss + hyper.sparsity_weight * jnp.where(n_rows > 0, penalty, 0.0)
  if program.use_l2:
    kernels = [
      leaf
      for path, leaf in jax.tree_util.tree_leaves_with_path(params)
      if any(getattr(entry, "key", None) == "kernel" for entry in path)
    ]
    share = mask.any(axis=-1).sum(dtype=jnp.float32) / program.n_rows
    loss = loss + hyper.l2_weight * share * losses.l2_penalty(kernels)
  if program.config.kernel_weight > 0:
    model = nnx.merge(program.graphdef, params)
    share = mask.any(axis=-1).sum(dtype=jnp.float32) / program.n_rows
    penalty = model.kernel_penalty()
    loss = loss + program.config.kernel_weight * share * penalty
  return loss, reconstruction


def train_step(
  program: Program,
  state: TrainState,
  values: jax.Array,
  mask: jax.Array,
  noise_key: jax.Array,
  hyper: Hyper,
  *,
  skip_empty: bool = True,
  canonical_params: Any = None,
) -> tuple[TrainState, StepMetrics]:
  """One update of one member on one batch; pure.

  A batch without any observed rating (padding) leaves the state untouched,
  as the tutorial skips users without ratings.

  Args:
    program: the run's static part.
    state: the member's state.
    values: ``(batch, n_columns)`` ratings, 0 where unobserved.
    mask: where ``values`` holds a rating.
    noise_key: the key of this batch's corruption noise.
    hyper: the member's hyper-parameters.
    skip_empty: guard against a batch without ratings. A caller that never
      passes one may turn the guard off: it keeps XLA from updating the
      state in place.
    canonical_params: ``None`` when ``state`` is in the model's own layout;
      else ``state`` is in the step layout (``to_step_layout``) and this
      holds the canonical parameters' shapes.

  Returns:
    The new state and the batch's metrics, measured before the update.
  """

  def objective(params):
    if canonical_params is not None:
      params = from_step_layout(params, canonical_params)
    return loss_fn(params, program, values, mask, noise_key, hyper)

  (loss, reconstruction), grads = jax.value_and_grad(objective, has_aux=True)(
    state.params
  )
  updates, opt_state = program.optimizer.update(
    grads, state.opt_state, state.params
  )
  params = optax.apply_updates(state.params, updates)
  updated = state._replace(
    params=params, opt_state=opt_state, step=state.step + 1
  )
  has_data = mask.any()
  if skip_empty:
    updated = jax.tree.map(
      lambda new, old: jnp.where(has_data, new, old), updated, state
    )
  errors = metrics.error_sums(
    predictions=reconstruction, targets=values, mask=mask
  )
  columns = None
  if program.config.orientation == "item":
    columns = metrics.column_sums(
      predictions=reconstruction, targets=values, mask=mask
    )
  counted = has_data.astype(jnp.float32)
  return updated, StepMetrics(errors, loss * counted, counted, columns)


# TODO: XLA:CPU gives each updated array (parameter, squared average,
# gradient sum) its own loop over the data, so a one-row step reads and
# writes about twice the bytes a single fused pass would - a multi-output
# update would bring the course epoch near its memory limit.

# XLA:CPU vectorises an element-wise loop along its minor axis, so the
# optimizer's update of a kernel with a narrow minor axis (1682 x 20) runs
# several times slower than that of its transpose (20 x 1682).
_NARROW = 128


def _is_narrow(shape: tuple[int, ...]) -> bool:
  return len(shape) >= 2 and shape[-1] < min(shape[-2], _NARROW)


def to_step_layout(tree: Any) -> Any:
  """Swaps the last two axes of every leaf whose minor axis is narrow.

  ``x -> x^T`` (over the last two axes) where ``x`` is at least 2-D and its
  last axis is shorter than both its second-last axis and 128. Training
  carries parameters and optimizer state in this layout through an epoch.
  It changes no result, because every optimizer of ``aejax.optim`` acts
  element-wise, and the step hands the model its parameters back in their
  own layout (``from_step_layout``).

  Args:
    tree: parameters or optimizer state, in the model's layout.

  Returns:
    The same tree with the narrow leaves transposed.
  """
  return jax.tree.map(
    lambda x: jnp.swapaxes(x, -1, -2) if _is_narrow(x.shape) else x, tree
  )


def from_step_layout(tree: Any, canonical: Any) -> Any:
  """Undoes ``to_step_layout``.

  Args:
    tree: a tree in the step layout.
    canonical: the same tree's leaves (or their ``jax.ShapeDtypeStruct``)
      in the model's layout, which tell the transposed leaves apart.

  Returns:
    ``tree`` in the model's layout.
  """
  return jax.tree.map(
    lambda x, like: jnp.swapaxes(x, -1, -2) if _is_narrow(like.shape) else x,
    tree,
    canonical,
  )


def make_epoch_fn(
  program: Program, rows: Rows, batch_size: int, mesh: Mesh | None = None
) -> jax.stages.Wrapped:
  """A jitted ``epoch(states, hyper, rows, epoch) -> (states, metrics)``.

  ``rows`` are the host training rows (``aejax.data.ratings.Rows``); the
  rows visited and the batch capacity are fixed here, so every epoch
  reuses one program. An epoch visits only rows with ratings (as the
  tutorial skips users without any), so no batch is empty and the step
  needs no guard. Each member shuffles its rows with its own key folded
  with the epoch, unless the config keeps them in index order. A k-sparse
  member keeps ``scheduled_k`` code units in the epoch. With item rows, the
  course RMSE is taken over users (the columns).

  With a ``mesh`` (see ``aejax.parallel``) members are split over its
  ``members`` axis and the rows of every batch over its ``data`` axis; the
  states and hyper-parameters must then be placed with
  ``parallel.member_sharding`` and the rows replicated. A device's share of
  the last batch may be all padding; the batch as a whole is not, and the
  step sees the whole batch.

  Args:
    program: the run's static part.
    rows: the host training rows.
    batch_size: rows per step.
    mesh: the device mesh, or None for one device.

  Returns:
    The jitted ``epoch``; it donates ``states`` and returns the members'
    ``StepMetrics`` summed over the epoch (``columns`` None).
  """
  visited = np.flatnonzero(rows.lengths > 0).astype(np.int32)
  n_columns = program.n_columns
  densify = parallel.densifier(mesh, rows, batch_size, n_columns)

  def member_epoch(state, hyper, device_rows, epoch):
    if program.use_top_k:
      hyper = hyper._replace(k=scheduled_k(program.config, hyper.k, epoch))
    order = batching.epoch_row_order(
      jax.random.fold_in(state.shuffle_key, epoch),
      len(visited),
      batch_size,
      shuffle=program.config.shuffle,
      row_ids=visited,
    )
    epoch_noise_key = jax.random.fold_in(state.noise_key, epoch)
    canonical = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
      (state.params, state.opt_state),
    )
    state = state._replace(
      params=to_step_layout(state.params),
      opt_state=to_step_layout(state.opt_state),
    )

    def body(carry, xs):
      state, totals = carry
      index, row_ids = xs
      values, mask = densify(device_rows, row_ids)
      noise_key = jax.random.fold_in(epoch_noise_key, index)
      state, step_metrics = train_step(
        program,
        state,
        values,
        mask,
        noise_key,
        hyper,
        skip_empty=False,
        canonical_params=canonical[0],
      )
      return (state, totals + step_metrics), None

    indices = jnp.arange(order.shape[0], dtype=jnp.int32)
    by_column = program.config.orientation == "item"
    zeros = StepMetrics.zeros(n_columns if by_column else None)
    (state, totals), _ = jax.lax.scan(body, (state, zeros), (indices, order))
    state = state._replace(
      params=from_step_layout(state.params, canonical[0]),
      opt_state=from_step_layout(state.opt_state, canonical[1]),
    )
    if by_column:
      errors = metrics.course_from_columns(totals.errors, totals.columns)
      totals = totals._replace(errors=errors, columns=None)
    return state, totals

  if mesh is None:
    batched = jax.vmap(member_epoch, in_axes=(0, 0, None, None))
    return jax.jit(batched, donate_argnums=0)
  batched = jax.vmap(
    member_epoch, in_axes=(0, 0, None, None), spmd_axis_name=parallel.MEMBERS
  )
  members = parallel.member_sharding(mesh)
  everywhere = parallel.replicated(mesh)
  return jax.jit(
    batched,
    donate_argnums=0,
    in_shardings=(members, members, everywhere, everywhere),
    # Metrics are replicated so that every process can read them.
    out_shardings=(members, everywhere),
  )
