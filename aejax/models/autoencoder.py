"""Fully connected autoencoders in Flax NNX.

An ``Autoencoder`` maps a row of ratings ``x`` (zeros where unrated) through
hidden layers ``h_l = f(W_l h_{l-1} + b_l)`` to a reconstruction of the
same width, ``x_hat = g(W_L h_{L-1} + b_L)``. The hidden sizes are a list;
the middle one is the code, where k-sparse selection applies. Encoder and
decoder weights may be tied (``W_dec = W_enc^T`` layer by layer), or every
layer's weight may be modulated by a learned local kernel
(``KernelLinear``).
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


def local_kernel(
  in_embedding: jax.Array, out_embedding: jax.Array
) -> jax.Array:
  """The finite-support kernel between input and output embeddings.

  ``K_ij = max(0, 1 - ||u_i - v_j||^2)``: 1 where the embeddings meet, 0
  once they lie a unit apart, so a layer learns which of its connections
  to cut (Muller, Martel and Indiveri, 2018, "Kernelized Synaptic Weight
  Matrices").

  Args:
    in_embedding: ``u``, ``(n_in, d)``, one point per input unit.
    out_embedding: ``v``, ``(n_out, d)``, one point per output unit.

  Returns:
    ``K``, ``(n_in, n_out)``.
  """
  difference = in_embedding[:, None, :] - out_embedding[None, :, :]
  return jax.nn.relu(1.0 - jnp.sum(jnp.square(difference), axis=-1))


class KernelLinear(nnx.Module):
  """A dense layer whose weight is gated by a learned local kernel.

  ``y = x (W * K(u, v)) + b`` with ``K`` from ``local_kernel`` and ``*``
  element-wise, as in Muller, Martel and Indiveri (2018, "Kernelized
  Synaptic Weight Matrices") and in GLocal-K's local kernel (Han et al.,
  2021, "GLocal-K: Global and Local Kernels for Recommender Systems").
  The embeddings start near the origin (normal, scale ``1e-3``), where
  ``K`` is close to 1 and the layer is close to plain dense.

  Attributes:
    kernel: ``W``, ``(n_in, n_out)``; named as a dense layer's kernel so
      that the L2 penalty and weight decay treat it alike.
    bias: ``b``, ``(n_out,)``.
    in_embedding: ``u``, ``(n_in, d)``.
    out_embedding: ``v``, ``(n_out, d)``.
  """

  def __init__(
    self,
    n_in: int,
    n_out: int,
    kernel_dims: int,
    *,
    dense: nnx.Linear,
    rngs: nnx.Rngs,
  ):
    self.kernel = dense.kernel
    self.bias = dense.bias
    scale = 1e-3
    self.in_embedding = nnx.Param(
      scale * jax.random.normal(rngs.params(), (n_in, kernel_dims))
    )
    self.out_embedding = nnx.Param(
      scale * jax.random.normal(rngs.params(), (n_out, kernel_dims))
    )

  def kernel_values(self) -> jax.Array:
    """``K(u, v)``, the gate of every weight."""
    return local_kernel(self.in_embedding[...], self.out_embedding[...])

  def effective_kernel(self) -> jax.Array:
    """``W * K(u, v)``, the weight the layer applies."""
    return self.kernel[...] * self.kernel_values()

  def __call__(self, inputs: jax.Array) -> jax.Array:
    bias = self.bias[...]
    return inputs @ self.effective_kernel() + bias.reshape(
      (1,) * (inputs.ndim - 1) + (-1,)
    )


def _layer(
  n_in: int, n_out: int, init: str, kernel_dims: int, rngs: nnx.Rngs
) -> nnx.Linear | KernelLinear:
  dense = _linear(n_in, n_out, init, rngs)
  if kernel_dims == 0:
    return dense
  return KernelLinear(n_in, n_out, kernel_dims, dense=dense, rngs=rngs)


def _effective_kernel(layer: nnx.Linear | KernelLinear) -> jax.Array:
  if isinstance(layer, KernelLinear):
    return layer.effective_kernel()
  return layer.kernel[...]


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
  ``hidden_sizes[code_index(hidden_sizes)]``. With ``kernel_dims > 0``
  every layer is a ``KernelLinear`` with embeddings in that many
  dimensions; 0 keeps plain dense layers.

  Args:
    n_inputs: width of a row, the input and output.
    hidden_sizes: widths of the hidden layers, at least one.
    activation: name in ``ACTIVATIONS`` of every hidden layer's function.
    output_activation: name in ``ACTIVATIONS`` of the output's function.
    tied: decoder layers use the transposed encoder kernels (and own
      biases); needs ``can_tie(hidden_sizes)``.
    init: one of ``INITS``: flax's default, Glorot uniform kernels, or
      PyTorch's ``nn.Linear`` initialisation.
    kernel_dims: dimensions of each ``KernelLinear``'s embeddings; 0
      builds plain ``nnx.Linear`` layers.
    rngs: the ``params`` stream draws every weight.

  Raises:
    ValueError: no hidden layer, an unknown activation or init, or tied
      weights with hidden sizes that are not mirrored, or a negative
      ``kernel_dims`` or one with tied weights.
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
    kernel_dims: int = 0,
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
    if kernel_dims < 0 or (tied and kernel_dims > 0):
      raise ValueError(
        f"kernel_dims must be 0 or positive and untied, not {kernel_dims} "
        f"with tied={tied}"
      )
    self.activation = activation
    self.output_activation = output_activation
    self.tied = tied
    sizes = (n_inputs, *hidden_sizes, n_inputs)
    n_encoder = code_index(hidden_sizes) + 1
    pairs = list(itertools.pairwise(sizes))
    self.encoder = nnx.List(
      [_layer(a, b, init, kernel_dims, rngs) for a, b in pairs[:n_encoder]]
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
        [_layer(a, b, init, kernel_dims, rngs) for a, b in pairs[n_encoder:]]
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
    return [
      (_effective_kernel(layer), layer.bias[...]) for layer in self.decoder
    ]

  def kernel_penalty(self) -> jax.Array:
    """``1/2 sum_layers sum_ij K_ij^2`` over the kernelised layers.

    The sparsity term of Muller, Martel and Indiveri (2018) and GLocal-K
    (Han et al., 2021): it pulls kernel values to 0, cutting connections.
    0 when no layer is kernelised.

    Returns:
      The scalar penalty, without its weight.
    """
    total = jnp.zeros((), jnp.float32)
    for layer in (*self.encoder, *getattr(self, "decoder", ())):
      if isinstance(layer, KernelLinear):
        total = total + 0.5 * jnp.sum(jnp.square(layer.kernel_values()))
    return total

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
