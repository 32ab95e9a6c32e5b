"""The tutorial's 4-2-4 example, built by hand and learned."""

from __future__ import annotations

import math

import numpy as np

from experiments import toy


def test_hand_built_network_gives_back_each_input():
  probabilities, codes = toy.reconstruct(toy.hand_built(), toy.one_hot_inputs())
  np.testing.assert_array_equal(
    np.asarray(probabilities).argmax(axis=-1), [0, 1, 2, 3]
  )
  np.testing.assert_array_equal(codes, toy.HAND_BUILT_CODES)
  # Movie 1's outputs receive 1 + 1, 1 - 1, -1 + 1 and -1 - 1: the
  # softmax of (2, 0, 0, -2).
  total = math.exp(2) + 2 + math.exp(-2)
  expected = [math.exp(2) / total, 1 / total, 1 / total, math.exp(-2) / total]
  np.testing.assert_allclose(probabilities[0], expected, rtol=1e-6)
  np.testing.assert_allclose(probabilities[3], expected[::-1], rtol=1e-6)


def test_learned_network_gives_back_each_input_from_two_units():
  model, losses = toy.learn(seed=0, steps=200, learning_rate=0.05)
  probabilities, codes = toy.reconstruct(model, toy.one_hot_inputs())
  np.testing.assert_array_equal(
    np.asarray(probabilities).argmax(axis=-1), [0, 1, 2, 3]
  )
  assert codes.shape == (4, 2)
  assert losses[0] > 1.0 and losses[-1] < 0.1


def test_script_output_names_each_reconstruction():
  text = toy.run(seed=0, steps=50, learning_rate=0.05)
  assert text.startswith("Hand-built 4-2-4 autoencoder")
  for movie in range(1, 5):
    assert text.count(f"| movie {movie} |") >= 1
