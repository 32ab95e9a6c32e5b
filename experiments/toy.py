r"""The tutorial's 4-2-4 autoencoder: built by hand, then learned from data.

  python -m experiments.toy
  python -m experiments.toy --seed=3 --steps=300

Four binary inputs say which of four movies a user liked; two hidden units
hold the code; a softmax over four outputs rebuilds the input.

First the hand-built network: every weight is +1 or -1, biases (the
always-1 nodes of the tutorial's drawing) are 0 and the hidden units are
linear. Movie ``i`` has the code ``c_i`` in ``{+1, -1}^2`` (movie 1 turns
both hidden units on: ``(+1, +1)``; movie 4 gets ``(-1, -1)``) and the
decoder is the encoder transposed, so output ``j`` receives ``c_i . c_j``:
2 for ``j = i``, 0 for the two neighbours and -2 for the opposite code.
The softmax of ``(2, 0, 0, -2)`` peaks at the input's own movie.

Then the same 4-2-4 network (tanh hidden units, softmax output) learns its
weights from the four one-hot rows, by cross-entropy, and prints the code
it found for each movie.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from aejax import report
from aejax.models import autoencoder

N_MOVIES = 4

# The hand-built encoder's weights, one row (code) per movie. The tutorial
# fixes movie 1's weights (both +1) and movie 4's (both -1); movies 2 and 3
# take the two mixed-sign codes, so the four movies get four codes.
HAND_BUILT_CODES = np.array(
  [[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], np.float32
)


def one_hot_inputs() -> jax.Array:
  """The four inputs: user ``i`` liked movie ``i`` only."""
  return jnp.eye(N_MOVIES, dtype=jnp.float32)


def hand_built() -> autoencoder.Autoencoder:
  """The tutorial's network: +1/-1 weights, zero biases, linear code.

  The decoder is the encoder transposed (tied weights), so each output
  scores how well its movie's code matches the input's code.
  """
  model = autoencoder.Autoencoder(
    N_MOVIES,
    (2,),
    activation="identity",
    tied=True,
    rngs=nnx.Rngs(0),
  )
  model.encoder[0].kernel[...] = jnp.asarray(HAND_BUILT_CODES)
  model.encoder[0].bias[...] = jnp.zeros((2,))
  model.decoder_biases[0][...] = jnp.zeros((N_MOVIES,))
  return model


def reconstruct(
  model: autoencoder.Autoencoder, inputs: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """``(softmax(decode(encode(x))), code)`` of each input row."""
  logits, code = model(inputs)
  return jax.nn.softmax(logits, axis=-1), code


def learn(
  seed: int, steps: int, learning_rate: float
) -> tuple[autoencoder.Autoencoder, np.ndarray]:
  """Trains a 4-2-4 tanh autoencoder with a softmax output on one-hots.

  Minimises the cross-entropy ``-sum_j x_j log softmax(x_hat)_j`` over the
  four one-hot rows with Adam, full batch.

  Args:
    seed: seed of the initial weights.
    steps: number of updates.
    learning_rate: Adam's learning rate.

  Returns:
    The trained model and the loss before each step.
  """
  init_key = jax.random.key(seed)
  model = autoencoder.Autoencoder(
    N_MOVIES, (2,), activation="tanh", rngs=nnx.Rngs(params=init_key)
  )
  graphdef, params = nnx.split(model, nnx.Param)
  optimizer = optax.adam(learning_rate)
  inputs = one_hot_inputs()

  def loss_fn(params):
    logits, _ = nnx.merge(graphdef, params)(inputs)
    return optax.softmax_cross_entropy(logits, inputs).mean()

  @jax.jit
  def train_step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def body(carry, _):
    params, opt_state = carry
    params, opt_state, loss = train_step(params, opt_state)
    return (params, opt_state), loss

  (params, _), losses = jax.lax.scan(
    body, (params, optimizer.init(params)), None, length=steps
  )
  return nnx.merge(graphdef, params), np.asarray(losses)


def table(probabilities: jax.Array, codes: jax.Array) -> str:
  """One row per one-hot input: its code, its output and the arg-max."""
  probabilities, codes = np.asarray(probabilities), np.asarray(codes)
  header = [
    "input",
    "code",
    *(f"p(movie {j + 1})" for j in range(N_MOVIES)),
    "arg-max",
  ]
  rows = []
  for movie in range(N_MOVIES):
    pattern = " ".join("1" if j == movie else "0" for j in range(N_MOVIES))
    code = " ".join(f"{v:+.2f}" for v in codes[movie])
    rows.append(
      [
        pattern,
        code,
        *(float(p) for p in probabilities[movie]),
        f"movie {int(probabilities[movie].argmax()) + 1}",
      ]
    )
  return report.format_table(header, rows, digits=3)


def run(seed: int, steps: int, learning_rate: float) -> str:
  """The script's whole output: both networks on the four inputs."""
  inputs = one_hot_inputs()
  lines = [
    "Hand-built 4-2-4 autoencoder: weights +1/-1, biases 0, linear code, "
    "softmax output",
    table(*reconstruct(hand_built(), inputs)),
    "",
  ]
  model, losses = learn(seed, steps, learning_rate)
  lines += [
    f"Learned 4-2-4 autoencoder: tanh code, softmax output, {steps} Adam "
    f"steps, cross-entropy {losses[0]:.3f} -> {losses[-1]:.3f}",
    table(*reconstruct(model, inputs)),
  ]
  return "\n".join(lines)


def define_flags() -> None:
  """The script's flags.

  Defined when the script runs, not on import, so that this module can be
  imported beside ``experiments.movielens``, whose flags share the names.
  """
  flags.DEFINE_integer("seed", 0, "Seed of the learned network.")
  flags.DEFINE_integer("steps", 500, "Training steps (full batch).")
  flags.DEFINE_float("learning_rate", 0.05, "Adam's learning rate.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  settings = flags.FLAGS
  if settings.steps < 1:
    raise app.UsageError(f"--steps must be positive, not {settings.steps}")
  if settings.learning_rate <= 0:
    raise app.UsageError(
      f"--learning_rate must be positive, not {settings.learning_rate}"
    )
  print(run(settings.seed, settings.steps, settings.learning_rate))


if __name__ == "__main__":
  define_flags()
  app.run(main)
