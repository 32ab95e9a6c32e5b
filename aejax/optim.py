"""Optimizers: RMSprop and Adam with decoupled weight decay; PyTorch's RMSprop.

All are optax chains wrapped in ``optax.inject_hyperparams``, so the
learning rate and the weight decay live in the optimizer state as arrays:
members of an ensemble may carry different values and still share one
compiled program.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("rmsprop", "torch_rmsprop", "adamw")


class GradientSumState(NamedTuple):
  """Running sum of every gradient seen so far."""

  total: optax.Updates


def accumulate_gradient_sum() -> optax.GradientTransformation:
  """Replaces each gradient by the sum of all gradients so far.

  ``G_t = sum_{s <= t} g_s``. PyTorch adds every ``backward()`` into the
  parameters' ``.grad``; a training loop that never calls ``zero_grad()``
  (as the tutorial's does) therefore steps with ``G_t``. This
  transformation reproduces that behaviour; nothing else should use it.

  Returns:
    The optax transformation; its state is a ``GradientSumState``.
  """

  def init_fn(params):
    return GradientSumState(total=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    total = jax.tree.map(jnp.add, state.total, updates)
    return total, GradientSumState(total=total)

  return optax.GradientTransformation(init_fn, update_fn)


def rmsprop_decoupled(
  learning_rate: float,
  weight_decay: float,
  decay: float = 0.9,
  eps: float = 1e-8,
) -> optax.GradientTransformation:
  """RMSprop with decoupled weight decay.

  ``v_t = rho v_{t-1} + (1 - rho) g_t^2``,
  ``theta_t = theta_{t-1} - lr (g_t / sqrt(v_t + eps) + lambda theta_{t-1})``
  (Tieleman and Hinton, 2012, lecture 6.5; decoupled decay as in
  Loshchilov and Hutter, 2019, "Decoupled Weight Decay Regularization").
  The decay term bypasses the RMS scaling, unlike an L2 penalty. Only
  weight matrices decay: a decayed output bias would pull every prediction
  towards a rating of 0.

  Args:
    learning_rate: ``lr``.
    weight_decay: ``lambda``.
    decay: ``rho``, the smoothing of the squared-gradient average.
    eps: added inside the square root.

  Returns:
    The optax transformation.
  """
  return optax.chain(
    optax.scale_by_rms(decay=decay, eps=eps),
    optax.add_decayed_weights(weight_decay, mask=weight_matrices),
    optax.scale_by_learning_rate(learning_rate),
  )


def weight_matrices(params: optax.Params) -> optax.Params:
  """True for the leaves that are matrices (kernels), False for vectors.

  Args:
    params: a tree of arrays.

  Returns:
    The same tree with a bool per leaf: ``ndim >= 2``.
  """
  return jax.tree.map(lambda leaf: jnp.ndim(leaf) >= 2, params)


def adamw(
  learning_rate: float,
  weight_decay: float,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
) -> optax.GradientTransformation:
  """Adam with decoupled weight decay (AdamW).

  ``m_t = b1 m_{t-1} + (1 - b1) g_t``, ``v_t = b2 v_{t-1} + (1 - b2) g_t^2``,
  ``theta_t = theta_{t-1} - lr (m_hat_t / (sqrt(v_hat_t) + eps) + lambda
  theta_{t-1})`` with bias-corrected ``m_hat``, ``v_hat`` (Kingma and Ba,
  2015, "Adam: A Method for Stochastic Optimization"; Loshchilov and
  Hutter, 2019). With ``lambda = 0`` it is Adam. As in
  ``rmsprop_decoupled``, only weight matrices decay.

  Args:
    learning_rate: ``lr``.
    weight_decay: ``lambda``.
    b1: smoothing of the gradient average.
    b2: smoothing of the squared-gradient average.
    eps: added outside the square root.

  Returns:
    The optax transformation.
  """
  return optax.chain(
    optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
    optax.add_decayed_weights(weight_decay, mask=weight_matrices),
    optax.scale_by_learning_rate(learning_rate),
  )


def lr_multiplier(name: str, total_steps: int) -> optax.Schedule:
  """The factor the learning rate is multiplied by at each step.

  ``constant``: 1. ``cosine``: ``(1 + cos(pi min(t, T) / T)) / 2`` over
  ``T = total_steps`` updates (Loshchilov and Hutter, 2017, "SGDR:
  Stochastic Gradient Descent with Warm Restarts", without restarts).

  Args:
    name: ``constant`` or ``cosine``.
    total_steps: ``T``, the run's number of updates.

  Returns:
    A function of the update count.

  Raises:
    ValueError: ``name`` is neither ``constant`` nor ``cosine``.
  """
  if name == "constant":
    return optax.constant_schedule(1.0)
  if name == "cosine":
    return optax.cosine_decay_schedule(1.0, max(total_steps, 1))
  raise ValueError(f"unknown lr_schedule {name!r}; known: constant, cosine")


def torch_rmsprop(
  learning_rate: float,
  weight_decay: float,
  decay: float = 0.99,
  eps: float = 1e-8,
  accumulate: bool = False,
) -> optax.GradientTransformation:
  """``torch.optim.RMSprop`` (no momentum, not centered), step for step.

  ``g'_t = g_t + lambda theta_{t-1}`` (coupled L2),
  ``v_t = alpha v_{t-1} + (1 - alpha) g'^2_t``,
  ``theta_t = theta_{t-1} - lr g'_t / (sqrt(v_t) + eps)``, with ``v_0 = 0``
  and ``eps`` outside the square root (PyTorch's defaults: ``alpha = 0.99``,
  ``eps = 1e-8``).

  Args:
    learning_rate: ``lr``.
    weight_decay: ``lambda``, PyTorch's ``weight_decay``.
    decay: ``alpha``.
    eps: added outside the square root.
    accumulate: use the running gradient sum (see
      ``accumulate_gradient_sum``) in place of ``g_t``, as a loop without
      ``zero_grad()`` does; the decay term is still added fresh each step.

  Returns:
    The optax transformation.
  """
  parts = [accumulate_gradient_sum()] if accumulate else []
  parts += [
    optax.add_decayed_weights(weight_decay),
    optax.scale_by_rms(decay=decay, eps=eps, eps_in_sqrt=False),
    optax.scale_by_learning_rate(learning_rate),
  ]
  return optax.chain(*parts)


def make_optimizer(
  name: str,
  *,
  learning_rate: float,
  weight_decay: float,
  decay: float,
  eps: float,
  accumulate: bool = False,
  schedule: str = "constant",
  total_steps: int = 1,
) -> optax.GradientTransformation:
  """The named optimizer, with learning rate and weight decay injectable.

  The returned transformation stores ``learning_rate`` and ``weight_decay``
  in ``state.hyperparams``; ``init_member_state`` overrides them per member.
  A schedule other than ``constant`` multiplies every update (the
  decoupled decay included) by ``lr_multiplier(schedule, total_steps)``.
  For ``adamw``, ``decay`` is Adam's ``b2`` and ``eps`` its epsilon.

  Args:
    name: one of ``OPTIMIZERS``: ``rmsprop`` (``rmsprop_decoupled``),
      ``torch_rmsprop`` or ``adamw``.
    learning_rate: the default learning rate.
    weight_decay: the default weight decay (coupled L2 for
      ``torch_rmsprop``).
    decay: the squared-gradient smoothing (``rho``, ``alpha`` or ``b2``).
    eps: the optimizer's epsilon.
    accumulate: step with the running gradient sum; ``torch_rmsprop`` only.
    schedule: ``constant`` or ``cosine`` (``lr_multiplier``).
    total_steps: the run's number of updates, for the schedule.

  Returns:
    The optax transformation.

  Raises:
    ValueError: ``name`` is unknown, ``accumulate`` is asked of an
      optimizer other than ``torch_rmsprop``, or ``schedule`` is unknown.
  """
  if name == "rmsprop":
    if accumulate:
      raise ValueError("gradient accumulation is only for torch_rmsprop")
    factory = lambda learning_rate, weight_decay: rmsprop_decoupled(
      learning_rate, weight_decay, decay=decay, eps=eps
    )
  elif name == "adamw":
    if accumulate:
      raise ValueError("gradient accumulation is only for torch_rmsprop")
    factory = lambda learning_rate, weight_decay: adamw(
      learning_rate, weight_decay, b2=decay, eps=eps
    )
  elif name == "torch_rmsprop":
    factory = lambda learning_rate, weight_decay: torch_rmsprop(
      learning_rate, weight_decay, decay=decay, eps=eps, accumulate=accumulate
    )
  else:
    raise ValueError(
      f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}"
    )
  optimizer = optax.inject_hyperparams(factory)(
    learning_rate=learning_rate, weight_decay=weight_decay
  )
  if schedule == "constant":
    return optimizer
  return optax.chain(
    optimizer, optax.scale_by_schedule(lr_multiplier(schedule, total_steps))
  )


def init_member_state(
  optimizer: optax.GradientTransformation,
  params: optax.Params,
  *,
  learning_rate: jax.Array,
  weight_decay: jax.Array,
) -> optax.OptState:
  """Optimizer state of one member, with that member's hyper-parameters.

  Args:
    optimizer: from ``make_optimizer``.
    params: the member's parameters.
    learning_rate: the member's learning rate; may be traced.
    weight_decay: the member's weight decay; may be traced.

  Returns:
    ``optimizer.init(params)`` with the injected ``learning_rate`` and
    ``weight_decay`` replaced by the member's, as float32 arrays.
  """
  state = optimizer.init(params)
  # A scheduled optimizer is a chain whose first state is the injected one.
  scheduled = isinstance(state, tuple) and not hasattr(state, "hyperparams")
  injected = state[0] if scheduled else state
  hyper = dict(injected.hyperparams)
  hyper["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
  hyper["weight_decay"] = jnp.asarray(weight_decay, jnp.float32)
  injected = injected._replace(hyperparams=hyper)
  return (injected, *state[1:]) if scheduled else injected
