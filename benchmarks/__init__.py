"""Speed and scale benchmarks; each prints its own comparison."""
