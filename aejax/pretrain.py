"""Greedy layer-wise pretraining of a mirrored autoencoder.

For hidden sizes ``(h_1, ..., h_c, ..., h_1)`` the encoder layers map
``n -> h_1 -> ... -> h_c``. Layer ``l`` is trained alone, on the codes
that the already pretrained layers below it give each training row (layer
0 on the rating rows themselves), either as a denoising autoencoder
(Vincent et al., 2010, "Stacked Denoising Autoencoders") or as an RBM
trained by CD-1 (Hinton and Salakhutdinov, 2006, "Reducing the
Dimensionality of Data with Neural Networks"). ``aejax.layer_trainers``
says how each kind is trained, and how ratings enter the first RBM.

Layer ``l``'s encoder becomes encoder layer ``l`` of the network and its
decoder the mirrored decoder layer; an RBM unrolls into ``W`` and ``W^T``
with its hidden and visible biases. ``fit`` then fine-tunes the whole
network from exactly these weights. With ``pretrain_epochs = 0`` nothing
here runs and training is plain training of the same network.

Every member is pretrained at once (``jax.vmap``), each layer's epoch is
one jitted ``lax.scan`` compiled once, and metrics leave the device once
per epoch. Each member draws its pretraining keys from a stream of its own
(its seed key folded with ``PRETRAIN_STREAM``), apart from the keys of
``train.member_keys``: pretraining changes no other key of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from aejax import batching, layer_trainers, optim, train
from aejax.data.ratings import Rows
from aejax.models import autoencoder
from aejax.variants import Config

# Folded into a member's seed key to derive its pretraining keys; any fixed
# value would do, as long as it stays the same from run to run.
PRETRAIN_STREAM = 0x5072


class PretrainingDivergedError(FloatingPointError):
  """A member's pretraining loss became NaN or infinite.

  Attributes:
    layer: the 1-based layer being pretrained.
    epoch: the 1-based pretraining epoch.
    member: the member's index.
  """

  def __init__(self, layer: int, epoch: int, member: int):
    self.layer = layer
    self.epoch = epoch
    self.member = member
    super().__init__(
      f"non-finite pretraining loss of layer {layer} at epoch {epoch} in "
      f"member {member}"
    )


def encoder_pairs(
  n_columns: int, hidden_sizes: Sequence[int]
) -> list[tuple[int, int]]:
  """``(n_in, n_out)`` of each encoder layer, input side first.

  Args:
    n_columns: width of a row.
    hidden_sizes: widths of the network's hidden layers.

  Returns:
    One pair per layer up to and including the code layer.
  """
  sizes = (n_columns, *hidden_sizes)
  n_encoder = autoencoder.code_index(hidden_sizes) + 1
  return [(sizes[i], sizes[i + 1]) for i in range(n_encoder)]


def encode_below(
  below: Sequence[tuple[jax.Array, jax.Array]],
  values: jax.Array,
  mask: jax.Array,
  activation: str,
) -> tuple[jax.Array, jax.Array]:
  """The data of the next layer: ``h = f(h W + b)`` through ``below``.

  With no layer below, the rows themselves. Otherwise every unit of a row
  that holds a rating is present (the codes are dense) and padding rows
  stay absent.

  Args:
    below: ``(kernel, bias)`` of each pretrained layer, input side first.
    values: ``(batch, n_columns)`` ratings, 0 where unobserved.
    mask: where ``values`` holds a rating.
    activation: name in ``autoencoder.ACTIVATIONS`` of ``f``.

  Returns:
    The next layer's ``(values, mask)``.
  """
  if not below:
    return values, mask
  act = autoencoder.ACTIVATIONS[activation]
  hidden = values
  for kernel, bias in below:
    hidden = act(hidden @ kernel + bias.reshape(1, -1))
  rows = jnp.broadcast_to(mask.any(axis=-1, keepdims=True), hidden.shape)
  return hidden, rows


def make_layer_epoch(
  trainer: layer_trainers.LayerTrainer,
  rows: Rows,
  config: Config,
) -> Callable[..., tuple[train.TrainState, train.StepMetrics]]:
  """A jitted ``epoch(states, below, rows, epoch) -> (states, metrics)``.

  Like ``train.make_epoch_fn``: a ``lax.scan`` over the training rows that
  hold ratings, in ``config.batch_size`` batches (shuffled unless
  ``config.shuffle`` is off), vmapped over members; each batch is
  densified and passed through the frozen layers ``below`` (one ``(kernel,
  bias)`` pair per layer, each with the member axis) before the layer's
  step.

  Args:
    trainer: how the layer is trained (its step and state).
    rows: the host training rows, which fix the batch capacity.
    config: the run's configuration.

  Returns:
    The jitted ``epoch``; it donates ``states`` and returns the members'
    ``StepMetrics`` summed over the epoch.
  """
  visited = np.flatnonzero(rows.lengths > 0).astype(np.int32)
  batch_size, n_columns = config.batch_size, rows.n_columns
  capacity = rows.batch_capacity(batch_size)

  def member_epoch(state, below, device_rows, epoch):
    order = batching.epoch_row_order(
      jax.random.fold_in(state.shuffle_key, epoch),
      len(visited),
      batch_size,
      shuffle=config.shuffle,
      row_ids=visited,
    )
    epoch_noise_key = jax.random.fold_in(state.noise_key, epoch)

    def body(carry, xs):
      state, totals = carry
      index, row_ids = xs
      values, mask = batching.densify(
        device_rows, row_ids, n_columns=n_columns, capacity=capacity
      )
      values, mask = encode_below(below, values, mask, config.activation)
      noise_key = jax.random.fold_in(epoch_noise_key, index)
      state, step_metrics = trainer.step(state, values, mask, noise_key)
      return (state, totals + step_metrics), None

    indices = jnp.arange(order.shape[0], dtype=jnp.int32)
    (state, totals), _ = jax.lax.scan(
      body, (state, train.StepMetrics.zeros()), (indices, order)
    )
    return state, totals

  batched = jax.vmap(member_epoch, in_axes=(0, 0, None, None))
  return jax.jit(batched, donate_argnums=0)


def assemble(
  program: train.Program,
  params: nnx.State,
  layers: Sequence[layer_trainers.Layer],
) -> nnx.State:
  """The network's parameters with every pretrained layer in its place.

  Encoder layer ``l`` takes ``layers[l]``'s encoder; the decoder layer
  that mirrors it takes its decoder (only the bias when weights are tied).
  ``params`` is not modified.

  Args:
    program: the run's program.
    params: the network's parameters, member axis leading.
    layers: one ``layer_trainers.Layer`` per encoder layer, input side first.

  Returns:
    New parameters of the same structure.

  Raises:
    ValueError: a pretrained layer's shapes do not fit the network.
  """
  pure = nnx.to_pure_dict(params)
  last = len(layers) - 1
  for index, layer in enumerate(layers):
    pure["encoder"][index] = {"kernel": layer.kernel, "bias": layer.bias}
    mirror = last - index
    if program.config.tied:
      pure["decoder_biases"][mirror] = layer.decoder_bias
    else:
      pure["decoder"][mirror] = {
        "kernel": layer.decoder_kernel,
        "bias": layer.decoder_bias,
      }
  expected = jax.tree.map(jnp.shape, nnx.to_pure_dict(params))
  if jax.tree.map(jnp.shape, pure) != expected:
    raise ValueError("pretrained layers do not fit the network's shapes")
  assembled = jax.tree.map(lambda x: x, params)
  nnx.replace_by_pure_dict(assembled, pure)
  return assembled


def restart_from(
  program: train.Program,
  states: train.TrainState,
  params: nnx.State,
  members: Sequence[dict[str, float]],
) -> train.TrainState:
  """``states`` with new parameters and a fresh optimizer state for them.

  The step count and the noise and shuffle keys of ``states`` are kept.

  Args:
    program: the run's program.
    states: the members' states, member axis leading.
    params: the new parameters, member axis leading.
    members: each member's settings (learning rate and weight decay).

  Returns:
    ``states`` with ``params`` and an optimizer state from
    ``optim.init_member_state``.
  """
  column = lambda name: jnp.asarray([m[name] for m in members], jnp.float32)

  def one(params, learning_rate, weight_decay):
    return optim.init_member_state(
      program.optimizer,
      params,
      learning_rate=learning_rate,
      weight_decay=weight_decay,
    )

  opt_state = jax.jit(jax.vmap(one))(
    params, column("learning_rate"), column("weight_decay")
  )
  return states._replace(params=params, opt_state=opt_state)


def layer_keys(seed: jax.Array | int, layer: int) -> jax.Array:
  """``[init_key, noise_key, shuffle_key]`` of one member's layer.

  ``seed`` may be traced, so the keys are made inside the jitted init:
  ``split(fold_in(fold_in(key(seed), PRETRAIN_STREAM), layer), 3)``.

  Args:
    seed: the member's seed.
    layer: the 0-based layer index.

  Returns:
    A ``(3,)`` array of keys.
  """
  root = jax.random.fold_in(jax.random.key(seed), PRETRAIN_STREAM)
  return jax.random.split(jax.random.fold_in(root, layer), 3)


def pretrain_layers(
  program: train.Program,
  members: Sequence[dict[str, float]],
  train_rows: Rows,
  device_rows: batching.DeviceRows,
  on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[layer_trainers.Layer]:
  """Pretrains every encoder layer in turn; returns their weights.

  Args:
    program: the run's program; ``program.config.pretrain`` picks the kind.
    members: the run's members (seeds and weight decays are used).
    train_rows: the training rows (host), which fix the batch shapes.
    device_rows: the same rows on the device.
    on_epoch: called with each epoch's record (layer, epoch, per-member
      loss and reconstruction RMSE, seconds).

  Returns:
    One ``layer_trainers.Layer`` per encoder layer, member axis leading.

  Raises:
    PretrainingDivergedError: a member's pretraining loss was not finite.
  """
  config = program.config
  pairs = encoder_pairs(program.n_columns, config.hidden_sizes)
  decays = jnp.asarray([m["weight_decay"] for m in members], jnp.float32)
  seeds = jnp.asarray([int(m["seed"]) for m in members], jnp.int32)
  means = layer_trainers.column_means(train_rows)
  # The first layer's reconstruction starts where the network's would.
  first_bias = None if config.output_bias == "zeros" else means
  layers: list[layer_trainers.Layer] = []
  for layer, (n_in, n_out) in enumerate(pairs):
    if config.pretrain == "rbm":
      trainer = layer_trainers.rbm_trainer(
        program, layer, n_in, n_out, means if layer == 0 else None
      )
    else:
      trainer = layer_trainers.denoising_trainer(
        program, layer, n_in, n_out, first_bias if layer == 0 else None
      )
    init = lambda seed, decay, layer=layer, trainer=trainer: trainer.init(
      *layer_keys(seed, layer), decay
    )
    states = jax.jit(jax.vmap(init))(seeds, decays)
    below = tuple((done.kernel, done.bias) for done in layers)
    epoch_fn = make_layer_epoch(trainer, train_rows, config)
    for epoch in range(config.pretrain_epochs):
      started = time.perf_counter()
      states, totals = epoch_fn(states, below, device_rows, np.int32(epoch))
      totals = jax.device_get(totals)
      loss = totals.loss / np.maximum(totals.steps, 1)
      bad = np.flatnonzero(~np.isfinite(loss))
      if bad.size:
        raise PretrainingDivergedError(layer + 1, epoch + 1, int(bad[0]))
      rmse = np.sqrt(totals.errors.squared / np.maximum(totals.errors.count, 1))
      record = {
        "layer": layer + 1,
        "epoch": epoch + 1,
        "seconds": time.perf_counter() - started,
        "loss": loss,
        "reconstruction_rmse": rmse,
      }
      logging.info(
        "pretrain %s layer %d/%d (%d -> %d) epoch %d/%d  loss %.4f  "
        "reconstruction RMSE %.4f  %.2f s",
        config.pretrain,
        layer + 1,
        len(pairs),
        n_in,
        n_out,
        epoch + 1,
        config.pretrain_epochs,
        np.mean(loss),
        np.mean(rmse),
        record["seconds"],
      )
      if on_epoch is not None:
        on_epoch(record)
    layers.append(jax.jit(jax.vmap(trainer.export))(states.params))
  return layers


def pretrain(
  program: train.Program,
  states: train.TrainState,
  members: Sequence[dict[str, float]],
  train_rows: Rows,
  device_rows: batching.DeviceRows,
  on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> train.TrainState:
  """Greedy layer-wise pretraining; the network's states to fine-tune.

  ``pretrain_layers`` then ``assemble``; the optimizer state restarts for
  the new parameters. Steps, noise and shuffle keys are those of
  ``states``, so fine-tuning draws the same noise and row orders as it
  would without pretraining.

  Args:
    program: the run's program.
    states: the members' initial states (``train.init_members``).
    members: the run's members.
    train_rows: the training rows (host).
    device_rows: the same rows on the device.
    on_epoch: see ``pretrain_layers``.

  Returns:
    ``states`` with the pretrained parameters.
  """
  layers = pretrain_layers(
    program, members, train_rows, device_rows, on_epoch=on_epoch
  )
  params = assemble(program, states.params, layers)
  return restart_from(program, states, params, members)
