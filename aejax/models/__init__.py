"""Flax NNX models: the autoencoder and its sparsity tools."""
