"""Restricted Boltzmann machines trained by contrastive divergence (CD-1).

An RBM couples visible units ``v`` with binary hidden units ``h`` through
an energy, and its free energy ``F(v) = -log sum_h exp(-E(v, h))``:

- binary visible units: ``E = -v.b - h.c - v W h``,
  ``F(v) = -v.b - sum_j softplus(c_j + v W_j)``;
- Gaussian visible units of unit variance: ``E = |v - b|^2 / 2 - h.c -
  v W h``, ``F(v) = |v - b|^2 / 2 - sum_j softplus(c_j + v W_j)``.

Hidden units are independent given ``v``: ``p(h_j = 1 | v) = sigmoid(c_j +
v W_j)``; a visible unit's mean given ``h`` is ``sigmoid(b + W h)``
(binary) or ``b + W h`` (Gaussian).

A row may lack some visible units (a movie the user did not rate). Such
units are left out of that row's machine, as Salakhutdinov, Mnih and
Hinton (2007) do for collaborative filtering: their terms drop from the
energy, so they feed nothing to the hidden units, and their
reconstructions are ignored. With missing units stored as 0, the hidden
input ``v W`` is the same as an autoencoder's first layer sees.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from aejax import losses


class RBM(nnx.Module):
  """An RBM with binary hidden units and binary or Gaussian visible units.

  ``weights`` has shape ``(n_visible, n_hidden)``, like the kernel of the
  autoencoder layer it becomes when unrolled.
  """

  def __init__(
    self,
    n_visible: int,
    n_hidden: int,
    *,
    gaussian_visible: bool,
    visible_bias: jax.Array | None = None,
    rngs: nnx.Rngs,
  ):
    self.gaussian_visible = gaussian_visible
    # Small random weights and zero hidden biases, as Hinton's "A Practical
    # Guide to Training Restricted Boltzmann Machines" (2010) recommends.
    self.weights = nnx.Param(
      0.01 * jax.random.normal(rngs.params(), (n_visible, n_hidden))
    )
    if visible_bias is None:
      visible_bias = jnp.zeros((n_visible,), jnp.float32)
    self.visible_bias = nnx.Param(jnp.asarray(visible_bias, jnp.float32))
    self.hidden_bias = nnx.Param(jnp.zeros((n_hidden,), jnp.float32))

  def hidden_probabilities(self, visible: jax.Array) -> jax.Array:
    """``p(h = 1 | v) = sigmoid(v W + c)`` for a batch of rows.

    Args:
      visible: ``(..., n_visible)`` visible values, 0 where absent.

    Returns:
      ``(..., n_hidden)`` probabilities.
    """
    return jax.nn.sigmoid(self._hidden_input(visible))

  def visible_mean(self, hidden: jax.Array) -> jax.Array:
    """``E[v | h]``: ``b + h W^T`` (Gaussian) or its sigmoid (binary).

    Args:
      hidden: ``(..., n_hidden)`` hidden states or probabilities.

    Returns:
      ``(..., n_visible)`` means of every visible unit.
    """
    pre = hidden @ self.weights[...].T + self._row(
      self.visible_bias[...], hidden
    )
    return pre if self.gaussian_visible else jax.nn.sigmoid(pre)

  def free_energy(self, visible: jax.Array, mask: jax.Array) -> jax.Array:
    """``F(v)`` of each row over its present units (``mask``).

    ``F(v) = |m (v - b)|^2 / 2 - sum_j softplus(c_j + (m v) W_j)``
    (Gaussian) or ``-(m v).b - sum_j softplus(c_j + (m v) W_j)`` (binary),
    with ``m`` the mask: absent units drop out of the energy.

    Args:
      visible: ``(..., n_visible)`` visible values; any value where absent.
      mask: where a visible unit is present.

    Returns:
      ``(...,)`` free energies.
    """
    present = mask.astype(visible.dtype)
    visible = visible * present
    bias = self._row(self.visible_bias[...], visible)
    if self.gaussian_visible:
      visible_term = 0.5 * (present * jnp.square(visible - bias)).sum(-1)
    else:
      visible_term = -(visible * bias).sum(-1)
    hidden_term = jax.nn.softplus(self._hidden_input(visible)).sum(-1)
    return visible_term - hidden_term

  def _hidden_input(self, visible: jax.Array) -> jax.Array:
    return visible @ self.weights[...] + self._row(
      self.hidden_bias[...], visible
    )

  @staticmethod
  def _row(bias: jax.Array, batch: jax.Array) -> jax.Array:
    # Explicit broadcasting: the bias gains the batch axes.
    return bias.reshape((1,) * (batch.ndim - 1) + (-1,))


def contrastive_divergence(
  graphdef: nnx.GraphDef,
  params: nnx.State,
  visible: jax.Array,
  mask: jax.Array,
  key: jax.Array,
) -> tuple[nnx.State, jax.Array]:
  """Minus the CD-1 update of an RBM on a batch, and its reconstruction.

  One Gibbs step from the data: ``h0 = p(h | v0)``, a binary sample
  ``s ~ Bernoulli(h0)`` (drawn as ``uniform(key) < h0``), the
  reconstruction ``v1 = E[v | s]`` on the present units, ``h1 = p(h |
  v1)``. Averaged over the ``n`` rows with a present unit, the CD-1 update
  is (Hinton, 2002; Hinton and Salakhutdinov, 2006, "Reducing the
  Dimensionality of Data with Neural Networks"):

  ``dW = (v0^T h0 - v1^T h1) / n``, ``db = sum_rows m (v0 - v1) / n``,
  ``dc = sum_rows (h0 - h1) / n``.

  It is computed as the gradient of ``mean(F(v0) - F(v1))`` with ``v1``
  held constant, which equals ``-(dW, db, dc)``; an optax optimizer can
  then follow it like a loss gradient.

  Args:
    graphdef: the RBM's structure (``nnx.split``).
    params: its parameters.
    visible: ``(rows, n_visible)`` data ``v0``; any value where absent.
    mask: where a visible unit is present; rows without one are padding.
    key: the key of the hidden sample.

  Returns:
    The gradient (shaped like ``params``) and ``v1``, zero where absent.
  """
  model = nnx.merge(graphdef, params)
  present = mask.astype(bool)
  visible = jnp.where(present, visible, 0.0)
  hidden = model.hidden_probabilities(visible)
  sample = (jax.random.uniform(key, hidden.shape) < hidden).astype(
    visible.dtype
  )
  reconstruction = jnp.where(present, model.visible_mean(sample), 0.0)
  reconstruction = jax.lax.stop_gradient(reconstruction)
  n_rows = present.any(axis=-1).sum(dtype=visible.dtype)

  def objective(params):
    model = nnx.merge(graphdef, params)
    gap = model.free_energy(visible, present) - model.free_energy(
      reconstruction, present
    )
    return losses.safe_divide(gap.sum(), n_rows)

  return jax.grad(objective)(params), reconstruction
