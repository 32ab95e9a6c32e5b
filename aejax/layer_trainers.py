"""How one layer of a stack is pretrained: denoising autoencoder or RBM.

A ``LayerTrainer`` initialises, updates and reads out one layer for
``aejax.pretrain``, which runs it on the codes of the layers below and
hands its weights (a ``Layer``) to the network.

- ``denoising_trainer`` (Vincent et al., 2010, "Stacked Denoising
  Autoencoders"): a one-hidden-layer denoising autoencoder ``n_in -> n_out
  -> n_in`` with masking noise, trained with the run's loss and optimizer.
  Its output layer is linear for layer 0 (it rebuilds ratings) and uses
  the hidden activation above (it rebuilds codes in ``(0, 1)``).
- ``rbm_trainer`` (Hinton and Salakhutdinov, 2006, "Reducing the
  Dimensionality of Data with Neural Networks"): a restricted Boltzmann
  machine trained by CD-1, the data being the hidden probabilities of the
  RBM below. It unrolls into ``W`` and ``W^T`` with its hidden and visible
  biases.

How ratings enter the first RBM: its visible units are Gaussian with unit
variance and take the raw ratings (1 to 5), and a row's unrated movies are
left out of its machine (their energy terms dropped, as Salakhutdinov,
Mnih and Hinton, 2007, do for RBM collaborative filtering). This is what
the unrolled network computes: its input holds 0 where unrated, so unrated
movies add nothing to the first layer, and its linear output layer is the
Gaussian mean ``b + W h``, scored on rated movies only. Ratings are not
rescaled: their spread (about 1.1) is close to the assumed unit variance.
The visible biases start at each movie's mean training rating. Scaling
ratings into ``[0, 1]`` for binary visible units would need a sigmoid
output and a different input than the network sees.

Departures from the papers, for one code path: every layer is trained with
the run's optimizer (RMSprop by default) at ``pretrain_learning_rate``,
not SGD with momentum, and the code layer is sigmoid like the others (the
deep autoencoder paper's code units were linear).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from aejax import metrics, optim, train
from aejax.data.ratings import Rows
from aejax.models import rbm


class Layer(NamedTuple):
  """The weights one pretrained layer hands to the network.

  Every array has the member axis first.

  Attributes:
    kernel: encoder kernel, ``(members, n_in, n_out)``.
    bias: encoder bias, ``(members, n_out)``.
    decoder_kernel: decoder kernel ``(members, n_out, n_in)``; None when
      the network's weights are tied.
    decoder_bias: decoder bias, ``(members, n_in)``.
  """

  kernel: jax.Array
  bias: jax.Array
  decoder_kernel: jax.Array | None
  decoder_bias: jax.Array


@dataclasses.dataclass(frozen=True)
class LayerTrainer:
  """How one layer is initialised, updated and read out.

  Attributes:
    init: ``(init_key, noise_key, shuffle_key, weight_decay) -> TrainState``
      of one member.
    step: ``(state, values, mask, noise_key) -> (state, StepMetrics)``,
      pure; leaves the state unchanged on a batch without data.
    export: ``params -> Layer`` (without the member axis).
  """

  init: Callable[..., train.TrainState]
  step: Callable[..., tuple[train.TrainState, train.StepMetrics]]
  export: Callable[[Any], Layer]


def column_means(rows: Rows) -> np.ndarray:
  """Mean rating of each column; the overall mean for unrated columns.

  ``mean_c = sum_{r in c} x_rc / n_c`` where ``n_c > 0``, else the mean of
  every rating (0 without any).

  Args:
    rows: the host training rows.

  Returns:
    ``(n_columns,)`` float32 means.
  """
  counts = np.bincount(rows.columns, minlength=rows.n_columns)
  sums = np.bincount(rows.columns, rows.values, minlength=rows.n_columns)
  overall = rows.values.mean() if rows.nnz else 0.0
  means = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
  return means.astype(np.float32)


def denoising_trainer(
  program: train.Program,
  layer: int,
  n_in: int,
  n_out: int,
  output_bias: np.ndarray | None = None,
) -> LayerTrainer:
  """A denoising autoencoder ``n_in -> n_out -> n_in`` for layer ``layer``.

  It minimises the run's masked squared error of ``g(f(x_tilde))`` against
  the clean ``x``, with ``x_tilde`` the input with masking noise at
  ``pretrain_noise_rate`` (Vincent et al., 2010). Its output activation is
  the network's for layer 0 and the hidden activation above; its output
  bias starts at ``output_bias`` when given (as the network's would). It
  learns at the constant ``pretrain_learning_rate``, whatever the run's
  schedule.

  Args:
    program: the run's program (its config sets the layer's).
    layer: the 0-based index of the encoder layer.
    n_in: the layer's input width.
    n_out: the layer's output width.
    output_bias: ``(n_in,)`` initial output bias, or None to keep the
      initialiser's.

  Returns:
    The layer's ``LayerTrainer``.
  """
  config = program.config
  layer_config = dataclasses.replace(
    config,
    hidden_sizes=(n_out,),
    output_activation=(
      config.output_activation if layer == 0 else config.activation
    ),
    k=0,
    k_start=0,
    noise_rate=config.pretrain_noise_rate,
    sparsity_weight=0.0,
    learning_rate=config.pretrain_learning_rate,
    # Pretraining's own rate, held constant: the run's schedule counts
    # fine-tuning steps, and the RBM's update has no schedule either.
    lr_schedule="constant",
    accumulate_gradients=False,
    sweep=(),
    pretrain_epochs=0,
  )
  settings = {
    "k": 0.0,
    "noise_rate": config.pretrain_noise_rate,
    "sparsity_weight": 0.0,
    "l2_weight": 0.0,
  }
  layer_program = train.make_program(layer_config, n_in, [settings])
  hyper = train.Hyper(
    k=jnp.int32(n_out),
    noise_rate=jnp.float32(config.pretrain_noise_rate),
    sparsity_weight=jnp.float32(0.0),
    l2_weight=jnp.float32(0.0),
  )

  def init(init_key, noise_key, shuffle_key, weight_decay):
    model = train.build_model(layer_config, n_in, init_key)
    if output_bias is not None:
      model.output_bias[...] = jnp.asarray(output_bias, jnp.float32)
    return train.new_state(
      model,
      layer_program.optimizer,
      learning_rate=config.pretrain_learning_rate,
      weight_decay=weight_decay,
      noise_key=noise_key,
      shuffle_key=shuffle_key,
    )

  def step(state, values, mask, noise_key):
    return train.train_step(
      layer_program, state, values, mask, noise_key, hyper
    )

  def export(params):
    pure = nnx.to_pure_dict(params)
    encoder = pure["encoder"][0]
    if config.tied:
      return Layer(
        encoder["kernel"], encoder["bias"], None, pure["decoder_biases"][0]
      )
    decoder = pure["decoder"][0]
    return Layer(
      encoder["kernel"], encoder["bias"], decoder["kernel"], decoder["bias"]
    )

  return LayerTrainer(init, step, export)


def rbm_trainer(
  program: train.Program,
  layer: int,
  n_in: int,
  n_out: int,
  visible_bias: np.ndarray | None,
) -> LayerTrainer:
  """An RBM with ``n_in`` visible and ``n_out`` hidden units, by CD-1.

  Layer 0 has Gaussian visible units on the ratings, starting from the
  biases ``visible_bias``; the layers above have binary visible units
  (see the module docstring). The CD-1 estimate of
  ``rbm.contrastive_divergence`` is followed by the run's optimizer, at the
  constant ``pretrain_learning_rate`` (Hinton and Salakhutdinov, 2006).

  Args:
    program: the run's program (its config sets the optimizer).
    layer: the 0-based index of the encoder layer; 0 is Gaussian.
    n_in: visible units.
    n_out: hidden units.
    visible_bias: ``(n_in,)`` initial visible biases, or None for zeros.

  Returns:
    The layer's ``LayerTrainer``.
  """
  config = program.config
  gaussian = layer == 0
  bias = None if visible_bias is None else jnp.asarray(visible_bias)
  graphdef, _ = nnx.split(
    nnx.eval_shape(
      lambda: rbm.RBM(n_in, n_out, gaussian_visible=gaussian, rngs=nnx.Rngs(0))
    ),
    nnx.Param,
  )
  optimizer = optim.make_optimizer(
    config.optimizer,
    learning_rate=config.pretrain_learning_rate,
    weight_decay=config.weight_decay,
    decay=config.rms_decay,
    eps=config.rms_eps,
  )

  def init(init_key, noise_key, shuffle_key, weight_decay):
    model = rbm.RBM(
      n_in,
      n_out,
      gaussian_visible=gaussian,
      visible_bias=bias,
      rngs=nnx.Rngs(params=init_key),
    )
    return train.new_state(
      model,
      optimizer,
      learning_rate=config.pretrain_learning_rate,
      weight_decay=weight_decay,
      noise_key=noise_key,
      shuffle_key=shuffle_key,
    )

  def step(state, values, mask, noise_key):
    grads, reconstruction = rbm.contrastive_divergence(
      graphdef, state.params, values, mask, noise_key
    )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    updated = state._replace(
      params=optax.apply_updates(state.params, updates),
      opt_state=opt_state,
      step=state.step + 1,
    )
    has_data = mask.any()
    state = jax.tree.map(
      lambda new, old: jnp.where(has_data, new, old), updated, state
    )
    errors = metrics.error_sums(
      predictions=reconstruction, targets=values, mask=mask
    )
    counted = has_data.astype(jnp.float32)
    mse = errors.squared / jnp.maximum(errors.count, 1.0)
    return state, train.StepMetrics(errors, mse * counted, counted)

  def export(params):
    pure = nnx.to_pure_dict(params)
    weights = pure["weights"]
    return Layer(weights, pure["hidden_bias"], weights.T, pure["visible_bias"])

  return LayerTrainer(init, step, export)
