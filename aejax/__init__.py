"""aejax: autoencoders for collaborative filtering in JAX and Flax NNX."""
