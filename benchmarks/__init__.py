"""Speed, scale and PyTorch-parity scripts; each prints its figures."""
