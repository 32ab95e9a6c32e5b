"""Sparsity of hidden codes: top-k selection and the KL sparsity penalty."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def top_k_mask(pre_activations: jax.Array, k: jax.Array | int) -> jax.Array:
  """Boolean mask of the ``k`` largest units of each row.

  ``mask[b, j]`` is true when unit ``j`` ranks among the ``k`` largest of
  row ``b``. Units are ranked by a stable descending sort, so among equal
  values the lower index ranks first and exactly ``min(k, n_units)`` units
  are kept even when values tie. ``k`` may be a traced array, so one
  compiled program serves a sweep over k (Makhzani and Frey, 2013,
  "k-Sparse Autoencoders", arXiv:1312.5663).

  Args:
    pre_activations: ``(..., n_units)`` values to rank.
    k: how many units to keep per row; a scalar.

  Returns:
    A mask of the same shape.
  """
  x = pre_activations
  # Ranking by an order-preserving unsigned integer key of each value makes
  # the k-th largest value a radix selection: 32 rounds of counting, each
  # fixing one bit, in place of a sort (several times slower on CPU). Zero
  # is made positive first, so that -0.0 and 0.0 tie as floats do.
  bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.uint32)
  sign = jnp.uint32(1 << 31)
  key = jnp.where(bits >= sign, ~bits, bits | sign)
  k = jnp.asarray(k, jnp.int32)
  # The largest t with at least k keys >= t: the k-th largest key.
  kth = jnp.zeros((*x.shape[:-1], 1), jnp.uint32)
  for bit in range(31, -1, -1):
    trial = kth | jnp.uint32(1 << bit)
    enough = (key >= trial).sum(axis=-1, keepdims=True) >= k
    kth = jnp.where(enough, trial, kth)
  above = key > kth
  tied = key == kth
  room = k - above.sum(axis=-1, keepdims=True)
  return above | (tied & (jnp.cumsum(tied, axis=-1) <= room))


def kl_sparsity(
  *, mean_activation: jax.Array, target: jax.Array | float
) -> jax.Array:
  """Element-wise KL divergence of Bernoulli(target) from Bernoulli(rho_hat).

  ``KL(rho || rho_hat) = rho log(rho / rho_hat)
  + (1 - rho) log((1 - rho) / (1 - rho_hat))``, where ``rho_hat`` is a
  hidden unit's mean activation over a batch (Ng, "Sparse autoencoder",
  CS294A lecture notes, 2011). ``rho_hat`` is clipped into
  ``[eps, 1 - eps]`` with ``eps`` the float32 resolution near 1, so a
  saturated sigmoid gives a large finite penalty, never inf or NaN. Sum the
  result over units and scale it by the sparsity weight ``beta``.

  Args:
    mean_activation: ``rho_hat`` per unit, values in ``[0, 1]``.
    target: the desired mean activation ``rho`` in ``(0, 1)``.

  Returns:
    The divergence per unit.
  """
  eps = jnp.finfo(jnp.float32).epsneg
  rho_hat = jnp.clip(mean_activation, eps, 1.0 - eps)
  rho = jnp.asarray(target, rho_hat.dtype)
  return rho * (jnp.log(rho) - jnp.log(rho_hat)) + (1.0 - rho) * (
    jnp.log1p(-rho) - jnp.log1p(-rho_hat)
  )
