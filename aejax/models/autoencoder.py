"""Fully connected autoencoders in Flax NNX.

An ``Autoencoder`` maps a row of ratings ``x`` (zeros where unrated) through
hidden layers ``h_l = f(W_l h_{l-1} + b_l)`` to a reconstruction of the
same width, ``x_hat = g(W_L h_{L-1} + b_L)``. The hidden sizes are a list;
the middle one is the code, where k-sparse selection applies. Encoder and
decoder weights may be tied (``W_dec = W_enc^T`` layer by layer).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from aejax.models import sparsity

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "identity": lambda x: x,
  "sigmoid": jax.nn.sigmoid,
  "tanh": jnp.tanh,
  "relu": jax.nn.relu,
  "elu": jax.nn.elu,
  "selu": jax.nn.selu,
}

INITS = ("default", "glorot", "torch")


def torch_linear_init(fan_in: int) -> nnx.Initializer:
  """PyTorch's ``nn.Linear`` default: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

  PyTorch draws both the weight (Kaiming uniform with ``a = sqrt(5)``, which
  reduces to this bound) and the bias from this distribution.

  Args:
    fan_in: the layer's number of inputs.

  Returns:
    An initialiser ``init(key, shape, dtype=float32)``.
  """
  bound = 1.0 / fan_in**0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _linear(n_in: int, n_out: int, init: str, rngs: nnx.Rngs) -> nnx.Linear:
  if init == "torch":
    return nnx.Linear(
      n_in,
      n_out,
      kernel_init=torch_linear_init(n_in),
      bias_init=torch_linear_init(n_in),
      rngs=rngs,
    )
  if init == "glorot":
    return nnx.Linear(
      n_in, n_out, kernel_init=nnx.initializers.glorot_uniform(), rngs=rngs
    )
  if init == "default":
    return nnx.Linear(n_in, n_out, rngs=rngs)
  raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")


def code_index(hidden_sizes: Sequence[int]) -> int:
  """Index of the code layer among the hidden layers: the middle one.

  ``c = floor((L - 1) / 2)`` for ``L`` hidden layers, so an even count
  takes the first of its two middle layers.

  Args:
    hidden_sizes: the widths of the hidden layers.

  Returns:
    ``c``.
  """
  return (len(hidden_sizes) - 1) // 2


def can_tie(hidden_sizes: Sequence[int]) -> bool:
  """Whether decoder layers can reuse transposed encoder weights.

  True when the hidden sizes read the same backwards (``(500,)``,
  ``(20, 10, 20)``), so each decoder layer mirrors an encoder layer.

  Args:
    hidden_sizes: the widths of the hidden layers.

  Returns:
    Whether their count is odd and they form a palindrome.
  """
  sizes = tuple(hidden_sizes)
  return len(sizes) % 2 == 1 and sizes == sizes[::-1]


class Autoencoder(nnx.Module):
  """A fully connected autoencoder over rows of ``n_inputs`` ratings.

  Layers: ``n_inputs -> hidden_sizes[0] -> ... -> hidden_sizes[-1] ->
  n_inputs``. Every hidden layer applies ``activation``; the output layer
  applies ``output_activation`` (identity by default, so reconstructions
  are real-valued ratings). The encoder ends at the code layer
  ``hidden_sizes[code_index(hidden_sizes)]``.

  Args:
    n_inputs: width of a row, the input and output.
    hidden_sizes: widths of the hidden layers, at least one.
    activation: name in ``ACTIVATIONS`` of every hidden layer's function.
    output_activation: name in ``ACTIVATIONS`` of the output's function.
    tied: decoder layers use the transposed encoder kernels (and own
      biases); needs ``can_tie(hidden_sizes)``.
    init: one of ``INITS``: flax's default, Glorot uniform kernels, or
      PyTorch's ``nn.Linear`` initialisation.
    rngs: the ``params`` stream draws every weight.

  Raises:
    ValueError: no hidden layer, an unknown activation or init, or tied
      weights with hidden sizes that are not mirrored.
  """

  def __init__(
    self,
    n_inputs: int,
    hidden_sizes: Sequence[int],
    *,
    activation: str = "sigmoid",
    output_activation: str = "identity",
    tied: bool = False,
    init: str = "default",
    rngs: nnx.Rngs,
  ):
    if not hidden_sizes:
      raise ValueError("an autoencoder needs at least one hidden layer")
    for name in (activation, output_activation):
      if name not in ACTIVATIONS:
        raise ValueError(
          f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}"
        )
    if tied and not can_tie(hidden_sizes):
      raise ValueError(
        f"tied weights need mirrored hidden sizes, not {tuple(hidden_sizes)}"
      )
    self.activation = activation
    self.output_activation = output_activation
    self.tied = tied
    sizes = (n_inputs, *hidden_sizes, n_inputs)
    n_encoder = code_index(hidden_sizes) + 1
    pairs = list(itertools.pairwise(sizes))
    self.encoder = nnx.List(
      [_linear(a, b, init, rngs) for a, b in pairs[:n_encoder]]
    )
    if tied:
      # Only biases: kernels are the encoder's, transposed, in mirror order.
      self.decoder_biases = nnx.List(
        [
          nnx.Param(_linear(a, b, init, rngs).bias[...])
          for a, b in pairs[n_encoder:]
        ]
      )
    else:
      self.decoder = nnx.List(
        [_linear(a, b, init, rngs) for a, b in pairs[n_encoder:]]
      )

  def encode(
    self, inputs: jax.Array, *, k: jax.Array | int | None = None
  ) -> jax.Array:
    """The code of each row; with ``k``, all but its ``k`` largest units zero.

    With ``k`` the code layer keeps the units whose pre-activations rank
    among the ``k`` largest of the row and zeroes the rest, after the
    activation (Makhzani and Frey, 2013, "k-Sparse Autoencoders"):
    ``h = f(z) * 1[rank(z) < k]`` with ``z`` the code's pre-activation; the
    mask passes no gradient, so only the kept units learn from a row.

    Args:
      inputs: ``(..., n_inputs)`` rows.
      k: units to keep in the code layer, a scalar that may be traced;
        None keeps every unit.

    Returns:
      ``(..., code_width)`` codes.
    """
    act = ACTIVATIONS[self.activation]
    hidden = inputs
    last = len(self.encoder) - 1
    for index, layer in enumerate(self.encoder):
      pre = layer(hidden)
      if index == last and k is not None:
        keep = jax.lax.stop_gradient(sparsity.top_k_mask(pre, k))
        hidden = jnp.where(keep, act(pre), 0.0)
      else:
        hidden = act(pre)
    return hidden

  def decode(self, code: jax.Array) -> jax.Array:
    """Reconstructs full rows from codes.

    ``h_l = f(h_{l-1} W_l + b_l)`` through the decoder layers, with the
    output activation on the last (``W_l`` the mirrored encoder kernel,
    transposed, when tied).

    Args:
      code: ``(..., code_width)`` codes.

    Returns:
      ``(..., n_inputs)`` reconstructions.
    """
    act = ACTIVATIONS[self.activation]
    out_act = ACTIVATIONS[self.output_activation]
    layers = self._decoder_layers()
    hidden = code
    for index, (kernel, bias) in enumerate(layers):
      # Explicit broadcasting: the bias gains the batch axes of ``hidden``.
      pre = hidden @ kernel + bias.reshape((1,) * (hidden.ndim - 1) + (-1,))
      hidden = out_act(pre) if index == len(layers) - 1 else act(pre)
    return hidden

  def _decoder_layers(self) -> list[tuple[jax.Array, jax.Array]]:
    if self.tied:
      kernels = [layer.kernel[...].T for layer in reversed(self.encoder)]
      return [
        (kernel, bias[...])
        for kernel, bias in zip(kernels, self.decoder_biases, strict=True)
      ]
    return [(layer.kernel[...], layer.bias[...]) for layer in self.decoder]

  @property
  def output_bias(self) -> nnx.Param:
    """The bias of the reconstruction layer (one entry per input column)."""
    if self.tied:
      return self.decoder_biases[-1]
    return self.decoder[-1].bias

  def __call__(
    self, inputs: jax.Array, *, k: jax.Array | int | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """Returns ``(reconstruction, code)`` for a batch of rows.

    Args:
      inputs: ``(..., n_inputs)`` rows.
      k: units kept in the code layer (see ``encode``); None keeps all.

    Returns:
      ``decode(code)`` and ``code = encode(inputs, k=k)``.
    """
    code = self.encode(inputs, k=k)
    return self.decode(code), code


def count_parameters(params: nnx.State) -> int:
  """Number of scalars in a parameter tree (of one member).

  Args:
    params: the parameters, e.g. ``nnx.split(model, nnx.Param)[1]``.

  Returns:
    The sum of the leaves' sizes.
  """
  return sum(int(leaf.size) for leaf in jax.tree.leaves(params))
